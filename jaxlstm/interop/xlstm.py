"""Weights from NX-AI's `xlstm` package (PyTorch) into jaxlstm's xLSTM cells.

What maps, and what it reproduces:

* sLSTM: `xlstm.blocks.slstm.layer.sLSTMLayer` (or its state_dict) -> `SLSTMParams`.
  `jaxlstm.xlstm.slstm.slstm(params, x)` then reproduces the layer's recurrent cell output
  (`layer.slstm_cell`'s y, as (B, T, H), before the layer's group norm) and its final state
  (h, c, n, m), for any backend the weights were saved from ("vanilla" or "cuda": their
  internal layouts differ and are read from the recurrent kernel's shape). The layer's four
  per-head block-diagonal input projections (`LinearHeadwiseExpand`) become the diagonal blocks
  of a dense W_x (I = H = embedding_dim). The layer's module named `fgate` produces the input
  gate's pre-activation and `igate` the forget gate's (the cell reads its input as i, f, z, o):
  they land in jaxlstm's i and f blocks respectively. With `return_norm=True` you also get the
  scale of the layer's per-head group norm, and `jaxlstm.interop.xlstm.head_norm` applies it:
  `head_norm(slstm(params, x)[0], scale, heads)` is the layer's whole output (in eval mode, or
  with dropout 0). A bare `sLSTMCell` (or its state_dict) maps too, with W_x the identity on
  its 4H pre-activation input.
  Not mapped: the layer's optional causal conv1d (+ SiLU) in front of the i and f gates
  (`conv1d_kernel_size > 0`), which jaxlstm's sLSTM has no place for: such a layer raises
  ValueError rather than returning weights that compute something else.

* mLSTM: `xlstm.blocks.mlstm.cell.mLSTMCell` (or its state_dict) -> `MLSTMParams` over the
  concatenated input x_t = concat(q_t, k_t, v_t) (I = 3 * embedding_dim): the q, k and v
  kernels select their third of x_t (identity blocks), and the gate kernels are the cell's
  `igate` / `fgate` (which the reference computes from exactly that concatenation).
  `jaxlstm.xlstm.mlstm.mlstm(params, concat([q, k, v], -1))` then reproduces the cell's memory
  output before its `outnorm`; with `return_norm=True`, `head_norm` applies the outnorm, giving
  the cell's whole output. Equivalently, call `mlstm_qkv` with your own q, k, v and the gate
  pre-activations x_t @ W_i + b_i, x_t @ W_f + b_f.
* mLSTM layer: `xlstm.blocks.mlstm.layer.mLSTMLayer` (or its state_dict) ->
  `jaxlstm.xlstm.blocks.MLSTMBlockParams`, for `jaxlstm.xlstm.blocks.mlstm_layer(params, x)`,
  which equals `layer(x)` (up-projection, causal conv1d + SiLU, headwise q/k/v, the cell, the
  outnorm, the learnable skip, the output gate h * SiLU(z), the down-projection).

torch is never imported here: modules are read through their `state_dict()`, and a plain
mapping of NumPy arrays (as `safetensors.numpy.load_file` returns) works as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.interop.pytorch import _to_numpy
from jaxlstm.xlstm.blocks import group_norm, mlstm_block_params_from_torch
from jaxlstm.xlstm.mlstm import MLSTMParams
from jaxlstm.xlstm.slstm import SLSTMParams

Array = jax.Array

_SLSTM_PROJECTIONS = ("fgate", "igate", "zgate", "ogate")
"""The sLSTM layer's projection modules in jaxlstm's gate order i, f, z, o: the reference's
`fgate` feeds the cell's first (input gate) block, its `igate` the second (forget gate)."""



def _state_dict_and_config(module_or_state_dict: Any) -> tuple[Mapping[str, Any], Any]:
    if isinstance(module_or_state_dict, Mapping):
        return module_or_state_dict, None
    name = type(module_or_state_dict).__name__
    if name not in ("sLSTMLayer", "sLSTMCell_vanilla", "sLSTMCell_cuda", "mLSTMCell",
                    "mLSTMLayer"):
        raise TypeError(
            "module_or_state_dict must be an xlstm sLSTMLayer, sLSTMCell, mLSTMLayer or "
            "mLSTMCell, or the "
            f"state_dict of one, got {name}. For a block or a stack, pass its layer "
            "(e.g. block.xlstm for an sLSTMBlock, block.xlstm.mlstm_cell for an mLSTMBlock)."
        )
    return module_or_state_dict.state_dict(), getattr(module_or_state_dict, "config", None)


