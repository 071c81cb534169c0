"""Where metrics go: `metrics.jsonl` always, TensorBoard when tensorboardX is installed.

`metrics.jsonl` holds only what a rerun reproduces (losses, metrics, gradient norms, learning
rates), so the same config and seed give an identical file; timings go to `speed.jsonl`.
"""

from __future__ import annotations

import json
import os
from typing import Any


class MetricsLog:
    """Appends one JSON object per line; on resume, drops lines past the restored step."""

    def __init__(self, run_dir: str, *, tensorboard: bool, resume_step: int | None = None):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.speed_path = os.path.join(run_dir, "speed.jsonl")
        if resume_step is not None:
            for path in (self.path, self.speed_path):
                _truncate_after(path, resume_step)
        self._writer = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                pass
            else:
                self._writer = SummaryWriter(os.path.join(run_dir, "tensorboard"))

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        record = {"step": step, "split": split, **{k: float(v) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(f"{split}/{key}", float(value), step)

    def write_speed(self, step: int, values: dict[str, float]) -> None:
        with open(self.speed_path, "a") as f:
            f.write(json.dumps({"step": step, **values}, sort_keys=True) + "\n")
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(f"speed/{key}", value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _truncate_after(path: str, step: int) -> None:
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path, "w") as f:
        f.writelines(kept)


def read_metrics(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
