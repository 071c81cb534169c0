"""The mLSTM equations, one pure function each.

The mLSTM (Beck et al. 2024, "xLSTM", section 2.3) keeps, per head, a matrix memory C of shape
(d_k, d_v), a normaliser n (d_k,) and a stabiliser m (a scalar). Its gates are scalars per
head, computed from the input alone, so the memory update is linear in C and the whole
sequence can also be computed in parallel, like linear attention with a decay. With
pre-activations i~_t (input gate) and f~_t (forget gate) and the key scaled by 1/sqrt(d_k):

        log f_t = logsigmoid(f~_t)                            sigmoid forget gate, in log space
        m_t     = max(log f_t + m_{t-1}, i~_t)                stabiliser
        f'_t    = exp(log f_t + m_{t-1} - m_t)                stabilised forget gate, in (0, 1]
        i'_t    = exp(i~_t - m_t)                             stabilised exponential input gate
        C_t     = f'_t C_{t-1} + i'_t k_t v_t^T               memory update
        n_t     = f'_t n_{t-1} + i'_t k_t                     normaliser update
        h_t     = C_t^T q_t / (max(|n_t . q_t|, exp(-m_t)) + eps)     readout

This is `recurrent_step_stabilized_simple` of NX-AI/xlstm (`xlstm/blocks/mlstm/backends.py`).
The stabiliser m changes nothing but rounding: C, n and m are the unstabilised memory and
normaliser times exp(-m_t), and the readout divides the factor out again (up to eps).

The same numbers without the recursion: with F_t = log f_1 + ... + log f_t, step s reaches
step t >= s with weight exp(F_t - F_s + i~_s), the entry (t, s) of the log-gate ("decay")
matrix log D. The parallel form computes all of them at once, the chunkwise form within
chunks, and `stabiliser_update` / `memory_update` carry (C, n, m) from one chunk to the next
with the chunk's totals in place of one step's gates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

EPSILON = 1e-6
"""Added to the readout's denominator, as in the reference (`eps=1e-6`)."""


def log_forget_gate(f_pre: Array) -> Array:
    """log f_t = logsigmoid(f~_t): the forget gate, a sigmoid, kept in log space.

    f_t near 1 (log f_t near 0) keeps the memory, f_t near 0 erases it.

    Args:
        f_pre: the forget gate's pre-activation, one per head, shape (..., heads).

    Returns:
        log f_t <= 0, shape (..., heads).
    """
    return jax.nn.log_sigmoid(f_pre)


def scaled_key(k: Array) -> Array:
    """k_t / sqrt(d_k): the key scaled as in attention, so that q . k stays O(1).

    Args:
        k: keys, shape (..., d_k).

    Returns:
        Shape (..., d_k).
    """
    return k * (k.shape[-1] ** -0.5)


def stabiliser_update(log_f: Array, m_prev: Array, i_pre: Array) -> Array:
    """m_t = max(log f_t + m_{t-1}, i~_t): the largest log-weight in the memory.

    Exponentiating gate values minus m_t never overflows. For a chunk, log f is the chunk's
    total log forget gate and i~ the largest log-weight of the chunk's own writes.

    All arguments and the result have shape (..., heads).
    """
    return jnp.maximum(log_f + m_prev, i_pre)


def stabilised_forget_gate(log_f: Array, m_prev: Array, m: Array) -> Array:
    """f'_t = exp(log f_t + m_{t-1} - m_t): the forget gate rescaled to the new stabiliser.

    All arguments and the result have shape (..., heads); the result lies in (0, 1].
    """
    return jnp.exp(log_f + m_prev - m)


def stabilised_input_gate(i_pre: Array, m: Array) -> Array:
    """i'_t = exp(i~_t - m_t): the exponential input gate, rescaled to the new stabiliser.

    All arguments and the result have shape (..., heads); the result lies in [0, 1].
    """
    return jnp.exp(i_pre - m)


def memory_update(f_act: Array, c_prev: Array, i_act: Array, write: Array) -> Array:
    """C_t = f'_t C_{t-1} + i'_t (k_t v_t^T): forget part of the memory, write an outer product.

    Args:
        f_act: stabilised forget gate f'_t, shape (..., heads).
        c_prev: memory C_{t-1}, shape (..., heads, d_k, d_v).
        i_act: stabilised input gate i'_t, shape (..., heads).
        write: what is written, k_t v_t^T (or a chunk's weighted sum of them), shape
            (..., heads, d_k, d_v).

    Returns:
        C_t, shape (..., heads, d_k, d_v).
    """
    return f_act[..., None, None] * c_prev + i_act[..., None, None] * write


def normaliser_update(f_act: Array, n_prev: Array, i_act: Array, write: Array) -> Array:
    """n_t = f'_t n_{t-1} + i'_t k_t: the sum of the keys, weighted like the memory.

    Args:
        f_act: stabilised forget gate f'_t, shape (..., heads).
        n_prev: normaliser n_{t-1}, shape (..., heads, d_k).
        i_act: stabilised input gate i'_t, shape (..., heads).
        write: k_t (or a chunk's weighted sum of keys), shape (..., heads, d_k).

    Returns:
        n_t, shape (..., heads, d_k).
    """
    return f_act[..., None] * n_prev + i_act[..., None] * write


def normalised_readout(numerator: Array, denominator: Array, m: Array) -> Array:
    """h_t = numerator / (max(|denominator|, exp(-m_t)) + eps).

    With numerator = C_t^T q_t and denominator = n_t . q_t this is the mLSTM's output h~_t:
    the memory's answer to the query, divided by how much the memory holds in that direction
    (at least exp(-m_t), i.e. 1 before stabilisation).

    Args:
        numerator: C_t^T q_t, shape (..., heads, d_v).
        denominator: n_t . q_t, shape (..., heads).
        m: stabiliser m_t, shape (..., heads).

    Returns:
        h_t, shape (..., heads, d_v).
    """
    scale = jnp.maximum(jnp.abs(denominator), jnp.exp(-m)) + EPSILON
    return numerator / scale[..., None]


def log_decay_matrix(log_f_cumsum: Array, i_pre: Array) -> Array:
    """log D[t, s] = F_t - F_s + i~_s for s <= t, -inf above the diagonal.

    The log-weight with which the write at step s is still in the memory at step t:
    F_t = log f_1 + ... + log f_t (cumulative log forget gate, within the sequence or chunk).

    Args:
        log_f_cumsum: F, shape (..., L).
        i_pre: input gate pre-activations i~, shape (..., L).

    Returns:
        log D, shape (..., L, L): rows are t (readers), columns s (writers).
    """
    length = log_f_cumsum.shape[-1]
    log_d = log_f_cumsum[..., :, None] - log_f_cumsum[..., None, :] + i_pre[..., None, :]
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))
    causal = jnp.reshape(causal, (1,) * (log_d.ndim - 2) + causal.shape)
    return jnp.where(causal, log_d, -jnp.inf)
