"""Module params as plain dicts, and one call to and from the functional `LSTMParams`.

Both the linen and the NNX modules store a layer's weights under the `LSTMParams` field names,

    {"w_x": (I, G*H), "w_h": (R, G*H), "b": (G*H,), "cell": {...}, "w_p": (H, R)}

("cell" only for variants with weights of their own, "w_p" only with a projection), and a stack
as {"layer_0": {"forward": {...}, "backward": {...}}, "layer_1": ...}. Converting either way
re-wraps the same arrays: nothing is copied, so research code can move between a Flax module
and `jaxlstm.lstm` / `jaxlstm.lstm_stack` freely.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxlstm.params import LSTMParams
from jaxlstm.stack import MERGE_MODES, Directions, StackParams
from jaxlstm.validation import check_positive_int, check_rate
from jaxlstm.variants import VARIANTS, CellVariant

LayerDict = dict[str, Any]


def _plain(tree: Any) -> Any:
    """A linen params dict as is; an `nnx.State` (or a FrozenDict) as nested plain dicts."""
    if hasattr(tree, "to_pure_dict"):  # an nnx.State; flax is imported already if it is one
        from flax import nnx

        tree = nnx.to_pure_dict(tree)
    if isinstance(tree, Mapping):
        return {str(k): _plain(v) for k, v in tree.items()}
    return tree


def _variant(layer: Mapping[str, Any], where: str) -> CellVariant:
    """Which variant a layer dict holds: its gate count and the names of its cell weights."""
    w_p = layer.get("w_p")
    hidden_size = w_p.shape[0] if w_p is not None else layer["w_h"].shape[0]
    num_gates = layer["b"].shape[-1] // max(1, hidden_size)
    fields = set(layer.get("cell") or {})
    for variant in VARIANTS.values():
        names = set(variant.weight_shapes(1))
        if variant.num_gates == num_gates and names == fields:
            return variant
    raise ValueError(
        f"{where}: no cell variant has {num_gates} gate blocks and cell weights "
        f"{sorted(fields) or 'none'}."
    )


def _layer_to_params(layer: Mapping[str, Any], where: str) -> LSTMParams:
    missing = [k for k in ("w_x", "w_h", "b") if k not in layer]
    if missing:
        raise ValueError(f"{where} must hold w_x, w_h and b, missing {missing}.")
    variant = _variant(layer, where)
    cell = None
    if variant.weights_type is not None:
        cell = variant.weights_type(**layer.get("cell", {}))
    return LSTMParams(layer["w_x"], layer["w_h"], layer["b"], cell, layer.get("w_p"))


def to_lstm_params(tree: Any) -> LSTMParams | StackParams:
    """A module's params as the functional API's: `LSTMParams` for a layer (an `LSTMCell`'s
    params), a tuple of `Directions` of `LSTMParams` for a stack (an `LSTM`'s).

    Args:
        tree: a linen params dict (`variables["params"]`, or the cell's part of an `nn.RNN`'s),
            or an NNX `nnx.State` such as `nnx.state(module, nnx.Param)`.

    Returns:
        The same arrays, wrapped as `jaxlstm.lstm` / `jaxlstm.lstm_stack` take them.
    """
    tree = _plain(tree)
    if not isinstance(tree, Mapping):
        raise TypeError(f"tree must be a params dict or nnx.State, got {type(tree).__name__}.")
    if "w_x" in tree:
        return _layer_to_params(tree, "params")
    layers = sorted((k for k in tree if k.startswith("layer_")), key=lambda k: int(k[6:]))
    if not layers or layers != [f"layer_{n}" for n in range(len(layers))]:
        raise ValueError(
            "tree must be a layer's params (w_x, w_h, b, ...) or a stack's (layer_0, layer_1, "
            f"...), got keys {sorted(tree)}."
        )
    stack = []
    for name in layers:
        layer = tree[name]
        backward = layer.get("backward")
        stack.append(Directions(
            _layer_to_params(layer["forward"], f"{name}.forward"),
            None if backward is None else _layer_to_params(backward, f"{name}.backward"),
        ))
    return tuple(stack)


def _params_to_layer(params: LSTMParams) -> LayerDict:
    layer: LayerDict = {"w_x": params.w_x, "w_h": params.w_h, "b": params.b}
    if params.cell is not None and params.cell._fields:
        layer["cell"] = params.cell._asdict()
    if params.w_p is not None:
        layer["w_p"] = params.w_p
    return layer


def to_module_params(params: LSTMParams | StackParams) -> LayerDict:
    """The inverse of `to_lstm_params`: plain dicts of the same arrays, as the modules store
    them (`LSTMParams` -> a layer dict, stack params -> {"layer_0": {"forward": ...}, ...})."""
    if isinstance(params, LSTMParams):
        return _params_to_layer(params)
    if not isinstance(params, (tuple, list)) or not all(
        isinstance(layer, Directions) for layer in params
    ):
        raise TypeError(
            "params must be LSTMParams or a tuple of Directions of LSTMParams, got "
            f"{type(params).__name__}."
        )
    tree = {}
    for n, layer in enumerate(params):
        entry = {"forward": _params_to_layer(layer.forward)}
        if layer.backward is not None:
            entry["backward"] = _params_to_layer(layer.backward)
        tree[f"layer_{n}"] = entry
    return tree


def cast_for_compute(dtype: Any, tree: Any) -> Any:
    """Flax's `dtype` attribute: cast every array to the computation dtype; None keeps them
    (and jaxlstm then computes in their promoted dtype)."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda a: jnp.asarray(a).astype(dtype), tree)


def check_module_options(num_layers: Any, merge: Any, dropout: Any, recurrent_dropout: Any,
                         zoneout_h: Any, zoneout_c: Any) -> None:
    """Checks an `LSTM` module's options, naming the module's own attributes."""
    check_positive_int(num_layers, "num_layers")
    if merge not in MERGE_MODES:
        raise ValueError(f"merge must be one of {list(MERGE_MODES)}, got {merge!r}.")
    for name, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout),
                       ("zoneout_h", zoneout_h), ("zoneout_c", zoneout_c)):
        check_rate(rate, name)


def arrange_outputs(result: tuple[Any, ...], return_carry: bool, return_gates: bool) -> Any:
    """`lstm_stack`'s `(outputs, carry[, gates])` in the modules' order: `outputs`, or
    `(carry, outputs)` (nn.RNN's order) with `return_carry`, with `gates` appended."""
    outputs, carry = result[0], result[1]
    out = (carry, outputs) if return_carry else (outputs,)
    if return_gates:
        out = (*out, result[2])
    return out if len(out) > 1 else out[0]
