"""Run folders read back: what `jaxlstm runs` lists and `jaxlstm compare` sets side by side.

A run is any folder holding a `config.yaml`: `<runs_root>/<name>/<time>/`, a sweep's points
`<runs_root>/<name>/sweep-<time>/<point>/`, or a `run_dir` anywhere. Everything comes from the
folder's own files, and nothing is written:

    config.yaml    the resolved config, read as plain YAML (a folder written under an older
                   schema still reads), as {dotted key: value}
    summary.json   the status, step, `final`, `baseline`, `best` and `test` metrics, and, when
                   the runner recorded them, `config_source` and `overrides` (the command's
                   CONFIG and key=value arguments), `pid` and `host`
    metrics.jsonl  the curves

    runs = list_runs("runs")                       # newest first
    runs[0].status, runs[0].value("final"), runs[0].config["model.hidden_size"]
    differing_keys([run.config for run in runs[:2]])
    describe_overrides(config, "my.yaml")          # "model.hidden_size=128 training.seed=1"
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shlex
import socket
from collections.abc import Iterable
from typing import Any

import yaml

from jaxlstm.train.config import ExperimentConfig, flatten, load_config, to_yaml
from jaxlstm.train.logs import read_metrics
from jaxlstm.train.run_folder import (
    NOT_COMPARED,
    NOT_COMPARED_SECTIONS,
    _started_at,
    read_summary,
)

STARTED = "started"
"""The status of a folder with a `config.yaml` and no `summary.json` yet (starting, or
killed before the runner wrote anything else)."""

MAYBE_DEAD = "running?"
"""The status of a "running" run whose recorded process (`pid` on `host`, this machine) is
gone: killed without a chance to say so (kill -9, out of memory, a node lost)."""

NO_OVERRIDES = "no overrides"
"""What `describe_overrides` and `format_overrides` say of a run that has none."""

# Folders inside a run or a sweep that never hold a run: not walked into.
_NOT_RUNS = frozenset({"checkpoints", "best_checkpoint", "unusable_checkpoints", "tensorboard",
                       "submitit"})
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser where PyYAML has it


def read_config(folder: str) -> dict[str, Any]:
    """The folder's `config.yaml` flattened (see `flatten`); {} when it does not read."""
    try:
        with open(os.path.join(folder, "config.yaml"), encoding="utf-8") as f:
            loaded = yaml.load(f, Loader=_LOADER)
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: not UTF-8
        return {}
    return flatten(loaded) if isinstance(loaded, dict) else {}


def _process_gone(summary: dict[str, Any]) -> bool:
    """Whether the process the summary names (`pid` on `host`) has surely ended. Only a
    process of this machine can be asked, and only on POSIX (where signal 0 tests, never
    harms; on Windows `os.kill` would terminate it)."""
    pid, host = summary.get("pid"), summary.get("host")
    if os.name != "posix" or not isinstance(pid, int) or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, another user's
        return False
    return False


def status_of(summary: dict[str, Any]) -> str:
    """The run's status: `summary.json`'s, `STARTED` without one, `MAYBE_DEAD` for a
    "running" run whose process is known to be gone."""
    status = summary.get("status")
    if status is None:
        return STARTED
    if status == "running" and _process_gone(summary):
        return MAYBE_DEAD
    return str(status)


