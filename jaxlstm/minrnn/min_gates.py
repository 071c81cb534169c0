"""The minGRU and minLSTM equations (Feng et al. 2024, "Were RNNs All We Needed?"), one pure
function each.

Both cells read their gates from the input x_t alone, never from h_{t-1}, so every step is the
linear recurrence h_t = a_t * h_{t-1} + b_t with coefficients known before the loop starts:

    minGRU   k, h~  = split(x_t @ W_x + b)               blocks z, h~ (2H wide)
             z_t    = sigmoid(k)                         update gate
             a_t    = 1 - z_t,   b_t = z_t * g(h~)       h_t = (1 - z_t) h_{t-1} + z_t g(h~)

    minLSTM  f~, i~, h~ = split(x_t @ W_x + b)           blocks f, i, h~ (3H wide)
             f_t, i_t   = sigmoid(f~), sigmoid(i~)       forget and input gates
             f'_t, i'_t = f_t / (f_t + i_t), i_t / (f_t + i_t)   normalised: f' + i' = 1
             a_t    = f'_t,      b_t = i'_t * g(h~)      h_t = f'_t h_{t-1} + i'_t g(h~)

    g(x) = x + 0.5 for x >= 0, sigmoid(x) for x < 0      continuous, > 0, no tanh saturation

Each coefficient also has a log-space form, computed from the pre-activations with softplus
so that nothing overflows or loses precision (log sigmoid(k) = -softplus(-k)):

    minGRU   log a_t = -softplus(k),        log z_t = -softplus(-k)
    minLSTM  d = softplus(-f~) - softplus(-i~)   (= log i_t - log f_t)
             log f'_t = -softplus(d),      log i'_t = -softplus(-d)
    log g(x) = log(x + 0.5) for x >= 0, -softplus(-x) for x < 0
    log b_t  = log z_t + log g(h~)   (minGRU),   log i'_t + log g(h~)   (minLSTM)

The sequence code (`jaxlstm.minrnn.log_scan`) runs the recurrence on (a, b) step by step or on
(log a, log b) with a parallel scan; the coefficient functions below are all it needs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

MIN_GRU_GATES = 2
"""Blocks in minGRU's W_x and b, in order z, h~."""
MIN_LSTM_GATES = 3
"""Blocks in minLSTM's W_x and b, in order f, i, h~."""


def input_projection(x_t: Array, w_x: Array, b: Array) -> Array:
    """x_t @ W_x + b: all of a min cell's pre-activations (they depend on x_t alone).

    Args:
        x_t: inputs, shape (..., I); a sequence (T, ..., I) works as well.
        w_x: kernel, shape (I, G*H).
        b: bias, shape (G*H,).

    Returns:
        Shape (..., G*H).
    """
    z = x_t @ w_x
    return z + jnp.reshape(b, (1,) * (z.ndim - 1) + b.shape)


def candidate(h_tilde: Array) -> Array:
    """g(h~) = h~ + 0.5 for h~ >= 0, sigmoid(h~) otherwise: the candidate state, always > 0.

    Continuous at 0 (both branches give 0.5) and unbounded above, in place of tanh, so that
    the log-space scan can take its logarithm. Shape (..., H) in and out.
    """
    return jnp.where(h_tilde >= 0, h_tilde + 0.5, jax.nn.sigmoid(h_tilde))


def log_candidate(h_tilde: Array) -> Array:
    """log g(h~) = log(h~ + 0.5) for h~ >= 0, -softplus(-h~) otherwise.

    Each branch is evaluated only on safe arguments (log of max(h~, 0) + 0.5), so the
    discarded branch of the `where` cannot put a NaN into the gradient. Shape (..., H).
    """
    return jnp.where(h_tilde >= 0, jnp.log(jnp.maximum(h_tilde, 0) + 0.5),
                     -jax.nn.softplus(-h_tilde))


def update_gate(k: Array) -> Array:
    """z_t = sigmoid(k): minGRU's update gate, how much of g(h~) enters h_t. (..., H)."""
    return jax.nn.sigmoid(k)


def log_update_gates(k: Array) -> tuple[Array, Array]:
    """(log(1 - z_t), log z_t) = (-softplus(k), -softplus(-k)): minGRU's gates in log space.

    Args:
        k: the update gate's pre-activation, shape (..., H).

    Returns:
        The log keep-coefficient log a_t and log z_t, each (..., H).
    """
    return -jax.nn.softplus(k), -jax.nn.softplus(-k)


