"""One linen and one NNX module over the family protocol: `Recurrent`, a stack of any
registered family's layers (`jaxlstm.lstm_stack`), one family per layer if wanted.

    model = linen.Recurrent(hidden_size=64, cell=name, num_layers=2,       # any family name
                            init_options={"num_heads": 4}, apply_options={"mode": mode})
    outputs = model.apply(variables, xs, seq_lengths=lengths)
    model = nnx.Recurrent(3, 64, cell=(name_0, name_1), num_layers=2, rngs=nnx.Rngs(0))

The weights are stored by layer and direction under the field names of each family's params
NamedTuple, {"layer_0": {"forward": {"w_x": ..., ...}, "backward": ...}, ...} (nested
NamedTuples as nested dicts, None fields left out): for an LSTM layer the layout of the LSTM
modules (`jaxlstm.flax.params`). `to_stack_params` rebuilds the functional API's stack from
them (the same arrays), given the module's cells and sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxlstm import family as families
from jaxlstm.family import Family
from jaxlstm.flax.params import cast_for_compute
from jaxlstm.stack import Directions, init_lstm_stack, lstm_stack

Array = jax.Array
Dtype = Any


def params_to_dict(params: Any) -> Any:
    """A stack's (or one layer's) params as nested dicts: NamedTuple fields by name, None
    fields left out, layers as "layer_n" and directions as "forward" / "backward"."""
    if isinstance(params, (tuple, list)) and all(isinstance(x, Directions) for x in params):
        return {f"layer_{n}": params_to_dict(layer) for n, layer in enumerate(params)}
    if hasattr(params, "_asdict"):
        return {name: params_to_dict(value) for name, value in params._asdict().items()
                if value is not None}
    return params


def dict_to_params(tree: Mapping[str, Any], like: Any) -> Any:
    """The inverse of `params_to_dict`, shaped as `like` (params, or their `jax.eval_shape`)."""
    if isinstance(like, (tuple, list)) and all(isinstance(x, Directions) for x in like):
        return tuple(dict_to_params(tree[f"layer_{n}"], layer) for n, layer in enumerate(like))
    if hasattr(like, "_asdict"):
        return type(like)(**{name: None if value is None else dict_to_params(tree[name], value)
                             for name, value in like._asdict().items()})
    return tree


def state_in_compute_dtype(family: Family, params: Any, state: Any, dtype: Dtype) -> Any:
    """`state` cast to the dtype the family keeps its state in when computing in `dtype`:
    its `initial_state`'s for that dtype (wider than `dtype` where the family keeps a wider
    state, so casting loses nothing the family would keep)."""
    zeros = jax.eval_shape(lambda p: family.initial_state(p, (), dtype), params)
    state_dtype = jnp.result_type(*jax.tree.leaves(zeros))
    return jax.tree.map(lambda a: jnp.asarray(a).astype(state_dtype), state)


def _stack_state_in_compute_dtype(params: Any, state: Any, dtype: Dtype) -> Any:
    """A stack's initial state, each layer's and direction's as its family keeps it when
    computing in `dtype` (`state_in_compute_dtype`); a state not shaped as the stack's (one
    `Directions` per layer) is cast whole, for `lstm_stack` to refuse with its message."""
    if not (isinstance(state, (tuple, list)) and len(state) == len(params)
            and all(isinstance(s, Directions) for s in state)):
        return cast_for_compute(dtype, state)
    return tuple(Directions(*(None if s is None or p is None
                              else state_in_compute_dtype(families.of(p), p, s, dtype)
                              for p, s in zip(layer, layer_state)))
                 for layer, layer_state in zip(params, state))


def _init_stack(key: Array, in_features: int, hidden_size: int, cell: Any, num_layers: int,
                bidirectional: bool, param_dtype: Dtype, init_options: Mapping | None) -> Any:
    return init_lstm_stack(key, in_features, hidden_size, num_layers=num_layers,
                           bidirectional=bidirectional, cell=cell, dtype=param_dtype,
                           **dict(init_options or {}))


def _run(params: Any, inputs: Array, *, dtype: Dtype | None, seq_lengths: Any,
         initial_state: Any, time_major: bool, merge: str, dropout: float, residual: bool,
         apply_options: Mapping | None, key: Array | None, deterministic: bool,
         return_state: bool) -> Any:
    params, inputs = cast_for_compute(dtype, (params, inputs))
    if dtype is not None and initial_state is not None:
        initial_state = _stack_state_in_compute_dtype(params, initial_state, dtype)
    outputs, state = lstm_stack(params, inputs, initial_state=initial_state,
                                seq_lengths=seq_lengths, time_major=time_major, merge=merge,
                                dropout_rate=dropout, residual=residual, key=key,
                                deterministic=deterministic, **dict(apply_options or {}))
    return (outputs, state) if return_state else outputs


def _training(deterministic: bool, dropout: float, apply_options: Mapping | None) -> bool:
    rates = ("recurrent_dropout", "zoneout_h", "zoneout_c")
    return not deterministic and bool(dropout or any((apply_options or {}).get(r)
                                                     for r in rates))


class Recurrent(nn.Module):
    """A stack of recurrent layers of any registered family as a linen module
    (`jaxlstm.lstm_stack` over `jaxlstm.init_lstm_stack`'s params).

    Attributes:
        hidden_size: H per direction.
        cell: a family or LSTM variant name, or one per layer (`init_lstm_stack`'s `cell`).
        num_layers, bidirectional: the stack's shape.
        dropout: dropout on each layer's output except the last.
        residual, merge: as `lstm_stack`'s.
        init_options: further keywords of `init_lstm_stack` (`num_heads`, `proj_size`, ...),
            each going to the layers whose family declares it.
        apply_options: further keywords of `lstm_stack` (`mode`, `chunk_size`, `unroll`,
            `recurrent_dropout`, `zoneout_h`, ...), likewise.
        time_major: inputs are (T, batch..., I) rather than (batch..., T, I).
        dtype: computation dtype; None keeps the params' and inputs'.
        param_dtype: dtype the params are stored in.
    """

    hidden_size: int
    cell: Any = "lstm"
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    residual: bool = False
    merge: str = "concat"
    init_options: Any = None
    apply_options: Any = None
    time_major: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, inputs: Array, *, seq_lengths: Array | None = None,
                 initial_state: Any = None, deterministic: bool = True,
                 return_state: bool = False) -> Any:
        """The outputs (batch..., T, F), and the final states (`lstm_stack`'s) with
        `return_state`. With `deterministic=False` the dropout masks draw from the 'dropout'
        rng."""
        cell = self.cell if isinstance(self.cell, str) else tuple(self.cell)

        def init(key: Array) -> Any:
            return _init_stack(key, inputs.shape[-1], self.hidden_size, cell, self.num_layers,
                               self.bidirectional, self.param_dtype, self.init_options)

        like = jax.eval_shape(init, jax.random.key(0))
        tree = {name: self.param(name, lambda key, name=name: params_to_dict(init(key))[name])
                for name in params_to_dict(like)}
        training = _training(deterministic, self.dropout, self.apply_options)
        return _run(dict_to_params(tree, like), inputs, dtype=self.dtype,
                    seq_lengths=seq_lengths, initial_state=initial_state,
                    time_major=self.time_major, merge=self.merge, dropout=self.dropout,
                    residual=self.residual, apply_options=self.apply_options,
                    key=self.make_rng("dropout") if training else None,
                    deterministic=not training, return_state=return_state)


def _as_variables(tree: Any) -> Any:
    """Nested dicts of arrays as `nnx.Dict`s of `nnx.Param`s."""
    if isinstance(tree, Mapping):
        return nnx.Dict({name: _as_variables(value) for name, value in tree.items()})
    return nnx.Param(tree)


def _values(tree: Any) -> Any:
    if isinstance(tree, Mapping) or hasattr(tree, "items"):
        return {name: _values(value) for name, value in tree.items()}
    return tree[...]


class NnxRecurrent(nnx.Module):
    """`Recurrent` as an NNX module (exported as `jaxlstm.flax.nnx.Recurrent`): the same
    attributes as keywords, plus `in_features` and `rngs` (its 'params' stream initialises;
    the dropout masks draw from the `rngs`, an `nnx.Rngs` or a key, given to the call).
    The weights are `nnx.Param`s in the layout of `Recurrent`'s params."""

    def __init__(self, in_features: int, hidden_size: int, *, cell: Any = "lstm",
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 residual: bool = False, merge: str = "concat", init_options: Any = None,
                 apply_options: Any = None, time_major: bool = False,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs):
        cell = cell if isinstance(cell, str) else tuple(cell)
        stack = _init_stack(rngs.params(), in_features, hidden_size, cell, num_layers,
                            bidirectional, param_dtype, init_options)
        self.weights = _as_variables(params_to_dict(stack))
        self._like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), stack)
        self.dropout, self.residual, self.merge = dropout, residual, merge
        self.apply_options = dict(apply_options or {})
        self.time_major, self.dtype = time_major, dtype

    def params(self) -> Any:
        """The weights as `init_lstm_stack`'s params (the same arrays)."""
        return dict_to_params(_values(self.weights), self._like)

    def __call__(self, inputs: Array, *, seq_lengths: Array | None = None,
                 initial_state: Any = None, deterministic: bool = True,
                 return_state: bool = False, rngs: Any = None) -> Any:
        training = _training(deterministic, self.dropout, self.apply_options)
        key = None
        if training:
            if rngs is None:
                raise ValueError("rngs (an nnx.Rngs with a 'dropout' stream, or a key) is "
                                 "required when deterministic=False and a dropout rate is set.")
            key = rngs if isinstance(rngs, jax.Array) else rngs.dropout()
        return _run(self.params(), inputs, dtype=self.dtype, seq_lengths=seq_lengths,
                    initial_state=initial_state, time_major=self.time_major, merge=self.merge,
                    dropout=self.dropout, residual=self.residual,
                    apply_options=self.apply_options, key=key, deterministic=not training,
                    return_state=return_state)
