"""Flax NNX modules over the functional core: a cell for `nnx.RNN` and a full-sequence LSTM.

    cell = LSTMCell(3, 64, rngs=nnx.Rngs(0))                      # for nnx.RNN
    model = LSTM(3, 64, num_layers=2, bidirectional=True, dropout=0.1, rngs=nnx.Rngs(0))
    outputs = model(xs, seq_lengths=lengths)                     # jaxlstm's fast path

Weights are `nnx.Param`s named after `LSTMParams`' fields (a layer's `w_x`, `w_h`, `b`, `cell`,
`w_p`; a stack's `layer_0.forward...`), so `nnx.state(model, nnx.Param)` has the layout of
`jaxlstm.flax.params`, and `model.lstm_params()` hands the same arrays to `jaxlstm.lstm_stack`.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype as flax_promote_dtype

from jaxlstm.flax import dropin
from jaxlstm.flax.carry import check_carry_format, from_flax_carry, to_flax_carry
from jaxlstm.flax.params import arrange_outputs, cast_for_compute, check_module_options
from jaxlstm.params import Initializer, LSTMParams, init_lstm
from jaxlstm.stack import Directions, StackParams, lstm_stack
from jaxlstm.variants import variant_named, variant_of

Array = jax.Array
Dtype = Any


class _CellWeights(nnx.Module):
    """A variant's own weights (`PeepholeWeights`, ...) as `nnx.Param`s of the same names."""

    def __init__(self, weights: Any):
        for name, value in weights._asdict().items():
            setattr(self, name, nnx.Param(value))


class _Weights(nnx.Module):
    """One layer's (one direction's) weights, `nnx.Param`s named after `LSTMParams`' fields."""

    def __init__(self, params: LSTMParams, metadata: Mapping[str, Mapping[str, Any]] | None = None):
        metadata = metadata or {}
        self.variant = variant_of(params.cell).name
        self.w_x = nnx.Param(params.w_x, **metadata.get("w_x", {}))
        self.w_h = nnx.Param(params.w_h, **metadata.get("w_h", {}))
        self.b = nnx.Param(params.b, **metadata.get("b", {}))
        has_weights = params.cell is not None and bool(params.cell._fields)
        self.cell = _CellWeights(params.cell) if has_weights else None
        self.w_p = nnx.Param(params.w_p) if params.w_p is not None else None

    def lstm_params(self) -> LSTMParams:
        """The weights as `LSTMParams` (the same arrays)."""
        variant = variant_named(self.variant)
        cell = None
        if variant.weights_type is not None:
            fields = variant.weights_type._fields
            cell = variant.weights_type(*(getattr(self.cell, name)[...] for name in fields))
        w_p = None if self.w_p is None else self.w_p[...]
        return LSTMParams(self.w_x[...], self.w_h[...], self.b[...], cell, w_p)

    def load_lstm_params(self, params: LSTMParams) -> None:
        """Sets the weights from `params` (same variant and shapes)."""
        if variant_of(params.cell).name != self.variant:
            raise ValueError(
                f"params are for cell {variant_of(params.cell).name!r}, this module's is "
                f"{self.variant!r}."
            )
        for name in ("w_x", "w_h", "b", "w_p"):
            value = getattr(params, name)
            if (value is None) != (getattr(self, name) is None):
                raise ValueError(f"params.{name} is {'' if value is None else 'not '}None, "
                                 "unlike this module's.")
            if value is not None:
                _set(getattr(self, name), value, f"params.{name}")
        if self.cell is not None:
            for name, value in params.cell._asdict().items():
                _set(getattr(self.cell, name), value, f"params.cell.{name}")


def _set(param: nnx.Param, value: Array, name: str) -> None:
    if param[...].shape != value.shape:
        raise ValueError(f"{name} must have shape {param[...].shape}, got {value.shape}.")
    param[...] = value


def _key(rngs: Any) -> Array:
    """A key from an `nnx.Rngs` ('dropout' stream), an `RngStream`, or a key itself."""
    if isinstance(rngs, nnx.Rngs):
        return rngs["dropout"]()
    if isinstance(rngs, nnx.RngStream):
        return rngs()
    return rngs


