"""The adding problem (Hochreiter & Schmidhuber 1997; the settings of Arjovsky et al. 2016).

Each step has two inputs: a value drawn from U[0, 1] and a marker. Exactly one step in each half
of the sequence is marked; the target is the sum of the two marked values, read after the last
step. Predicting 1 (the target's mean) scores MSE 1/6 = 0.167; solving it means carrying two
numbers across up to T steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxlstm.tasks.base import (
    Batch,
    TaskSpec,
    check_split,
    regression_metrics,
    step_rng,
    take_rows,
)

_EVAL_SEED = 2**31 - 7  # the held-out set is the same for every run


def adding_batch(rng: np.random.Generator, batch_size: int, seq_len: int) -> Batch:
    """Inputs (B, T, 2), targets (B, 1, 1)."""
    values = rng.uniform(0.0, 1.0, (batch_size, seq_len)).astype(np.float32)
    half = seq_len // 2
    first = rng.integers(0, half, batch_size)
    second = rng.integers(half, seq_len, batch_size)
    markers = np.zeros((batch_size, seq_len), np.float32)
    rows = np.arange(batch_size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    return {"inputs": np.stack([values, markers], axis=-1),
            "targets": targets.reshape(batch_size, 1, 1).astype(np.float32)}


@dataclasses.dataclass
class AddingTask:
    """The adding problem with sequences of `seq_len` steps; `eval_size` held-out sequences."""

    seq_len: int = 100
    eval_size: int = 1000

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ValueError(f"task.seq_len must be >= 2, got {self.seq_len}.")
        self.spec = TaskSpec(name="adding", input_size=2, output_size=1, readout="last",
                             kind="regression", metric="mse")
        self._eval = adding_batch(np.random.default_rng(_EVAL_SEED), self.eval_size,
                                  self.seq_len)

    def train_batch(self, seed: int, step: int, batch_size: int,
                    rows: slice | None = None) -> Batch:
        return take_rows(adding_batch(step_rng(seed, step), batch_size, self.seq_len), rows)

    def eval_batches(self, batch_size: int, split: str = "valid") -> list[Batch]:
        check_split(split, self.spec.name)
        return [{k: v[i:i + batch_size] for k, v in self._eval.items()}
                for i in range(0, self.eval_size, batch_size)]

    def baseline(self, split: str = "valid") -> dict[str, float]:
        """Always predicting 1, the target's mean."""
        check_split(split, self.spec.name)
        mse = float(np.mean((self._eval["targets"] - 1.0) ** 2))
        return {"loss": mse, "mse": mse}

    metrics = staticmethod(regression_metrics)