def from_xlstm(
    module_or_state_dict: Any,
    *,
    num_heads: int | None = None,
    prefix: str = "",
    return_norm: bool = False,
) -> Any:
    """Converts an `xlstm` sLSTM layer, mLSTM layer or cell (or its state_dict) into jaxlstm
    params: `SLSTMParams`, `MLSTMBlockParams` or `MLSTMParams`.

    See the module docstring for what is reproduced. Which one a state_dict holds is read
    from its keys; the number of heads from the weights' shapes.

    Args:
        module_or_state_dict: an `sLSTMLayer`, `sLSTMCell` or `mLSTMCell`, or a mapping of its
            parameter names to tensors or arrays.
        num_heads: the config's `num_heads`, checked against the weights if given.
        prefix: the module's key prefix in a larger model's state_dict, e.g.
            "xlstm_block_stack.blocks.1.xlstm.".
        return_norm: also return the per-feature scale (H,) of the layer's group norm (sLSTM)
            or the cell's outnorm (mLSTM), for `head_norm`. The reference parameterises it as
            1 + weight; the returned scale includes the 1 (ones when the layer has no weight).

    Returns:
        `SLSTMParams` or `MLSTMParams` (float dtype as stored; bfloat16 becomes float32), or
        `(params, scale)` with `return_norm`.

    Raises:
        ValueError: for an sLSTM layer with a conv1d (`conv1d_kernel_size > 0`), for missing or
            misshapen weights, or a `num_heads` the weights disagree with.
        TypeError: for anything that is neither a supported module nor a mapping.

    Example:
        >>> params = jaxlstm.interop.from_xlstm(slstm_layer)
        >>> hs, final = jaxlstm.xlstm.slstm.slstm(params, x)  # = slstm_layer.slstm_cell's y
    """
    state_dict, config = _state_dict_and_config(module_or_state_dict)
    weights = {key[len(prefix):]: value for key, value in state_dict.items()
               if key.startswith(prefix)}
    if not weights:
        raise ValueError(f"No weights found under prefix {prefix!r}.")
    if "proj_up.weight" in weights:  # an mLSTMLayer: the whole block's branch
        if return_norm:
            raise ValueError("return_norm applies to cells; an mLSTMLayer's outnorm is in "
                             "its MLSTMBlockParams.")
        return mlstm_block_params_from_torch({k: _to_numpy(v) for k, v in weights.items()})
    if "slstm_cell._recurrent_kernel_" in weights:
        kernel = int(getattr(config, "conv1d_kernel_size", 0) or 0)
        if kernel > 0 or "conv1d.conv.weight" in weights:
            raise ValueError(
                "This sLSTMLayer has a causal conv1d (+ SiLU) in front of its input and forget "
                f"gates (conv1d_kernel_size = {kernel or 'its conv1d.conv.weight'}), which "
                "jaxlstm's sLSTM does not contain; only layers with conv1d_kernel_size=0 convert."
            )
        params = _slstm_params(weights, "slstm_cell.", num_heads, with_projections=True)
        scale = _norm_scale(weights, "group_norm.weight", params.hidden_size)
    elif "_recurrent_kernel_" in weights:
        params = _slstm_params(weights, "", num_heads, with_projections=False)
        scale = None
    elif "igate.bias" in weights and "fgate.bias" in weights:
        params = _mlstm_params(weights, num_heads)
        scale = _norm_scale(weights, "outnorm.weight", params.w_q.shape[1])
    else:
        raise ValueError(
            f"Not an xlstm sLSTMLayer, sLSTMCell or mLSTMCell state_dict under prefix "
            f"{prefix!r}: keys {sorted(weights)[:8]}."
        )
    if not return_norm:
        return params
    if scale is None:
        raise ValueError("A bare sLSTMCell has no group norm: return_norm needs an sLSTMLayer.")
    return params, scale


def _get(weights: Mapping[str, Any], key: str) -> np.ndarray:
    if key not in weights:
        raise ValueError(f"Missing weight {key!r}.")
    return _to_numpy(weights[key])


def _check_heads(found: int, num_heads: int | None) -> None:
    if num_heads is not None and num_heads != found:
        raise ValueError(f"num_heads={num_heads}, but the weights have {found} heads.")


