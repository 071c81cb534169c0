"""`jaxlstm compare RUN RUN [RUN ...]`: runs side by side, and their curves in one picture.

Prints the config keys in which the runs differ (one row per key, one column per run), then
their final metrics (`summary.json`'s status, step, `final`, `baseline`, `best`, `test`), and
draws `compare.png`: the training loss and the held-out metric against the step, one line per
run (by default into the current folder; `--out` names a file or a folder, and the last line
printed says where it went). A RUN is a run folder, a folder under the runs root as
`jaxlstm runs` lists it (`quickstart/20250101-120000`), a config name (its newest run), or a
sweep folder (all its points). The run folders are only read.
"""

from __future__ import annotations

import os
from typing import Any

from jaxlstm.cli.exits import DONE, UsageError, command
from jaxlstm.cli.parser import OneLineParser
from jaxlstm.cli.runs import DEFAULT_ROOT, aligned, number, shown_status
from jaxlstm.train import runs_index
from jaxlstm.train.run_folder import newest_run

USAGE = "RUN RUN [RUN ...] [--root DIR] [--out PATH]"
SUMMARY = "compare runs: the config keys that differ, final metrics, curves (compare.png)"

PLOT_FILE = "compare.png"
_MARKED = 50  # training-loss curves of at most this many points show each point


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog="jaxlstm compare", usage=f"jaxlstm compare {USAGE}",
        description="Prints the config keys in which the runs differ and their final "
                    "metrics side by side, and draws their training loss and held-out "
                    f"metric curves against the step into {PLOT_FILE}.",
        epilog="Exit codes: 0 done, 2 bad input (one line on stderr).")
    parser.add_argument("runs", metavar="RUN", nargs="+",
                        help="a run folder; a folder under --root as `jaxlstm runs` lists it; "
                             "a config name (its newest run); a sweep folder (its points)")
    parser.add_argument("--root", metavar="DIR", default=DEFAULT_ROOT,
                        help="the runs root that names and listed folders are in "
                             "(default %(default)s)")
    parser.add_argument("--out", metavar="PATH", default=PLOT_FILE,
                        help="where to write the picture: a .png file, or a folder to write "
                             f"{PLOT_FILE} into (default: {PLOT_FILE} in the current folder)")
    return parser


def _sweep_points(folder: str) -> list[str] | None:
    """The run folders of the sweep in `folder`, in the grid's order; None if it is none."""
    from jaxlstm.launch import sweep

    if not sweep.is_sweep_folder(folder):
        return None
    record = sweep.load(folder)
    return [path for path in map(record.run_dir, record.grid.points) if runs_index.is_run(path)]


def resolve(argument: str, root: str) -> list[str]:
    """The run folders `argument` names (see the module docstring).

    Raises:
        UsageError: it names no run, in one line saying what it is instead.
    """
    for folder in (argument, os.path.join(root, argument)):
        if runs_index.is_run(folder):
            return [folder]
        points = _sweep_points(folder) if os.path.isdir(folder) else None
        if points:
            return points
    newest = newest_run(os.path.join(root, argument))
    if newest is not None:
        return [newest]
    if os.path.isdir(argument):
        raise UsageError(f"{argument}: not a run folder (it has no config.yaml), nor a sweep "
                         "folder with a started point.")
    raise UsageError(f"{argument}: no such run folder, nor runs of that name in {root}.")


