"""The trained model: a recurrent stack and a linear read-out, as pure (init, apply) functions.

The read-out depends on the task: "every" maps each step's output to O features; "last" maps
the final hidden states (both directions, after each sequence's last valid step) to O features,
as a (B, 1, O) output. `api="functional"` runs `jaxlstm.lstm_stack` on a params pytree;
`api="linen"` runs the `jaxlstm.flax.linen.LSTM` module and `api="nnx"` the
`jaxlstm.flax.nnx.LSTM` module (the same computation). For nnx the params are an `nnx.State`
(the `nnx.Param`s of a module holding the LSTM and an `nnx.Linear` head), and `apply` merges
them into the module inside the pure function, so the runner treats all three alike.

Any other registered family (`jaxlstm.family`): `model.cell` names it (or one per layer),
and the stack's layers are of that family (params `{"lstm": stack, "head": ...}`, run by
`jaxlstm.lstm_stack`, in the form `model.mode` picks, by default the family's `default_mode`
on the running backend, for a family with several forms). The "last" read-out is the output
each direction of the last layer ends on (forwards at each sequence's last valid step,
backwards at step 0): the h of its final state, for every family.

`blocks="msm"` (functional API only) replaces the cell stack by residual blocks, one per
letter of any registered kinds (`jaxlstm.blocks.block_stack`: an input projection to
hidden_size, the blocks, a final LayerNorm; params `{"blocks": ..., "head": ...}`). Its
"last" read-out is the output at each sequence's last valid step.

`dtype="bfloat16"` (any API, cell or blocks) is mixed precision: `apply` casts the float params
and the inputs to bfloat16 and the outputs back to float32; params, gradients and the
optimizer state stay float32.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from jaxlstm import family as families
from jaxlstm.blocks import (
    block_stack,
    block_stack_step,
    init_block_stack,
    initial_block_stack_state,
)
from jaxlstm.decode import initial_stack_state, stack_step
from jaxlstm.flax.linen import LSTM as LinenLSTM
from jaxlstm.flax.nnx import LSTM as NnxLSTM
from jaxlstm.flax.params import to_lstm_params
from jaxlstm.flax.recurrent import NnxRecurrent, dict_to_params
from jaxlstm.flax.recurrent import Recurrent as LinenRecurrent
from jaxlstm.stack import Directions, init_lstm_stack, lstm_stack
from jaxlstm.tasks.base import TaskSpec
from jaxlstm.train.config import (
    ModelConfig,
    block_options,
    cell_families,
    default_mode,
    layer_cells,
)

Array = jax.Array
Params = Any


def _last_hidden(states: Any) -> Array:
    """The last layer's final h of every direction, concatenated: (B, directions * R) (the
    Flax modules' carry)."""
    return jnp.concatenate([s.h for s in states[-1] if s is not None], axis=-1)


def _last_outputs(outputs: Directions, lengths: Array | None) -> Array:
    """The output each direction of the last layer ends on, concatenated: the forward one at
    each sequence's last valid step, the backward one at step 0 (the last it reads);
    (B, directions * R). For any family this is the h its final state yields."""
    final = [_at_last_step(outputs.forward, lengths)]
    if outputs.backward is not None:
        final.append(outputs.backward[..., 0, :])
    return jnp.concatenate(final, axis=-1)


class _LinenModel(nn.Module):
    config: ModelConfig
    spec: TaskSpec

    @nn.compact
    def __call__(self, inputs: Array, lengths: Array | None, deterministic: bool) -> Array:
        cfg = self.config
        if _lstm_modules(cfg):
            lstm = LinenLSTM(cfg.hidden_size, **_lstm_options(cfg))
            states, outputs = lstm(inputs, seq_lengths=lengths, deterministic=deterministic,
                                   return_carry=True)
            last = _last_hidden(states)
        else:
            directions = LinenRecurrent(cfg.hidden_size, **_recurrent_options(cfg),
                                        name="stack")(inputs, seq_lengths=lengths,
                                                      deterministic=deterministic)
            outputs = jnp.concatenate([o for o in directions if o is not None], axis=-1)
            last = _last_outputs(directions, lengths)
        features = outputs if self.spec.readout == "every" else last[:, None]
        return nn.Dense(self.spec.output_size, name="head")(features)


