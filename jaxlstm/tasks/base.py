"""What a task is: a data source, a loss, its own metric and a baseline to beat.

Batches are pure functions of (seed, step): `train_batch(seed, step, batch_size)` always returns
the same arrays, so a resumed run sees exactly the data an uninterrupted one would, and the
checkpoint needs only the step. `rows=slice(a, b)` returns rows a:b of that same batch: each
process of a data-parallel run builds only the rows its devices hold, and the global batch is
the same whatever the number of processes. Arrays are NumPy, batch-major:

    inputs   (B, T, I) float32
    targets  (B, T_out, O) float32 for regression, (B, T_out) int32 for classification
    lengths  (B,) int32, optional: valid steps per sequence
    mask     (B, T_out) float32, optional: which target steps count in the loss

A task's `readout` says where the model's outputs are read: "last" (the state after each
sequence's last valid step, T_out = 1) or "every" (every step, T_out = T).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Static facts about a task the model and the loop need.

    Attributes:
        name: the task's name in configs.
        input_size: I, features per step.
        output_size: O, the head's outputs per read-out step (classes for classification).
        readout: "last" or "every".
        kind: "regression" (mean squared error) or "classification" (cross-entropy).
        metric: the name of the task's own metric ("mse", "accuracy", "bits_per_char", ...).
        higher_is_better: whether a larger metric is better.
    """

    name: str
    input_size: int
    output_size: int
    readout: str
    kind: str
    metric: str
    higher_is_better: bool = False


class Task(Protocol):
    spec: TaskSpec

    def train_batch(self, seed: int, step: int, batch_size: int,
                    rows: slice | None = None) -> Batch:
        """The training batch of `step` (its `rows` only, if given), a pure function of its
        arguments."""

    def eval_batches(self, batch_size: int) -> list[Batch]:
        """The fixed held-out set, in batches."""

    def baseline(self) -> dict[str, float]:
        """The baseline's metrics on the held-out set (same names as `metrics`)."""

    def metrics(self, outputs: Array, batch: dict[str, Array]) -> dict[str, Array]:
        """The task's metrics for model outputs (B, T_out, O), jnp, summed-then-averaged
        by the caller with `batch_weight`; must include "loss" and `spec.metric`."""


def batch_weight(batch: dict[str, Any]) -> float:
    """How much a batch counts when averaging metrics over batches: its target steps."""
    mask = batch.get("mask")
    if mask is not None:
        return float(np.sum(mask))
    return float(np.shape(batch["targets"])[0] * np.shape(batch["targets"])[1])


def regression_metrics(outputs: Array, batch: dict[str, Array]) -> dict[str, Array]:
    """Mean squared error over target steps (and features), masked if the batch has a mask."""
    err = jnp.mean(jnp.square(outputs - batch["targets"]), axis=-1)
    mask = batch.get("mask")
    mse = jnp.mean(err) if mask is None else jnp.sum(err * mask) / jnp.maximum(jnp.sum(mask), 1)
    return {"loss": mse, "mse": mse}


def classification_metrics(outputs: Array, batch: dict[str, Array]) -> dict[str, Array]:
    """Cross-entropy (nats) and accuracy over target steps, masked if the batch has a mask."""
    log_probs = jax.nn.log_softmax(outputs.astype(jnp.float32), axis=-1)
    targets = batch["targets"]
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    correct = (jnp.argmax(outputs, axis=-1) == targets).astype(jnp.float32)
    mask = batch.get("mask")
    if mask is None:
        mask = jnp.ones_like(nll)
    count = jnp.maximum(jnp.sum(mask), 1)
    loss = jnp.sum(nll * mask) / count
    return {"loss": loss, "cross_entropy": loss, "accuracy": jnp.sum(correct * mask) / count}


def take_rows(batch: Batch, rows: slice | None) -> Batch:
    """Rows `rows` of every array of `batch` (all of them for None)."""
    return batch if rows is None else {key: value[rows] for key, value in batch.items()}


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The NumPy generator for one training batch: independent streams per (seed, step)."""
    return np.random.default_rng([int(seed), int(step)])
