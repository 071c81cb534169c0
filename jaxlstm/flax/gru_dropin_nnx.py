"""A drop-in for Flax NNX's `nnx.GRUCell`, computed by jaxlstm's GRU gate functions.

`nnx.GRUCell` (flax 0.12.8) holds two `nnx.Linear`s, `dense_i` (I -> 3H, with a bias) and
`dense_h` (H -> 3H, without one), gate blocks r, z, n along their outputs. Its step, as
`GRUCell` here computes it (with `jaxlstm.gru_family.gates.gru_pointwise`):

    x, W_x, b  = promote_dtype((x, dense_i.kernel, dense_i.bias), dtype)   ints -> params' float
    h', W_h    = promote_dtype((h, dense_h.kernel, None), dtype)
    r  = gate_fn(x W_xr + b_r + h' W_hr)                default sigmoid
    z  = gate_fn(x W_xz + b_z + h' W_hz)
    n  = activation_fn(x W_xn + b_n + r * (h' W_hn))    default tanh
    h_new = (1 - z) * n + z * h                         the step's output *is* the new carry

That is `jaxlstm.gru`'s cell (PyTorch's form: the reset gate multiplies the recurrent term after
its matmul) with b_hn = 0: NNX's recurrent Linear has no bias, unlike linen's `nn.GRUCell`
(whose `hn` Dense has one; `jaxlstm.flax.GRUCell` is that cell's drop-in). So the kernels and
the bias are `GRUParams`' w_x, w_h and b as they stand, and `GRUCell.gru_params()` hands them
(with b_hn = 0) to `jaxlstm.gru` for whole sequences.

The params are Flax's `nnx.Linear`s themselves, made with the same arguments in the same order,
so names (`dense_i.kernel`, `dense_i.bias`, `dense_h.kernel`), shapes, initialisers, metadata
and the keys drawn from `rngs.params` are Flax's by construction: the same `nnx.Rngs` gives the
same params bit for bit, and `nnx.state(flax_cell)` loads into this cell unchanged. The step
reads their arrays and runs `gru_pointwise`, the function `jaxlstm.gru_cell` and `jaxlstm.gru`'s
time loop run; the Linears' own `__call__` is not used.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype as flax_promote_dtype

from jaxlstm.flax import dropin
from jaxlstm.gru_family.gates import NUM_GATES, gru_pointwise
from jaxlstm.gru_family.params import GRUParams
from jaxlstm.gru_family.validation import check_gru_params
from jaxlstm.params import Initializer
from jaxlstm.validation import shape_str

Array = jax.Array
Dtype = Any


class GRUCell(nnx.RNNCellBase):
    """One GRU step as an NNX `RNNCellBase`: a drop-in for `flax.nnx.GRUCell`, in `nnx.RNN`,
    `nnx.Bidirectional` or a Python loop.

    The same constructor, attributes, params (names, shapes, initialisers, metadata, keys) and
    numbers as Flax's cell (see the module docstring); the step runs `jaxlstm.gru_family.gates`'
    `gru_pointwise` with the given `gate_fn` and `activation_fn`.

    Args:
        in_features: I.
        hidden_features: H.
        gate_fn: the r and z gates' function (default sigmoid).
        activation_fn: the candidate's function (default tanh).
        kernel_init: initialiser of `dense_i.kernel`, (I, 3H) in one call (LeCun normal).
        recurrent_kernel_init: of `dense_h.kernel`, (H, 3H) in one call (orthogonal).
        bias_init: of `dense_i.bias`, (3H,) (zeros).
        dtype: computation dtype; None promotes the inputs' and params' dtypes.
        param_dtype: dtype the params are stored in.
        carry_init: the default initialiser of `initialize_carry` (zeros if None; Flax warns
            that it belongs in `initialize_carry`, and so does this cell).
        promote_dtype: how inputs and params meet a dtype, Flax's `promote_dtype` by default.
        keep_rngs: keep a fork of `rngs.carry` for `initialize_carry` (deprecated in Flax).
        rngs: `nnx.Rngs` with a 'params' stream.
        kernel_metadata, recurrent_kernel_metadata, bias_metadata: metadata of
            `dense_i.kernel`, `dense_h.kernel` and `dense_i.bias` (e.g. sharding names).

    Example:
        >>> cell = GRUCell(3, 8, rngs=nnx.Rngs(0))      # as nnx.GRUCell(3, 8, rngs=...)
        >>> ys = nnx.RNN(cell)(jnp.ones((2, 5, 3)))     # (2, 5, 8)
        >>> hs, h = jaxlstm.gru(cell.gru_params(), jnp.ones((2, 5, 3)))   # the same numbers
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        gate_fn: Callable[..., Any] = jax.nn.sigmoid,
        activation_fn: Callable[..., Any] = jnp.tanh,
        kernel_init: Initializer = dropin.LECUN_NORMAL,
        recurrent_kernel_init: Initializer = dropin.ORTHOGONAL,
        bias_init: Initializer = dropin.ZEROS,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        carry_init: Initializer | None = None,
        promote_dtype: dropin.PromoteDtype = flax_promote_dtype,
        keep_rngs: bool = False,
        rngs: nnx.Rngs,
        kernel_metadata: Mapping[str, Any] = MappingProxyType({}),
        recurrent_kernel_metadata: Mapping[str, Any] = MappingProxyType({}),
        bias_metadata: Mapping[str, Any] = MappingProxyType({}),
    ):
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.promote_dtype = promote_dtype
        if keep_rngs:
            # Flax's warning, in Flax's category (UserWarning), so code that filters it still does.
            warnings.warn("keep_rngs argument is deprecated. Please use rngs argument in "
                          "__call__ instead ", stacklevel=2)
            self.rngs = rngs.carry.fork()
        else:
            self.rngs = nnx.data(None)
        width = NUM_GATES * hidden_features  # gate blocks r, z, n
        self.dense_i = nnx.Linear(
            in_features, width, use_bias=True, kernel_init=kernel_init, bias_init=bias_init,
            dtype=dtype, param_dtype=param_dtype, promote_dtype=promote_dtype, rngs=rngs,
            kernel_metadata=kernel_metadata, bias_metadata=bias_metadata,
        )
        self.dense_h = nnx.Linear(
            hidden_features, width, use_bias=False, kernel_init=recurrent_kernel_init,
            dtype=dtype, param_dtype=param_dtype, promote_dtype=promote_dtype, rngs=rngs,
            kernel_metadata=recurrent_kernel_metadata,
        )
        if carry_init:
            warnings.warn(
                "carry_init is provided in __init__. Please, use carry_init argument in "
                "`initialize_carry` method instead to initialize the carry. Otherwise, two "
                "instances with same configuration but different carry_init functions will "
                "have different graphdefs.", stacklevel=2)
        self.carry_init = carry_init

    def __call__(self, carry: Array, inputs: Array) -> tuple[Array, Array]:
        """`(h, x_t) -> (h', h')`; any leading batch dimensions.

        Args:
            carry: h_{t-1}, shape (..., H).
            inputs: x_t, shape (..., I).

        Returns:
            The new carry h_t and the step's output, the same array: in the promoted dtype
            of the computation and the carry, as Flax's.
        """
        h = carry
        self._check_features(h, inputs)
        x, w_x, b = self.promote_dtype(
            (inputs, self.dense_i.kernel[...], self.dense_i.bias[...]), dtype=self.dtype)
        h_in, w_h, _ = self.promote_dtype((h, self.dense_h.kernel[...], None), dtype=self.dtype)
        new_h = gru_pointwise(x @ w_x, h_in @ w_h, h, b, _zero_b_hn(w_h),
                              gate_fn=self.gate_fn, activation_fn=self.activation_fn)
        return new_h, new_h

    def initialize_carry(
        self,
        input_shape: tuple[int, ...],
        rngs: nnx.Rngs | nnx.RngStream | None = None,
        carry_init: Initializer | None = None,
    ) -> Array:
        """h for inputs of shape (batch..., I): (batch..., H), in `param_dtype`, as Flax's cell
        makes it.

        `carry_init` (else the constructor's, else zeros) draws h with one key from the
        'carry' stream of `rngs` (else of the kept rngs). Zeros need no rngs (Flax's cell
        asks for them even then).
        """
        init = carry_init or self.carry_init
        stream = self.rngs if rngs is None else rngs
        if isinstance(stream, nnx.Rngs):
            stream = stream.carry
        if stream is None:
            if init is not None:
                raise ValueError("RNGs must be provided to initialize the cell carry.")
            return jnp.zeros(tuple(input_shape[:-1]) + (self.hidden_features,),
                             self.param_dtype)
        init = init or nnx.initializers.zeros_init()
        return init(stream(), tuple(input_shape[:-1]) + (self.hidden_features,),
                    self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1

    def gru_params(self) -> GRUParams:
        """The weights as `GRUParams` for `jaxlstm.gru` / `jaxlstm.gru_cell`: w_x =
        `dense_i.kernel`, w_h = `dense_h.kernel`, b = `dense_i.bias` (the same arrays) and
        b_hn = 0 (NNX's recurrent Linear has no bias)."""
        w_h = self.dense_h.kernel[...]
        return GRUParams(self.dense_i.kernel[...], w_h, self.dense_i.bias[...],
                         _zero_b_hn(w_h))

    def load_gru_params(self, params: GRUParams) -> None:
        """Sets the weights from `GRUParams` of this cell's sizes (w_x (I, 3H), w_h (H, 3H),
        b (3H,)). Their b_hn must be zero: Flax's NNX cell has nowhere to keep it (checked
        where b_hn is concrete, i.e. outside `jit`)."""
        sizes = tuple(check_gru_params(params))
        if sizes != (self.in_features, self.hidden_features):
            raise ValueError(
                f"params are for input_size {sizes[0]} and hidden_size {sizes[1]}, this cell's "
                f"in_features {self.in_features} and hidden_features {self.hidden_features}.")
        _check_b_hn_is_zero(params.b_hn)
        self.dense_i.kernel[...] = params.w_x
        self.dense_i.bias[...] = params.b
        self.dense_h.kernel[...] = params.w_h

    def _check_features(self, h: Array, inputs: Array) -> None:
        # Flax's cell fails inside dot_general for these, naming neither argument.
        for name, value, attribute in (("inputs", inputs, "in_features"),
                                       ("carry", h, "hidden_features")):
            size, shape = getattr(self, attribute), jnp.shape(value)
            if shape[-1:] != (size,):
                raise ValueError(f"{name} must have shape (..., {size}) ({attribute} {size}), "
                                 f"got {shape_str(shape)}.")


def _zero_b_hn(w_h: Array) -> Array:
    return jnp.zeros(w_h.shape[:1], w_h.dtype)


def _check_b_hn_is_zero(b_hn: Array) -> None:
    try:
        largest = float(np.max(np.abs(np.asarray(b_hn)), initial=0.0))
    except jax.errors.TracerArrayConversionError:
        return
    if largest != 0.0:
        raise ValueError(
            "params.b_hn must be zero: flax.nnx.GRUCell has no recurrent bias (its dense_h has "
            f"use_bias=False), got max |b_hn| = {largest:g}. Use jaxlstm.flax.GRUCell (linen, "
            "whose hn Dense keeps b_hn) or run jaxlstm.gru directly.")
