"""PyTorch `nn.LSTM` and `nn.GRU` weights in and out of jaxlstm's stack params.

PyTorch keeps, per layer k and direction (suffix `_reverse` for the backward one),
`weight_ih_l{k}` (4H, I_k), `weight_hh_l{k}` (4H, R), `bias_ih_l{k}` and `bias_hh_l{k}` (4H,),
gate order i, f, g, o, and with `proj_size` P (LSTMP) also `weight_hr_l{k}` (P, H); R = P with
a projection, else H. jaxlstm's layout is their transpose, with the two biases summed:
w_x = weight_ih.T, w_h = weight_hh.T, b = bias_ih + bias_hh, w_p = weight_hr.T. Exported biases
are `bias_ih = b`, `bias_hh = 0`, which PyTorch computes identically. Layer k > 0 reads
R * num_directions features.

Only the standard cell (`LSTMParams.cell is None`) exists in PyTorch: `to_torch` refuses the
other variants.

`nn.GRU` keeps the same keys (no `weight_hr`) with three gate blocks r, z, n: weight_ih (3H, I),
weight_hh (3H, H), bias_ih and bias_hh (3H,). Its n gate's recurrent bias sits inside the reset
gate's product, so it stays apart (`GRUParams`): w_x = weight_ih.T, w_h = weight_hh.T,
b = bias_ih + (bias_hh's r and z blocks, 0), b_hn = bias_hh's n block. Exported:
bias_ih = b, bias_hh = (0, 0, b_hn). A state_dict is read as a GRU's when its first layer's
weight_hh is (3H, H) (and there is no weight_hr); a module says which it is.

torch is imported only inside the functions that need it; `from_torch` also accepts a plain
mapping of NumPy arrays (as `safetensors.numpy.load_file` returns).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxlstm.gru_family.params import GRUParams
from jaxlstm.gru_family.validation import check_gru_params
from jaxlstm.params import LSTMParams
from jaxlstm.stack import Directions, StackParams
from jaxlstm.validation import check_params

_KEY = re.compile(r"^(weight_ih|weight_hh|weight_hr|bias_ih|bias_hh)_l(\d+)(_reverse)?$")


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


TORCH_MODULES = ("LSTM", "GRU")
"""The `nn.RNNBase` modes (`module.mode`) that `from_torch` reads: nn.LSTM and nn.GRU."""


def _state_dict(module_or_state_dict: Any) -> tuple[Mapping[str, Any], str | None]:
    """The state_dict, and "LSTM" or "GRU" for a module (None for a state_dict: its shapes
    tell, `_kind_of`)."""
    if isinstance(module_or_state_dict, Mapping):
        return module_or_state_dict, None
    name = type(module_or_state_dict).__name__
    if not hasattr(module_or_state_dict, "state_dict"):
        raise TypeError(
            "module_or_state_dict must be a torch.nn.LSTM, a torch.nn.GRU or a state_dict of "
            f"one, got {name}."
        )
    mode = getattr(module_or_state_dict, "mode", None)
    if mode not in TORCH_MODULES:
        raise TypeError(f"module_or_state_dict must be a torch.nn.LSTM or a torch.nn.GRU, got "
                        f"{name}.")
    return module_or_state_dict.state_dict(), mode


def _kind_of(weights: Mapping[str, np.ndarray]) -> str:
    """Which module one direction's weights come from: "GRU" for weight_hh (3H, H) and no
    weight_hr, else "LSTM" (whose checks then say what is wrong)."""
    w_hh = weights.get("weight_hh")
    if "weight_hr" in weights or w_hh is None or w_hh.ndim != 2:
        return "LSTM"
    return "GRU" if w_hh.shape[0] == 3 * w_hh.shape[1] else "LSTM"


def from_torch(module_or_state_dict: Any, *, prefix: str = "") -> StackParams:
    """Converts a `torch.nn.LSTM` or `torch.nn.GRU` (or its `state_dict`) into params for
    `jaxlstm.lstm_stack`.

    Any `num_layers` and `bidirectional` are read from the keys; `batch_first` does not matter
    (it changes no weights). With `proj_size` (LSTMP) each layer's params get the projection
    `w_p = weight_hr.T` (H, P), and w_h is (P, 4H). An `nn.GRU`'s layers become `GRUParams`
    (see the module docstring); a state_dict is a GRU's when its weight_hh is (3H, H).

    Args:
        module_or_state_dict: an `nn.LSTM` or `nn.GRU`, or a mapping of its parameter names to
            tensors or arrays.
        prefix: the prefix of the module's keys in a larger model's state_dict, e.g.
            "encoder.".

    Returns:
        A tuple (one per layer) of `Directions(forward, backward)` of `LSTMParams` (or
        `GRUParams`), float dtype as stored.

    Example:
        >>> params = jaxlstm.interop.from_torch(torch.nn.LSTM(3, 16, num_layers=2))
        >>> outputs, _ = jaxlstm.lstm_stack(params, xs)
    """
    state_dict, kind = _state_dict(module_or_state_dict)
    found: dict[tuple[int, bool], dict[str, np.ndarray]] = {}
    for full_key, value in state_dict.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix):]
        match = _KEY.match(key)
        if match is None:
            raise ValueError(
                f"Unexpected key {full_key!r}: an nn.LSTM or nn.GRU state_dict has only "
                "weight_ih_l<k>, weight_hh_l<k>, bias_ih_l<k>, bias_hh_l<k> and, with an "
                "LSTM's proj_size, weight_hr_l<k> (with _reverse for the backward direction)."
            )
        name, layer, reverse = match.group(1), int(match.group(2)), bool(match.group(3))
        found.setdefault((layer, reverse), {})[name] = _to_numpy(value)
    if not found:
        raise ValueError(f"No nn.LSTM weights found under prefix {prefix!r} (nor nn.GRU "
                         "weights).")
    if kind is None:
        kind = _kind_of(found.get((0, False)) or next(iter(found.values())))
    direction_params = _gru_direction_params if kind == "GRU" else _direction_params

    num_layers = max(layer for layer, _ in found) + 1
    bidirectional = any(reverse for _, reverse in found)
    layers = []
    input_size = None
    for layer in range(num_layers):
        directions = []
        for reverse in ((False, True) if bidirectional else (False,)):
            where = f"layer {layer}" + (" (reverse)" if reverse else "")
            directions.append(direction_params(found.get((layer, reverse), {}), where,
                                               input_size))
        layers.append(Directions(*directions))
        input_size = sum(p.w_h.shape[0] for p in directions)  # R per direction, concatenated
    return tuple(layers)


def _direction_params(weights: Mapping[str, np.ndarray], where: str,
                      input_size: int | None) -> LSTMParams:
    """One direction of one layer; `input_size` is what the previous layer outputs."""
    if "weight_ih" not in weights or "weight_hh" not in weights:
        raise ValueError(f"Missing weight_ih or weight_hh for {where}.")
    w_ih, w_hh, w_hr = weights["weight_ih"], weights["weight_hh"], weights.get("weight_hr")
    if w_hr is None:
        hidden = w_hh.shape[1] if w_hh.ndim == 2 else -1
        if w_hh.shape != (4 * hidden, hidden):
            raise ValueError(f"{where}: weight_hh must be (4H, H), got {w_hh.shape}.")
    else:
        if w_hr.ndim != 2 or w_hh.ndim != 2 or w_hr.shape[1] * 4 != w_hh.shape[0]:
            raise ValueError(
                f"{where}: with proj_size, weight_hr must be (P, H) and weight_hh (4H, P), got "
                f"{w_hr.shape} and {w_hh.shape}."
            )
        hidden, proj = w_hr.shape[1], w_hr.shape[0]
        if w_hh.shape != (4 * hidden, proj):
            raise ValueError(
                f"{where}: weight_hh must be (4H, P) = {(4 * hidden, proj)} to match weight_hr "
                f"(P, H) = {w_hr.shape}, got {w_hh.shape}."
            )
    if w_ih.ndim != 2 or w_ih.shape[0] != 4 * hidden:
        raise ValueError(
            f"{where}: weight_ih must be (4H, I) with H = {hidden}, got {w_ih.shape}."
        )
    if input_size is not None and w_ih.shape[1] != input_size:
        raise ValueError(
            f"{where}: weight_ih reads {w_ih.shape[1]} features, but the previous "
            f"layer outputs {input_size}."
        )
    zeros = np.zeros(4 * hidden, w_hh.dtype)  # an nn.LSTM with bias=False
    for name in ("bias_ih", "bias_hh"):
        if name in weights and weights[name].shape != zeros.shape:
            raise ValueError(
                f"{where}: {name} must be (4H,) = {zeros.shape}, got {weights[name].shape}."
            )
    b = weights.get("bias_ih", zeros) + weights.get("bias_hh", zeros)
    return LSTMParams(
        w_x=jnp.asarray(w_ih.T), w_h=jnp.asarray(w_hh.T), b=jnp.asarray(b),
        w_p=None if w_hr is None else jnp.asarray(w_hr.T),
    )


def _gru_direction_params(weights: Mapping[str, np.ndarray], where: str,
                          input_size: int | None) -> GRUParams:
    """One direction of one `nn.GRU` layer; `input_size` is what the previous layer
    outputs."""
    if "weight_ih" not in weights or "weight_hh" not in weights:
        raise ValueError(f"Missing weight_ih or weight_hh for {where}.")
    if "weight_hr" in weights:
        raise ValueError(f"{where}: weight_hr is an nn.LSTM's proj_size; an nn.GRU has none.")
    w_ih, w_hh = weights["weight_ih"], weights["weight_hh"]
    hidden = w_hh.shape[1] if w_hh.ndim == 2 else -1
    if w_hh.shape != (3 * hidden, hidden):
        raise ValueError(f"{where}: weight_hh must be (3H, H) for an nn.GRU, got {w_hh.shape}.")
    if w_ih.ndim != 2 or w_ih.shape[0] != 3 * hidden:
        raise ValueError(
            f"{where}: weight_ih must be (3H, I) with H = {hidden}, got {w_ih.shape}."
        )
    if input_size is not None and w_ih.shape[1] != input_size:
        raise ValueError(
            f"{where}: weight_ih reads {w_ih.shape[1]} features, but the previous "
            f"layer outputs {input_size}."
        )
    zeros = np.zeros(3 * hidden, w_hh.dtype)  # an nn.GRU with bias=False
    for name in ("bias_ih", "bias_hh"):
        if name in weights and weights[name].shape != zeros.shape:
            raise ValueError(
                f"{where}: {name} must be (3H,) = {zeros.shape}, got {weights[name].shape}."
            )
    bias_ih, bias_hh = weights.get("bias_ih", zeros), weights.get("bias_hh", zeros)
    # r and z see their two biases only as a sum; n's recurrent bias stays apart.
    b = np.concatenate([bias_ih[:2 * hidden] + bias_hh[:2 * hidden], bias_ih[2 * hidden:]])
    return GRUParams(w_x=jnp.asarray(w_ih.T), w_h=jnp.asarray(w_hh.T), b=jnp.asarray(b),
                     b_hn=jnp.asarray(bias_hh[2 * hidden:]))


def _torch_arrays(p: Any, layer: int, direction: str) -> tuple[str, dict[str, np.ndarray]]:
    """("LSTM" or "GRU", the direction's arrays under nn.LSTM's / nn.GRU's names, without the
    layer suffix)."""
    where = f"layer {layer} ({direction})"
    if isinstance(p, GRUParams):
        check_gru_params(p, f"params[{layer}].{direction}")
        b_hn = np.asarray(p.b_hn)
        return "GRU", {
            "weight_ih": np.asarray(p.w_x).T, "weight_hh": np.asarray(p.w_h).T,
            "bias_ih": np.asarray(p.b),
            "bias_hh": np.concatenate([np.zeros(2 * b_hn.shape[0], b_hn.dtype), b_hn]),
        }
    if getattr(p, "cell", None) is not None:
        raise ValueError(
            f"{where}: cell variant {type(p.cell).__name__} cannot be exported to "
            "torch.nn.LSTM, which has only the standard cell (params.cell is None)."
        )
    sizes = check_params(p, f"params[{layer}].{direction}")
    w_p = getattr(p, "w_p", None)
    arrays = {
        "weight_ih": np.asarray(p.w_x).T, "weight_hh": np.asarray(p.w_h).T,
        "bias_ih": np.asarray(p.b), "bias_hh": np.zeros_like(np.asarray(p.b)),
    }
    if w_p is not None:
        if sizes.output_size >= sizes.hidden_size:
            raise ValueError(
                f"{where}: torch.nn.LSTM needs proj_size < hidden_size, got proj_size "
                f"{sizes.output_size} and hidden_size {sizes.hidden_size}."
            )
        arrays["weight_hr"] = np.asarray(w_p).T
    return "LSTM", arrays


def to_torch(params: StackParams | LSTMParams | GRUParams) -> dict[str, Any]:
    """A `state_dict` that `torch.nn.LSTM.load_state_dict` (or, for `GRUParams`,
    `torch.nn.GRU.load_state_dict`) accepts, for the same model.

    Build the module with `input_size`, `hidden_size`, `num_layers`, `bidirectional` and
    (LSTM) `proj_size` matching `params` (and `bias=True`). An LSTM's `bias_ih` holds b and
    `bias_hh` zeros; a projection w_p (H, P) is exported as `weight_hr = w_p.T`. A GRU's
    `bias_ih` holds b and `bias_hh` (0, 0, b_hn).

    Args:
        params: stack params from `init_lstm_stack` / `from_torch` whose layers are all
            `LSTMParams` or all `GRUParams`, or a single `LSTMParams` or `GRUParams`. Of the
            LSTMs only the standard cell (`cell=None`), with or without a projection, can be
            exported.

    Returns:
        An ordered dict of float32 (or the params' dtype) torch tensors.

    Raises:
        ValueError: for a cell variant (`cell` not None), which `nn.LSTM` cannot represent,
            for a projection with proj_size >= hidden_size, which `nn.LSTM` refuses, or for a
            stack that mixes LSTM and GRU layers, which no one torch module holds.
    """
    import torch

    if isinstance(params, (LSTMParams, GRUParams)):
        params = (Directions(params),)
    state_dict: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    for layer, directions in enumerate(params):
        for p, suffix in zip(directions, ("", "_reverse")):
            if p is None:
                continue
            direction = "backward" if suffix else "forward"
            kind, arrays = _torch_arrays(p, layer, direction)
            where = f"layer {layer} ({direction})"
            if kinds and kind not in kinds:
                first_kind, first_where = next(iter(kinds.items()))
                raise ValueError(f"{where} holds {kind} params but {first_where} holds "
                                 f"{first_kind} params: a torch.nn.LSTM or nn.GRU has layers "
                                 "of one kind.")
            kinds.setdefault(kind, where)
            for name, array in arrays.items():
                # np.array copies: torch wants a writable buffer, and a jax array's is not.
                state_dict[f"{name}_l{layer}{suffix}"] = torch.from_numpy(np.array(array))
    return state_dict


def load_torch(path: str | os.PathLike, *, prefix: str = "") -> StackParams:
    """Loads `nn.LSTM` or `nn.GRU` weights from a file without executing pickled code.

    `.safetensors` files are read with `safetensors.numpy` (no torch needed); anything else
    with `torch.load(weights_only=True)`, which refuses arbitrary pickled objects.

    Args:
        path: a `.safetensors` file, or a file written by `torch.save(module.state_dict())`.
        prefix: as in `from_torch`.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return from_torch(load_file(path), prefix=prefix)
    import torch

    return from_torch(torch.load(path, weights_only=True, map_location="cpu"), prefix=prefix)
