"""Run folders: which one a run writes to, and the rules that keep each one consistent.

    <runs_root>/<name>/<YYYYmmdd-HHMMSS>[-n]/

- A new run gets a new folder, created (claimed) when it is chosen, so that two runs of one
  name started in the same second get two folders; a folder that already holds a run (a
  `config.yaml`, metrics or checkpoints) is never written into without `resume`, and an
  explicit `run_dir` that holds other files is refused: a new run starts in an empty folder.
- `name` is one folder name inside `runs_root`: no path separators, `.` or `..`, so that no
  config or sweep record can make a run write elsewhere.
- `resume` continues the newest run of the config's name (newest by the time in its folder
  name, not by text order: `...-9` is older than `...-11`), or `run_dir`; with nothing to
  resume it says so instead of starting a new run.
- A resumed run's `config.yaml` is never rewritten. The new config is compared with it first:
  a difference that would change the model, the optimizer state or the data is refused with
  the differing keys named, before anything in the folder is touched; the safe ones (steps,
  evaluation, logging and checkpoint cadence) are accepted and recorded in `summary.json`'s
  `resumes` list. Steps only with a constant schedule: a cosine schedule's decay is spread
  over `training.steps`, so changing them would change the learning rate of the steps left.
- Files are replaced atomically (written beside, then renamed), so a kill leaves the old
  version or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import json
import os
import re
from typing import Any

from omegaconf import OmegaConf

from jaxlstm.train.config import (
    ConfigError,
    DistributedConfig,
    ExperimentConfig,
    flatten,
    load_config,
)
from jaxlstm.train.files import json_safe, write_atomically

# Keys a resume may change: they decide how long to train and how often to look, not what
# the saved state means (patience too: e.g. to continue a run that stopped early). Everything
# else (model, optimizer, schedule, task, seed, batch size) would silently continue a
# different experiment, or fail to restore at all. training.steps only with a constant
# schedule (see `_check_steps_change`).
SAFE_TO_CHANGE_ON_RESUME = ("training.steps", "training.eval_every",
                            "training.eval_batch_size", "training.patience",
                            "training.prefetch", "training.loader_threads", "logging.",
                            "checkpointing.")
# Where the run goes and where it runs, not what it is: a run started on 4 devices or 2 hosts
# resumes on 1 and vice versa (`summary.json` records where each part ran).
NOT_COMPARED = ("name", "runs_root", "run_dir", "resume", "allow_data_change")
NOT_COMPARED_SECTIONS = ("distributed.",)

FINISHED = ("completed", "early_stopped")
"""`summary.json` statuses of a run that ended as planned (all its steps, or early stopping):
it has `final`, `best` and `test`, and a resume or a sweep has nothing left to do for it."""

LAUNCHER_FILES = ("submitit", "job_error.txt")
"""What `jaxlstm launch` puts into a run folder before (or instead of) its run: submitit's
files of a one-config launch, and a failed attempt's error line. A folder holding only these
(and empty folders) is empty to a new run."""

_STAMP = re.compile(r"^(\d{8}-\d{6})(?:-(\d+))?$")


class RunFolderError(ConfigError):
    """A run folder that cannot be used as asked: one line, exit code 2, nothing changed."""


def holds_run(path: str) -> bool:
    """Whether `path` already has a run's files in it. An empty `checkpoints` folder is not
    one: it is what a start that failed before writing `config.yaml` leaves (a full disk)."""
    return any(os.path.exists(os.path.join(path, name))
               for name in ("config.yaml", "metrics.jsonl", "summary.json")
               ) or bool(_entries(os.path.join(path, "checkpoints")))


def _entries(path: str) -> list[str]:
    """The names in the folder `path`; [] when it is no folder (or cannot be read)."""
    try:
        return os.listdir(path)
    except OSError:
        return []


def _started_at(path: str) -> tuple[float, int]:
    """When the run in `path` started: the stamp in its name, else its config's mtime."""
    match = _STAMP.match(os.path.basename(path))
    if match:
        stamp = datetime.datetime.strptime(match.group(1), "%Y%m%d-%H%M%S")
        return stamp.timestamp(), int(match.group(2) or 0)
    return os.path.getmtime(os.path.join(path, "config.yaml")), 0


