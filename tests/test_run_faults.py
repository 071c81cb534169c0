"""Fault injection on the runner: every way a run can be cut short or misused leaves its folder
consistent, and the next resume ends exactly where an uninterrupted run ends.

Each test reproduces one defect found by breaking runs on purpose (kill -9 at controlled
points, torn lines, flipped bytes, full disks, reused folders, changed configs, signals).
All runs use one tiny config, so the train step compiles once per process.
"""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxlstm.train import logs
from jaxlstm.train.checkpoint import Checkpoints, NonFiniteState
from jaxlstm.train.config import load_config
from jaxlstm.train.run import run_experiment
from jaxlstm.train.run_folder import RunFolderError, newest_run, read_summary
from tests.test_train import QUICKSTART, ROOT, TINY, final_params, read, tiny_config


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run every interrupted one must end up equal to."""
    return run_experiment(tiny_config(tmp_path_factory.mktemp("whole")))


def snapshot(run_dir):
    """Every file under `run_dir` with its bytes' hash: equal snapshots, unchanged folder."""
    found = {}
    for folder, _, files in os.walk(run_dir):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, run_dir)] = hashlib.sha256(f.read()).hexdigest()
    return found


def assert_same_run(run_dir, whole, config):
    assert read(run_dir) == read(whole.run_dir)
    a = final_params(whole.run_dir, config).params
    b = final_params(run_dir, config).params
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def interrupted_run(tmp_path, at=6):
    config = tiny_config(tmp_path)
    result = run_experiment(config, interrupt_at=at)
    assert result.status == "interrupted" and result.step == at
    return result


def resume(tmp_path, *overrides):
    return run_experiment(tiny_config(tmp_path, "resume=true", *overrides))


# --- kill -9 at controlled points, in a real process ------------------------------------------

KILLED_CHILD = r"""
import os, signal, sys
from jaxlstm.train import logs, run
from jaxlstm.train.config import load_config
from orbax.checkpoint._src.path import atomicity

point, at = sys.argv[1], int(sys.argv[2])
config = load_config(sys.argv[3], sys.argv[4:])

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "after_metrics":  # the step's metrics are on disk, no checkpoint covers them yet
    write = logs.MetricsLog.write
    def write_then_die(self, step, split, values):
        write(self, step, split, values)
        if step == at and split == "train":
            die()
    logs.MetricsLog.write = write_then_die
elif point == "mid_checkpoint":  # checkpoint `at`'s data is written, not yet renamed into place
    finalize = atomicity.AtomicRenameTemporaryPath.finalize
    async def die_on_finalize(self):
        final = self.get_final()  # a regular checkpoint's, not best_checkpoint/'s
        if final.name == str(at) and final.parent.name == "checkpoints":
            die()
        return await finalize(self)
    atomicity.AtomicRenameTemporaryPath.finalize = die_on_finalize
run.run_experiment(config)
"""


def killed_run(tmp_path, point, at):
    overrides = [*TINY, f"runs_root={tmp_path}", "training.steps=12", "training.eval_every=4",
                 "logging.log_every=2", "checkpointing.every=4"]
    result = subprocess.run([sys.executable, "-c", KILLED_CHILD, point, str(at), QUICKSTART,
                             *overrides], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr
    (run_dir,) = (tmp_path / "quickstart").iterdir()
    return run_dir


def test_kill_before_the_first_checkpoint_does_not_duplicate_metrics(tmp_path, whole):
    run_dir = killed_run(tmp_path, "after_metrics", 2)
    assert '"step": 2' in read(run_dir) and not os.listdir(run_dir / "checkpoints")
    resumed = resume(tmp_path)
    assert resumed.status == "completed" and resumed.run_dir == str(run_dir)
    assert_same_run(run_dir, whole, tiny_config(tmp_path))


def test_kill_during_a_checkpoint_write_resumes_from_the_previous_one(tmp_path, whole, capsys):
    run_dir = killed_run(tmp_path, "mid_checkpoint", 8)
    leftovers = [n for n in os.listdir(run_dir / "checkpoints") if not n.isdigit()]
    assert sorted(n for n in os.listdir(run_dir / "checkpoints") if n.isdigit()) == ["4"]
    assert leftovers, "the kill should have left orbax's temporary folder"
    resumed = resume(tmp_path)
    assert resumed.status == "completed"
    assert resumed.summary["resumes"][0]["step"] == 4
    assert "interrupted write" in capsys.readouterr().err
    moved = set(os.listdir(run_dir / "unusable_checkpoints")) - {"best_checkpoint"}
    assert sorted(moved) == sorted(leftovers)  # (a best checkpoint saved at 8 is aside too)
    assert_same_run(run_dir, whole, tiny_config(tmp_path))


# --- signals --------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_the_resume_matches(tmp_path, whole, signum,
                                                            monkeypatch):
    """The real handlers, a real signal: raised from inside step 6's metrics write."""
    write = logs.MetricsLog.write

    def write_and_signal(self, step, split, values):
        write(self, step, split, values)
        if step == 6 and split == "train":
            signal.raise_signal(signum)

    monkeypatch.setattr(logs.MetricsLog, "write", write_and_signal)
    result = run_experiment(tiny_config(tmp_path))
    monkeypatch.undo()
    assert result.status == "interrupted" and result.step == 6
    assert os.path.isdir(os.path.join(result.run_dir, "checkpoints", "6"))
    assert resume(tmp_path).status == "completed"
    assert_same_run(result.run_dir, whole, tiny_config(tmp_path))


