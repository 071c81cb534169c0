"""The GRU as a `jaxlstm.family.Family`: `apply` is `jaxlstm.gru`, `step` is `gru_cell` in the
protocol's order, and the state is h alone, an array (batch..., H), as the min cells'."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxlstm.family import Family, checked_apply
from jaxlstm.gru_family.cell import gru_cell
from jaxlstm.gru_family.params import GRUParams, init_gru
from jaxlstm.gru_family.scan import gru
from jaxlstm.gru_family.validation import check_gru_params

Array = jax.Array


def _step(params: GRUParams, x_t: Array, h: Array) -> tuple[Array, Array]:
    """x_t (..., I), h (..., H) -> (h_t, h_t): the output is the new state."""
    h = gru_cell(params, h, x_t)
    return h, h


def _initial_state(params: GRUParams, batch_shape: tuple[int, ...],
                   dtype: Any = jnp.float32) -> Array:
    """h = 0, (batch..., H), in `dtype` promoted with the params'."""
    dtype = jnp.result_type(dtype, *jax.tree.leaves(params))
    return jnp.zeros(tuple(batch_shape) + (params.hidden_size,), dtype)


def _sizes(params: Any, name: str) -> tuple[int, int]:
    """(I, H) of checked GRU params."""
    return tuple(check_gru_params(params, name))


FAMILY = Family(
    name="gru", label="GRU", params_type=GRUParams, init=init_gru,
    apply=checked_apply("gru", gru), step=_step, initial_state=_initial_state, sizes=_sizes,
    init_options=frozenset({"dtype", "input_init", "recurrent_init", "bias_init"}),
    apply_options=frozenset({"unroll", "fused_backward", "remat_chunk", "recurrent_dropout",
                             "zoneout_h", "key", "deterministic"}),
)
"""The GRU behind the family protocol (`jaxlstm.family`)."""
