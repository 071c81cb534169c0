"""jaxlstm.lstm against Flax linen nn.RNN(nn.OptimizedLSTMCell), weights mapped.

Flax keeps one (I, H) kernel per gate on the input side ('ii', 'if', 'ig', 'io', no bias) and
one (H, H) kernel plus bias per gate on the hidden side ('hi', ...); its carry is (c, h).
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm

BATCH, STEPS, INPUT, HIDDEN = 3, 7, 5, 6
TOL = dict(atol=2e-6, rtol=2e-5)
GATES = "ifgo"


def to_lstm_params(cell_params) -> jaxlstm.LSTMParams:
    return jaxlstm.LSTMParams(
        w_x=jnp.concatenate([cell_params[f"i{g}"]["kernel"] for g in GATES], axis=-1),
        w_h=jnp.concatenate([cell_params[f"h{g}"]["kernel"] for g in GATES], axis=-1),
        b=jnp.concatenate([cell_params[f"h{g}"]["bias"] for g in GATES], axis=-1),
    )


def setup(reverse=False):
    rnn = nn.RNN(nn.OptimizedLSTMCell(HIDDEN), return_carry=True, reverse=reverse, keep_order=True)
    key_params, key_x, key_bias, key_carry = jax.random.split(jax.random.key(0), 4)
    xs = jax.random.normal(key_x, (BATCH, STEPS, INPUT))
    variables = rnn.init(key_params, xs)
    # Random biases, so a bias mapped to the wrong gate cannot go unnoticed.
    variables = jax.tree.map(
        lambda a: jax.random.normal(key_bias, a.shape) if a.ndim == 1 else a, variables
    )
    c0, h0 = jax.random.normal(key_carry, (2, BATCH, HIDDEN))
    return rnn, variables, xs, (c0, h0)


@pytest.mark.parametrize("reverse", [False, True])
def test_outputs_and_final_carry(reverse):
    rnn, variables, xs, (c0, h0) = setup(reverse)
    (c_flax, h_flax), hs_flax = rnn.apply(variables, xs, initial_carry=(c0, h0))
    params = to_lstm_params(variables["params"]["cell"])
    hs, final = jaxlstm.lstm(
        params, xs, initial_state=jaxlstm.LSTMState(h=h0, c=c0), reverse=reverse
    )
    np.testing.assert_allclose(hs, hs_flax, **TOL)
    np.testing.assert_allclose(final.h, h_flax, **TOL)
    np.testing.assert_allclose(final.c, c_flax, **TOL)


@pytest.mark.parametrize("reverse", [False, True])
def test_seq_lengths(reverse):
    # Flax mishandles a length of 0 (its final-state index wraps to -1), so lengths start at 1.
    rnn, variables, xs, (c0, h0) = setup(reverse)
    lengths = jnp.array([STEPS, 1, 4])
    (c_flax, h_flax), hs_flax = rnn.apply(
        variables, xs, initial_carry=(c0, h0), seq_lengths=lengths
    )
    params = to_lstm_params(variables["params"]["cell"])
    hs, final = jaxlstm.lstm(
        params, xs, initial_state=jaxlstm.LSTMState(h=h0, c=c0), seq_lengths=lengths,
        reverse=reverse,
    )
    valid = np.arange(STEPS) < np.asarray(lengths)[:, None]
    np.testing.assert_allclose(np.asarray(hs)[valid], np.asarray(hs_flax)[valid], **TOL)
    np.testing.assert_allclose(final.h, h_flax, **TOL)
    np.testing.assert_allclose(final.c, c_flax, **TOL)


def test_gradients():
    rnn, variables, xs, (c0, h0) = setup()
    readout = jax.random.normal(jax.random.key(9), (BATCH, STEPS, HIDDEN))

    def flax_loss(variables, xs):
        (c, h), hs = rnn.apply(variables, xs, initial_carry=(c0, h0))
        return jnp.sum(hs * readout) + jnp.sum(jnp.sin(c)) + jnp.sum(h**2)

    def our_loss(params, xs):
        hs, final = jaxlstm.lstm(params, xs, initial_state=jaxlstm.LSTMState(h=h0, c=c0))
        return jnp.sum(hs * readout) + jnp.sum(jnp.sin(final.c)) + jnp.sum(final.h**2)

    flax_grads, flax_dxs = jax.grad(flax_loss, argnums=(0, 1))(variables, xs)
    params = to_lstm_params(variables["params"]["cell"])
    grads, dxs = jax.grad(our_loss, argnums=(0, 1))(params, xs)
    chex.assert_trees_all_close(grads, to_lstm_params(flax_grads["params"]["cell"]), **TOL)
    np.testing.assert_allclose(dxs, flax_dxs, **TOL)
