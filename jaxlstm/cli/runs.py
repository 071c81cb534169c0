"""`jaxlstm runs [NAME]`: the runs under the runs root, newest first, one line each.

    RUN                         STARTED           STATUS     STEP   FINAL      BASELINE  OVERRIDES
    quickstart/20250102-090000  2025-01-02 09:00  running    40/50  -          -         training.seed=1
    quickstart/20250101-120000  2025-01-01 12:00  completed  50/50  mse 0.112  0.1773    no overrides

RUN is the folder under the root (what `jaxlstm compare` takes, and `jaxlstm sample` with the
root in front); sweep points are listed too, as `<name>/sweep-<time>/<point>`. STATUS is the
summary's (`running`, `completed`, `interrupted`, ...), `started` for a folder with only its
`config.yaml`, `running?` for a run whose process is gone (see `runs_index.MAYBE_DEAD`).
OVERRIDES are the `key=value` arguments the run was started with, as recorded in its
`summary.json`; for a run from before they were recorded, the keys in which its `config.yaml`
differs from the shipped config of the same name, marked `*` (`-` without such a config).
The folders are only read.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from jaxlstm.cli import shipped
from jaxlstm.cli.exits import DONE, UsageError, command
from jaxlstm.cli.parser import OneLineParser
from jaxlstm.train import runs_index
from jaxlstm.train.config import ConfigError, ExperimentConfig

USAGE = "[NAME] [--root DIR] [--json]"
SUMMARY = "list the runs (newest first): status, step, final metric, overrides"

DEFAULT_ROOT = ExperimentConfig.runs_root
INFERRED = "*"


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog="jaxlstm runs", usage=f"jaxlstm runs {USAGE}",
        description="Lists the runs under the runs root, newest first: folder, start time, "
                    "status, step, the final held-out metric and its baseline, and the "
                    "overrides the run was started with. A status of 'running?' is a run "
                    "whose process has ended without saying so (killed).",
        epilog="Exit codes: 0 done, 2 bad input (one line on stderr).")
    parser.add_argument("name", metavar="NAME", nargs="?",
                        help="only the runs of this config name (the folder <root>/NAME)")
    parser.add_argument("--root", metavar="DIR", default=DEFAULT_ROOT,
                        help="the runs root (a config's runs_root; default %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list, one object per run, instead of the table")
    return parser


def aligned(rows: list[list[str]]) -> list[str]:
    """Rows of cells as lines of left-aligned columns, two spaces apart (the last column is
    not padded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            .rstrip() for row in rows]


def number(value: float | None) -> str:
    """A metric in a table: 4 significant digits, `-` for none."""
    return "-" if value is None else f"{value:.4g}"


class ShippedOverrides:
    """The overrides of a run from before `summary.json` recorded them: how its `config.yaml`
    differs from the shipped config of its name (None when there is no such config, or it
    no longer loads). Each shipped config is loaded once."""

    def __init__(self) -> None:
        self._references: dict[str, dict[str, Any] | None] = {}
        self._names = set(shipped.names())

    def __call__(self, run: runs_index.Run) -> list[str] | None:
        name = run.config.get("name")
        if not run.config or name not in self._names:
            return None
        if name not in self._references:
            try:
                self._references[name] = runs_index.flat_config(shipped.resolve(name))
            except ConfigError:
                self._references[name] = None
        reference = self._references[name]
        return None if reference is None else runs_index.config_differences(run.config,
                                                                            reference)


def shown_status(run: runs_index.Run) -> str:
    """The run's status; "failed" for a sweep point whose job left its error behind while
    its summary still says it runs (as the sweep's `sweep.md` shows it)."""
    from jaxlstm.launch import sweep

    if (run.status in ("running", runs_index.MAYBE_DEAD, runs_index.STARTED)
            and sweep.is_sweep_folder(os.path.dirname(os.path.abspath(run.folder)))
            and sweep.point_state(run.folder).status == "failed"):
        return "failed"
    return run.status


def _started(run: runs_index.Run) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(run.started)


def _row(run: runs_index.Run, status: str, overrides: list[str] | None, inferred: bool,
         root: str) -> list[str]:
    metric = run.summary.get("metric")
    final = run.value("final")
    step = "-" if run.step is None else f"{run.step}/{run.steps if run.steps else '?'}"
    described = "-" if overrides is None else runs_index.format_overrides(overrides)
    return [os.path.relpath(run.folder, root), _started(run).strftime("%Y-%m-%d %H:%M"),
            status, step, "-" if final is None else f"{metric} {number(final)}",
            number(run.value("baseline")), described + (f" {INFERRED}" if inferred else "")]


def _record(run: runs_index.Run, status: str, overrides: list[str] | None, inferred: bool
            ) -> dict[str, Any]:
    summary = run.summary
    return {"folder": run.folder, "name": run.name,
            "started": _started(run).isoformat(timespec="seconds"),
            "status": status, "step": run.step, "steps": run.steps,
            "config_source": summary.get("config_source"), "metric": summary.get("metric"),
            **{key: summary.get(key) for key in ("final", "baseline", "best", "test")},
            "overrides": overrides, "overrides_inferred": inferred}


def _root(args_root: str, name: str | None) -> str:
    """The folder to list, checked (UsageError naming what is there instead)."""
    if not os.path.isdir(args_root):
        raise UsageError(f"{args_root}: no such folder (the runs root; train a run first, or "
                         "pass --root DIR).")
    if name is None:
        return args_root
    folder = os.path.join(args_root, name)
    if not os.path.isdir(folder):
        names = sorted(d for d in os.listdir(args_root)
                       if os.path.isdir(os.path.join(args_root, d)) and not d.startswith("."))
        raise UsageError(f"no runs of {name!r} in {args_root} (names there: "
                         f"{', '.join(names) or 'none'}).")
    return folder


@command("jaxlstm runs")
def main(argv: list[str]) -> int:
    """Runs `jaxlstm runs` on `argv`; returns 0, or 2 after one line for bad input."""
    args = _parser().parse_args(argv)
    folder = _root(args.root, args.name)
    runs = runs_index.list_runs(folder)
    from_shipped = ShippedOverrides()
    listed = []
    for run in runs:
        overrides, inferred = run.overrides, False
        if overrides is None:
            overrides = from_shipped(run)
            inferred = overrides is not None
        listed.append((run, shown_status(run), overrides, inferred))
    if args.json:
        print(json.dumps([_record(*entry) for entry in listed], indent=1))
        return DONE
    if not runs:
        print(f"no runs in {folder}")
        return DONE
    header = ["RUN", "STARTED", "STATUS", "STEP", "FINAL", "BASELINE", "OVERRIDES"]
    print("\n".join(aligned([header, *(_row(*entry, args.root) for entry in listed)])))
    if any(inferred for *_, inferred in listed):
        print(f"{INFERRED} not recorded (an older run): how its config.yaml differs from the "
              "shipped config of its name")
    return DONE
