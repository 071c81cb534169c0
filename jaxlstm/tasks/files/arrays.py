"""`task.name: arrays`: sequences a user saved with NumPy.

`path` is an `.npz` file (`np.savez`) or a folder of `.npy` files (memory-mapped, so a folder can
be larger than memory), holding:

    inputs   (N, T, I) numbers, right-padded to T steps
    lengths  (N,) ints in [1, T], optional: valid steps per sequence (variable length)
    targets  one of
             (N,)       ints    sequence classification (read at each sequence's last step)
             (N, T)     ints    a label per step
             (N, O)     floats  regression of O values per sequence
             (N, T, O)  floats  regression at every step ((N, T) floats with readout: every)

The kind, read-out and sizes are inferred from the targets' dtype and shape and printed when a
run starts; `kind` (classification | regression), `readout` (last | every) and `num_classes`
force them. Splits are drawn by shuffling with `split_seed` (or come from `train_path` /
`valid_path` / `test_path`). Steps past a sequence's length count in no loss or metric.

Nothing pickled is ever loaded (`allow_pickle=False`): an array of Python objects (ragged rows,
say) is refused with a line saying how to save it instead.

Baselines: the training split's class frequencies (add-one smoothed) for classification, the
training targets' mean for regression.
"""

from __future__ import annotations

import dataclasses
import math
import os
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.tasks.base import (
    Batch,
    TaskSpec,
    classification_metrics,
    regression_metrics,
)
from jaxlstm.tasks.files import examples as ex
from jaxlstm.tasks.files.errors import DataError
from jaxlstm.tasks.files.examples import ArrayExamples, Examples
from jaxlstm.tasks.files.splits import (
    check_fractions,
    existing_file,
    resolve,
    source_paths,
    split_counts,
)
from jaxlstm.tasks.files.task import FileTask, Loaded, SplitOptions, display_path

KINDS = ("classification", "regression")
READOUTS = ("last", "every")
NAMES = ("inputs", "targets", "lengths")


