"""Flax LSTM cell params to and from `LSTMParams`, as plain mappings (no flax import).

* linen `LSTMCell` and `OptimizedLSTMCell` keep one kernel per gate: input side
  `{ii, if, ig, io}/kernel` (I, H) without bias, hidden side `{hi, hf, hg, ho}/kernel` (H, H)
  with `bias` (H,). Gate order i, f, g, o, as jaxlstm's; their carry is (c, h).
* NNX `OptimizedLSTMCell` keeps them fused: `dense_i/kernel` (I, 4H) and `dense_h/kernel`
  (H, 4H) with `dense_h/bias` (4H,), which is jaxlstm's layout exactly.

Flax's cells are the standard LSTM without a projection: `to_flax_linen` and `to_flax_nnx`
refuse params with a cell variant (`cell` not None) or a projection (`w_p` not None).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from jaxlstm.gates import NUM_GATES
from jaxlstm.params import LSTMParams
from jaxlstm.validation import check_params

_GATES = "ifgo"


def _value(leaf: Any) -> Any:
    """The array inside an NNX `Variable` (or the array itself)."""
    return leaf.get_value() if hasattr(leaf, "get_value") else leaf


def _get(tree: Mapping[str, Any], path: str, what: str) -> jnp.ndarray:
    node: Any = tree
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            raise ValueError(f"{what} has no '{path}'; got keys {sorted(tree)}.")
        node = node[part]
    return jnp.asarray(_value(node))


def _cell_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accepts a cell's params, or a variables dict around them ({'params': ...})."""
    if "params" in params and isinstance(params["params"], Mapping):
        params = params["params"]
    if "cell" in params and isinstance(params["cell"], Mapping):  # nn.RNN(cell) params
        params = params["cell"]
    return params


def _check_standard(params: Any, to: str) -> None:
    """ValueError unless `params` is the standard cell without a projection."""
    cell = getattr(params, "cell", None)
    if cell is not None:
        raise ValueError(
            f"{to}: Flax's LSTM cells have only the standard cell, but params.cell is "
            f"{type(cell).__name__} (a cell variant)."
        )
    if getattr(params, "w_p", None) is not None:
        raise ValueError(
            f"{to}: Flax's LSTM cells have no output projection, but params.w_p is set "
            "(LSTMP, proj_size)."
        )
    check_params(params)


def from_flax_linen(params: Mapping[str, Any]) -> LSTMParams:
    """`LSTMParams` from a linen `LSTMCell` / `OptimizedLSTMCell`'s params.

    Args:
        params: the cell's params (`{'ii': {'kernel': ...}, ...}`), or the variables of the
            cell or of an `nn.RNN` around it (`{'params': {'cell': ...}}`).

    Example:
        >>> variables = nn.RNN(nn.OptimizedLSTMCell(16)).init(key, xs)
        >>> params = jaxlstm.interop.from_flax_linen(variables)
    """
    cell = _cell_params(params)
    what = "linen LSTM cell params"
    return LSTMParams(
        w_x=jnp.concatenate([_get(cell, f"i{g}/kernel", what) for g in _GATES], axis=-1),
        w_h=jnp.concatenate([_get(cell, f"h{g}/kernel", what) for g in _GATES], axis=-1),
        b=jnp.concatenate([_get(cell, f"h{g}/bias", what) for g in _GATES], axis=-1),
    )


def to_flax_linen(params: LSTMParams) -> dict[str, Any]:
    """A linen `LSTMCell` / `OptimizedLSTMCell` params dict holding the same weights.

    Only the standard cell without a projection has one (ValueError otherwise).

    Wrap it as `{'params': ...}` to apply the cell, or `{'params': {'cell': ...}}` for an
    `nn.RNN` around it.
    """
    _check_standard(params, "to_flax_linen")
    w_x, w_h, b = (jnp.split(a, NUM_GATES, axis=-1) for a in (params.w_x, params.w_h, params.b))
    cell: dict[str, Any] = {}
    for g, wx_g, wh_g, b_g in zip(_GATES, w_x, w_h, b):
        cell[f"i{g}"] = {"kernel": wx_g}
        cell[f"h{g}"] = {"kernel": wh_g, "bias": b_g}
    return cell


def from_flax_nnx(state: Mapping[str, Any]) -> LSTMParams:
    """`LSTMParams` from an NNX `OptimizedLSTMCell`'s state (`nnx.state(cell)`, or a dict).

    Example:
        >>> cell = nnx.OptimizedLSTMCell(3, 16, rngs=nnx.Rngs(0))
        >>> params = jaxlstm.interop.from_flax_nnx(nnx.state(cell, nnx.Param))
    """
    what = "NNX OptimizedLSTMCell state"
    return LSTMParams(
        w_x=_get(state, "dense_i/kernel", what),
        w_h=_get(state, "dense_h/kernel", what),
        b=_get(state, "dense_h/bias", what),
    )


def to_flax_nnx(params: LSTMParams) -> dict[str, Any]:
    """A pure dict for an NNX `OptimizedLSTMCell`: `nnx.update(cell, to_flax_nnx(params))`."""
    _check_standard(params, "to_flax_nnx")
    return {"dense_i": {"kernel": params.w_x},
            "dense_h": {"kernel": params.w_h, "bias": params.b}}