class LSTMCell(_Weights, nnx.RNNCellBase):
    """One LSTM step as an NNX `RNNCellBase`: a drop-in for `nnx.LSTMCell` and
    `nnx.OptimizedLSTMCell`, in `nnx.RNN`, `nnx.Bidirectional` or a Python loop.

    Computes `jaxlstm.lstm_cell` (any cell variant) with Flax's semantics: the carry is
    `(c, h)`, integer inputs promote to the params' float dtype, and the output is the new h,
    in the carry's dtype. Takes every argument Flax's cells take, with Flax's meaning, and
    jaxlstm's own after them.

    Args:
        in_features: I.
        hidden_features: H.
        gate_fn, activation_fn: the gates' and the candidate's / output's activations (default
            sigmoid and tanh, which run `jaxlstm.lstm_cell`; others compose the same gate
            functions with the given activations, standard cell only).
        kernel_init, recurrent_kernel_init, bias_init: initialisers of each gate's input
            kernel, recurrent kernel and bias blocks (LeCun normal, orthogonal, zeros);
            `forget_bias` is added to the forget gate's bias.
        dtype: computation dtype; None promotes the inputs' and params' dtypes.
        param_dtype: dtype the params are stored in.
        carry_init: the default initialiser of `initialize_carry` (zeros if None).
        promote_dtype: how inputs and params meet a dtype, Flax's `promote_dtype` by default.
        keep_rngs: keep a fork of `rngs.carry` for `initialize_carry` (deprecated in Flax).
        rngs: `nnx.Rngs` with a 'params' stream.
        kernel_metadata, recurrent_kernel_metadata, bias_metadata: metadata of the `w_x`,
            `w_h` and `b` params (e.g. sharding names), as Flax sets them on its kernels.
        cell: the variant: "lstm", "peephole", "cifg", "layer_norm" or "retained_readout".
        proj_size: P, to project h (LSTMP), or None.
        forget_bias: added to the forget gate's initial bias; None means 1.0, or 0.0 (Flax's)
            with `flax_compatible`.
        flax_compatible: True or "LSTMCell" initialises exactly as `nnx.LSTMCell` (a kernel
            per gate), "OptimizedLSTMCell" as `nnx.OptimizedLSTMCell` (one fused kernel): the
            same numbers from the same `rngs`. The params keep jaxlstm's layout.
    """

    flax_name = "LSTMCell"
    """The Flax cell `flax_compatible=True` initialises as."""

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
        cell: str = "lstm",
        proj_size: int | None = None,
        forget_bias: float | None = None,
        flax_compatible: bool | str = False,
    ):
        flax_cell = dropin.flax_cell_name(flax_compatible, type(self).flax_name)
        forget = dropin.default_forget_bias(forget_bias, flax_cell)
        if flax_cell is None:
            params = init_lstm(
                rngs.params(), in_features, hidden_features, cell=cell, proj_size=proj_size,
                dtype=param_dtype, forget_bias=forget, input_init=kernel_init,
                recurrent_init=recurrent_kernel_init,
                bias_init=None if bias_init is dropin.ZEROS else bias_init,
            )
        else:
            dropin.check_flax_init(flax_cell, cell, proj_size)
            params = dropin.flax_init(
                (rngs.params() for _ in itertools.count()), in_features, hidden_features,
                fused=flax_cell == "OptimizedLSTMCell", kernel_init=kernel_init,
                recurrent_kernel_init=recurrent_kernel_init, bias_init=bias_init,
                param_dtype=param_dtype, forget_bias=forget,
            )
        super().__init__(params, metadata={"w_x": kernel_metadata,
                                           "w_h": recurrent_kernel_metadata,
                                           "b": bias_metadata})
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.proj_size = proj_size
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.promote_dtype = promote_dtype
        self.carry_init = carry_init
        if keep_rngs:
            warnings.warn("keep_rngs is deprecated in Flax: pass rngs to initialize_carry.",
                          DeprecationWarning, stacklevel=2)
            self.rngs = rngs.carry.fork()
        else:
            self.rngs = nnx.data(None)

    def __call__(self, carry: tuple[Array, Array], inputs: Array) -> tuple[tuple[Array, Array],
                                                                          Array]:
        """`((c, h), x_t) -> ((c', h'), h')`; any leading batch dimensions."""
        return dropin.step(self.lstm_params(), carry, inputs, dtype=self.dtype,
                           gate_fn=self.gate_fn, activation_fn=self.activation_fn,
                           promote_dtype=self.promote_dtype)

    def initialize_carry(
        self,
        input_shape: tuple[int, ...],
        rngs: nnx.Rngs | nnx.RngStream | None = None,
        carry_init: Initializer | None = None,
    ) -> tuple[Array, Array]:
        """`(c, h)` for inputs of shape (batch..., I), as Flax's cells make it.

        `carry_init` (else the constructor's, else zeros) draws c and then h from the
        'carry' stream of `rngs` (else of the kept rngs). Zeros need no rngs.
        """
        init = carry_init or self.carry_init
        stream = self.rngs if rngs is None else rngs
        if isinstance(stream, nnx.Rngs):
            stream = stream.carry
        if stream is None:
            if init is not None:
                raise ValueError("RNGs must be provided to initialize the cell carry.")
            init, stream = nnx.initializers.zeros_init(), lambda: jax.random.key(0)
        init = init or nnx.initializers.zeros_init()
        batch = tuple(input_shape[:-1])
        c = init(stream(), batch + (self.hidden_features,), self.param_dtype)
        h = init(stream(), batch + (self.proj_size or self.hidden_features,), self.param_dtype)
        return c, h

    @property
    def num_feature_axes(self) -> int:
        return 1


