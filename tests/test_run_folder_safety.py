"""Run folders that cannot collide, be misplaced or hide: folders claimed atomically, stray
files and escaping names refused, the umask honoured, one value written two ways refused,
and a decaying schedule's steps kept on resume (a full disk in a sweep:
test_launch_full_disk.py).

No test trains: run folders are chosen and configs compared in this process.
"""

import dataclasses
import datetime
import json
import os
import threading
import types

import pytest

from jaxlstm.cli import main
from jaxlstm.launch import grid
from jaxlstm.launch import sweep as sweeps
from jaxlstm.train import run_folder
from jaxlstm.train.config import load_config, to_yaml
from jaxlstm.train.files import write_atomically
from jaxlstm.train.run_folder import (
    RunFolderError,
    choose_run_dir,
    discard_if_empty,
    resume_changes,
    saved_config,
    write_summary,
)
from tests.test_launch import SMALL, one_line
from tests.test_train import QUICKSTART


def config(tmp_path, *overrides):
    return load_config(QUICKSTART, [*SMALL, f"runs_root={tmp_path / 'runs'}", *overrides])


def files_under(path):
    return sorted(os.path.relpath(os.path.join(folder, name), path)
                  for folder, dirs, names in os.walk(path) for name in dirs + names)


# --- folders claimed atomically -----------------------------------------------------------------

class FrozenClock(datetime.datetime):
    """Every caller asks in the same second."""

    @classmethod
    def now(cls, tz=None):
        return cls(2026, 1, 2, 3, 4, 5)