def _lstm_modules(cfg: ModelConfig) -> bool:
    """Whether linen and nnx run the LSTM's own modules (`jaxlstm.flax.linen.LSTM`, their
    layout and carry, as runs before the family protocol did) rather than the protocol's
    `Recurrent`: for a stack of LSTM layers only."""
    return all(family.name == "lstm" for family in cell_families(cfg))


def _recurrent_options(cfg: ModelConfig) -> dict[str, Any]:
    """`Recurrent`'s attributes from the config: the options each layer's family declares go
    to it (zero rates and None are "not given")."""
    cells = layer_cells(cfg)
    return {"cell": cells, "num_layers": cfg.num_layers, "bidirectional": cfg.bidirectional,
            "dropout": cfg.dropout, "merge": "none", "init_options": _init_options(cfg),
            "apply_options": {"recurrent_dropout": cfg.recurrent_dropout,
                              "zoneout_h": cfg.zoneout_h, "zoneout_c": cfg.zoneout_c,
                              "unroll": cfg.unroll, "remat_chunk": cfg.remat_chunk,
                              **_mode(cfg)}}


def _init_options(cfg: ModelConfig) -> dict[str, Any]:
    """The init options some layer's family declares (`init_lstm_stack` gives each layer
    those its family takes); the config has refused the others already."""
    declared = set().union(*(family.init_options for family in cell_families(cfg)))
    return {name: value for name, value in (("proj_size", cfg.proj_size),
                                            ("forget_bias", cfg.forget_bias),
                                            ("num_heads", cfg.num_heads)) if name in declared}


def _lstm_options(cfg: ModelConfig) -> dict[str, Any]:
    """The module options the linen and nnx LSTMs share, from the config."""
    names = ("num_layers", "bidirectional", "dropout", "recurrent_dropout", "zoneout_h",
             "zoneout_c", "cell", "proj_size", "forget_bias", "unroll", "remat_chunk")
    return {name: getattr(cfg, name) for name in names}


def _head_width(cfg: ModelConfig) -> int:
    return (cfg.proj_size or cfg.hidden_size) * (2 if cfg.bidirectional else 1)


def _mode(cfg: ModelConfig) -> dict[str, Any]:
    """The `mode=` keyword for the cells or blocks: the config's, or what `model.mode: null`
    runs on this backend (`config.default_mode`, from the families' declarations, which
    --help states); none for cells with one form."""
    mode = default_mode(cfg, jax.default_backend())
    return {} if mode is None else {"mode": mode}


def _at_last_step(outputs: Array, lengths: Array | None) -> Array:
    """outputs (B, T, F) at each sequence's last valid step (step 0 for length 0): (B, F)."""
    num_steps = outputs.shape[-2]
    last = (jnp.full(outputs.shape[:-2], num_steps - 1) if lengths is None
            else jnp.maximum(jnp.asarray(lengths) - 1, 0))
    return jnp.take_along_axis(outputs, last[..., None, None], axis=-2)[..., 0, :]