class OptimizedLSTMCell(LSTMCell):
    """`LSTMCell` under the name of Flax's other cell; `flax_compatible=True` initialises as
    `nnx.OptimizedLSTMCell` does (one fused kernel each for W_x and W_h)."""

    flax_name = "OptimizedLSTMCell"


class _Layer(nnx.Module):
    def __init__(self, forward: LSTMParams, backward: LSTMParams | None):
        self.forward = _Weights(forward)
        self.backward = None if backward is None else _Weights(backward)


class LSTM(nnx.Module):
    """A multi-layer, optionally bidirectional LSTM over whole sequences: `jaxlstm.lstm_stack`.

    Args:
        in_features: I.
        hidden_features: H per direction.
        num_layers: stacked layers.
        bidirectional: run a backward direction too; directions concatenate between layers.
        dropout: dropout on each layer's output except the last (PyTorch's `dropout`).
        recurrent_dropout: variational dropout on h_{t-1}, one mask per sequence.
        zoneout_h, zoneout_c: zoneout rates on h and c (their expectation when deterministic).
        residual: add each later layer's input to its output where the widths match.
        merge: how the last layer's directions are returned: "concat", "sum" or "none".
        cell: the cell variant. proj_size: LSTMP projection size, or None.
        forget_bias, kernel_init, recurrent_kernel_init: initialisation, as `LSTMCell`'s.
        time_major: inputs are (T, batch..., I) rather than (batch..., T, I).
        unroll, remat_chunk: passed to `jaxlstm.lstm`.
        dtype: computation dtype; None promotes the inputs' and params' dtypes.
        param_dtype: dtype the params are stored in.
        deterministic: the default for `__call__`'s `deterministic` (as `nnx.Dropout`).
        carry_format: "jaxlstm" or "flax", as the linen `LSTM`'s.
        rngs: `nnx.Rngs`: 'params' for initialisation; its 'dropout' stream (forked) draws
            the masks when a rate is set.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout_h: float = 0.0,
        zoneout_c: float = 0.0,
        residual: bool = False,
        merge: str = "concat",
        cell: str = "lstm",
        proj_size: int | None = None,
        forget_bias: float = 1.0,
        kernel_init: Initializer | None = None,
        recurrent_kernel_init: Initializer | None = None,
        time_major: bool = False,
        unroll: int | bool | None = None,
        remat_chunk: int | None = None,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        deterministic: bool = False,
        carry_format: str = "jaxlstm",
        rngs: nnx.Rngs,
    ):
        check_module_options(num_layers, merge, dropout, recurrent_dropout, zoneout_h,
                             zoneout_c)
        check_carry_format(carry_format)
        self.carry_format = carry_format
        self.bidirectional = bidirectional
        self.num_layers = num_layers
        directions = 2 if bidirectional else 1
        keys = jax.random.split(rngs.params(), (self.num_layers, directions))
        for n in range(self.num_layers):
            width = in_features if n == 0 else directions * (proj_size or hidden_features)
            per_direction = [
                init_lstm(keys[n, d], width, hidden_features, cell=cell, proj_size=proj_size,
                          dtype=param_dtype, forget_bias=forget_bias, input_init=kernel_init,
                          recurrent_init=recurrent_kernel_init)
                for d in range(directions)
            ]
            setattr(self, f"layer_{n}", _Layer(*per_direction, *([None] * (2 - directions))))
        self.rates = (float(dropout), float(recurrent_dropout), float(zoneout_h),
                      float(zoneout_c))
        self.residual = residual
        self.merge = merge
        self.time_major = time_major
        self.unroll = unroll
        self.remat_chunk = remat_chunk
        self.dtype = dtype
        self.deterministic = deterministic
        self.rngs = rngs["dropout"].fork() if any(self.rates) else nnx.data(None)

    def lstm_params(self) -> StackParams:
        """The weights as the stack params of `jaxlstm.lstm_stack` (the same arrays)."""
        layers = []
        for n in range(self.num_layers):
            layer = getattr(self, f"layer_{n}")
            backward = None if layer.backward is None else layer.backward.lstm_params()
            layers.append(Directions(layer.forward.lstm_params(), backward))
        return tuple(layers)

    def load_lstm_params(self, params: StackParams) -> None:
        """Sets the weights from stack params of the same shape."""
        if len(params) != self.num_layers:
            raise ValueError(f"params has {len(params)} layers, this module {self.num_layers}.")
        for n, directions in enumerate(params):
            layer = getattr(self, f"layer_{n}")
            if (directions.backward is None) != (layer.backward is None):
                raise ValueError(f"params[{n}] and this module differ in directions.")
            layer.forward.load_lstm_params(directions.forward)
            if layer.backward is not None:
                layer.backward.load_lstm_params(directions.backward)

    def __call__(
        self,
        inputs: Array,
        *,
        seq_lengths: Array | None = None,
        initial_carry: Any = None,
        deterministic: bool | None = None,
        return_carry: bool = False,
        return_gates: bool = False,
        rngs: nnx.Rngs | nnx.RngStream | Array | None = None,
    ) -> Any:
        """Runs the stack; arguments and results as `jaxlstm.flax.linen.LSTM.__call__`.

        `deterministic` (default: the attribute) turns off dropout and uses zoneout's
        expectation; otherwise masks draw from `rngs` if given, else the stream forked at
        construction.
        """
        deterministic = self.deterministic if deterministic is None else deterministic
        training = not deterministic and any(self.rates)
        key = None
        if training:
            source = rngs if rngs is not None else self.rngs
            if source is None:
                raise ValueError("deterministic is False and a rate is set, but no rngs.")
            key = _key(source)
        if self.carry_format == "flax" and initial_carry is not None:
            initial_carry = from_flax_carry(initial_carry, num_layers=self.num_layers,
                                            bidirectional=self.bidirectional)
        params, inputs, initial_carry = cast_for_compute(self.dtype,
                                              (self.lstm_params(), inputs, initial_carry))
        dropout, recurrent_dropout, zoneout_h, zoneout_c = self.rates
        result = lstm_stack(
            params, inputs, initial_state=initial_carry, seq_lengths=seq_lengths,
            time_major=self.time_major, merge=self.merge, dropout_rate=dropout,
            recurrent_dropout=recurrent_dropout, zoneout_h=zoneout_h, zoneout_c=zoneout_c,
            residual=self.residual, key=key, deterministic=not training,
            return_gates=return_gates, unroll=self.unroll, remat_chunk=self.remat_chunk,
        )
        if self.carry_format == "flax":
            result = (result[0], to_flax_carry(result[1]), *result[2:])
        return arrange_outputs(result, return_carry, return_gates)


from jaxlstm.flax.gru_dropin_nnx import GRUCell  # nnx.GRUCell's drop-in
from jaxlstm.flax.layer import NnxLayer as Layer  # one layer of any family
from jaxlstm.flax.named_nnx import MLSTM, SLSTM, MinGRU, MinLSTM  # families by name
from jaxlstm.flax.recurrent import NnxRecurrent as Recurrent  # any family's stack

__all__ = ["LSTM", "MLSTM", "SLSTM", "GRUCell", "LSTMCell", "Layer", "MinGRU", "MinLSTM",
           "OptimizedLSTMCell", "Recurrent"]
