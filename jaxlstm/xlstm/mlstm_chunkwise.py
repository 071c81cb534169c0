"""The mLSTM's chunkwise form (and, with one chunk, its parallel form).

Works on (N, heads, T, d) arrays with the key already scaled and T a multiple of the chunk
(`jaxlstm.xlstm.mlstm._run` pads); see `jaxlstm.xlstm.mlstm` for how the forms relate.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm.xlstm import mlstm_gates as gates
from jaxlstm.xlstm.mlstm_recurrent import where_reset
from jaxlstm.xlstm.mlstm_state import MLSTMState

Array = jax.Array


class _Segments(NamedTuple):
    """Where the segments of a chunkwise run lie, per chunk (L steps, t the reader, s the
    writer), from the steps that start one."""

    same: Array    # (N, 1, NC, L, L): s at or after the start of t's segment (or of the chunk)
    opened: Array  # (N, 1, NC, L): a segment starts in the chunk at or before t, so t reads
    #                the initial state, not the one carried into the chunk
    decay: Array   # (N, H, NC, L): log f summed from that start (or the chunk's first step) to t


def _chunk_segments(starts: Array, log_f_cumsum: Array, log_f: Array) -> _Segments:
    """`_Segments` from `starts` (N, 1, NC, L) and the chunks' cumulative log forget gates.

    The decay from a segment's start s0 to t is F_t - F_{s0-1}, a difference of the same
    cumulative sums as log D's F_t - F_s: no log f of -inf enters a sum to cut the memory
    (which would leave the other entries without precision); the segments are masked."""
    axis = starts.ndim - 1
    position = jax.lax.broadcasted_iota(jnp.int32, starts.shape, axis)
    first = jax.lax.cummax(jnp.where(starts, position, 0), axis=axis)     # the segment's start
    opened = jax.lax.cummax(starts.astype(jnp.int32), axis=axis) > 0
    before_first = jnp.take_along_axis(log_f_cumsum - log_f,             # F_{s0-1}
                                       jnp.broadcast_to(first, log_f.shape), axis=-1)
    writer = jax.lax.broadcasted_iota(jnp.int32, starts.shape + starts.shape[-1:], axis + 1)
    return _Segments(same=writer >= first[..., None], opened=opened,
                     decay=log_f_cumsum - before_first)


def chunkwise(q, k, v, i_pre, log_f, state, chunk, starts=None):
    """The parallel form within chunks of `chunk` steps (T a multiple of it); one chunk of T
    steps is the parallel form.

    With `starts` ((N, 1, T) bool), the memory is `state` again before each step marked there:
    log D is masked to each segment, a step after a segment start in its chunk reads `state`
    decayed from that start instead of the carried memory, and a chunk holding a start hands
    on `state` decayed from its last start plus that segment's writes."""
    n_batch, heads, steps = q.shape[:3]
    num_chunks = steps // chunk

    def chunked(a):
        return a.reshape(a.shape[:2] + (num_chunks, chunk) + a.shape[3:])

    q, k, v, i_pre, log_f = (chunked(a) for a in (q, k, v, i_pre, log_f))
    log_f_cumsum = jnp.cumsum(log_f, axis=-1)                    # F_t within the chunk
    log_d = gates.log_decay_matrix(log_f_cumsum, i_pre)          # (N, H, NC, L, L)
    if starts is not None:
        segments = _chunk_segments(chunked(starts), log_f_cumsum, log_f)
        log_d = jnp.where(segments.same, log_d, -jnp.inf)
    row_max = jnp.max(log_d, axis=-1)                            # (N, H, NC, L)

    # Each chunk's own writes, as one write into the memory at the chunk's end: the weights are
    # the last row of D, stabilised by its maximum.
    chunk_max = row_max[..., -1]
    weights = jnp.exp(log_d[..., -1, :] - chunk_max[..., None])
    chunk_kv = jnp.einsum("...s,...sk,...sv->...kv", weights, k, v)
    chunk_k = jnp.einsum("...s,...sk->...k", weights, k)

    def carry_state(prev, chunk_totals):
        total_log_f, top, kv, ksum = chunk_totals[:4]
        incoming = prev
        if starts is not None:  # a segment starts in the chunk: its last one is handed on
            incoming = where_reset(chunk_totals[4], state, prev)
        m = gates.stabiliser_update(total_log_f, incoming.m, top)
        f_act = gates.stabilised_forget_gate(total_log_f, incoming.m, m)
        i_act = gates.stabilised_input_gate(top, m)
        new = MLSTMState(gates.memory_update(f_act, incoming.C, i_act, kv),
                         gates.normaliser_update(f_act, incoming.n, i_act, ksum), m)
        return new, prev

    if starts is None:
        totals = (log_f_cumsum[..., -1], chunk_max, chunk_kv, chunk_k)
    else:
        totals = (segments.decay[..., -1], chunk_max, chunk_kv, chunk_k,
                  segments.opened[..., -1])
    final, before = jax.lax.scan(carry_state, state,
                                 tuple(jnp.moveaxis(a, 2, 0) for a in totals))
    c_prev, n_prev, m_prev = (jnp.moveaxis(a, 0, 2) for a in before)  # (N, H, NC, ...)

    def read(memory, initial, spec):
        """q_t against the memory carried into t's chunk, or, after a segment start in the
        chunk, against the initial state."""
        carried = jnp.einsum(f"...tk,...{spec}->...t{spec[1:]}", q, memory)
        if starts is None:
            return carried
        fresh = jnp.einsum(f"nhctk,nh{spec}->nhct{spec[1:]}", q, initial)
        opened = segments.opened.reshape(segments.opened.shape + (1,) * (len(spec) - 1))
        return jnp.where(opened, fresh, carried)

    # Outputs: the chunk's own writes (intra) plus the incoming state (inter), both rescaled to
    # the recurrent stabiliser m_t = max(F_t + m_prev, row max of log D); after a segment
    # start in the chunk, the incoming state is the initial one, decayed from that start.
    if starts is None:
        inter_log = log_f_cumsum + m_prev[..., None]
    else:
        inter_log = segments.decay + jnp.where(segments.opened, state.m[:, :, None, None],
                                               m_prev[..., None])
    m = jnp.maximum(inter_log, row_max)
    decay = jnp.exp(log_d - m[..., None])
    inter = jnp.exp(inter_log - m)
    scores = jnp.einsum("...tk,...sk->...ts", q, k) * decay
    numerator = (jnp.einsum("...ts,...sv->...tv", scores, v)
                 + inter[..., None] * read(c_prev, state.C, "kv"))
    denominator = (jnp.sum(scores, axis=-1)
                   + inter * read(n_prev, state.n, "k"))
    hs = gates.normalised_readout(numerator, denominator, m)
    return hs.reshape((n_batch, heads, steps, hs.shape[-1])), final