@dataclasses.dataclass(frozen=True)
class Run:
    """One run folder as read now (see the module docstring)."""

    folder: str
    config: dict[str, Any]  # config.yaml flattened; {} when unreadable
    summary: dict[str, Any]  # summary.json; {} when missing or torn
    started: float  # seconds since the epoch: the folder name's time, else config.yaml's mtime
    status: str

    @property
    def name(self) -> str:
        return str(self.summary.get("name") or self.config.get("name")
                   or os.path.basename(os.path.dirname(os.path.abspath(self.folder))))

    @property
    def step(self) -> int | None:
        step = self.summary.get("step")
        return step if isinstance(step, int) else None

    @property
    def steps(self) -> int | None:
        """The steps the run is to train: `training.steps`, or what the latest resume that
        changed it asked for (a resume never rewrites `config.yaml`)."""
        steps = self.config.get("training.steps")
        for resume in self.summary.get("resumes") or []:
            changed = (resume.get("changed") or {}).get("training.steps")
            if isinstance(changed, list) and len(changed) == 2:
                steps = changed[1]
        return steps if isinstance(steps, int) else None

    @property
    def metric(self) -> str | None:
        """The task's metric: the summary's, else the first one of the eval lines."""
        metric = self.summary.get("metric")
        if isinstance(metric, str):
            return metric
        for record in self.curves:
            if record.get("split") == "eval":
                named = [k for k in record if k not in ("step", "split", "loss")]
                return named[0] if named else "loss"
        return None

    def value(self, section: str, metric: str | None = None) -> float | None:
        """`summary[section][metric]` (section: "final", "baseline", "test",
        "baseline_test"; "best" reads its "metrics"), None where there is none."""
        entry = self.summary.get(section)
        if section == "best" and isinstance(entry, dict):
            entry = entry.get("metrics")
        metric = metric or self.summary.get("metric")
        value = entry.get(metric) if isinstance(entry, dict) and metric else None
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def overrides(self) -> list[str] | None:
        """The `key=value` overrides the run was started with, as the runner recorded them
        in `summary.json`, each value as `config.yaml` holds it (`1e-3` reads `0.001`, as
        `describe_overrides` writes it); None for a run from before they were recorded."""
        overrides = self.summary.get("overrides")
        if not (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
            return None
        keys = [override.partition("=")[0].strip() for override in overrides]
        return [f"{key}={value_text(self.config[key])}" if key in self.config else override
                for key, override in zip(keys, overrides, strict=True)]

    @functools.cached_property
    def curves(self) -> list[dict[str, Any]]:
        """The records of `metrics.jsonl` ([] without one), read once."""
        try:
            return read_metrics(os.path.join(self.folder, "metrics.jsonl"))
        except OSError:
            return []


def is_run(folder: str) -> bool:
    """Whether `folder` holds a run (a `config.yaml`)."""
    return os.path.isfile(os.path.join(folder, "config.yaml"))


def _started(folder: str) -> tuple[float, int]:
    try:
        return _started_at(folder)
    except OSError:  # config.yaml deleted meanwhile
        return 0.0, 0


def find_runs(root: str) -> list[str]:
    """The run folders at or under `root`, sweep points included, newest first.

    A run folder is not walked into (runs do not nest), nor are checkpoint, TensorBoard and
    submitit folders, so the walk stays short however many checkpoints the runs keep.
    """
    found = []
    for folder, subfolders, files in os.walk(root):
        if "config.yaml" in files:
            found.append(folder)
            subfolders.clear()
        else:
            subfolders[:] = [d for d in subfolders
                             if d not in _NOT_RUNS and not d.startswith(".")]
    return sorted(found, key=_started, reverse=True)


def read_run(folder: str) -> Run:
    """The run in `folder` (which `is_run`)."""
    summary = read_summary(folder)
    return Run(folder, read_config(folder), summary, _started(folder)[0], status_of(summary))


def list_runs(root: str) -> list[Run]:
    """Every run at or under `root`, newest first."""
    return [read_run(folder) for folder in find_runs(root)]


ABSENT = object()
"""What `value_text` shows as `-`: pass it for a key a config lacks, `config.get(key, ABSENT)`."""


def differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    """The dotted keys whose values are not all the same (a key some configs lack counts as
    differing), in the configs' own order."""
    keys = dict.fromkeys(key for config in configs for key in config)
    return [key for key in keys
            if len({value_text(config.get(key, ABSENT)) for config in configs}) > 1]


def _describes_the_run(key: str) -> bool:
    """Whether `key` says what the run is, not where or how it ran (`NOT_COMPARED`: its
    name and folders, the resume flags, the `distributed` section)."""
    return key not in NOT_COMPARED and not key.startswith(NOT_COMPARED_SECTIONS)


def config_differences(config: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """`key=value` for each key of `config` (flattened) whose value differs from
    `reference`'s: the overrides that turn `reference` into `config`, in `config`'s order.

    A key `reference` lacks differs (a task option the file does not set). Keys `reference`
    has and `config` lacks are left out, since no override removes a key (they come from a
    schema that changed since an older run), and so are the keys that do not describe the
    run (`NOT_COMPARED`).
    """
    return [f"{key}={value_text(value)}" for key, value in config.items()
            if _describes_the_run(key)
            and value_text(value) != value_text(reference.get(key, ABSENT))]


def value_text(value: Any) -> str:
    """A config value as one would type it in an override (YAML flow style); `-` for a key
    a config lacks."""
    if value is ABSENT:
        return "-"
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip().removesuffix(
        "\n...").strip()


ConfigLike = ExperimentConfig | dict[str, Any] | str | os.PathLike
"""A config given to `describe_overrides`: typed, a mapping (nested as in `config.yaml`, or
flattened), or a YAML file (loaded with `load_config`, so the schema's defaults fill in the
keys the file leaves out)."""


def flat_config(config: ConfigLike) -> dict[str, Any]:
    """`config` (see `ConfigLike`) as {dotted key: value}, the form `read_config` gives.

    Raises:
        ConfigError: a YAML file that does not load.
    """
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    if isinstance(config, ExperimentConfig):
        config = yaml.load(to_yaml(config), Loader=_LOADER)
    return flatten(config)


def format_overrides(overrides: Iterable[str]) -> str:
    """`key=value` overrides as one line that can be typed again (`model.hidden_size=128
    training.steps=2000`), or "no overrides".

    A key given twice keeps its last value (as `load_config` does), at its first place; the
    keys that do not describe the run (the resume flags, `name`, `runs_root`, `run_dir`,
    `distributed.*`) are left out; a value with spaces or shell characters is quoted.
    """
    latest: dict[str, str] = {}
    for override in overrides:
        key = override.partition("=")[0].strip()
        if _describes_the_run(key):
            latest[key] = override
    return " ".join(shlex.quote(o) for o in latest.values()) or NO_OVERRIDES


def describe_overrides(config: ConfigLike, source: ConfigLike) -> str:
    """How `config` differs from the config file it came from, as the overrides that make
    the difference: `model.hidden_size=128 training.seed=1`, or "no overrides".

    Told apart by value, not by what was typed: `training.seed=0` where the file's seed is 0
    is no override, and `1e-3` equals `0.001`. What does not describe the run (its name and
    folders, `--resume`, `distributed.*`) is left out.

        describe_overrides(config, shipped.resolve("quickstart"))   # the final line of train
        describe_overrides("runs/quickstart/20250101-120000/config.yaml", "my.yaml")

    Args:
        config: the run's config (see `ConfigLike`): an `ExperimentConfig`, or its
            `config.yaml`.
        source: the config file it came from (a path; a shipped name resolved by the
            caller), or that file already loaded.

    Raises:
        ConfigError: a YAML file that does not load.
    """
    return format_overrides(config_differences(flat_config(config), flat_config(source)))


__all__ = ["ABSENT", "MAYBE_DEAD", "NO_OVERRIDES", "STARTED", "ConfigLike", "Run",
           "config_differences", "describe_overrides", "differing_keys", "find_runs",
           "flat_config", "flatten", "format_overrides", "is_run", "list_runs", "read_config",
           "read_run", "status_of", "value_text"]
