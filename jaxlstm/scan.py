"""A whole sequence: the LSTM step composed over time with `jax.lax.scan`."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxlstm.cell import LSTMState, zero_state_like
from jaxlstm.params import LSTMParams
from jaxlstm.recurrence import (
    LoopMasks,
    LoopOptions,
    auto_chunks,
    loop_resets,
    lstm_loop,
    lstm_loop_autodiff,
)
from jaxlstm.regularisation import draw_recurrent_masks
from jaxlstm.validation import (
    check_features,
    check_floating,
    check_params,
    check_positive_int,
    check_rate,
    check_resets,
    check_seq_lengths,
    check_state,
)

Array = jax.Array


def loop_sizes(unroll: Any, num_steps: int, batch_size: int,
                hidden_size: int) -> tuple[int, int, int]:
    """(forward chunk, backward chunk, gradient segment): steps per scan iteration, from
    `unroll` (None: by problem size; see `jaxlstm.lstm`). Also used by the other families
    that run on this loop."""
    chunk, backward_chunk, segment = auto_chunks(num_steps, batch_size, hidden_size)
    if unroll is None:
        return chunk, backward_chunk, segment
    if unroll is True:
        return max(1, num_steps), max(1, num_steps), segment
    if unroll is False:
        return 1, 1, segment
    if not isinstance(unroll, int) or unroll < 1:
        raise ValueError(f"unroll must be None, a positive int or a bool, got {unroll!r}.")
    return unroll, unroll, segment


def from_loop_layout(final_state: Any, out: Any, batch_shape: tuple[int, ...],
                     time_major: bool) -> tuple[Any, Any]:
    """The time loop's flat results in the caller's layout: each state field (N, F) becomes
    (batch..., F), and each output (T, N, F) becomes (batch..., T, F), or (T, batch..., F)
    if `time_major`."""

    def unflatten(a: Array) -> Array:
        return a.reshape(a.shape[:-2] + batch_shape + a.shape[-1:])

    def to_layout(a: Array) -> Array:
        return a if time_major else jnp.moveaxis(a, 0, -2)

    final_state = type(final_state)(*(unflatten(s) for s in final_state))
    return final_state, jax.tree.map(lambda a: to_layout(unflatten(a)), out)


def _computation_dtype(xs: Array, params: LSTMParams) -> jnp.dtype:
    return jnp.result_type(xs.dtype, *jax.tree.leaves(params))


def lstm(
    params: LSTMParams,
    xs: Array,
    *,
    initial_state: LSTMState | None = None,
    seq_lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int | bool | None = None,
    return_gates: bool = False,
    fused_backward: bool = True,
    remat_chunk: int | None = None,
    recurrent_dropout: float = 0.0,
    zoneout_h: float = 0.0,
    zoneout_c: float = 0.0,
    key: Array | None = None,
    deterministic: bool = True,
    resets: Array | None = None,
) -> tuple[Array, LSTMState] | tuple[Array, LSTMState, Any]:
    """Runs an LSTM layer over a sequence.

    Equivalent to this Python loop over `lstm_cell` (batch-major, no `seq_lengths`)::

        state = initial_state
        hs = []
        for t in (reversed(range(T)) if reverse else range(T)):
            state, h_t = lstm_cell(params, state, xs[..., t, :])
            hs.append(h_t)           # written back at position t
        return stack(hs in time order, axis=-2), state

    The cell variant is the one `params.cell` holds (see `jaxlstm.variants`), and
    `params.w_p` projects h_t (LSTMP). It is a `jax.lax.scan` over the same gate functions,
    with the affine map
    z = x_t @ W_x + h_{t-1} @ W_h + b kept apart from the elementwise update, and is safe under
    `jit`, `vmap` (over inputs or params), `grad` and `jax.checkpoint`.

    Variable length follows PyTorch's packed sequences: the batch is right-padded, and sequence
    b has `seq_lengths[b]` valid steps. Outputs (and gates) at padded steps are exactly zero;
    `final_state` is the state after the last valid step (the initial state if the length is 0).
    With `reverse=True` each sequence's valid prefix is read backwards, from its last valid step
    to step 0, and outputs stay at their original positions. Under `jit` the lengths cannot be
    checked, and values outside [0, T] act as if clamped to [0, T]; outside `jit` they raise.

    Packed segments (`resets`, True at the first step of each segment in time order): no state
    crosses a segment boundary in either direction, and every segment starts from
    `initial_state`, so the result equals running each segment alone (the final state is the
    last segment's, or with `reverse` the first's: the last read).

    Dtype policy: the computation dtype is the promoted dtype of `xs` and `params` (float32
    params with bfloat16 inputs compute in float32; all-bfloat16 computes in bfloat16). Inputs,
    params and the initial state are cast to it, and every output has it.

    Regularisation, only with `deterministic=False` and a `key` (see
    `jaxlstm.regularisation`): `recurrent_dropout` drops units of h_{t-1} before W_h with one
    mask per sequence (Gal & Ghahramani 2016); `zoneout_h` and `zoneout_c` make each unit of h
    and c keep its previous value with that probability at each step (Krueger et al. 2017).
    The masks are `jaxlstm.draw_recurrent_masks(key, ...)`. With `deterministic=True` (the
    default) recurrent dropout is off and zoneout uses its expectation,
    h_t = p h_{t-1} + (1 - p) h~_t.

    Args:
        params: `LSTMParams` with w_x (I, G*H), w_h (R, G*H), b (G*H,), the variant's weights
            in `cell` and the projection `w_p` (H, R) or None; R = proj_size or H.
        xs: inputs, (batch..., T, I), or (T, batch..., I) if `time_major`; any number of batch
            dimensions, including none.
        initial_state: `LSTMState` with h (batch..., R) and c (batch..., H); zeros if None.
        seq_lengths: integer array of the batch shape: valid steps per sequence.
        reverse: run from the last step to the first.
        time_major: whether time is the leading axis of `xs` (and of the outputs).
        unroll: steps per scan iteration; their input projections x_t @ W_x are computed
            together as one matmul. None (default) chooses by problem size (more steps per
            iteration when a step is small), `True` unrolls the whole sequence.
        return_gates: also return the per-step gates: `LSTMGates`, or the variant's record
            (`RetainedReadoutGates`); their c is the cell state after the step.
        fused_backward: differentiate with the hand-scheduled backward pass (a custom VJP whose
            reverse loop carries only the recurrent gradients, and which computes the weight
            and input gradients as large matmuls over segments of steps), which is faster than
            autodiff through the scan. Set False to let JAX
            differentiate the scan itself, e.g. for forward-mode `jax.jvp` / `jax.jacfwd`,
            which custom VJPs do not support. The forward computation is the same either way.
        remat_chunk: if set, the backward pass stores only the state at the start of each
            segment of `remat_chunk` steps and recomputes the rest segment by segment: memory
            for the stored activations falls from O(T) to O(T / remat_chunk + remat_chunk) at
            the cost of a second forward pass. For very long sequences.
        recurrent_dropout: rate of variational dropout on h_{t-1}, in [0, 1).
        zoneout_h: zoneout rate on h, in [0, 1).
        zoneout_c: zoneout rate on c, in [0, 1).
        key: PRNG key for the masks; required when `deterministic` is False and a rate is set.
        deterministic: evaluation mode: no random masks (the default).
        resets: bool (batch..., T) (time last, whatever `time_major`), True at the first step
            of each segment; None: one segment.

    Returns:
        `(hs, final_state)`, or `(hs, final_state, gates)` if `return_gates`. `hs` has the
        layout of `xs` with R features: (batch..., T, H), or (T, batch..., H) if `time_major`;
        each field of `gates` has the same shape as `hs`.

    Example:
        >>> params = jaxlstm.init_lstm(jax.random.key(0), input_size=3, hidden_size=8)
        >>> xs = jnp.ones((4, 10, 3))                    # batch 4, 10 steps, 3 features
        >>> hs, final = jaxlstm.lstm(params, xs)
        >>> hs.shape, final.h.shape
        ((4, 10, 8), (4, 8))
    """
    input_size, hidden_size, output_size, variant = check_params(params)
    xs = check_floating(xs, "xs")
    if xs.ndim < 2:
        layout = "(T, batch..., I)" if time_major else "(batch..., T, I)"
        raise ValueError(
            f"xs must have rank >= 2, {layout} with I={input_size}, got shape {xs.shape}."
        )
    check_features(xs, input_size, "xs")
    remat_chunk = check_positive_int(remat_chunk, "remat_chunk", allow_none=True)
    rates = (check_rate(recurrent_dropout, "recurrent_dropout"),
             check_rate(zoneout_h, "zoneout_h"), check_rate(zoneout_c, "zoneout_c"))
    training = not deterministic and any(rates)
    if training and key is None:
        raise ValueError(
            "key is required when deterministic=False and recurrent_dropout, zoneout_h or "
            "zoneout_c is set."
        )

    xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
    num_steps, batch_shape = xs_tm.shape[0], xs_tm.shape[1:-1]
    dtype = _computation_dtype(xs, params)
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    xs_tm = xs_tm.astype(dtype)

    if initial_state is None:
        template = xs_tm[0] if num_steps else jnp.zeros(batch_shape + (1,), dtype)
        initial_state = zero_state_like(template, hidden_size, output_size)
    else:
        check_state(initial_state, batch_shape, hidden_size, "initial_state", output_size)
        initial_state = LSTMState(*(jnp.asarray(s).astype(dtype) for s in initial_state))
    if seq_lengths is not None:
        seq_lengths = check_seq_lengths(seq_lengths, batch_shape, num_steps)
    if resets is not None:
        resets = check_resets(resets, batch_shape, num_steps)

    # The loop works on one flat batch axis: (T, N, I) and (N, H).
    batch_size = math.prod(batch_shape)
    chunk, backward_chunk, segment = loop_sizes(unroll, num_steps, batch_size, hidden_size)
    flat_xs = xs_tm.reshape((num_steps, batch_size, input_size))
    flat_state = LSTMState(*(s.reshape((batch_size, s.shape[-1])) for s in initial_state))
    flat_lengths = None if seq_lengths is None else seq_lengths.reshape(batch_size)
    rec_mask, keep_h, keep_c = None, None, None
    if training:
        masks = draw_recurrent_masks(key, num_steps, batch_shape, hidden_size, output_size,
                                     *rates, dtype=dtype)
        rec_mask, keep_h, keep_c = (
            None if m is None else m.reshape(m.shape[:-1 - len(batch_shape)]
                                             + (batch_size, m.shape[-1]))
            for m in masks
        )
    options = LoopOptions(
        reverse=bool(reverse),
        chunk=chunk,
        return_gates=bool(return_gates),
        remat_chunk=remat_chunk,
        backward_chunk=backward_chunk,
        grad_segment=segment,
        cell=variant,
        zoneout=(0.0, 0.0) if training else rates[1:],
    )
    loop = lstm_loop if fused_backward else lstm_loop_autodiff
    flat_resets = loop_resets(resets, reverse, flat_lengths)
    masks = LoopMasks(lengths=flat_lengths, rec_mask=rec_mask, keep_h=keep_h, keep_c=keep_c,
                      resets=flat_resets)
    final_state, out = loop(params, flat_xs, flat_state, masks, options)

    final_state, out = from_loop_layout(final_state, out, batch_shape, time_major)
    if return_gates:
        hs, step_gates = out
        return hs, final_state, step_gates
    return out, final_state
