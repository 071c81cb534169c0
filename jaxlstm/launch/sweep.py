"""The sweep folder: where each point runs, what was launched, and how far each point got.

    <runs_root>/<name>/sweep-<YYYYmmdd-HHMMSS>/
        sweep.json        the record: the config and overrides as typed, the grid (its
                          constant overrides, swept keys and points, each with its run folder)
                          and every launch (executor, host, job ids)
        base.yaml         the resolved base config (the file plus the constant overrides):
                          a resume builds every point from it, so a later edit of the config
                          file cannot change a sweep halfway
        sweep.md          the table of results (see `table`), and sweep.png with matplotlib
        submitit/         submitit's job scripts, pickles and logs (unless --folder)
        <point name>/     one run folder per point, e.g. optimizer.learning_rate=1e-3/

A point's state is read from its run folder, never remembered elsewhere: "completed" (or
"early_stopped": finished too) when its `summary.json` says so, "failed" when its job left
`job_error.txt`, the summary's status otherwise ("running" after its jobs ended means it was
killed: a time limit, memory), "started" with only a `config.yaml`, "not started" with nothing.
A resume skips the finished points and runs the others, each continuing from its own
checkpoints when it holds a run.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
from typing import Any

from jaxlstm.launch.grid import Grid, Point
from jaxlstm.train.config import ConfigError, ExperimentConfig, load_config, to_yaml
from jaxlstm.train.files import write_atomically
from jaxlstm.train.run_folder import (
    FINISHED,
    LAUNCHER_FILES,
    RunFolderError,
    claim_stamped_folder,
    is_folder_name,
    read_summary,
)

SWEEP_FILE = "sweep.json"
BASE_FILE = "base.yaml"
ERROR_FILE = LAUNCHER_FILES[1]  # one line, written by a point's job that raised


@dataclasses.dataclass
class Sweep:
    """A sweep folder and its record (`sweep.json`)."""

    folder: str
    config: str  # CONFIG as typed on the command line
    config_file: str  # the YAML file it resolved to at launch
    overrides: tuple[str, ...]  # every override as typed
    grid: Grid
    created: str
    launches: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def run_dir(self, point: Point) -> str:
        """The point's run folder, inside the sweep folder (wherever that has moved)."""
        return os.path.join(self.folder, point.name)

    def point_config(self, point: Point) -> ExperimentConfig:
        """The point's config: `base.yaml`, its swept overrides, its run folder.

        Raises:
            ConfigError: `base.yaml` no longer loads (an edited file, a changed schema).
        """
        config = load_config(os.path.join(self.folder, BASE_FILE), point.overrides)
        return dataclasses.replace(config, run_dir=self.run_dir(point), resume=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config, "config_file": self.config_file,
            "overrides": list(self.overrides), "base_config": BASE_FILE,
            "constant": list(self.grid.constant),
            "swept": {key: list(values) for key, values in self.grid.swept.items()},
            "points": [{"name": p.name, "overrides": list(p.overrides),
                        "run_dir": os.path.abspath(self.run_dir(p))} for p in self.grid.points],
            "created": self.created, "launches": self.launches,
        }


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def new_sweep(root: str, config: str, config_file: str, overrides: list[str], grid: Grid,
              base: ExperimentConfig) -> Sweep:
    """Claims `<root>/sweep-<time>[-n]` (`claim_stamped_folder`: two launches in the same
    second get two folders) and writes its record there (`create`).

    Raises:
        RunFolderError: the folder or its record cannot be written (a full disk, no
            permission); nothing is left behind.
    """
    root = os.path.abspath(root)  # jobs may start elsewhere (a setup line's cd)
    try:
        folder = claim_stamped_folder(root, prefix="sweep-")
    except OSError as err:
        raise RunFolderError(f"runs_root: cannot create a sweep folder in {root}: "
                             f"{err.strerror or err}.") from None
    try:
        return create(folder, config, config_file, overrides, grid, base)
    except OSError as err:
        shutil.rmtree(folder, ignore_errors=True)  # claimed a moment ago: this launch's own
        raise RunFolderError(f"runs_root: cannot write the sweep's record in {root}: "
                             f"{err.strerror or err}.") from None


