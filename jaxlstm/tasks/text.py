"""Character-level language modelling on the text of Python's own `pydoc_data.topics`.

The text (about 465,000 characters of English technical prose in CPython 3.11) is the dict's
values joined in sorted key order. The vocabulary is newline and the 95 printable ASCII
characters, plus one unknown symbol for everything else (a few hundred curly quotes and dashes):
97 symbols, one-hot inputs. The target of each step is the next character; the metric is bits
per character (cross-entropy / ln 2). The held-out text is the last 10%, read as consecutive
windows of `seq_len` characters (each from a fresh state; the short tail is left out).

Training: each epoch cuts the training text into windows of `seq_len` + 1 characters from a
random offset and visits them in a random order, both drawn from `default_rng([seed, epoch])`.

Baseline: the unigram distribution of the training text (add-one smoothed) on the held-out text.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.tasks._data import check_batch_size, split_batches
from jaxlstm.tasks.base import Batch, TaskSpec, check_split, classification_metrics

VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))
UNKNOWN = len(VOCAB)  # the id of every other character
UNKNOWN_CHAR = "\N{REPLACEMENT CHARACTER}"  # how `decode` writes it
VOCAB_SIZE = len(VOCAB) + 1
TEST_FRACTION = 0.1

_TABLE = np.full(128, UNKNOWN, np.int32)
_TABLE[[ord(c) for c in VOCAB]] = np.arange(len(VOCAB), dtype=np.int32)
_CHARS = np.array(list(VOCAB) + [UNKNOWN_CHAR])


def encode(text: str) -> np.ndarray:
    """Character ids (len(text),) int32; characters outside the vocabulary become UNKNOWN."""
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    return np.where(codes < 128, _TABLE[np.minimum(codes, 127)], UNKNOWN).astype(np.int32)


def decode(ids: Iterable[int] | np.ndarray) -> str:
    """The text of character ids (UNKNOWN is written as U+FFFD)."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= VOCAB_SIZE):
        raise ValueError(f"ids must be in [0, {VOCAB_SIZE}), got {ids.min()}..{ids.max()}.")
    return "".join(_CHARS[ids])


@functools.lru_cache(maxsize=1)
def load_text() -> str:
    """The text of `pydoc_data.topics`: the dict's values in sorted key order."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def one_hot(ids: np.ndarray) -> np.ndarray:
    return np.eye(VOCAB_SIZE, dtype=np.float32)[ids]


@dataclasses.dataclass
class TextTask:
    """Next-character prediction over windows of `seq_len` characters."""

    seq_len: int = 100

    vocab_size = VOCAB_SIZE
    encode = staticmethod(encode)
    decode = staticmethod(decode)

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise ValueError(f"task.seq_len must be >= 1, got {self.seq_len}.")
        ids = encode(load_text())
        self.split = len(ids) - round(TEST_FRACTION * len(ids))
        self.train_ids = ids[:self.split]
        self.test_ids = ids[self.split:]
        count = (len(self.test_ids) - 1) // self.seq_len
        if count < 1:
            raise ValueError(f"task.seq_len must be < {len(self.test_ids)}, got {self.seq_len}.")
        starts = np.arange(count) * self.seq_len
        windows = self.test_ids[starts[:, None] + np.arange(self.seq_len + 1)]
        self._eval_windows = windows
        self.spec = TaskSpec(name="text", input_size=VOCAB_SIZE, output_size=VOCAB_SIZE,
                             readout="every", kind="classification", metric="bits_per_char")

    @property
    def windows_per_epoch(self) -> int:
        return (len(self.train_ids) - 1) // self.seq_len - 1

    def train_batch(self, seed: int, step: int, batch_size: int,
                    rows: slice | None = None) -> Batch:
        """Inputs (B, T, 97) one-hot, targets (B, T) int32: batch `step` of its epoch."""
        per_epoch = self.windows_per_epoch
        batch_size = check_batch_size(batch_size, per_epoch, "text")
        epoch, index = divmod(int(step), per_epoch // batch_size)
        rng = np.random.default_rng([int(seed), epoch])
        offset = int(rng.integers(0, self.seq_len))
        order = rng.permutation(per_epoch)[index * batch_size:(index + 1) * batch_size]
        starts = offset + (order if rows is None else order[rows]) * self.seq_len
        windows = self.train_ids[starts[:, None] + np.arange(self.seq_len + 1)]
        return self._batch(windows)

    @staticmethod
    def _batch(windows: np.ndarray) -> Batch:
        return {"inputs": one_hot(windows[:, :-1]),
                "targets": np.ascontiguousarray(windows[:, 1:], dtype=np.int32)}

    def eval_batches(self, batch_size: int, split: str = "valid") -> list[Batch]:
        check_split(split, self.spec.name)
        return [self._batch(w["windows"])
                for w in split_batches({"windows": self._eval_windows}, batch_size)]

    def baseline(self, split: str = "valid") -> dict[str, float]:
        """The training text's unigram distribution (add-one smoothed) on the held-out
        windows' targets."""
        check_split(split, self.spec.name)
        counts = np.bincount(self.train_ids, minlength=VOCAB_SIZE).astype(np.float64) + 1.0
        log_probs = np.log(counts / counts.sum())
        targets = self._eval_windows[:, 1:].reshape(-1)
        cross_entropy = float(-np.mean(log_probs[targets]))
        accuracy = float(np.mean(targets == np.argmax(counts)))
        return {"loss": cross_entropy, "cross_entropy": cross_entropy, "accuracy": accuracy,
                "bits_per_char": cross_entropy / math.log(2.0)}

    @staticmethod
    def metrics(outputs: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Cross-entropy (nats), accuracy and bits per character over every step."""
        metrics = classification_metrics(outputs, batch)
        metrics["bits_per_char"] = metrics["cross_entropy"] / jnp.log(2.0)
        return metrics
