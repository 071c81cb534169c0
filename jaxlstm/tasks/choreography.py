"""Choreography: classify synthetic dance phrases, limb-angle sequences of key poses.

A phrase is a sequence of `num_joints` joint angles (radians) over T=64 steps. It starts in a
rest pose, moves through four key poses A, B, C, D (each held for a while) and returns to rest;
every move is a smooth cosine transition. Each phrase perturbs its key poses slightly
(`pose_jitter`), draws its hold and transition lengths and its start time, and adds noise to
every step (`noise`). Eight classes:

    0  A B C D          1  D C B A          2  B A D C          3  C D A B
    4  A B C D, A held long   5  ..., B held long   6  ..., C held long   7  ..., D held long

Classes 0-3 (the "order-only" classes) differ only in the order of the same poses, with the
same hold lengths: their time-averaged angles have exactly the same distribution (every pose
is held for identically distributed times and, with the rest pose, enters exactly two
transitions, each of which averages to the midpoint of its ends). Classes 4-7 differ from class
0, and from each other, only in how long one pose is held. The class is read after the last step.

Baseline: an order-blind classifier on the mean pose, the nearest class centroid of the
time-averaged angles (an isotropic Gaussian per class, equal priors), fitted on 200 training
phrases per class. It can tell durations apart (they shift the mean) but not orders: on the
order-only classes it stays near chance ("order_only_accuracy", chance 1/4 or less).

Training phrases are drawn fresh for every (seed, step); the held-out set is fixed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.tasks._data import (
    classification_summary,
    concat_outputs,
    nearest_mean_fit,
    nearest_mean_log_probs,
    new_figure,
    save_figure,
    split_batches,
)
from jaxlstm.tasks.base import (
    Batch,
    TaskSpec,
    check_split,
    classification_metrics,
    step_rng,
    take_rows,
)

SEQ_LEN = 64
NUM_POSES = 4
ORDERS = ((0, 1, 2, 3), (3, 2, 1, 0), (1, 0, 3, 2), (2, 3, 0, 1))
NUM_ORDER_CLASSES = len(ORDERS)
NUM_CLASSES = NUM_ORDER_CLASSES + NUM_POSES  # + one "pose k held long" class per pose
POSE_NAMES = "ABCD"
HOLD = (4, 6)  # a pose's hold, inclusive range of steps
LONG_HOLD = (9, 11)  # a long hold
TRANSITION = (3, 5)  # a transition's length
START = (1, 4)  # steps at rest before the first transition
_POSE_SEED = 1729  # the key poses are the same for every run
_EVAL_SEED = 2**31 - 13
_BASELINE_SEED = 2**31 - 17
_BASELINE_PER_CLASS = 200


def class_names() -> list[str]:
    names = [" ".join(POSE_NAMES[p] for p in order) for order in ORDERS]
    names += [f"A B C D, {POSE_NAMES[k]} held long" for k in range(NUM_POSES)]
    return names


def key_poses(num_joints: int) -> tuple[np.ndarray, np.ndarray]:
    """The rest pose (J,) and the key poses (4, J): fixed, and each at least 0.5 radian (RMS
    over joints) from the others and from rest."""
    rng = np.random.default_rng([_POSE_SEED, num_joints])
    rest = np.zeros(num_joints)
    while True:
        poses = rng.uniform(-1.2, 1.2, (NUM_POSES, num_joints))
        points = np.concatenate([rest[None], poses])
        gaps = np.linalg.norm(points[:, None] - points[None], axis=-1) / np.sqrt(num_joints)
        if np.min(gaps + np.eye(len(points)) * 9) > 0.5:
            return rest, poses


def _transition(start: np.ndarray, end: np.ndarray, length: int) -> np.ndarray:
    """`length` steps easing from `start` to `end` (ends excluded, symmetric: averages to the
    midpoint)."""
    s = np.arange(1, length + 1) / (length + 1)
    weight = (1.0 - np.cos(np.pi * s)) / 2.0
    return start + weight[:, None] * (end - start)


def phrase(rng: np.random.Generator, label: int, rest: np.ndarray, poses: np.ndarray,
           pose_jitter: float, noise: float) -> np.ndarray:
    """One phrase of class `label`: (T, J) angles."""
    order = ORDERS[label] if label < NUM_ORDER_CLASSES else ORDERS[0]
    long_pose = label - NUM_ORDER_CLASSES if label >= NUM_ORDER_CLASSES else None
    jittered = poses + rng.normal(0.0, pose_jitter, poses.shape)
    start_rest = rest + rng.normal(0.0, pose_jitter, rest.shape)
    holds = rng.integers(HOLD[0], HOLD[1] + 1, NUM_POSES)  # per pose, before ordering
    if long_pose is not None:
        holds[long_pose] = rng.integers(LONG_HOLD[0], LONG_HOLD[1] + 1)
    transitions = rng.integers(TRANSITION[0], TRANSITION[1] + 1, NUM_POSES + 1)
    segments = [np.repeat(start_rest[None], rng.integers(START[0], START[1] + 1), axis=0)]
    previous = start_rest
    for n, pose in enumerate(order):
        segments.append(_transition(previous, jittered[pose], transitions[n]))
        segments.append(np.repeat(jittered[pose][None], holds[pose], axis=0))
        previous = jittered[pose]
    segments.append(_transition(previous, start_rest, transitions[-1]))
    angles = np.concatenate(segments)
    tail = np.repeat(start_rest[None], SEQ_LEN - len(angles), axis=0)
    angles = np.concatenate([angles, tail])
    return angles + rng.normal(0.0, noise, angles.shape)


@dataclasses.dataclass
class ChoreographyTask:
    """Eight classes of limb-angle phrases over `num_joints` joints (T=64); `eval_per_class`
    held-out phrases per class."""

    num_joints: int = 6
    noise: float = 0.1
    pose_jitter: float = 0.15
    eval_per_class: int = 100

    def __post_init__(self) -> None:
        if self.num_joints < 1:
            raise ValueError(f"task.num_joints must be >= 1, got {self.num_joints}.")
        for name in ("noise", "pose_jitter"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"task.{name} must be >= 0, got {getattr(self, name)}.")
        if self.eval_per_class < 1:
            raise ValueError(f"task.eval_per_class must be >= 1, got {self.eval_per_class}.")
        self.rest, self.poses = key_poses(self.num_joints)
        self.class_names = class_names()
        self.spec = TaskSpec(name="choreography", input_size=self.num_joints,
                             output_size=NUM_CLASSES, readout="last", kind="classification",
                             metric="accuracy", higher_is_better=True)
        # Classes interleaved (label = i % 8), so batches of a multiple of 8 are balanced.
        labels = np.tile(np.arange(NUM_CLASSES), self.eval_per_class)
        self._eval = self._batch(np.random.default_rng(_EVAL_SEED), labels)

    def _batch(self, rng: np.random.Generator, labels: np.ndarray) -> Batch:
        angles = np.stack([phrase(rng, int(label), self.rest, self.poses, self.pose_jitter,
                                  self.noise) for label in labels])
        return {"inputs": angles.astype(np.float32),
                "targets": labels.astype(np.int32).reshape(-1, 1)}

    def train_batch(self, seed: int, step: int, batch_size: int,
                    rows: slice | None = None) -> Batch:
        """Fresh phrases of uniformly drawn classes: inputs (B, 64, J), targets (B, 1)."""
        rng = step_rng(seed, step)
        return take_rows(self._batch(rng, rng.integers(0, NUM_CLASSES, int(batch_size))), rows)

    def eval_batches(self, batch_size: int, split: str = "valid") -> list[Batch]:
        """The held-out set in batches of `batch_size` rounded down to a multiple of 8 (at
        least 8), so every batch holds each class equally often and the per-batch
        "order_only_accuracy" averages exactly."""
        check_split(split, self.spec.name)
        size = max(NUM_CLASSES, int(batch_size) // NUM_CLASSES * NUM_CLASSES)
        return split_batches(self._eval, size)

    def baseline(self, split: str = "valid") -> dict[str, float]:
        """Nearest class centroid of the time-averaged angles (order-blind), fitted on
        200 training phrases per class."""
        check_split(split, self.spec.name)
        labels = np.tile(np.arange(NUM_CLASSES), _BASELINE_PER_CLASS)
        train = self._batch(np.random.default_rng(_BASELINE_SEED), labels)
        means, variance = nearest_mean_fit(train["inputs"].mean(axis=1), labels, NUM_CLASSES)
        test_labels = self._eval["targets"][:, 0]
        log_probs = nearest_mean_log_probs(self._eval["inputs"].mean(axis=1), means, variance)
        result = classification_summary(log_probs, test_labels)
        order = test_labels < NUM_ORDER_CLASSES
        result["order_only_accuracy"] = float(
            np.mean(np.argmax(log_probs[order], axis=1) == test_labels[order]))
        return result

    @staticmethod
    def metrics(outputs: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Cross-entropy and accuracy, and the accuracy on the order-only classes 0-3."""
        metrics = classification_metrics(outputs, batch)
        targets = batch["targets"][:, -1]
        correct = (jnp.argmax(outputs[:, -1], axis=-1) == targets).astype(jnp.float32)
        order = (targets < NUM_ORDER_CLASSES).astype(jnp.float32)
        metrics["order_only_accuracy"] = jnp.sum(correct * order) / jnp.maximum(
            jnp.sum(order), 1.0)
        return metrics

    def plot(self, path: str | os.PathLike, outputs: Any, batches: Sequence[Batch]) -> Any:
        """One held-out phrase per class: its joint angles over time, with the prediction."""
        outputs, batch = concat_outputs(outputs, batches)
        labels = batch["targets"][:, -1]
        predicted = np.argmax(outputs[:, -1], axis=-1)
        figure = new_figure(14.0, 6.0)
        axes = figure.subplots(2, NUM_CLASSES // 2, sharex=True, sharey=True)
        for label, ax in enumerate(axes.reshape(-1)):
            rows = np.flatnonzero(labels == label)
            if not len(rows):
                ax.set_axis_off()
                continue
            row = rows[0]
            for joint in range(self.num_joints):
                ax.plot(batch["inputs"][row, :, joint], lw=1.2, label=f"joint {joint}")
            verdict = "right" if predicted[row] == label else f"predicted {predicted[row]}"
            ax.set_title(f"{label}: {self.class_names[label]}\n({verdict})", fontsize=9)
            ax.grid(alpha=0.3)
        for ax in axes[-1]:
            ax.set_xlabel("time step")
        for ax in axes[:, 0]:
            ax.set_ylabel("angle (rad)")
        axes[0, 0].legend(fontsize=7, loc="lower left")
        figure.suptitle("Choreography: one held-out phrase per class (top row: order-only "
                        "classes; bottom row: one pose held long)")
        return save_figure(figure, path)
