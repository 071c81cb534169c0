"""Where metrics go: `metrics.jsonl` always, TensorBoard when tensorboardX is installed.

`metrics.jsonl` holds only what a rerun reproduces (losses, metrics, gradient norms, learning
rates), so the same config and seed give an identical file; timings go to `speed.jsonl`.

Each record is one `write` of one whole line, flushed at once, so a kill or a full disk can
tear at most the last line. Every line is valid JSON: a non-finite value is written as null,
never as a bare `NaN` that JSON readers reject. On resume, the files are cut back to the
restored step, and a torn (unparsable) line is dropped with a note.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from jaxlstm.train.files import json_safe, write_atomically


def _line(record: dict[str, Any]) -> str:
    return json.dumps(json_safe(record), sort_keys=True, allow_nan=False) + "\n"


class MetricsLog:
    """Appends one JSON object per line; on resume, drops lines past the restored step."""

    def __init__(self, run_dir: str, *, tensorboard: bool, resume_step: int | None = None):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.speed_path = os.path.join(run_dir, "speed.jsonl")
        if resume_step is not None:
            for path in (self.path, self.speed_path):
                truncate_after(path, resume_step)
        self._files = {path: open(path, "a") for path in (self.path, self.speed_path)}
        self._writer = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                pass
            else:
                self._writer = SummaryWriter(os.path.join(run_dir, "tensorboard"))

    def _append(self, path: str, record: dict[str, Any]) -> None:
        f = self._files[path]
        f.write(_line(record))  # one write of the whole line: at most this line can tear
        f.flush()

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        self._append(self.path, {"step": step, "split": split,
                                 **{k: float(v) for k, v in values.items()}})
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(f"{split}/{key}", float(value), step)

    def write_speed(self, step: int, values: dict[str, float]) -> None:
        self._append(self.speed_path, {"step": step, **values})
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(f"speed/{key}", value, step)

    def close(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except OSError:  # a full disk can fail the final flush; the lines are whole
                pass
        if self._writer is not None:
            self._writer.close()


class NoLog:
    """What the processes other than process 0 log: nothing (process 0 writes the files)."""

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        pass

    def write_speed(self, step: int, values: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


def truncate_after(path: str, step: int) -> None:
    """Keeps the records of `path` up to `step`, dropping torn lines (atomically)."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    kept, torn = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            record_step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            torn += 1
            continue
        if record_step <= step:
            kept.append(line.decode() + "\n")
    if torn:
        print(f"{os.path.basename(path)}: dropped {torn} unreadable line(s) left by an "
              "interrupted write.", file=sys.stderr)
    write_atomically(path, "".join(kept))


def read_metrics(path: str) -> list[dict[str, Any]]:
    """The records of a metrics file, skipping a torn line."""
    records = []
    with open(path) as f:
        for line in f:
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    return records
