"""Decoding the residual block stacks (`jaxlstm.xlstm.blocks`, `jaxlstm.minrnn.blocks`): for
every block kind and mixed stacks, reading a prompt with the whole-sequence stack
(`return_state=True`) and stepping on (`xlstm_stack_step`, `min_block_stack_step`) gives the
whole sequence's outputs and final state; so does stepping from the zero state, and reading the
rest in the fast form from the prompt's state; with `seq_lengths` each sequence continues from
its own last valid step; the mLSTM's three forms leave the same state; the refusals.

Every case runs in one jitted program (compiling is what these tests spend their time on), so
everything here also runs under `jit`."""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.minrnn.blocks import (
    MinRNNBlockState,
    init_min_block_stack,
    initial_min_block_stack_state,
    min_block_stack,
    min_block_stack_step,
)
from jaxlstm.stack import init_lstm_stack
from jaxlstm.xlstm.blocks import (
    MLSTMBlockState,
    SLSTMBlockState,
    init_xlstm_stack,
    initial_xlstm_stack_state,
    mlstm_block_step,
    xlstm_stack,
    xlstm_stack_step,
)

INPUT, DIM, STEPS, PROMPT, KERNEL = 3, 8, 9, 2, 4   # the prompt is shorter than the conv's reach
LENGTHS, REST = (6, 2, 0), KERNEL - 1   # padded sequences, then REST steps each (<= STEPS)
TOL = {"atol": 2e-5, "rtol": 2e-5}


class Stack(NamedTuple):
    init: Callable[..., Any]
    run: Callable[..., Any]
    step: Callable[..., Any]
    initial: Callable[..., Any]


STACKS = {
    "xlstm": Stack(functools.partial(init_xlstm_stack, num_heads=2, qkv_block_size=2,
                                     round_to=1, conv_kernel=KERNEL),
                   functools.partial(xlstm_stack, chunk_size=4),  # partial chunks
                   xlstm_stack_step, initial_xlstm_stack_state),
    "minrnn": Stack(functools.partial(init_min_block_stack, expansion=1.5, ffn_factor=2,
                                      conv_kernel=KERNEL),
                    min_block_stack, min_block_stack_step, initial_min_block_stack_state),
}
CASES = [("xlstm", "msm"), ("minrnn", "lg")]   # every block kind, mixed (CPU budget: the
# stacks of one kind each ran the same code paths)
IDS = [f"{kind}-{blocks}" for kind, blocks in CASES]


MIXED = {"xlstm": "msm", "minrnn": "lg"}


@functools.cache
def _perturbed(kind):
    """The mixed stack of `kind`, every leaf random, far off its initialisation: zero gates,
    norms and biases at init would hide a part read from the wrong place. Only the shapes come
    from init (traced, not compiled: its random draws compile slowly); NumPy draws the
    numbers."""
    shapes = jax.eval_shape(lambda key: STACKS[kind].init(key, INPUT, DIM, MIXED[kind]),
                            jax.random.key(0))
    rng = np.random.default_rng(1)
    return jax.tree.map(lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype),
                        shapes)


def _build(kind, blocks):
    """The mixed stack, or a one-block stack of its first block of the letter `blocks`: one
    init (the slow part of building) serves every case."""
    params = _perturbed(kind)
    if blocks == MIXED[kind]:
        return params
    return params._replace(blocks=(params.blocks[MIXED[kind].index(blocks)],))


def _steps(step, params, xs, state):
    """`step` over the time axis of xs (batch, T, I) from `state`, in a scan: the outputs and
    the state after every step (time first)."""
    def body(state, x_t):
        y_t, state = step(params, x_t, state)
        return state, (y_t, state)

    _, (ys, states) = jax.lax.scan(body, state, jnp.moveaxis(xs, 1, 0))
    return jnp.moveaxis(ys, 0, 1), states


def _rows(tree, start, stop):
    return jax.tree.map(lambda a: a[start:stop], tree)


def _concat(*trees):
    return jax.tree.map(lambda *a: jnp.concatenate(a), *trees)


def _pad_to_steps(xs):
    return jnp.pad(xs, ((0, 0), (0, STEPS - xs.shape[1]), (0, 0)))


