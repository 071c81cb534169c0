"""The GRU as a cell of the LSTM's time loop (`jaxlstm.recurrence`), and one step.

To the loop a GRU layer is an LSTM layer whose pre-activations are not additive: it hands the
step the two projections z_x = x_t @ W_x and z_h = h_{t-1} @ W_h apart (the reset gate
multiplies the recurrent term of n alone), with the step weights (b_hn, b). The loop hoists the
input projections of a chunk of steps into one matmul, and its fused backward carries only
dh through the reverse loop, differentiates `gru_pointwise` per step with `jax.vjp`, and
computes dW_x = X^T dZ_x, dW_h = H_prev^T dZ_h after it as large matmuls; the biases' gradients
(vectors) accumulate in the reverse loop's carry.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm.gru_family.gates import NUM_GATES, gru_pointwise
from jaxlstm.gru_family.validation import (
    check_gru_params,
    check_hidden,
    check_step_input,
)
from jaxlstm.variants import CellVariant

Array = jax.Array


class GRUCarry(NamedTuple):
    """The GRU's state as the time loop carries it: h alone, (N, H). (The public functions
    take and return the bare array.)"""

    h: Array


def _loop_pointwise(weights_and_bias: tuple[Array, Array], z: tuple[Array, Array],
                    state: GRUCarry) -> tuple[GRUCarry, None]:
    b_hn, b = weights_and_bias
    z_x, z_h = z
    return GRUCarry(gru_pointwise(z_x, z_h, state.h, b, b_hn)), None


GRU_CELL = CellVariant(
    # Not an `LSTMParams.cell` variant: no weights type, and the forget_index (where
    # `init_lstm` puts forget_bias) goes unused. Not additive: the step gets (z_x, z_h).
    "gru", None, NUM_GATES, forget_index=1, additive=False, pointwise=_loop_pointwise,
    init_weights=lambda key, h: None,
    weight_shapes=lambda h: {},
)
"""The GRU as a cell of the LSTM's time loop: pre-activations (z_x, z_h) apart, step weights
`(b_hn, b)` (the loop's `LSTMParams.cell` holds b_hn), state `GRUCarry`."""


def gru_cell(params: Any, h: Array, x_t: Array) -> Array:
    """One GRU step: the projections x_t @ W_x and h_{t-1} @ W_h, then `gru_pointwise`.

        r = sigmoid(x W_ir + b_ir + h W_hr + b_hr),  z = sigmoid(x W_iz + b_iz + h W_hz + b_hz)
        n = tanh(x W_in + b_in + r * (h W_hn + b_hn)),  h' = (1 - z) * n + z * h

    Any number of leading batch dimensions (including none). The computation dtype is the
    promoted dtype of `x_t`, `h` and the params, as in `jaxlstm.gru`.

    Args:
        params: `GRUParams` with w_x (I, 3H), w_h (H, 3H), b (3H,), b_hn (H,).
        h: the previous hidden state h_{t-1}, shape (..., H), the batch shape of `x_t`.
        x_t: the step's input, shape (..., I).

    Returns:
        h_t, shape (..., H): the new state, which is also the step's output.

    Example:
        >>> params = jaxlstm.init_gru(jax.random.key(0), input_size=3, hidden_size=8)
        >>> h = jaxlstm.gru_cell(params, jnp.zeros((2, 8)), jnp.ones((2, 3)))
        >>> h.shape
        (2, 8)
    """
    input_size, hidden_size = check_gru_params(params)
    x_t = check_step_input(x_t, input_size)
    h = check_hidden(h, x_t.shape[:-1], hidden_size, "h")
    dtype = jnp.result_type(x_t.dtype, h.dtype, params.w_x, params.w_h, params.b, params.b_hn)
    w_x, w_h, b, b_hn = (a.astype(dtype) for a in (params.w_x, params.w_h, params.b, params.b_hn))
    x_t, h = x_t.astype(dtype), h.astype(dtype)
    return gru_pointwise(x_t @ w_x, h @ w_h, h, b, b_hn)
