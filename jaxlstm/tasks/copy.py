"""The copy (memory) task (Hochreiter & Schmidhuber 1997; the settings of Arjovsky et al. 2016).

Alphabet a0..a9: a0..a7 are symbols, a8 the blank, a9 the delimiter. The input is 10 symbols
drawn iid from a0..a7, then T-1 blanks, the delimiter and 10 more blanks (T+20 steps, one-hot);
the target is T+10 blanks followed by the 10 symbols. The loss is the mean cross-entropy over
all T+20 steps. A memoryless model that outputs blanks and then guesses uniformly among the 8
symbols scores 10 log(8) / (T+20) nats (0.173 at T=100); beating it means carrying 10 symbols
across T steps.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.tasks._data import concat_outputs, new_figure, save_figure, split_batches
from jaxlstm.tasks.base import (
    Batch,
    TaskSpec,
    check_split,
    classification_metrics,
    step_rng,
    take_rows,
)

NUM_SYMBOLS = 8  # a0..a7
BLANK = 8  # a8
DELIMITER = 9  # a9
ALPHABET = 10
RECALL = 10  # symbols to copy
_EVAL_SEED = 2**31 - 11  # the held-out set is the same for every run


def copy_batch(rng: np.random.Generator, batch_size: int, seq_len: int) -> Batch:
    """Inputs (B, T+20, 10) one-hot float32, targets (B, T+20) int32."""
    length = seq_len + 2 * RECALL
    symbols = rng.integers(0, NUM_SYMBOLS, (batch_size, RECALL))
    ids = np.full((batch_size, length), BLANK, np.int64)
    ids[:, :RECALL] = symbols
    ids[:, RECALL + seq_len - 1] = DELIMITER
    targets = np.full((batch_size, length), BLANK, np.int32)
    targets[:, -RECALL:] = symbols
    inputs = np.eye(ALPHABET, dtype=np.float32)[ids]
    return {"inputs": inputs, "targets": targets}


def memoryless_cross_entropy(seq_len: int) -> float:
    """10 log(8) / (T+20): blanks predicted perfectly, the 10 symbols guessed uniformly."""
    return RECALL * math.log(NUM_SYMBOLS) / (seq_len + 2 * RECALL)


@dataclasses.dataclass
class CopyTask:
    """The copy task with a gap of `seq_len` steps; `eval_size` held-out sequences."""

    seq_len: int = 100
    eval_size: int = 1000

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise ValueError(f"task.seq_len must be >= 1, got {self.seq_len}.")
        if self.eval_size < 1:
            raise ValueError(f"task.eval_size must be >= 1, got {self.eval_size}.")
        self.spec = TaskSpec(name="copy", input_size=ALPHABET, output_size=ALPHABET,
                             readout="every", kind="classification", metric="cross_entropy")
        self._eval = copy_batch(np.random.default_rng(_EVAL_SEED), self.eval_size,
                                self.seq_len)

    def train_batch(self, seed: int, step: int, batch_size: int,
                    rows: slice | None = None) -> Batch:
        return take_rows(copy_batch(step_rng(seed, step), batch_size, self.seq_len), rows)

    def eval_batches(self, batch_size: int, split: str = "valid") -> list[Batch]:
        check_split(split, self.spec.name)
        return split_batches(self._eval, batch_size)

    def baseline(self, split: str = "valid") -> dict[str, float]:
        """The memoryless strategy: its cross-entropy is the formula 10 log(8) / (T+20); its
        accuracies are expectations (blanks all right, each recalled symbol right 1 in 8)."""
        check_split(split, self.spec.name)
        length = self.seq_len + 2 * RECALL
        cross_entropy = memoryless_cross_entropy(self.seq_len)
        return {"loss": cross_entropy, "cross_entropy": cross_entropy,
                "accuracy": (length - RECALL + RECALL / NUM_SYMBOLS) / length,
                "recall_accuracy": 1.0 / NUM_SYMBOLS}

    @staticmethod
    def metrics(outputs: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Cross-entropy and accuracy over every step, and the accuracy on the 10 recalled
        symbols ("recall_accuracy")."""
        metrics = classification_metrics(outputs, batch)
        recalled = jnp.argmax(outputs[:, -RECALL:], axis=-1) == batch["targets"][:, -RECALL:]
        metrics["recall_accuracy"] = jnp.mean(recalled.astype(jnp.float32))
        return metrics

    def plot(self, path: str | os.PathLike, outputs: Any, batches: Sequence[Batch]) -> Any:
        """One held-out sequence: its input symbols and the model's probabilities over time,
        with the targets marked."""
        outputs, batch = concat_outputs(outputs, batches)
        logits = outputs[0] - outputs[0].max(axis=-1, keepdims=True)
        probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
        inputs = batch["inputs"][0]
        targets = batch["targets"][0]
        steps = np.arange(len(targets))
        labels = [f"a{k}" for k in range(NUM_SYMBOLS)] + ["blank", "delim"]
        figure = new_figure(max(8.0, min(16.0, len(targets) / 10)), 5.5)
        top, bottom = figure.subplots(2, 1, sharex=True)
        for ax, data, title in ((top, inputs, "input (one-hot)"),
                                (bottom, probs, "model's probabilities; dots: targets")):
            image = ax.imshow(data.T, aspect="auto", origin="lower", cmap="viridis", vmin=0,
                              vmax=1, interpolation="nearest")
            ax.set_yticks(range(ALPHABET), labels, fontsize=7)
            ax.set_title(title, loc="left", fontsize=10)
            figure.colorbar(image, ax=ax, pad=0.01)
        bottom.scatter(steps, targets, s=6, c="red")
        bottom.set_xlabel("time step")
        recalled = np.mean(np.argmax(probs[-RECALL:], axis=-1) == targets[-RECALL:])
        figure.suptitle(f"Copy task, T={self.seq_len}: {recalled:.0%} of this sequence's "
                        f"{RECALL} symbols recalled")
        return save_figure(figure, path)
