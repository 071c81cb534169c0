"""`task.name: text_file`: next-symbol prediction on any text file of the user's.

    level: byte   (default) the file's bytes, 256 symbols: any file, any encoding
    level: char   UTF-8 characters; the vocabulary is the training split's characters (sorted
                  by code point) plus one unknown symbol for characters seen only in the
                  held-out text; it is saved in the run folder (`vocab.json`), so
                  `jaxlstm sample` works on the run without the data

The text is cut by position: the first (1 - valid_fraction - test_fraction) of it trains, the
next part validates, the end tests (or `train_path` / `valid_path` / `test_path`). Each split is
read as consecutive windows of `seq_len` + 1 symbols (the last symbol of one window starts the
next), inputs one-hot and targets the next symbol; the metric is bits per symbol
("bits_per_char", as for the built-in `text` task). The text is held once, as small integer ids
(one byte per symbol at byte level): a 100 MB corpus takes about 100 MB, never one-hot floats;
one-hot inputs are made per batch.

Baseline: the training split's unigram distribution (add-one smoothed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.tasks.base import Batch, TaskSpec, classification_metrics
from jaxlstm.tasks.files import examples as ex
from jaxlstm.tasks.files.errors import DataError
from jaxlstm.tasks.files.examples import Examples, Window, WindowExamples
from jaxlstm.tasks.files.splits import (
    check_fractions,
    existing_file,
    source_paths,
    split_counts,
)
from jaxlstm.tasks.files.task import FileTask, Loaded, SplitOptions, display_path

LEVELS = ("byte", "char")
UNKNOWN_CHAR = "\N{REPLACEMENT CHARACTER}"  # how `decode` writes the unknown symbol
VOCAB_FILE = "vocab.json"


@dataclasses.dataclass(eq=False)
class TextFormat:
    """Windows of symbol ids -> one-hot inputs and next-symbol targets.

    Attributes:
        level: "byte" or "char".
        chars: the char-level vocabulary (id i is chars[i]; id len(chars) is unknown);
            None at byte level.
        seq_len: steps per window.
    """

    level: str
    chars: list[str] | None
    seq_len: int

    task = "text_file"

    def __post_init__(self) -> None:
        self._index = None if self.chars is None else {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return 256 if self.chars is None else len(self.chars) + 1

    @property
    def id_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.vocab_size <= 256 else
                        np.uint16 if self.vocab_size <= 2**16 else np.uint32)

    def spec(self) -> TaskSpec:
        return TaskSpec(name="text_file", input_size=self.vocab_size,
                        output_size=self.vocab_size, readout="every", kind="classification",
                        metric="bits_per_char")

    def encode(self, text: str) -> np.ndarray:
        """Symbol ids (int32) of `text`: its UTF-8 bytes, or its characters (unknown ones
        become the unknown id)."""
        if self._index is None:
            return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)
        unknown = len(self.chars)
        return np.array([self._index.get(c, unknown) for c in text], np.int32)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """The text of symbol ids (bytes that are not UTF-8, and the unknown symbol, become
        U+FFFD)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"ids must be in [0, {self.vocab_size}), got "
                             f"{ids.min()}..{ids.max()}.")
        if self.chars is None:
            return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
        return "".join(self.chars[i] if i < len(self.chars) else UNKNOWN_CHAR for i in ids)

    def collate(self, examples: ex.Example) -> Batch:
        ids = np.asarray(examples["ids"], np.int64)
        inputs = np.zeros((*ids[:, :-1].shape, self.vocab_size), np.float32)
        np.put_along_axis(inputs, ids[:, :-1, None], 1.0, axis=-1)
        return {"inputs": inputs, "targets": ids[:, 1:].astype(np.int32)}

    def metrics(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        metrics = classification_metrics(outputs, batch)
        metrics["bits_per_char"] = metrics["cross_entropy"] / jnp.log(2.0)
        return metrics

    def baseline_fit(self, train: Examples) -> dict[str, Any]:
        counts = np.zeros(self.vocab_size, np.float64)
        for chunk in ex.chunks(train):
            counts += np.bincount(np.asarray(chunk["ids"][:, 1:], np.int64).reshape(-1),
                                  minlength=self.vocab_size)
        return {"counts": counts.tolist()}

    def baseline(self, fit: dict[str, Any], split: Examples) -> dict[str, float]:
        counts = np.asarray(fit["counts"]) + 1.0
        log_probs = np.log(counts / counts.sum())
        total, hits, steps = 0.0, 0.0, 0
        for chunk in ex.chunks(split):
            targets = np.asarray(chunk["ids"][:, 1:], np.int64).reshape(-1)
            total -= float(np.sum(log_probs[targets]))
            hits += float(np.sum(targets == np.argmax(counts)))
            steps += targets.size
        cross_entropy = total / max(steps, 1)
        return {"loss": cross_entropy, "cross_entropy": cross_entropy,
                "accuracy": hits / max(steps, 1), "bits_per_char": cross_entropy / math.log(2)}

    def state(self) -> dict[str, Any]:
        return {"level": self.level, "chars": self.chars, "seq_len": self.seq_len}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TextFormat:
        return cls(level=state["level"], chars=state["chars"], seq_len=int(state["seq_len"]))

    def artifacts(self) -> dict[str, str]:
        return {VOCAB_FILE: json.dumps(self.state(), ensure_ascii=False) + "\n"}

    def describe(self) -> str:
        symbols = ("bytes, 256 symbols" if self.chars is None else
                   f"UTF-8 characters, {len(self.chars)} seen in training + unknown")
        return f"next-symbol prediction over {symbols}, windows of {self.seq_len}"


class Vocabulary:
    """A text_file run's symbols, read back from its run folder: the task as sampling sees
    it."""

    def __init__(self, fmt: TextFormat):
        self.format = fmt
        self.spec = fmt.spec()
        self.encode, self.decode, self.metrics = fmt.encode, fmt.decode, fmt.metrics


@dataclasses.dataclass(eq=False)
class TextFileTask(SplitOptions, FileTask):
    """Next-symbol prediction over a user's text file (see the module docstring)."""

    level: str = "byte"  # byte | char
    seq_len: int = 100  # steps per training window

    name = "text_file"
    FORMAT = TextFormat  # what `shards.load` rebuilds from a converted dataset

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"task.level: expected one of {', '.join(LEVELS)}, got "
                             f"{self.level!r}.")
        if self.seq_len < 1:
            raise ValueError(f"task.seq_len: expected a positive int, got {self.seq_len!r}.")
        check_fractions(self.valid_fraction, self.test_fraction)
        self._load()

    def encode(self, text: str) -> np.ndarray:
        return self.format.encode(text)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        return self.format.decode(ids)

    @classmethod
    def from_run_folder(cls, run_dir: str) -> Vocabulary:
        """A trained run's task as sampling needs it (`spec`, `encode`, `decode`,
        `metrics`), from the vocabulary saved in its run folder, without the data file."""
        path = os.path.join(run_dir, VOCAB_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                return Vocabulary(TextFormat.from_state(json.load(f)))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: the run's vocabulary cannot be read ({err}).") from None

    def _read(self) -> Loaded:
        paths = source_paths("text_file", self.path, self.train_path, self.valid_path,
                             self.test_path)
        expected = "UTF-8 text" if self.level == "char" else "a text file"
        texts = {split: self._codes(existing_file(path, expected), path)
                 for split, path in paths.items()}
        if "all" in paths:
            codes = texts.pop("all")
            counts = split_counts(len(codes), self.valid_fraction, self.test_fraction,
                                  paths["all"], "characters" if self.level == "char" else
                                  "bytes")
            bounds = {"train": (0, counts.train),
                      "valid": (counts.train, counts.train + counts.valid),
                      "test": (counts.train + counts.valid, len(codes))}
            texts = {split: codes[a:b] for split, (a, b) in bounds.items() if b > a}
        chars = None
        if self.level == "char":
            train = texts["train"]
            present = np.flatnonzero(np.bincount(train, minlength=1))
            chars = [chr(c) for c in present]
        fmt = TextFormat(self.level, chars, self.seq_len)
        if chars is not None:
            table = np.full(max(int(t.max()) for t in texts.values()) + 1, len(chars),
                            np.int64)
            table[present] = np.arange(len(chars))
            texts = {s: table[t].astype(fmt.id_dtype) for s, t in texts.items()}
        sources = {}
        for split, ids in texts.items():
            count = (len(ids) - 1) // self.seq_len
            if count < 1:
                where = paths.get(split, paths.get("all"))
                raise DataError(where, f"the {split} split has {len(ids)} symbols, fewer than "
                                       f"seq_len + 1 = {self.seq_len + 1}; expected more text "
                                       f"or a smaller task.seq_len.")
            sources[split] = WindowExamples({"ids": Window(ids, 0, self.seq_len + 1)},
                                            np.arange(count) * self.seq_len)
        files = sorted({os.path.abspath(p) for p in paths.values()})
        size = sum(os.path.getsize(f) for f in files)
        shown = display_path(paths.get("all", paths.get("train", "")))
        return Loaded(sources, fmt, files, f"{shown} ({size:,} bytes)")

    def _codes(self, full: str, path: str) -> np.ndarray:
        """The file's bytes (uint8), or its characters' code points (uint32) at char level."""
        if self.level == "byte":
            return np.fromfile(full, np.uint8)
        with open(full, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(path, f"not UTF-8 at byte {err.start} "
                                  f"({raw[err.start:err.start + 1]!r}); level 'char' reads "
                                  f"UTF-8 text (level 'byte' reads any file).") from None
        del raw
        return np.frombuffer(text.encode("utf-32-le"), np.uint32)
