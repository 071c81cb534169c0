"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology"; used in the xLSTM paper).

A sequence shows `num_pairs` key-value pairs, then asks for `num_queries` of the keys again;
at each query the model must answer the value that followed that key. Keys are drawn without
replacement from the first half of the vocabulary, values (with replacement) from the second:

    k1 v1 k2 v2 ... kN vN  q1 q2 ... qQ        targets: the value of q_j at q_j's step

Inputs are one-hot tokens (B, 2N+Q, vocab_size); the loss and accuracy count the query steps
only (`mask`). A model without associative memory can only guess among the values: accuracy
1 / (vocab_size / 2), the baseline. A matrix memory (a key-value store per head) is built for
this; an LSTM's vector state has to squeeze all N pairs into H numbers.
"""

from __future__ import annotations

import dataclasses
import math

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

_EVAL_SEED = 2**31 - 17  # the held-out set is the same for every run


def mqar_batch(rng: np.random.Generator, batch_size: int, vocab_size: int, num_pairs: int,
               num_queries: int) -> Batch:
    """Inputs (B, 2N+Q, V) one-hot float32, targets (B, 2N+Q) int32 (the value at query steps,
    0 elsewhere), mask (B, 2N+Q) float32 (1 at query steps)."""
    half = vocab_size // 2
    keys = np.argsort(rng.random((batch_size, half)), axis=1)[:, :num_pairs]
    values = rng.integers(half, vocab_size, (batch_size, num_pairs))
    asked = np.argsort(rng.random((batch_size, num_pairs)), axis=1)[:, :num_queries]
    rows = np.arange(batch_size)[:, None]
    context = np.stack([keys, values], axis=2).reshape(batch_size, 2 * num_pairs)
    tokens = np.concatenate([context, keys[rows, asked]], axis=1)
    length = 2 * num_pairs + num_queries
    targets = np.zeros((batch_size, length), np.int32)
    targets[:, 2 * num_pairs:] = values[rows, asked]
    mask = np.zeros((batch_size, length), np.float32)
    mask[:, 2 * num_pairs:] = 1.0
    inputs = np.eye(vocab_size, dtype=np.float32)[tokens]
    return {"inputs": inputs, "targets": targets, "mask": mask}


@dataclasses.dataclass
class MQARTask:
    """MQAR with `num_pairs` pairs, `num_queries` queries and `vocab_size` tokens."""

    vocab_size: int = 32
    num_pairs: int = 8
    num_queries: int = 8
    eval_size: int = 512

    def __post_init__(self) -> None:
        if self.vocab_size < 4 or self.vocab_size % 2:
            raise ValueError(f"task.vocab_size must be an even number >= 4, got "
                             f"{self.vocab_size}.")
        if not 1 <= self.num_pairs <= self.vocab_size // 2:
            raise ValueError(f"task.num_pairs must be in [1, vocab_size / 2 = "
                             f"{self.vocab_size // 2}], got {self.num_pairs}.")
        if not 1 <= self.num_queries <= self.num_pairs:
            raise ValueError(f"task.num_queries must be in [1, num_pairs = {self.num_pairs}], "
                             f"got {self.num_queries}.")
        if self.eval_size < 1:
            raise ValueError(f"task.eval_size must be >= 1, got {self.eval_size}.")
        self.spec = TaskSpec(name="mqar", input_size=self.vocab_size,
                             output_size=self.vocab_size, readout="every",
                             kind="classification", metric="accuracy", higher_is_better=True)
        self._eval = mqar_batch(np.random.default_rng(_EVAL_SEED), self.eval_size,
                                self.vocab_size, self.num_pairs, self.num_queries)

    def train_batch(self, seed: int, step: int, batch_size: int,
                    rows: slice | None = None) -> Batch:
        batch = mqar_batch(step_rng(seed, step), batch_size, self.vocab_size, self.num_pairs,
                           self.num_queries)
        return take_rows(batch, rows)

    def eval_batches(self, batch_size: int, split: str = "valid") -> list[Batch]:
        check_split(split, self.spec.name)
        return split_batches(self._eval, batch_size)

    def baseline(self, split: str = "valid") -> dict[str, float]:
        """Guessing uniformly among the vocab_size / 2 values at each query."""
        check_split(split, self.spec.name)
        values = self.vocab_size // 2
        cross_entropy = math.log(values)
        return {"loss": cross_entropy, "cross_entropy": cross_entropy, "accuracy": 1 / values}

    metrics = staticmethod(classification_metrics)
