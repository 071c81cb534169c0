"""`train_step` and `eval_step`: pure functions of (state, batch), jitted with the state donated.

The train state is a pytree of arrays (step, params, optimizer state, PRNG key) plus static
parts (the model, the optimizer, the task's metrics) that jit treats as constants. Dropout keys
are `fold_in(rng, step)`, so a run resumed from a checkpoint draws exactly the same masks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxlstm.train.model import Model

Array = jax.Array
Metrics = dict[str, Array]


class TrainState(struct.PyTreeNode):
    """Everything a training step reads and writes.

    Attributes:
        step: steps done so far (int32 scalar).
        params: the model's params.
        opt_state: the optimizer's state.
        rng: the run's PRNG key data (uint32 (2,)); step keys are folded from it.
        model, tx, schedule, task_metrics: static: the model, the optax transformation, the
            learning-rate schedule and the task's metric function.
    """

    step: Array
    params: Any
    opt_state: Any
    rng: Array
    model: Model = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    schedule: optax.Schedule = struct.field(pytree_node=False)
    task_metrics: Callable[[Array, dict[str, Array]], Metrics] = struct.field(pytree_node=False)

    @classmethod
    def create(cls, *, model: Model, tx: optax.GradientTransformation,
               schedule: optax.Schedule, task_metrics: Callable, seed: int) -> TrainState:
        key_init, key_run = jax.random.split(jax.random.PRNGKey(seed))
        params = model.init(key_init)
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                   rng=key_run, model=model, tx=tx, schedule=schedule,
                   task_metrics=task_metrics)


def _outputs(state: TrainState, params: Any, batch: dict[str, Array], train: bool) -> Array:
    key = jax.random.fold_in(state.rng, state.step)
    return state.model.apply(params, batch["inputs"], batch.get("lengths"), key, train)


def train_step(state: TrainState, batch: dict[str, Array]) -> tuple[TrainState, Metrics]:
    """One optimizer step on `batch`; returns the new state and the step's metrics.

    Metrics: the task's (loss and its own metric, on this batch), `grad_norm` (global norm
    before clipping), `lr` (the learning rate used) and `state_finite` (whether the updated
    params and optimizer state are free of NaN and inf: a finite loss and gradient can still
    give a non-finite update, e.g. through a huge learning rate).
    """

    def loss_fn(params):
        metrics = state.task_metrics(_outputs(state, params, batch, True), batch)
        return metrics["loss"], metrics

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads),
               "lr": jnp.asarray(state.schedule(state.step), jnp.float32),
               "state_finite": tree_is_finite((params, opt_state))}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def tree_is_finite(tree: Any) -> Array:
    """Whether every floating-point leaf of `tree` is free of NaN and inf (a traced bool)."""
    checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
              if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def eval_step(state: TrainState, batch: dict[str, Array]) -> Metrics:
    """The task's metrics on `batch`, deterministic (no dropout; zoneout's expectation)."""
    return state.task_metrics(_outputs(state, state.params, batch, False), batch)


def predict(state: TrainState, batch: dict[str, Array]) -> Array:
    """The model's outputs on `batch`, deterministic."""
    return _outputs(state, state.params, batch, False)


jit_train_step = jax.jit(train_step, donate_argnums=0)
jit_eval_step = jax.jit(eval_step)
jit_predict = jax.jit(predict)
