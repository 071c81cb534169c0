"""The training layer end to end: configs, the loop, checkpoints, resume, the CLI."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxlstm.train.checkpoint import Checkpoints
from jaxlstm.train.config import ConfigError, load_config
from jaxlstm.train.run import run_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
TINY = ["task.options.seq_len=8", "task.options.eval_size=64", "model.hidden_size=8",
        "training.batch_size=8",
        "training.eval_batch_size=64", "logging.progress=false", "logging.tensorboard=false",
        "logging.plots=false"]


def tiny_config(tmp_path, *overrides):
    return load_config(QUICKSTART, [*TINY, f"runs_root={tmp_path}", "training.steps=12",
                                    "training.eval_every=4", "logging.log_every=2",
                                    "checkpointing.every=4", *overrides])


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def write(tmp_path, text, name="bad"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case", ["unknown_key", "wrong_type", "missing_value", "no_file",
                                  "bad_override_key", "bad_range"])
def test_config_errors_are_one_line_with_the_key_path(tmp_path, case, capsys):
    good = "task:\n  name: adding\n"
    path, overrides, expected = {
        "unknown_key": (write(tmp_path, good + "model:\n  hiden_size: 3\n", "key"), [],
                        "model.hiden_size"),
        "wrong_type": (write(tmp_path, good + "training:\n  steps: many\n", "type"), [],
                       "training.steps"),
        "missing_value": (write(tmp_path, "model:\n  hidden_size: 3\n", "missing"), [],
                          "task.name"),
        "no_file": (str(tmp_path / "nope.yaml"), [], "no such config file"),
        "bad_override_key": (write(tmp_path, good), ["optimizer.lr=0.1"], "optimizer.lr"),
        "bad_range": (write(tmp_path, good), ["model.dropout=1.5"], "model.dropout"),
    }[case]
    if case == "unknown_key":  # one case as a real process: exit status, nothing else printed
        result = cli(path, *overrides, f"runs_root={tmp_path}")
        code, err = result.returncode, result.stderr
    else:
        from experiments.train import main

        code = main([path, *overrides, f"runs_root={tmp_path}"])
        err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert expected in lines[0] and path in lines[0]


def test_bad_optimizer_and_task_option_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="optimizer.name"):
        run_experiment(tiny_config(tmp_path, "optimizer.name=adamm"))
    with pytest.raises(ConfigError, match="colour"):
        run_experiment(tiny_config(tmp_path, "task.options.colour=3"))


def test_cli_end_to_end_writes_the_run_folder_and_reports_progress(tmp_path, capsys):
    """In process (a real process is tested in test_cli and test_run_faults); stderr is not a
    terminal here, so progress must come as plain lines."""
    from experiments.train import main

    code = main([QUICKSTART, *TINY[:-1], "training.steps=20", "training.eval_every=10",
                 "logging.log_every=5", "checkpointing.every=10", "logging.progress=true",
                 f"runs_root={tmp_path}"])
    out, err = capsys.readouterr()
    assert code == 0, err
    progress = [line for line in err.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in progress] == ["5/20", "10/20", "15/20", "20/20"]
    assert re.fullmatch(r"step 20/20  loss \d+\.\d+  eval mse \S+  \d+\.\d steps/s",
                        progress[-1]), progress[-1]
    (run,) = os.listdir(tmp_path / "quickstart")
    run_dir = tmp_path / "quickstart" / run
    assert {"config.yaml", "metrics.jsonl", "checkpoints", "summary.json"} <= set(
        os.listdir(run_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 20
    assert set(summary["final"]) >= {"loss", "mse"} and "mse" in summary["baseline"]
    assert summary["versions"]["jax"] == jax.__version__
    if summary.get("plots"):
        assert all(os.path.getsize(p) > 5_000 for p in summary["plots"])
    assert "mse" in out


def read(run_dir, name="metrics.jsonl"):
    with open(os.path.join(run_dir, name)) as f:
        return f.read()


def final_params(run_dir, config):
    from jaxlstm.tasks import make_task
    from jaxlstm.train.model import Model
    from jaxlstm.train.optim import make_optimizer, make_schedule
    from jaxlstm.train.step import TrainState

    task = make_task(config.task.name, **config.task.options)
    schedule = make_schedule(config.schedule, config.optimizer.learning_rate, 1)
    state = TrainState.create(model=Model(config.model, task.spec),
                              tx=make_optimizer(config.optimizer, schedule), schedule=schedule,
                              task_metrics=task.metrics, seed=123)
    return Checkpoints(os.path.join(run_dir, "checkpoints"), 3).restore(state)


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    first = run_experiment(tiny_config(tmp_path / "a"))
    second = run_experiment(tiny_config(tmp_path / "b"))
    assert read(first.run_dir) == read(second.run_dir)
    other_seed = run_experiment(tiny_config(tmp_path / "c", "training.seed=1"))
    assert read(first.run_dir) != read(other_seed.run_dir)


@pytest.mark.parametrize("regularised", [False, True])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, regularised):
    extra = (["model.dropout=0.2", "model.zoneout_c=0.3", "model.num_layers=2",
              "model.recurrent_dropout=0.1"] if regularised else [])
    whole = run_experiment(tiny_config(tmp_path / "whole", *extra))
    config = tiny_config(tmp_path / "split", *extra)
    interrupted = run_experiment(config, interrupt_at=6)  # between checkpoints 4 and 8
    assert interrupted.status == "interrupted" and interrupted.step == 6
    resumed = run_experiment(tiny_config(tmp_path / "split", *extra, "resume=true"))
    assert resumed.run_dir == interrupted.run_dir and resumed.status == "completed"
    assert read(resumed.run_dir) == read(whole.run_dir)
    a = final_params(whole.run_dir, config).params
    b = final_params(resumed.run_dir, config).params
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, capsys):
    config = tiny_config(tmp_path, "optimizer.name=sgd", "optimizer.learning_rate=1e12",
                         "optimizer.clip_norm=null", "checkpointing.every=1",
                         "schedule.name=constant")
    result = run_experiment(config)
    assert result.status == "non_finite"
    message = capsys.readouterr().err
    assert f"at step {result.step}" in message
    last = Checkpoints(os.path.join(result.run_dir, "checkpoints"), 3).latest_step()
    assert last == result.step - 1
    restored = final_params(result.run_dir, config)
    assert int(restored.step) == last
    assert all(np.all(np.isfinite(np.asarray(p))) for p in jax.tree.leaves(restored.params))


def test_rerunning_the_saved_config_reproduces_the_run(tmp_path):
    first = run_experiment(tiny_config(tmp_path / "a"))
    again = load_config(os.path.join(first.run_dir, "config.yaml"),
                        [f"runs_root={tmp_path / 'b'}"])
    second = run_experiment(again)
    assert read(first.run_dir) == read(second.run_dir)


def test_linen_model_and_named_optimizer_with_kwargs(tmp_path):
    result = run_experiment(tiny_config(
        tmp_path, "model.api=linen", "model.cell=layer_norm", "optimizer.name=adamw",
        "optimizer.weight_decay=0.01", "optimizer.kwargs.b2=0.99", "schedule.name=cosine"))
    assert result.status == "completed"
    assert np.isfinite(result.summary["final"]["loss"])


def test_sampling_command_generates_text_from_a_checkpoint(tmp_path, capsys):
    from experiments.sample import main

    config = load_config(os.path.join(ROOT, "configs", "text.yaml"), [
        "task.options.seq_len=12", "model.hidden_size=8", "training.steps=3",
        "training.batch_size=4", "training.eval_every=3", "logging.progress=false",
        "logging.tensorboard=false", "logging.plots=false", "checkpointing.every=3",
        f"runs_root={tmp_path}"])
    result = run_experiment(config)
    assert os.path.getsize(os.path.join(result.run_dir, "samples.txt")) > 400
    assert main([result.run_dir, "--prompt", "def ", "--length", "50"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("def ") and len(text) >= 54  # the prompt, 50 characters, a newline


def test_a_run_that_cannot_plot_says_so_on_one_line(tmp_path, monkeypatch, capsys):
    from jaxlstm.train import plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert plots.draw_all(str(tmp_path), None, None, []) == []
    assert capsys.readouterr().err == (
        "plots skipped: matplotlib is not installed (pip install matplotlib).\n")
