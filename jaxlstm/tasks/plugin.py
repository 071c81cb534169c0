"""A user's own task class, named in a config as `task.name: "package.module:ClassName"`.

    # mytasks.py, in the folder the command runs from (or any installed package)
    @dataclasses.dataclass
    class Noisy:
        n: int = 500
        def __post_init__(self): self.spec = TaskSpec("noisy", 1, 1, "last", "regression", "mse")
        ...                                  # train_batch, eval_batches, baseline, metrics

    task: {name: "mytasks:Noisy", options: {n: 1000}}

The module is imported from the user's environment with the current directory importable,
as `python -m` has it: the `jaxlstm` console script's own `sys.path[0]` is its bin folder, so
without that the same config would find `mytasks.py` under `python -m jaxlstm.cli` and not
under `jaxlstm`. The class must be a dataclass: its init fields are `task.options`, checked
exactly as a built-in task's are (`options.check_options`). The built task is then checked
against the `Task` protocol (`check_task`). Every failure is one line, a ValueError or
TypeError starting "task.name:" or "task.<option>", which the runner reports as a config
error before it makes any folder.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys
from typing import Any

from jaxlstm.tasks.base import KINDS, READOUTS, Task, TaskSpec
from jaxlstm.tasks.options import check_options, first_line, option_defaults

_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_METHODS = ("train_batch", "eval_batches", "baseline", "metrics")


def is_plugin_name(name: str) -> bool:
    """Whether task name `name` names a user's class ("module:Class") rather than a built-in
    task."""
    return ":" in name


def load_task_class(name: str) -> type:
    """The dataclass `name` ("package.module:ClassName") names, imported from the user's
    environment with the current directory importable.

    Raises:
        ValueError: a malformed name, a module that does not import, no such class.
        TypeError: not a class, or not a dataclass (its options could not be checked).
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"task.name: {name!r} is neither a built-in task nor "
                         "\"package.module:ClassName\" (a module path, one colon, a class).")
    module_name, class_name = name.split(":")
    _make_cwd_importable()
    # A module written after the process started (a notebook, a test) is otherwise missed
    # by the import system's cached directory listings.
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # the user's module may fail in any way; one line says how
        raise ValueError(f"task.name: module {module_name!r} (of {name!r}) does not import: "
                         f"{type(err).__name__}: {first_line(err)}") from None
    if not hasattr(module, class_name):
        classes = sorted(key for key, value in vars(module).items()
                         if isinstance(value, type) and value.__module__ == module.__name__)
        raise ValueError(f"task.name: module {module_name!r} ({_where(module)}) has no "
                         f"{class_name!r}; the classes it defines are {classes}.")
    cls = getattr(module, class_name)
    if not isinstance(cls, type):
        raise TypeError(f"task.name: {name!r} is a {type(cls).__name__}, not a class.")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"task.name: {name!r} is not a dataclass, so its options cannot be "
                        "checked; declare it with @dataclasses.dataclass (its fields are "
                        "task.options).")
    return cls


def plugin_options(name: str) -> dict[str, Any]:
    """The options of the task class `name` names and their defaults (see `load_task_class`
    for the errors)."""
    return option_defaults(load_task_class(name))


def make_plugin_task(name: str, **options: Any) -> Task:
    """Imports, builds and checks the task class `name` ("package.module:ClassName") with
    `options` (its dataclass fields).

    Raises:
        ValueError, TypeError: one line starting "task.name:" or "task.<option>": see
            `load_task_class`, `options.check_options` and `check_task`; a class whose
            constructor raises is reported with its exception's first line.
    """
    cls = load_task_class(name)
    checked = check_options(cls, options, name)
    try:
        task = cls(**checked)
    except Exception as err:  # the user's code: report it, do not trace it
        raise ValueError(f"task.name: building the {name} task failed: "
                         f"{type(err).__name__}: {first_line(err)}") from None
    return check_task(task, name)


def check_task(task: Any, name: str) -> Task:
    """`task`, if it implements the `Task` protocol: a `spec` that is a `TaskSpec` with a
    known readout and kind and positive sizes, the callables `train_batch`, `eval_batches`,
    `baseline` and `metrics`, and a hashable `metrics` (jit holds it as static data).

    Raises:
        TypeError: "task.name: the <name> task does not implement the Task protocol
            (jaxlstm.tasks.Task): ...", naming every member missing or wrong.
    """
    missing = [key for key in ("spec", *_METHODS) if not hasattr(task, key)]
    problems = [f"missing {', '.join(missing)}"] if missing else []
    problems += [f"{key} is not callable" for key in _METHODS
                 if hasattr(task, key) and not callable(getattr(task, key))]
    if hasattr(task, "spec"):
        problems += _spec_problems(task.spec)
    metrics = getattr(task, "metrics", None)
    if callable(metrics) and not _hashable(metrics):
        problems.append(f"metrics must be hashable (jit holds it as static data), got an "
                        f"unhashable {type(metrics).__name__}")
    if problems:
        raise TypeError(f"task.name: the {name} task does not implement the Task protocol "
                        f"(jaxlstm.tasks.Task): {'; '.join(problems)}.")
    return task


def _spec_problems(spec: Any) -> list[str]:
    if not isinstance(spec, TaskSpec):
        return [f"spec must be a jaxlstm.tasks.TaskSpec, got {type(spec).__name__}"]
    problems = []
    if spec.readout not in READOUTS:
        problems.append(f"spec.readout must be one of {list(READOUTS)}, got {spec.readout!r}")
    if spec.kind not in KINDS:
        problems.append(f"spec.kind must be one of {list(KINDS)}, got {spec.kind!r}")
    for key in ("input_size", "output_size"):
        size = getattr(spec, key)
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
            problems.append(f"spec.{key} must be an int >= 1, got {size!r}")
    return problems


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _where(module: Any) -> str:
    return getattr(module, "__file__", None) or "a namespace package"


def _make_cwd_importable() -> None:
    """Puts the current directory first on `sys.path`, where `python -m` puts it, unless it
    is already there (as "" or by its path)."""
    cwd = os.path.realpath(os.getcwd())
    if not any(isinstance(entry, str) and os.path.realpath(entry or os.curdir) == cwd
               for entry in sys.path):
        sys.path.insert(0, cwd)
