"""A full disk in a sweep: the launcher records each failed point, goes on with the others
and ends with a true `sweep.md` (or none, and one line saying how to write it later).

One test fills a real file system: a tiny tmpfs mounted in a private mount namespace
(`unshare -rm`, where the machine permits it; skipped with the reason where not), with the
launch in a subprocess (seconds of CPU: one job starts). The others inject the failures
(ENOSPC, a run ending `write_failed`) with a fake executor, in this process.
"""

import errno
import json
import os
import shlex
import shutil
import subprocess
import sys
import types

import pytest

from jaxlstm.cli import main
from jaxlstm.launch import executors, jobs, table
from jaxlstm.launch import sweep as sweeps
from jaxlstm.launch.launcher import Request, launch
from jaxlstm.train.config import load_config
from jaxlstm.train.run_folder import write_summary
from tests.test_launch import SMALL, one_line
from tests.test_train import QUICKSTART

LR_SWEEP = ("optimizer.learning_rate=1e-3,2e-3,3e-3,4e-3",)
NO_SPACE = OSError(errno.ENOSPC, "No space left on device")


# --- a real full file system --------------------------------------------------------------------

def on_tmpfs(mount, size, command):
    """`command` (a shell line) run with a `size` tmpfs mounted at `mount`, in a private mount
    namespace: its CompletedProcess. Skips the test where this machine does not permit that
    (not root, no user namespaces: CI in a container)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here to mount a small tmpfs in a private mount namespace")
    script = f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mount))} || exit 99\n"
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script + command], check=False,
                          capture_output=True, text=True, timeout=300)
    if done.returncode == 99 or done.stderr.startswith("unshare:"):
        why = (done.stderr.strip().splitlines() or ["refused"])[0]
        pytest.skip(f"mounting a tmpfs in a private mount namespace is not permitted: {why}")
    return done


def test_a_sweep_on_a_full_disk_records_each_point_and_ends_in_one_line(tmp_path):
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    # 16 KiB: the sweep's record fits, the first job starts and finds no room for its run,
    # the second cannot even be submitted, and the table cannot be written (or is true).
    launch_line = shlex.join([sys.executable, "-m", "jaxlstm.cli", "launch", QUICKSTART, *SMALL,
                              "optimizer.learning_rate=1e-3,3e-3", f"runs_root={disk}/runs",
                              "--executor", "local"])
    done = on_tmpfs(disk, "16k", f"{launch_line}\ncode=$?\ncp -a {shlex.quote(str(disk))}/runs "
                                 f"{shlex.quote(str(kept))}\nexit $code")
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    for n in (1, 2):
        assert any(line.startswith(f"[{n}/2] ") and ": failed" in line for line in lines), lines
    (folder,) = (kept / "quickstart").iterdir()
    assert lines[-1].startswith("0 of 2 points completed; ")
    if (folder / table.TABLE_FILE).exists():  # true, or not there at all
        assert "0 of 2 points completed" in (folder / table.TABLE_FILE).read_text()
    else:
        assert (f"could not write sweep.md (No space left on device); once there is room, "
                f"jaxlstm launch --resume {disk}/runs/quickstart/{folder.name} runs the points "
                "not completed and writes it") in lines[-1]


# --- injected failures, with a fake executor ----------------------------------------------------

class FakeJob:
    """What submitit's local executor returns, for a job that has already ended."""

    def __init__(self, job_id, folder):
        self.job_id = job_id
        self.paths = types.SimpleNamespace(stdout=os.path.join(folder, f"{job_id}_0_log.out"))

    def done(self):
        return True

    def exception(self):
        return None

    def cancel(self, check=False):
        pass


class FakeExecutor:
    """Runs no process: each point's job "ends" as `outcomes` says (by the last part of its
    run folder's name), writing its summary as a run would and an old table as a job does,
    or cannot be submitted at all (its pickle on a full disk)."""

    def __init__(self, folder, outcomes):
        os.makedirs(folder, exist_ok=True)
        self.folder, self.outcomes, self.count = folder, outcomes, 0

    def update_parameters(self, **_):
        pass

    def submit(self, job):
        run_dir = job.config.run_dir
        outcome = self.outcomes[os.path.basename(run_dir).rpartition("=")[2]]
        if outcome == "no space":
            raise NO_SPACE
        os.makedirs(run_dir, exist_ok=True)
        write_summary(run_dir, {"status": outcome, "step": 4, "metric": "mse",
                                "final": {"mse": 0.5} if outcome == "completed" else None})
        with open(os.path.join(job.sweep_folder, table.TABLE_FILE), "w") as f:
            f.write("the table a job wrote earlier\n")
        self.count += 1
        return FakeJob(str(self.count), self.folder)


