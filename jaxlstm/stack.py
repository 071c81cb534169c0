"""Stacked and bidirectional LSTMs, with dropout and residual connections, as pure functions.

A layer is an LSTM (`LSTMParams`, any variant), an sLSTM (`jaxlstm.xlstm.slstm.SLSTMParams`),
a minLSTM (`MinLSTMParams`) or a minGRU (`MinGRUParams`, `jaxlstm.minrnn`); the stack runs each
with its own sequence function and the same conventions.
"""

from __future__ import annotations

from typing import Any, Generic, NamedTuple, TypeVar

import jax
import jax.numpy as jnp

from jaxlstm.cell import LSTMState
from jaxlstm.minrnn.layer import MinCell, check_min_params
from jaxlstm.minrnn.min_gru import MIN_GRU_CELL, MinGRUParams, init_min_gru, min_gru
from jaxlstm.minrnn.min_lstm import (
    MIN_LSTM_CELL,
    MinLSTMParams,
    init_min_lstm,
    min_lstm,
)
from jaxlstm.params import Initializer, LSTMParams, init_lstm
from jaxlstm.regularisation import dropout
from jaxlstm.scan import lstm
from jaxlstm.validation import (
    LayerSizes,
    check_floating,
    check_params,
    check_positive_int,
    check_rate,
)
from jaxlstm.xlstm.slstm import (
    SLSTM_CELL,
    SLSTMParams,
    SLSTMState,
    check_slstm_params,
    init_slstm,
    slstm,
)

Array = jax.Array
T = TypeVar("T")

MERGE_MODES = ("concat", "sum", "none")

# The min cells by their `cell=` name, with their init and sequence functions.
_MIN_CELLS = {
    "min_lstm": (MIN_LSTM_CELL, init_min_lstm, min_lstm),
    "min_gru": (MIN_GRU_CELL, init_min_gru, min_gru),
}
_MIN_PARAMS = (MinLSTMParams, MinGRUParams)


class Directions(NamedTuple, Generic[T]):
    """One value per direction of a layer; `backward` is None in a unidirectional layer.

    Used for a layer's params (`LSTMParams`), states (`LSTMState`), gates and, with
    `merge="none"`, outputs.
    """

    forward: T
    backward: T | None = None


LayerParams = LSTMParams | SLSTMParams | MinLSTMParams | MinGRUParams
StackParams = tuple[Directions[LayerParams], ...]
StackState = tuple[Directions[LSTMState | SLSTMState | Array], ...]


def init_lstm_stack(
    key: Array,
    input_size: int,
    hidden_size: int,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    proj_size: int | None = None,
    cell: str = "lstm",
    dtype: jnp.dtype = jnp.float32,
    forget_bias: float | None = None,
    input_init: Initializer | None = None,
    recurrent_init: Initializer | None = None,
    num_heads: int = 4,
) -> StackParams:
    """Initialises a stack of `num_layers` LSTM layers, each one- or two-directional.

    Layer 0 reads `input_size` features; every later layer reads the previous layer's output,
    R = `proj_size or hidden_size` features, or 2R when bidirectional (the directions are
    concatenated between layers, as in PyTorch). Each direction is `init_lstm(...)` with the
    given options (the cell variant `cell`, the projection `proj_size`, `forget_bias`, default
    1.0) and its own key.

    `cell="slstm"` makes every layer an sLSTM: `init_slstm(..., num_heads=num_heads)` with the
    reference's defaults and layer l's place in the stack for its forget-gate bias
    (`block_index=l`, `num_blocks=num_layers`); `proj_size`, `forget_bias`, `input_init` and
    `recurrent_init` are LSTM options and raise there.

    `cell="min_lstm"` or `cell="min_gru"` makes every layer a minLSTM or minGRU
    (`jaxlstm.init_min_lstm`, `jaxlstm.init_min_gru`: nn.Linear's uniform init); the LSTM
    options raise there too, and `num_heads` is ignored.

    Returns:
        A tuple of `num_layers` `Directions(forward, backward)` of `LSTMParams`.

    Example:
        >>> params = jaxlstm.init_lstm_stack(key, 3, 16, num_layers=2, bidirectional=True)
        >>> params[1].backward.w_x.shape      # layer 1 reads 2 * 16 features
        (32, 64)
    """
    num_layers = check_positive_int(num_layers, "num_layers")
    directions = 2 if bidirectional else 1
    keys = jax.random.split(key, (num_layers, directions))
    lstm_only = {"proj_size": proj_size, "forget_bias": forget_bias, "input_init": input_init,
                 "recurrent_init": recurrent_init}
    if cell in ("slstm", *_MIN_CELLS) and any(v is not None for v in lstm_only.values()):
        given = [name for name, v in lstm_only.items() if v is not None]
        raise ValueError(f"{', '.join(given)} apply to LSTM layers, not to cell={cell!r}.")

    def init_layer(key: Array, layer_input: int, layer: int) -> LayerParams:
        if cell in _MIN_CELLS:
            return _MIN_CELLS[cell][1](key, layer_input, hidden_size, dtype=dtype)
        if cell == "slstm":
            return init_slstm(key, layer_input, hidden_size, num_heads=num_heads, dtype=dtype,
                              block_index=layer, num_blocks=num_layers)
        return init_lstm(key, layer_input, hidden_size, cell=cell, proj_size=proj_size,
                         dtype=dtype, forget_bias=1.0 if forget_bias is None else forget_bias,
                         input_init=input_init, recurrent_init=recurrent_init)

    layers = []
    for layer in range(num_layers):
        layer_input = input_size if layer == 0 else directions * (proj_size or hidden_size)
        per_direction = [init_layer(keys[layer, d], layer_input, layer)
                         for d in range(directions)]
        layers.append(Directions(*per_direction))
    return tuple(layers)


