"""Progress while training: a live bar on a terminal, plain lines everywhere else.

A cluster job, CI or `... 2> log` has no terminal, and a bar redrawn in place would leave
either nothing or a wall of control characters there. So off a terminal the same facts come
as one line every `every` steps:

    step 250/1500  loss 0.0412  eval mse 0.0301  38.2 steps/s
"""

from __future__ import annotations

import sys
import time
from typing import Any, Self, TextIO


class Progress:
    """Reports step, loss, the last eval metric and steps/s; a context manager."""

    def __init__(self, *, enabled: bool, total: int, start: int, every: int, metric: str,
                 stream: TextIO | None = None):
        self.total, self.every, self.metric = total, every, metric
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self._eval = "-"
        self._rate = "-"
        self._clock = (time.perf_counter(), start)
        self._bar: Any = None
        if enabled and self.stream.isatty():
            self._bar = _RichBar(total, start, metric, self.stream)

    def __enter__(self) -> Self:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def evaluated(self, value: float) -> None:
        self._eval = f"{value:.4g}"

    def step(self, step: int, loss: float) -> None:
        """Called after every step with its training loss."""
        if not self.enabled:
            return
        if step % self.every == 0 or step == self.total:
            now = time.perf_counter()
            then, then_step = self._clock
            if step > then_step and now > then:
                self._rate = f"{(step - then_step) / (now - then):.1f}"
            self._clock = (now, step)
        if self._bar is not None:
            self._bar.update(step, f"{loss:.4f}", self._eval, self._rate)
        elif step % self.every == 0 or step == self.total:
            print(f"step {step}/{self.total}  loss {loss:.4f}  eval {self.metric} "
                  f"{self._eval}  {self._rate} steps/s", file=self.stream, flush=True)


class _RichBar:
    def __init__(self, total: int, start: int, metric: str, stream: TextIO):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn(f"eval {metric} {{task.fields[eval]}}"),
            TextColumn("{task.fields[rate]} steps/s"), TimeRemainingColumn(),
            console=Console(file=stream), transient=False)
        self._task = self._progress.add_task("train", total=total, completed=start, loss="-",
                                             eval="-", rate="-")

    def start(self) -> None:
        self._progress.start()

    def stop(self) -> None:
        self._progress.stop()

    def update(self, step: int, loss: str, eval_value: str, rate: str) -> None:
        self._progress.update(self._task, completed=step, loss=loss, eval=eval_value,
                              rate=rate)
