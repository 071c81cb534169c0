"""The mLSTM cell over a sequence, in three interchangeable forms: recurrent, parallel, chunkwise.

What is in the cell here, and what is left to the block. The cell is the mLSTM of Beck et al.
(2024), eqs. (19)-(27), without its output gate: queries, keys and values and the two scalar
gates per head are linear maps of the input x_t,

        q_t = x_t W_q,   k_t = x_t W_k,   v_t = x_t W_v           (split into heads)
        i~_t = x_t W_i + b_i,   f~_t = x_t W_f + b_f                (one scalar per head)

and `jaxlstm.xlstm.mlstm_gates` turns them into the memory (C, n, m) and the output h~_t per
head; the heads are concatenated, so the output has hidden_size = heads * d_v features.
The reference's mLSTM layer (NX-AI/xlstm, `xlstm/blocks/mlstm/layer.py`) wraps the same cell
in more: an up-projection into two branches, a causal conv1d + SiLU before q and k,
block-diagonal ("headwise") q, k, v maps, gates computed from concat(q, k, v) rather than x, a
per-head LayerNorm of h~ (`outnorm`), a learnable skip, the output gate h * SiLU(z) and a
down-projection. All of those belong to the block, which can feed its own q, k, v and gate
pre-activations to `mlstm_qkv`. The paper's sigmoid output gate o_t is left to the block too:
both reference implementations apply their output gate after the head norm, outside the cell.

Initialisation follows the reference cell (`mLSTMCell.reset_parameters` and the layer's
`small_init_init_` for q, k, v): W_q, W_k, W_v ~ N(0, 2 / (5 * input_size)); W_i = W_f = 0;
b_i ~ N(0, 0.1^2); b_f spaced linearly from 3 to 6 across the heads (forget gates near 1).

The three forms compute the same function (to rounding) and take and return the same state:

* "recurrent": `lax.scan` over steps of the stabilised update; it stores only (C, n, m).
* "parallel": the quadratic form over the whole sequence, with the log-gate matrix
  log D[t, s] = F_t - F_s + i~_s and the row maximum as stabiliser; O(T^2) memory.
* "chunkwise" (the default): the parallel form within chunks of `chunk_size` steps, with (C, n, m)
  carried from chunk to chunk; time and memory linear in T.

In every form the stabiliser m_t is the recurrent one, max(log f_t + m_{t-1}, i~_t), which is
the row maximum of log D extended by the incoming state's term F_t + m_0. (The reference's
parallel kernel leaves that term out, which changes the outputs only through eps.)

Segment resets (`resets`, packed documents) keep all three forms equal: the recurrent step
starts again from the initial state, and the parallel and chunkwise forms mask log D to each
segment and read the initial state decayed from the segment's start (`mlstm`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm.family import Family, checked_apply, form
from jaxlstm.validation import (
    check_floating,
    check_positive_int,
    check_resets,
    check_seq_lengths,
    is_known,
    shape_str,
)
from jaxlstm.xlstm import mlstm_gates as gates
from jaxlstm.xlstm.mlstm_chunkwise import chunkwise, default_chunk_size
from jaxlstm.xlstm.mlstm_recurrent import mlstm_step, recurrent
from jaxlstm.xlstm.mlstm_state import MLSTMState

Array = jax.Array

MODES = ("chunkwise", "parallel", "recurrent")
"""The forms of `mlstm`, all computing the same function."""

_CLOSED = -1e30
"""An input gate pre-activation that writes nothing: exp(_CLOSED - m) == 0. Finite, so that
stabilisers of fully closed chunks stay finite and differences of them are not NaN."""


class MLSTMParams(NamedTuple):
    """An mLSTM cell's parameters (no biases on q, k, v, as in the reference).

    Attributes:
        w_q: query kernel, (I, heads * d_k).
        w_k: key kernel, (I, heads * d_k).
        w_v: value kernel, (I, heads * d_v).
        w_i: input gate kernel, (I, heads).
        b_i: input gate bias, (heads,).
        w_f: forget gate kernel, (I, heads).
        b_f: forget gate bias, (heads,).
    """

    w_q: Array
    w_k: Array
    w_v: Array
    w_i: Array
    b_i: Array
    w_f: Array
    b_f: Array


def init_mlstm(
    key: Array,
    input_size: int,
    hidden_size: int,
    *,
    num_heads: int = 4,
    qk_size: int | None = None,
    dtype: Any = jnp.float32,
) -> MLSTMParams:
    """Initialises an mLSTM cell as the reference does (see the module docstring).

    Args:
        key: PRNG key.
        input_size: I, features of the input.
        hidden_size: features of the output, heads * d_v; must be divisible by `num_heads`.
        num_heads: heads, each with its own memory and gates (the reference's default is 4).
        qk_size: d_k, the query and key size per head; defaults to d_v.
        dtype: parameter dtype; initialised in float32 and cast.

    Returns:
        `MLSTMParams`.

    Example:
        >>> params = init_mlstm(jax.random.key(0), input_size=3, hidden_size=8, num_heads=2)
        >>> params.w_q.shape, params.b_f
        ((3, 8), Array([3., 6.], dtype=float32))
    """
    input_size = check_positive_int(input_size, "input_size")
    hidden_size = check_positive_int(hidden_size, "hidden_size")
    num_heads = check_positive_int(num_heads, "num_heads")
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size must be divisible by num_heads ({num_heads}), got {hidden_size}."
        )
    qk_size = check_positive_int(qk_size, "qk_size", allow_none=True) or hidden_size // num_heads
    k_q, k_k, k_v, k_i = jax.random.split(key, 4)
    std = math.sqrt(2.0 / (5.0 * input_size))

    def normal(k, shape, scale):
        return scale * jax.random.normal(k, shape, jnp.float32)

    params = MLSTMParams(
        w_q=normal(k_q, (input_size, num_heads * qk_size), std),
        w_k=normal(k_k, (input_size, num_heads * qk_size), std),
        w_v=normal(k_v, (input_size, hidden_size), std),
        w_i=jnp.zeros((input_size, num_heads), jnp.float32),
        b_i=normal(k_i, (num_heads,), 0.1),
        w_f=jnp.zeros((input_size, num_heads), jnp.float32),
        b_f=jnp.linspace(3.0, 6.0, num_heads, dtype=jnp.float32),
    )
    return jax.tree.map(lambda a: a.astype(dtype), params)


# --- public functions ---------------------------------------------------------------------------


def _check_mode(mode: Any, chunk_size: Any) -> tuple[str, int | None]:
    """The form to run (`mode`, or the backend's fastest: `jaxlstm.family.form`) and the
    checked `chunk_size` (None: chosen from T when the chunks are made, `_run`)."""
    mode = form("mlstm", mode)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}.")
    return mode, None if chunk_size is None else check_positive_int(chunk_size, "chunk_size")


def _check_state(state: Any, batch_shape, heads: int, d_k: int, d_v: int, name: str) -> None:
    expected = {"C": (heads, d_k, d_v), "n": (heads, d_k), "m": (heads,)}
    for field, tail in expected.items():
        if not hasattr(state, field):
            raise TypeError(f"{name} must be MLSTMState(C, n, m), got {type(state).__name__} "
                            f"without a '{field}' field.")
        value = check_floating(getattr(state, field), f"{name}.{field}")
        want = tuple(batch_shape) + tail
        if value.shape != want:
            raise ValueError(
                f"{name}.{field} must have shape {shape_str(want)} (batch shape "
                f"{shape_str(tuple(batch_shape))}, heads {heads}, d_k {d_k}, d_v {d_v}), "
                f"got {shape_str(value.shape)}."
            )


def zero_mlstm_state(batch_shape, heads: int, d_k: int, d_v: int,
                     dtype: Any = jnp.float32) -> MLSTMState:
    """The empty memory: C = 0, n = 0, m = 0 (the reference's initial state)."""
    batch_shape = tuple(batch_shape)
    return MLSTMState(jnp.zeros(batch_shape + (heads, d_k, d_v), dtype),
                      jnp.zeros(batch_shape + (heads, d_k), dtype),
                      jnp.zeros(batch_shape + (heads,), dtype))


def mlstm_qkv(
    q: Array,
    k: Array,
    v: Array,
    i_pre: Array,
    f_pre: Array,
    *,
    mode: str | None = None,
    chunk_size: int | None = None,
    initial_state: MLSTMState | None = None,
    seq_lengths: Array | None = None,
    reverse: bool = False,
    resets: Array | None = None,
) -> tuple[Array, MLSTMState]:
    """The mLSTM memory over a sequence of given queries, keys, values and gate
    pre-activations, per head (what a block with its own projections calls).

    Equivalent to this loop over `mlstm_step` (no `seq_lengths`, not `reverse`)::

        state = initial_state or zeros (m = 0)
        for t in range(T):
            state, h[..., t, :, :] = mlstm_step(state, q_t, k_t / sqrt(d_k), v_t, i~_t,
                                                logsigmoid(f~_t))

    Args:
        q: queries, (batch..., T, heads, d_k).
        k: keys (unscaled), (batch..., T, heads, d_k).
        v: values, (batch..., T, heads, d_v).
        i_pre: input gate pre-activations i~, (batch..., T, heads).
        f_pre: forget gate pre-activations f~, (batch..., T, heads).
        mode, chunk_size, initial_state, seq_lengths, reverse, resets: as in `mlstm`
            (resets (batch..., T)).

    Returns:
        `(hs, final_state)`: hs (batch..., T, heads, d_v) in the promoted dtype of the inputs,
        final_state an `MLSTMState` in at least float32.
    """
    mode, chunk_size = _check_mode(mode, chunk_size)
    q, k, v = (check_floating(a, name) for a, name in ((q, "q"), (k, "k"), (v, "v")))
    i_pre, f_pre = check_floating(i_pre, "i_pre"), check_floating(f_pre, "f_pre")
    if q.ndim < 3:
        raise ValueError(f"q must have shape (batch..., T, heads, d_k), got {shape_str(q.shape)}.")
    lead = q.shape[:-1]
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {shape_str(q.shape)}, got "
                         f"{shape_str(k.shape)}.")
    if v.ndim != q.ndim or v.shape[:-1] != lead:
        raise ValueError(f"v must have shape {shape_str(lead + ('d_v',))} to match q "
                         f"{shape_str(q.shape)}, got {shape_str(v.shape)}.")
    for name, gate in (("i_pre", i_pre), ("f_pre", f_pre)):
        if gate.shape != lead:
            raise ValueError(f"{name} must have shape {shape_str(lead)} (q's shape without "
                             f"d_k), got {shape_str(gate.shape)}.")
    dtype = jnp.result_type(q, k, v, i_pre, f_pre)
    return _run(q, k, v, i_pre, f_pre, dtype, mode, chunk_size, initial_state, seq_lengths,
                reverse, resets)


def _run(q, k, v, i_pre, f_pre, dtype, mode, chunk_size, initial_state, seq_lengths, reverse,
         resets=None):
    """Checks the state, lengths and resets, then runs the chosen form on (N, heads, T, d)
    arrays."""
    *batch_shape, steps, heads, d_k = q.shape
    batch_shape = tuple(batch_shape)
    d_v = v.shape[-1]
    state_dtype = jnp.promote_types(dtype, jnp.float32)
    if initial_state is None:
        initial_state = zero_mlstm_state(batch_shape, heads, d_k, d_v, state_dtype)
    else:
        _check_state(initial_state, batch_shape, heads, d_k, d_v, "initial_state")
        initial_state = MLSTMState(*(jnp.asarray(a).astype(state_dtype) for a in initial_state))
    if seq_lengths is not None:
        seq_lengths = check_seq_lengths(seq_lengths, batch_shape, steps)
    if resets is not None:
        resets = check_resets(resets, batch_shape, steps)
    if steps == 0:
        return jnp.zeros(batch_shape + (0, heads, d_v), dtype), initial_state

    size = math.prod(batch_shape)

    def flat(a):  # (batch..., T, heads, ...) -> (N, heads, T, ...) in the state dtype
        return jnp.moveaxis(a.astype(state_dtype).reshape((size,) + a.shape[len(batch_shape):]),
                            1, 2)

    q, k, v, i_pre, f_pre = (flat(a) for a in (q, k, v, i_pre, f_pre))
    k = gates.scaled_key(k)
    log_f = gates.log_forget_gate(f_pre)
    state = MLSTMState(*(a.reshape((size,) + a.shape[len(batch_shape):])
                         for a in initial_state))

    # (An iota, not jnp.arange(steps)[None]: jax2onnx cannot index a range of a symbolic T.)
    time = jax.lax.broadcasted_iota(jnp.int32, (1, steps), 1)      # (1, T)
    order = valid = None
    if seq_lengths is not None:
        lengths = jnp.clip(seq_lengths.reshape(size), 0, steps)
        valid = time < lengths[:, None]                             # (N, T)
        if reverse:  # each valid prefix backwards, the padding where it is
            order = jnp.where(valid, lengths[:, None] - 1 - time, time)
    elif reverse:
        order = jnp.broadcast_to(time[:, ::-1], (size, steps))
    starts = None
    if resets is not None:
        # The steps before which the memory is the initial state again, at their own
        # positions: forwards each segment's first step, backwards each segment's last one
        # (the step before a reset); resets at padded steps are dropped (the memory is frozen).
        starts = resets.reshape((size, 1, steps))
        if valid is not None:
            starts = starts & valid[:, None, :]
        if reverse:
            starts = jnp.concatenate([starts[..., 1:], jnp.zeros_like(starts[..., :1])], axis=-1)

    def reorder(a):
        index = order.reshape((size, 1, steps) + (1,) * (a.ndim - 3))
        return jnp.take_along_axis(a, index, axis=2)

    if order is not None:
        q, k, v, i_pre, log_f = (reorder(a) for a in (q, k, v, i_pre, log_f))
        if starts is not None:
            starts = reorder(starts)
    if valid is not None:
        # Past a sequence's end the memory is frozen: the input gate is closed (nothing is
        # written) and the forget gate is open (log f = 0: nothing is forgotten), so the final
        # state is the state after the last valid step. (Closing the *forget* gate, as
        # xlstm-jax does at document boundaries of packed sequences, would erase it instead.)
        gate_valid = valid[:, None, :]
        i_pre = jnp.where(gate_valid, i_pre, _CLOSED)
        log_f = jnp.where(gate_valid, log_f, 0.0)

    if mode == "recurrent":
        hs, final = recurrent(q, k, v, i_pre, log_f, state, starts)
    else:
        # Under jax.export with a symbolic T (an exported model's any length), the chunk is
        # the chunk size and the padding always applied: its width is only known at run time.
        known = is_known(steps)
        if chunk_size is None:
            chunk_size = default_chunk_size(steps, jax.default_backend())
        chunk = steps if mode == "parallel" else min(chunk_size, steps) if known else chunk_size
        padded = -(-steps // chunk) * chunk
        if not known or padded != steps:  # frozen padding steps at the end, as past the end
            def pad(a, value):
                widths = [(0, 0)] * a.ndim
                widths[2] = (0, padded - steps)
                return jnp.pad(a, widths, constant_values=value)

            q, k, v, log_f = (pad(a, 0.0) for a in (q, k, v, log_f))
            i_pre = pad(i_pre, _CLOSED)
            if starts is not None:
                starts = pad(starts, False)
        hs, final = chunkwise(q, k, v, i_pre, log_f, state, chunk, starts)
        hs = hs[:, :, :steps]

    if order is not None:
        hs = reorder(hs)
    if valid is not None:
        hs = jnp.where(valid[:, None, :, None], hs, 0.0)
    hs = jnp.moveaxis(hs, 1, 2).astype(dtype)                      # (N, T, heads, d_v)
    hs = hs.reshape(batch_shape + hs.shape[1:])
    final = MLSTMState(*(a.reshape(batch_shape + a.shape[1:]) for a in final))
    return hs, final


def _check_params(params: Any, name: str = "params") -> tuple[int, int, int, int]:
    """(input_size, heads, d_k, d_v) of an `MLSTMParams`; errors name the field."""
    for field in MLSTMParams._fields:
        if not hasattr(params, field):
            raise TypeError(f"{name} must be MLSTMParams{MLSTMParams._fields}, got "
                            f"{type(params).__name__} without a '{field}' field.")
        value = check_floating(getattr(params, field), f"{name}.{field}")
        want_rank = 1 if field.startswith("b_") else 2
        if value.ndim != want_rank:
            raise ValueError(f"{name}.{field} must have rank {want_rank}, got shape "
                             f"{shape_str(value.shape)}.")
    heads = params.b_i.shape[0]
    input_size = params.w_q.shape[0]
    if heads == 0:
        raise ValueError(f"{name}.b_i must have shape (heads,) with heads >= 1, got (0,).")
    for field in ("w_q", "w_k", "w_v"):
        shape = getattr(params, field).shape
        if shape[0] != input_size or not shape[1] or shape[1] % heads:
            raise ValueError(
                f"{name}.{field} must have shape ({input_size}, heads * d) with heads {heads} "
                f"(from {name}.b_i), got {shape_str(shape)}."
            )
    if params.w_k.shape != params.w_q.shape:
        raise ValueError(f"{name}.w_k must have the shape of {name}.w_q "
                         f"{shape_str(params.w_q.shape)}, got {shape_str(params.w_k.shape)}.")
    for field, want in (("w_i", (input_size, heads)), ("w_f", (input_size, heads)),
                        ("b_f", (heads,))):
        shape = getattr(params, field).shape
        if shape != want:
            raise ValueError(f"{name}.{field} must have shape {shape_str(want)} (input_size "
                             f"{input_size}, heads {heads}), got {shape_str(shape)}.")
    return input_size, heads, params.w_q.shape[1] // heads, params.w_v.shape[1] // heads


def mlstm_cell(params: MLSTMParams, state: MLSTMState, x_t: Array) -> tuple[MLSTMState, Array]:
    """One mLSTM step on an input: projects x_t to q, k, v and the gates, then `mlstm_step`.

        q = x_t W_q,  k = x_t W_k / sqrt(d_k),  v = x_t W_v     (split into heads)
        i~ = x_t W_i + b_i,  log f = logsigmoid(x_t W_f + b_f)  (one per head)
        m_t = max(log f + m_{t-1}, i~),  C_t = f' C_{t-1} + i' k v^T,  n_t = f' n_{t-1} + i' k
        h_t = q^T C_t / (max(|q^T n_t|, exp(-m_t)) + 1e-6)       (heads concatenated)

    The same step as `mlstm(..., mode="recurrent")` over one time step, and the same function
    as every mode of `mlstm` step by step: a prompt run chunkwise continues here (decoding,
    streaming). Any number of leading batch dimensions (including none).

    Args:
        params: `MLSTMParams`.
        state: `MLSTMState` with C (..., heads, d_k, d_v), n (..., heads, d_k), m (..., heads)
            and the batch shape of `x_t` (`zero_mlstm_state` for the empty memory).
        x_t: the step's input, (..., I).

    Returns:
        `(new_state, h_t)`: the state in at least float32 (as `mlstm` returns it) and h_t
        (..., heads * d_v) in the promoted dtype of `x_t` and `params`.

    Example:
        >>> params = init_mlstm(jax.random.key(0), input_size=3, hidden_size=8, num_heads=2)
        >>> state = zero_mlstm_state((5,), heads=2, d_k=4, d_v=4)
        >>> state, h = mlstm_cell(params, state, jnp.ones((5, 3)))     # h: (5, 8)
    """
    input_size, heads, d_k, d_v = _check_params(params)
    x_t = check_floating(x_t, "x_t")
    if x_t.ndim < 1 or x_t.shape[-1] != input_size:
        raise ValueError(f"x_t must have shape (..., {input_size}) (params.w_q is "
                         f"({input_size}, ...)), got {shape_str(x_t.shape)}.")
    batch_shape = x_t.shape[:-1]
    _check_state(state, batch_shape, heads, d_k, d_v, "state")
    dtype = jnp.result_type(x_t.dtype, *jax.tree.leaves(params))
    state_dtype = jnp.promote_types(dtype, jnp.float32)
    x_t = x_t.astype(dtype)
    params = jax.tree.map(lambda a: a.astype(dtype), params)

    def project(w, per_head):  # (..., heads, d) in the state dtype, as `mlstm` computes them
        return (x_t @ w).reshape(batch_shape + (heads, per_head)).astype(state_dtype)

    def gate(w, b):  # the bias broadcast explicitly (no implicit rank promotion)
        return (x_t @ w + jnp.reshape(b, (1,) * (x_t.ndim - 1) + b.shape)).astype(state_dtype)

    state = MLSTMState(*(jnp.asarray(a).astype(state_dtype) for a in state))
    new_state, h = mlstm_step(state, project(params.w_q, d_k),
                              gates.scaled_key(project(params.w_k, d_k)),
                              project(params.w_v, d_v), gate(params.w_i, params.b_i),
                              gates.log_forget_gate(gate(params.w_f, params.b_f)))
    return new_state, h.reshape(batch_shape + (heads * d_v,)).astype(dtype)


def mlstm(
    params: MLSTMParams,
    xs: Array,
    *,
    mode: str | None = None,
    chunk_size: int | None = None,
    initial_state: MLSTMState | None = None,
    seq_lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    resets: Array | None = None,
) -> tuple[Array, MLSTMState]:
    """Runs an mLSTM cell over a sequence.

    Projects x_t to q, k, v (split into heads) and the gate pre-activations i~, f~ (one per
    head), runs the memory (`mlstm_qkv`), and concatenates the heads' outputs h~_t. The three
    `mode`s are the same function (see the module docstring); the state they take and return
    is the same, so a model run chunkwise over a prompt continues step by step in "recurrent"
    mode (or chunk by chunk) with the same outputs as one call over the whole sequence.

    Variable length: sequence b has `seq_lengths[b]` valid steps of a right-padded batch.
    Past its end the memory is frozen (input gate closed, forget gate open), outputs there are
    exactly zero, and the final state is the state after the last valid step (the initial state
    for length 0). With `reverse=True` each valid prefix is read backwards and outputs stay at
    their positions. Under `jit` lengths outside [0, T] act as if clamped; outside, they raise.

    Segment resets (packed documents, continuous batching): `resets[..., t]` True marks the
    first step of a segment (recurrentgemma's `segment_pos == 0`). No memory crosses a segment
    boundary and every segment starts from `initial_state`, so the result equals running each
    segment alone: forwards the memory is the initial state again before each marked step;
    with `reverse=True`, before the last step of each segment (step t with resets[..., t + 1]).
    The final state is the one after the last segment run (for `reverse`, the segment holding
    step 0). The recurrent form resets (C, n, m) in its step; the parallel and chunkwise forms
    mask log D to each segment and read the initial state, decayed from the segment's start,
    wherever a segment starts within the chunk, with the same stabiliser m_t as the step.
    resets[..., 0] and resets at padded steps change nothing.

    Dtypes: the computation dtype is the promoted dtype of `xs` and `params`; the projections
    run in it and `hs` has it. The memory (C, n, m), the gates and the readout are computed in
    at least float32, and the state is returned in it (mlstm_kernels' `dtype_state`), since the
    stabiliser and the exponentials need the range.

    Args:
        params: `MLSTMParams` (see `init_mlstm`).
        xs: inputs, (batch..., T, I), or (T, batch..., I) if `time_major`.
        mode: "chunkwise", "parallel" or "recurrent"; None (the default): the form that is
            fastest on the backend JAX runs on (`jaxlstm.family.form`; "chunkwise" on every
            backend measured so far, see `FAMILY`).
        chunk_size: steps per chunk in "chunkwise" mode; T need not be a multiple of it.
            None (the default): chosen from T and the backend so that no length pays for
            padding it does not need (`jaxlstm.xlstm.mlstm_chunkwise.default_chunk_size`).
        initial_state: `MLSTMState`; the empty memory (zeros, m = 0) if None.
        seq_lengths: integer array of the batch shape: valid steps per sequence.
        reverse: run from the last step to the first.
        time_major: whether time is the leading axis of `xs` (and of `hs`).
        resets: bool (batch..., T), time last whatever `time_major`: True at the first step
            of each segment; None (the default) for one segment per sequence.

    Returns:
        `(hs, final_state)`: hs (batch..., T, heads * d_v) (time first if `time_major`), and
        an `MLSTMState` with C (batch..., heads, d_k, d_v), n (batch..., heads, d_k) and
        m (batch..., heads).

    Example:
        >>> params = init_mlstm(jax.random.key(0), input_size=3, hidden_size=8, num_heads=2)
        >>> hs, state = mlstm(params, jnp.ones((5, 100, 3)))          # chunkwise
        >>> hs2, _ = mlstm(params, jnp.ones((5, 1, 3)), mode="recurrent", initial_state=state)
    """
    input_size, heads, d_k, d_v = _check_params(params)
    mode, chunk_size = _check_mode(mode, chunk_size)
    xs = check_floating(xs, "xs")
    if xs.ndim < 2:
        layout = "(T, batch..., I)" if time_major else "(batch..., T, I)"
        raise ValueError(f"xs must have rank >= 2, {layout} with I={input_size}, got shape "
                         f"{shape_str(xs.shape)}.")
    if xs.shape[-1] != input_size:
        raise ValueError(f"xs must have {input_size} features on its last axis (params.w_q is "
                         f"({input_size}, ...)), got shape {shape_str(xs.shape)}.")
    dtype = jnp.result_type(xs.dtype, *jax.tree.leaves(params))
    xs = (jnp.moveaxis(xs, 0, -2) if time_major else xs).astype(dtype)
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    lead = xs.shape[:-1]

    def project(w, per_head):
        return (xs @ w).reshape(lead + (heads, per_head))

    def gate(w, b):
        return xs @ w + jnp.reshape(b, (1,) * (xs.ndim - 1) + b.shape)

    hs, final = _run(project(params.w_q, d_k), project(params.w_k, d_k),
                     project(params.w_v, d_v), gate(params.w_i, params.b_i),
                     gate(params.w_f, params.b_f), dtype, mode, chunk_size, initial_state,
                     seq_lengths, reverse, resets)
    hs = hs.reshape(lead + (heads * d_v,))
    return (jnp.moveaxis(hs, -2, 0) if time_major else hs), final


def _family_step(params: MLSTMParams, x_t: Array, state: MLSTMState) -> tuple[Array, MLSTMState]:
    """`mlstm_cell` in the protocol's order: x_t (..., I) -> (h_t (..., heads * d_v), state)."""
    state, h = mlstm_cell(params, state, x_t)
    return h, state


def _family_initial_state(params: MLSTMParams, batch_shape: tuple[int, ...],
                          dtype: Any = jnp.float32) -> MLSTMState:
    """The empty memory, in `dtype` promoted with the params' and at least float32 (the state
    dtype `mlstm` keeps)."""
    _, heads, d_k, d_v = _check_params(params)
    dtype = jnp.result_type(dtype, *jax.tree.leaves(params))
    return zero_mlstm_state(batch_shape, heads, d_k, d_v, jnp.promote_types(dtype, jnp.float32))


def _family_sizes(params: Any, name: str) -> tuple[int, int]:
    """(I, heads * d_v) of checked mLSTM params."""
    input_size, heads, _, d_v = _check_params(params, name)
    return input_size, heads * d_v


_VECTORS = 6  # q, k, v, h and the gates (per head, negligible beside them)


def _activation_floats(width: int, steps: int, mode: str | None = None, *, num_heads: int = 4,
                       chunk_size: int | None = None, **_: Any) -> float:
    """Floats the backward keeps per step and row, roughly: q, k, v, h and the gates, and the
    form's matrices (parallel: each head's row of the T x T decay matrix; chunkwise: a chunk's
    row and the chunk's state; recurrent: n and m at every step, its backward rebuilding the
    memory C instead of keeping it, `mlstm_recurrent`). The chunk, when not
    given, is the one `mlstm` picks for `steps` on this backend."""
    if chunk_size is None:
        chunk_size = min(default_chunk_size(steps, jax.default_backend()), steps)
    head_width = width // max(num_heads, 1)
    matrices = {"parallel": 3 * num_heads * steps, "recurrent": num_heads * (head_width + 1),
                "chunkwise": 3 * num_heads * chunk_size + width * head_width / chunk_size,
                }[mode or "chunkwise"]
    return _VECTORS * width + matrices


FAMILY = Family(
    name="mlstm", label="mLSTM", params_type=MLSTMParams, init=init_mlstm, sizes=_family_sizes,
    apply=checked_apply("mlstm", mlstm), step=_family_step, initial_state=_family_initial_state,
    init_options=frozenset({"num_heads", "qk_size", "dtype"}),
    apply_options=frozenset({"chunk_size"}), modes=MODES, activation_floats=_activation_floats,
)
"""The mLSTM behind the family protocol (`jaxlstm.family`).

No `backend_modes`: "chunkwise" (`modes[0]`) is the default everywhere. On the 2-core CPU
(2026-12-08, `jaxlstm bench --sizes S2 --steps 4096 --only mlstm,mlstm_chunkwise,
mlstm_recurrent`, B=32, I=32, H=128, 4 heads, median ms forward / forward+backward) it ran
462-506 / 1768-2170 against the recurrent form's 734 / 2231 (the parallel form is quadratic in
T); at S2 and S3 sizes (T=100, 200) its forward+backward was 0.62x and 0.95x the recurrent
form's. Accelerators are unmeasured here (no device was lent); chunkwise is their natural form
too, its work being matmuls."""
