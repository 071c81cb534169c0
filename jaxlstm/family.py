"""What a recurrent family is, and the registry of them.

A family is a recurrent layer written as pure functions over its own named pytrees (the LSTM
and its variants, the sLSTM, the mLSTM, minLSTM, minGRU). Code above the families (stacks,
blocks, Flax modules, the runner, decoding) should need nothing but this protocol:

    params        = family.init(key, input_size, hidden_size, **init_options)
    state         = family.initial_state(params, batch_shape, dtype)
    outputs, last = family.apply(params, xs, initial_state=..., seq_lengths=..., reverse=...,
                                 time_major=..., mode=..., resets=..., **apply_options)
    y_t, state    = family.step(params, x_t, state)

with `apply` over a whole sequence (xs (batch..., T, I), or time first) equal to `step` in a
loop from `initial_state` (the conformance test, `tests/test_families.py`, checks that for
every registered family, every mode, forwards and reversed). `mode` picks one of the family's
equivalent forms (`modes`; None is the family's default). The options each function takes
beyond the protocol's are declared once (`init_options`, `apply_options`), so a refusal
("zoneout_h applies to ...") is generated from the declarations by `check_options`.

`resets` (packed documents, continuous batching) is a bool array (batch..., T), time last
whatever `time_major` is, True at the first step of each segment in the sequence's own time
order (recurrentgemma's `segment_pos == 0`). No state crosses a segment boundary in either
direction and every segment starts from `initial_state`: forwards the state is reset before
each step t with resets[..., t]; with `reverse=True`, before the last step of each segment
(step t with resets[..., t + 1], t < T - 1). So `apply` equals running each segment alone
(outputs at every step; the final state is the one after the last segment run, for
`reverse` the segment holding step 0), in every mode; resets[..., 0] and resets at padded
steps (at or past `seq_lengths`) change nothing. None (the default) is one segment per
sequence, the family's unchanged program. `resets` is part of the protocol, not an option
a family declares: given to a family whose sequence function has no `resets` keyword,
`apply` raises "resets is not supported by <label> yet".

The registry maps a name to the module that defines the family's `FAMILY`, imported on first
use, so `import jaxlstm` stays cheap: `get(name)`, `names()`, and `of(params)` for the family
a params pytree belongs to.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax

Array = Any


@dataclass(frozen=True)
class Family:
    """One recurrent family behind the protocol (see the module docstring).

    Attributes:
        name: the registry name, e.g. "mlstm".
        label: how messages name it, e.g. "mLSTM".
        params_type: the NamedTuple its `init` returns (`of` finds a family by it).
        init: (key, input_size, hidden_size, **init_options) -> params.
        apply: (params, xs, *, initial_state=None, seq_lengths=None, reverse=False,
            time_major=False, mode=None, resets=None, **apply_options)
            -> (outputs, final_state).
        step: (params, x_t, state) -> (y_t, state): one time step, x_t (batch..., I).
        initial_state: (params, batch_shape, dtype) -> the state `apply` starts from when
            given none: zeros, shaped and typed as `apply`'s final state for inputs of
            `dtype` (the dtype promoted with the params'; the mLSTM's at least float32).
        init_options: the keyword options `init` takes beyond the protocol's.
        apply_options: the keyword options `apply` takes beyond the protocol's.
        modes: the forms `apply` can run in; empty when it has one.
        sizes: (params, name) -> (input_size, output_size) of checked params; errors name
            `name` and the field.
        cells: other names `resolve` maps to this family, each passed to `init` as
            `cell=<name>` (the LSTM's variants); the family's own name always maps to it.
        apply_with_gates: `apply` that returns (outputs, final_state, gates), for families
            whose gates can be returned (None otherwise).
        backend_modes: {backend: mode} where the fastest form on that backend (as
            `jax.default_backend()` names it) is not `modes[0]`, the form `apply` runs
            without `mode`; `default_mode` reads it.
        activation_floats: (width, steps, mode, **init_options) -> the floats, roughly, that
            the backward pass keeps per step and row of one layer of `width` outputs run in
            `mode` (None: its default) over `steps` steps: the runner's memory estimate
            (`jaxlstm.train.memory`), a floor rather than a bound. Without one, 12 vectors
            of the width: a gated cell on the shared time loop (its input projection and
            gates, the cell state and its activation, h).
    """

    name: str
    label: str
    params_type: type
    init: Callable[..., Any]
    apply: Callable[..., tuple[Array, Any]]
    step: Callable[..., tuple[Array, Any]]
    initial_state: Callable[..., Any]
    init_options: frozenset[str] = frozenset()
    apply_options: frozenset[str] = frozenset()
    modes: tuple[str, ...] = ()
    sizes: Callable[[Any, str], tuple[int, int]] | None = None
    cells: tuple[str, ...] = ()
    apply_with_gates: Callable[..., tuple[Array, Any, Any]] | None = None
    backend_modes: Mapping[str, str] = field(default_factory=dict)
    activation_floats: Callable[..., float] = field(default=lambda width, *_, **__: 12.0 * width)

    def default_mode(self, backend: str) -> str | None:
        """The form to run on `backend` ("cpu", "gpu", "tpu") when none is asked for: its
        `backend_modes` entry, else `modes[0]`; None for a family with one form.

        This is the one rule behind every `mode=None`: the sequence functions (`mlstm`,
        `min_lstm`, `min_gru`, through `form`), the stacks and blocks and the Flax modules
        that pass None on, and the runner (`jaxlstm.train.config.default_mode`). The
        measurements behind each family's choice are in its `backend_modes`' docstring."""
        if not self.modes:
            return None
        return self.backend_modes.get(backend, self.modes[0])


_REGISTRY = {
    "lstm": "jaxlstm.lstm_family",
    "slstm": "jaxlstm.xlstm.slstm",
    "mlstm": "jaxlstm.xlstm.mlstm",
    "min_lstm": "jaxlstm.minrnn.min_lstm",
    "min_gru": "jaxlstm.minrnn.min_gru",
    "gru": "jaxlstm.gru_family.family",
}
"""Name -> the module whose `FAMILY` it is; adding a family is one line here."""


def form(name: str, mode: str | None) -> str | None:
    """The form family `name` runs in: `mode` when given, else its `default_mode` on the
    backend JAX runs on (`jax.default_backend()`, read when the function is traced)."""
    if mode is not None:
        return mode
    return get(name).default_mode(jax.default_backend())


def names() -> tuple[str, ...]:
    """The registered families' names, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> Family:
    """The family registered as `name`; a ValueError listing the names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {list(_REGISTRY)}, got "
                        f"{type(name).__name__}.")
    if name not in _REGISTRY:
        raise ValueError(f"name must be one of {list(_REGISTRY)}, got {name!r}.")
    family = importlib.import_module(_REGISTRY[name]).FAMILY
    if family.name != name:  # a registry line pointing at the wrong module
        raise RuntimeError(f"{_REGISTRY[name]}.FAMILY is named {family.name!r}, not {name!r}.")
    return family


def of(params: Any, name: str = "params") -> Family:
    """The family whose `init` makes params of this type; a TypeError naming `name` and the
    types otherwise."""
    family = find(params)
    if family is not None:
        return family
    known = ", ".join(f"{f.params_type.__name__} ({f.name})" for f in map(get, _REGISTRY))
    raise TypeError(f"{name} must be the params of a registered family ({known}), got "
                    f"{type(params).__name__}.")


def find(params: Any) -> Family | None:
    """The family whose `init` makes params of this type, or None."""
    return next((f for f in map(get, _REGISTRY) if type(params) is f.params_type), None)


def resolve(cell: Any) -> tuple[Family, dict[str, Any]]:
    """The family a `cell=` name selects and the init options the name implies: a family's
    own name, or one of its `cells` (the LSTM's variants: `("lstm", {"cell": "peephole"})`).
    A ValueError listing every name otherwise."""
    families = [get(name) for name in _REGISTRY]
    for family in families:
        if cell == family.name:
            return family, {}
    for family in families:
        if isinstance(cell, str) and cell in family.cells:
            return family, {"cell": cell}
    known = list(dict.fromkeys(n for f in families for n in (f.name, *f.cells)))
    raise ValueError(f"cell must be one of {known}, got {cell!r}.")


def takers(option: str, kind: str = "apply") -> list[str]:
    """The labels of the families that declare `option` (for `kind` "apply" or "init")."""
    return [f.label for f in map(get, _REGISTRY)
            if option in (f.apply_options if kind == "apply" else f.init_options)]


def checked_apply(name: str, run: Callable[..., tuple[Any, ...]],
                  with_gates: bool = False) -> Callable[..., Any]:
    """The protocol's `apply` over a family's public sequence function `run`: refuses a mode
    or an option the family does not declare (before `run` sees it), passes `mode` and
    `resets` only when given (None: `run`'s own default; `resets` to a family whose `run` has
    no such keyword is a ValueError), and returns `(outputs, final_state)`; with
    `with_gates`, `run(..., return_gates=True)`'s `(outputs, final_state, gates)`."""
    takes_resets = "resets" in inspect.signature(run).parameters

    def apply(params: Any, xs: Array, *, initial_state: Any = None, seq_lengths: Any = None,
              reverse: bool = False, time_major: bool = False, mode: str | None = None,
              resets: Any = None, **options: Any) -> tuple[Array, Any]:
        family = get(name)
        check_mode(family, mode)
        check_options(family, options)
        # None is "not given", as for mode: `run` keeps its own default (an option another
        # family takes, passed as None by code written for every family, is dropped too).
        options = {key: value for key, value in options.items() if value is not None}
        if mode is not None:
            options["mode"] = mode
        if resets is not None:
            if not takes_resets:
                raise ValueError(f"resets is not supported by {family.label} yet.")
            options["resets"] = resets
        if with_gates:
            options["return_gates"] = True
        return tuple(run(params, xs, initial_state=initial_state, seq_lengths=seq_lengths,
                         reverse=reverse, time_major=time_major, **options))

    apply.__doc__ = f"`{run.__module__}.{run.__name__}` behind the family protocol."
    return apply


def check_options(family: Family, given: Mapping[str, Any], kind: str = "apply") -> None:
    """Refuses options `family` does not declare, naming the families that take each one.

    Args:
        family: the family the options are for.
        given: option name -> value; only names whose value is not None count as given.
        kind: "apply" or "init": which of the family's declarations to check against.

    Raises:
        ValueError: e.g. "zoneout_h applies to LSTM layers, not to mLSTM (family 'mlstm')".
    """
    if kind not in ("apply", "init"):
        raise ValueError(f"kind must be 'apply' or 'init', got {kind!r}.")
    declared = family.apply_options if kind == "apply" else family.init_options
    for option in sorted(key for key, value in given.items() if value is not None):
        if option in declared:
            continue
        labels = takers(option, kind)
        if labels:
            where = f"applies to {join(labels)} layers"
        elif option == "return_gates":
            where = ("is not part of the family protocol (apply returns (outputs, state)); "
                     "use the family's apply_with_gates, where it has one")
        else:
            where = "is an option of no registered family"
        raise ValueError(f"{option} {where}, not to {family.label} (family {family.name!r}).")


def join(labels: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def check_mode(family: Family, mode: Any) -> None:
    """Refuses a `mode` the family does not have (None, its default, is always allowed)."""
    if mode is None:
        return
    if not family.modes:
        several = [f.label for f in map(get, _REGISTRY) if f.modes]
        raise ValueError(f"mode applies to families with several forms ({join(several)}), not "
                         f"to {family.label} (family {family.name!r}), got mode={mode!r}.")
    if mode not in family.modes:
        raise ValueError(f"mode must be one of {list(family.modes)} for {family.label}, got "
                         f"{mode!r}.")
