"""The trained model: an LSTM stack and a linear read-out, as pure (init, apply) functions.

The read-out depends on the task: "every" maps each step's output to O features; "last" maps
the final hidden states (both directions, after each sequence's last valid step) to O features,
as a (B, 1, O) output. `api="functional"` runs `jaxlstm.lstm_stack` on a params pytree;
`api="linen"` runs the `jaxlstm.flax.linen.LSTM` module (the same computation).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlstm.flax.linen import LSTM as LinenLSTM
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
        lstm = LinenLSTM(cfg.hidden_size, num_layers=cfg.num_layers,
                         bidirectional=cfg.bidirectional, dropout=cfg.dropout,
                         recurrent_dropout=cfg.recurrent_dropout, zoneout_h=cfg.zoneout_h,
                         zoneout_c=cfg.zoneout_c, cell=cfg.cell, proj_size=cfg.proj_size,
                         forget_bias=cfg.forget_bias, unroll=cfg.unroll,
                         remat_chunk=cfg.remat_chunk)
        states, outputs = lstm(inputs, seq_lengths=lengths, deterministic=deterministic,
                               return_carry=True)
        features = outputs if self.spec.readout == "every" else _last_hidden(states)[:, None]
        return nn.Dense(self.spec.output_size, name="head")(features)


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """`init(key) -> params` and `apply(params, inputs, lengths, key, train) -> outputs`.

    Compared and hashed by identity, so a jitted step can hold it as static data.
    """

    config: ModelConfig
    spec: TaskSpec

    def init(self, key: Array) -> Params:
        cfg, spec = self.config, self.spec
        if cfg.api == "linen":
            dummy = jnp.zeros((1, 2, spec.input_size), jnp.float32)
            return _LinenModel(cfg, spec).init(key, dummy, None, True)["params"]
        key_lstm, key_head = jax.random.split(key)
        lstm = init_lstm_stack(key_lstm, spec.input_size, cfg.hidden_size,
                               num_layers=cfg.num_layers, bidirectional=cfg.bidirectional,
                               proj_size=cfg.proj_size, cell=cfg.cell,
                               forget_bias=cfg.forget_bias)
        width = (cfg.proj_size or cfg.hidden_size) * (2 if cfg.bidirectional else 1)
        head = {
            "w": jax.nn.initializers.lecun_normal()(key_head, (width, spec.output_size)),
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
    whichever API (`functional` or `linen`) trained it."""
    if "lstm" in params:
        return params["lstm"], params["head"]["w"], params["head"]["b"]
    name = next(k for k in params if k.startswith("LSTM"))
    return to_lstm_params(params[name]), params["head"]["kernel"], params["head"]["bias"]
