"""The trained model: an LSTM stack and a linear read-out, as pure (init, apply) functions.

The read-out depends on the task: "every" maps each step's output to O features; "last" maps
the final hidden states (both directions, after each sequence's last valid step) to O features,
as a (B, 1, O) output. `api="functional"` runs `jaxlstm.lstm_stack` on a params pytree;
`api="linen"` runs the `jaxlstm.flax.linen.LSTM` module and `api="nnx"` the
`jaxlstm.flax.nnx.LSTM` module (the same computation). For nnx the params are an `nnx.State`
(the `nnx.Param`s of a module holding the LSTM and an `nnx.Linear` head), and `apply` merges
them into the module inside the pure function, so the runner treats all three alike.
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

from jaxlstm.flax.linen import LSTM as LinenLSTM
from jaxlstm.flax.nnx import LSTM as NnxLSTM
from jaxlstm.flax.params import to_lstm_params
from jaxlstm.stack import init_lstm_stack, lstm_stack
from jaxlstm.tasks.base import TaskSpec
from jaxlstm.train.config import ModelConfig

Array = jax.Array
Params = Any


def _last_hidden(states: Any) -> Array:
    """The last layer's final h of every direction, concatenated: (B, directions * R)."""
    return jnp.concatenate([s.h for s in states[-1] if s is not None], axis=-1)


class _LinenModel(nn.Module):
    config: ModelConfig
    spec: TaskSpec

    @nn.compact
    def __call__(self, inputs: Array, lengths: Array | None, deterministic: bool) -> Array:
        cfg = self.config
        lstm = LinenLSTM(cfg.hidden_size, **_lstm_options(cfg))
        states, outputs = lstm(inputs, seq_lengths=lengths, deterministic=deterministic,
                               return_carry=True)
        features = outputs if self.spec.readout == "every" else _last_hidden(states)[:, None]
        return nn.Dense(self.spec.output_size, name="head")(features)


def _lstm_options(cfg: ModelConfig) -> dict[str, Any]:
    """The module options the linen and nnx LSTMs share, from the config."""
    names = ("num_layers", "bidirectional", "dropout", "recurrent_dropout", "zoneout_h",
             "zoneout_c", "cell", "proj_size", "forget_bias", "unroll", "remat_chunk")
    return {name: getattr(cfg, name) for name in names}


def _head_width(cfg: ModelConfig) -> int:
    return (cfg.proj_size or cfg.hidden_size) * (2 if cfg.bidirectional else 1)


class _NnxModel(nnx.Module):
    """The nnx LSTM and its `nnx.Linear` head; masks come from the key passed to the call."""

    def __init__(self, config: ModelConfig, spec: TaskSpec, *, rngs: nnx.Rngs):
        self.readout = spec.readout
        self.lstm = NnxLSTM(spec.input_size, config.hidden_size, **_lstm_options(config),
                            rngs=rngs)
        self.head = nnx.Linear(_head_width(config), spec.output_size, rngs=rngs)

    def __call__(self, inputs: Array, lengths: Array | None, deterministic: bool,
                 key: Array) -> Array:
        states, outputs = self.lstm(inputs, seq_lengths=lengths, deterministic=deterministic,
                                    return_carry=True, rngs=key)
        features = outputs if self.readout == "every" else _last_hidden(states)[:, None]
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
        lstm = init_lstm_stack(key_lstm, spec.input_size, cfg.hidden_size,
                               num_layers=cfg.num_layers, bidirectional=cfg.bidirectional,
                               proj_size=cfg.proj_size, cell=cfg.cell,
                               forget_bias=cfg.forget_bias)
        head = {
            "w": jax.nn.initializers.lecun_normal()(key_head,
                                                    (_head_width(cfg), spec.output_size)),
            "b": jnp.zeros((spec.output_size,)),
        }
        return {"lstm": lstm, "head": head}

    def apply(self, params: Params, inputs: Array, lengths: Array | None, key: Array,
              train: bool) -> Array:
        """Outputs (B, T, O) for readout "every", (B, 1, O) for "last"."""
        cfg, spec = self.config, self.spec
        if cfg.api == "linen":
            return _LinenModel(cfg, spec).apply({"params": params}, inputs, lengths, not train,
                                                rngs={"dropout": key})
        if cfg.api == "nnx":
            graphdef, rest = self._nnx_graph
            return nnx.merge(graphdef, params, rest)(inputs, lengths, not train, key)
        outputs, states = lstm_stack(
            params["lstm"], inputs, seq_lengths=lengths, dropout_rate=cfg.dropout,
            recurrent_dropout=cfg.recurrent_dropout, zoneout_h=cfg.zoneout_h,
            zoneout_c=cfg.zoneout_c, key=key, deterministic=not train, unroll=cfg.unroll,
            remat_chunk=cfg.remat_chunk,
        )
        features = outputs if spec.readout == "every" else _last_hidden(states)[:, None]
        head = params["head"]
        return features @ head["w"] + jnp.reshape(head["b"], (1, 1, -1))


def stack_and_head(params: Params) -> tuple[Any, Array, Array]:
    """A trained model's stack params (as `lstm_stack` takes them) and its head's (w, b),
    whichever API (`functional`, `linen` or `nnx`) trained it."""
    if isinstance(params, nnx.State):
        params = nnx.to_pure_dict(params)
    if "lstm" in params and isinstance(params["lstm"], Mapping):  # nnx: layer_0, layer_1, ...
        head = params["head"]
        return to_lstm_params(params["lstm"]), head["kernel"], head["bias"]
    if "lstm" in params:
        return params["lstm"], params["head"]["w"], params["head"]["b"]
    name = next(k for k in params if k.startswith("LSTM"))
    return to_lstm_params(params[name]), params["head"]["kernel"], params["head"]["bias"]