def newest_run(root: str) -> str | None:
    """The most recently started run folder under `root`, or None."""
    if not os.path.isdir(root):
        return None
    runs = [os.path.join(root, d) for d in os.listdir(root)
            if os.path.isfile(os.path.join(root, d, "config.yaml"))]
    return max(runs, key=_started_at) if runs else None


def claim_stamped_folder(root: str, prefix: str = "") -> str:
    """Creates and returns `<root>/<prefix><YYYYmmdd-HHMMSS>[-n]`, the first such folder that
    did not exist: `os.mkdir` either creates it or fails, so two processes that ask in the
    same second (two runs, two sweeps) never get the same folder.

    Raises:
        OSError: `root` cannot be created, or a folder in it cannot.
    """
    stamp = prefix + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.makedirs(root, exist_ok=True)
    n = 0
    while True:
        path = os.path.join(root, stamp + (f"-{n}" if n else ""))
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            n += 1


def discard_if_empty(path: str) -> None:
    """Removes the folder `path` and the folders in it, as long as no file is in any of them:
    a claimed run folder whose run was refused or interrupted before writing anything.
    Never removes a file, nor any folder of a tree that holds one (its empty `checkpoints`
    belongs to the run beside it); a folder that cannot be removed stays."""
    tree = list(os.walk(path, topdown=False))
    if any(names for _, _, names in tree):
        return
    for folder, _, _ in tree:
        try:
            os.rmdir(folder)
        except OSError:
            pass


def is_folder_name(name: str) -> bool:
    """Whether `name` is one folder name (not empty, no `/`, neither `.` nor `..`): joined to
    a folder, it names a folder inside that one, whatever the path resolves to."""
    separators = {"/", os.sep, os.altsep or "/", "\0"}
    return name not in ("", ".", "..") and not any(sep in name for sep in separators)


def runs_folder(config: ExperimentConfig) -> str:
    """`<runs_root>/<name>`, the folder holding every run of `config.name` (`run` when it has
    none). RunFolderError when the name is not one folder name, so that no config writes
    outside `runs_root`. (A symbolic link a user made inside `runs_root` is followed:
    placing runs on another disk that way is theirs to choose.)"""
    name = config.name or "run"
    if not is_folder_name(name):
        raise RunFolderError(f"name: {name!r} must be one folder name inside runs_root (no "
                             "'/', not '.' or '..'); to write elsewhere set runs_root or "
                             "run_dir instead.")
    return os.path.join(config.runs_root, name)


