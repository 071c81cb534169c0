"""Converted datasets: a file task's splits written as ArrayRecord shards, and read back
streaming (`jaxlstm data convert SRC DEST`; then `task.options.path: DEST`).

    DEST/
      dataset.json                          what the dataset is; written last
      train-00000-of-00004.array_record     the training examples, in order
      ...
      valid-00000-of-00001.array_record
      test-00000-of-00001.array_record

Each record is one example, its fields' raw bytes in the order `dataset.json`'s layout gives
(`examples.Layout`): nothing pickled. Shards are written with ArrayRecord's `group_size:1`, so
one example is one read (`examples.RecordExamples`), and batches of them are read ahead by the
runner's Grain loader (`jaxlstm.train.loader`). `dataset.json`
holds the task and the options it was converted with, the format's state (a vocabulary, a
normalisation, the inferred kind), each split's example count and files, the baselines (computed
once, here, so that a large dataset is not read again for them), and the source files' sizes
and hashes.

The conversion writes into a temporary folder beside DEST and renames it into place at the
end, so DEST is either absent or complete: an interrupted conversion leaves no half dataset.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

from jaxlstm.tasks.base import SPLITS
from jaxlstm.tasks.files import examples as ex
from jaxlstm.tasks.files.errors import DataError
from jaxlstm.tasks.files.examples import Layout, RecordExamples
from jaxlstm.tasks.files.fingerprint import fingerprints
from jaxlstm.tasks.files.splits import resolve
from jaxlstm.tasks.files.task import FileTask, Loaded

METADATA = "dataset.json"
FORMAT_NAME = "jaxlstm-records"
VERSION = 1
SHARD_BYTES = 256 * 2**20  # about this much per shard file
# One record per chunk, so a random access reads one record; uncompressed, since float arrays
# barely compress and decompression would cost every read.
WRITER_OPTIONS = "group_size:1,uncompressed"


def is_converted(path: str) -> bool:
    """Whether `path` is a folder written by `convert` (it has a dataset.json)."""
    return os.path.isfile(os.path.join(resolve(path), METADATA))


def convert(task: FileTask, dest: str, options: dict[str, Any], *,
            shard_bytes: int = SHARD_BYTES, say: Callable[[str], None] | None = None
            ) -> dict[str, Any]:
    """Writes `task`'s splits into `dest` as ArrayRecord shards; returns dataset.json's
    content.

    Args:
        task: a file task read from its source files.
        dest: a folder that does not exist yet (or is empty).
        options: the task options it was built with (recorded, and compared when read).
        shard_bytes: about how many bytes each shard file holds.
        say: called with a line of progress per split.

    Raises:
        DataError: `dest` exists and is not empty, or cannot be written.
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    full = check_destination(dest)
    parent = os.path.dirname(full)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = os.path.join(parent, f".{os.path.basename(full)}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
    except OSError as err:
        raise DataError(dest, f"cannot be written: {err.strerror or err}.") from None
    try:
        splits = {}
        layout = next(iter(task.splits.values())).layout
        for split in ("train", *SPLITS):
            if split not in task.splits:
                continue
            source = task.splits[split]
            per_shard = max(1, shard_bytes // max(1, layout.record_size))
            count = max(1, math.ceil(len(source) / per_shard))
            names = [f"{split}-{k:05d}-of-{count:05d}.array_record" for k in range(count)]
            for k, name in enumerate(names):
                writer = ArrayRecordWriter(os.path.join(staging, name), WRITER_OPTIONS)
                stop = min(len(source), (k + 1) * per_shard)
                for start in range(k * per_shard, stop, 4096):
                    chunk = ex.read(source, range(start, min(start + 4096, stop)))
                    for i in range(len(next(iter(chunk.values())))):
                        writer.write(layout.encode({f: v[i] for f, v in chunk.items()}))
                writer.close()
            splits[split] = {"examples": len(source), "files": names}
            if say:
                say(f"{split}: {len(source):,} examples in {count} shard(s)")
        metadata = {
            "format": FORMAT_NAME, "version": VERSION, "task": task.name,
            "options": {k: v for k, v in options.items() if k != "path"},
            "format_state": task.format.state(), "layout": layout.to_json(),
            "splits": splits,
            "baselines": {s: task.baseline(s) for s in SPLITS if s in task.splits},
            "description": task.describe(), "source": fingerprints(task.data_files()),
        }
        with open(os.path.join(staging, METADATA), "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2, ensure_ascii=False)
            f.write("\n")
        if os.path.isdir(full):
            os.rmdir(full)  # the empty folder the user made
        os.rename(staging, full)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(dest, f"cannot be written: {err.strerror or err}.") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return metadata


def check_destination(dest: str) -> str:
    """`dest` made absolute; DataError unless it is new (or an empty folder)."""
    full = resolve(dest)
    if os.path.exists(full) and (not os.path.isdir(full) or os.listdir(full)):
        raise DataError(dest, "already exists; expected a new folder for the converted "
                              "dataset (remove it or choose another DEST).")
    return full


def read_metadata(path: str) -> dict[str, Any]:
    """A converted dataset's dataset.json, checked; DataError naming it otherwise."""
    file = os.path.join(resolve(path), METADATA)
    try:
        with open(file, encoding="utf-8") as f:
            metadata = json.load(f)
    except (OSError, ValueError) as err:
        raise DataError(file, f"cannot be read as JSON ({err}).") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise DataError(file, f"is not a dataset written by `jaxlstm data convert` (no "
                              f"\"format\": \"{FORMAT_NAME}\").")
    if metadata.get("version") != VERSION:
        raise DataError(file, f"has version {metadata.get('version')!r}; this jaxlstm reads "
                              f"version {VERSION}: convert the data again.")
    return metadata


def load(task: FileTask, path: str) -> Loaded:
    """The splits of the converted dataset at `path`, streamed from its shards, for `task`
    (whose options must be the conversion's, or left at their defaults)."""
    metadata = read_metadata(path)
    folder = resolve(path)
    if metadata["task"] != task.name:
        raise ValueError(f"task.name: {path} holds a converted {metadata['task']!r} dataset; "
                         f"expected task.name: {metadata['task']}, got {task.name!r}.")
    _check_options(task, metadata["options"], path)
    layout = Layout.from_json(metadata["layout"])
    fmt = type(task).FORMAT.from_state(metadata["format_state"])
    splits, files = {}, [os.path.join(folder, METADATA)]
    for split, info in metadata["splits"].items():
        paths = [os.path.join(folder, name) for name in info["files"]]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise DataError(missing[0], "is missing from the converted dataset (listed in "
                                        "dataset.json); convert the data again.")
        try:
            source = RecordExamples(paths, layout)
        except Exception as err:  # noqa: BLE001 - array_record raises plain RuntimeErrors
            raise DataError(paths[0], f"cannot be read as ArrayRecord "
                                      f"({str(err).splitlines()[0][:160]}).") from None
        if len(source) != info["examples"]:
            raise DataError(path, f"the {split} shards hold {len(source)} records but "
                                  f"dataset.json says {info['examples']}; the files were "
                                  "changed: convert the data again.")
        splits[split] = source
        files += paths
    size = sum(os.path.getsize(f) for f in files)
    return Loaded(splits, fmt, files,
                  f"converted dataset {path} ({size:,} bytes in {len(files) - 1} shards, "
                  f"streamed)", baselines=metadata.get("baselines"))


def _check_options(task: FileTask, converted: dict[str, Any], path: str) -> None:
    """A converted dataset's examples were cut and windowed when it was written: an option
    set to anything else than that (or its default) would silently not apply."""
    for field in dataclasses.fields(task):
        if field.name == "path" or not field.init:
            continue
        value = getattr(task, field.name)
        default = (field.default_factory() if field.default_factory is not dataclasses.MISSING
                   else field.default)
        if value != default and value != converted.get(field.name, default):
            raise ValueError(f"task.{field.name}: {path} was converted with "
                             f"{field.name}={converted.get(field.name, default)!r}; leave the "
                             f"option out, or convert again with {field.name}={value!r}.")


def print_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