def labels(folders: list[str]) -> list[str]:
    """Short names telling the runs apart: each folder's last path parts, as few as make
    them all different (`20250101-120000`, or `adding/20250101-120000` across names)."""
    parts = [os.path.abspath(folder).split(os.sep) for folder in folders]
    for depth in range(1, max(map(len, parts)) + 1):
        names = [os.path.join(*p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return folders


def config_table(runs: list[runs_index.Run], names: list[str]) -> list[str]:
    """The rows of the config keys whose values differ, one column per run."""
    keys = runs_index.differing_keys([run.config for run in runs])
    if not keys:
        return ["config: the same in every run"]
    rows = [[key, *(runs_index.value_text(run.config.get(key, runs_index.ABSENT))
                    for run in runs)] for key in keys]
    return ["config keys that differ:", *aligned([["key", *names], *rows])]


def _metrics(runs: list[runs_index.Run]) -> list[str]:
    """The metric names to show: each run's task metric first, then the rest of `final`."""
    names: dict[str, None] = {}
    for run in runs:
        if run.summary.get("metric"):
            names[run.summary["metric"]] = None
    for run in runs:
        names.update(dict.fromkeys(run.summary.get("final") or {}))
    return list(names)


def metrics_table(runs: list[runs_index.Run], names: list[str]) -> list[str]:
    """The rows of the runs' status, step and final metrics; rows no run has are left out."""
    rows = [["status", *map(shown_status, runs)],
            ["step", *("-" if run.step is None else f"{run.step}/{run.steps or '?'}"
                       for run in runs)]]
    for metric in _metrics(runs):
        for section, label in (("final", "final"), ("baseline", "baseline"),
                               ("best", "best"), ("test", "test"),
                               ("baseline_test", "test baseline")):
            values = [run.value(section, metric) for run in runs]
            if any(value is not None for value in values):
                rows.append([f"{label} {metric}", *map(number, values)])
    best_steps = [(run.summary.get("best") or {}).get("step") for run in runs]
    if any(step is not None for step in best_steps):
        rows.append(["best at step", *("-" if s is None else str(s) for s in best_steps)])
    walls = [run.summary.get("wall_time_s") for run in runs]
    if any(isinstance(wall, (int, float)) for wall in walls):
        rows.append(["wall time s", *(f"{w:.0f}" if isinstance(w, (int, float)) else "-"
                                      for w in walls)])
    return ["final metrics:", *aligned([["", *names], *rows])]


def _curve(records: list[dict[str, Any]], split: str, key: str
           ) -> tuple[list[int], list[float]]:
    rows = [r for r in records if r.get("split") == split and r.get(key) is not None]
    return [r["step"] for r in rows], [r[key] for r in rows]


def draw(runs: list[runs_index.Run], names: list[str], path: str) -> None:
    """Draws the runs' training loss and held-out metric against the step into `path` (one
    line per run, and the baseline dashed when all runs share it), replacing it atomically.

    Raises:
        OSError: `path` cannot be written.
    """
    # matplotlib's figure API without pyplot: no global state, no display backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    ax_loss, ax_metric = figure.subplots(1, 2)
    metrics = dict.fromkeys(run.metric for run in runs if run.metric)
    for run, name in zip(runs, names, strict=True):
        records = run.curves
        steps, losses = _curve(records, "train", "loss")
        # A short run logs a few points: a line alone would not show one of them.
        line, = ax_loss.plot(steps, losses, label=name, linewidth=1,
                             marker="." if len(steps) <= _MARKED else None)
        if run.metric:
            ax_metric.plot(*_curve(records, "eval", run.metric), "o-", markersize=3,
                           color=line.get_color(), label=name)
    baselines = {run.value("baseline") for run in runs}
    if len(metrics) == 1 and len(baselines) == 1 and None not in baselines:
        ax_metric.axhline(baselines.pop(), color="grey", linestyle="--", label="baseline")
    if any(run.curves for run in runs):
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="loss", title="training loss")
    metric = ", ".join(metrics) or "metric"
    ax_metric.set(xlabel="step", ylabel=metric, title=f"held-out {metric}")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    folder, base = os.path.split(path)
    temporary = os.path.join(folder, f".{base}.tmp")
    figure.savefig(temporary, format="png", dpi=100)
    os.replace(temporary, path)


def _out_path(out: str) -> str:
    """The picture's path (`out`, or `out/compare.png` for a folder), checked writable."""
    path = os.path.join(out, PLOT_FILE) if os.path.isdir(out) else out
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--out {out}: no such folder {folder}.")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--out {out}: {folder} is not writable.")
    return path


@command("jaxlstm compare")
def main(argv: list[str]) -> int:
    """Runs `jaxlstm compare` on `argv`; returns 0, or 2 after one line for bad input."""
    args = _parser().parse_args(argv)
    path = _out_path(args.out)
    folders: dict[str, str] = {}  # by real path: a run named twice is compared once
    for argument in args.runs:
        for folder in resolve(argument, args.root):
            folders.setdefault(os.path.realpath(folder), folder)
    if len(folders) < 2:
        raise UsageError(f"compare needs at least two runs, got {len(folders)}: "
                         f"{', '.join(folders.values())}.")
    runs = [runs_index.read_run(folder) for folder in folders.values()]
    names = labels(list(folders.values()))
    print("\n".join([*config_table(runs, names), "", *metrics_table(runs, names), ""]))
    try:
        draw(runs, names, path)
    except OSError as err:
        raise UsageError(f"--out {path}: cannot write: {err.strerror or err}.") from None
    print(f"curves: {os.path.abspath(path)}")
    return DONE
