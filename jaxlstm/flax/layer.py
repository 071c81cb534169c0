"""One recurrent layer of any registered family, as a linen and as an NNX module, over the
family protocol (`jaxlstm.family`): `Layer` and `NnxLayer` (exported as
`jaxlstm.flax.linen.Layer` and `jaxlstm.flax.nnx.Layer`).

    model = linen.Layer(64, family=name, init_options={"num_heads": 4},   # any family name
                        apply_options={"mode": mode})
    outputs, state = model.apply(variables, xs, seq_lengths=lengths, return_state=True)
    model = nnx.Layer(3, 64, family=name, rngs=nnx.Rngs(0))

The params are the family's `init`'s with the module's 'params' key, stored under the field
names of the family's params NamedTuple (nested NamedTuples as nested dicts, None fields left
out): in linen under one `cell` entry, so `<ParamsType>(**variables["params"]["cell"])` hands
the same arrays to the functional API; in NNX as `nnx.Param` attributes of those names, with
`model.params()` the NamedTuple. A call is the family's `apply`, and the state in and out is
the family's.

Both are configurations of a base, `FamilyLayer` / `NnxFamilyLayer`, that reads the family's
registry name and its options from the module's attributes; the per-family modules exported
by `jaxlstm.flax.linen` and `jaxlstm.flax.nnx` under their own names are configurations of
the same bases, with the attributes they always had.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxlstm.family import Family, check_mode, check_options, get
from jaxlstm.flax.params import cast_for_compute
from jaxlstm.flax.recurrent import (
    dict_to_params,
    params_to_dict,
    state_in_compute_dtype,
)

Array = jax.Array
Dtype = Any


def _check(family: Family, init_options: Mapping[str, Any],
           apply_options: Mapping[str, Any]) -> None:
    """Refuses, before anything runs, options the family does not declare (an unknown init
    option would otherwise reach `family.init` as a TypeError) and a mode it does not have."""
    if "dtype" in init_options:
        raise ValueError("init_options: dtype is the module's param_dtype, not an option.")
    check_options(family, init_options, "init")
    options = dict(apply_options)
    mode = options.pop("mode", None)
    # `check_mode`'s refusal without the family's label: the message these modules gave
    # before they ran over the protocol.
    if mode is not None and family.modes and mode not in family.modes:
        raise ValueError(f"mode must be one of {list(family.modes)}, got {mode!r}.")
    check_mode(family, mode)
    check_options(family, options)


def _init_options(given: Mapping[str, Any] | None, family: Family) -> dict[str, Any]:
    """The options for `family.init`; None counts as not given (as `check_options` has it)
    for options the family does not declare."""
    return {name: value for name, value in (given or {}).items()
            if value is not None or name in family.init_options}


def _apply_options(module: Any) -> dict[str, Any]:
    """The options for `family.apply` a layer module holds: its `apply_options` mapping where
    it has one, and the attributes its class lists in `apply_fields` (read at each call, so
    setting one, e.g. an NNX module's `mode`, takes effect on the next call)."""
    options = dict(getattr(module, "apply_options", None) or {})
    options.update({name: getattr(module, name) for name in type(module).apply_fields})
    return options


def _run(module: Any, params: Any, inputs: Array, *, initial_state: Any, time_major: bool | None,
         mode: str | None, return_state: bool, **arguments: Any) -> Any:
    """The family's `apply` with the module's options, in the module's `dtype`."""
    family = get(module.family)
    options = _apply_options(module)
    if mode is not None:
        options["mode"] = mode
    if time_major is None:
        time_major = getattr(module, "time_major", False)
    dtype = module.dtype
    params, inputs = cast_for_compute(dtype, (params, inputs))
    if dtype is not None and initial_state is not None:
        initial_state = state_in_compute_dtype(family, params, initial_state, dtype)
    outputs, state = family.apply(params, inputs, initial_state=initial_state,
                                  time_major=time_major, **arguments, **options)
    return (outputs, state) if return_state else outputs


class FamilyLayer(nn.Module):
    """One layer of a registered family as a linen module; its subclasses configure it.

    A subclass has the attributes `family` (the registry name: a class attribute or a
    field), `hidden_size`, `dtype` (computation dtype; None keeps the params' and inputs')
    and `param_dtype` (the params' storage dtype), and lists in `init_fields` /
    `apply_fields` its attributes that are options of the family's `init` / `apply`; its
    `init_options` / `apply_options` mappings and its `time_major` are read where it has them.
    """

    init_fields: ClassVar[tuple[str, ...]] = ()
    apply_fields: ClassVar[tuple[str, ...]] = ()

    @nn.compact
    def __call__(self, inputs: Array, *, seq_lengths: Array | None = None,
                 initial_state: Any = None, reverse: bool = False,
                 time_major: bool | None = None, resets: Array | None = None,
                 mode: str | None = None, return_state: bool = False) -> Any:
        """Runs the family's `apply` over `inputs` with the module's params.

        Args:
            inputs: the sequences, (batch..., T, I), or (T, batch..., I) time-major; I is
                read from them when the params are created.
            seq_lengths: integer array of the batch shape: valid steps per sequence (outputs
                at padded steps are zero; the state is the one after the last valid step).
            initial_state: the family's state, (batch..., ...); the family's zeros if None.
            reverse: run from the last valid step to the first.
            time_major: time is the leading axis of `inputs` and of the outputs; None: the
                module's `time_major` (False where it has none).
            resets: bool (batch..., T), True at the first step of each segment (the
                protocol's `resets`: no state crosses a segment boundary).
            mode: one of the family's forms, for this call; None: the module's.
            return_state: also return the final state.

        Returns:
            The outputs (batch..., T, F) (time-major if `time_major`), or
            `(outputs, final_state)` with `return_state`.
        """
        family = get(self.family)
        init_options = dict(getattr(self, "init_options", None) or {})
        init_options.update({name: getattr(self, name) for name in self.init_fields})
        _check(family, init_options, _apply_options(self))
        in_features = inputs.shape[-1]

        def init(key: Array) -> Any:
            return family.init(key, in_features, self.hidden_size, dtype=self.param_dtype,
                               **_init_options(init_options, family))

        tree = self.param("cell", lambda key: params_to_dict(init(key)))
        params = dict_to_params(tree, jax.eval_shape(init, jax.random.key(0)))
        return _run(self, params, inputs, initial_state=initial_state, time_major=time_major,
                    mode=mode, return_state=return_state, seq_lengths=seq_lengths,
                    reverse=reverse, resets=resets)


class Layer(FamilyLayer):
    """One layer of any registered family, chosen by name, as a linen module.

    Attributes:
        hidden_size: the `hidden_size` given to the family's `init`.
        family: the family's registry name (`jaxlstm.family.names()`).
        init_options: further keywords of the family's `init` (among its `init_options`).
        apply_options: further keywords of the family's `apply` (among its `apply_options`,
            and `mode`).
        time_major: inputs are (T, batch..., I) rather than (batch..., T, I).
        dtype: computation dtype; None keeps the params' and inputs'.
        param_dtype: dtype the params are stored in.

    Params: {"cell": {<field>: ...}} under the field names of the family's params.
    """

    hidden_size: int
    family: str
    init_options: Any = None
    apply_options: Any = None
    time_major: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32


class NnxFamilyLayer(nnx.Module):
    """One layer of a registered family as an NNX module; its subclasses configure it.

    A subclass has `family` (the registry name, set before this `__init__` runs: a class
    attribute, or an attribute its own `__init__` sets first) and `dtype`, sets the
    attributes it lists in `apply_fields` (options of the family's `apply`, read at each call)
    before calling this `__init__`, and passes the family's init options to it; its
    `apply_options` mapping and its `time_major` are read where it has them. The weights are
    `nnx.Param`s named after the fields of the family's params (`params()`).
    """

    apply_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, in_features: int, hidden_size: int, *, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs, **init_options: Any):
        family = get(self.family)
        _check(family, init_options, _apply_options(self))
        params = family.init(rngs.params(), in_features, hidden_size, dtype=param_dtype,
                             **_init_options(init_options, family))
        self._like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
        for name, value in params_to_dict(params).items():
            if hasattr(self, name):
                raise ValueError(f"{family.label}'s params field {name!r} would overwrite "
                                 f"the module's attribute of that name.")
            setattr(self, name, nnx.data(jax.tree.map(nnx.Param, value)))

    @property
    def params_type(self) -> type:
        """The family's params NamedTuple."""
        return get(self.family).params_type

    def params(self) -> Any:
        """The weights as the family's params NamedTuple (the same arrays)."""
        weights = {name: getattr(self, name) for name in params_to_dict(self._like)}
        values = jax.tree.map(lambda v: v[...], weights,
                              is_leaf=lambda x: isinstance(x, nnx.Variable))
        return dict_to_params(values, self._like)

    def __call__(self, inputs: Array, *, seq_lengths: Array | None = None,
                 initial_state: Any = None, reverse: bool = False,
                 time_major: bool | None = None, resets: Array | None = None,
                 mode: str | None = None, return_state: bool = False) -> Any:
        """Runs the family's `apply` over `inputs` with the module's weights; arguments
        and results as `FamilyLayer.__call__`'s."""
        return _run(self, self.params(), inputs, initial_state=initial_state,
                    time_major=time_major, mode=mode, return_state=return_state,
                    seq_lengths=seq_lengths, reverse=reverse, resets=resets)


class NnxLayer(NnxFamilyLayer):
    """`Layer` as an NNX module (exported as `jaxlstm.flax.nnx.Layer`): the same attributes
    as keywords, plus `in_features` and `rngs` (one key of its 'params' stream initialises).
    """

    def __init__(self, in_features: int, hidden_size: int, *, family: str,
                 init_options: Mapping[str, Any] | None = None,
                 apply_options: Mapping[str, Any] | None = None, time_major: bool = False,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs):
        self.family = family
        self.apply_options = dict(apply_options or {})
        self.time_major, self.dtype = time_major, dtype
        super().__init__(in_features, hidden_size, param_dtype=param_dtype, rngs=rngs,
                         **dict(init_options or {}))
