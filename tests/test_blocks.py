"""jaxlstm.blocks: one stack over the registered block kinds, any mix of them.

The papers' own stacks (`xlstm_stack`, `min_block_stack`) are that stack restricted to their
letters, so their tests (test_xlstm_blocks, test_minrnn_blocks, test_block_decode) cover each
kind against the references; here: the mix, the routing of options and forms, and the
refusals.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm import blocks
from jaxlstm.blocks import (
    BlockStackParams,
    block_stack,
    block_stack_step,
    init_block_stack,
    initial_block_stack_state,
)
from jaxlstm.minrnn.blocks import init_min_block_stack
from jaxlstm.xlstm.blocks import init_xlstm_stack

DIM, IN, T = 16, 3, 7


def _init_mixed():
    return init_block_stack(jax.random.key(0), IN, DIM, "mlsg", num_heads=2, qkv_block_size=2,
                            expansion=1.5, ffn_factor=2)


@pytest.fixture(scope="module")
def mixed():
    """One stack of every registered kind, both papers' blocks interleaved, random in every
    leaf (zero norms and biases would hide a swapped field), drawn by NumPy in the shapes the
    init gives (traced, not compiled: the tests' time is compile time)."""
    rng = np.random.default_rng(1)
    return jax.tree.map(lambda a: jnp.asarray(0.3 * rng.standard_normal(a.shape), a.dtype),
                        jax.eval_shape(_init_mixed))


# Shared by the tests below, so that each program compiles once.
_whole = jax.jit(lambda p, x, forms: block_stack(p, x, return_state=True,
                                                 mode=forms and dict(forms)),
                 static_argnums=2)
_FORMS = (("m", "recurrent"), ("l", "sequential"), ("g", "parallel"))


def test_the_registry_lists_every_kind_once_by_its_letter():
    assert blocks.letters() == ("m", "s", "l", "g")
    for letter in blocks.letters():
        kind = blocks.kind(letter)
        assert kind.letter == letter and kind.family in ("mlstm", "slstm", "min_lstm", "min_gru")
    assert blocks.kind("m").modes == ("chunkwise", "parallel", "recurrent")
    assert blocks.kind("s").modes == ()


def test_the_papers_stacks_are_the_generic_stack_bit_for_bit():
    """init_xlstm_stack / init_min_block_stack make the same params from the same key as
    init_block_stack with their options, and run the same computation."""
    key = jax.random.key(3)
    both = jax.jit(lambda k: (
        (init_xlstm_stack(k, IN, DIM, "ms", num_heads=2),
         init_block_stack(k, IN, DIM, "ms", num_heads=2)),
        (init_min_block_stack(k, IN, DIM, "gl", expansion=2.0),
         init_block_stack(k, IN, DIM, "gl", expansion=2.0))))
    for papers, generic in both(key):
        assert isinstance(generic, BlockStackParams)
        for a, b in zip(jax.tree.leaves(papers), jax.tree.leaves(generic), strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_mixed_stack_reads_a_prompt_then_steps_as_one_call_over_the_sequence(mixed):
    xs = jnp.asarray(np.random.default_rng(5).standard_normal((2, T, IN)), jnp.float32)
    whole, final = _whole(mixed, xs, _FORMS)
    prompt = 4
    _, state = _whole(mixed, xs[:, :prompt], None)
    step = jax.jit(block_stack_step)
    for t in range(prompt, T):
        y, state = step(mixed, xs[:, t], state)
        np.testing.assert_allclose(y, whole[:, t], rtol=2e-5, atol=2e-5)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(final), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
    # From the empty state, the first step is the sequence's first output.
    y0, _ = step(mixed, xs[:, 0], initial_block_stack_state(mixed, (2,)))
    np.testing.assert_allclose(y0, whole[:, 0], rtol=2e-5, atol=2e-5)


def test_padded_sequences_equal_each_sequence_alone_and_are_zero_past_their_end(mixed):
    xs = jnp.asarray(np.random.default_rng(5).standard_normal((2, T, IN)), jnp.float32)
    padded = jax.jit(lambda p, x, n: block_stack(p, x, seq_lengths=n))(mixed, xs,
                                                                       jnp.array([T, 4]))
    alone, _ = _whole(mixed, xs[:, :4], None)  # the first 4 steps of each, unpadded
    np.testing.assert_allclose(padded[1, :4], alone[1], rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(padded[1, 4:], 0.0)
    whole, _ = _whole(mixed, xs, _FORMS)
    np.testing.assert_allclose(padded[0], whole[0], rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("call, message", [
    (lambda p: init_block_stack(jax.random.key(0), IN, DIM, "mx"),
     r"blocks must be a non-empty sequence of 'm' \(mLSTM\), 's' \(sLSTM\)"),
    (lambda p: init_block_stack(jax.random.key(0), IN, DIM, ""), "non-empty"),
    (lambda p: init_block_stack(jax.random.key(0), IN, DIM, "lg", num_heads=2),
     "num_heads applies to mLSTM and sLSTM blocks, not to the init of blocks 'lg'"),
    (lambda p: init_block_stack(jax.random.key(0), IN, DIM, "s", gamma=2),
     "gamma is an option of no registered block kind"),
    (lambda p: block_stack(p, jnp.ones((1, 2, IN)), mode="sequential"),
     r"mode must be one of \['chunkwise', 'parallel', 'recurrent'\] for mLSTM blocks"),
    (lambda p: block_stack(p, jnp.ones((1, 2, IN)), mode={"s": "parallel"}),
     "mode\\['s'\\]: the stack has no block 's' with several forms"),
    (lambda p: block_stack(p, jnp.ones((1, 2, IN)), mode={"l": "chunkwise"}),
     r"mode\['l'\] must be one of \['parallel', 'sequential'\] for minLSTM blocks"),
    (lambda p: block_stack(p._replace(blocks=(p.blocks[0], "x")), jnp.ones((1, 2, IN))),
     r"params.blocks\[1\] must be the params of a registered block kind"),
])
def test_refusals_name_the_argument_and_the_kinds(mixed, call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(mixed)


def test_options_reach_only_the_kinds_that_declare_them(mixed):
    """chunk_size goes to the mLSTM blocks only (the other kinds do not take it; chunks of 3
    do not divide T), the form to the kind the mapping names: the same function as the other
    forms."""
    xs = jnp.asarray(np.random.default_rng(5).standard_normal((2, T, IN)), jnp.float32)
    chunked = jax.jit(lambda p, x: block_stack(p, x, mode={"m": "chunkwise"}, chunk_size=3))
    np.testing.assert_allclose(chunked(mixed, xs), _whole(mixed, xs, _FORMS)[0],
                               rtol=2e-5, atol=2e-5)
    only_s = jax.eval_shape(lambda: init_block_stack(jax.random.key(7), IN, DIM, "s"))
    with pytest.raises(ValueError, match="chunk_size applies to mLSTM blocks, not to the "
                                         "apply of blocks 's'"):
        block_stack(only_s, xs, chunk_size=4)
