"""The mLSTM's recurrent form: the stabilised step (`mlstm_step`) in a `lax.scan`.

Works on (N, heads, T, d) arrays with the key already scaled (`jaxlstm.xlstm.mlstm._run`
prepares them); the step is the equations of `jaxlstm.xlstm.mlstm_gates`, one call each.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlstm.xlstm import mlstm_gates as gates
from jaxlstm.xlstm.mlstm_state import MLSTMState

Array = jax.Array


def mlstm_step(state: MLSTMState, q: Array, k: Array, v: Array, i_pre: Array,
               log_f: Array) -> tuple[MLSTMState, Array]:
    """One stabilised mLSTM step (`recurrent_step_stabilized_simple`).

    Args:
        state: `MLSTMState` with C (..., heads, d_k, d_v), n (..., heads, d_k), m (..., heads).
        q: query, (..., heads, d_k).
        k: key already scaled by 1/sqrt(d_k) (`mlstm_gates.scaled_key`), (..., heads, d_k).
        v: value, (..., heads, d_v).
        i_pre: input gate pre-activation i~_t, (..., heads).
        log_f: log forget gate logsigmoid(f~_t), (..., heads).

    Returns:
        `(new_state, h_t)` with h_t of shape (..., heads, d_v).
    """
    m = gates.stabiliser_update(log_f, state.m, i_pre)
    f_act = gates.stabilised_forget_gate(log_f, state.m, m)
    i_act = gates.stabilised_input_gate(i_pre, m)
    c = gates.memory_update(f_act, state.C, i_act, k[..., :, None] * v[..., None, :])
    n = gates.normaliser_update(f_act, state.n, i_act, k)
    numerator = jnp.einsum("...k,...kv->...v", q, c)
    denominator = jnp.einsum("...k,...k->...", q, n)
    return MLSTMState(c, n, m), gates.normalised_readout(numerator, denominator, m)


def where_reset(reset: Array, initial: MLSTMState, state: MLSTMState) -> MLSTMState:
    """`initial` where `reset` ((N, 1) bool, per sequence), else `state`, field by field."""
    return MLSTMState(*(jnp.where(reset.reshape(reset.shape + (1,) * (a.ndim - 2)), i, a)
                        for i, a in zip(initial, state)))


def recurrent(q, k, v, i_pre, log_f, state, starts=None):
    """The step in a scan; with `starts` ((N, 1, T) bool) the memory is `state` again before
    each step marked there."""
    def body(carry, step):
        if starts is not None:
            *step, start = step
            carry = where_reset(start, state, carry)
        return mlstm_step(carry, *step)

    inputs = (q, k, v, i_pre, log_f) + (() if starts is None else (starts,))
    steps = tuple(jnp.moveaxis(a, 2, 0) for a in inputs)
    final, hs = jax.lax.scan(body, state, steps)
    return jnp.moveaxis(hs, 0, 2), final
