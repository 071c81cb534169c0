"""Flax linen modules over the functional core: a cell for `nn.RNN` and a full-sequence LSTM.

    cell = LSTMCell(features=64)                  # drop-in for nn.LSTMCell / OptimizedLSTMCell
    rnn = nn.RNN(cell)                            # seq_lengths, reverse, keep_order, ...
    model = LSTM(hidden_size=64, num_layers=2, bidirectional=True, dropout=0.1)
    outputs = model.apply(variables, xs, seq_lengths=lengths)   # jaxlstm's fast path

Both store their weights under the `LSTMParams` field names (see `jaxlstm.flax.params`), so
`to_lstm_params(variables["params"])` hands them to `jaxlstm.lstm_stack` without a copy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core.scope import LazyRng
from flax.nnx.nn.dtypes import promote_dtype

from jaxlstm.flax import dropin
from jaxlstm.flax.carry import check_carry_format, from_flax_carry, to_flax_carry
from jaxlstm.flax.params import (
    arrange_outputs,
    cast_for_compute,
    check_module_options,
    to_lstm_params,
    to_module_params,
)
from jaxlstm.params import Initializer, init_lstm
from jaxlstm.stack import lstm_stack
from jaxlstm.variants import variant_named

Array = jax.Array
Dtype = Any


class LSTMCell(nn.RNNCellBase):
    """One LSTM step as a linen `RNNCellBase`: a drop-in for `nn.LSTMCell` and
    `nn.OptimizedLSTMCell`, in `nn.RNN`, `nn.Bidirectional`, `nn.scan` or a Python loop.

    Computes `jaxlstm.lstm_cell` (any cell variant) with Flax's semantics: the carry is
    `(c, h)`, the hidden size is read from the carry when the params are created (as Flax's
    cells do; `features` sizes `initialize_carry`), integer inputs promote to the params'
    float dtype, and the output is the new h, in the carry's dtype. The attributes Flax's cells
    take come first, with Flax's meaning; jaxlstm's own follow.

    Attributes:
        features: H, the carry's size for `initialize_carry`.
        gate_fn, activation_fn: the gates' and the candidate's / output's activations (default
            sigmoid and tanh, which run `jaxlstm.lstm_cell`; others compose the same gate
            functions with the given activations, standard cell only).
        kernel_init: initialiser of each gate's input kernel block (default LeCun normal).
        recurrent_kernel_init: of each gate's recurrent block (default orthogonal).
        bias_init: of each gate's bias block (default zeros); `forget_bias` is added.
        dtype: computation dtype; None promotes the inputs' and params' dtypes.
        param_dtype: dtype the params are stored in.
        carry_init: initialiser of the carry (default zeros).
        cell: the variant: "lstm", "peephole", "cifg", "layer_norm" or "retained_readout".
        proj_size: P, to project h (LSTMP), or None.
        forget_bias: added to the forget gate's initial bias; None means 1.0, or 0.0 (Flax's)
            with `flax_compatible`.
        flax_compatible: True (or "LSTMCell" / "OptimizedLSTMCell", which linen initialises
            alike) initialises exactly as Flax's cell: the same numbers for the same seed. The
            params keep jaxlstm's layout (`w_x`, `w_h`, `b`).
    """

    features: int
    gate_fn: Callable[..., Any] = jax.nn.sigmoid
    activation_fn: Callable[..., Any] = jnp.tanh
    kernel_init: Initializer = dropin.LECUN_NORMAL
    recurrent_kernel_init: Initializer = dropin.ORTHOGONAL
    bias_init: Initializer = dropin.ZEROS
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    carry_init: Initializer = nn.initializers.zeros_init()
    cell: str = "lstm"
    proj_size: int | None = None
    forget_bias: float | None = None
    flax_compatible: bool | str = False

    def _init(self, key: Array, in_features: int, hidden: int) -> dict[str, Any]:
        flax_cell = dropin.flax_cell_name(self.flax_compatible)
        forget_bias = dropin.default_forget_bias(self.forget_bias, flax_cell)
        if flax_cell is None:
            bias_init = None if self.bias_init is dropin.ZEROS else self.bias_init
            return to_module_params(init_lstm(
                key, in_features, hidden, cell=self.cell, proj_size=self.proj_size,
                dtype=self.param_dtype, forget_bias=forget_bias, input_init=self.kernel_init,
                recurrent_init=self.recurrent_kernel_init, bias_init=bias_init,
            ))
        dropin.check_flax_init(flax_cell, self.cell, self.proj_size)
        # Flax also calls this under eval_shape at apply time (to check shapes), without a
        # 'params' rng: any key does then.
        rng = self.scope.rngs.get("params", key)
        return to_module_params(dropin.flax_init(
            _linen_keys(rng), in_features, hidden, fused=False,
            kernel_init=self.kernel_init, recurrent_kernel_init=self.recurrent_kernel_init,
            bias_init=self.bias_init, param_dtype=self.param_dtype, forget_bias=forget_bias,
        ))

    @nn.compact
    def __call__(self, carry: tuple[Array, Array], inputs: Array) -> tuple[tuple[Array, Array],
                                                                            Array]:
        """`((c, h), x_t) -> ((c', h'), h')`; any leading batch dimensions."""
        variant = variant_named(self.cell)
        c, h = carry
        hidden = c.shape[-1]
        if self.proj_size is None and h.shape[-1] != hidden:
            raise ValueError(
                f"carry's c and h must have the same size without proj_size, got c "
                f"{tuple(c.shape)} and h {tuple(h.shape)}."
            )
        names = ["w_x", "w_h", "b"]
        if variant.weight_shapes(1):
            names.append("cell")
        if self.proj_size is not None:
            names.append("w_p")
        in_features = inputs.shape[-1]
        layer = {
            name: self.param(name, lambda key, name=name: self._init(key, in_features,
                                                                     hidden)[name])
            for name in names
        }
        return dropin.step(to_lstm_params(layer), carry, inputs, dtype=self.dtype,
                           gate_fn=self.gate_fn, activation_fn=self.activation_fn,
                           promote_dtype=promote_dtype)

    @nn.nowrap
    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> tuple[Array, Array]:
        """`(c, h)` by `carry_init` (default zeros) for inputs of shape (batch..., I)."""
        batch = tuple(input_shape[:-1])
        key_c, key_h = jax.random.split(rng)
        c = self.carry_init(key_c, batch + (self.features,), self.param_dtype)
        h = self.carry_init(key_h, batch + (self.proj_size or self.features,), self.param_dtype)
        return c, h

    @property
    def num_feature_axes(self) -> int:
        return 1


class OptimizedLSTMCell(LSTMCell):
    """`LSTMCell` under the name of Flax's other cell: swapping `nn.OptimizedLSTMCell` for it
    keeps the names linen generates for unnamed modules (`OptimizedLSTMCell_0`), so a
    Flax-trained model's params (through `jaxlstm.flax.from_flax_model`) still line up."""


