"""`FileTask`: a task over a user's data files, whatever their kind.

A file task is three splits of examples (random-access sources, `examples`), and a *format*
that knows the kind of data (arrays, text, a table of time series): how examples become a
batch, the metrics, the baseline. Everything else is the same for every kind, and lives here:

- **training batches** are a pure function of (seed, step): batch `step` is positions
  [step * B, (step + 1) * B) of the training split repeated forever, each epoch in its own
  order (a permutation from `default_rng([seed, epoch])`: 4 bytes per example, computed once
  per epoch; Grain's own index shuffle was measured at ~120 us per index, 8 ms per batch of
  64, too slow to keep up with a small model); `rows` reads only those rows of it, so each
  process reads just what its devices hold;
- **held-out splits** ("valid", "test") are read in order; a small one is returned as a list
  (the runner keeps it on the devices), a large or on-disk one as a stream re-read at each
  evaluation;
- **baselines** are fitted on the training split and scored on a held-out one, in one pass of
  bounded memory each (converted datasets carry them, computed when they were written).

The concrete tasks (`ArraysTask`, `TextFileTask`, `TableTask`) are dataclasses of options with a
`_read()` that reads the files; `path` naming a folder made by `jaxlstm data convert` streams its
ArrayRecord shards instead (`shards.load`).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import jax
import numpy as np

from jaxlstm.tasks.base import SPLITS, Batch, TaskSpec, check_split
from jaxlstm.tasks.files import examples as ex
from jaxlstm.tasks.files.examples import Examples

HELD_IN_MEMORY_BYTES = 64 * 2**20
"""A held-out split whose batches take at most this much is returned as a list (placed on the
devices once); a larger one is streamed."""


class Format(Protocol):
    """What one kind of file data adds to its examples (see `arrays`, `text_file`, `table`)."""

    task: str  # the task's name in configs: "arrays", "text_file" or "table"

    def spec(self) -> TaskSpec: ...

    def collate(self, examples: ex.Example) -> Batch:
        """Stacked examples (B, ...) -> the batch the model and the metrics read."""

    def metrics(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        ...

    def baseline_fit(self, train: Examples) -> dict[str, Any]:
        """What the baseline learns from the training split (JSON-able)."""

    def baseline(self, fit: dict[str, Any], split: Examples) -> dict[str, float]:
        """The baseline's metrics on a held-out split."""

    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the format (JSON-able; kept in a converted dataset)."""

    def artifacts(self) -> dict[str, str]:
        """Files (name -> text) a run folder keeps (a vocabulary, a normalisation)."""

    def describe(self) -> str: ...


@dataclasses.dataclass
class Loaded:
    """What reading a task's files gives: the splits, the format, the files read, a one-line
    account of them, and baselines when they were precomputed."""

    splits: dict[str, Examples]
    format: Format
    files: list[str]
    description: str
    baselines: dict[str, dict[str, float]] | None = None


@dataclasses.dataclass(eq=False)
class SplitOptions:
    """The options every file task has: where the data is and how it is split."""

    path: str | None = None  # the data file (or a converted folder); split by the fractions
    train_path: str | None = None  # or one file per split:
    valid_path: str | None = None
    test_path: str | None = None  # optional: without it there is no test split
    valid_fraction: float = 0.1
    test_fraction: float = 0.1


class FileTask:
    """The task protocol (`jaxlstm.tasks.base.Task`) over a `Loaded` set of splits.

    Subclasses are dataclasses of options (`eq=False`: compared by identity, so the bound
    `metrics` can be static data under jit) that call `_load()` in `__post_init__`.
    """

    name: str  # the task's name in configs, set by each subclass

    def _read(self) -> Loaded:
        raise NotImplementedError

    def _load(self) -> None:
        from jaxlstm.tasks.files import shards

        path = getattr(self, "path", None)
        loaded = shards.load(self, path) if path and shards.is_converted(path) else self._read()
        self.splits = loaded.splits
        self.format = loaded.format
        self.spec = loaded.format.spec()
        self._files = loaded.files
        self._description = loaded.description
        self._baselines = dict(loaded.baselines or {})
        self._baseline_fit: dict[str, Any] | None = None
        self._orders: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()

    # --- the Task protocol ---------------------------------------------------------------

    def train_batch(self, seed: int, step: int, batch_size: int,
                    rows: slice | None = None) -> Batch:
        """Rows `rows` (default all) of training batch `step`: positions [step * B,
        (step + 1) * B) of the shuffled, endlessly repeated training split."""
        train = self.splits["train"]
        if not 1 <= batch_size <= len(train):
            raise ValueError(f"batch_size must be in [1, {len(train)}] (the training split's "
                             f"examples), got {batch_size}.")
        rows = rows or slice(0, batch_size)
        first = int(step) * batch_size
        indices = self._train_indices(int(seed), range(first + rows.start,
                                                       first + rows.stop))
        return self.format.collate(ex.read(train, indices))

    def eval_batches(self, batch_size: int, split: str = "valid") -> list[Batch] | Any:
        """Held-out `split` in order, in batches of `batch_size` (the last may be short): a
        list when it is small and in memory, else a stream read again at each pass."""
        source = self._split(split)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        batches = HeldOutStream(source, batch_size, self.format.collate)
        if isinstance(source, ex.RecordExamples) or not len(source):
            return batches
        first = next(iter(batches))
        per_example = sum(np.asarray(v).nbytes for v in first.values()) / len(
            next(iter(first.values())))
        return list(batches) if per_example * len(source) <= HELD_IN_MEMORY_BYTES else batches

    def baseline(self, split: str = "valid") -> dict[str, float]:
        """The format's baseline (fitted on the training split) on held-out `split`."""
        source = self._split(split)
        if split not in self._baselines:
            with self._lock:
                if self._baseline_fit is None:
                    self._baseline_fit = self.format.baseline_fit(self.splits["train"])
            self._baselines[split] = self.format.baseline(self._baseline_fit, source)
        return dict(self._baselines[split])

    def metrics(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return self.format.metrics(outputs, batch)

    # --- optional members the runner uses ------------------------------------------------

    def describe(self) -> str:
        """One line: what was read, how it was split, what the model will predict."""
        counts = " / ".join(f"{len(self.splits[s]):,}" for s in ("train", *SPLITS)
                            if s in self.splits)
        names = " / ".join(s for s in ("train", *SPLITS) if s in self.splits)
        return (f"{self.name}: {self._description}; {counts} examples ({names}); "
                f"{self.format.describe()}")

    def data_files(self) -> list[str]:
        """The files the data was read from (the run folder records their hashes)."""
        return list(self._files)

    def artifacts(self) -> dict[str, str]:
        return self.format.artifacts()

    # --- helpers -------------------------------------------------------------------------

    def _split(self, split: str) -> Examples:
        return self.splits[check_split(split, self.name,
                                       tuple(s for s in SPLITS if s in self.splits))]

    def _epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """The training split's order in `epoch`: a permutation drawn from
        `default_rng([seed, epoch])`, kept for the two most recent epochs (a batch may
        straddle two, and background threads read ahead)."""
        key = (seed, epoch)
        with self._lock:
            order = self._orders.get(key)
        if order is None:
            size = len(self.splits["train"])
            order = np.random.default_rng([seed, epoch]).permutation(size).astype(
                np.int32 if size < 2**31 else np.int64)
            with self._lock:
                self._orders[key] = order
                while len(self._orders) > 3:
                    self._orders.pop(next(iter(self._orders)))
        return order

    def _train_indices(self, seed: int, positions: range) -> np.ndarray:
        """Training example indices at `positions` of the endless, per-epoch shuffled
        sequence of the training split."""
        size = len(self.splits["train"])
        positions = np.arange(positions.start, positions.stop, dtype=np.int64)
        epochs = positions // size
        indices = np.empty(len(positions), np.int64)
        for epoch in np.unique(epochs):
            here = epochs == epoch
            indices[here] = self._epoch_order(seed, int(epoch))[positions[here] % size]
        return indices


class HeldOutStream:
    """A held-out split read in order, in collated batches, each time it is iterated."""

    def __init__(self, source: Examples, batch_size: int, collate: Any):
        self.source, self.batch_size, self.collate = source, int(batch_size), collate

    def __len__(self) -> int:
        return -(-len(self.source) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self.source), self.batch_size):
            stop = min(start + self.batch_size, len(self.source))
            yield self.collate(ex.read(self.source, np.arange(start, stop)))


def display_path(path: str) -> str:
    """A path as the user gave it, shortened to its name when it is absolute and long."""
    return path if len(path) < 60 else os.path.basename(path)
