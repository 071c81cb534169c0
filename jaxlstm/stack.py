"""Stacked and bidirectional recurrent layers, with dropout and residual connections, as pure
functions over the family protocol (`jaxlstm.family`).

A layer is the params of any registered family, and the layers of one stack may be of
different families: the stack runs each with its family's `apply`, gives each layer the
options its family declares, and refuses an option that no layer's family declares, naming the
families that take it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import jax
import jax.numpy as jnp

from jaxlstm import family as families
from jaxlstm.params import Initializer
from jaxlstm.regularisation import dropout
from jaxlstm.validation import check_floating, check_positive_int, check_rate

Array = jax.Array
T = TypeVar("T")

MERGE_MODES = ("concat", "sum", "none")


class Directions(NamedTuple, Generic[T]):
    """One value per direction of a layer; `backward` is None in a unidirectional layer.

    Used for a layer's params (a family's params), states (its state), gates and, with
    `merge="none"`, outputs.
    """

    forward: T
    backward: T | None = None


LayerParams = Any
"""One direction of a layer: the params of a registered family (`jaxlstm.family.of`)."""
StackParams = tuple[Directions[LayerParams], ...]
StackState = tuple[Directions[Any], ...]
"""One `Directions` per layer of the states its family's `apply` returns."""


def init_lstm_stack(
    key: Array,
    input_size: int,
    hidden_size: int,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    proj_size: int | None = None,
    cell: str | Sequence[str] = "lstm",
    dtype: jnp.dtype = jnp.float32,
    forget_bias: float | None = None,
    input_init: Initializer | None = None,
    recurrent_init: Initializer | None = None,
    num_heads: int = 4,
) -> StackParams:
    """Initialises a stack of `num_layers` recurrent layers, each one- or two-directional.

    Layer 0 reads `input_size` features; every later layer reads the previous layer's output
    (its family's output width, e.g. `proj_size or hidden_size`), twice that when
    bidirectional (the directions are concatenated between layers, as in PyTorch). Each
    direction is its family's `init` (`jaxlstm.family`) with its own key.

    `cell` names the layers' family, or one per layer (a sequence of `num_layers` names, the
    first for layer 0): a registered family's name
    (`jaxlstm.family.names()`) or one of the names a family answers to (the LSTM's variants,
    "peephole", ...; `jaxlstm.family.resolve`). The other options go to every layer whose
    family declares them, and raise when no layer's family does ("proj_size apply to LSTM
    layers, not to cell=..."): `proj_size`, `forget_bias` (default: the family's),
    `input_init`, `recurrent_init`, `dtype`, `num_heads`; a family that declares
    `block_index` and `num_blocks` (its init depends on the layer's place in the stack) gets
    `block_index=l`, `num_blocks=num_layers`.

    Returns:
        A tuple of `num_layers` `Directions(forward, backward)` of the families' params.

    Example:
        >>> params = jaxlstm.init_lstm_stack(key, 3, 16, num_layers=2, bidirectional=True)
        >>> params[1].backward.w_x.shape      # layer 1 reads 2 * 16 features
        (32, 64)
    """
    num_layers = check_positive_int(num_layers, "num_layers")
    cells = (cell,) * num_layers if isinstance(cell, str) else tuple(cell)
    if len(cells) != num_layers:
        raise ValueError(f"cell must be a name or {num_layers} names (num_layers), got "
                         f"{len(cells)}: {list(cells)}.")
    directions = 2 if bidirectional else 1
    keys = jax.random.split(key, (num_layers, directions))
    given = {name: value for name, value in (
        ("proj_size", proj_size), ("forget_bias", forget_bias), ("input_init", input_init),
        ("recurrent_init", recurrent_init)) if value is not None}

    layer_families = [families.resolve(layer_cell) for layer_cell in cells]
    # An option goes to the layers whose family declares it; one that no layer takes raises.
    refused = [name for name in given
               if not any(name in family.init_options for family, _ in layer_families)]
    if refused:
        labels = list(dict.fromkeys(label for name in refused
                                    for label in families.takers(name, "init")))
        raise ValueError(f"{', '.join(refused)} apply to {families.join(labels)} layers, not to "
                         f"cell={cell if isinstance(cell, str) else tuple(cell)!r}.")

    layers, layer_input = [], input_size
    for layer, (family, implied) in enumerate(layer_families):
        placement = {"num_heads": num_heads, "dtype": dtype, "block_index": layer,
                     "num_blocks": num_layers}
        options = {**implied, **{name: value for name, value in {**given, **placement}.items()
                                 if name in family.init_options}}
        per_direction = [family.init(keys[layer, d], layer_input, hidden_size, **options)
                         for d in range(directions)]
        layers.append(Directions(*per_direction))
        layer_input = directions * family.sizes(per_direction[0], f"params[{layer}]")[1]
    return tuple(layers)


