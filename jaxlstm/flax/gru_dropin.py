"""A drop-in for Flax linen's `nn.GRUCell`, computed by jaxlstm's GRU gate functions.

Flax's `nn.GRUCell` step, as `GRUCell` here computes it (with `jaxlstm.gru_family.gates`):

    x, W_i*, b_i*  = promote_dtype(x, ..., dtype)       ints promote to the params' float
    h', W_h*, b_hn = promote_dtype(h, ..., dtype)
    r  = gate_fn(x W_ir + b_ir + h' W_hr)               default sigmoid
    z  = gate_fn(x W_iz + b_iz + h' W_hz)
    n  = activation_fn(x W_in + b_in + r * (h' W_hn + b_hn))     default tanh
    h_new = (1 - z) * n + z * h                         the step's output *is* the new carry

This is PyTorch's convention too (the reset gate multiplies the recurrent term after its
matmul, b_hn inside), so the same weights give `jaxlstm.gru`'s numbers: Flax's biases are
b = (b_ir, b_iz, b_in) and b_hn (PyTorch's b_hr and b_hz are folded into b_ir and b_iz).
(NNX's `nnx.GRUCell` in flax 0.12.8 differs: its recurrent Linear has no bias, so it has no
b_hn, i.e. b_hn = 0.)

The params keep Flax's names and shapes: `ir`, `iz`, `in` each {kernel (I, H), bias (H,)},
`hr`, `hz` each {kernel (H, H)}, `hn` {kernel (H, H), bias (H,)}, each drawn with the key
Flax's `Dense` of that name would use, so the same seed gives the same numbers and a
Flax-trained model's variables load unchanged. `to_gru_params` / `from_gru_params` convert them
to and from `GRUParams`, to run a whole sequence with `jaxlstm.gru` (its fused time loop and
backward) instead of a cell in `nn.RNN`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from jaxlstm.gru_family.gates import gru_pointwise
from jaxlstm.gru_family.params import GRUParams
from jaxlstm.params import Initializer

Array = jax.Array
Dtype = Any

INPUT_BLOCKS = ("ir", "iz", "in")
"""Flax's input-side Dense names, gate order r, z, n; each has a kernel and a bias."""
RECURRENT_BLOCKS = ("hr", "hz", "hn")
"""Flax's recurrent-side Dense names; only `hn` has a bias (b_hn)."""


