"""One step of any cell variant: the affine map, then the variant's elementwise step."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlstm import gates
from jaxlstm.cell import LSTMState
from jaxlstm.params import LSTMParams
from jaxlstm.recurrence import LoopOptions, StepInputs, masked_lstm_step, step_weights
from jaxlstm.validation import check_features, check_floating, check_params, check_state

Array = jax.Array


def lstm_cell(params: LSTMParams, state: LSTMState, x_t: Array) -> tuple[LSTMState, Array]:
    """One LSTM step: z = x_t @ W_x + h_{t-1} @ W_h + b, then the gate and state updates.

    The variant (`params.cell`) and the projection (`params.w_p`) apply as in `jaxlstm.lstm`,
    through the same step function. Any number of leading batch dimensions (including none)
    is supported.

    Args:
        params: `LSTMParams` with w_x (I, G*H), w_h (R, G*H), b (G*H,).
        state: `LSTMState` with h (..., R) and c (..., H), the batch shape of `x_t`; R is the
            proj_size with a projection, else H.
        x_t: the step's input, shape (..., I).

    Returns:
        `(new_state, h_t)`: the new `LSTMState` and the output h_t, shape (..., R).

    Example:
        >>> params = jaxlstm.init_lstm(jax.random.key(0), input_size=3, hidden_size=8)
        >>> state = jaxlstm.LSTMState(h=jnp.zeros((2, 8)), c=jnp.zeros((2, 8)))
        >>> state, h = jaxlstm.lstm_cell(params, state, jnp.ones((2, 3)))
    """
    sizes = check_params(params)
    x_t = check_floating(x_t, "x_t")
    if x_t.ndim < 1:
        raise ValueError(f"x_t must have shape (..., {sizes.input_size}), got a scalar.")
    check_features(x_t, sizes.input_size, "x_t")
    check_state(state, x_t.shape[:-1], sizes.hidden_size, "state", sizes.output_size)
    options = LoopOptions(reverse=False, chunk=1, return_gates=False, cell=sizes.variant)
    additive = sizes.variant.additive
    z_x = gates.input_projection(x_t, params.w_x, params.b) if additive else x_t @ params.w_x
    z_h = gates.recurrent_projection(state.h, params.w_h)
    z = z_x + z_h if additive else (z_x, z_h)
    step = masked_lstm_step(None, options)
    weights = step_weights(params, options)
    new_state, h_t = step(weights, z, state, StepInputs(t=jnp.zeros((), jnp.int32)))
    return new_state, h_t
