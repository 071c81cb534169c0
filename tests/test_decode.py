"""Decoding (`jaxlstm.decode`): for a stack with a layer of every registered family, reading a
prompt with `lstm_stack` and stepping on with `stack_step` gives `lstm_stack`'s outputs and
final state (each layer's) over the whole sequence; `generate` equals a Python loop of
prefill, choose and step; the refusals."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import family as families

INPUT, HIDDEN, STEPS, PROMPT = 3, 4, 6, 4
TOL = {"atol": 2e-5, "rtol": 2e-5}
CELLS = tuple(families.names())


def noise(init, seed=1):
    """Params of `init`'s structure and shapes, every leaf random: far off the initialisation
    (some references start gates at zero, which hides bugs). Only the shapes come from
    `init` (traced, not compiled); NumPy draws the numbers."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype),
                        jax.eval_shape(init, jax.random.key(0)))


@functools.cache
def stack(cell):
    """A stack of one layer per family in `cell`."""
    return noise(lambda key: jaxlstm.init_lstm_stack(key, INPUT, HIDDEN, num_layers=len(cell),
                                                     cell=cell, num_heads=2))


_step = jax.jit(jaxlstm.stack_step, static_argnames="residual")
_whole = jax.jit(jaxlstm.lstm_stack, static_argnames="residual")


@jax.jit
def _whole_and_prompt(params, xs):
    """The whole sequences and their prompts (one program), and the families' zero states."""
    return (jaxlstm.lstm_stack(params, xs, residual=True),
            jaxlstm.lstm_stack(params, xs[:, :PROMPT], residual=True),
            jaxlstm.initial_stack_state(params, xs.shape[:1]))


@functools.cache
def prefilled_and_stepped():
    """One stack with a layer of every family (residual between the layers of equal width)
    read whole; read as a prompt and stepped on; stepped from the families' zero states. Two
    programs (the whole-sequence reads, the step) for every family."""
    params = stack(CELLS)
    xs = np.random.default_rng(2).standard_normal((2, STEPS, INPUT)).astype(np.float32)
    (want, want_state), (got, state), zero = _whole_and_prompt(params, xs)
    outputs = [got]
    for t in range(PROMPT, STEPS):
        y, state = _step(params, xs[:, t], state, residual=True)
        outputs.append(y[:, None])
    from_zero = zero
    for t in range(STEPS):
        y_zero, from_zero = _step(params, xs[:, t], from_zero, residual=True)
    return want, want_state, jnp.concatenate(outputs, axis=1), state, y_zero, from_zero


@pytest.mark.parametrize("layer, cell", list(enumerate(CELLS)), ids=CELLS)
def test_prefill_then_step_is_the_whole_sequence(layer, cell):
    """The layer of `cell`: its state after the prompt and the steps, and after the steps from
    the zero state; the stack's outputs (which every layer feeds)."""
    want, want_state, outputs, state, y_zero, from_zero = prefilled_and_stepped()
    chex.assert_trees_all_close(state[layer], want_state[layer], **TOL)
    chex.assert_trees_all_close(from_zero[layer], want_state[layer], **TOL)
    chex.assert_trees_all_close(outputs, want, **TOL)
    np.testing.assert_allclose(y_zero, want[:, -1], **TOL)


def test_generate_is_prefill_choose_and_step():
    params = stack(("mlstm", "slstm"))
    rng = np.random.default_rng(3)
    w = rng.standard_normal((HIDDEN, INPUT)).astype(np.float32)
    prompt = rng.standard_normal((2, PROMPT, INPUT)).astype(np.float32)

    @jax.jit
    def choose(key, y):       # a deterministic part and a random part, both fed back
        token = jax.random.categorical(key, y @ w)
        return jnp.tanh(y @ w) + jax.nn.one_hot(token, INPUT), token

    tokens, state = jax.jit(lambda p, x, k: jaxlstm.generate(p, x, 5, choose, key=k))(
        params, prompt, jax.random.key(5))
    assert tokens.shape == (2, 5) and tokens.dtype == jnp.int32
    # The loop by hand, of jitted pieces (eagerly, each of their operations compiles).
    outputs, want_state = _whole(params, prompt)
    y, keys, want = outputs[:, -1], jax.random.split(jax.random.key(5), 5), []
    for key in keys:
        x, token = choose(key, y)
        want.append(token)
        y, want_state = _step(params, x, want_state)
    np.testing.assert_array_equal(tokens, jnp.stack(want, axis=1))
    chex.assert_trees_all_close(state, want_state, **TOL)


def test_refusals():
    params = noise(lambda key: jaxlstm.init_lstm_stack(key, INPUT, HIDDEN, bidirectional=True))
    x = jnp.zeros((2, INPUT))
    with pytest.raises(ValueError, match="params must be a unidirectional stack"):
        jaxlstm.stack_step(params, x, ())
    params = params[:1] and (params[0]._replace(backward=None),)
    with pytest.raises(ValueError, match=r"state must be a tuple of 1 Directions"):
        jaxlstm.stack_step(params, x, None)
    with pytest.raises(TypeError, match="params must be a non-empty tuple of Directions"):
        jaxlstm.stack_step(params[0].forward, x, ())
    with pytest.raises(ValueError, match="length must be"):
        jaxlstm.generate(params, x[:, None], 0, lambda k, y: (y, y), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"prompt must be \(batch..., P, I\) with P >= 1"):
        jaxlstm.generate(params, jnp.zeros((2, 0, INPUT)), 1, lambda k, y: (y, y),
                         key=jax.random.key(0))


@pytest.mark.parametrize("model", [{"cell": "mlstm"}, {"blocks": "ms"}], ids=str)
def test_sampling_a_trained_model_equals_rereading_the_text_each_step(model):
    """The runner's sampler (prefill, then one step per character) chooses what re-reading
    the whole text with the model before every character would, for a cell stack and a block
    stack (the other families' prefill-then-step: the tests above and test_block_decode)."""
    from jaxlstm.tasks.base import TaskSpec
    from jaxlstm.train.config import ModelConfig
    from jaxlstm.train.model import Model
    from jaxlstm.train.sample import sample

    vocab, temperature, prompt, length = 5, 0.7, [1, 2, 3], 4
    spec = TaskSpec(name="t", input_size=vocab, output_size=vocab, readout="every",
                    kind="classification", metric="accuracy")
    config = ModelConfig(hidden_size=4, num_heads=2,
                         **({"num_layers": 2} if "cell" in model else {}), **model)
    trained = Model(config, spec)
    params = noise(trained.init, seed=7)   # off the initialisation (zero-initialised parts)
    ids = sample(params, np.array(prompt), length, vocab, key=jax.random.key(1),
                 temperature=temperature, model=trained)
    # The whole text so far, padded to one shape, read with its length: one compile.
    read = jax.jit(lambda p, x, n: trained.apply(p, x, n, jax.random.key(0), False))
    text = list(prompt)
    for key in jax.random.split(jax.random.key(1), length):
        padded = jax.nn.one_hot(jnp.array([text + [0] * (len(prompt) + length - len(text))]),
                                vocab)
        logits = read(params, padded, jnp.array([len(text)]))[0, len(text) - 1] / temperature
        text.append(int(jax.random.categorical(key, logits)))
    np.testing.assert_array_equal(ids, text[len(prompt):])
