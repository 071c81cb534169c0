"""Formal languages that need state tracking, trained short and tested long (xLSTM, Sec. 4.1).

The xLSTM paper's formal-language experiments (NX-AI/xlstm `experiments/parity_xlstm*.yaml`,
after Delétang et al. 2023, "Neural Networks and the Chomsky Hierarchy") train on sequences of
3 to 40 tokens and test on 40 to 256: a model that tracks the state generalises to the longer
sequences, one that does not falls to chance there.

    parity             bits; the target is their sum mod 2                   (2 classes)
    cycle_navigation   moves stay / +1 / -1 on a cycle of 5 places from place 0;
                       the target is the place the walk ends on              (5 classes)

Each sequence is one-hot tokens with its length in `lengths`, padded to the longest in its set;
the target is read after the last valid step (readout "last"). The metric is accuracy on the
held-out long sequences; the baseline always answers the held-out set's most common class.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from jaxlstm.tasks._data import split_batches
from jaxlstm.tasks.base import (
    Batch,
    TaskSpec,
    check_split,
    classification_metrics,
    step_rng,
    take_rows,
)

CYCLE = 5  # places on cycle_navigation's cycle
MOVES = np.array([0, 1, -1])  # cycle_navigation's tokens: stay, +1, -1
_EVAL_SEED = 2**31 - 13  # the held-out set is the same for every run


def _parity_answer(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (np.sum(tokens * mask, axis=1) % 2).astype(np.int32)


def _cycle_answer(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (np.sum(MOVES[tokens] * mask, axis=1) % CYCLE).astype(np.int32)


LANGUAGES = {
    # name: (vocabulary size, number of classes, the answer from tokens and the valid mask)
    "parity": (2, 2, _parity_answer),
    "cycle_navigation": (len(MOVES), CYCLE, _cycle_answer),
}


def language_batch(rng: np.random.Generator, language: str, batch_size: int, min_len: int,
                   max_len: int) -> Batch:
    """Inputs (B, max_len, V) one-hot float32, lengths (B,) in [min_len, max_len], targets
    (B, 1) int32; tokens past a sequence's length are zero vectors."""
    vocabulary, _, answer = LANGUAGES[language]
    lengths = rng.integers(min_len, max_len + 1, batch_size).astype(np.int32)
    tokens = rng.integers(0, vocabulary, (batch_size, max_len))
    valid = np.arange(max_len)[None, :] < lengths[:, None]
    inputs = np.eye(vocabulary, dtype=np.float32)[tokens] * valid[..., None]
    return {"inputs": inputs.astype(np.float32), "lengths": lengths,
            "targets": answer(tokens, valid)[:, None]}


@dataclasses.dataclass
class FormalLanguageTask:
    """A formal language (`language`, set by each subclass), trained on lengths
    [train_min_len, train_max_len] and evaluated on `eval_size` sequences of lengths
    [eval_min_len, eval_max_len]."""

    language: ClassVar[str]
    train_min_len: int = 3
    train_max_len: int = 40
    eval_min_len: int = 40
    eval_max_len: int = 256
    eval_size: int = 512

    def __post_init__(self) -> None:
        for low, high in (("train_min_len", "train_max_len"), ("eval_min_len", "eval_max_len")):
            if not 1 <= getattr(self, low) <= getattr(self, high):
                raise ValueError(f"task.{low} and task.{high} must satisfy 1 <= {low} <= "
                                 f"{high}, got {getattr(self, low)} and {getattr(self, high)}.")
        if self.eval_size < 1:
            raise ValueError(f"task.eval_size must be >= 1, got {self.eval_size}.")
        vocabulary, classes, _ = LANGUAGES[self.language]
        self.spec = TaskSpec(name=self.language, input_size=vocabulary, output_size=classes,
                             readout="last", kind="classification", metric="accuracy",
                             higher_is_better=True)
        self._eval = language_batch(np.random.default_rng(_EVAL_SEED), self.language,
                                    self.eval_size, self.eval_min_len, self.eval_max_len)

    def train_batch(self, seed: int, step: int, batch_size: int,
                    rows: slice | None = None) -> Batch:
        batch = language_batch(step_rng(seed, step), self.language, batch_size,
                               self.train_min_len, self.train_max_len)
        return take_rows(batch, rows)

    def eval_batches(self, batch_size: int, split: str = "valid") -> list[Batch]:
        check_split(split, self.spec.name)
        return split_batches(self._eval, batch_size)

    def baseline(self, split: str = "valid") -> dict[str, float]:
        """Always the held-out set's most common class (its cross-entropy: the empirical
        class frequencies as the prediction)."""
        check_split(split, self.spec.name)
        _, classes, _ = LANGUAGES[self.language]
        counts = np.bincount(self._eval["targets"][:, 0], minlength=classes) / self.eval_size
        cross_entropy = float(-np.sum(counts[counts > 0] * np.log(counts[counts > 0])))
        return {"loss": cross_entropy, "cross_entropy": cross_entropy,
                "accuracy": float(counts.max())}

    metrics = staticmethod(classification_metrics)


class ParityTask(FormalLanguageTask):
    """Parity of a bit string, trained short and tested long."""

    language = "parity"


class CycleNavigationTask(FormalLanguageTask):
    """The end of a walk on a cycle of 5 places, trained short and tested long."""

    language = "cycle_navigation"
