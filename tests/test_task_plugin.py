"""A user's own task class from the config ("module:Class"), option checking, and the
held-out splits of every task (the built-in ones have "valid" only)."""

import dataclasses
import os
import re
import sys
import textwrap

import numpy as np
import pytest

from jaxlstm.tasks import (
    SPLITS,
    TASKS,
    SplitUnavailable,
    baseline_of,
    held_out,
    make_task,
    task_options,
)
from jaxlstm.tasks.files import FILE_TASKS
from jaxlstm.tasks.options import check_type
from jaxlstm.train.config import ConfigError, load_config
from jaxlstm.train.run import run_experiment
from tests.test_tasks import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A user's regression task: predict the sum of a sequence's inputs, read at the last step.
SUM_TASK = '''
from __future__ import annotations

import dataclasses

import numpy as np

from jaxlstm.tasks import TaskSpec, check_split, regression_metrics


@dataclasses.dataclass(eq=False)
class SumTask:
    n: int = 256
    seq_len: int = 6
    scale: float | None = None
    features: list[str] = dataclasses.field(default_factory=lambda: ["x"])

    def __post_init__(self):
        if self.n < 16:
            raise ValueError(f"task.n must be >= 16, got {self.n}.\\nsecond line")
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (self.n, self.seq_len, len(self.features)))
        x = (x * (self.scale or 1.0)).astype(np.float32)
        y = x.sum(axis=(1, 2)).reshape(-1, 1, 1) / self.seq_len
        cut = self.n * 3 // 4
        self.train = {"inputs": x[:cut], "targets": y[:cut]}
        self.valid = {"inputs": x[cut:], "targets": y[cut:]}
        self.spec = TaskSpec("sum", len(self.features), 1, "last", "regression", "mse")

    def train_batch(self, seed, step, batch_size, rows=None):
        picked = np.random.default_rng([seed, step]).integers(0, len(self.train["inputs"]),
                                                              batch_size)
        picked = picked if rows is None else picked[rows]
        return {key: value[picked] for key, value in self.train.items()}

    def eval_batches(self, batch_size, split="valid"):
        check_split(split, self.spec.name)
        size = len(self.valid["inputs"])
        return [{key: value[i:i + batch_size] for key, value in self.valid.items()}
                for i in range(0, size, batch_size)]

    def baseline(self, split="valid"):
        check_split(split, self.spec.name)
        mse = float(np.mean(self.valid["targets"] ** 2))  # always predicting 0
        return {"loss": mse, "mse": mse}

    metrics = staticmethod(regression_metrics)


@dataclasses.dataclass(eq=False)
class OldSumTask(SumTask):
    """Written before splits existed: no `split` parameters."""

    def eval_batches(self, batch_size):
        return SumTask.eval_batches(self, batch_size)

    def baseline(self):
        return SumTask.baseline(self)


@dataclasses.dataclass(eq=False, kw_only=True)
class Needs(SumTask):
    size: int
    lags: list[int] = dataclasses.field(default_factory=list)
    weights: list[float] | None = None


@dataclasses.dataclass
class SpecOnly:
    def __post_init__(self):
        self.spec = TaskSpec("s", 1, 1, "first", "ranking", "mse")


@dataclasses.dataclass  # eq=True and not frozen: its instances are unhashable
class Metrics:
    scale: float = 1.0

    def __call__(self, outputs, batch):
        return regression_metrics(outputs * self.scale, batch)


@dataclasses.dataclass(eq=False)
class UnhashableMetrics(SumTask):
    def __post_init__(self):
        super().__post_init__()
        self.metrics = Metrics()


@dataclasses.dataclass
class Unreadable:
    size: NoSuchType = 3


class NotADataclass:
    pass


def make():
    pass
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Writes modules into a folder on sys.path; returns the writer. The modules are dropped
    from sys.modules afterwards, so each test imports its own."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written = []

    def write(name, source=SUM_TASK):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


# --- A user's task class --------------------------------------------------------------------


def test_plugin_task_is_built_with_checked_options(plugin):
    plugin("mymod")
    task = make_task("mymod:SumTask", n=64, scale=2, features=("a", "b"))
    assert type(task).__name__ == "SumTask" and type(task).__module__ == "mymod"
    assert task.n == 64 and task.scale == 2.0 and isinstance(task.scale, float)
    assert task.features == ["a", "b"] and task.spec.input_size == 2
    assert task_options("mymod:SumTask") == {"n": 256, "seq_len": 6, "scale": None,
                                             "features": ["x"]}
    assert make_task("mymod:SumTask", scale=None).scale is None


def test_plugin_task_trains_with_the_runner(plugin, tmp_path):
    plugin("mymod_run")
    config = load_config(os.path.join(ROOT, "configs", "quickstart.yaml"), [
        "task.name=mymod_run:SumTask", "task.options.seq_len=4", "task.options.n=96",
        "model.hidden_size=8", "training.batch_size=8", "training.eval_batch_size=64",
        "training.steps=12", "training.eval_every=4", "logging.log_every=2",
        "checkpointing.every=4", "logging.progress=false", "logging.tensorboard=false",
        "logging.plots=false", f"runs_root={tmp_path / 'runs'}"])
    result = run_experiment(config)
    assert result.status == "completed" and result.step == 12
    assert result.summary["metric"] == "mse"
    assert np.isfinite(result.summary["final"]["mse"])
    assert result.summary["baseline"] == make_task("mymod_run:SumTask", seq_len=4,
                                                   n=96).baseline()


def test_a_plugin_error_is_a_config_error_before_any_folder(tmp_path):
    config = load_config(os.path.join(ROOT, "configs", "quickstart.yaml"), [
        "task.name=no_such_module_here:Task", f"runs_root={tmp_path / 'runs'}"])
    with pytest.raises(ConfigError, match=r"^task\.name: module 'no_such_module_here'"):
        run_experiment(config)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("options, match", [
    ({"m": 3}, r"^task\.m: unknown option for the mymod_opt:SumTask task; its options are "
               r"\['features', 'n', 'scale', 'seq_len'\]"),
    ({"n": "5"}, r"^task\.n must be int for the mymod_opt:SumTask task, got '5' \(str\)"),
    ({"n": True}, r"^task\.n must be int"),
    ({"scale": "big"}, r"^task\.scale must be float \| None .* got 'big' \(str\)"),
    ({"features": "ab"}, r"^task\.features must be list\[str\]"),
    ({"features": ["a", 1]}, r"^task\.features must be list\[str\]"),
])
def test_plugin_options_are_checked_like_the_built_in_ones(plugin, options, match):
    plugin("mymod_opt")
    with pytest.raises(TypeError, match=match):
        make_task("mymod_opt:SumTask", **options)


@pytest.mark.parametrize("value, expected, result", [
    (3, int, 3), (3, float, 3.0), (None, int | None, None), (4, float | None, 4.0),
    ([1, 2], list[int], [1, 2]), ((1, 2), list[float], [1.0, 2.0]),
    (["a"], list[str], ["a"]), ([], list[str], []), (None, list[float] | None, None),
    ([0.5], list[float] | None, [0.5]), ({"any": 1}, dict, {"any": 1}),
])
def test_check_type_accepts_and_converts(value, expected, result):
    converted = check_type("t", "key", value, expected)
    assert converted == result and type(converted) is type(result)
    if isinstance(result, list):
        assert [type(v) for v in converted] == [type(v) for v in result]


@pytest.mark.parametrize("value, expected, name", [
    ("3", int | None, "int | None"), ([1.5], list[int], "list[int]"),
    ([True], list[int], "list[int]"), (["1"], list[float], "list[float]"),
    (1, list[str], "list[str]"), (3, list[float] | None, "list[float] | None"),
    (1, bool, "bool"),
])
def test_check_type_refuses_with_the_annotation_named(value, expected, name):
    with pytest.raises(TypeError, match=rf"^task\.key must be {re.escape(name)} for the t "
                                        rf"task, got {re.escape(repr(value))} "):
        check_type("t", "key", value, expected)


def test_required_options_and_list_options(plugin):
    plugin("mymod_req")
    options = task_options("mymod_req:Needs")
    assert options["size"] is dataclasses.MISSING and options["lags"] == []
    with pytest.raises(TypeError, match=r"^task\.size: the mymod_req:Needs task requires "
                                        r"this option \(set task\.options\.size\)"):
        make_task("mymod_req:Needs", lags=[1])
    assert make_task("mymod_req:Needs", size=2, lags=(1, 2)).lags == [1, 2]
    with pytest.raises(TypeError, match=r"^task\.lags must be list\[int\]"):
        make_task("mymod_req:Needs", size=1, lags=[1.5])
    with pytest.raises(TypeError, match=r"^task\.weights must be list\[float\] \| None"):
        make_task("mymod_req:Needs", size=1, weights=0.5)


def test_failures_are_one_line(plugin):
    plugin("mymod_bad")
    plugin("mymod_raises", "import json\nraise RuntimeError('at import\\nsecond line')\n")
    plugin("mymod_syntax", "def broken(:\n")
    cases = [
        ("mymod_bad:", {}, ValueError, r"'mymod_bad:' is neither a built-in task nor "
                                       r"\"package\.module:ClassName\""),
        ("my mod:X", {}, ValueError, "'my mod:X' is neither a built-in task"),
        ("a:b:C", {}, ValueError, "'a:b:C' is neither a built-in task"),
        ("no_such_module_here:X", {}, ValueError,
         r"module 'no_such_module_here' \(of 'no_such_module_here:X'\) does not import: "
         r"ModuleNotFoundError: No module named 'no_such_module_here'$"),
        ("mymod_raises:X", {}, ValueError, r"module 'mymod_raises' \(of 'mymod_raises:X'\) "
                                          r"does not import: RuntimeError: at import$"),
        ("mymod_syntax:X", {}, ValueError, r"module 'mymod_syntax' \(of 'mymod_syntax:X'\) "
                                          r"does not import: SyntaxError: "),
        ("mymod_bad:Missing", {}, ValueError,
         r"module 'mymod_bad' \(.*mymod_bad\.py\) has no 'Missing'; the classes it defines "
         r"are \['Metrics', 'Needs', 'NotADataclass', 'OldSumTask', 'SpecOnly', 'SumTask', "
         r"'UnhashableMetrics', 'Unreadable'\]\.$"),
        ("mymod_bad:make", {}, TypeError, r"'mymod_bad:make' is a function, not a class\.$"),
        ("mymod_bad:NotADataclass", {}, TypeError, r"'mymod_bad:NotADataclass' is not a "
                                                   r"dataclass, so its options cannot be "
                                                   r"checked"),
        ("mymod_bad:Unreadable", {}, TypeError, r"the option types of the mymod_bad:Unreadable "
                                                r"task cannot be read.*NameError"),
        ("mymod_bad:SumTask", {"n": 3}, ValueError,
         r"building the mymod_bad:SumTask task failed: ValueError: task\.n must be >= 16, "
         r"got 3\.$"),
        ("mymod_bad:SpecOnly", {}, TypeError,
         r"the mymod_bad:SpecOnly task does not implement the Task protocol "
         r"\(jaxlstm\.tasks\.Task\): missing train_batch, eval_batches, baseline, metrics; "
         r"spec\.readout must be one of \['last', 'every'\], got 'first'; spec\.kind must be "
         r"one of \['regression', 'classification'\], got 'ranking'\.$"),
        ("mymod_bad:UnhashableMetrics", {}, TypeError,
         r"the mymod_bad:UnhashableMetrics task does not implement the Task protocol .*: "
         r"metrics must be hashable \(jit holds it as static data\), got an unhashable "
         r"Metrics\.$"),
    ]
    for name, options, error, match in cases:
        with pytest.raises(error, match=r"^task\.name: " + match) as caught:
            make_task(name, **options)
        assert "\n" not in str(caught.value), name
        err = caught.value  # no chained traceback of the user's error either
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_unknown_built_in_name_mentions_the_plugin_form():
    with pytest.raises(ValueError, match=r"^task\.name: unknown task 'addding'.*"
                                         r"\"package\.module:ClassName\""):
        make_task("addding")


def test_the_current_directory_is_importable(plugin, tmp_path, monkeypatch):
    """As under `python -m`, also for the console script, whose sys.path[0] is its bin
    folder."""
    plugin("mymod_cwd")
    monkeypatch.chdir(tmp_path)
    here = os.path.realpath(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and os.path.realpath(p) != here])
    make_task("mymod_cwd:SumTask", n=16)
    assert sys.path[0] == here
    length = len(sys.path)
    make_task("mymod_cwd:SumTask", n=16)
    assert len(sys.path) == length  # added once


# --- Held-out splits ------------------------------------------------------------------------


def test_split_helpers_call_old_and_new_style_tasks(plugin):
    plugin("mymod_split")
    for name in ("SumTask", "OldSumTask"):
        task = make_task(f"mymod_split:{name}", n=32)
        expected = task.eval_batches(3)
        got = held_out(task, 3)
        assert len(got) == len(expected) == 3
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a["inputs"], b["inputs"])
        assert baseline_of(task, "valid") == task.baseline()
        with pytest.raises(SplitUnavailable, match=r"^the sum task has no 'test' split"):
            held_out(task, 3, "test")
        with pytest.raises(SplitUnavailable, match=r"^the sum task has no 'test' split"):
            baseline_of(task, "test")
        with pytest.raises(ValueError, match=r"^split must be one of \['valid', 'test'\], "
                                             r"got 'train'"):
            held_out(task, 3, "train")


@pytest.mark.parametrize("name", sorted(set(TASKS) - set(FILE_TASKS)))
def test_built_in_tasks_have_a_valid_split_only(name):
    task = build(name)
    default = task.eval_batches(8)
    for valid in (task.eval_batches(8, "valid"), task.eval_batches(8, split="valid"),
                  held_out(task, 8, "valid")):
        assert len(valid) == len(default)
        for a, b in zip(valid, default):
            assert set(a) == set(b)
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
    assert task.baseline("valid") == task.baseline() == baseline_of(task)
    message = rf"^the {task.spec.name} task has no 'test' split \(its held-out splits: " \
              r"\['valid'\]\)\.$"
    with pytest.raises(SplitUnavailable, match=message):
        task.eval_batches(8, split="test")
    with pytest.raises(SplitUnavailable, match=message):
        task.baseline(split="test")
    with pytest.raises(ValueError, match=r"^split must be one of \['valid', 'test'\], got "
                                         r"'validation'\.$"):
        task.eval_batches(8, split="validation")
    with pytest.raises(ValueError, match=r"^split must be one of"):
        task.baseline("Test")
    assert SPLITS == ("valid", "test")
