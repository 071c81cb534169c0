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
import inspect
from collections.abc import Iterable
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


READOUTS = ("last", "every")
"""Where a task's targets are read: `TaskSpec.readout`."""

KINDS = ("regression", "classification")
"""A task's loss: `TaskSpec.kind`."""

SPLITS = ("valid", "test")
"""The held-out splits a task may have: "valid" (evaluated during training; early stopping and
the best checkpoint follow it) and "test" (evaluated once, at the end)."""


class SplitUnavailable(LookupError):
    """Raised by `eval_batches` / `baseline` for a split the task does not have (most built-in
    tasks have a validation split only): the runner says so in the summary instead of
    failing."""


class Task(Protocol):
    """What the runner needs of a task; the built-in tasks, the file tasks (`arrays`,
    `text_file`, `table`) and a user's own class (`task.name: "package.module:Class"`, or
    `run_experiment(config, task=...)`) all implement it.

    A user's own task is a dataclass in an importable module, named in the config as
    `task.name: "package.module:ClassName"` (the current directory is importable, as with
    `python -m`); `task.options` are its dataclass fields, type-checked like a built-in task's
    (`int`, `float`, `str`, `bool`, `X | None`, `list[str]`, `list[int]`, `list[float]`).
    `jaxlstm.tasks.make_task` imports and builds it, then checks that it has the required
    members below (`check_task`).

    Required:
        spec: a `TaskSpec` (readout "last" or "every", kind "regression" or "classification").
        train_batch(seed, step, batch_size, rows=None): the training batch of `step`, a pure
            function of its arguments; `rows` (a slice of the global batch) asks for those
            rows only, so that each process reads just what its devices hold.
        eval_batches(batch_size, split="valid"): a held-out split (one of `SPLITS`), in
            batches; a list is placed on the devices once and reused at every evaluation, any
            other iterable is read again at each evaluation (large held-out sets stream).
            Raises `SplitUnavailable` for a split the task does not have (the built-in tasks
            have "valid" only) and ValueError for a name not in `SPLITS`: a task's first
            line is `check_split(split, self.spec.name, available)`.
        baseline(split="valid"): a simple predictor's metrics on that split (same names as
            `metrics`); `SplitUnavailable` and ValueError as above.
        metrics(outputs, batch): the task's metrics, jnp; must include "loss" and
            `spec.metric`. The loss is a mean over target steps (as `batch_weight` counts
            them), so batches and micro-batches combine by weighted averaging. jit holds it
            as static data, so it must be hashable (a function or method is; a callable
            object must be). `regression_metrics` and `classification_metrics` serve most.

    A task written before splits existed (`eval_batches(batch_size)`, `baseline()`) still
    works: its held-out set is the "valid" split and it has no "test" split. Callers that
    may meet such a task use `held_out(task, batch_size, split)` and
    `baseline_of(task, split)`, which pass `split` only where the method takes it.

    Optional (used when present):
        describe() -> str: one line saying what was read (printed when a run starts).
        data_files() -> list[str]: the files the data comes from; the run folder records
            their sizes and content hashes, and a resume whose data changed is refused.
        artifacts() -> dict[str, str]: files (name -> text) the run folder keeps, e.g. a
            vocabulary or a normalisation (written once, when the run folder is made).
        plot(path, outputs, batches): the task's own picture of held-out predictions.
        encode / decode: text tasks, for sampling.
    """

    spec: TaskSpec

    def train_batch(self, seed: int, step: int, batch_size: int,
                    rows: slice | None = None) -> Batch:
        """The training batch of `step` (its `rows` only, if given), a pure function of its
        arguments."""

    def eval_batches(self, batch_size: int, split: str = "valid") -> Iterable[Batch]:
        """A fixed held-out split, in batches."""

    def baseline(self, split: str = "valid") -> dict[str, float]:
        """The baseline's metrics on a held-out split (same names as `metrics`)."""

    def metrics(self, outputs: Array, batch: dict[str, Array]) -> dict[str, Array]:
        """The task's metrics for model outputs (B, T_out, O), jnp, summed-then-averaged
        by the caller with `batch_weight`; must include "loss" and `spec.metric`."""


def check_split(split: str, task: str, available: tuple[str, ...] = ("valid",)) -> str:
    """`split`, if the task has it: the one check every task's `eval_batches` and `baseline`
    make first.

    Args:
        split: the split asked for.
        task: the task's name, for the message.
        available: the splits the task has ("valid" only for the built-in tasks).

    Raises:
        ValueError: `split` is not one of `SPLITS` (a caller's mistake).
        SplitUnavailable: a split the task does not have (not a mistake: most tasks have no
            test split, and the runner reports that instead of failing).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}.")
    if split not in available:
        raise SplitUnavailable(f"the {task} task has no {split!r} split (its held-out "
                               f"splits: {list(available)}).")
    return split


def _takes_split(method: Any) -> bool:
    """Whether `method` accepts a `split` keyword (by name or through **kwargs)."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): call it the old way
        return False
    return any((p.name == "split" and p.kind is not p.POSITIONAL_ONLY)
               or p.kind is p.VAR_KEYWORD for p in parameters)


def _call_for_split(method: Any, split: str, task: str, *args: Any) -> Any:
    if _takes_split(method):
        check_split(split, task, available=SPLITS)  # the task itself says which it has
        return method(*args, split=split)
    check_split(split, task)  # written before splits: its one held-out set is "valid"
    return method(*args)


def held_out(task: Task, batch_size: int, split: str = "valid") -> Iterable[Batch]:
    """`task.eval_batches(batch_size, split=split)`, also for a task whose `eval_batches`
    takes no `split` (written before splits existed): its held-out set is the "valid" split,
    and "test" raises `SplitUnavailable`, which the runner reports as "no test split".

    Raises:
        ValueError: `split` is not one of `SPLITS`.
        SplitUnavailable: the task has no such split.
    """
    return _call_for_split(task.eval_batches, split, task.spec.name, batch_size)


def baseline_of(task: Task, split: str = "valid") -> dict[str, float]:
    """`task.baseline(split=split)`, also for a task whose `baseline` takes no `split`
    (then "valid" only, as in `held_out`)."""
    return _call_for_split(task.baseline, split, task.spec.name)


def target_steps(batch: dict[str, Any]) -> Any:
    """A batch's target steps, what its loss averages over: the sum of its `mask`, or rows x
    T_out. NumPy batches give a NumPy number, traced ones a traced scalar (the train step
    weights gradient-accumulation micro-batches with it)."""
    mask = batch.get("mask")
    if mask is not None:
        return mask.sum()
    return batch["targets"].shape[0] * batch["targets"].shape[1]


def batch_weight(batch: dict[str, Any]) -> float:
    """How much a batch counts when averaging metrics over batches: its target steps."""
    return float(target_steps(batch))


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