@functools.partial(jax.jit, static_argnums=0)
def _decode(kind, params, xs, rest, lengths, alone):
    """Every way of reading the sequences this file compares, in one program of three calls
    of the whole-sequence stack and one scan of steps (compiling is what this file spends its
    time on; the calls share them by taking several sets of rows at once, rows being
    independent)."""
    run, step, initial = STACKS[kind].run, STACKS[kind].step, STACKS[kind].initial
    out, batch = {}, xs.shape[0]
    # The whole sequences and the sequences run alone (no lengths, no initial state).
    whole, whole_state = run(params, jnp.concatenate([xs, alone]), return_state=True)
    out["whole"], out["alone"] = whole[:batch], whole[batch:]
    out["whole_state"] = _rows(whole_state, 0, batch)
    out["prompt"], prompt_state = run(params, xs[:, :PROMPT], return_state=True)
    # The rest read in the fast form from the prompt's state (its steps, then padding past
    # their length), and the padded sequences from the zero state given explicitly.
    zero = initial(params, xs.shape[:1])
    both, both_state = run(params, jnp.concatenate([_pad_to_steps(xs[:, PROMPT:]), xs]),
                           seq_lengths=jnp.concatenate([jnp.full(batch, STEPS - PROMPT),
                                                        lengths]),
                           initial_state=_concat(prompt_state, zero), return_state=True)
    out["resumed"], out["padded"] = both[:batch, :STEPS - PROMPT], both[batch:]
    out["resumed_state"] = _rows(both_state, 0, batch)
    padded_state = _rows(both_state, batch, 2 * batch)
    # Steps, in one scan of STEPS steps over three sets of rows: from the zero state over the
    # whole sequences; from the prompt's state over the rest of them; from the padded
    # sequences' states over `rest` (steps after REST are not compared). Each set's state is
    # taken after its own last step.
    ys, states = _steps(step, params, jnp.concatenate([xs, _pad_to_steps(xs[:, PROMPT:]),
                                                       _pad_to_steps(rest)]),
                        _concat(zero, prompt_state, padded_state))
    out["from_zero"] = ys[:batch]
    out["from_zero_state"] = _rows(jax.tree.map(lambda a: a[-1], states), 0, batch)
    out["stepped"] = ys[batch:2 * batch, :STEPS - PROMPT]
    out["stepped_state"] = _rows(jax.tree.map(lambda a: a[STEPS - PROMPT - 1], states),
                                 batch, 2 * batch)
    out["continued"] = ys[2 * batch:, :REST]
    return out


@functools.cache
def decoded(kind, blocks):
    """`_decode`'s results for inputs xs (3, T, I); `rest`, what each padded sequence
    continues with after its LENGTHS[b] valid steps; `alone`, each sequence's valid steps then
    its rest (then zeros, which causality keeps out of the compared steps) without lengths,
    i.e. each sequence run alone."""
    params = _build(kind, blocks)
    xs = jax.random.normal(jax.random.key(2), (len(LENGTHS), STEPS, INPUT))
    rest = jax.random.normal(jax.random.key(3), (len(LENGTHS), REST, INPUT))
    alone = np.zeros(xs.shape, np.float32)
    for b, length in enumerate(LENGTHS):
        alone[b, :length] = xs[b, :length]
        alone[b, length:length + REST] = rest[b]
    return jax.device_get(_decode(kind, params, xs, rest, jnp.array(LENGTHS), alone))


@pytest.mark.parametrize("kind, blocks", CASES, ids=IDS)
def test_prompt_then_steps_is_the_whole_sequence(kind, blocks):
    out = decoded(kind, blocks)
    chex.assert_trees_all_close(out["prompt"], out["whole"][:, :PROMPT], **TOL)
    chex.assert_trees_all_close(out["stepped"], out["whole"][:, PROMPT:], **TOL)
    chex.assert_trees_all_close(out["stepped_state"], out["whole_state"], **TOL)


@pytest.mark.parametrize("kind, blocks", CASES, ids=IDS)
def test_steps_from_the_zero_state_are_the_whole_sequence(kind, blocks):
    out = decoded(kind, blocks)
    chex.assert_trees_all_close(out["from_zero"], out["whole"], **TOL)
    chex.assert_trees_all_close(out["from_zero_state"], out["whole_state"], **TOL)


@pytest.mark.parametrize("kind, blocks", CASES, ids=IDS)
def test_the_fast_form_resumes_from_the_prompts_state(kind, blocks):
    out = decoded(kind, blocks)
    chex.assert_trees_all_close(out["resumed"], out["whole"][:, PROMPT:], **TOL)
    chex.assert_trees_all_close(out["resumed_state"], out["whole_state"], **TOL)


@pytest.mark.parametrize("kind, blocks", CASES, ids=IDS)
def test_each_padded_sequence_continues_from_its_own_last_step(kind, blocks):
    out = decoded(kind, blocks)
    for b, length in enumerate(LENGTHS):
        chex.assert_trees_all_close(out["padded"][b, :length], out["alone"][b, :length], **TOL)
        np.testing.assert_array_equal(out["padded"][b, length:], 0.0)
        continued = out["alone"][b, length:length + REST]
        chex.assert_trees_all_close(out["continued"][b], continued, **TOL)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("kind, blocks", MIXED.items(), ids=str)
