"""A sweep's results: `sweep.md`, one row per point, and `sweep.png` (with matplotlib).

Each row is a point's swept values, its status and its final held-out metric
(`summary.json`'s `final[metric]`); the best completed point (by the task's
`higher_is_better`) is marked. Everything comes from the run folders, so the table can be
written at any time, by anyone, as often as wanted: every point's job rewrites it when it ends,
the launcher when it has waited for the jobs, the table job of a SLURM sweep when the array
has ended, and `jaxlstm launch --resume SWEEP_DIR` when every point is done. A lock file
serialises writers, so the last one to finish writes what every point left.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import sys
from collections.abc import Iterator

from jaxlstm.launch.sweep import PointState, Sweep, point_state
from jaxlstm.train.files import write_atomically

TABLE_FILE = "sweep.md"
PLOT_FILE = "sweep.png"


@contextlib.contextmanager
def _locked(folder: str) -> Iterator[None]:
    """Holds an exclusive lock on `folder/.table.lock` (where the file system has locks)."""
    try:
        import fcntl
        handle = open(os.path.join(folder, ".table.lock"), "a")  # noqa: SIM115
    except (ImportError, OSError):
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: write anyway
            pass
        yield


def _final(state: PointState) -> tuple[str | None, float | None]:
    """(metric name, final value) of a completed point; (None, None) otherwise."""
    summary = state.summary
    metric = summary.get("metric")
    if not state.completed or metric is None:
        return None, None
    value = (summary.get("final") or {}).get(metric)
    return metric, float("nan") if value is None else float(value)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def best_point(sweep: Sweep, states: list[PointState]) -> int | None:
    """The index of the best completed point by its final metric, or None."""
    candidates = []
    for i, state in enumerate(states):
        _, value = _final(state)
        if value is not None and math.isfinite(value):
            sign = 1 if state.summary.get("higher_is_better") else -1
            candidates.append((sign * value, -i, i))
    return max(candidates)[2] if candidates else None


def table_text(sweep: Sweep, states: list[PointState]) -> str:
    """The markdown of `sweep.md` for the points' `states` (in the grid's order)."""
    points = sweep.grid.points
    keys = list(sweep.grid.swept)
    metrics = {m for m, _ in map(_final, states) if m is not None}
    header_metric = next(iter(metrics)) if len(metrics) == 1 else "final metric"
    best = best_point(sweep, states)
    done = sum(state.completed for state in states)
    lines = [f"# Sweep of `{sweep.config}`: {done} of {len(points)} points completed", ""]
    overrides = " ".join(sweep.overrides)
    lines.append(f"- config: `{sweep.config}` ({sweep.config_file}); overrides: `{overrides}`")
    if best is not None:
        summary = states[best].summary
        order = "higher" if summary.get("higher_is_better") else "lower"
        lines.append(f"- final held-out metric, {order} is better; best: "
                     f"`{points[best].name}` ({_number(_final(states[best])[1])})")
    lines.append(f"- written {datetime.datetime.now().isoformat(timespec='seconds')}; each "
                 "point's run folder is its name inside the sweep folder")
    lines += ["", "| # | " + " | ".join(keys) + f" | status | {header_metric} | steps | "
              "train time (s) | run folder |",
              "|" + "---|" * (len(keys) + 6)]
    for i, (point, state) in enumerate(zip(points, states, strict=True)):
        values = [pair.split("=", 1)[1] for pair in point.overrides]
        metric, value = _final(state)
        shown = _number(value) if len(metrics) == 1 else (f"{metric} {_number(value)}"
                                                          if metric else "")
        if i == best:
            shown = f"**{shown}** (best)"
        status = state.status + (f": {state.detail[:160]}" if state.detail else "")
        wall = state.summary.get("wall_time_s")
        cells = [str(i + 1), *values, status, shown, str(state.summary.get("step", "")),
                 "" if wall is None else f"{wall:.0f}", f"`{point.name}`"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def draw(sweep: Sweep, states: list[PointState], path: str) -> bool:
    """Draws the completed points' final metric into `path`: against the value for one
    numeric swept key (a log axis when it spans 10x or more), else one bar per point.
    Returns False (drawing nothing) without matplotlib or without a completed point."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    done = [(p, _final(s)) for p, s in zip(sweep.grid.points, states, strict=True)
            if _final(s)[1] is not None]
    if not done:
        return False
    metric = done[0][1][0]
    figure = Figure(figsize=(7, 4), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    xs = [_as_float(p.overrides[0].split("=", 1)[1]) for p, _ in done]
    if len(sweep.grid.swept) == 1 and all(x is not None for x in xs):
        pairs = sorted(zip(xs, [v for _, (_, v) in done], strict=True))
        ax.plot([x for x, _ in pairs], [v for _, v in pairs], "o-")
        if min(xs) > 0 and max(xs) >= 10 * min(xs):
            ax.set_xscale("log")
        ax.set_xlabel(next(iter(sweep.grid.swept)))
        ax.set_ylabel(metric)
    else:
        ax.barh([p.name for p, _ in done], [v for _, (_, v) in done])
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel(metric)
    ax.set_title(f"sweep of {sweep.config}: final held-out {metric}")
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    figure.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    return True


def write_table(sweep: Sweep) -> list[str]:
    """Writes `sweep.md` (and `sweep.png` when it can) from the points' run folders; returns
    the paths written. A failed picture is one line on stderr, never a lost table."""
    with _locked(sweep.folder):
        states = [point_state(sweep.run_dir(p)) for p in sweep.grid.points]
        table = os.path.join(sweep.folder, TABLE_FILE)
        write_atomically(table, table_text(sweep, states))
        written = [table]
        plot = os.path.join(sweep.folder, PLOT_FILE)
        try:
            if draw(sweep, states, plot):
                written.append(plot)
        except Exception as err:  # noqa: BLE001 - a picture must not cost the table
            print(f"sweep.png failed: {type(err).__name__}: {err}", file=sys.stderr)
    return written


def remove_table(sweep: Sweep) -> bool:
    """Removes `sweep.md` and `sweep.png`, for when a new table cannot be written: an older
    one would show points as they no longer are. Returns whether there was a table."""
    removed = False
    for name in (TABLE_FILE, PLOT_FILE):
        try:
            os.remove(os.path.join(sweep.folder, name))
        except OSError:  # none there, or one that cannot be removed either
            continue
        removed = removed or name == TABLE_FILE
    return removed


def summary_line(state: PointState) -> str:
    """`completed, mse 0.0123 (500 steps, 42 s)` or the status and its detail: one line."""
    metric, value = _final(state)
    if metric is not None:
        wall = state.summary.get("wall_time_s")
        return (f"{state.status}, {metric} {_number(value)} ({state.summary.get('step')} steps"
                + ("" if wall is None else f", {wall:.0f} s") + ")")
    return state.status + (f": {state.detail}" if state.detail else "")