class _Weights(nn.Module):
    """A Flax `Dense`'s params without its computation: `kernel` (in_features, features),
    then `bias` (features,) if `use_bias`, created in Dense's order (so with Dense's keys)."""

    in_features: int
    features: int
    use_bias: bool
    kernel_init: Initializer
    bias_init: Initializer
    param_dtype: Dtype

    @nn.compact
    def __call__(self) -> tuple[Array, Array | None]:
        kernel = self.param("kernel", self.kernel_init, (self.in_features, self.features),
                            self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        return kernel, bias


class GRUCell(nn.RNNCellBase):
    """One GRU step as a linen `RNNCellBase`: a drop-in for `flax.linen.GRUCell`, in
    `nn.RNN`, `nn.Bidirectional`, `nn.scan` or a Python loop.

    The same attributes, defaults, params (names, shapes, initialisers, keys) and numbers as
    Flax's cell (see the module docstring); the step runs `jaxlstm.gru_family.gates`'
    `gru_pointwise`, the function `jaxlstm.gru_cell` and `jaxlstm.gru`'s time loop run.

    Attributes:
        features: H, the carry's size for `initialize_carry` (the params take H from the
            carry, as Flax's cells do).
        gate_fn: the r and z gates' function (default sigmoid).
        activation_fn: the candidate's function (default tanh).
        kernel_init: initialiser of each input kernel (default LeCun normal).
        recurrent_kernel_init: of each recurrent kernel (default orthogonal).
        bias_init: of each bias (default zeros).
        dtype: computation dtype; None promotes the inputs' and params' dtypes.
        param_dtype: dtype the params are stored in.
        carry_init: initialiser of the carry (default zeros).
    """

    features: int
    gate_fn: Callable[..., Any] = jax.nn.sigmoid
    activation_fn: Callable[..., Any] = jnp.tanh
    kernel_init: Initializer = nn.initializers.lecun_normal()
    recurrent_kernel_init: Initializer = nn.initializers.orthogonal()
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    carry_init: Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, carry: Array, inputs: Array) -> tuple[Array, Array]:
        """`(h, x_t) -> (h', h')`; any leading batch dimensions."""
        h = carry
        hidden = h.shape[-1]

        def weights(name: str, fan_in: int, init: Initializer, use_bias: bool):
            return _Weights(fan_in, hidden, use_bias, init, self.bias_init, self.param_dtype,
                            name=name)()

        inputs_side = [weights(name, inputs.shape[-1], self.kernel_init, True)
                       for name in INPUT_BLOCKS]
        recurrent_side = [weights(name, hidden, self.recurrent_kernel_init, name == "hn")
                          for name in RECURRENT_BLOCKS]
        params = to_gru_params({
            **{name: {"kernel": k, "bias": b} for name, (k, b) in zip(INPUT_BLOCKS, inputs_side)},
            **{name: {"kernel": k} for name, (k, _) in zip(RECURRENT_BLOCKS[:2],
                                                           recurrent_side[:2])},
            "hn": {"kernel": recurrent_side[2][0], "bias": recurrent_side[2][1]},
        })
        x, w_x, b = promote_dtype(inputs, params.w_x, params.b, dtype=self.dtype)
        h_in, w_h, b_hn = promote_dtype(h, params.w_h, params.b_hn, dtype=self.dtype)
        new_h = gru_pointwise(x @ w_x, h_in @ w_h, h, b, b_hn, gate_fn=self.gate_fn,
                              activation_fn=self.activation_fn)
        return new_h, new_h

    @nn.nowrap
    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> Array:
        """h by `carry_init` (default zeros), (batch..., features), for inputs of shape
        (batch..., I)."""
        return self.carry_init(rng, tuple(input_shape[:-1]) + (self.features,), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


def to_gru_params(cell_params: Mapping[str, Any]) -> GRUParams:
    """A Flax `GRUCell`'s params (this module's or `flax.linen.GRUCell`'s) as `GRUParams`,
    for `jaxlstm.gru` / `jaxlstm.gru_cell`: w_x = [ir | iz | in] kernels,
    w_h = [hr | hz | hn] kernels, b = (ir, iz, in) biases, b_hn = hn's bias.

    Example:
        >>> params = to_gru_params(variables["params"]["cell"])   # an nn.RNN(GRUCell(H))
        >>> hs, h = jaxlstm.gru(params, xs)
    """
    try:
        return GRUParams(
            w_x=jnp.concatenate([cell_params[n]["kernel"] for n in INPUT_BLOCKS], axis=-1),
            w_h=jnp.concatenate([cell_params[n]["kernel"] for n in RECURRENT_BLOCKS], axis=-1),
            b=jnp.concatenate([cell_params[n]["bias"] for n in INPUT_BLOCKS], axis=-1),
            b_hn=cell_params["hn"]["bias"],
        )
    except (KeyError, TypeError) as error:
        raise ValueError(
            "cell_params must be a Flax GRUCell's params: ir, iz, in each {kernel, bias}, hr, hz "
            f"each {{kernel}}, hn {{kernel, bias}}; got {_describe(cell_params)}."
        ) from error


def from_gru_params(params: GRUParams) -> dict[str, dict[str, Array]]:
    """`GRUParams` as a Flax `GRUCell`'s params (the inverse of `to_gru_params`, exact)."""
    w_x = jnp.split(params.w_x, 3, axis=-1)
    w_h = jnp.split(params.w_h, 3, axis=-1)
    b = jnp.split(params.b, 3, axis=-1)
    cell = {name: {"kernel": k, "bias": bias} for name, k, bias in zip(INPUT_BLOCKS, w_x, b)}
    cell.update({name: {"kernel": k} for name, k in zip(RECURRENT_BLOCKS, w_h)})
    cell["hn"]["bias"] = params.b_hn
    return cell


def _describe(tree: Any) -> str:
    if isinstance(tree, Mapping):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in tree.items()) + "}"
    shape = getattr(tree, "shape", None)
    return str(tuple(shape)) if shape is not None else type(tree).__name__
