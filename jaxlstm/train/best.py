"""The best validation result so far, for the best checkpoint and early stopping.

    best = BestSoFar(metric="mse", higher_is_better=False)
    improved = best.update(step, evaluation)      # after each validation evaluation
    if best.out_of_patience(patience): stop()

Improvement is strict (equal is not better) and needs a finite value: a NaN metric is never the
best, it counts as an evaluation without improvement. The first finite evaluation is always an
improvement.

The state is a pure function of the run's validation evaluations in order, so a resumed run
rebuilds it exactly by replaying the eval lines of `metrics.jsonl` up to the restored step
(`from_records`), the same numbers an uninterrupted run compared: JSON writes a float's
shortest repr, which reads back bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any


@dataclasses.dataclass
class BestSoFar:
    """The best validation evaluation so far and the evaluations since it.

    Attributes:
        metric: the task's metric (`TaskSpec.metric`).
        higher_is_better: its direction (`TaskSpec.higher_is_better`).
        step: the step of the best evaluation; None before the first finite one.
        metrics: that evaluation's metrics.
        since: evaluations since the best (all of them while there is none).
        last: the latest evaluation's metric (a resumed run's progress line starts from it).
    """

    metric: str
    higher_is_better: bool
    step: int | None = None
    metrics: dict[str, float] | None = None
    since: int = 0
    last: float | None = None

    def _better(self, value: Any) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.metrics is None:
            return True
        best = self.metrics[self.metric]
        return value > best if self.higher_is_better else value < best

    def update(self, step: int, metrics: dict[str, float]) -> bool:
        """Records the validation evaluation at `step`; returns whether it is the new best."""
        self.last = metrics.get(self.metric)
        if self._better(metrics.get(self.metric)):
            self.step, self.metrics, self.since = step, dict(metrics), 0
            return True
        self.since += 1
        return False

    def out_of_patience(self, patience: int | None) -> bool:
        """Whether `patience` evaluations have passed without improvement (never for None)."""
        return patience is not None and self.since >= patience

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]], metric: str,
                     higher_is_better: bool, up_to: int | None = None) -> BestSoFar:
        """The state after the eval records of `metrics.jsonl` (those up to step `up_to`)."""
        best = cls(metric, higher_is_better)
        for record in records:
            if record.get("split") == "eval" and (up_to is None or record["step"] <= up_to):
                values = {k: v for k, v in record.items() if k not in ("step", "split")}
                best.update(int(record["step"]), values)
        return best

    def to_json(self) -> dict[str, Any]:
        """`summary.json`'s `best`: {"step": ..., "metrics": {...}} (null values before any)."""
        return {"step": self.step, "metrics": self.metrics}
