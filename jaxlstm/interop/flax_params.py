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


_LINEN_CELL = tuple(f"{side}{g}" for side in "ih" for g in _GATES)
_NNX_CELL = ("ii", "if_", "ig", "io", "hi", "hf", "hg", "ho")
_NNX_OPTIMIZED_CELL = ("dense_h", "dense_i")
_TARGETS = ("cell", "lstm")


def _plain_tree(tree: Any) -> Any:
    """Nested plain dicts of arrays from a linen params dict, a FrozenDict, an `nnx.State`
    or its pure dict (NNX `Variable`s give their values)."""
    if hasattr(tree, "to_pure_dict"):  # an nnx.State: flax is imported already
        from flax import nnx

        tree = nnx.to_pure_dict(tree)
    if isinstance(tree, Mapping):
        return {str(k): _plain_tree(v) for k, v in tree.items()}
    return _value(tree)


def _flax_cell(node: Any) -> LSTMParams | None:
    """The params of the Flax LSTM cell whose params `node` is, or None if it is none."""
    if not isinstance(node, Mapping):
        return None
    keys = tuple(sorted(node))
    if keys == tuple(sorted(_LINEN_CELL)):
        return from_flax_linen(node)
    if keys == tuple(sorted(_NNX_CELL)):
        renamed = {("if" if k == "if_" else k): v for k, v in node.items()}
        return from_flax_linen(renamed)
    if keys == _NNX_OPTIMIZED_CELL:
        return from_flax_nnx(node)
    return None


def _layer(params: LSTMParams) -> dict[str, Any]:
    return {"w_x": params.w_x, "w_h": params.w_h, "b": params.b}


def _rnn_cell(node: Any) -> LSTMParams | None:
    """The cell params of an `nn.RNN` / `nnx.RNN` of a Flax LSTM cell ({'cell': ...})."""
    if isinstance(node, Mapping) and set(node) == {"cell"}:
        return _flax_cell(node["cell"])
    return None


def _convert(node: Any, target: str) -> tuple[Any, int]:
    cell = _flax_cell(node)
    if cell is not None and target == "cell":
        return _layer(cell), 1
    if target == "lstm":
        forward = _rnn_cell(node)
        if forward is not None:
            return {"layer_0": {"forward": _layer(forward)}}, 1
        if isinstance(node, Mapping) and set(node) == {"forward_rnn", "backward_rnn"}:
            forward, backward = _rnn_cell(node["forward_rnn"]), _rnn_cell(node["backward_rnn"])
            if forward is not None and backward is not None:
                return {"layer_0": {"forward": _layer(forward), "backward": _layer(backward)}}, 1
    if not isinstance(node, Mapping):
        return node, 0
    converted, count = {}, 0
    for key, value in node.items():
        converted[key], found = _convert(value, target)
        count += found
    return converted, count


def from_flax_model(tree: Any, *, target: str = "cell") -> dict[str, Any]:
    """A Flax model's params with every Flax LSTM cell's replaced by jaxlstm's, in place.

    Finds the params of linen `LSTMCell` / `OptimizedLSTMCell` (`ii/kernel`, ..., `ho/bias`)
    and of NNX `LSTMCell` (`ii`, `if_`, ...) and `OptimizedLSTMCell` (`dense_i`, `dense_h`)
    anywhere in `tree`, and leaves everything else as it is:

    * `target="cell"`: each cell's params become a `jaxlstm.flax` `LSTMCell`'s (`w_x`, `w_h`,
      `b`), for the same model with the cell class swapped (`nn.RNN(jl.LSTMCell(...))`).
    * `target="lstm"`: each `nn.RNN` / `nnx.RNN` of such a cell ({'cell': ...}), and each
      `Bidirectional` of two ({'forward_rnn': ..., 'backward_rnn': ...}), becomes a one-layer
      `jaxlstm.flax` `LSTM` module's params ({'layer_0': {'forward': ..., 'backward': ...}}),
      for the model with the RNN replaced by that module under the same name.

    Args:
        tree: a linen variables or params dict (or FrozenDict), or an `nnx.State` (e.g.
            `nnx.state(model, nnx.Param)`) or its pure dict.
        target: "cell" or "lstm", as above.

    Returns:
        Plain nested dicts: `{'params': ...}` for linen `apply`, or a pure dict for NNX's
        `nnx.update(model, ...)`.

    Raises:
        ValueError: if `tree` holds no Flax LSTM cell's params.

    Example:
        >>> flax_params = nn.RNN(nn.LSTMCell(16)).init(key, xs)       # or a trained model's
        >>> ys = nn.RNN(jl.LSTMCell(16)).apply(from_flax_model(flax_params), xs)
    """
    if target not in _TARGETS:
        raise ValueError(f"target must be one of {list(_TARGETS)}, got {target!r}.")
    converted, count = _convert(_plain_tree(tree), target)
    if count == 0:
        what = "cell" if target == "cell" else "nn.RNN or Bidirectional of a cell"
        raise ValueError(
            f"tree holds no Flax LSTM {what}'s params (linen ii/kernel ... ho/bias, NNX "
            "ii ... ho or dense_i/dense_h)."
        )
    return converted