def _slstm_params(weights: Mapping[str, Any], cell: str, num_heads: int | None,
                  with_projections: bool) -> SLSTMParams:
    r_int, b_int = _get(weights, cell + "_recurrent_kernel_"), _get(weights, cell + "_bias_")
    if r_int.ndim != 3:
        raise ValueError(f"{cell}_recurrent_kernel_ must be 3-D, got shape {r_int.shape}.")
    heads, head_dim = r_int.shape[0], min(r_int.shape[1:])
    _check_heads(heads, num_heads)
    hidden = heads * head_dim
    if r_int.shape[1:] == (4 * head_dim, head_dim):  # vanilla: R[n, g*D+e, d], b gate-major
        r = r_int.reshape(heads, 4, head_dim, head_dim).transpose(0, 3, 1, 2)
        b = b_int.reshape(-1)
    elif r_int.shape[1:] == (head_dim, 4 * head_dim):  # cuda: R[n, d, g*D+e], b head-major
        r = r_int.reshape(heads, head_dim, 4, head_dim)
        b = b_int.reshape(heads, 4, head_dim).transpose(1, 0, 2).reshape(-1)
    else:
        raise ValueError(f"{cell}_recurrent_kernel_ must be (heads, 4D, D) (vanilla) or "
                         f"(heads, D, 4D) (cuda), got {r_int.shape}.")
    if b_int.size != 4 * hidden:
        raise ValueError(f"{cell}_bias_ must have 4H = {4 * hidden} values, got {b_int.shape}.")
    if not with_projections:  # a bare cell reads the 4H pre-activations, gate-major
        w_x = np.eye(4 * hidden, dtype=r.dtype)
    else:
        w_x = np.zeros((hidden, 4, heads, head_dim), r.dtype)
        for g, name in enumerate(_SLSTM_PROJECTIONS):
            w = _get(weights, f"{name}.weight")  # (heads, out, in): y_k = W[k] @ x_k
            if w.shape != (heads, head_dim, head_dim):
                raise ValueError(f"{name}.weight must be (heads, D, D) = "
                                 f"{(heads, head_dim, head_dim)}, got {w.shape}.")
            if f"{name}.bias" in weights:
                raise ValueError(f"{name} has a bias, which the sLSTMLayer never has.")
            for k in range(heads):
                w_x[k * head_dim:(k + 1) * head_dim, g, k, :] = w[k].T
        w_x = w_x.reshape(hidden, 4 * hidden)
    return SLSTMParams(w_x=jnp.asarray(w_x), r=jnp.asarray(r), b=jnp.asarray(b))


def _mlstm_params(weights: Mapping[str, Any], num_heads: int | None) -> MLSTMParams:
    w_i, b_i = _get(weights, "igate.weight"), _get(weights, "igate.bias")
    w_f, b_f = _get(weights, "fgate.weight"), _get(weights, "fgate.bias")
    if w_i.ndim != 2 or w_i.shape[1] % 3 or w_f.shape != w_i.shape:
        raise ValueError(f"igate.weight and fgate.weight must both be (heads, 3E), got "
                         f"{w_i.shape} and {w_f.shape}.")
    heads, embedding = w_i.shape[0], w_i.shape[1] // 3
    _check_heads(heads, num_heads)
    if embedding % heads:
        raise ValueError(f"embedding_dim {embedding} is not divisible by {heads} heads.")
    if b_i.shape != (heads,) or b_f.shape != (heads,):
        raise ValueError(f"igate.bias and fgate.bias must be ({heads},), got {b_i.shape} and "
                         f"{b_f.shape}.")
    eye = np.eye(embedding, dtype=w_i.dtype)
    zero = np.zeros_like(eye)
    select = [np.concatenate(blocks) for blocks in
              ((eye, zero, zero), (zero, eye, zero), (zero, zero, eye))]
    return MLSTMParams(*(jnp.asarray(a) for a in (*select, w_i.T, b_i, w_f.T, b_f)))


def _norm_scale(weights: Mapping[str, Any], key: str, hidden: int) -> Array:
    if key not in weights:  # group_norm_weight=False: no scale
        return jnp.ones(hidden)
    weight = _get(weights, key)
    if weight.shape != (hidden,):
        raise ValueError(f"{key} must be ({hidden},), got {weight.shape}.")
    return jnp.asarray(1.0 + weight)  # the reference's residual weight: scale = 1 + weight


def head_norm(hs: Array, scale: Array, num_heads: int) -> Array:
    """The reference's `MultiHeadLayerNorm`: each head's features normalised to zero mean and
    unit variance (biased, + 1e-5), then scaled per feature (`jaxlstm.xlstm.blocks.group_norm`
    with the scale instead of its 1 + weight).

    Args:
        hs: (..., H) cell outputs, heads concatenated (as `slstm` and `mlstm` return them).
        scale: (H,), as `from_xlstm(..., return_norm=True)` returns it.
        num_heads: the number of heads H is split into.

    Returns:
        The normalised outputs, shape and dtype of `hs`.
    """
    hidden = hs.shape[-1]
    if hidden % num_heads or scale.shape != (hidden,):
        raise ValueError(f"hs (..., {hidden}) and scale {scale.shape} must have H features, "
                         f"H divisible by num_heads={num_heads}.")
    heads = hs.reshape(hs.shape[:-1] + (num_heads, hidden // num_heads))
    return group_norm(heads, scale - 1.0).astype(hs.dtype)