def _min_cell(params: Any) -> MinCell | None:
    """The min cell of a minLSTM's or minGRU's params; None for other layers."""
    return next((c for c, _, _ in _MIN_CELLS.values() if isinstance(params, c.params_type)),
                None)


def _layer_sizes(params: Any, name: str) -> LayerSizes:
    """The sizes of one direction's params, a min cell's, an sLSTM's or an LSTM's."""
    min_cell = _min_cell(params)
    if min_cell is not None:
        input_size, hidden_size = check_min_params(params, min_cell, name)
        return LayerSizes(input_size, hidden_size, hidden_size, min_cell)
    if isinstance(params, SLSTMParams):
        input_size, hidden_size, _ = check_slstm_params(params, name)
        return LayerSizes(input_size, hidden_size, hidden_size, SLSTM_CELL)
    return check_params(params, name)


def _check_stack(params: Any, xs: Array) -> bool:
    """Checks the layers chain up; returns whether they are bidirectional."""
    if isinstance(params, (Directions, LSTMParams, SLSTMParams, *_MIN_PARAMS)):
        raise TypeError(
            "params must be a non-empty tuple of Directions(forward, backward), one per layer, "
            f"got a single {type(params).__name__}: wrap it as (params,)."
        )
    if not isinstance(params, (tuple, list)) or not params:
        raise TypeError(
            "params must be a non-empty tuple of Directions(forward, backward), as returned by "
            f"init_lstm_stack, got {type(params).__name__}."
        )
    bidirectional = None
    features = xs.shape[-1]
    for n, layer in enumerate(params):
        if not isinstance(layer, Directions):
            raise TypeError(
                f"params[{n}] must be Directions(forward, backward), got {type(layer).__name__}."
            )
        if bidirectional is None:
            bidirectional = layer.backward is not None
        elif bidirectional != (layer.backward is not None):
            raise ValueError(
                f"params[{n}] has {1 + (layer.backward is not None)} directions but params[0] "
                f"has {1 + bidirectional}: every layer needs the same number."
            )
        sizes = {_layer_sizes(p, f"params[{n}].{name}")
                 for name, p in layer._asdict().items() if p is not None}
        if len(sizes) > 1:
            described = sorted(f"{s.variant.name} I={s.input_size} H={s.hidden_size} "
                               f"out={s.output_size}" for s in sizes)
            raise ValueError(f"params[{n}]'s directions differ: {described}.")
        (input_size, _, output_size, _), = sizes
        if input_size != features:
            source = "xs has" if n == 0 else f"params[{n - 1}] outputs"
            raise ValueError(
                f"params[{n}] reads {input_size} features but {source} {features}."
            )
        features = output_size * (2 if bidirectional else 1)
    return bool(bidirectional)


_MIN_LAYER_OPTIONS = ("initial_state", "seq_lengths", "reverse", "time_major")
"""What a min layer takes from the stack besides `mode`."""


def _run_min_layer(cell: MinCell, params: Any, xs: Array, n: int, *, return_gates: bool,
                   recurrent_rates: dict[str, float], mode: str = "parallel",
                   **options: Any) -> tuple[Array, Array, None]:
    """One direction of a min layer in the stack: (hs, final_h, None)."""
    refused = [name for name, rate in recurrent_rates.items() if rate]
    refused += ["return_gates"] if return_gates else []
    # An LSTM loop option left at None (the default: "choose for me") does not apply, so it is
    # no error; a value is.
    refused += sorted(k for k, v in options.items()
                      if v is not None and k not in _MIN_LAYER_OPTIONS)
    options = {k: v for k, v in options.items() if k in _MIN_LAYER_OPTIONS}
    if refused:
        raise ValueError(f"{', '.join(refused)} apply to LSTM and sLSTM layers; params[{n}] "
                         f"is a {cell.name} layer.")
    return (*_MIN_CELLS[cell.name][2](params, xs, mode=mode, **options), None)


