"""The mLSTM's recurrent form: the stabilised step (`mlstm_step`) in a `lax.scan`, with a fast
backward.

Works on (N, heads, T, d) arrays with the key already scaled (`jaxlstm.xlstm.mlstm._run`
prepares them); the step is the equations of `jaxlstm.xlstm.mlstm_gates`, one call each.

**Backward.** Autodiff of the scan stores the memory C (N, heads, d_k, d_v) of every step and
differentiates every step's outer product and readout inside its reverse loop: 20x+ the
forward. `recurrent` has a custom VJP instead. Its forward is the same scan of `mlstm_step`
(one code path), keeping only the small per-step values n_t and m_t besides the inputs and
outputs. Write, per step (g_x for the gradient of the loss w.r.t. x, a_t = log f_t + m_{t-1}):

    s_t = max(|n_t . q_t|, exp(-m_t)) + eps,     dnum_t = g_h_t / s_t    (readout, batched)
    G_t = g_C_t + q_t dnum_t^T,   g_n_t + q_t dden_t      (the memory's total gradient at t)
    g_C_{t-1} = f'_t G_t                                  (the carry: dC; likewise dn)
    g_q_t = C_t dnum_t + n_t dden_t
    g_k_t = i'_t (G_t v_t + g_n_t),   g_v_t = i'_t G_t^T k_t

Only C_t and G_t are big, and neither needs the other: C_t runs forwards in time, G_t
backwards. So the backward is two loops over the big state, one each way: a forward loop that
rebuilds C_t from the initial state (with the gates f'_t, i'_t recomputed from the saved m_t)
and reads g_q_t off it, and a reverse loop that carries (dC, dn) and reads off g_k_t, g_v_t.
Each costs about one forward; what does not depend on the recursion (the gates, the readout's
gradient, n_t dden_t) is batched over all steps outside the loops. The gates' gradients need
<G_t, C_{t-1}>, which neither loop has; the identity

    <G_t, C_t> = f'_t <G_t, C_{t-1}> + i'_t k_t^T G_t v_t     (C_t's update, paired with G_t)
    Q_{t-1} := <g_C_{t-1}, C_{t-1}> = f'_t <G_t, C_{t-1}> = Q_t + q_t . g_q_t - k_t . g_k_t

(with the n terms alongside C's, Q_T = <g_C_T, C_T> from the final state's cotangent) gives
them from scalars per head and step, carried in the same reverse loop with the stabiliser's
gradient dm: f'_t and i'_t take g_f'_t f'_t = Q_{t-1} and g_i'_t i'_t = k_t . g_k_t, and
m_t = max(a_t, i~_t) passes its gradient to a_t (hence log f_t and m_{t-1}) or i~_t with
JAX's own weights (half each at a tie), so the gradient through m matches autodiff's; the
readout's exp(-m_t) adds to it. A step that reset the memory sends what it passed to C_{t-1},
n_{t-1}, m_{t-1} to the initial state instead (and Q restarts at 0 there).

Memory: nothing of size C per step is kept, and no checkpoints either. The rebuild needs the
states in time order, so it runs from the initial state (a checkpoint every k steps, as in
`jaxlstm.recurrence`, would only help a loop that needs them backwards). Measured alternatives
(forward+backward of `mlstm(..., mode="recurrent")` over its forward, in one run on a shared
2-core CPU): keeping every C_t (840 MB at S3) so that g_q = C dnum is one contraction after
the loops: 6.7x at S2 and 9.2x at S3, against 3.3x for the rebuild (writing and reading T
states costs more than the rebuild's passes over one state that stays in cache); both loops in
chunks of up to 20 steps with the decays in log space, so that each chunk reads and writes the
big state once through (d_k, d_v) @ (d_v, L) matmuls: 2.8x against 3.5x at S2 but 4.1x
against 3.3x at S3 (XLA:CPU runs these small batched matmuls at ~30-40 GFLOP/s; the chunked
reverse loop alone took 70 ms at S3 against 39 ms step by step).

Forward-mode differentiation (`jax.jvp`, `jax.jacfwd`) does not go through a custom VJP;
`recurrent_autodiff` is the same function without it (and the reference the tests compare
against).
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
    c = gates.memory_update(f_act, state.C, i_act, _outer(k, v))
    n = gates.normaliser_update(f_act, state.n, i_act, k)
    numerator = jnp.einsum("...k,...kv->...v", q, c)
    denominator = jnp.einsum("...k,...k->...", q, n)
    return MLSTMState(c, n, m), gates.normalised_readout(numerator, denominator, m)


def _where_reset(reset: Array, initial: MLSTMState, state: MLSTMState) -> MLSTMState:
    """`initial` where `reset` ((N, 1) bool, per sequence), else `state`, field by field."""
    return MLSTMState(*(jnp.where(reset.reshape(reset.shape + (1,) * (a.ndim - 2)), i, a)
                        for i, a in zip(initial, state)))


def _outer(a: Array, b: Array) -> Array:
    """a b^T per head: (..., d_k) x (..., d_v) -> (..., d_k, d_v)."""
    return a[..., :, None] * b[..., None, :]


def _flag(flag: Array, a: Array) -> Array:
    """A per-sequence flag ((..., N, 1)) broadcastable against a per-head array a
    ((..., N, heads, ...))."""
    return flag.reshape(flag.shape + (1,) * (a.ndim - flag.ndim))


def _time_major(*arrays: Array | None) -> tuple[Array | None, ...]:
    """(N, heads, T, ...) -> (T, N, heads, ...); (N, 1, T) starts -> (T, N, 1)."""
    return tuple(None if a is None else jnp.moveaxis(a, 2, 0) for a in arrays)


def _forward(q, k, v, i_pre, log_f, state, starts, keep):
    """The scan of `mlstm_step` over time-major inputs; returns `(final, hs, kept)`, `kept`
    the states' (n_t, m_t) of every step (for the backward) if `keep`, else None."""
    def body(carry, step):
        if starts is not None:
            *step, start = step
            carry = _where_reset(start, state, carry)
        carry, h = mlstm_step(carry, *step)
        return carry, (h, (carry.n, carry.m) if keep else None)

    inputs = (q, k, v, i_pre, log_f) + (() if starts is None else (starts,))
    final, (hs, kept) = jax.lax.scan(body, state, inputs)
    return final, hs, kept


