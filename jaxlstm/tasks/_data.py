"""Helpers the tasks share: epochs over finite datasets, batching, optional imports, plots."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxlstm.tasks.base import Batch


@dataclasses.dataclass(frozen=True)
class Extra:
    """An optional dependency of a task: the module it imports, the package that provides it
    and the jaxlstm extra that installs that package."""

    module: str  # e.g. "sklearn.datasets"
    package: str  # e.g. "scikit-learn"
    extra: str = "tasks"

    @property
    def install(self) -> str:
        return f"pip install 'jaxlstm[{self.extra}]'"

    def installed(self) -> bool:
        """Whether the package can be imported, without importing it (cheap: `jaxlstm
        configs` asks for every shipped config)."""
        try:
            return importlib.util.find_spec(self.module.split(".")[0]) is not None
        except (ImportError, ValueError):
            return False


class MissingExtra(ImportError, ValueError):
    """A task needs an optional dependency that is not installed. An ImportError (a module is
    missing) and a ValueError (the config's `task.name` cannot be built on this install), so
    that the runner's check of the task options reports it as one config line, exit code 2."""


def require(extra: Extra, task: str) -> Any:
    """Imports `extra.module`, or raises MissingExtra saying how to install it."""
    try:
        return importlib.import_module(extra.module)
    except ImportError as error:
        message = f"task.name: {task} needs {extra.package}: {extra.install}"
        raise MissingExtra(message) from error


def check_batch_size(batch_size: int, available: int, task: str) -> int:
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if batch_size > available:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {task} task's {available} training "
            "examples."
        )
    return batch_size


def epoch_indices(seed: int, step: int, batch_size: int, size: int) -> np.ndarray:
    """The example indices of training batch `step` over a dataset of `size` examples.

    Each epoch is a permutation drawn from `np.random.default_rng([seed, epoch])`, cut into
    `size // batch_size` batches (the remainder is left out of that epoch), so the batch is a
    pure function of (seed, step, batch_size).
    """
    per_epoch = size // batch_size
    epoch, index = divmod(int(step), per_epoch)
    order = np.random.default_rng([int(seed), epoch]).permutation(size)
    return order[index * batch_size:(index + 1) * batch_size]


def split_batches(arrays: Batch, batch_size: int) -> list[Batch]:
    """Cuts a dict of equally long arrays into consecutive batches (the last may be short)."""
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    size = len(next(iter(arrays.values())))
    return [{k: v[i:i + batch_size] for k, v in arrays.items()}
            for i in range(0, size, batch_size)]


def concat_outputs(outputs: Any, batches: Sequence[Batch]) -> tuple[np.ndarray, Batch]:
    """Model outputs and their batches as single NumPy arrays, for plots.

    `outputs` is one array for all of `batches` or a sequence with one array per batch.
    """
    if isinstance(outputs, (list, tuple)):
        outputs = np.concatenate([np.asarray(o, np.float32) for o in outputs], axis=0)
    else:
        outputs = np.asarray(outputs, np.float32)
    batch = {k: np.concatenate([np.asarray(b[k]) for b in batches], axis=0)
             for k in batches[0]}
    return outputs, batch


def nearest_mean_fit(features: np.ndarray, labels: np.ndarray,
                     num_classes: int) -> tuple[np.ndarray, float]:
    """Class means and the pooled per-feature variance of an isotropic Gaussian per class."""
    features = np.asarray(features, np.float64)
    means = np.stack([features[labels == k].mean(axis=0) for k in range(num_classes)])
    variance = float(np.mean((features - means[labels]) ** 2))
    return means, max(variance, 1e-12)


def nearest_mean_log_probs(features: np.ndarray, means: np.ndarray,
                           variance: float) -> np.ndarray:
    """Class log-probabilities under equal priors: the arg max is the nearest class mean."""
    features = np.asarray(features, np.float64)
    sq = np.sum((features[:, None, :] - means[None]) ** 2, axis=-1)
    logits = -sq / (2.0 * variance)
    logits -= logits.max(axis=1, keepdims=True)
    return logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))


def classification_summary(log_probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Cross-entropy (nats) and accuracy of fixed class log-probabilities."""
    nll = -log_probs[np.arange(len(labels)), labels]
    accuracy = float(np.mean(np.argmax(log_probs, axis=1) == labels))
    return {"loss": float(np.mean(nll)), "cross_entropy": float(np.mean(nll)),
            "accuracy": accuracy}


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure with an Agg canvas, without pyplot (nothing global changes)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("Task plots need matplotlib: pip install 'jaxlstm[plot]'") from error

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Any, path: str | os.PathLike) -> Any:
    figure.savefig(os.fspath(path), dpi=110)
    return figure
