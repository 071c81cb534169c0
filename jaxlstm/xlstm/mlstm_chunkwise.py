"""The mLSTM's chunkwise form (and, with one chunk, its parallel form), with its own backward.

Works on (N, heads, T, d) arrays with the key already scaled and T a multiple of the chunk
(`jaxlstm.xlstm.mlstm._run` pads); see `jaxlstm.xlstm.mlstm` for how the forms relate.

Within a chunk of L steps, with F_t = log f_1 + ... + log f_t (from the chunk's first step)
and a_s = i~_s - F_s, every log-weight splits into a row and a column part:

        log D[t, s] = F_t - F_s + i~_s = F_t + a_s                    (s <= t)
        m_t         = max(F_t + m_prev, max_{s<=t} log D[t, s]) = F_t + M_t,
        M_t         = max(m_prev, max_{s<=t} a_s)                     (a running maximum)

so the stabilised weights are D[t, s] = exp(a_s - M_t) and E_t = exp(m_prev - M_t) (the
carried state's), the stabiliser of the state handed on is m_L, and

        S   = (q k^T) * D                                               (L, L)
        h_t = (S v + E q C_prev)_t / (max(|S 1 + E q . n_prev|_t, exp(-m_t)) + eps)
        C   = E_L C_prev + k^T diag(D[L, :]) v,   n = E_L n_prev + k^T D[L, :]

The work is split in two. The stabilisers (a, M, E's log, m: O(T) numbers and a scan over
chunks of one number per head) are computed with plain JAX and differentiated by autodiff.
Given them, everything else is linear in C and n: `_chunks` computes it (a forward scan over
chunks carries C and n alone) and has a hand-written backward (`jax.custom_vjp`): the
gradients within a chunk are dense batched matmuls, and a reverse scan carries dC and dn over
chunks. Autodiff of the same computation was ~3.5x its forward at S3 sizes: it kept the (L, L)
-inf masks and exps of log D, recomputed through the stabilisers' maxima on (L, L) arrays, and
differentiated the scan's C update with its m-dependent gates. (Being a custom VJP, the form
has no forward-mode derivative: jax.jvp / jacfwd of the chunkwise form raise; use the
recurrent or parallel form for those.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxlstm.validation import is_known
from jaxlstm.xlstm import mlstm_gates as gates
from jaxlstm.xlstm.mlstm_state import MLSTMState

Array = jax.Array


_TARGET_CHUNK = {"cpu": 40}
"""The chunk a long sequence gets per backend; other backends (GPU, TPU, unmeasured): 64."""


def default_chunk_size(steps, backend: str) -> int:
    """The chunk `mlstm` uses when none is given: near the backend's target L0 and dividing
    T, or nearly, so that no length pays for padding it does not need.

    Of the chunks L = 1..min(T, 2 L0) it takes the one of least

        cost(L) = ceil(T / L) L * (L / L0 + L0 / L) / 2

    (the padded length times a per-step cost that is least, 1, at L0, and grows as the
    (L, L) work within a chunk or the per-chunk state work and scan steps outgrow the other);
    ties go to the larger chunk. A T that is not a concrete number (a symbolic T under
    jax.export) gets L0: the padding is applied at run time.

    Measured on the 2-core CPU with nothing else running (`mlstm(..., mode="chunkwise",
    chunk_size=L)`, 4 heads, forward+backward of sum(hs), compiled calls timed in alternation,
    medians of 5 rounds; ms and in brackets the ratio to the best chunk at that T), at S2's
    B=32, I=32, H=128 (d=32):

        T=100   25: 13.6 (1.06)  32: 17.0 (1.31)  34: 13.7 (1.06)  40: 15.0 (1.16)  48: 35.5 (2.75)
                50: 12.9 (1.00)  64: 38.0 (2.94)
        T=200   25: 50.6 (1.20)  29: 53.8 (1.28)  32: 49.9 (1.18)  40: 42.1 (1.00)  48: 52.6 (1.25)
                50: 49.6 (1.18)  64: 66.0 (1.57)
        T=1000  25: 232 (1.06)   32: 232 (1.06)   36: 226 (1.03)   40: 219 (1.00)   48: 235 (1.07)
                50: 253 (1.16)   64: 266 (1.21)

    and at S3's B=64, I=128, H=256 (d=64):

        T=200   25: 270 (1.27)   29: 249 (1.17)   32: 253 (1.19)   40: 213 (1.00)   48: 234 (1.10)
                50: 228 (1.07)   64: 254 (1.19)
        T=1000  25: 1513 (1.15)  32: 1363 (1.04)  36: 1376 (1.05)  40: 1323 (1.01)  48: 1310 (1.00)
                50: 1340 (1.02)  64: 1430 (1.09)

    Chunks near 40 are best at both head sizes; padding costs what it adds (64 at T=100 pads to
    128: 2.9x; 48 pads to 144). An earlier sweep on a loaded host had put L0 at 32; these
    quiet runs moved it to 40. The rule picks 50 at T=50 and T=100, 32 at 64, 43 at 128
    (129 steps), 40 at 200 and 1000, 41 at 1024 to 4096, and T itself below ~55 (the parallel
    form); the padding is at most 2.2% of T for T from 50 to 4096.

    Args:
        steps: T, an int (or a symbolic dimension).
        backend: `jax.default_backend()`'s name ("cpu", "gpu", "tpu", ...).

    Returns:
        The chunk, between 1 and max(T, 1) (L0 for a symbolic T).

    Example:
        >>> default_chunk_size(100, "cpu")
        50
    """
    target = _TARGET_CHUNK.get(backend, 64)
    if not is_known(steps):
        return target
    steps = max(int(steps), 1)

    def cost(chunk):
        padded = -(-steps // chunk) * chunk
        return padded * (chunk / target + target / chunk) / 2, -chunk

    return min(range(1, min(steps, 2 * target) + 1), key=cost)


def _mm(x: Array, y: Array) -> Array:
    """x @ y over the trailing two axes, (.., M, K) x (.., K, N), the leading ones batched.

    Every matmul here is written in this one form, with `_t` where the math has x^T or y^T.
    (XLA folds such transposes into the dot's dimension numbers; forcing them into copies
    with an optimisation barrier measured the same at S2 and S3 sizes, within noise.)"""
    batch = tuple(range(x.ndim - 2))
    return jax.lax.dot_general(x, y, (((x.ndim - 1,), (y.ndim - 2,)), (batch, batch)))


def _t(a: Array) -> Array:
    """The trailing two axes swapped."""
    return jnp.swapaxes(a, -1, -2)


def _segment_cummax(a: Array, starts: Array) -> Array:
    """max of a over [start of t's segment, t], along the last axis; `starts` marks the steps
    that open a segment (broadcast against a). Differentiable (an associative scan)."""
    def combine(left, right):
        (value_l, start_l), (value_r, start_r) = left, right
        return jnp.where(start_r, value_r, jnp.maximum(value_l, value_r)), start_l | start_r

    starts = jnp.broadcast_to(starts, a.shape)
    return jax.lax.associative_scan(combine, (a, starts), axis=a.ndim - 1)[0]


def chunkwise(q, k, v, i_pre, log_f, state, chunk, starts=None):
    """The parallel form within chunks of `chunk` steps (T a multiple of it); one chunk of T
    steps is the parallel form.

    With `starts` ((N, 1, T) bool), the memory is `state` again before each step marked there:
    a step after a segment start in its chunk reads `state` decayed from that start instead of
    the carried memory, its row of D is masked to its segment, and a chunk holding a start
    hands on `state` decayed from its last start plus that segment's writes. For such a row,
    m_prev above is state.m - F_{s0-1} (s0 the segment's start) and the maximum runs over the
    segment.

    Args:
        q, k, v: (N, heads, T, d_k), (N, heads, T, d_k) (scaled), (N, heads, T, d_v).
        i_pre, log_f: input gate pre-activations and log forget gates, (N, heads, T).
        state: the `MLSTMState` before the first step (and after every reset).
        chunk: steps per chunk, a divisor of T.
        starts: (N, 1, T) bool or None.

    Returns:
        hs (N, heads, T, d_v) and the final `MLSTMState`.
    """
    n_batch, heads, steps = q.shape[:3]
    num_chunks = steps // chunk

    def chunked(a):
        return a.reshape(a.shape[:2] + (num_chunks, chunk) + a.shape[3:])

    q, k, v, i_pre, log_f = (chunked(a) for a in (q, k, v, i_pre, log_f))
    log_f_cumsum = jnp.cumsum(log_f, axis=-1)                    # F_t within the chunk
    col = i_pre - log_f_cumsum                                   # a_s
    state_m = state.m[:, :, None, None]
    if starts is None:
        running = jax.lax.cummax(col, axis=col.ndim - 1)         # max_{s<=t} a_s
        opened = None
    else:
        starts = chunked(starts)                                 # (N, 1, NC, L)
        position = jax.lax.broadcasted_iota(jnp.int32, starts.shape, 3)
        first = jax.lax.cummax(jnp.where(starts, position, 0), axis=3)   # the segment's start
        opened = jax.lax.cummax(starts.astype(jnp.int32), axis=3) > 0    # reads the initial state
        # F_{s0-1} from the same cumulative sums as F_t (no -inf enters a sum to cut the
        # memory): a row after a start reads state.m - F_{s0-1}.
        before_first = jnp.take_along_axis(log_f_cumsum - log_f,
                                           jnp.broadcast_to(first, log_f.shape), axis=-1)
        opened_base = state_m - before_first
        running = _segment_cummax(col, starts)
        # s <= t within t's segment (or the chunk): (N, 1, NC, L, L)
        writer = jax.lax.broadcasted_iota(jnp.int32, starts.shape + (chunk,), 4)
        reader = position[..., None]
        mask = (writer <= reader) & (writer >= first[..., None])

    # The stabiliser carried into each chunk: m = F_L + max(m_prev, max_s a_s), one number per
    # head and chunk (autodiff goes through this scan; it is small).
    def carry_m(m_prev, last):
        total, top = last[:2]
        base = m_prev if starts is None else jnp.where(last[2], last[3], m_prev)
        m = total + jnp.maximum(base, top)
        return m, m_prev

    lasts = (log_f_cumsum[..., -1], running[..., -1])
    if starts is not None:
        lasts += (opened[..., -1], opened_base[..., -1])
    final_m, m_prev = jax.lax.scan(carry_m, state.m,
                                   tuple(jnp.moveaxis(a, 2, 0) for a in lasts))
    base = jnp.moveaxis(m_prev, 0, 2)[..., None]                 # (N, H, NC, 1)
    if starts is not None:
        base = jnp.where(opened, opened_base, base)
    row = jnp.maximum(base, running)                             # M_t
    log_inter = base - row                                       # log E_t <= 0
    m = log_f_cumsum + row                                       # m_t

    if starts is None:
        mask = jnp.tril(jnp.ones((chunk, chunk), bool))
        opened = jnp.zeros((1, 1, 1, chunk), bool)
    hs, c_final, n_final = _chunks(q, k, v, col, row, log_inter, m, state.C, state.n,
                                   mask, opened, starts is not None)
    hs = hs.reshape((n_batch, heads, steps, hs.shape[-1]))
    return hs, MLSTMState(c_final, n_final, final_m)


# --- the part linear in C and n, with its backward --------------------------------------------


def _chunks_forward(q, k, v, col, row, log_inter, m, c_init, n_init, mask, opened, resets):
    """Outputs and final (C, n) given the stabilisers (col a_s, row M_t, log_inter log E_t and
    m_t, all (N, H, NC, L)); q, k, v chunked (N, H, NC, L, d); `mask` (.., L, L) the entries
    of D that count, `opened` (.., L) the rows that read the initial state (`resets`: whether
    any can). Returns them and the residuals of the backward."""
    # D[t, s] = exp(a_s - M_t) where it counts; elsewhere the exponent may be positive, so it
    # is masked before the exp.
    decay = jnp.exp(jnp.where(mask, col[..., None, :] - row[..., :, None], -jnp.inf))
    k_t = _t(k)                                                 # (.., d_k, L)
    scores = _mm(q, k_t) * decay                                # S = (q k^T) * D
    inter = jnp.exp(log_inter)                                  # E_t
    last = decay[..., -1, :]                                    # D[L, :]: the chunk's write
    k_last = k_t * last[..., None, :]
    write_c = _mm(k_last, v)                                    # k^T diag(D_L) v: (.., d_k, d_v)
    write_n = jnp.sum(k_last, axis=-1)
    inter_last = inter[..., -1]
    opened_last = jnp.broadcast_to(opened[..., -1], inter_last.shape)

    def carry(prev, chunk):
        c_prev, n_prev = prev
        w_c, w_n, e_last, o_last = chunk
        c_from, n_from = c_prev, n_prev
        if resets:  # a chunk holding a start: decayed from the initial state, not the carried
            c_from = jnp.where(o_last[..., None, None], c_init, c_prev)
            n_from = jnp.where(o_last[..., None], n_init, n_prev)
        return (e_last[..., None, None] * c_from + w_c, e_last[..., None] * n_from + w_n), prev

    (c_final, n_final), (c_prev, n_prev) = jax.lax.scan(
        carry, (c_init, n_init),
        tuple(jnp.moveaxis(a, 2, 0) for a in (write_c, write_n, inter_last, opened_last)))
    c_prev, n_prev = jnp.moveaxis(c_prev, 0, 2), jnp.moveaxis(n_prev, 0, 2)  # (N, H, NC, ..)

    # q_t against the state carried into t's chunk, or after a start, the initial state.
    read_c = _mm(q, c_prev)                                      # (N, H, NC, L, d_v)
    read_n = jnp.sum(q * n_prev[..., None, :], axis=-1)
    if resets:
        read_c = jnp.where(opened[..., None], jnp.einsum("nhctk,nhkv->nhctv", q, c_init), read_c)
        read_n = jnp.where(opened, jnp.einsum("nhctk,nhk->nhct", q, n_init), read_n)
    numerator = _mm(scores, v) + inter[..., None] * read_c
    denominator = jnp.sum(scores, axis=-1) + inter * read_n
    floor = jnp.exp(-m)
    scale = jnp.maximum(jnp.abs(denominator), floor) + gates.EPSILON
    hs = numerator / scale[..., None]
    residuals = (q, k, v, scores, decay, inter, read_c, read_n, denominator, floor, scale, hs,
                 c_prev, n_prev, c_init, n_init, opened)
    return (hs, c_final, n_final), residuals


def _chunks_backward(resets, residuals, cotangents):
    """The gradients of `_chunks_forward` w.r.t. q, k, v, the stabilisers and the initial
    (C, n), from those of hs and the final (C, n). With g = dh / scale (dnum) and dden:

        dS = g v^T + dden 1^T,  dv = S^T g,  dq = (dS * D) k,  dk = (dS * D)^T q
        (inter) dq += E (g C_prev^T + dden n_prev^T),  dC_prev = q^T diag(E) g, ...
        (writes) dC_c = the next chunk's dC_prev + E_L dC_{c+1}  (a reverse scan), then
                 dk += D_L (v dC_c^T + dn_c),  dv += D_L (k dC_c)
        da_s = sum_t (dD * D)[t, s],  dM_t = -sum_s (dD * D)[t, s],  dD * D = dS * S (+ row L)
    """
    (q, k, v, scores, decay, inter, read_c, read_n, denominator, floor, scale, hs,
     c_prev, n_prev, c_init, n_init, opened) = residuals
    d_hs, d_c_final, d_n_final = cotangents

    # Readout h = num / (max(|den|, floor) + eps); at a tie jnp.maximum splits the gradient.
    d_num = d_hs / scale[..., None]
    d_scale = -jnp.sum(d_hs * hs, axis=-1) / scale
    magnitude = jnp.abs(denominator)
    to_den = jnp.where(magnitude > floor, 1.0, jnp.where(magnitude == floor, 0.5, 0.0))
    d_den = d_scale * to_den * jnp.sign(denominator)
    d_m = -d_scale * (1.0 - to_den) * floor

    # The incoming state's part: E_t (q_t C_in, q_t . n_in).
    d_inter = jnp.sum(d_num * read_c, axis=-1) + d_den * read_n
    g_c = inter[..., None] * d_num                               # (.., L, d_v)
    g_n = inter * d_den                                          # (.., L)
    d_q = _mm(g_c, _t(c_prev)) + g_n[..., None] * n_prev[..., None, :]
    if resets:
        fresh = (jnp.einsum("nhctv,nhkv->nhctk", g_c, c_init)
                 + g_n[..., None] * n_init[:, :, None, None, :])
        d_q = jnp.where(opened[..., None], fresh, d_q)
        g_c_init = jnp.where(opened[..., None], g_c, 0.0)
        g_n_init = jnp.where(opened, g_n, 0.0)
        d_c_init = jnp.einsum("nhctk,nhctv->nhkv", q, g_c_init)
        d_n_init = jnp.einsum("nhctk,nhct->nhk", q, g_n_init)
        g_c, g_n = g_c - g_c_init, g_n - g_n_init
    q_t = _t(q)
    into_c = _mm(q_t, g_c)                                       # dC_prev of each chunk's rows
    into_n = jnp.sum(q * g_n[..., None], axis=-2)

    # The reverse scan: the cotangent of the state after chunk c from chunk c+1's reads and
    # its carry C_{c+1} = E_L C_c + ... (not where chunk c+1 holds a start).
    inter_last = inter[..., -1]
    opened_last = jnp.broadcast_to(opened[..., -1], inter_last.shape)
    through = jnp.where(opened_last, 0.0, inter_last)

    def carry(after, chunk):
        d_c, d_n = after
        i_c, i_n, e = chunk
        return (i_c + e[..., None, None] * d_c, i_n + e[..., None] * d_n), after

    (d_c_carried, d_n_carried), (d_c, d_n) = jax.lax.scan(
        carry, (d_c_final, d_n_final),
        tuple(jnp.moveaxis(a, 2, 0) for a in (into_c, into_n, through)), reverse=True)
    d_c, d_n = jnp.moveaxis(d_c, 0, 2), jnp.moveaxis(d_n, 0, 2)  # (N, H, NC, ..)
    if resets:
        from_init = jnp.where(opened_last, inter_last, 0.0)
        d_c_init = (d_c_init + d_c_carried
                    + jnp.einsum("nhc,nhckv->nhkv", from_init, d_c))
        d_n_init = d_n_init + d_n_carried + jnp.einsum("nhc,nhck->nhk", from_init, d_n)
        c_from = jnp.where(opened_last[..., None, None], c_init[:, :, None], c_prev)
        n_from = jnp.where(opened_last[..., None], n_init[:, :, None], n_prev)
    else:
        d_c_init, d_n_init = d_c_carried, d_n_carried
        c_from, n_from = c_prev, n_prev
    d_inter_last = jnp.sum(d_c * c_from, axis=(-2, -1)) + jnp.sum(d_n * n_from, axis=-1)
    d_inter = d_inter.at[..., -1].add(d_inter_last)

    # The chunk's write k^T diag(D_L) v (and k^T D_L) into the state after it.
    last = decay[..., -1, :]
    k_d_c = _mm(k, d_c)                                          # (.., L, d_v)
    d_last = jnp.sum(k_d_c * v, axis=-1) + jnp.sum(k * d_n[..., None, :], axis=-1)
    d_k = last[..., None] * (_mm(v, _t(d_c)) + d_n[..., None, :])
    d_v = last[..., None] * k_d_c

    # Within the chunk: S = (q k^T) * D, num += S v, den += S 1.
    d_scores = _mm(d_num, _t(v)) + d_den[..., None]
    d_v = d_v + _mm(_t(scores), d_num)
    d_q = d_q + _mm(d_scores * decay, k)
    d_k = d_k + _mm(_t(d_scores * decay), q)
    weighted = d_scores * scores                                 # dD * D
    weighted = weighted.at[..., -1, :].add(d_last * last)
    d_col = jnp.sum(weighted, axis=-2)
    d_row = -jnp.sum(weighted, axis=-1)
    return (d_q, d_k, d_v, d_col, d_row, d_inter * inter, d_m, d_c_init, d_n_init, None, None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(11,))
def _chunks(q, k, v, col, row, log_inter, m, c_init, n_init, mask, opened, resets):
    """`_chunks_forward`'s outputs (hs chunked, final C, final n), with the hand-written
    backward `_chunks_backward`."""
    return _chunks_forward(q, k, v, col, row, log_inter, m, c_init, n_init, mask, opened,
                           resets)[0]


_chunks.defvjp(_chunks_forward, _chunks_backward)
