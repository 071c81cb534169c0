"""Run folders: which one a run writes to, and the rules that keep each one consistent.

    <runs_root>/<name>/<YYYYmmdd-HHMMSS>[-n]/

- A new run gets a new folder; a folder that already holds a run (a `config.yaml`, metrics or
  checkpoints) is never written into without `resume`.
- `resume` continues the newest run of the config's name (newest by the time in its folder
  name, not by text order: `...-9` is older than `...-11`), or `run_dir`; with nothing to
  resume it says so instead of starting a new run.
- A resumed run's `config.yaml` is never rewritten. The new config is compared with it first:
  a difference that would change the model, the optimizer state or the data is refused with
  the differing keys named, before anything in the folder is touched; the safe ones (steps,
  evaluation, logging and checkpoint cadence) are accepted and recorded in `summary.json`'s
  `resumes` list.
- Files are replaced atomically (written beside, then renamed), so a kill leaves the old
  version or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
from typing import Any

from omegaconf import OmegaConf

from jaxlstm.train.config import (
    ConfigError,
    DistributedConfig,
    ExperimentConfig,
    load_config,
)
from jaxlstm.train.files import json_safe, write_atomically

# Keys a resume may change: they decide how long to train and how often to look, not what
# the saved state means (patience too: e.g. to continue a run that stopped early). Everything
# else (model, optimizer, schedule, task, seed, batch size) would silently continue a
# different experiment, or fail to restore at all.
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

_STAMP = re.compile(r"^(\d{8}-\d{6})(?:-(\d+))?$")


class RunFolderError(ConfigError):
    """A run folder that cannot be used as asked: one line, exit code 2, nothing changed."""


def holds_run(path: str) -> bool:
    """Whether `path` already has a run's files in it."""
    return any(os.path.exists(os.path.join(path, name))
               for name in ("config.yaml", "metrics.jsonl", "checkpoints", "summary.json"))


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


def _new_run_dir(root: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = os.path.join(root, stamp), 1
    while os.path.exists(path):
        path, n = os.path.join(root, f"{stamp}-{n}"), n + 1
    return path


def check_writable(path: str, key: str) -> None:
    """RunFolderError unless `path` is (or can be created as) a writable folder."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise RunFolderError(f"{key}: {path} cannot be created: {probe} is not a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunFolderError(f"{key}: {path} is not writable ({probe} denies writing).")


def choose_run_dir(config: ExperimentConfig) -> str:
    """The folder this run writes to (not created yet); RunFolderError when none fits."""
    if config.run_dir:
        path = config.run_dir
        if config.resume and not os.path.isfile(os.path.join(path, "config.yaml")):
            raise RunFolderError(f"run_dir: nothing to resume in {path} (no config.yaml).")
        if not config.resume and holds_run(path):
            raise RunFolderError(f"run_dir: {path} already holds a run; pass --resume to "
                                 "continue it, or choose another run_dir.")
        check_writable(path, "run_dir")
        return path
    root = os.path.join(config.runs_root, config.name or "run")
    if config.resume:
        path = newest_run(root)
        if path is None:
            raise RunFolderError(f"resume: no earlier run of {config.name!r} in {root} to "
                                 "resume; run without --resume to start one.")
        check_writable(path, "runs_root")
        return path
    check_writable(root, "runs_root")
    return _new_run_dir(root)


def _flat(config: ExperimentConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(OmegaConf.structured(config))

    def walk(node: Any, prefix: str) -> dict[str, Any]:
        if isinstance(node, dict) and (node or not prefix):
            out: dict[str, Any] = {}
            for key, value in node.items():
                out.update(walk(value, f"{prefix}{key}."))
            return out
        return {prefix[:-1]: node}

    flat = walk(container, "")
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
    return changed


def read_summary(run_dir: str) -> dict[str, Any]:
    """The run's `summary.json`, or {} when there is none (or a torn one)."""
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def write_summary(run_dir: str, summary: dict[str, Any]) -> None:
    write_atomically(os.path.join(run_dir, "summary.json"),
                     json.dumps(json_safe(summary), indent=2, sort_keys=True, allow_nan=False) + "\n")


def saved_config(config: ExperimentConfig) -> ExperimentConfig:
    """What `config.yaml` holds: the config without where-it-ran and resume settings."""
    return dataclasses.replace(config, run_dir=None, resume=False, allow_data_change=False,
                               distributed=DistributedConfig())