@dataclasses.dataclass(eq=False)
class ArraysFormat:
    """Sequences with class labels or regression targets, read at the last step or every
    step (see the module docstring)."""

    kind: str
    readout: str
    input_size: int
    output_size: int
    steps: int
    has_lengths: bool

    task = "arrays"

    def spec(self) -> TaskSpec:
        classification = self.kind == "classification"
        return TaskSpec(name="arrays", input_size=self.input_size,
                        output_size=self.output_size, readout=self.readout, kind=self.kind,
                        metric="accuracy" if classification else "mse",
                        higher_is_better=classification)

    def collate(self, examples: ex.Example) -> Batch:
        batch = {"inputs": np.asarray(examples["inputs"], np.float32)}
        targets = examples["targets"]
        if self.kind == "classification":
            targets = np.asarray(targets, np.int32)
        else:
            targets = np.asarray(targets, np.float32)
        if self.readout == "last":
            targets = targets[:, None]  # (B, 1) or (B, 1, O)
        batch["targets"] = targets
        if self.has_lengths:
            lengths = np.asarray(examples["lengths"], np.int32)
            batch["lengths"] = lengths
            if self.readout == "every":
                batch["mask"] = (np.arange(self.steps) < lengths[:, None]).astype(np.float32)
        return batch

    def metrics(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        if self.kind == "classification":
            return classification_metrics(outputs, batch)
        return regression_metrics(outputs.astype(jnp.float32), batch)

    def baseline_fit(self, train: Examples) -> dict[str, Any]:
        """Class counts (classification) or the targets' mean (regression) over the
        training split's target steps."""
        sums, weight = np.zeros(self.output_size, np.float64), 0.0
        for chunk in ex.chunks(train):
            batch = self.collate(chunk)
            weights = _weights(batch).reshape(-1)
            if self.kind == "classification":
                sums += np.bincount(batch["targets"].reshape(-1), weights,
                                    minlength=self.output_size)[:self.output_size]
            else:
                targets = batch["targets"].reshape(-1, self.output_size)
                sums += (targets * weights[:, None]).sum(axis=0)
            weight += float(np.sum(weights))
        if self.kind == "classification":
            return {"class_counts": sums.tolist()}
        return {"target_mean": (sums / max(weight, 1.0)).tolist()}

    def baseline(self, fit: dict[str, Any], split: Examples) -> dict[str, float]:
        totals: dict[str, float] = {}
        weight_sum = 0.0
        for chunk in ex.chunks(split):
            batch = self.collate(chunk)
            weights = _weights(batch).reshape(-1)
            if self.kind == "classification":
                counts = np.asarray(fit["class_counts"]) + 1.0
                log_probs = np.log(counts / counts.sum())
                targets = batch["targets"].reshape(-1)
                values = {"cross_entropy": -log_probs[targets],
                          "accuracy": (targets == int(np.argmax(counts))).astype(np.float64)}
            else:
                mean = np.asarray(fit["target_mean"])
                targets = batch["targets"].reshape(-1, self.output_size)
                values = {"mse": np.mean((targets - mean) ** 2, axis=-1)}
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + float(np.sum(value * weights))
            weight_sum += float(np.sum(weights))
        result = {key: value / max(weight_sum, 1.0) for key, value in totals.items()}
        result["loss"] = result["cross_entropy" if self.kind == "classification" else "mse"]
        return result

    def state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ArraysFormat:
        return cls(**state)

    def artifacts(self) -> dict[str, str]:
        return {}

    def describe(self) -> str:
        lengths = ", variable lengths" if self.has_lengths else ""
        where = "at each sequence's last step" if self.readout == "last" else "at every step"
        what = (f"classification into {self.output_size} classes" if self.kind ==
                "classification" else f"regression of {self.output_size} value(s)")
        return f"T={self.steps}, I={self.input_size}{lengths}; {what}, read {where}"


def _weights(batch: Batch) -> np.ndarray:
    """Each target step's weight in the loss: its mask, or 1."""
    shape = batch["targets"].shape[:2]
    mask = batch.get("mask")
    return np.ones(shape) if mask is None else np.asarray(mask, np.float64)


@dataclasses.dataclass(eq=False)
class ArraysTask(SplitOptions, FileTask):
    """Sequences from an `.npz` file or a folder of `.npy` files (see the module docstring)."""

    split_seed: int = 0  # the shuffle that draws the valid and test sequences
    kind: str | None = None  # classification | regression; null: from the targets' dtype
    readout: str | None = None  # last | every; null: from the targets' shape
    num_classes: int | None = None  # null: the largest label + 1

    name = "arrays"
    FORMAT = ArraysFormat  # what `shards.load` rebuilds from a converted dataset

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"task.kind: expected one of {', '.join(KINDS)} or null, got "
                             f"{self.kind!r}.")
        if self.readout is not None and self.readout not in READOUTS:
            raise ValueError(f"task.readout: expected one of {', '.join(READOUTS)} or null, "
                             f"got {self.readout!r}.")
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"task.num_classes: expected an int >= 2 or null, got "
                             f"{self.num_classes!r}.")
        if not 0 <= self.split_seed < 2**32:
            raise ValueError(f"task.split_seed: expected an int in [0, 2**32), got "
                             f"{self.split_seed!r}.")
        check_fractions(self.valid_fraction, self.test_fraction)
        self._load()

    def _read(self) -> Loaded:
        paths = source_paths("arrays", self.path, self.train_path, self.valid_path,
                             self.test_path)
        arrays = {split: load_arrays(path) for split, path in paths.items()}
        checked = {split: check_arrays(path, arrays[split], self.kind, self.readout)
                   for split, path in paths.items()}
        first = next(iter(checked.values()))
        fmt = ArraysFormat(kind=first.kind, readout=first.readout, input_size=first.input_size,
                           output_size=0, steps=first.steps, has_lengths=first.has_lengths)
        for split, found in checked.items():  # files of one task must agree
            if found.layout_key() != first.layout_key():
                raise DataError(paths[split], f"its arrays do not match {paths['train']}'s "
                                              f"({found.summary} against {first.summary}).")
        if fmt.kind == "classification":
            fmt.output_size = class_count(paths, checked, self.num_classes)
        else:
            if self.num_classes is not None:
                raise ValueError("task.num_classes: applies to classification, not to "
                                 "regression targets; leave it out.")
            fmt.output_size = first.output_size
        if "all" in paths:
            size = len(checked["all"].arrays["inputs"])
            counts = split_counts(size, self.valid_fraction, self.test_fraction, paths["all"],
                                  "sequences")
            order = np.random.default_rng(self.split_seed).permutation(size)
            parts = {"test": order[:counts.test],
                     "valid": order[counts.test:counts.test + counts.valid],
                     "train": order[counts.test + counts.valid:]}
            sources = {split: ArrayExamples(checked["all"].arrays, np.sort(rows))
                       for split, rows in parts.items() if len(rows)}
            how = f"shuffled with split_seed {self.split_seed}"
            shown = display_path(paths["all"])
        else:
            sources = {split: ArrayExamples(found.arrays) for split, found in checked.items()}
            how = "one file per split"
            shown = display_path(paths["train"])
        files = sorted({f for path in paths.values() for f in data_files(path)})
        return Loaded(sources, fmt, files, f"{shown}, {how}")


