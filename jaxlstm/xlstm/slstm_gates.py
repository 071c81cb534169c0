"""The sLSTM equations (Beck et al. 2024, xLSTM), one pure function each.

An sLSTM step reads x_t and the previous state (h, c, n, m) and returns the new state. With H
hidden units split into heads, and gate order i, f, z, o:

        z    = x_t @ W_x + h_{t-1} @ R + b            fused affine map, shape (..., 4H);
                                                      R is block-diagonal, one block per head
        m_t  = max(i~, m_{t-1} + logsigmoid(f~))      stabiliser (m_t = i~ while n_{t-1} = 0)
        i'_t = exp(i~ - m_t)                          stabilised exponential input gate
        f'_t = exp(m_{t-1} + logsigmoid(f~) - m_t)    stabilised forget gate
        c_t  = f'_t * c_{t-1} + i'_t * tanh(z~)       cell update
        n_t  = f'_t * n_{t-1} + i'_t                  normaliser update
        h_t  = sigmoid(o~) * c_t / n_t                hidden update (no tanh: c / n is bounded)

Without the stabiliser the gates would be i_t = exp(i~) and f_t = sigmoid(f~), and the state
C_t = c_t exp(m_t), N_t = n_t exp(m_t). Scaling both by exp(-m_t) leaves h_t = o_t C_t / N_t
unchanged and keeps every exponent <= 0, so nothing overflows however long the sequence.
Since m_t only rescales, it carries no gradient (`jax.lax.stop_gradient`), as in the
reference implementation.

The affine map is the LSTM's (`jaxlstm.gates.input_projection`, `recurrent_projection`,
`split_gates`); only the elementwise part differs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def stabiliser(i_tilde: Array, f_tilde: Array, m_prev: Array, n_prev: Array) -> Array:
    """m_t = max(i~, m_{t-1} + logsigmoid(f~)), and m_t = i~ where n_{t-1} = 0.

    The largest log-gate of the step: subtracting it from both exponents keeps the gates in
    (0, 1]. A state with n_{t-1} = 0 (the zero initial state) holds nothing to forget, so its
    stabiliser restarts at i~. (The reference tests n = 0 for the whole batch at once; here
    each unit is tested, which agrees from the zero state.) No gradient flows through m_t.

    Args:
        i_tilde: the input gate's pre-activation i~, shape (..., H).
        f_tilde: the forget gate's pre-activation f~, shape (..., H).
        m_prev: previous stabiliser m_{t-1}, shape (..., H).
        n_prev: previous normaliser n_{t-1}, shape (..., H).

    Returns:
        m_t, shape (..., H).
    """
    log_f_plus_m = m_prev + jax.nn.log_sigmoid(f_tilde)
    m_t = jnp.where(n_prev == 0, i_tilde, jnp.maximum(i_tilde, log_f_plus_m))
    return jax.lax.stop_gradient(m_t)


def exp_input_gate(i_tilde: Array, m_t: Array) -> Array:
    """i'_t = exp(i~ - m_t): the exponential input gate, stabilised.

    Args:
        i_tilde: the input gate's pre-activation, shape (..., H).
        m_t: the step's stabiliser, shape (..., H).

    Returns:
        i'_t in (0, 1], shape (..., H).
    """
    return jnp.exp(i_tilde - m_t)


def exp_forget_gate(f_tilde: Array, m_prev: Array, m_t: Array, n_prev: Array) -> Array:
    """f'_t = exp(m_{t-1} + logsigmoid(f~) - m_t): the sigmoid forget gate in log space, stabilised.

    1 keeps the old cell state (relative to the new input), 0 erases it. Where n_{t-1} = 0,
    m_t = i~ need not bound the exponent, so it is capped at 0 there (f'_t <= 1, as the
    reference's clamp): the gate multiplies an empty state, and a very negative i~ must not
    overflow it to inf (inf * 0 = nan). Elsewhere the exponent is <= 0 by the choice of m_t.

    Args:
        f_tilde: the forget gate's pre-activation, shape (..., H).
        m_prev: previous stabiliser m_{t-1}, shape (..., H).
        m_t: the step's stabiliser, shape (..., H).
        n_prev: previous normaliser n_{t-1}, shape (..., H).

    Returns:
        f'_t in [0, 1], shape (..., H).
    """
    log_f = m_prev + jax.nn.log_sigmoid(f_tilde) - m_t
    return jnp.exp(jnp.where(n_prev == 0, jnp.minimum(log_f, 0.0), log_f))


def cell_input(z_tilde: Array) -> Array:
    """z_t = tanh(z~): the cell input (the LSTM's candidate g_t), shape (..., H)."""
    return jnp.tanh(z_tilde)


def output_gate(o_tilde: Array) -> Array:
    """o_t = sigmoid(o~): how much of the normalised cell to expose, shape (..., H)."""
    return jax.nn.sigmoid(o_tilde)


def cell_update(f_t: Array, c_prev: Array, i_t: Array, z_t: Array) -> Array:
    """c_t = f'_t * c_{t-1} + i'_t * z_t. All arguments and the result have shape (..., H)."""
    return f_t * c_prev + i_t * z_t


def normaliser_update(f_t: Array, n_prev: Array, i_t: Array) -> Array:
    """n_t = f'_t * n_{t-1} + i'_t: the sum of the input gates, decayed like the cell.

    From the zero state n_t >= 1 at every step (one of i'_t, f'_t is exp(0) = 1), so the
    division in `hidden_update` is safe. All arguments and the result have shape (..., H).
    """
    return f_t * n_prev + i_t


def hidden_update(o_t: Array, c_t: Array, n_t: Array) -> Array:
    """h_t = o_t * c_t / n_t: the gated, normalised cell state, the step's output.

    All arguments and the result have shape (..., H).
    """
    return o_t * c_t / n_t
