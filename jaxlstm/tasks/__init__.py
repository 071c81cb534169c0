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

A user's own data (`files`), read from local files or from shards made by `jaxlstm data
convert`, with valid and test splits:

    arrays        sequences in an .npz file or a folder of .npy files
    text_file     next-symbol prediction on any text file (bytes or UTF-8 characters)
    table         time-series forecasting from a CSV or Parquet file

`make_task("copy", seq_len=50)` builds one from a config's options, and
`make_task("mytasks:Noisy", n=1000)` a user's own task class (`plugin`); `Task` (in `base`) is
what every task implements. The built-in tasks have one held-out split, "valid"; asked for
"test" they raise `SplitUnavailable`. The digits and sunspots data ship inside scikit-learn
and statsmodels, the optional `tasks` extra (`pip install 'jaxlstm[tasks]'`); nothing is
downloaded. Such a task's class says so (`needs`, see `needs_extra`), and building it without
the package raises `MissingExtra`, one line naming the extra to install.
"""

from __future__ import annotations

from typing import Any

from jaxlstm.tasks._data import Extra, MissingExtra
from jaxlstm.tasks.adding import AddingTask
from jaxlstm.tasks.base import (
    SPLITS,
    SplitUnavailable,
    Task,
    TaskSpec,
    baseline_of,
    batch_weight,
    check_split,
    classification_metrics,
    held_out,
    regression_metrics,
)
from jaxlstm.tasks.choreography import ChoreographyTask
from jaxlstm.tasks.copy import CopyTask
from jaxlstm.tasks.digits import DigitsTask
from jaxlstm.tasks.files import ArraysTask, DataError, TableTask, TextFileTask
from jaxlstm.tasks.formal import CycleNavigationTask, ParityTask
from jaxlstm.tasks.mqar import MQARTask
from jaxlstm.tasks.options import check_options, option_defaults
from jaxlstm.tasks.plugin import (
    check_task,
    is_plugin_name,
    make_plugin_task,
    plugin_options,
)
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
    "arrays": ArraysTask,
    "text_file": TextFileTask,
    "table": TableTask,
}


def task_options(name: str) -> dict[str, Any]:
    """The options of task `name` (a built-in task or "package.module:ClassName") and their
    defaults."""
    if is_plugin_name(name):
        return plugin_options(name)
    return option_defaults(_task_class(name))


def _task_class(name: str) -> type:
    if name not in TASKS:
        raise ValueError(f"task.name: unknown task {name!r}; expected one of {sorted(TASKS)} "
                         "or \"package.module:ClassName\" (your own task class).")
    return TASKS[name]


def needs_extra(name: str) -> Extra | None:
    """The optional dependency built-in task `name` needs (its class's `needs`), or None: most
    tasks and every user's task need none that jaxlstm knows of."""
    return getattr(TASKS.get(name), "needs", None)


def make_task(name: str, **options: Any) -> Task:
    """Builds task `name` with the given options (the dataclass fields of its class).

    `name` is a built-in task (`TASKS`) or a user's own dataclass, "package.module:ClassName",
    imported with the current directory importable (see `jaxlstm.tasks.plugin`).

    Raises:
        ValueError: an unknown task or a user's class that cannot be loaded or built
            ("task.name: ..."), or a bad option value ("task.<option> must be ...").
        TypeError: an unknown, missing or wrongly typed option ("task.<option>..."), or a
            user's class that is not a dataclass or does not implement `Task`.
        MissingExtra (an ImportError and a ValueError): a built-in task needs an extra that is
            not installed ("task.name: digits needs scikit-learn: pip install ...").
    """
    if is_plugin_name(name):
        return make_plugin_task(name, **options)
    cls = _task_class(name)
    return cls(**check_options(cls, options, name))


__all__ = [
    "SPLITS",
    "TASKS",
    "AddingTask",
    "ArraysTask",
    "ChoreographyTask",
    "CopyTask",
    "CycleNavigationTask",
    "DataError",
    "DigitsTask",
    "Extra",
    "MQARTask",
    "MissingExtra",
    "ParityTask",
    "SelectiveCopyTask",
    "SplitUnavailable",
    "SunspotsTask",
    "TableTask",
    "Task",
    "TaskSpec",
    "TextFileTask",
    "TextTask",
    "baseline_of",
    "batch_weight",
    "check_split",
    "check_task",
    "classification_metrics",
    "held_out",
    "make_task",
    "needs_extra",
    "regression_metrics",
    "task_options",
]