def test_sigterm_to_the_command_exits_130_after_saving(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.train", QUICKSTART, *TINY, "training.steps=100000",
         "checkpointing.every=100000", "logging.log_every=1", f"runs_root={tmp_path}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import time

        deadline = time.time() + 240
        metrics = []
        while time.time() < deadline and not metrics:  # wait until steps are being logged
            time.sleep(0.5)
            metrics = [m for m in (tmp_path / "quickstart").glob("*/metrics.jsonl")
                       if m.stat().st_size > 0]
        assert metrics, "the run never started logging"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted by SIGTERM: saved a checkpoint at step" in err
    step = int(err.split("at step ")[1].split()[0])
    assert (metrics[0].parent / "checkpoints" / str(step)).is_dir()


# --- torn lines, full disks, non-finite values ------------------------------------------------


def test_a_torn_last_metrics_line_does_not_block_resume(tmp_path, whole, capsys):
    run_dir = interrupted_run(tmp_path).run_dir
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write('{"grad_norm": 0.5, "loss": 0.')  # what a kill mid-write leaves
    assert resume(tmp_path).status == "completed"
    assert "dropped 1 unreadable line" in capsys.readouterr().err
    assert_same_run(run_dir, whole, tiny_config(tmp_path))


def test_a_full_disk_stops_the_run_and_it_resumes(tmp_path, whole, monkeypatch):
    append = logs.MetricsLog._append

    def append_until_full(self, path, record):
        if record["step"] == 10:
            with open(path, "a") as f:
                f.write('{"step": 10, "lo')  # the part that fitted
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        append(self, path, record)

    monkeypatch.setattr(logs.MetricsLog, "_append", append_until_full)
    failed = run_experiment(tiny_config(tmp_path))
    monkeypatch.undo()
    assert failed.status == "write_failed" and failed.step == 10
    summary = json.loads(open(os.path.join(failed.run_dir, "summary.json")).read())
    assert summary["status"] == "write_failed"
    assert resume(tmp_path).status == "completed"
    assert_same_run(failed.run_dir, whole, tiny_config(tmp_path))


def test_a_full_disk_before_the_first_step_is_write_failed_not_a_traceback(tmp_path, whole,
                                                                          monkeypatch, capsys):
    # The metrics file is opened after the folder says "running", before the loop.
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("jaxlstm.train.run.MetricsLog", full)
    result = run_experiment(tiny_config(tmp_path))
    assert (result.status, result.step) == ("write_failed", 0)
    assert read_summary(result.run_dir)["status"] == "write_failed"
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.undo()
    assert resume(tmp_path).status == "completed"
    assert_same_run(result.run_dir, whole, tiny_config(tmp_path))


def test_non_finite_values_are_written_as_valid_json(tmp_path):
    log = logs.MetricsLog(str(tmp_path), tensorboard=False)
    log.write(1, "train", {"loss": float("nan"), "grad_norm": float("inf"), "lr": 0.1})
    log.close()

    def reject(constant):
        raise ValueError(f"bare {constant} in the file")

    (line,) = open(tmp_path / "metrics.jsonl").read().splitlines()
    record = json.loads(line, parse_constant=reject)
    assert record == {"step": 1, "split": "train", "loss": None, "grad_norm": None, "lr": 0.1}


def test_a_non_finite_update_is_never_checkpointed(tmp_path, capsys):
    """A learning rate that overflows float32 turns finite gradients into inf params at step 1:
    the loss and gradient norm of that step are finite, the updated params are not."""
    config = tiny_config(tmp_path, "optimizer.name=sgd", "optimizer.learning_rate=1e39",
                         "optimizer.clip_norm=null", "checkpointing.every=1",
                         "schedule.name=constant")
    result = run_experiment(config)
    assert result.status == "non_finite" and result.step == 1
    assert "updated params at step 1" in capsys.readouterr().err
    assert Checkpoints(os.path.join(result.run_dir, "checkpoints"), 3).latest_step() is None


def test_checkpoints_refuse_a_non_finite_state(tmp_path):
    state = final_params(interrupted_run(tmp_path).run_dir, tiny_config(tmp_path))
    bad = state.replace(step=state.step + 1, params=jax.tree.map(lambda p: p * np.nan,
                                                                 state.params))
    checkpoints = Checkpoints(tmp_path / "other", 3)
    with pytest.raises(NonFiniteState, match="NaN or inf"):
        checkpoints.save(bad)
    assert checkpoints.latest_step() is None


# --- corrupted checkpoints --------------------------------------------------------------------


def flip_bytes(folder):
    """Flips bytes in the middle of the largest data file of a checkpoint."""
    files = [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names]
    path = max(files, key=os.path.getsize)
    data = bytearray(open(path, "rb").read())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))