def at_once(count, claim):
    """`claim()` called by `count` threads released together: what each got."""
    start, got = threading.Barrier(count), []

    def one():
        start.wait()
        got.append(claim())

    workers = [threading.Thread(target=one) for _ in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return got


def test_runs_of_one_name_started_in_one_second_get_distinct_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(run_folder, "datetime", types.SimpleNamespace(datetime=FrozenClock))
    cfg = config(tmp_path)
    chosen = at_once(16, lambda: choose_run_dir(cfg))
    assert len(set(chosen)) == 16  # each created by its caller: no two share one
    assert all(os.path.isdir(path) and not os.listdir(path) for path in chosen)
    assert sorted(os.path.basename(p) for p in chosen)[:2] == ["20260102-030405",
                                                               "20260102-030405-1"]


def test_sweeps_launched_in_one_second_get_distinct_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(run_folder, "datetime", types.SimpleNamespace(datetime=FrozenClock))
    overrides = ["optimizer.learning_rate=1e-3,3e-3"]
    points, base = grid.expand_grid(overrides), config(tmp_path)
    made = at_once(8, lambda: sweeps.new_sweep(str(tmp_path / "runs"), "quickstart",
                                               QUICKSTART, overrides, points, base))
    assert len({sweep.folder for sweep in made}) == 8
    assert all(sweeps.load(sweep.folder).folder == sweep.folder for sweep in made)


def test_a_dry_run_names_a_folder_without_creating_it(tmp_path):
    path = choose_run_dir(config(tmp_path), claim=False)
    assert path.startswith(str(tmp_path / "runs" / "quickstart"))
    assert not (tmp_path / "runs").exists()


def test_discarding_a_claimed_folder_removes_empty_folders_only(tmp_path):
    kept, empty = tmp_path / "kept", tmp_path / "empty"
    (kept / "checkpoints").mkdir(parents=True)
    (kept / "config.yaml").write_text("x\n")
    (empty / "checkpoints").mkdir(parents=True)
    discard_if_empty(str(kept))
    discard_if_empty(str(empty))
    assert files_under(kept) == ["checkpoints", "config.yaml"] and not empty.exists()


# --- an explicit run_dir must be empty or hold a run ------------------------------------------

def test_a_run_dir_holding_other_files_is_refused_for_a_new_run(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me\n")
    with pytest.raises(RunFolderError, match=r"run_dir: .* is not empty and holds no run "
                                             r"\(notes.txt\)") as caught:
        choose_run_dir(config(tmp_path, f"run_dir={folder}"))
    assert "\n" not in str(caught.value) and files_under(folder) == ["notes.txt"]


def test_the_launcher_refuses_a_run_dir_holding_other_files_in_one_line(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me\n")
    code = main(["launch", QUICKSTART, *SMALL, f"run_dir={folder}", "--executor", "local"])
    assert code == 2 and "is not empty and holds no run (notes.txt)" in one_line(capsys)
    assert files_under(folder) == ["notes.txt"]


def test_a_run_dir_that_is_new_empty_or_holds_the_launchers_files_is_used(tmp_path):
    empty, launched, failed = tmp_path / "empty", tmp_path / "launched", tmp_path / "failed"
    empty.mkdir()
    (launched / "submitit").mkdir(parents=True)
    (launched / sweeps.ERROR_FILE).write_text("an earlier attempt\n")
    (failed / "checkpoints").mkdir(parents=True)  # a start the full disk stopped early
    for folder in (tmp_path / "new", empty, launched, failed):
        assert choose_run_dir(config(tmp_path, f"run_dir={folder}")) == str(folder)


# --- names stay inside runs_root, sweep points inside their sweep -----------------------------

@pytest.mark.parametrize("name", ["../..", "..", ".", "a/b", "/tmp/elsewhere"])
def test_a_name_that_leaves_runs_root_is_refused_before_anything_is_made(tmp_path, name):
    with pytest.raises(RunFolderError, match=f"name: '{name}' must be one folder name"):
        choose_run_dir(config(tmp_path, f"name={name}"))
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("swept", [[], ["optimizer.learning_rate=1e-3,3e-3"]])
def test_the_launcher_refuses_an_escaping_name_in_one_line(tmp_path, capsys, swept):
    root = tmp_path / "a" / "b"
    code = main(["launch", QUICKSTART, *SMALL, f"runs_root={root}", "name=../../x", *swept,
                 "--executor", "local"])
    assert code == 2 and "name: '../../x' must be one folder name" in one_line(capsys)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("name, message", [
    ("../../escaped", "name '../../escaped' is not one folder name inside the sweep folder"),
    ("/tmp/escaped", "name '/tmp/escaped' is not one folder name inside the sweep folder"),
    ("optimizer.learning_rate=1e-3",
     "name 'optimizer.learning_rate=1e-3' is given to two points"),
])
def test_a_hand_edited_point_name_cannot_leave_the_sweep_folder(tmp_path, capsys, name,
                                                                 message):
    folder = tmp_path / "runs" / "sweep"
    folder.mkdir(parents=True)
    overrides = ["optimizer.learning_rate=1e-3,3e-3"]
    sweeps.create(str(folder), "quickstart", QUICKSTART, overrides, grid.expand_grid(overrides),
                  config(tmp_path))
    record = json.loads((folder / sweeps.SWEEP_FILE).read_text())
    record["points"][1]["name"] = name
    (folder / sweeps.SWEEP_FILE).write_text(json.dumps(record))
    before = files_under(tmp_path)
    assert main(["launch", "--resume", str(folder), "--executor", "local"]) == 2
    assert message in one_line(capsys)
    assert files_under(tmp_path) == before


# --- files honour the umask --------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_have_the_mode_the_umask_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_atomically(str(tmp_path / "config.yaml"), "a: 1\n")
        write_summary(str(tmp_path), {"status": "running"})
        with open(tmp_path / "metrics.jsonl", "w") as f:  # what open() gives
            f.write("{}\n")
    finally:
        os.umask(previous)
    modes = {name: os.stat(tmp_path / name).st_mode & 0o777
             for name in ("config.yaml", "summary.json", "metrics.jsonl")}
    assert set(modes.values()) == {0o666 & ~umask}, modes  # 0o644, 0o600
    assert sorted(os.listdir(tmp_path)) == ["config.yaml", "metrics.jsonl", "summary.json"]


# --- one value written two ways -----------------------------------------------------------------

@pytest.mark.parametrize("override, spellings", [
    ("optimizer.learning_rate=1e-3,0.001", "'1e-3' and '0.001'"),
    ("training.seed=1,01", "'1' and '01'"),
    ("schedule.warmup_steps=2,1,01", "'1' and '01'"),
])
def test_a_value_written_two_ways_is_refused_in_one_line(tmp_path, capsys, override,
                                                         spellings):
    code = main(["launch", QUICKSTART, *SMALL, f"runs_root={tmp_path / 'runs'}", override,
                 "--executor", "local", "--dry-run"])
    line = one_line(capsys)
    assert code == 2 and f"{override}: {spellings} are the same value" in line
    assert not (tmp_path / "runs").exists()


# --- steps on resume under a decaying schedule --------------------------------------------------

def saved_run(tmp_path, *overrides):
    cfg = config(tmp_path, *overrides)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_atomically(str(run_dir / "config.yaml"), to_yaml(saved_config(cfg)))
    return str(run_dir), cfg


@pytest.mark.parametrize("schedule, new_steps", [("cosine", 600), ("warmup_cosine", 200)])
def test_changing_steps_on_resume_is_refused_under_a_decaying_schedule(tmp_path, schedule,
                                                                        new_steps):
    run_dir, cfg = saved_run(tmp_path, f"schedule.name={schedule}", "training.steps=300")
    longer = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training,
                                                                   steps=new_steps))
    with pytest.raises(RunFolderError) as caught:
        resume_changes(run_dir, longer)
    assert str(caught.value) == (
        f"resume: training.steps cannot change from 300 to {new_steps} with schedule.name "
        f"'{schedule}': its decay is spread over training.steps, so the learning rate would "
        "jump where the run resumes and config.yaml would no longer describe the run; start "
        f"a new run with training.steps={new_steps}, or use schedule.name=constant to extend "
        "runs.")


def test_changing_steps_on_resume_is_accepted_with_a_constant_schedule(tmp_path):
    run_dir, cfg = saved_run(tmp_path, "schedule.name=constant", "training.steps=300")
    longer = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, steps=600))
    assert resume_changes(run_dir, longer) == {"training.steps": [300, 600]}