def normalised_gates(f_tilde: Array, i_tilde: Array) -> tuple[Array, Array]:
    """f'_t, i'_t = f_t / (f_t + i_t), i_t / (f_t + i_t) with f_t = sigmoid(f~), i_t = sigmoid(i~).

    minLSTM's forget and input gates, normalised to sum to 1, so that h_t is a convex mix of
    h_{t-1} and g(h~) and its scale does not drift over time.

    Args:
        f_tilde: the forget gate's pre-activation, shape (..., H).
        i_tilde: the input gate's pre-activation, shape (..., H).

    Returns:
        (f'_t, i'_t), each (..., H) in (0, 1).
    """
    f_t, i_t = jax.nn.sigmoid(f_tilde), jax.nn.sigmoid(i_tilde)
    total = f_t + i_t
    return f_t / total, i_t / total


def log_normalised_gates(f_tilde: Array, i_tilde: Array) -> tuple[Array, Array]:
    """(log f'_t, log i'_t) = (-softplus(d), -softplus(-d)), d = softplus(-f~) - softplus(-i~).

    d = log i_t - log f_t, so f'_t = 1 / (1 + exp(d)) = sigmoid(-d) and i'_t = sigmoid(d).

    Args:
        f_tilde: the forget gate's pre-activation, shape (..., H).
        i_tilde: the input gate's pre-activation, shape (..., H).

    Returns:
        (log f'_t, log i'_t), each (..., H).
    """
    d = jax.nn.softplus(-f_tilde) - jax.nn.softplus(-i_tilde)
    return -jax.nn.softplus(d), -jax.nn.softplus(-d)


def split_min_gru(z: Array) -> tuple[Array, Array]:
    """(k, h~): minGRU's fused pre-activations (..., 2H) split into blocks z, h~."""
    k, h_tilde = jnp.split(z, MIN_GRU_GATES, axis=-1)
    return k, h_tilde


def split_min_lstm(z: Array) -> tuple[Array, Array, Array]:
    """(f~, i~, h~): minLSTM's fused pre-activations (..., 3H) split into blocks f, i, h~."""
    f_tilde, i_tilde, h_tilde = jnp.split(z, MIN_LSTM_GATES, axis=-1)
    return f_tilde, i_tilde, h_tilde


def min_gru_coefficients(z: Array) -> tuple[Array, Array]:
    """(a_t, b_t) = (1 - z_t, z_t * g(h~)): minGRU as h_t = a_t h_{t-1} + b_t.

    Args:
        z: pre-activations x_t @ W_x + b, shape (..., 2H), blocks z, h~.

    Returns:
        (a_t, b_t), each (..., H).
    """
    k, h_tilde = split_min_gru(z)
    z_t = update_gate(k)
    return 1 - z_t, z_t * candidate(h_tilde)


def min_gru_log_coefficients(z: Array) -> tuple[Array, Array]:
    """(log a_t, log b_t) = (-softplus(k), -softplus(-k) + log g(h~)) for the parallel scan.

    Args:
        z: pre-activations x_t @ W_x + b, shape (..., 2H), blocks z, h~.

    Returns:
        (log a_t, log b_t), each (..., H).
    """
    k, h_tilde = split_min_gru(z)
    log_a, log_z = log_update_gates(k)
    return log_a, log_z + log_candidate(h_tilde)


def min_lstm_coefficients(z: Array) -> tuple[Array, Array]:
    """(a_t, b_t) = (f'_t, i'_t * g(h~)): minLSTM as h_t = a_t h_{t-1} + b_t.

    Args:
        z: pre-activations x_t @ W_x + b, shape (..., 3H), blocks f, i, h~.

    Returns:
        (a_t, b_t), each (..., H).
    """
    f_tilde, i_tilde, h_tilde = split_min_lstm(z)
    f_t, i_t = normalised_gates(f_tilde, i_tilde)
    return f_t, i_t * candidate(h_tilde)


def min_lstm_log_coefficients(z: Array) -> tuple[Array, Array]:
    """(log a_t, log b_t) = (log f'_t, log i'_t + log g(h~)) for the parallel scan.

    Args:
        z: pre-activations x_t @ W_x + b, shape (..., 3H), blocks f, i, h~.

    Returns:
        (log a_t, log b_t), each (..., H).
    """
    f_tilde, i_tilde, h_tilde = split_min_lstm(z)
    log_f, log_i = log_normalised_gates(f_tilde, i_tilde)
    return log_f, log_i + log_candidate(h_tilde)