def test_a_corrupted_newest_checkpoint_falls_back_to_the_previous(tmp_path, whole, capsys):
    run_dir = interrupted_run(tmp_path, at=8).run_dir  # checkpoints 4 and 8
    flip_bytes(os.path.join(run_dir, "checkpoints", "8"))
    resumed = resume(tmp_path)
    err = capsys.readouterr().err
    assert resumed.status == "completed" and "skipped checkpoint 8:" in err
    assert resumed.summary["resumes"][0]["step"] == 4
    moved = set(os.listdir(os.path.join(run_dir, "unusable_checkpoints"))) - {"best_checkpoint"}
    assert moved == {"8"}  # (and the best checkpoint of step 8, newer than step 4)
    assert_same_run(run_dir, whole, tiny_config(tmp_path))


def test_an_empty_step_folder_does_not_block_resume(tmp_path, whole):
    run_dir = interrupted_run(tmp_path).run_dir
    os.makedirs(os.path.join(run_dir, "checkpoints", "99"))
    resumed = resume(tmp_path)
    assert resumed.status == "completed"
    assert resumed.summary["resumes"][0]["skipped_checkpoints"] == {
        "99": "unfinished write (no orbax metadata)"}
    assert_same_run(run_dir, whole, tiny_config(tmp_path))


def test_no_restorable_checkpoint_is_one_error_and_changes_nothing(tmp_path):
    run_dir = interrupted_run(tmp_path, at=4).run_dir  # checkpoint 4 only
    flip_bytes(os.path.join(run_dir, "checkpoints", "4"))
    before = snapshot(run_dir)
    with pytest.raises(RunFolderError, match="no checkpoint .* restores"):
        resume(tmp_path)
    assert snapshot(run_dir) == before


# --- resumes that must be refused, and the safe ones -------------------------------------------


def test_a_resume_that_changes_the_model_is_refused_before_touching_the_folder(tmp_path):
    run_dir = interrupted_run(tmp_path).run_dir
    before = snapshot(run_dir)
    with pytest.raises(RunFolderError) as caught:
        resume(tmp_path, "model.hidden_size=16", "optimizer.name=sgd", "training.steps=20")
    message = str(caught.value)
    assert "model.hidden_size (8 -> 16)" in message and "optimizer.name" in message
    assert "training.steps" not in message and "\n" not in message
    assert snapshot(run_dir) == before


def test_a_safe_change_on_resume_is_recorded_and_the_config_kept(tmp_path):
    run_dir = interrupted_run(tmp_path).run_dir
    config_yaml = open(os.path.join(run_dir, "config.yaml"), "rb").read()
    resumed = resume(tmp_path, "training.eval_every=3", "logging.log_every=7")
    assert resumed.status == "completed" and resumed.step == 12
    assert open(os.path.join(run_dir, "config.yaml"), "rb").read() == config_yaml
    summary = json.loads(open(os.path.join(run_dir, "summary.json")).read())
    (record,) = summary["resumes"]
    assert record["step"] == 6
    assert record["changed"] == {"training.eval_every": [4, 3], "logging.log_every": [2, 7]}


