"""truncated_lstm: the full scan's forward, gradients cut at chunk boundaries."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm

BATCH, STEPS, INPUT, HIDDEN = 3, 10, 2, 4


def setup():
    params = jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN)
    xs = jax.random.normal(jax.random.key(1), (BATCH, STEPS, INPUT))
    return params, xs


@pytest.mark.parametrize("truncation", [1, 3, 5, 10, 25])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_forward_equals_the_full_scan(truncation, with_lengths):
    params, xs = setup()
    lengths = jnp.array([STEPS, 4, 0]) if with_lengths else None
    state = jaxlstm.LSTMState(*jax.random.normal(jax.random.key(2), (2, BATCH, HIDDEN)))
    hs, final = jax.jit(lambda p, x: jaxlstm.truncated_lstm(
        p, x, truncation=truncation, initial_state=state, seq_lengths=lengths))(params, xs)
    want_hs, want_final = jaxlstm.lstm(params, xs, initial_state=state, seq_lengths=lengths)
    np.testing.assert_allclose(hs, want_hs, atol=1e-6)
    chex.assert_trees_all_close(final, want_final, atol=1e-6)


def test_gradients_do_not_cross_chunk_boundaries():
    params, xs = setup()
    # d(output at step 7) / d(input at step t) is zero for t before the chunk [5, 10).
    def output_at_7(xs):
        return jnp.sum(jaxlstm.truncated_lstm(params, xs, truncation=5)[0][:, 7])

    grads = jax.jit(jax.grad(output_at_7))(xs)
    np.testing.assert_array_equal(grads[:, :5], 0.0)
    assert np.all(np.abs(grads[:, 5:8]).sum(axis=-1) > 0)
    # Without truncation the early steps do matter.
    full = jax.jit(jax.grad(lambda x: jnp.sum(jaxlstm.lstm(params, x)[0][:, 7])))(xs)
    assert np.all(np.abs(full[:, :5]).sum(axis=-1) > 0)


def test_time_major():
    params, xs = setup()
    hs, _ = jaxlstm.truncated_lstm(params, jnp.moveaxis(xs, 1, 0), truncation=4,
                                   time_major=True)
    np.testing.assert_allclose(jnp.moveaxis(hs, 0, 1), jaxlstm.lstm(params, xs)[0], atol=1e-6)


@pytest.mark.parametrize("bad", [0, 2.5, True])
def test_bad_truncation(bad):
    params, xs = setup()
    with pytest.raises(ValueError, match="truncation must be a positive int"):
        jaxlstm.truncated_lstm(params, xs, truncation=bad)
