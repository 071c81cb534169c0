"""minLSTM (Feng et al. 2024): params, init, one step and the sequence.

        f~, i~, h~ = split(x_t @ W_x + b)                    blocks f, i, h~
        f'_t, i'_t = normalised sigmoid(f~), sigmoid(i~)      f' + i' = 1
        h_t        = f'_t * h_{t-1} + i'_t * g(h~)            g(x) = x + 0.5 | sigmoid(x)

The gates read x_t only, so the sequence is the linear recurrence of
`jaxlstm.minrnn.log_scan` with a_t = f'_t, b_t = i'_t g(h~) (`jaxlstm.minrnn.min_gates`).
There is no cell state and no output gate: the state is h itself.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm.minrnn import min_gates
from jaxlstm.minrnn.layer import (
    MinCell,
    init_min_params,
    min_family,
    min_layer,
    min_step,
)

Array = jax.Array


class MinLSTMParams(NamedTuple):
    """Weights of one minLSTM layer.

    Attributes:
        w_x: input kernel, (input_size, 3 * hidden_size); gate blocks along the last axis in
            order f, i, h~.
        b: bias, (3 * hidden_size,), same blocks.
    """

    w_x: Array
    b: Array

    @property
    def input_size(self) -> int:
        return self.w_x.shape[-2]

    @property
    def hidden_size(self) -> int:
        return self.w_x.shape[-1] // min_gates.MIN_LSTM_GATES


MIN_LSTM_CELL = MinCell("min_lstm", MinLSTMParams, "f, i, h~",
                        min_gates.min_lstm_coefficients, min_gates.min_lstm_log_coefficients)


def init_min_lstm(key: Array, input_size: int, hidden_size: int, *,
                  dtype: jnp.dtype = jnp.float32) -> MinLSTMParams:
    """Initialises one minLSTM layer as PyTorch's `nn.Linear(input_size, 3 * hidden_size)`.

    w_x and b are uniform in [-1/sqrt(I), 1/sqrt(I)] (the reference's `to_hidden_and_gate`,
    without its optional forget-bias offset), drawn in float32 and cast to `dtype`.

    Args:
        key: a PRNG key.
        input_size: I, the number of input features.
        hidden_size: H, the number of hidden units.
        dtype: dtype of the returned parameters.

    Returns:
        `MinLSTMParams` with w_x (I, 3H) and b (3H,).

    Example:
        >>> params = jaxlstm.init_min_lstm(jax.random.key(0), input_size=3, hidden_size=8)
        >>> params.w_x.shape
        (3, 24)
    """
    return init_min_params(key, input_size, hidden_size, MIN_LSTM_CELL, dtype)


def min_lstm_cell(params: MinLSTMParams, h: Array, x_t: Array) -> Array:
    """One minLSTM step, h_t = f'_t * h_{t-1} + i'_t * g(h~), for generation.

    The same coefficient functions as `min_lstm(..., mode="sequential")`; any number of
    leading batch dimensions (including none). Computes in at least float32 and returns the
    promoted dtype of `x_t` and `params`.

    Args:
        params: `MinLSTMParams`.
        h: the previous state h_{t-1}, (..., H) with the batch shape of `x_t`.
        x_t: the step's input, (..., I).

    Returns:
        h_t, (..., H).

    Example:
        >>> params = jaxlstm.init_min_lstm(jax.random.key(0), input_size=3, hidden_size=8)
        >>> h = jaxlstm.min_lstm_cell(params, jnp.zeros((2, 8)), jnp.ones((2, 3)))
    """
    return min_step(params, h, x_t, MIN_LSTM_CELL)


def min_lstm(
    params: MinLSTMParams,
    xs: Array,
    *,
    initial_state: Array | None = None,
    seq_lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    mode: str | None = None,
    resets: Array | None = None,
) -> tuple[Array, Array]:
    """Runs a minLSTM layer over a sequence.

    Equivalent to this Python loop over `min_lstm_cell` (batch-major, no `seq_lengths`)::

        h = initial_state
        for t in (reversed(range(T)) if reverse else range(T)):
            h = min_lstm_cell(params, h, xs[..., t, :])
            hs[..., t, :] = h
        return hs, h

    The pre-activations of all steps are one matmul; the recurrence h_t = a_t h_{t-1} + b_t
    then runs in one of two modes (`jaxlstm.minrnn.log_scan`):

    * "parallel": `jax.lax.associative_scan` on (log a_t, log b_t), O(log T) deep,
      h_t = exp(sum log a) * h_0 + exp(scan from zero); h_0 may be any real value.
    * "sequential": `jax.lax.scan` over (a_t, b_t), one step after another, the same
      arithmetic as `min_lstm_cell`.

    Both agree to float32 rounding and are safe under `jit`, `vmap` and `grad` (autodiff).
    Without `mode`, the call runs the form that is fastest on the backend JAX runs on, by the
    rule every family, stack, Flax module and the runner share (`jaxlstm.family.form`):
    "sequential" on a CPU, where it is 2-25x faster (measured in `jaxlstm.minrnn.log_scan`),
    "parallel" on accelerators, where its O(log T) depth pays.

    Variable length follows PyTorch's packed sequences, as `jaxlstm.lstm`: outputs at padded
    steps (t >= seq_lengths[b]) are exactly zero, the final state is h after the last valid
    step (the initial state for length 0), and `reverse=True` reads each valid prefix from
    its last valid step down to step 0. Padded steps get a_t = 1, b_t = 0 (log b_t a large
    negative finite number, so gradients stay finite).

    Segment resets (`resets`, the protocol's convention in `jaxlstm.family`): each segment
    runs as if alone, from `initial_state`. Both modes stay one scan: a reset step's
    coefficients become (0, b_t + a_t h_0), or, in log space, its scan element carries a flag
    (`jaxlstm.minrnn.log_scan`).

    Dtype: the promoted dtype of `xs` and `params` (as `jaxlstm.lstm`); gates and the
    recurrence run in at least float32 (bfloat16 inputs are scanned in float32), and the
    outputs are cast back.

    Args:
        params: `MinLSTMParams` with w_x (I, 3H), b (3H,).
        xs: inputs, (batch..., T, I), or (T, batch..., I) if `time_major`; any number of batch
            dimensions, including none.
        initial_state: h_0, (batch..., H); zeros if None.
        seq_lengths: integer array of the batch shape: valid steps per sequence.
        reverse: run from the last step to the first.
        time_major: whether time is the leading axis of `xs` (and of the outputs).
        mode: "parallel" or "sequential"; None (the default): the backend's fastest.
        resets: bool (batch..., T), time last whatever `time_major`: True at the first step
            of each segment; None (the default) for one segment per sequence.

    Returns:
        `(hs, final_h)`: hs (batch..., T, H), or (T, batch..., H) if `time_major`; final_h
        (batch..., H).

    Example:
        >>> params = jaxlstm.init_min_lstm(jax.random.key(0), input_size=3, hidden_size=8)
        >>> hs, h = jaxlstm.min_lstm(params, jnp.ones((4, 10, 3)))
        >>> hs.shape, h.shape
        ((4, 10, 8), (4, 8))
    """
    return min_layer(params, xs, MIN_LSTM_CELL, initial_state=initial_state,
                     seq_lengths=seq_lengths, reverse=reverse, time_major=time_major, mode=mode,
                     resets=resets)


FAMILY = min_family("min_lstm", "minLSTM", MinLSTMParams, init_min_lstm, min_lstm, min_lstm_cell,
                    MIN_LSTM_CELL)
"""The minLSTM behind the family protocol (`jaxlstm.family`)."""