def _linen_keys(rng: Any) -> Iterator[Array]:
    """The keys a linen `LSTMCell` in this scope gives its kernels and biases, in the order
    `dropin.flax_init` takes them: the child `Dense` named `ii` draws its kernel's key as
    fold_in(scope rng, "ii", 1), `hi` its kernel's and bias's with 1 and 2."""
    for gate in "ifgo":
        yield LazyRng.create(rng, f"i{gate}", 1).as_jax_rng()
    for gate in "ifgo":
        yield LazyRng.create(rng, f"h{gate}", 1).as_jax_rng()
        yield LazyRng.create(rng, f"h{gate}", 2).as_jax_rng()


class LSTM(nn.Module):
    """A multi-layer, optionally bidirectional LSTM over whole sequences: `jaxlstm.lstm_stack`.

    The whole sequence runs in jaxlstm's time loop (chunked input projections and the fused
    backward), not step by step through `nn.RNN`. Params are stored as
    {"layer_0": {"forward": {...}, "backward": {...}}, ...} under `LSTMParams`' field names.

    Attributes:
        hidden_size: H per direction.
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
        sow_gates: sow every layer's gates as `intermediates` / "gates".
        dtype: computation dtype; None promotes the inputs' and params' dtypes.
        param_dtype: dtype the params are stored in.
        carry_format: "jaxlstm" (a `Directions` of `LSTMState(h, c)` per layer) or "flax"
            (`nn.RNN`'s `(c, h)`, `nn.Bidirectional`'s pair of them; see
            `jaxlstm.flax.carry`), for `initial_carry` and the returned carry.
    """

    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout_h: float = 0.0
    zoneout_c: float = 0.0
    residual: bool = False
    merge: str = "concat"
    cell: str = "lstm"
    proj_size: int | None = None
    forget_bias: float = 1.0
    kernel_init: Initializer | None = None
    recurrent_kernel_init: Initializer | None = None
    time_major: bool = False
    unroll: int | bool | None = None
    remat_chunk: int | None = None
    sow_gates: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    carry_format: str = "jaxlstm"

    def _init_layer(self, key: Array, layer: int, in_features: int) -> dict[str, Any]:
        directions = 2 if self.bidirectional else 1
        if layer > 0:
            in_features = directions * (self.proj_size or self.hidden_size)
        params = [
            init_lstm(k, in_features, self.hidden_size, cell=self.cell, proj_size=self.proj_size,
                      dtype=self.param_dtype, forget_bias=self.forget_bias,
                      input_init=self.kernel_init, recurrent_init=self.recurrent_kernel_init)
            for k in jax.random.split(key, directions)
        ]
        return dict(zip(("forward", "backward"), map(to_module_params, params)))

    @nn.compact
    def __call__(
        self,
        inputs: Array,
        *,
        seq_lengths: Array | None = None,
        initial_carry: Any = None,
        deterministic: bool = True,
        return_carry: bool = False,
        return_gates: bool = False,
    ) -> Any:
        """Runs the stack over `inputs` (batch..., T, I) (or (T, batch..., I) if time_major).

        Args:
            inputs: the sequences.
            seq_lengths: integer array of the batch shape; outputs past each length are zero
                and the carry is the state after the last valid step.
            initial_carry: as the returned carry; zeros if None.
            deterministic: no dropout; zoneout as its expectation. Otherwise the masks draw
                from the 'dropout' rng.
            return_carry: also return the final states.
            return_gates: also return every layer's gates.

        Returns:
            `outputs`, or `(carry, outputs)` with `return_carry`, with `gates` appended when
            `return_gates`. `carry` is a tuple (one per layer) of `Directions` of `LSTMState`,
            as `jaxlstm.lstm_stack` returns, or Flax's format with `carry_format="flax"`.
        """
        check_module_options(self.num_layers, self.merge, self.dropout, self.recurrent_dropout,
                             self.zoneout_h, self.zoneout_c)
        variant_named(self.cell)
        check_carry_format(self.carry_format)
        if self.carry_format == "flax" and initial_carry is not None:
            initial_carry = from_flax_carry(initial_carry, num_layers=self.num_layers,
                                            bidirectional=self.bidirectional)
        in_features = inputs.shape[-1]
        tree = {
            f"layer_{n}": self.param(f"layer_{n}", functools.partial(
                self._init_layer, layer=n, in_features=in_features))
            for n in range(self.num_layers)
        }
        params: tuple[Any, ...] = to_lstm_params(tree)
        params, inputs, initial_carry = cast_for_compute(self.dtype, (params, inputs, initial_carry))
        training = not deterministic and any(
            (self.dropout, self.recurrent_dropout, self.zoneout_h, self.zoneout_c))
        gates_wanted = return_gates or self.sow_gates
        result = lstm_stack(
            params, inputs, initial_state=initial_carry, seq_lengths=seq_lengths,
            time_major=self.time_major, merge=self.merge, dropout_rate=self.dropout,
            recurrent_dropout=self.recurrent_dropout, zoneout_h=self.zoneout_h,
            zoneout_c=self.zoneout_c, residual=self.residual,
            key=self.make_rng("dropout") if training else None, deterministic=not training,
            return_gates=gates_wanted, unroll=self.unroll, remat_chunk=self.remat_chunk,
        )
        if self.sow_gates:
            self.sow("intermediates", "gates", result[2])
        if self.carry_format == "flax":
            result = (result[0], to_flax_carry(result[1]), *result[2:])
        return arrange_outputs(result, return_carry, return_gates)


from jaxlstm.flax.layer import Layer  # one layer of any family, over the protocol
from jaxlstm.flax.named_linen import MLSTM, SLSTM, MinGRU, MinLSTM  # families by name
from jaxlstm.flax.recurrent import Recurrent  # any family's stack, over the protocol

__all__ = ["LSTM", "MLSTM", "SLSTM", "LSTMCell", "Layer", "MinGRU", "MinLSTM",
           "OptimizedLSTMCell", "Recurrent",
           "to_lstm_params", "to_module_params"]