class _NnxModel(nnx.Module):
    """The nnx stack and its `nnx.Linear` head; masks come from the key passed to the call."""

    def __init__(self, config: ModelConfig, spec: TaskSpec, *, rngs: nnx.Rngs):
        self.readout = spec.readout
        if _lstm_modules(config):
            self.lstm = NnxLSTM(spec.input_size, config.hidden_size, **_lstm_options(config),
                                rngs=rngs)
            width = _head_width(config)
        else:
            self.lstm = NnxRecurrent(spec.input_size, config.hidden_size,
                                     **_recurrent_options(config), rngs=rngs)
            last = self.lstm.params()[-1].forward
            width = ((2 if config.bidirectional else 1)
                     * families.of(last).sizes(last, "last layer")[1])
        self.head = nnx.Linear(width, spec.output_size, rngs=rngs)

    def __call__(self, inputs: Array, lengths: Array | None, deterministic: bool,
                 key: Array) -> Array:
        if isinstance(self.lstm, NnxLSTM):
            states, outputs = self.lstm(inputs, seq_lengths=lengths,
                                        deterministic=deterministic, return_carry=True,
                                        rngs=key)
            last = _last_hidden(states)
        else:
            directions = self.lstm(inputs, seq_lengths=lengths, deterministic=deterministic,
                                   rngs=key)
            outputs = jnp.concatenate([o for o in directions if o is not None], axis=-1)
            last = _last_outputs(directions, lengths)
        features = outputs if self.readout == "every" else last[:, None]
        return self.head(features)


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """`init(key) -> params` and `apply(params, inputs, lengths, key, train) -> outputs`.

    Compared and hashed by identity, so a jitted step can hold it as static data.
    """

    config: ModelConfig
    spec: TaskSpec

    @functools.cached_property
    def _nnx_graph(self) -> tuple[nnx.GraphDef, Any]:
        """The nnx module's graphdef and its state other than params (the LSTM's dropout
        stream, which `apply` never draws from: masks come from its `key`), abstract: built
        once by `nnx.eval_shape`, which computes nothing."""
        module = nnx.eval_shape(lambda: _NnxModel(self.config, self.spec, rngs=nnx.Rngs(0)))
        graphdef, _, rest = nnx.split(module, nnx.Param, ...)
        return graphdef, rest

    def init(self, key: Array) -> Params:
        cfg, spec = self.config, self.spec
        if cfg.api == "linen":
            dummy = jnp.zeros((1, 2, spec.input_size), jnp.float32)
            return _LinenModel(cfg, spec).init(key, dummy, None, True)["params"]
        if cfg.api == "nnx":
            module = _NnxModel(cfg, spec, rngs=nnx.Rngs(params=key, dropout=0))
            return nnx.state(module, nnx.Param)
        key_lstm, key_head = jax.random.split(key)

        def head_of(width: int) -> dict[str, Array]:
            return {"w": jax.nn.initializers.lecun_normal()(key_head, (width,
                                                                       spec.output_size)),
                    "b": jnp.zeros((spec.output_size,))}

        head = head_of(_head_width(cfg))
        if cfg.blocks is not None:
            return {"blocks": init_block_stack(key_lstm, spec.input_size, cfg.hidden_size,
                                               cfg.blocks, **block_options(cfg)),
                    "head": head}
        lstm = init_lstm_stack(key_lstm, spec.input_size, cfg.hidden_size,
                               num_layers=cfg.num_layers, bidirectional=cfg.bidirectional,
                               cell=layer_cells(cfg), **_init_options(cfg))
        last = lstm[-1].forward
        width = (2 if cfg.bidirectional else 1) * families.of(last).sizes(last, "last layer")[1]
        return {"lstm": lstm, "head": head_of(width)}

    def apply(self, params: Params, inputs: Array, lengths: Array | None, key: Array,
              train: bool) -> Array:
        """Outputs (B, T, O) for readout "every", (B, 1, O) for "last", float32.

        `config.dtype="bfloat16"` is mixed precision: the float params and the inputs are cast
        to bfloat16 here, so that the stack and the head compute in bfloat16, and the outputs
        are cast back to float32 for the loss. The params themselves stay float32, and so do
        their gradients (a cast's transpose is the cast back) and the optimizer's state.
        """
        if self.config.dtype == "float32":
            return self._apply(params, inputs, lengths, key, train)
        dtype = jnp.dtype(self.config.dtype)
        outputs = self._apply(_cast_floats(params, dtype), _cast_floats(inputs, dtype),
                              lengths, key, train)
        return outputs.astype(jnp.float32)

    def _apply(self, params: Params, inputs: Array, lengths: Array | None, key: Array,
               train: bool) -> Array:
        cfg, spec = self.config, self.spec
        if cfg.api == "linen":
            return _LinenModel(cfg, spec).apply({"params": params}, inputs, lengths, not train,
                                                rngs={"dropout": key})
        if cfg.api == "nnx":
            graphdef, rest = self._nnx_graph
            return nnx.merge(graphdef, params, rest)(inputs, lengths, not train, key)
        if cfg.blocks is not None:
            outputs = block_stack(params["blocks"], inputs, seq_lengths=lengths, **_mode(cfg))
            last = _at_last_step(outputs, lengths)
        else:
            # Rates of zero and loop options left at None are "not given": a family without
            # them runs as it would without the keys (the config refuses set ones).
            directions, _ = lstm_stack(
                params["lstm"], inputs, seq_lengths=lengths, dropout_rate=cfg.dropout,
                recurrent_dropout=cfg.recurrent_dropout, zoneout_h=cfg.zoneout_h,
                zoneout_c=cfg.zoneout_c, key=key, deterministic=not train, unroll=cfg.unroll,
                remat_chunk=cfg.remat_chunk, merge="none", **_mode(cfg),
            )
            outputs = jnp.concatenate([o for o in directions if o is not None], axis=-1)
            last = _last_outputs(directions, lengths)
        features = outputs if spec.readout == "every" else last[:, None]
        head = params["head"]
        return features @ head["w"] + jnp.reshape(head["b"], (1, 1, -1))


