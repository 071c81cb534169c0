"""`train_step` and `eval_step`: pure functions of (state, batch), jitted with the state donated.

The train state is a pytree of arrays (step, params, optimizer state, PRNG key) plus static
parts (the model, the optimizer, the task's metrics, the number of micro-batches) that jit
treats as constants. Dropout keys are `fold_in(rng, step)`, so a run resumed from a checkpoint
draws exactly the same masks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxlstm.tasks.base import target_steps
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
        grad_accum: static: the micro-batches each step's gradient is accumulated over
            (`training.grad_accum`; 1: the whole batch at once).
    """

    step: Array
    params: Any
    opt_state: Any
    rng: Array
    model: Model = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    schedule: optax.Schedule = struct.field(pytree_node=False)
    task_metrics: Callable[[Array, dict[str, Array]], Metrics] = struct.field(pytree_node=False)
    grad_accum: int = struct.field(pytree_node=False, default=1)

    @classmethod
    def create(cls, *, model: Model, tx: optax.GradientTransformation,
               schedule: optax.Schedule, task_metrics: Callable, seed: int,
               grad_accum: int = 1) -> TrainState:
        key_init, key_run = jax.random.split(jax.random.PRNGKey(seed))
        params = model.init(key_init)
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                   rng=key_run, model=model, tx=tx, schedule=schedule,
                   task_metrics=task_metrics, grad_accum=grad_accum)


def _step_key(state: TrainState) -> Array:
    return jax.random.fold_in(state.rng, state.step)


def _outputs(state: TrainState, params: Any, batch: dict[str, Array], key: Array,
             train: bool) -> Array:
    return state.model.apply(params, batch["inputs"], batch.get("lengths"), key, train)


def train_step(state: TrainState, batch: dict[str, Array]) -> tuple[TrainState, Metrics]:
    """One optimizer step on `batch`; returns the new state and the step's metrics.

    Metrics: the task's (loss and its own metric, on this batch), `grad_norm` (global norm
    of the batch's gradient, before clipping), `lr` (the learning rate used) and
    `state_finite` (whether the updated params and optimizer state are free of NaN and inf: a
    finite loss and gradient can still give a non-finite update, e.g. through a huge learning
    rate).

    With `state.grad_accum` = K > 1 the gradient and metrics are accumulated over K
    micro-batches of B / K rows (see `_accumulated_grads`) before the one optimizer update,
    which is the whole batch's update to float rounding (without dropout).
    """
    key = _step_key(state)
    if state.grad_accum == 1:  # the plain step, so that K = 1 compiles to no scan at all
        grads, metrics = _grads(state, batch, key)
    else:
        grads, metrics = _accumulated_grads(state, batch, key)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads),
               "lr": jnp.asarray(state.schedule(state.step), jnp.float32),
               "state_finite": tree_is_finite((params, opt_state))}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def _grads(state: TrainState, batch: dict[str, Array], key: Array) -> tuple[Any, Metrics]:
    """The gradient of the task's loss on `batch` with respect to the params, and its metrics."""

    def loss_fn(params):
        metrics = state.task_metrics(_outputs(state, params, batch, key, True), batch)
        return metrics["loss"], metrics

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return grads, metrics


def _accumulated_grads(state: TrainState, batch: dict[str, Array],
                       key: Array) -> tuple[Any, Metrics]:
    """The gradient and metrics of the whole `batch`, from K = `state.grad_accum` micro-batches
    run one after another in a `lax.scan`, so that only one micro-batch's activations are live.

    Micro-batch j holds rows j, j + K, j + 2K, ... (a reshape (B, ...) -> (B/K, K, ...)): a
    device of the data-parallel mesh holds a contiguous block of rows, and since the block
    divides by K (`DataParallel.check_batch_size`), each micro-batch takes the same number of
    rows from every device's own block, and no row moves between devices.

    A task's loss is a mean over the batch's target steps, so the whole batch's loss is the
    micro-batches' losses averaged with weights w_j, their target steps (`_batch_weight`: the
    mask's sum, or rows x T_out), and by linearity so is its gradient:

        grad = sum_j w_j grad_j / sum_j w_j,    metrics = sum_j w_j metrics_j / sum_j w_j.

    An unweighted mean would be wrong wherever micro-batches have different numbers of valid
    target steps (masked per-step classification). Metrics that are not means over target
    steps (a square root of one, such as an RMSE) are averaged the same way, as evaluation
    averages held-out batches.

    Dropout: micro-batch j draws its masks from `fold_in(key, j)`, so with dropout they differ
    from the masks the whole batch would draw (the same distribution); without dropout the
    result is the whole batch's.
    """
    k = state.grad_accum

    def split(x: Array) -> Array:  # (B, ...) -> (K, B / K, ...): [j] is rows j, j + K, ...
        return jnp.swapaxes(jnp.reshape(x, (x.shape[0] // k, k, *x.shape[1:])), 0, 1)

    def accumulate(grad_sum: Any, micro: tuple[Array, dict[str, Array]]) -> tuple[Any, Any]:
        index, micro_batch = micro
        weight = _batch_weight(micro_batch)
        grads, metrics = _grads(state, micro_batch, jax.random.fold_in(key, index))
        grad_sum = jax.tree.map(lambda total, g: total + weight * g, grad_sum, grads)
        return grad_sum, (weight, metrics)

    grad_sum, (weights, metrics) = jax.lax.scan(
        accumulate, jax.tree.map(jnp.zeros_like, state.params),
        (jnp.arange(k), jax.tree.map(split, batch)))
    total = jnp.sum(weights)
    # A batch without any valid target step has loss 0 and gradient 0, as the whole batch has.
    scale = 1 / jnp.where(total > 0, total, 1)
    grads = jax.tree.map(lambda g: g * scale, grad_sum)
    return grads, jax.tree.map(lambda m: jnp.sum(weights * m) * scale, metrics)


def _batch_weight(batch: dict[str, Array]) -> Array:
    """The batch's target steps (`jaxlstm.tasks.base.target_steps`) as a float32 scalar."""
    return jnp.asarray(target_steps(batch), jnp.float32)


def tree_is_finite(tree: Any) -> Array:
    """Whether every floating-point leaf of `tree` is free of NaN and inf (a traced bool)."""
    checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
              if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def eval_step(state: TrainState, batch: dict[str, Array]) -> Metrics:
    """The task's metrics on `batch`, deterministic (no dropout; zoneout's expectation)."""
    return state.task_metrics(_outputs(state, state.params, batch, _step_key(state), False),
                              batch)


def predict(state: TrainState, batch: dict[str, Array]) -> Array:
    """The model's outputs on `batch`, deterministic."""
    return _outputs(state, state.params, batch, _step_key(state), False)


jit_train_step = jax.jit(train_step, donate_argnums=0)
jit_eval_step = jax.jit(eval_step)
jit_predict = jax.jit(predict)