def _check_stack(params: Any, xs: Array) -> bool:
    """Checks the layers chain up; returns whether they are bidirectional."""
    if isinstance(params, Directions) or families.find(params) is not None:
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
        sizes = {}
        for name, p in layer._asdict().items():
            if p is not None:
                family = families.of(p, f"params[{n}].{name}")
                sizes[name] = (family.label, *family.sizes(p, f"params[{n}].{name}"))
        if len({size[1:] for size in sizes.values()}) > 1:
            raise ValueError(f"params[{n}]'s directions differ: " + ", ".join(
                f"{name} {label} I={i} out={o}" for name, (label, i, o) in sizes.items()) + ".")
        _, input_size, output_size = sizes["forward"]
        if input_size != features:
            source = "xs has" if n == 0 else f"params[{n - 1}] outputs"
            raise ValueError(
                f"params[{n}] reads {input_size} features but {source} {features}."
            )
        features = output_size * (2 if bidirectional else 1)
    return bool(bidirectional)


def _layer_options(family: families.Family, n: int, options: dict[str, Any],
                   return_gates: bool, anywhere: set[str]) -> dict[str, Any]:
    """The options layer n's family takes. One that no layer's family takes (not in
    `anywhere`), a mode the family does not have, or return_gates for a family without gates
    raises, naming the layer."""
    try:
        families.check_options(family, {k: v for k, v in options.items()
                                        if k != "mode" and k not in anywhere})
        if "mode" not in anywhere or family.modes:  # else the mode is another layer's
            families.check_mode(family, options.get("mode"))
        if return_gates and family.apply_with_gates is None:
            labels = [f.label for f in map(families.get, families.names())
                      if f.apply_with_gates is not None]
            raise ValueError(f"return_gates applies to {families.join(labels)} layers, not to "
                             f"{family.label} (family {family.name!r}).")
    except ValueError as error:
        raise ValueError(f"params[{n}]: {error}") from None
    return {k: v for k, v in options.items() if k in _takes(family)}


def _takes(family: families.Family) -> set[str]:
    """The options a family's `apply` takes beyond the protocol's: its declared ones, and
    `mode` when it has forms."""
    return family.apply_options | ({"mode"} if family.modes else set())


def _options_taken(params: StackParams, options: dict[str, Any]) -> set[str]:
    """The options (with a value) that some layer's family of the stack takes."""
    taken = set().union(*(_takes(families.of(p)) for layer in params for p in layer
                          if p is not None))
    return {k for k, v in options.items() if v is not None and k in taken}