@dataclasses.dataclass
class Checked:
    """A file's arrays after checking, and what they say about the task."""

    arrays: dict[str, np.ndarray]
    kind: str
    readout: str
    input_size: int
    output_size: int  # regression: O; classification: the largest label + 1
    steps: int
    has_lengths: bool
    summary: str

    def layout_key(self) -> tuple:
        """What must be equal across the files of one task (class labels may differ: each
        file holds the labels it happens to hold)."""
        size = self.output_size if self.kind == "regression" else None
        return (self.kind, self.readout, self.input_size, self.steps, self.has_lengths, size)


def data_files(path: str) -> list[str]:
    """The files behind `path`: itself, or a folder's .npy files."""
    full = resolve(path)
    if os.path.isdir(full):
        return [os.path.join(full, f"{name}.npy") for name in NAMES
                if os.path.isfile(os.path.join(full, f"{name}.npy"))]
    return [full]


def load_arrays(path: str) -> dict[str, np.ndarray]:
    """`inputs`, `targets` and (if present) `lengths` from an .npz file or a folder of .npy
    files (memory-mapped), never unpickling anything; DataError naming the file otherwise."""
    full = resolve(path)
    if os.path.isdir(full):
        missing = [n for n in ("inputs", "targets")
                   if not os.path.isfile(os.path.join(full, f"{n}.npy"))]
        if missing:
            found = sorted(f for f in os.listdir(full) if f.endswith(".npy"))
            raise DataError(path, f"the folder has no {missing[0]}.npy; expected inputs.npy "
                                  f"and targets.npy (and optionally lengths.npy), found "
                                  f"{found or 'no .npy files'}.")
        arrays = {}
        for name in NAMES:
            file = os.path.join(full, f"{name}.npy")
            if os.path.isfile(file):
                arrays[name] = _load_npy(file, name)
        return arrays
    existing_file(path, "a .npz file (np.savez) or a folder of .npy files")
    try:
        archive = np.load(full, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(path, f"not a readable .npz or .npy file ({_first_line(err)}); "
                              "expected a .npz file written by np.savez or a folder of .npy "
                              "files.") from None
    if isinstance(archive, np.ndarray):
        raise DataError(path, "holds a single array; expected a .npz file with 'inputs' and "
                              "'targets' (np.savez(path, inputs=..., targets=...)).")
    with archive:
        keys = set(archive.files)
        for name in ("inputs", "targets"):
            if name not in keys:
                raise DataError(path, f"has no '{name}' array; expected 'inputs' and "
                                      f"'targets' (and optionally 'lengths'), found "
                                      f"{sorted(keys)}.")
        arrays = {}
        for name in NAMES:
            if name in keys:
                try:
                    arrays[name] = archive[name]
                except ValueError as err:  # object arrays need pickle, which is refused
                    raise DataError(path, _object_message(name, err)) from None
    return arrays


def _load_npy(file: str, name: str) -> np.ndarray:
    if os.path.getsize(file) == 0:
        raise DataError(file, "the file is empty; expected a .npy array.")
    try:
        return np.load(file, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise DataError(file, _object_message(name, err)) from None
    except OSError as err:
        raise DataError(file, f"not a readable .npy file ({_first_line(err)}).") from None


def _object_message(name: str, err: Exception) -> str:
    hint = (" (ragged rows?) pad every sequence to one length T and give their lengths in a "
            "'lengths' array" if name == "inputs" else " save it as a numeric array")
    return (f"'{name}' holds Python objects, which would need pickle, and data files are "
            f"never unpickled;{hint}.")


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split("\n")[0].split())[:200] or type(err).__name__


def check_arrays(path: str, arrays: dict[str, np.ndarray], kind: str | None,
                 readout: str | None) -> Checked:
    """Checks one file's arrays against the layout in the module docstring and infers the
    kind and read-out; DataError naming the file, the array and the row otherwise."""
    inputs, targets = arrays["inputs"], arrays["targets"]
    lengths = arrays.get("lengths")
    if not _numeric(inputs):
        raise DataError(path, f"'inputs' must be numbers, got dtype {inputs.dtype}.")
    if inputs.ndim != 3:
        raise DataError(path, f"'inputs' must be (N, T, I) (sequences, steps, features), got "
                              f"shape {inputs.shape}" + (
                                  "; for one feature per step use inputs[..., None]"
                                  if inputs.ndim == 2 else "") + ".")
    size, steps, features = inputs.shape
    if size == 0 or steps == 0 or features == 0:
        raise DataError(path, f"'inputs' is empty (shape {inputs.shape}); expected at least "
                              "one sequence, step and feature.")
    _check_finite(path, "inputs", inputs)
    if not _numeric(targets):
        raise DataError(path, f"'targets' must be numbers, got dtype {targets.dtype}.")
    if len(targets) != size:
        raise DataError(path, f"'inputs' has {size} sequences but 'targets' has "
                              f"{len(targets)}; expected one target row per sequence.")
    if lengths is not None:
        if lengths.shape != (size,) or not np.issubdtype(lengths.dtype, np.integer):
            raise DataError(path, f"'lengths' must be (N,) = ({size},) ints, got shape "
                                  f"{lengths.shape} dtype {lengths.dtype}.")
        bad = np.flatnonzero((lengths < 1) | (lengths > steps))
        if len(bad):
            raise DataError(path, f"'lengths' row {bad[0]} is {lengths[bad[0]]}; expected "
                                  f"1 to T={steps}.")
    integral = np.issubdtype(targets.dtype, np.integer) or targets.dtype == np.bool_
    kind = kind or ("classification" if integral else "regression")
    if kind == "classification":
        targets = _labels(path, targets)
        if readout is None:
            readout = "last" if targets.ndim == 1 else "every"
        expected = (size,) if readout == "last" else (size, steps)
        if targets.shape != expected:
            raise DataError(path, f"class labels read at {'the last' if readout == 'last' else 'every'} "
                                  f"step must be {expected}, got 'targets' shape "
                                  f"{targets.shape}.")
        output_size = int(targets.max()) + 1
    else:
        targets = np.asarray(targets, np.float32) if integral else targets
        _check_finite(path, "targets", targets)
        if readout is None:
            readout = "every" if targets.ndim == 3 else "last"
        if targets.ndim == 1 and readout == "last":
            targets = targets[:, None]
        if targets.ndim == 2 and readout == "every":
            targets = targets[..., None]
        if readout == "last" and targets.ndim != 2:
            raise DataError(path, f"regression targets read at the last step must be (N, O), "
                                  f"got shape {targets.shape}.")
        if readout == "every" and targets.shape[:2] != (size, steps):
            raise DataError(path, f"regression targets read at every step must be (N, T, O) "
                                  f"= ({size}, {steps}, O), got shape {targets.shape}.")
        output_size = int(targets.shape[-1])
    checked = {"inputs": inputs, "targets": targets}
    if lengths is not None:
        checked["lengths"] = lengths
    summary = f"inputs {inputs.shape} {inputs.dtype}, targets {targets.shape} {targets.dtype}"
    return Checked(checked, kind, readout, features, output_size, steps, lengths is not None,
                   summary)


def _numeric(array: np.ndarray) -> bool:
    return (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) and not \
        np.issubdtype(array.dtype, np.complexfloating)


def _check_finite(path: str, name: str, array: np.ndarray) -> None:
    """DataError at the first row holding NaN or inf (checked in chunks: memory-mapped arrays
    are never read whole)."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    chunk = max(1, 2**24 // max(1, math.prod(array.shape[1:])))
    for start in range(0, len(array), chunk):
        part = np.asarray(array[start:start + chunk])
        finite = np.isfinite(part)
        if not finite.all():
            where = np.argwhere(~finite)[0]
            row = start + int(where[0])
            value = part[tuple(where)]
            index = ", ".join(str(int(i)) for i in (row, *where[1:]))
            raise DataError(path, f"'{name}' holds {value} at [{index}] (row {row}); expected "
                                  f"finite numbers (pad sequences with zeros and give "
                                  f"'lengths' instead of NaN padding).")


def _labels(path: str, targets: np.ndarray) -> np.ndarray:
    """Integer class labels >= 0; float targets must be whole numbers."""
    if np.issubdtype(targets.dtype, np.floating):
        _check_finite(path, "targets", targets)
        whole = np.floor(targets) == targets
        if not whole.all():
            row = int(np.argwhere(~whole)[0][0])
            raise DataError(path, f"'targets' row {row} is not a whole number; class labels "
                                  f"must be ints 0 .. num_classes - 1.")
    targets = np.asarray(targets, np.int64)
    if targets.size and targets.min() < 0:
        row = int(np.argwhere(targets < 0)[0][0])
        raise DataError(path, f"'targets' row {row} is {targets.reshape(len(targets), -1)[row].min()}; "
                              "class labels must be ints 0 .. num_classes - 1 (no negatives).")
    return targets.astype(np.int32)


def class_count(paths: dict[str, str], checked: dict[str, Checked],
                num_classes: int | None) -> int:
    """The number of classes: `num_classes`, checked against every file's labels, or the
    largest label + 1."""
    largest = max(found.output_size for found in checked.values())
    if num_classes is None:
        if largest < 2:
            raise DataError(next(iter(paths.values())), "every class label is 0; expected at "
                                                        "least two classes.")
        return largest
    for split, found in checked.items():
        if found.output_size > num_classes:
            targets = found.arrays["targets"]
            row = int(np.argwhere(targets.reshape(len(targets), -1) >= num_classes)[0][0])
            raise DataError(paths[split], f"'targets' row {row} has label "
                                          f"{targets.reshape(len(targets), -1)[row].max()}; "
                                          f"expected labels 0 .. {num_classes - 1} "
                                          f"(task.num_classes is {num_classes}).")
    return num_classes