def recurrent(q, k, v, i_pre, log_f, state, starts=None):
    """The step in a scan; with `starts` ((N, 1, T) bool) the memory is `state` again before
    each step marked there.

    Args:
        q, k, v: (N, heads, T, d_k), (N, heads, T, d_k) (scaled), (N, heads, T, d_v), in the
            state dtype (float32 or wider).
        i_pre, log_f: (N, heads, T).
        state: the initial `MLSTMState` (N-batched).
        starts: (N, 1, T) bool or None.

    Returns:
        `(hs, final)`: hs (N, heads, T, d_v) and the final `MLSTMState`. Differentiable in
        reverse mode with the fast backward above (module docstring); not in forward mode.
    """
    hs, final = _recurrent(q, k, v, i_pre, log_f, state, starts)
    return hs, final


def recurrent_autodiff(q, k, v, i_pre, log_f, state, starts=None):
    """`recurrent` without the custom VJP: JAX differentiates the scan itself (also in
    forward mode), at 20x+ the forward's time and storing C at every step."""
    final, hs, _ = _forward(*_time_major(q, k, v, i_pre, log_f), state,
                            *_time_major(starts), keep=False)
    return jnp.moveaxis(hs, 0, 2), final


@jax.custom_vjp
def _recurrent(q, k, v, i_pre, log_f, state, starts):
    return recurrent_autodiff(q, k, v, i_pre, log_f, state, starts)


def _recurrent_fwd(q, k, v, i_pre, log_f, state, starts):
    steps = _time_major(q, k, v, i_pre, log_f)
    starts_t, = _time_major(starts)
    final, hs, (ns, ms) = _forward(*steps, state, starts_t, keep=True)
    return (jnp.moveaxis(hs, 0, 2), final), (steps, state, starts_t, hs, ns, ms, final)


