"""Benchmark tasks: each a data source, a loss, its own metric and a baseline (see `base`).

    adding        the adding problem (regression, read at the last step)
    copy          the copy (memory) task (classification at every step)
    digits        scikit-learn's 8x8 digits row by row or pixel by pixel (needs scikit-learn)
    sunspots      next-year sunspot forecasting (needs statsmodels)
    text          character-level language model on `pydoc_data.topics`
    choreography  limb-angle phrases that differ in pose order or hold length
    parity        bit strings' parity, trained on 3-40 bits and tested on 40-256 (xLSTM)
    cycle_navigation  a walk on a cycle of 5 places, trained short and tested long (xLSTM)
    mqar          multi-query associative recall (Zoology; xLSTM)
    selective_copy  copy the tokens scattered among blanks, in order (Mamba; minRNN)

`make_task("copy", seq_len=50)` builds one from a config's options. The digits and sunspots data
ship inside scikit-learn and statsmodels, the optional `tasks` extra
(`pip install 'jaxlstm[tasks]'`); nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import numpy as np

from jaxlstm.tasks.adding import AddingTask
from jaxlstm.tasks.base import Task, TaskSpec, batch_weight
from jaxlstm.tasks.choreography import ChoreographyTask
from jaxlstm.tasks.copy import CopyTask
from jaxlstm.tasks.digits import DigitsTask
from jaxlstm.tasks.formal import CycleNavigationTask, ParityTask
from jaxlstm.tasks.mqar import MQARTask
from jaxlstm.tasks.selective_copy import SelectiveCopyTask
from jaxlstm.tasks.sunspots import SunspotsTask
from jaxlstm.tasks.text import TextTask

TASKS: dict[str, type] = {
    "adding": AddingTask,
    "copy": CopyTask,
    "digits": DigitsTask,
    "sunspots": SunspotsTask,
    "text": TextTask,
    "choreography": ChoreographyTask,
    "parity": ParityTask,
    "cycle_navigation": CycleNavigationTask,
    "mqar": MQARTask,
    "selective_copy": SelectiveCopyTask,
}


def task_options(name: str) -> dict[str, Any]:
    """The options of task `name` and their defaults."""
    return {f.name: f.default for f in dataclasses.fields(_task_class(name)) if f.init}


def _task_class(name: str) -> type:
    if name not in TASKS:
        raise ValueError(f"task.name: unknown task {name!r}; expected one of {sorted(TASKS)}.")
    return TASKS[name]


def _check_type(name: str, key: str, value: Any, expected: Any) -> Any:
    """The option's value, checked against its annotation (int, float, str, bool)."""
    if expected is bool:
        ok = isinstance(value, (bool, np.bool_))
        value = bool(value) if ok else value
    elif expected is int:
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        value = int(value) if ok else value
    elif expected is float:
        ok = (isinstance(value, (int, float, np.integer, np.floating))
              and not isinstance(value, (bool, np.bool_)))
        value = float(value) if ok else value
    elif expected is str:
        ok = isinstance(value, str)
    else:
        return value
    if not ok:
        raise TypeError(f"task.{key} must be {expected.__name__} for the {name} task, got "
                        f"{value!r} ({type(value).__name__}).")
    return value


def make_task(name: str, **options: Any) -> Task:
    """Builds task `name` with the given options (the dataclass fields of its class).

    Raises:
        ValueError: an unknown task ("task.name: ...") or a bad option value ("task.<option>
            must be ...").
        TypeError: an unknown option or one of the wrong type ("task.<option>: ...").
        ImportError: the task needs the `tasks` extra and it is not installed.
    """
    cls = _task_class(name)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    checked = {}
    for key, value in options.items():
        if key not in fields:
            raise TypeError(f"task.{key}: unknown option for the {name} task; its options are "
                            f"{sorted(fields)}.")
        checked[key] = _check_type(name, key, value, hints.get(key))
    return cls(**checked)


__all__ = [
    "TASKS",
    "AddingTask",
    "ChoreographyTask",
    "CopyTask",
    "CycleNavigationTask",
    "DigitsTask",
    "MQARTask",
    "ParityTask",
    "SelectiveCopyTask",
    "SunspotsTask",
    "Task",
    "TaskSpec",
    "TextTask",
    "batch_weight",
    "make_task",
    "task_options",
]
