"""Flax linen modules over the functional core: a cell for `nn.RNN` and a full-sequence LSTM.

    cell = LSTMCell(features=64)                  # drop-in for nn.OptimizedLSTMCell
    rnn = nn.RNN(cell)                            # seq_lengths, reverse, keep_order, ...
    model = LSTM(hidden_size=64, num_layers=2, bidirectional=True, dropout=0.1)
    outputs = model.apply(variables, xs, seq_lengths=lengths)   # jaxlstm's fast path

Both store their weights under the `LSTMParams` field names (see `jaxlstm.flax.params`), so
`to_lstm_params(variables["params"])` hands them to `jaxlstm.lstm_stack` without a copy.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlstm.cell import LSTMState
from jaxlstm.flax.params import (
    arrange_outputs,
    cast_for_compute,
    check_module_options,
    to_lstm_params,
    to_module_params,
)
from jaxlstm.params import Initializer, init_lstm
from jaxlstm.stack import lstm_stack
from jaxlstm.step import lstm_cell
from jaxlstm.variants import variant_named

Array = jax.Array
Dtype = Any


class LSTMCell(nn.RNNCellBase):
    """One LSTM step as a linen `RNNCellBase`, for `nn.RNN` and `nn.Bidirectional`.

    Computes `jaxlstm.lstm_cell` for any cell variant. The carry is Flax's `(c, h)`; c has
    `features` units and h `proj_size or features`.

    Attributes:
        features: H, the number of hidden units.
        cell: the variant: "lstm", "peephole", "cifg", "layer_norm" or "retained_readout".
        proj_size: P, to project h (LSTMP), or None.
        forget_bias: initial forget-gate bias.
        kernel_init: initialiser of each gate's input kernel block (default LeCun normal).
        recurrent_kernel_init: of each gate's recurrent block (default orthogonal).
        dtype: computation dtype; None promotes the inputs' and params' dtypes.
        param_dtype: dtype the params are stored in (initialised in float32, then cast).
        carry_init: initialiser of the carry.
    """

    features: int
    cell: str = "lstm"
    proj_size: int | None = None
    forget_bias: float = 1.0
    kernel_init: Initializer | None = None
    recurrent_kernel_init: Initializer | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    carry_init: Initializer = nn.initializers.zeros_init()

    def _init(self, key: Array, in_features: int) -> dict[str, Any]:
        return to_module_params(init_lstm(
            key, in_features, self.features, cell=self.cell, proj_size=self.proj_size,
            dtype=self.param_dtype, forget_bias=self.forget_bias, input_init=self.kernel_init,
            recurrent_init=self.recurrent_kernel_init,
        ))

    @nn.compact
    def __call__(self, carry: tuple[Array, Array], inputs: Array) -> tuple[tuple[Array, Array],
                                                                            Array]:
        """`((c, h), x_t) -> ((c', h'), h')`; any leading batch dimensions."""
        variant = variant_named(self.cell)
        names = ["w_x", "w_h", "b"]
        if variant.weight_shapes(1):
            names.append("cell")
        if self.proj_size is not None:
            names.append("w_p")
        in_features = inputs.shape[-1]
        layer = {
            name: self.param(name, lambda key, name=name: self._init(key, in_features)[name])
            for name in names
        }
        c, h = carry
        params, inputs, (c_in, h_in) = cast_for_compute(
            self.dtype, (to_lstm_params(layer), inputs, carry))
        state, h_t = lstm_cell(params, LSTMState(h=h_in, c=c_in), inputs)
        # The carry keeps its dtype (a scan needs that); the output is in the compute dtype.
        return (state.c.astype(c.dtype), state.h.astype(h.dtype)), h_t

    @nn.nowrap
    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> tuple[Array, Array]:
        """Zeros (by `carry_init`) `(c, h)` for inputs of shape (batch..., I)."""
        batch = tuple(input_shape[:-1])
        key_c, key_h = jax.random.split(rng)
        c = self.carry_init(key_c, batch + (self.features,), self.param_dtype)
        h = self.carry_init(key_h, batch + (self.proj_size or self.features,), self.param_dtype)
        return c, h

    @property
    def num_feature_axes(self) -> int:
        return 1


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
            as `jaxlstm.lstm_stack` returns.
        """
        check_module_options(self.num_layers, self.merge, self.dropout, self.recurrent_dropout,
                             self.zoneout_h, self.zoneout_c)
        variant_named(self.cell)
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
        return arrange_outputs(result, return_carry, return_gates)


__all__ = ["LSTM", "LSTMCell", "to_lstm_params", "to_module_params"]