def lstm_stack(
    params: StackParams,
    xs: Array,
    *,
    initial_state: StackState | None = None,
    seq_lengths: Array | None = None,
    time_major: bool = False,
    merge: str = "concat",
    dropout_rate: float = 0.0,
    input_dropout: float = 0.0,
    output_dropout: float = 0.0,
    residual: bool = False,
    recurrent_dropout: float = 0.0,
    zoneout_h: float = 0.0,
    zoneout_c: float = 0.0,
    key: Array | None = None,
    deterministic: bool = True,
    return_gates: bool = False,
    **lstm_options: Any,
) -> tuple[Any, StackState] | tuple[Any, StackState, tuple[Directions[Any], ...]]:
    """Runs a stack of (bidirectional) LSTM layers over a sequence.

    Layer l runs `jaxlstm.lstm` forwards and, if it has a backward direction, backwards
    (`reverse=True`) over the previous layer's output; the directions' outputs are concatenated
    before the next layer. Variable length follows PyTorch's packed sequences in every layer
    and in the backward direction: each sequence's valid prefix is read backwards, and outputs
    at padded steps are exactly zero throughout.

    Regularisation (only when `deterministic=False`, drawing from `key`): `input_dropout` on
    xs, `dropout_rate` on each layer's output except the last (as PyTorch's `dropout`), and
    `output_dropout` on the final output. All are inverted dropout, so evaluation needs no
    rescaling. `recurrent_dropout`, `zoneout_h` and `zoneout_c` act inside every layer and
    direction, each with its own key (see `jaxlstm.lstm`); with `deterministic=True` zoneout
    uses its expectation. With `residual=True`, each layer after the first whose input and output widths
    are equal adds its input to its output (after dropout on that input).

    Args:
        params: from `init_lstm_stack`: a tuple of `Directions` of `LSTMParams`,
            `SLSTMParams` (an sLSTM layer runs `jaxlstm.xlstm.slstm.slstm`), `MinLSTMParams`
            or `MinGRUParams` (`jaxlstm.min_lstm`, `jaxlstm.min_gru`).
        xs: inputs, (batch..., T, I), or (T, batch..., I) if `time_major`.
        initial_state: a tuple (one per layer) of `Directions` of `LSTMState` (`SLSTMState`
            for an sLSTM layer, the h array (batch..., H) for a min layer); zeros if None.
        seq_lengths: integer array of the batch shape, valid steps per sequence.
        time_major: whether time is the leading axis of `xs` and the outputs.
        merge: how the last layer's directions are returned: "concat" (2H features), "sum"
            (H) or "none" (`Directions(forward, backward)` of H each). Between layers the
            directions are always concatenated.
        dropout_rate: dropout on the output of every layer but the last.
        input_dropout: dropout on the inputs.
        output_dropout: dropout on the final output.
        residual: add each later layer's input to its output where their widths are equal.
        recurrent_dropout: variational dropout on h_{t-1} in every layer (one mask per sequence).
        zoneout_h, zoneout_c: zoneout rates on h and c in every layer. These three are LSTM
            options: with an sLSTM layer in the stack they raise.
        key: PRNG key for dropout, recurrent dropout and zoneout; required when
            `deterministic` is False and a rate is set.
        deterministic: no dropout at all (evaluation). True by default.
        return_gates: also return each layer's and direction's gates (`LSTMGates`, or the
            variant's record).
        **lstm_options: passed to every `jaxlstm.lstm` (and sLSTM) call (`unroll`,
            `fused_backward`, `remat_chunk`), or to every min layer (`mode`, "parallel" or
            "sequential"); an option a layer does not take raises, as do `return_gates`,
            `recurrent_dropout` and zoneout with min layers.

    Returns:
        `(outputs, final_states)`, or `(outputs, final_states, gates)` with `return_gates`.
        `final_states` is a tuple (one per layer) of `Directions` of `LSTMState` (the h
        array for a min layer); `gates` likewise of `LSTMGates`.

    Example:
        >>> params = jaxlstm.init_lstm_stack(key, 3, 16, num_layers=2, bidirectional=True)
        >>> outputs, states = jaxlstm.lstm_stack(params, xs)       # xs: (batch, T, 3)
        >>> outputs.shape, states[1].backward.h.shape               # (batch, T, 32), (batch, 16)
    """
    xs = check_floating(xs, "xs")
    if xs.ndim < 2:
        raise ValueError(f"xs must have rank >= 2, got shape {xs.shape}.")
    bidirectional = _check_stack(params, xs)
    if merge not in MERGE_MODES:
        raise ValueError(f"merge must be one of {list(MERGE_MODES)}, got {merge!r}.")
    rates = {name: check_rate(rate, name) for name, rate in
             (("dropout_rate", dropout_rate), ("input_dropout", input_dropout),
              ("output_dropout", output_dropout))}
    recurrent_rates = {name: check_rate(rate, name) for name, rate in
                       (("recurrent_dropout", recurrent_dropout), ("zoneout_h", zoneout_h),
                        ("zoneout_c", zoneout_c))}
    regularise = not deterministic and any(rates.values())
    regularise_recurrence = not deterministic and any(recurrent_rates.values())
    if (regularise or regularise_recurrence) and key is None:
        raise ValueError("key is required when deterministic=False and a dropout rate, "
                         "recurrent_dropout or zoneout is set.")
    if initial_state is not None and (
        not isinstance(initial_state, (tuple, list)) or len(initial_state) != len(params)
    ):
        raise ValueError(
            f"initial_state must be a tuple of {len(params)} Directions of LSTMState (one per "
            f"layer), got {type(initial_state).__name__}"
            + (f" of length {len(initial_state)}." if isinstance(initial_state, (tuple, list))
               else ".")
        )
    keys = iter(jax.random.split(key, len(params) + 2)) if regularise else None
    # Each layer and direction draws its recurrent masks from its own key.
    recurrent_keys = (jax.random.split(jax.random.fold_in(key, 1), (len(params), 2))
                      if regularise_recurrence else None)

    def maybe_dropout(x: Array, rate: float) -> Array:
        return dropout(next(keys), x, rate) if regularise else x

    def run(p: LayerParams, x: Array, state: Any, reverse: bool, n: int):
        min_cell = _min_cell(p)
        if min_cell is not None:
            return _run_min_layer(min_cell, p, x, n, initial_state=state,
                                  seq_lengths=seq_lengths, reverse=reverse,
                                  time_major=time_major, return_gates=return_gates,
                                  recurrent_rates=recurrent_rates, **lstm_options)
        if "mode" in lstm_options:
            raise ValueError(f"mode applies to minLSTM and minGRU layers; params[{n}] is an "
                             f"{'sLSTM' if isinstance(p, SLSTMParams) else 'LSTM'} layer.")
        common = dict(initial_state=state, seq_lengths=seq_lengths, reverse=reverse,
                      time_major=time_major, return_gates=return_gates, **lstm_options)
        if isinstance(p, SLSTMParams):
            if any(recurrent_rates.values()):
                raise ValueError(
                    "recurrent_dropout, zoneout_h and zoneout_c apply to LSTM layers; "
                    f"params[{n}] is an sLSTM layer."
                )
            out = slstm(p, x, **common)
        else:
            layer_key = recurrent_keys[n, int(reverse)] if regularise_recurrence else None
            out = lstm(p, x, key=layer_key, deterministic=not regularise_recurrence,
                       **recurrent_rates, **common)
        return out if return_gates else (*out, None)

    layer_input = maybe_dropout(xs, rates["input_dropout"])
    final_states, all_gates = [], []
    for n, layer in enumerate(params):
        states = initial_state[n] if initial_state is not None else Directions(None, None)
        hs_f, state_f, gates_f = run(layer.forward, layer_input, states.forward, False, n)
        if bidirectional:
            hs_b, state_b, gates_b = run(layer.backward, layer_input, states.backward, True, n)
            outputs = Directions(hs_f, hs_b)
            final_states.append(Directions(state_f, state_b))
            all_gates.append(Directions(gates_f, gates_b))
        else:
            outputs = Directions(hs_f)
            final_states.append(Directions(state_f))
            all_gates.append(Directions(gates_f))
        if n == len(params) - 1:
            break
        layer_output = jnp.concatenate([o for o in outputs if o is not None], axis=-1)
        layer_output = maybe_dropout(layer_output, rates["dropout_rate"])
        if residual and n > 0 and layer_output.shape[-1] == layer_input.shape[-1]:
            layer_output = layer_output + layer_input
        layer_input = layer_output

    if merge == "none":
        result = outputs
    elif merge == "sum" and bidirectional:
        result = outputs.forward + outputs.backward
    else:
        result = jnp.concatenate([o for o in outputs if o is not None], axis=-1)
    last_has_input_width = merge != "none" and result.shape[-1] == layer_input.shape[-1]
    if residual and len(params) > 1 and last_has_input_width:
        result = result + layer_input
    result = jax.tree.map(lambda o: maybe_dropout(o, rates["output_dropout"]), result)
    if return_gates:
        return result, tuple(final_states), tuple(all_gates)
    return result, tuple(final_states)
