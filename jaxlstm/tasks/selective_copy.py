"""Selective copying (Gu & Dao 2023, "Mamba", Sec. 4.1; Feng et al. 2024, "Were RNNs All We
Needed?").

A sequence of `seq_len` steps holds `num_tokens` data tokens, drawn iid from `vocab_size`
symbols, at random positions among blanks, then `num_tokens` markers; at the j-th marker the
model must answer the j-th data token in order of appearance:

    .  a3 .  .  a0 .  a3 .  .  a5 .  .  #  #  #  #      (. blank, # marker)
    targets at the markers:                a3 a0 a3 a5

Unlike the copy task the positions vary, so the model must select what to keep by content
rather than count steps. The data tokens sit anywhere in the first `seq_len - num_tokens`
steps (a data token may be right before the first marker). Token ids: the symbols
0..vocab_size-1, the blank vocab_size, the marker vocab_size+1; inputs are one-hot
(B, seq_len, vocab_size + 2), the head has vocab_size classes, and the loss and accuracy count
the marker steps only (`mask`). In the terms of the reference generator (`torch_copying_data`,
variable=True, after S4's copying.py: L blanks, M tokens), seq_len = L + 2M.

Metrics: per-token accuracy at the markers ("accuracy") and the fraction of sequences with
every token right ("exact_match"). The baseline guesses uniformly: 1 / vocab_size per token.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
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

_EVAL_SEED = 2**31 - 19  # the held-out set is the same for every run


def selective_copy_batch(rng: np.random.Generator, batch_size: int, seq_len: int,
                         num_tokens: int, vocab_size: int) -> Batch:
    """Inputs (B, T, V+2) one-hot float32, targets (B, T) int32 (the j-th data token at the
    j-th marker, 0 elsewhere), mask (B, T) float32 (1 at the markers)."""
    context = seq_len - num_tokens
    symbols = rng.integers(0, vocab_size, (batch_size, num_tokens))
    # Sorted distinct positions: the first num_tokens of a random permutation of the context.
    positions = np.sort(np.argsort(rng.random((batch_size, context)), axis=1)[:, :num_tokens],
                        axis=1)
    ids = np.full((batch_size, seq_len), vocab_size, np.int64)
    np.put_along_axis(ids, positions, symbols, axis=1)
    ids[:, context:] = vocab_size + 1
    targets = np.zeros((batch_size, seq_len), np.int32)
    targets[:, context:] = symbols
    mask = np.zeros((batch_size, seq_len), np.float32)
    mask[:, context:] = 1.0
    inputs = np.eye(vocab_size + 2, dtype=np.float32)[ids]
    return {"inputs": inputs, "targets": targets, "mask": mask}


@dataclasses.dataclass
class SelectiveCopyTask:
    """Selective copying of `num_tokens` tokens of `vocab_size` symbols in `seq_len` steps
    (markers included); `eval_size` held-out sequences."""

    seq_len: int = 64
    num_tokens: int = 8
    vocab_size: int = 8
    eval_size: int = 512

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ValueError(f"task.vocab_size must be >= 2, got {self.vocab_size}.")
        if self.num_tokens < 1:
            raise ValueError(f"task.num_tokens must be >= 1, got {self.num_tokens}.")
        if self.seq_len < 2 * self.num_tokens:
            raise ValueError(f"task.seq_len must be >= 2 * num_tokens = {2 * self.num_tokens} "
                             f"(the tokens, then as many markers), got {self.seq_len}.")
        if self.eval_size < 1:
            raise ValueError(f"task.eval_size must be >= 1, got {self.eval_size}.")
        self.spec = TaskSpec(name="selective_copy", input_size=self.vocab_size + 2,
                             output_size=self.vocab_size, readout="every",
                             kind="classification", metric="accuracy", higher_is_better=True)
        self._eval = selective_copy_batch(np.random.default_rng(_EVAL_SEED), self.eval_size,
                                          self.seq_len, self.num_tokens, self.vocab_size)

    def train_batch(self, seed: int, step: int, batch_size: int,
                    rows: slice | None = None) -> Batch:
        batch = selective_copy_batch(step_rng(seed, step), batch_size, self.seq_len,
                                     self.num_tokens, self.vocab_size)
        return take_rows(batch, rows)

    def eval_batches(self, batch_size: int, split: str = "valid") -> list[Batch]:
        check_split(split, self.spec.name)
        return split_batches(self._eval, batch_size)

    def baseline(self, split: str = "valid") -> dict[str, float]:
        """Guessing uniformly among the vocab_size symbols at each marker."""
        check_split(split, self.spec.name)
        cross_entropy = math.log(self.vocab_size)
        return {"loss": cross_entropy, "cross_entropy": cross_entropy,
                "accuracy": 1 / self.vocab_size,
                "exact_match": float(self.vocab_size) ** -self.num_tokens}

    @staticmethod
    def metrics(outputs: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Cross-entropy and accuracy at the markers, and "exact_match": the fraction of
        sequences with every marker right. Every sequence has the same number of markers, so
        the caller's weighting by marker count averages it over sequences."""
        metrics = classification_metrics(outputs, batch)
        wrong = (jnp.argmax(outputs, axis=-1) != batch["targets"]) & (batch["mask"] > 0)
        metrics["exact_match"] = jnp.mean(1.0 - jnp.any(wrong, axis=1).astype(jnp.float32))
        return metrics