def _cast_floats(tree: Any, dtype: jnp.dtype) -> Any:
    """`tree` with its floating-point leaves cast to `dtype` (integer leaves as they are)."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def decoder(params: Params, model: Model | None = None) -> tuple[Any, Any, Array, Array]:
    """A trained model read in two parts, for generation: `(prefill, step, w, b)` with
    `prefill(inputs) -> (outputs, state)`, `step(x_t, state) -> (y_t, state)` (any cell
    stack's, any API's, or a block stack's) and the head's (w, b)."""
    mode = {} if model is None else _mode(model.config)
    if isinstance(params, Mapping) and "blocks" in params:
        blocks, head = params["blocks"], params["head"]
        return (lambda xs: block_stack(blocks, xs, return_state=True, **mode),
                lambda x, state: block_stack_step(blocks, x, state), head["w"], head["b"])
    stack, w, b = stack_and_head(params, model)
    if any(layer.backward is not None for layer in stack):
        raise ValueError("sampling needs a unidirectional model.")
    return (lambda xs: lstm_stack(stack, xs, **mode),
            lambda x, state: stack_step(stack, x, state), w, b)


def decoder_initial_state(params: Params, batch_shape: tuple[int, ...],
                          model: Model | None = None) -> Any:
    """The state `decoder`'s `step` starts a sequence from (what its `prefill` starts from):
    each layer's or block's family's initial state, float32."""
    if isinstance(params, Mapping) and "blocks" in params:
        return initial_block_stack_state(params["blocks"], batch_shape, jnp.float32)
    stack, _, _ = stack_and_head(params, model)
    return initial_stack_state(stack, batch_shape, jnp.float32)


def stack_and_head(params: Params, model: Model | None = None) -> tuple[Any, Array, Array]:
    """A trained model's stack params (as `lstm_stack` takes them) and its head's (w, b),
    whichever API (`functional`, `linen` or `nnx`) trained it, any family's. The linen and
    nnx `Recurrent` modules' params need the `model` (its cells and sizes) to be rebuilt; a
    block model has no such stack: both raise ValueError."""
    if isinstance(params, Mapping) and "blocks" in params:
        raise ValueError("a block model (model.blocks) has no cell stack: the gates picture "
                         "needs one.")
    if isinstance(params, nnx.State):
        params = nnx.to_pure_dict(params)
    lstm = params.get("lstm")
    generic = params.get("stack") or (lstm.get("weights") if isinstance(lstm, Mapping)
                                      else None)
    if isinstance(generic, Mapping):  # the linen / nnx Recurrent module's layout
        if model is None:
            raise ValueError("the params of a linen or nnx Recurrent stack need the model to "
                             "be rebuilt as stack params.")
        cfg, spec = model.config, model.spec
        like = jax.eval_shape(lambda: init_lstm_stack(
            jax.random.key(0), spec.input_size, cfg.hidden_size, num_layers=cfg.num_layers,
            bidirectional=cfg.bidirectional, cell=layer_cells(cfg), **_init_options(cfg)))
        head = params["head"]
        return dict_to_params(generic, like), head["kernel"], head["bias"]
    if "lstm" in params and isinstance(params["lstm"], Mapping):  # nnx: layer_0, layer_1, ...
        head = params["head"]
        return to_lstm_params(params["lstm"]), head["kernel"], head["bias"]
    if "lstm" in params:
        return params["lstm"], params["head"]["w"], params["head"]["b"]
    name = next(k for k in params if k.startswith("LSTM"))
    return to_lstm_params(params[name]), params["head"]["kernel"], params["head"]["bias"]