def lstm_stack(
    params: StackParams,
    xs: Array,
    *,
    initial_state: StackState | None = None,
    seq_lengths: Array | None = None,
    resets: Array | None = None,
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
    """Runs a stack of (bidirectional) recurrent layers over a sequence.

    Layer l runs its family's `apply` (`jaxlstm.family`; `jaxlstm.lstm` for an LSTM layer)
    forwards and, if it has a backward direction, backwards (`reverse=True`) over the previous
    layer's output; the directions' outputs are concatenated before the next layer. Variable
    length follows PyTorch's packed sequences in every layer and in the backward direction:
    each sequence's valid prefix is read backwards, and outputs at padded steps are exactly
    zero throughout.

    Regularisation (only when `deterministic=False`, drawing from `key`): `input_dropout` on
    xs, `dropout_rate` on each layer's output except the last (as PyTorch's `dropout`), and
    `output_dropout` on the final output. All are inverted dropout, so evaluation needs no
    rescaling. `recurrent_dropout`, `zoneout_h` and `zoneout_c` act inside every layer and
    direction, each with its own key (see `jaxlstm.lstm`); with `deterministic=True` zoneout
    uses its expectation. With `residual=True`, each layer after the first whose input and output widths
    are equal adds its input to its output (after dropout on that input).

    Args:
        params: from `init_lstm_stack`: a tuple of `Directions` of the params of
            registered families, any family per layer.
        xs: inputs, (batch..., T, I), or (T, batch..., I) if `time_major`.
        initial_state: a tuple (one per layer) of `Directions` of each family's state (as
            `final_states` returns them); each family's zeros if None.
        seq_lengths: integer array of the batch shape, valid steps per sequence.
        resets: bool (batch..., T), True at the first step of each segment (packed
            documents): every layer and direction runs each segment as if alone, from its
            initial state (`jaxlstm.family`'s `resets`).
        time_major: whether time is the leading axis of `xs` and the outputs.
        merge: how the last layer's directions are returned: "concat" (2H features), "sum"
            (H) or "none" (`Directions(forward, backward)` of H each). Between layers the
            directions are always concatenated.
        dropout_rate: dropout on the output of every layer but the last.
        input_dropout: dropout on the inputs.
        output_dropout: dropout on the final output.
        residual: add each later layer's input to its output where their widths are equal.
        recurrent_dropout: variational dropout on h_{t-1} in every layer (one mask per sequence).
        zoneout_h, zoneout_c: zoneout rates on h and c in every layer. These three go to
            the layers whose family declares them, like `**lstm_options`.
        key: PRNG key for dropout, recurrent dropout and zoneout; required when
            `deterministic` is False and a rate is set.
        deterministic: no dropout at all (evaluation). True by default.
        return_gates: also return each layer's and direction's gates (its family's
            `apply_with_gates`; a family without one raises).
        **lstm_options: passed to every layer's `apply` (`unroll`, `fused_backward`,
            `remat_chunk`, `mode`, `chunk_size`, ...): each goes to the layers whose family
            declares it; one that no layer's family declares raises, naming the families that
            take it, as does a mode a layer's family does not have.

    Returns:
        `(outputs, final_states)`, or `(outputs, final_states, gates)` with `return_gates`.
        `final_states` is a tuple (one per layer) of `Directions` of each family's final
        state; `gates` likewise.

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
            f"initial_state must be a tuple of {len(params)} Directions of states (one per "
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

    # Rates of zero are "not given" (a family without them takes the stack's defaults); a
    # rate that is set goes to every layer, with deterministic=True its expectation (zoneout).
    recurrent_options = {name: rate for name, rate in recurrent_rates.items() if rate}

    anywhere = _options_taken(params, {**lstm_options, **recurrent_options})

    def run(p: LayerParams, x: Array, state: Any, reverse: bool, n: int):
        family = families.of(p)
        options = _layer_options(family, n, {**lstm_options, **recurrent_options},
                                 return_gates, anywhere)
        if recurrent_options:
            options["deterministic"] = not regularise_recurrence
        if regularise_recurrence:
            options["key"] = recurrent_keys[n, int(reverse)]
        apply = family.apply_with_gates if return_gates else family.apply
        if resets is not None:
            options["resets"] = resets
        out = apply(p, x, initial_state=state, seq_lengths=seq_lengths, reverse=reverse,
                    time_major=time_major, **options)
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