def fake_sweep(tmp_path, monkeypatch, outcomes):
    """Launches LR_SWEEP with the fake executor: (launch's result, what it said, the folder)."""
    monkeypatch.setattr(executors, "make_executor",
                        lambda resources, folder: FakeExecutor(folder, outcomes))
    said = []
    request = Request("quickstart", QUICKSTART, executors.Resources("local"),
                      (*SMALL, f"runs_root={tmp_path}", *LR_SWEEP))
    ok = launch(request, said.append)
    (folder,) = (tmp_path / "quickstart").iterdir()
    return ok, said, folder


def test_a_sweep_records_a_failed_point_and_runs_the_others(tmp_path, monkeypatch):
    saves, real_save = [], sweeps.save

    def save_fails_once(sweep):  # the record's update on the full disk fails too
        saves.append(sweep)
        if len(saves) == 3:
            raise NO_SPACE
        real_save(sweep)

    monkeypatch.setattr(sweeps, "save", save_fails_once)
    ok, said, folder = fake_sweep(tmp_path, monkeypatch, {
        "1e-3": "completed", "2e-3": "write_failed", "3e-3": "no space", "4e-3": "completed"})
    assert ok is False
    text = (folder / "sweep.md").read_text()
    assert "2 of 4 points completed" in text
    assert "| 2 | 2e-3 | write_failed |" in text
    assert ("| 3 | 3e-3 | failed: its job did not start: OSError: [Errno 28] No space left "
            "on device |") in text
    assert "| 4 | 4e-3 | completed | 0.5 |" in text
    assert any("could not update sweep.json: No space left on device" in s for s in said)
    assert said[-1] == f"2 of 4 points completed; table {folder / 'sweep.md'}"


def test_a_table_that_cannot_be_written_is_one_line_and_no_stale_table(tmp_path, monkeypatch):
    def full_disk(sweep):
        raise NO_SPACE

    monkeypatch.setattr(table, "write_table", full_disk)
    ok, said, folder = fake_sweep(tmp_path, monkeypatch, dict.fromkeys(
        ("1e-3", "2e-3", "3e-3", "4e-3"), "completed"))
    assert ok is True and not (folder / "sweep.md").exists()  # the jobs' older one is gone
    assert said[-1] == (
        "4 of 4 points completed; could not write sweep.md (No space left on device); the "
        f"older one is removed; once there is room, jaxlstm launch --resume {folder} runs the "
        "points not completed and writes it")


def test_a_sweep_whose_record_cannot_be_written_is_refused_in_one_line(tmp_path, monkeypatch,
                                                                       capsys):
    def full_disk(path, text):
        raise NO_SPACE

    monkeypatch.setattr(sweeps, "write_atomically", full_disk)
    code = main(["launch", QUICKSTART, *SMALL, f"runs_root={tmp_path}", *LR_SWEEP,
                 "--executor", "local"])
    assert code == 2 and one_line(capsys) == (
        f"jaxlstm launch: error: runs_root: cannot write the sweep's record in "
        f"{tmp_path / 'quickstart'}: No space left on device.")
    assert os.listdir(tmp_path / "quickstart") == []  # the claimed folder is given back


def test_a_run_that_could_not_write_its_summary_is_not_shown_running(tmp_path, monkeypatch):
    from jaxlstm.train import run
    from jaxlstm.train.run import RunResult

    def full_disk_run(cfg):  # summary.json says "running": its last write failed
        os.makedirs(cfg.run_dir)
        write_summary(cfg.run_dir, {"status": "running", "step": 0})
        return RunResult("write_failed", cfg.run_dir, 8, {})

    monkeypatch.setattr(run, "run_experiment", full_disk_run)
    cfg = load_config(QUICKSTART, [*SMALL, f"run_dir={tmp_path / 'point'}"])
    assert jobs.TrainJob(cfg)()["status"] == "write_failed"
    state = sweeps.point_state(cfg.run_dir)
    assert state.status == "failed"
    assert state.detail == "write_failed at step 8; summary.json could not be written"
    assert json.loads((tmp_path / "point" / "summary.json").read_text())["step"] == 0
