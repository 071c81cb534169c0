"""The validation split's best checkpoint, the test split, early stopping and task objects.

Most runs train `ScriptedTask`, a task object whose validation metric improves at steps 2, 4
and 6 and gets worse after, whatever the rounding: its training target is 1 for the first 6
steps and -20 after, so plain SGD moves the output towards the validation target (1) and then
away from it. With evaluations every 2 steps, checkpoints every 4 and patience 2, the best is
step 6 (between checkpoints 4 and 8) and the run stops early at step 10. Its test split holds
the validation data, streamed (an iterator, not a list), so the test metrics of the best state
must equal the best validation evaluation exactly. Every run shares one config, so the train
step compiles once.
"""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from jaxlstm.tasks.base import (
    TaskSpec,
    check_split,
    regression_metrics,
    step_rng,
    take_rows,
)
from jaxlstm.train.checkpoint import Checkpoints
from jaxlstm.train.config import TaskConfig
from jaxlstm.train.model import Model
from jaxlstm.train.optim import make_optimizer, make_schedule
from jaxlstm.train.run import BEST_DIR, _build, run_experiment
from jaxlstm.train.step import TrainState
from tests.test_train import QUICKSTART, TINY, read, tiny_config


class ScriptedTask:
    """Sequences of 8 uniform values; the target is 1 on the held-out splits, and in training
    1 before step `switch_at` and -20 from then on (see the module docstring)."""

    spec = TaskSpec(name="scripted", input_size=1, output_size=1, readout="last",
                    kind="regression", metric="mse")
    metrics = staticmethod(regression_metrics)

    def __init__(self, switch_at: int = 6):
        self.switch_at = switch_at
        rng = np.random.default_rng(0)
        self._held_out = {"inputs": rng.uniform(0, 1, (16, 8, 1)).astype(np.float32),
                          "targets": np.ones((16, 1, 1), np.float32)}

    def train_batch(self, seed, step, batch_size, rows=None):
        inputs = step_rng(seed, step).uniform(0, 1, (batch_size, 8, 1)).astype(np.float32)
        target = 1.0 if step < self.switch_at else -20.0
        return take_rows({"inputs": inputs,
                          "targets": np.full((batch_size, 1, 1), target, np.float32)}, rows)

    def eval_batches(self, batch_size, split="valid"):
        check_split(split, self.spec.name, available=("valid", "test"))
        batches = [{k: v[i:i + batch_size] for k, v in self._held_out.items()}
                   for i in range(0, 16, batch_size)]
        return batches if split == "valid" else iter(batches)  # the test split streams

    def baseline(self, split="valid"):
        """Predicting 0."""
        check_split(split, self.spec.name, available=("valid", "test"))
        return {"loss": 1.0, "mse": 1.0}


TASK = ScriptedTask()  # one object for every run: the compiled steps are reused


def scripted_config(tmp_path, *overrides):
    """The tiny config with `task.name` missing: a task object fills it."""
    config = tiny_config(tmp_path, "training.eval_every=2", "training.eval_batch_size=8",
                         "optimizer.name=sgd", "optimizer.learning_rate=0.02",
                         "schedule.name=constant", "training.patience=2", *overrides)
    return dataclasses.replace(config, task=TaskConfig())


def evals(run_dir):
    return {r["step"]: {k: v for k, v in r.items() if k not in ("step", "split")}
            for r in map(json.loads, read(run_dir).splitlines()) if r["split"] == "eval"}


def restored(run_dir, folder, config):
    """The newest checkpoint in `run_dir/folder`, restored."""
    schedule = make_schedule(config.schedule, config.optimizer.learning_rate, 1)
    state = TrainState.create(model=Model(config.model, TASK.spec),
                              tx=make_optimizer(config.optimizer, schedule),
                              schedule=schedule, task_metrics=TASK.metrics, seed=123)
    return Checkpoints(os.path.join(run_dir, folder), None, read_only=True).restore(state)