def test_the_initial_state_is_typed_as_the_final_state(kind, blocks, dtype):
    # Shapes only (traced, not compiled). bfloat16 params and inputs: the mLSTM memory stays
    # float32, the rest follows the computation dtype.
    stack = STACKS[kind]
    params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype), _build(kind, blocks))
    xs = jax.ShapeDtypeStruct((2, 3, STEPS, INPUT), dtype)               # two batch axes
    _, final = jax.eval_shape(lambda p, x: stack.run(p, x, return_state=True), params, xs)
    initial = jax.eval_shape(lambda p: stack.initial(p, (2, 3), dtype), params)
    assert jax.tree.structure(initial) == jax.tree.structure(final)
    for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(final)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    kinds = {"m": MLSTMBlockState, "s": SLSTMBlockState, "l": MinRNNBlockState,
             "g": MinRNNBlockState}
    assert [type(s) for s in final] == [kinds[letter] for letter in blocks]
    assert final[0].conv.shape == (2, 3, KERNEL - 1, final[0].conv.shape[-1])


@jax.jit
def _prompt_states(params, xs):
    return {mode: xlstm_stack(params, xs, mode=mode, chunk_size=2, return_state=True)
            for mode in ("chunkwise", "parallel", "recurrent")}


def test_the_mlstm_forms_leave_the_same_state():
    xs = jax.random.normal(jax.random.key(4), (2, 5, INPUT))      # 5 steps: chunks 2, 2, 1
    runs = _prompt_states(_build("xlstm", "m"), xs)
    for mode in ("chunkwise", "recurrent"):
        chex.assert_trees_all_close(runs[mode], runs["parallel"], **TOL)


def test_refusals_name_the_argument():
    params = _build("xlstm", "msm")
    x_t = jnp.zeros((2, INPUT))
    state = initial_xlstm_stack_state(params, (2,))
    with pytest.raises(ValueError, match=r"x_t must have shape \(batch..., 3\) \(one time "
                                         r"step\), got \(2, 4\)"):
        xlstm_stack_step(params, jnp.zeros((2, 4)), state)
    with pytest.raises(TypeError, match="x_t must have a floating dtype"):
        xlstm_stack_step(params, jnp.zeros((2, INPUT), jnp.int32), state)
    with pytest.raises(ValueError, match="state must be a tuple of 3 block states"):
        xlstm_stack_step(params, x_t, state[:1])
    with pytest.raises(TypeError, match=r"state\[0\] must be MLSTMBlockState\(conv, cell\), "
                                        r"got SLSTMBlockState"):
        xlstm_stack_step(params, x_t, (state[1], state[0], state[2]))
    # A sequence where a step belongs: its time axis reads as a batch axis the state lacks.
    with pytest.raises(ValueError, match=r"state\[0\]\.conv must have shape \(2, 5, 3, 16\) "
                                         r"\(batch shape \(2, 5\) of x_t\), got \(2, 3, 16\)"):
        xlstm_stack_step(params, jnp.zeros((2, 5, INPUT)), state)
    with pytest.raises(ValueError, match=r"initial_state\[1\]\.cell\.h must have shape "
                                         r"\(2, 8\) \(batch shape \(2,\) of xs\), got \(2, 7\)"):
        bad = state[1]._replace(cell=state[1].cell._replace(h=jnp.zeros((2, 7))))
        xlstm_stack(params, jnp.zeros((2, 4, INPUT)), initial_state=(state[0], bad, state[2]))
    with pytest.raises(TypeError, match=r"state\.cell must be MLSTMState\(C, n, m\), got tuple"):
        mlstm_block_step(params.blocks[0], jnp.zeros((2, DIM)),
                         state[0]._replace(cell=tuple(state[0].cell)))


def test_stacks_of_cells_and_the_other_kind_are_refused():
    # A bidirectional stack of cells cannot decode (and steps with jaxlstm.decode anyway).
    cells = jax.eval_shape(lambda: init_lstm_stack(jax.random.key(0), INPUT, DIM,
                                                   bidirectional=True))   # its types only
    with pytest.raises(TypeError, match=r"params must be XLSTMStackParams, got tuple .* "
                                        r"jaxlstm\.decode\.stack_step"):
        xlstm_stack_step(cells, jnp.zeros((2, INPUT)), ())
    with pytest.raises(TypeError, match="params must be MinRNNStackParams, got tuple"):
        initial_min_block_stack_state(cells, (2,))
    xlstm = _build("xlstm", "msm")
    with pytest.raises(TypeError, match="params must be MinRNNStackParams, got XLSTMStackParams"):
        min_block_stack_step(xlstm, jnp.zeros((2, INPUT)), ())
    minrnn = _build("minrnn", "l")
    with pytest.raises(TypeError, match=r"state\[0\] must be MinRNNBlockState\(conv, cell\), "
                                        r"got MLSTMBlockState"):
        min_block_stack_step(minrnn, jnp.zeros((2, INPUT)),
                             initial_xlstm_stack_state(xlstm, (2,))[:1])