def create(folder: str, config: str, config_file: str, overrides: list[str], grid: Grid,
           base: ExperimentConfig) -> Sweep:
    """Writes `base.yaml` and `sweep.json` into the new sweep `folder`; returns the sweep."""
    write_atomically(os.path.join(folder, BASE_FILE),
                     to_yaml(dataclasses.replace(base, run_dir=None, resume=False)))
    sweep = Sweep(os.path.abspath(folder), config, os.path.abspath(config_file),
                  tuple(overrides), grid, _now())
    save(sweep)
    return sweep


def save(sweep: Sweep) -> None:
    """Writes `sweep.json` (atomically: a reader sees the old record or the new one)."""
    write_atomically(os.path.join(sweep.folder, SWEEP_FILE),
                     json.dumps(sweep.to_json(), indent=2) + "\n")


def is_sweep_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, SWEEP_FILE))


def load(folder: str) -> Sweep:
    """The sweep recorded in `folder/sweep.json`.

    Raises:
        ConfigError: no sweep there, or a record that does not read (one line).
    """
    path = os.path.join(folder, SWEEP_FILE)
    try:
        with open(path) as f:
            record = json.load(f)
        points = tuple(Point(p["name"], tuple(p["overrides"])) for p in record["points"])
        _check_point_names(path, [p.name for p in points])
        grid = Grid(tuple(record["constant"]),
                    {key: tuple(values) for key, values in record["swept"].items()}, points)
        return Sweep(os.path.abspath(folder), record["config"], record["config_file"],
                     tuple(record["overrides"]), grid, record["created"],
                     list(record.get("launches", [])))
    except FileNotFoundError:
        raise ConfigError(f"{folder}: not a sweep folder (no {SWEEP_FILE}).") from None
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: unreadable sweep record: {type(err).__name__}: "
                          f"{' '.join(str(err).split())}") from None


def _check_point_names(path: str, names: list[str]) -> None:
    """ConfigError for a hand-edited `sweep.json` whose point names would put a run outside
    the sweep folder, or two points' runs into one folder."""
    for i, name in enumerate(names):
        if not isinstance(name, str) or not is_folder_name(name):
            raise ConfigError(f"{path}: points: name {name!r} is not one folder name inside "
                              "the sweep folder (no '/', not '.' or '..').")
        if name in names[:i]:
            raise ConfigError(f"{path}: points: name {name!r} is given to two points; each "
                              "point needs its own run folder.")


def record_launch(sweep: Sweep, executor: str, host: str, submitit_folder: str
                  ) -> dict[str, Any]:
    """Adds a launch to the record (the caller saves it); returns the launch, whose `jobs`
    (point name -> job id) the launcher fills as jobs start, saving again each time."""
    launch = {"time": _now(), "executor": executor, "host": host,
              "submitit_folder": os.path.abspath(submitit_folder), "jobs": {}}
    sweep.launches.append(launch)
    return launch


def record_error(run_dir: str, line: str) -> None:
    """Writes `line` as the point's `job_error.txt`, so that its state (and the table) says
    why it failed. Where that cannot be written (a full disk) nothing is left, not even an
    empty file: the state stays what the folder says, and the launcher asks the job."""
    path = os.path.join(run_dir, ERROR_FILE)
    try:
        os.makedirs(run_dir, exist_ok=True)
        write_atomically(path, " ".join(line.split()) + "\n")
    except OSError:
        pass


@dataclasses.dataclass(frozen=True)
class PointState:
    """How far a point got, read from its run folder (see the module docstring)."""

    status: str
    detail: str = ""  # the error line of a failed point
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def completed(self) -> bool:
        """Whether the point's run finished (all its steps, or stopped early)."""
        return self.status in FINISHED


def point_state(run_dir: str) -> PointState:
    """The state of the point whose run folder is `run_dir`."""
    summary = read_summary(run_dir)
    status = summary.get("status")
    if status in FINISHED:
        return PointState(status, summary=summary)
    try:
        with open(os.path.join(run_dir, ERROR_FILE)) as f:
            return PointState("failed", f.read().strip(), summary)
    except OSError:
        pass
    if status:
        return PointState(str(status), summary=summary)
    if os.path.isfile(os.path.join(run_dir, "config.yaml")):
        return PointState("started")
    return PointState("not started")