def assert_same_run(run_dir, whole, config):
    """metrics.jsonl, the final and the best params, and the summary's results all equal."""
    assert read(run_dir) == read(whole.run_dir)
    for folder in ("checkpoints", BEST_DIR):
        a, b = (restored(d, folder, config) for d in (whole.run_dir, run_dir))
        assert int(a.step) == int(b.step), folder
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    for key in ("status", "step", "final", "best", "test", "test_on", "test_step"):
        assert summary[key] == whole.summary[key], key


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run: best at step 6, stopped early at step 10."""
    return run_experiment(scripted_config(tmp_path_factory.mktemp("whole")), task=TASK)


def test_the_summary_has_the_best_checkpoint_and_the_test_split_on_it(whole):
    summary, history = whole.summary, evals(whole.run_dir)
    assert list(history) == [2, 4, 6, 8, 10]
    assert history[2]["mse"] > history[4]["mse"] > history[6]["mse"] < history[8]["mse"]
    assert summary["best"] == {"step": 6, "metrics": history[6]}
    assert summary["final"] == history[10] and summary["baseline"] == {"loss": 1.0, "mse": 1.0}
    assert summary["test"] == history[6]  # the test split is the validation data
    assert (summary["test_on"], summary["test_step"]) == ("best", 6)
    assert summary["baseline_test"] == {"loss": 1.0, "mse": 1.0}
    assert "test_unavailable" not in summary
    assert os.listdir(os.path.join(whole.run_dir, BEST_DIR)) == ["6"]
    with open(os.path.join(whole.run_dir, "summary.json")) as f:
        assert json.load(f)["best"] == summary["best"]
    with open(os.path.join(whole.run_dir, "config.yaml")) as f:  # the object's name filled in
        assert f"name: {ScriptedTask.__module__}:ScriptedTask" in f.read()


def test_early_stopping_ends_the_run_with_its_checkpoint(whole):
    assert (whole.status, whole.step, whole.summary["status"]) == ("early_stopped", 10,
                                                                     "early_stopped")
    assert "10" in os.listdir(os.path.join(whole.run_dir, "checkpoints"))


def test_without_keep_best_the_test_split_runs_on_the_final_state(tmp_path):
    result = run_experiment(scripted_config(tmp_path, "checkpointing.keep_best=false",
                                            "training.patience=null"), task=TASK)
    summary = result.summary
    assert result.status == "completed" and result.step == 12
    assert summary["best"]["step"] == 6
    assert (summary["test_on"], summary["test_step"]) == ("final", 12)
    assert summary["test"] == summary["final"] == evals(result.run_dir)[12]
    assert not os.path.exists(os.path.join(result.run_dir, BEST_DIR))


def test_a_task_object_is_never_confused_with_another():
    config = scripted_config("unused")
    assert _build(config, TASK) is _build(config, TASK)
    other = ScriptedTask()
    assert _build(config, other)[0] is other


def test_an_interrupt_after_the_best_resumes_with_the_same_early_stop(tmp_path, whole):
    """Interrupted at step 9: the best (6) and one evaluation without improvement (8) are
    behind; the resumed run must count that one and stop at 10, not 12."""
    interrupted = run_experiment(scripted_config(tmp_path), task=TASK, interrupt_at=9)
    assert interrupted.status == "interrupted" and interrupted.step == 9
    resumed = run_experiment(scripted_config(tmp_path, "resume=true"), task=TASK)
    assert resumed.run_dir == interrupted.run_dir
    assert resumed.summary["resumes"][0]["step"] == 9
    assert_same_run(resumed.run_dir, whole, scripted_config(tmp_path))


class Killed(BaseException):
    """What a kill -9 leaves: nothing after this point runs (no handler catches it)."""


@pytest.mark.parametrize("when", ["between_best_and_checkpoint", "mid_best_save"])
def test_a_kill_around_a_best_save_resumes_exactly(tmp_path, whole, monkeypatch, capsys, when):
    """Killed before checkpoint 8 with the best of step 6 already saved (or in the middle of
    saving it): the resume restores step 4, moves the best checkpoint of step 6 (or its
    unfinished write) aside and recomputes it."""
    save = Checkpoints.save

    def save_until_killed(self, state, **kwargs):
        step, best = int(state.step), self.directory.endswith(BEST_DIR)
        if when == "between_best_and_checkpoint" and not best and step == 8:
            raise Killed
        if when == "mid_best_save" and best and step == 6:
            os.makedirs(os.path.join(self.directory, "6.orbax-checkpoint-tmp-1700000000"))
            raise Killed
        return save(self, state, **kwargs)

    monkeypatch.setattr(Checkpoints, "save", save_until_killed)
    with pytest.raises(Killed):
        run_experiment(scripted_config(tmp_path), task=TASK)
    monkeypatch.undo()
    (run_dir,) = (tmp_path / "quickstart").iterdir()
    assert os.listdir(run_dir / "checkpoints") == ["4"]
    moved = ("6" if when == "between_best_and_checkpoint"
             else "6.orbax-checkpoint-tmp-1700000000")
    assert sorted(os.listdir(run_dir / BEST_DIR)) == ["4", moved]  # 4: checkpoint 4's best
    resumed = run_experiment(scripted_config(tmp_path, "resume=true"), task=TASK)
    assert resumed.summary["resumes"][0]["step"] == 4
    assert "the resumed run saves its best again" in capsys.readouterr().err
    assert os.listdir(run_dir / "unusable_checkpoints" / BEST_DIR) == [moved]
    assert list(resumed.summary["resumes"][0]["skipped_best_checkpoints"]) == [moved]
    assert_same_run(str(run_dir), whole, scripted_config(tmp_path))


def test_the_command_exits_0_on_early_stopping_and_a_task_without_test_split_says_so(
        tmp_path, capsys):
    """The adding task at a learning rate too small to change any float32 weight: its
    validation metric is the same at every evaluation, so patience 1 stops at step 4."""
    from jaxlstm.cli.train import main

    code = main([QUICKSTART, *TINY, f"runs_root={tmp_path}", "training.steps=12",
                 "training.eval_every=2", "checkpointing.every=4", "training.patience=1",
                 "optimizer.name=sgd", "optimizer.learning_rate=1e-30",
                 "schedule.name=constant"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "early stopping at step 4" in err and "(stopped early)" in out
    (run,) = os.listdir(tmp_path / "quickstart")
    with open(tmp_path / "quickstart" / run / "summary.json") as f:
        summary = json.load(f)
    assert (summary["status"], summary["step"], summary["best"]["step"]) == (
        "early_stopped", 4, 2)
    assert summary["test"] is None
    assert summary["test_unavailable"].startswith("the adding task has no 'test' split")


def test_a_sweep_counts_an_early_stopped_point_as_finished(tmp_path):
    from jaxlstm.launch.sweep import point_state
    from jaxlstm.launch.table import summary_line
    from jaxlstm.train.run_folder import write_summary

    write_summary(str(tmp_path), {"status": "early_stopped", "metric": "mse", "step": 10,
                                  "final": {"mse": 0.5}, "wall_time_s": 3})
    state = point_state(str(tmp_path))
    assert state.completed and state.status == "early_stopped"
    assert summary_line(state) == "early_stopped, mse 0.5 (10 steps, 3 s)"