def test_resuming_a_finished_run_says_so_and_changes_nothing(whole, capsys):
    before = snapshot(whole.run_dir)
    again = run_experiment(tiny_config(os.path.dirname(os.path.dirname(whole.run_dir)),
                                       "resume=true"))
    assert (again.status, again.step, again.run_dir) == ("completed", 12, whole.run_dir)
    assert again.summary["final"] == whole.summary["final"]
    assert snapshot(whole.run_dir) == before
    assert "the run is finished (completed at step 12); nothing to resume" in \
        capsys.readouterr().err


def test_a_folder_holding_a_run_is_not_reused_without_resume(tmp_path):
    run_dir = interrupted_run(tmp_path).run_dir
    before = snapshot(run_dir)
    with pytest.raises(RunFolderError, match="already holds a run; pass --resume"):
        run_experiment(tiny_config(tmp_path, f"run_dir={run_dir}"))
    assert snapshot(run_dir) == before


def test_resume_picks_the_newest_run_by_time_not_by_name(tmp_path):
    for name in ["20260101-000000-9", "20260101-000000-11", "20251231-235959"]:
        os.makedirs(tmp_path / name)
        (tmp_path / name / "config.yaml").write_text("task: {name: adding}\n")
    os.makedirs(tmp_path / "20270101-000000")  # no config.yaml: not a run
    assert newest_run(str(tmp_path)) == str(tmp_path / "20260101-000000-11")


def test_resume_with_no_earlier_run_says_so(tmp_path):
    with pytest.raises(RunFolderError, match="no earlier run of 'quickstart'"):
        resume(tmp_path)
    assert not os.path.exists(tmp_path / "quickstart")


def test_an_unwritable_runs_root_is_one_error_before_anything_is_written(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(RunFolderError, match="runs_root: .* is not a folder"):
        run_experiment(tiny_config(tmp_path, f"runs_root={blocker}/runs"))


# --- bad config values -----------------------------------------------------------------------

BAD_VALUES = {
    "model.hidden_size=[1": "not valid YAML",
    "model.cell=bogus": "model.cell: expected one of lstm",
    "model.proj_size=0": "model.proj_size",
    "model.unroll=0": "model.unroll",
    "model.remat_chunk=0": "model.remat_chunk",
    "training.seed=-1": "training.seed",
    "training.seed=4294967296": "training.seed",
    "optimizer.kwargs.b1=abc": "optimizer.kwargs: optax.adam fails",
    "optimizer.learning_rate=.nan": "optimizer.learning_rate",
    "optimizer.clip_norm=-1": "optimizer.clip_norm",
    "optimizer.weight_decay=-1": "optimizer.weight_decay",
    "schedule.warmup_steps=-5": "schedule.warmup_steps",
    "schedule.final_fraction=2": "schedule.final_fraction",
    "model.forget_bias=.inf": "model.forget_bias",
}


def test_bad_values_are_one_line_naming_the_file_and_key(tmp_path):
    from experiments.train import main

    for override, expected in BAD_VALUES.items():
        with pytest.raises(Exception) as caught:
            load_config(QUICKSTART, [override])
        message = str(caught.value)
        assert type(caught.value).__name__ == "ConfigError", override
        assert expected in message and QUICKSTART in message, (override, message)
        assert "\n" not in message, override
    assert main([QUICKSTART, "optimizer.clip_norm=-1", f"runs_root={tmp_path}"]) == 2
    assert not os.listdir(tmp_path)  # validated before any folder is created


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("task: {name: adding}\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(Exception, match="not UTF-8 text") as caught:
        load_config(path)
    assert type(caught.value).__name__ == "ConfigError"


def test_a_folder_with_only_its_config_resumes_from_step_0(tmp_path, whole):
    """A kill right after the folder was made leaves only config.yaml: resume starts it."""
    from jaxlstm.train.config import to_yaml
    from jaxlstm.train.run_folder import saved_config

    run_dir = tmp_path / "quickstart" / "20260101-000000"
    os.makedirs(run_dir)
    (run_dir / "config.yaml").write_text(to_yaml(saved_config(tiny_config(tmp_path))))
    resumed = resume(tmp_path)
    assert resumed.run_dir == str(run_dir) and resumed.summary["resumes"][0]["step"] == 0
    assert_same_run(run_dir, whole, tiny_config(tmp_path))
