"""The LSTM (and its variants, `init_lstm(cell=...)`) as a `jaxlstm.family.Family`.

Thin: `apply` is `jaxlstm.lstm` (its fused time loop and custom backward), `step` is
`lstm_cell` with the protocol's argument order, and the state is `LSTMState(h, c)` with h of the
output width (the projection's, if any) and c of the hidden width.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxlstm.cell import LSTMState
from jaxlstm.family import Family, checked_apply
from jaxlstm.params import LSTMParams, init_lstm
from jaxlstm.scan import lstm
from jaxlstm.step import lstm_cell
from jaxlstm.validation import check_params
from jaxlstm.variants import VARIANTS


def _step(params: LSTMParams, x_t: Any, state: LSTMState) -> tuple[Any, LSTMState]:
    """One step: (h_t (..., R), the new LSTMState)."""
    state, h = lstm_cell(params, state, x_t)
    return h, state


def _initial_state(params: LSTMParams, batch_shape: tuple[int, ...],
                   dtype: Any = jnp.float32) -> LSTMState:
    """Zeros: h (batch..., R), c (batch..., H), in `dtype` promoted with the params'."""
    batch_shape = tuple(batch_shape)
    dtype = jnp.result_type(dtype, *jax.tree.leaves(params))
    return LSTMState(h=jnp.zeros(batch_shape + (params.output_size,), dtype),
                     c=jnp.zeros(batch_shape + (params.hidden_size,), dtype))


def _sizes(params: Any, name: str) -> tuple[int, int]:
    """(I, R) of checked LSTM params (R: the projection's width, else H)."""
    sizes = check_params(params, name)
    return sizes.input_size, sizes.output_size


def _activation_floats(width: int, steps: int, mode: Any = None, *,
                       proj_size: int | None = None, **_: Any) -> float:
    """Floats the backward keeps per step and row, roughly: the input projection and gates
    (4 + 4 vectors of H), c, tanh(c) and h, and the projection's output."""
    return 12.0 * width + (proj_size or 0)


FAMILY = Family(
    name="lstm",
    label="LSTM",
    params_type=LSTMParams,
    init=init_lstm,
    apply=checked_apply("lstm", lstm),
    apply_with_gates=checked_apply("lstm", lstm, with_gates=True),
    sizes=_sizes,
    cells=tuple(VARIANTS),
    step=_step,
    initial_state=_initial_state,
    activation_floats=_activation_floats,
    init_options=frozenset({"cell", "proj_size", "dtype", "forget_bias", "input_init",
                            "recurrent_init", "bias_init"}),
    apply_options=frozenset({"unroll", "fused_backward", "remat_chunk", "recurrent_dropout",
                             "zoneout_h", "zoneout_c", "key", "deterministic"}),
)
