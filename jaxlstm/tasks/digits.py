"""Handwritten digits read as sequences: scikit-learn's `load_digits`, an offline MNIST stand-in.

1797 images of 8x8 pixels (values 0..16, scaled to [0, 1]), 10 classes. Row by row ("rows") the
LSTM reads T=8 steps of 8 pixels; pixel by pixel ("pixels") T=64 steps of one pixel, in
row-major order, and must hold what it saw across up to 63 steps. The class is read after the
last step. The held-out split is fixed (stratified, `test_fraction` of each class, drawn with a
fixed seed), the same for every run.

Baseline: a nearest class-mean classifier on all 64 pixels at once (an isotropic Gaussian per
class with a pooled variance, equal priors, fitted on the training split). It sees the whole
image, so it is a fair bar for an LSTM that must gather the image step by step; the
majority-class accuracy is reported beside it as "accuracy_majority".

Needs scikit-learn (`pip install 'jaxlstm[tasks]'`); the data ship inside it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxlstm.tasks._data import (
    Extra,
    check_batch_size,
    classification_summary,
    concat_outputs,
    epoch_indices,
    nearest_mean_fit,
    nearest_mean_log_probs,
    new_figure,
    require,
    save_figure,
    split_batches,
)
from jaxlstm.tasks.base import Batch, TaskSpec, check_split, classification_metrics

MODES = ("rows", "pixels")
NUM_CLASSES = 10
_SPLIT_SEED = 20240606  # the held-out split is the same for every run
NEEDS = Extra("sklearn.datasets", "scikit-learn")  # the data ship inside it


@functools.lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Images (1797, 8, 8) float32 in [0, 1] and labels (1797,) int32."""
    datasets = require(NEEDS, "digits")
    digits = datasets.load_digits()
    images = (np.asarray(digits.images, np.float32) / 16.0).reshape(-1, 8, 8)
    labels = np.asarray(digits.target, np.int32)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def stratified_split(labels: np.ndarray, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices, `round(test_fraction * n_k)` of each class k in test."""
    rng = np.random.default_rng(seed)
    test = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        count = round(test_fraction * len(members))
        test.append(rng.choice(members, count, replace=False))
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


@dataclasses.dataclass
class DigitsTask:
    """8x8 digits read row by row (`mode="rows"`, T=8, I=8) or pixel by pixel (`"pixels"`,
    T=64, I=1); `test_fraction` of each class is held out."""

    needs = NEEDS  # `jaxlstm configs` marks the configs of this task (`needs_extra`)

    mode: str = "rows"
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"task.mode must be one of {list(MODES)}, got {self.mode!r}.")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"task.test_fraction must be in (0, 1), got {self.test_fraction}.")
        images, labels = load_digits_arrays()
        steps, features = (8, 8) if self.mode == "rows" else (64, 1)
        sequences = images.reshape(len(images), steps, features)
        self.spec = TaskSpec(name="digits", input_size=features, output_size=NUM_CLASSES,
                             readout="last", kind="classification", metric="accuracy",
                             higher_is_better=True)
        self.train_indices, self.test_indices = stratified_split(
            labels, self.test_fraction, _SPLIT_SEED)
        self._train = {"inputs": sequences[self.train_indices],
                       "targets": labels[self.train_indices].reshape(-1, 1)}
        self._eval = {"inputs": sequences[self.test_indices],
                      "targets": labels[self.test_indices].reshape(-1, 1)}

    @property
    def train_size(self) -> int:
        return len(self.train_indices)

    def train_batch(self, seed: int, step: int, batch_size: int,
                    rows: slice | None = None) -> Batch:
        """Batch `step` of a per-epoch permutation of the training split."""
        batch_size = check_batch_size(batch_size, self.train_size, "digits")
        indices = epoch_indices(seed, step, batch_size, self.train_size)
        indices = indices if rows is None else indices[rows]
        return {k: v[indices] for k, v in self._train.items()}

    def eval_batches(self, batch_size: int, split: str = "valid") -> list[Batch]:
        check_split(split, self.spec.name)
        return split_batches(self._eval, batch_size)

    def baseline(self, split: str = "valid") -> dict[str, float]:
        """Nearest class mean over all 64 pixels, fitted on the training split; also the
        majority class's accuracy ("accuracy_majority")."""
        check_split(split, self.spec.name)
        train_x = self._train["inputs"].reshape(self.train_size, -1)
        train_y = self._train["targets"][:, 0]
        test_x = self._eval["inputs"].reshape(len(self.test_indices), -1)
        test_y = self._eval["targets"][:, 0]
        means, variance = nearest_mean_fit(train_x, train_y, NUM_CLASSES)
        result = classification_summary(nearest_mean_log_probs(test_x, means, variance), test_y)
        majority = np.bincount(train_y, minlength=NUM_CLASSES).argmax()
        result["accuracy_majority"] = float(np.mean(test_y == majority))
        return result

    metrics = staticmethod(classification_metrics)

    def plot(self, path: str | os.PathLike, outputs: Any, batches: Sequence[Batch]) -> Any:
        """The held-out confusion matrix (rows: true class, columns: predicted)."""
        outputs, batch = concat_outputs(outputs, batches)
        predicted = np.argmax(outputs[:, -1], axis=-1)
        truth = batch["targets"][:, -1]
        confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
        np.add.at(confusion, (truth, predicted), 1)
        accuracy = np.trace(confusion) / max(confusion.sum(), 1)
        figure = new_figure(6.0, 5.2)
        ax = figure.subplots()
        image = ax.imshow(confusion, cmap="Blues", interpolation="nearest")
        for i in range(NUM_CLASSES):
            for j in range(NUM_CLASSES):
                if confusion[i, j]:
                    dark = confusion[i, j] > confusion.max() / 2
                    ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
        ax.set_xticks(range(NUM_CLASSES))
        ax.set_yticks(range(NUM_CLASSES))
        ax.set_xlabel("predicted digit")
        ax.set_ylabel("true digit")
        figure.colorbar(image, ax=ax, pad=0.01)
        ax.set_title(f"Digits ({self.mode}), held-out confusion matrix: accuracy {accuracy:.1%}",
                     fontsize=10)
        return save_figure(figure, path)