def _recurrent_bwd(residuals, cotangents):
    (q, k, v, i_pre, log_f), state, starts, hs, ns, ms, final = residuals
    d_hs, d_final = cotangents
    d_hs = jnp.moveaxis(d_hs, 2, 0)                                 # (T, N, heads, d_v)

    # The gates of every step, batched: m_{t-1} is the previous step's m, or the initial
    # state's where the memory was reset before step t.
    m_prev = jnp.concatenate([state.m[None], ms[:-1]])
    if starts is not None:
        m_prev = jnp.where(_flag(starts, m_prev), state.m[None], m_prev)
    f_act = gates.stabilised_forget_gate(log_f, m_prev, ms)
    i_act = gates.stabilised_input_gate(i_pre, ms)
    # d m_t / d a_t and d m_t / d i~_t as autodiff has them (ties split evenly).
    _, max_vjp = jax.vjp(gates.stabiliser_update, log_f, m_prev, i_pre)
    w_a, _, w_i = max_vjp(jnp.ones_like(ms))

    # The readout's gradient, batched: numerator_t = h_t s_t (the forward's divided out again).
    den = jnp.einsum("...k,...k->...", q, ns)
    scale = jnp.maximum(jnp.abs(den), jnp.exp(-ms)) + gates.EPSILON
    _, readout_vjp = jax.vjp(gates.normalised_readout, hs * scale[..., None], den, ms)
    d_num, d_den, dm_read = readout_vjp(d_hs)

    # C_t forwards from the initial state; g_q_t = C_t dnum_t (+ n_t dden_t, batched below).
    def rebuild(c, step):
        f_t, i_t, k_t, v_t, dnum_t, start = step
        if start is not None:
            c = jnp.where(_flag(start, c), state.C, c)
        c = gates.memory_update(f_t, c, i_t, _outer(k_t, v_t))
        return c, jnp.einsum("...kv,...v->...k", c, dnum_t)

    _, dq = jax.lax.scan(rebuild, state.C, (f_act, i_act, k, v, d_num, starts))
    dq = dq + ns * d_den[..., None]

    # One reverse loop over the steps, carrying the gradients w.r.t. step t + 1's memory:
    # G_{t+1} and g_n_{t+1} (totals, readout included), Q_t and dm_t (module docstring).
    # G_t = g_{t+1} G_{t+1} + q_t dnum_t^T with g_{t+1} = f'_{t+1}, or 0 where step t + 1
    # reset the memory: what it passed back (f'_{t+1} G_{t+1}, and its dm) goes to the initial
    # state's gradient instead. (Carrying G_{t+1} rather than g_{t+1} G_{t+1} makes the scaling
    # part of the one pass over the big state that adds to it: scaling at the end of the step
    # was a pass of its own, and the loop took 2x as long.)
    qdq = jnp.einsum("...k,...k->...", q, dq)
    one = jnp.ones_like(f_act[:1])
    if starts is None:
        keep_next, reset_next = jnp.concatenate([f_act[1:], one]), None
    else:
        reset = _flag(starts, f_act)
        keep_next = jnp.concatenate([jnp.where(reset, 0, f_act)[1:], one])
        reset_next = (jnp.concatenate([starts[1:], jnp.zeros_like(starts[:1])]),
                      jnp.concatenate([jnp.where(reset, f_act, 0)[1:], 0 * one]))

    def reverse(carry, step):
        (d_c, d_n, big_q, dm), d_init = carry
        keep, reset_t, i_t, q_t, k_t, v_t, dnum_t, dden_t, qdq_t, dm_read_t, w_a_t, w_i_t = step
        if reset_t is not None:
            start, f_next = reset_t
            start = _flag(start, dm)
            d_init = MLSTMState(d_init.C + f_next[..., None, None] * d_c,
                                d_init.n + f_next[..., None] * d_n,
                                d_init.m + jnp.where(start, dm, 0))
            big_q, dm = jnp.where(start, 0, big_q), jnp.where(start, 0, dm)
        d_c = keep[..., None, None] * d_c + _outer(q_t, dnum_t)     # G_t
        d_n = keep[..., None] * d_n + q_t * dden_t[..., None]
        dk = i_t[..., None] * (jnp.einsum("...kv,...v->...k", d_c, v_t) + d_n)
        dv = i_t[..., None] * jnp.einsum("...kv,...k->...v", d_c, k_t)
        # The gates: f'_t, i'_t and m_t = max(a_t, i~_t) with a_t = log f_t + m_{t-1}.
        g_i = jnp.einsum("...k,...k->...", k_t, dk)    # g_i'_t i'_t = i'_t k_t^T (G_t v_t + g_n_t)
        total = big_q + qdq_t                          # <G_t, C_t> + <g_n_t, n_t>
        g_f = total - g_i                              # g_f'_t f'_t = Q_{t-1}
        dm = dm + dm_read_t - total                    # f'_t and i'_t both divide by exp(m_t)
        d_a = g_f + w_a_t * dm
        d_i = g_i + w_i_t * dm
        return ((d_c, d_n, g_f, d_a), d_init), (dk, dv, d_a, d_i)

    q_final = (jnp.einsum("...kv,...kv->...", d_final.C, final.C)
               + jnp.einsum("...k,...k->...", d_final.n, final.n))
    d_init = None if starts is None else jax.tree.map(jnp.zeros_like, state)
    ((g_c0, g_n0, _, dm0), d_init), (dk, dv, d_log_f, d_i_pre) = jax.lax.scan(
        reverse, ((d_final.C, d_final.n, q_final, d_final.m), d_init),
        (keep_next, reset_next, i_act, q, k, v, d_num, d_den, qdq, dm_read, w_a, w_i),
        reverse=True)

    # What step 0 passed back (f'_0 G_0, d a_0) went to the initial state, whether or not it
    # reset.
    d_state = MLSTMState(f_act[0][..., None, None] * g_c0, f_act[0][..., None] * g_n0, dm0)
    if starts is not None:
        d_state = MLSTMState(*(a + b for a, b in zip(d_state, d_init)))
    grads = tuple(jnp.moveaxis(g, 0, 2) for g in (dq, dk, dv, d_i_pre, d_log_f))
    return grads + (d_state, None)


_recurrent.defvjp(_recurrent_fwd, _recurrent_bwd)
