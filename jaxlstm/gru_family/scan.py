"""A whole GRU sequence: the GRU step composed over time by the LSTM's time loop."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxlstm.gru_family.cell import GRU_CELL, GRUCarry
from jaxlstm.gru_family.params import GRUParams
from jaxlstm.gru_family.validation import check_gru_params, check_hidden
from jaxlstm.params import LSTMParams
from jaxlstm.recurrence import (
    LoopMasks,
    LoopOptions,
    loop_resets,
    lstm_loop,
    lstm_loop_autodiff,
)
from jaxlstm.regularisation import draw_recurrent_masks
from jaxlstm.scan import from_loop_layout, loop_sizes
from jaxlstm.validation import (
    check_features,
    check_floating,
    check_positive_int,
    check_rate,
    check_resets,
    check_seq_lengths,
)

Array = jax.Array


def gru(
    params: GRUParams,
    xs: Array,
    *,
    initial_state: Array | None = None,
    seq_lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int | bool | None = None,
    fused_backward: bool = True,
    resets: Array | None = None,
    remat_chunk: int | None = None,
    recurrent_dropout: float = 0.0,
    zoneout_h: float = 0.0,
    key: Array | None = None,
    deterministic: bool = True,
) -> tuple[Array, Array]:
    """Runs a GRU layer over a sequence, with the conventions of `jaxlstm.lstm`.

    Equivalent to this Python loop over `gru_cell` (batch-major, no `seq_lengths`)::

        h = initial_state
        for t in (reversed(range(T)) if reverse else range(T)):
            h = gru_cell(params, h, xs[..., t, :])
            hs[..., t, :] = h
        return hs, h

    It runs on the LSTM's time loop (`jaxlstm.recurrence`): the input projections
    x_t @ W_x of a chunk of steps are one matmul outside the per-step work, and the fused
    backward's reverse loop carries only dh, differentiating the elementwise step alone, with
    the weight gradients dW_x = X^T dZ_x and dW_h = H_prev^T dZ_h as large matmuls after it.
    Safe under `jit`, `vmap`, `grad` and `jax.checkpoint`.

    Variable length follows PyTorch's packed sequences: sequence b has `seq_lengths[b]` valid
    steps, outputs at padded steps are exactly zero, the final state is the state after the
    last valid step (the initial state for a length of 0), and `reverse=True` reads each valid
    prefix backwards, writing outputs at their original positions. Out-of-range lengths raise
    outside `jit`; under `jit` they act as if clamped to [0, T].

    The computation dtype is the promoted dtype of `xs` and `params`; the initial state is cast
    to it and every output has it.

    Args:
        params: `GRUParams` with w_x (I, 3H), w_h (H, 3H), b (3H,), b_hn (H,).
        xs: inputs, (batch..., T, I), or (T, batch..., I) if `time_major`; any number of batch
            dimensions, including none.
        initial_state: h_0, (batch..., H); zeros if None.
        seq_lengths: integer array of the batch shape: valid steps per sequence.
        reverse: run from the last step to the first.
        time_major: whether time is the leading axis of `xs` (and of the outputs).
        unroll: steps per scan iteration, their input projections computed as one matmul;
            None chooses by problem size, True unrolls the whole sequence (as `jaxlstm.lstm`).
        fused_backward: differentiate with the hand-scheduled backward (a custom VJP); False
            lets JAX differentiate the scan, e.g. for forward-mode `jax.jvp`. The forward is
            the same either way.
        resets: bool (batch..., T), True at the first step of each segment: each segment
            runs as if alone, from `initial_state` (as in `jaxlstm.lstm`).
        remat_chunk: if set, the backward stores only the state at the start of each segment
            of `remat_chunk` steps and recomputes the rest (as in `jaxlstm.lstm`).
        recurrent_dropout: rate of variational dropout on h_{t-1} before W_h (one mask per
            sequence, Gal & Ghahramani 2016), in [0, 1); the update z * h_{t-1} reads the
            undropped h, as PyTorch-style variational GRUs do.
        zoneout_h: zoneout rate on h, in [0, 1): each unit keeps its previous value with this
            probability (Krueger et al. 2017); at evaluation its expectation.
        key: PRNG key for the masks; required when `deterministic=False` and a rate is set.
        deterministic: True (the default) runs without recurrent dropout and with zoneout's
            expectation, as at evaluation.

    Returns:
        `(hs, h_last)`: hs (batch..., T, H) (or (T, batch..., H) if `time_major`), h_last
        (batch..., H).

    Example:
        >>> params = jaxlstm.init_gru(jax.random.key(0), input_size=3, hidden_size=8)
        >>> hs, h = jaxlstm.gru(params, jnp.ones((4, 10, 3)))
        >>> hs.shape, h.shape
        ((4, 10, 8), (4, 8))
    """
    input_size, hidden_size = check_gru_params(params)
    xs = check_floating(xs, "xs")
    if xs.ndim < 2:
        layout = "(T, batch..., I)" if time_major else "(batch..., T, I)"
        raise ValueError(
            f"xs must have rank >= 2, {layout} with I={input_size}, got shape {xs.shape}."
        )
    check_features(xs, input_size, "xs")
    remat_chunk = check_positive_int(remat_chunk, "remat_chunk", allow_none=True)
    rates = (check_rate(recurrent_dropout, "recurrent_dropout"), check_rate(zoneout_h, "zoneout_h"))
    training = not deterministic and any(rates)
    if training and key is None:
        raise ValueError("key is required when deterministic=False and recurrent_dropout or "
                         "zoneout_h is set.")

    xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
    num_steps, batch_shape = xs_tm.shape[0], xs_tm.shape[1:-1]
    dtype = jnp.result_type(xs.dtype, params.w_x, params.w_h, params.b, params.b_hn)
    w_x, w_h, b, b_hn = (jnp.asarray(a).astype(dtype)
                         for a in (params.w_x, params.w_h, params.b, params.b_hn))
    xs_tm = xs_tm.astype(dtype)
    if initial_state is None:
        # Built from the input, so it carries the input's batch sharding (see
        # `jaxlstm.cell.zero_state_like`).
        template = xs_tm[0, ..., :1] if num_steps else jnp.zeros(batch_shape + (1,), dtype)
        h0 = jnp.broadcast_to(jnp.zeros_like(template), batch_shape + (hidden_size,))
    else:
        h0 = check_hidden(initial_state, batch_shape, hidden_size, "initial_state").astype(dtype)
    if seq_lengths is not None:
        seq_lengths = check_seq_lengths(seq_lengths, batch_shape, num_steps)
    if resets is not None:
        resets = check_resets(resets, batch_shape, num_steps)

    # The loop works on one flat batch axis: (T, N, I) and (N, H).
    batch_size = math.prod(batch_shape)
    chunk, backward_chunk, segment = loop_sizes(unroll, num_steps, batch_size, hidden_size)
    options = LoopOptions(reverse=bool(reverse), chunk=chunk, return_gates=False,
                          remat_chunk=remat_chunk, backward_chunk=backward_chunk,
                          grad_segment=segment, cell=GRU_CELL,
                          zoneout=(0.0, 0.0) if training else (rates[1], 0.0))
    flat_lengths = None if seq_lengths is None else seq_lengths.reshape(batch_size)
    rec_mask = keep_h = None
    if training:
        # The LSTM's masks with H = R and no cell state (a GRU's state is h alone).
        masks = draw_recurrent_masks(key, num_steps, batch_shape, hidden_size, hidden_size,
                                     *rates, 0.0, dtype=dtype)
        rec_mask, keep_h = (None if m is None else m.reshape(m.shape[:-1 - len(batch_shape)]
                                                             + (batch_size, m.shape[-1]))
                            for m in masks[:2])
    # To the loop, a GRU layer is an LSTM layer with non-additive pre-activations whose step
    # weights are (b_hn, b).
    as_lstm = LSTMParams(w_x=w_x, w_h=w_h, b=b, cell=b_hn)
    loop = lstm_loop if fused_backward else lstm_loop_autodiff
    flat_resets = loop_resets(resets, reverse, flat_lengths)
    final, hs = loop(as_lstm, xs_tm.reshape((num_steps, batch_size, input_size)),
                     GRUCarry(h0.reshape((batch_size, hidden_size))),
                     LoopMasks(lengths=flat_lengths, rec_mask=rec_mask, keep_h=keep_h,
                               resets=flat_resets), options)
    final, hs = from_loop_layout(final, hs, batch_shape, time_major)
    return hs, final.h