def check_writable(path: str, key: str) -> None:
    """RunFolderError unless `path` is (or can be created as) a writable folder."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise RunFolderError(f"{key}: {path} cannot be created: {probe} is not a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunFolderError(f"{key}: {path} is not writable ({probe} denies writing).")


def _stray_files(path: str) -> list[str]:
    """What `path` holds besides `LAUNCHER_FILES` and empty folders, sorted ([] when it is
    no folder): the files a new run there could overwrite or be confused with."""
    return sorted(name for name in set(_entries(path)) - set(LAUNCHER_FILES)
                  if not (os.path.isdir(os.path.join(path, name))
                          and not _entries(os.path.join(path, name))))


def choose_run_dir(config: ExperimentConfig, *, claim: bool = True) -> str:
    """The folder this run writes to; RunFolderError when none fits, before anything is made.

    A new run's stamped folder is created here (`claim_stamped_folder`), so it is this
    process's alone; with `claim=False` (a dry run) it is only named. An explicit `run_dir`
    for a new run must be new, empty, or hold only `LAUNCHER_FILES` and empty folders: a run
    writes its files there and must find nothing in their place. `resume` returns an existing run's folder.
    """
    if config.run_dir:
        path = config.run_dir
        if config.resume and not os.path.isfile(os.path.join(path, "config.yaml")):
            raise RunFolderError(f"run_dir: nothing to resume in {path} (no config.yaml).")
        if not config.resume and holds_run(path):
            raise RunFolderError(f"run_dir: {path} already holds a run; pass --resume to "
                                 "continue it, or choose another run_dir.")
        check_writable(path, "run_dir")
        stray = [] if config.resume else _stray_files(path)
        if stray:
            shown = ", ".join(stray[:3]) + (f" and {len(stray) - 3} more" if len(stray) > 3
                                            else "")
            raise RunFolderError(f"run_dir: {path} is not empty and holds no run ({shown}); "
                                 "a new run needs a new or empty folder: choose another "
                                 "run_dir, or empty this one.")
        return path
    root = runs_folder(config)
    if config.resume:
        path = newest_run(root)
        if path is None:
            raise RunFolderError(f"resume: no earlier run of {config.name!r} in {root} to "
                                 "resume; run without --resume to start one.")
        check_writable(path, "runs_root")
        return path
    check_writable(root, "runs_root")
    if not claim:
        return os.path.join(root, datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    try:
        return claim_stamped_folder(root)
    except OSError as err:
        raise RunFolderError(f"runs_root: cannot create a run folder in {root}: "
                             f"{err.strerror or err}.") from None


def _flat(config: ExperimentConfig) -> dict[str, Any]:
    flat = flatten(OmegaConf.to_container(OmegaConf.structured(config)))
    return {k: v for k, v in flat.items()
            if k not in NOT_COMPARED and not k.startswith(NOT_COMPARED_SECTIONS)}


def resume_changes(run_dir: str, config: ExperimentConfig) -> dict[str, list[Any]]:
    """The keys in which `config` differs from the run's saved config, as {key: [old, new]}.

    Raises:
        RunFolderError: the saved config is unreadable, or a difference is not safe to
            continue with (naming every such key).
    """
    saved_path = os.path.join(run_dir, "config.yaml")
    try:
        saved = load_config(saved_path)
    except ConfigError as err:
        raise RunFolderError(f"resume: the run's saved config does not load: {err}") from None
    old, new = _flat(saved), _flat(config)
    changed = {k: [old.get(k), new.get(k)] for k in sorted(old.keys() | new.keys())
               if old.get(k) != new.get(k)}
    unsafe = [k for k in changed if not k.startswith(SAFE_TO_CHANGE_ON_RESUME)]
    if unsafe:
        described = ", ".join(f"{k} ({changed[k][0]!r} -> {changed[k][1]!r})" for k in unsafe)
        raise RunFolderError(
            f"resume: {run_dir} was trained with another config; these keys change the model, "
            f"optimizer or data and cannot change on resume: {described}. Start a new run "
            f"instead (without --resume).")
    _check_steps_change(saved, changed)
    return changed


def _check_steps_change(saved: ExperimentConfig, changed: dict[str, list[Any]]) -> None:
    """RunFolderError when a resume changes `training.steps` under a decaying schedule: its
    horizon is `training.steps` (`optim.make_schedule`), so every later step would get
    another learning rate than the saved config gives it, a jump where the run resumes."""
    if "training.steps" not in changed or saved.schedule.name == "constant":
        return
    old, new = changed["training.steps"]
    raise RunFolderError(
        f"resume: training.steps cannot change from {old} to {new} with schedule.name "
        f"{saved.schedule.name!r}: its decay is spread over training.steps, so the learning "
        f"rate would jump where the run resumes and config.yaml would no longer describe the "
        f"run; start a new run with training.steps={new}, or use schedule.name=constant to "
        f"extend runs.")


def read_summary(run_dir: str) -> dict[str, Any]:
    """The run's `summary.json`, or {} when there is none (or a torn one)."""
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def write_summary(run_dir: str, summary: dict[str, Any]) -> None:
    """Replaces `summary.json` atomically. On a full disk, where the new file cannot be made,
    the summary is written over the old one in place (its own blocks: no new space), so that
    a run stopped by the full disk still says so; a kill in that instant could tear it, and
    `read_summary` reads a torn summary as none."""
    path = os.path.join(run_dir, "summary.json")
    text = json.dumps(json_safe(summary), indent=2, sort_keys=True, allow_nan=False) + "\n"
    try:
        write_atomically(path, text)
    except OSError as err:
        if err.errno != errno.ENOSPC or not os.path.isfile(path):
            raise
        try:
            with open(path, "r+") as f:
                f.write(text)
                f.truncate()
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            raise err from None


def saved_config(config: ExperimentConfig) -> ExperimentConfig:
    """What `config.yaml` holds: the config without where-it-ran and resume settings."""
    return dataclasses.replace(config, run_dir=None, resume=False, allow_data_change=False,
                               distributed=DistributedConfig())
