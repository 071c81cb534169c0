"""Submitting jobs and waiting for them, saying what happens on one line per event.

- SLURM: `submit_slurm` submits every run at once, as one job array when there are several
  (`--array=0-N%P`, at most P running); `wait_for` then polls them (`--wait`); Ctrl-C stops
  the waiting, not the jobs.
- Local: `run_local` keeps at most `max_parallel` jobs running, starting the next as one ends,
  each with its own GPUs, until all have ended. Ctrl-C stops the running ones (a run in its
  training loop saves a checkpoint first, if it has the second submitit gives it).

A line when a job starts (its id and log) and when it ends (its status and final metric,
read from its run folder), and every `HEARTBEAT_S` the running jobs' latest steps.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from jaxlstm.launch.executors import Resources, job_log, local_parameters
from jaxlstm.launch.jobs import TrainJob
from jaxlstm.launch.sweep import ERROR_FILE, PointState, point_state, record_error
from jaxlstm.launch.table import summary_line

POLL_S = 1.0
HEARTBEAT_S = 60.0
CANCEL_GRACE_S = 3.0
CONTROLLER_LOG = "local_controllers.err"  # in the submitit folder
Say = Callable[[str], None]


@dataclasses.dataclass
class Entry:
    """One run to submit: its label in messages, its run folder and its job."""

    label: str
    run_dir: str
    job: TrainJob
    submitted: Any = None  # the submitit Job, once submitted
    state: PointState | None = None  # once ended


def submit_slurm(executor: Any, entries: list[Entry]) -> None:
    """Submits every entry: one job, or one job array for several."""
    jobs = (executor.submit_array([e.job for e in entries]) if len(entries) > 1
            else [executor.submit(entries[0].job)])
    for entry, job in zip(entries, jobs, strict=True):
        entry.submitted = job


def latest_step(run_dir: str) -> int | None:
    """The last step in the run's `metrics.jsonl`, reading only the file's end."""
    try:
        with open(os.path.join(run_dir, "metrics.jsonl"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def _ended(entry: Entry, say: Say) -> None:
    """Reads how the entry's run ended from its folder, the job's error where it says nothing."""
    state = point_state(entry.run_dir)
    if state.status in ("not started", "started", "running") and not os.path.exists(
            os.path.join(entry.run_dir, ERROR_FILE)):
        state = PointState("failed", f"{_job_error(entry)} (log: {job_log(entry.submitted)})",
                           state.summary)
    entry.state = state
    say(f"{entry.label}: {summary_line(state)}")


def _job_error(entry: Entry) -> str:
    """Why a job whose run folder says nothing ended: its exception as submitit recorded it,
    or, where the job could not even write that (a full disk), the space left where its run
    folder is, the likeliest reason."""
    from submitit.core.utils import UncompletedJobError

    try:
        error = entry.submitted.exception()
    except Exception as err:  # noqa: BLE001 - any reason it cannot be read is the reason
        error = err
    if isinstance(error, UncompletedJobError):  # no result file
        return f"the job ended without a result or an error line ({_free_space(entry.run_dir)})"
    # submitit's FailedJobError holds the traceback between two rules: its last line.
    parts = str(error or "").split("-" * 22)
    lines = (parts[1] if len(parts) >= 3 else parts[0]).strip().splitlines()
    return lines[-1].strip() if lines else "the job ended early"


def _free_space(path: str) -> str:
    """`N KiB free on the run folder's file system`, or that it cannot be told."""
    while path and not os.path.isdir(path):
        path = os.path.dirname(path)
    try:
        stats = os.statvfs(path or ".")
    except OSError:
        return "the space left on its file system cannot be read"
    return f"{stats.f_bavail * stats.f_frsize // 1024} KiB free on the run folder's file system"


def _not_started(entry: Entry, err: Exception, say: Say) -> None:
    """Records a job that could not be submitted (its pickle on a full disk, a fork that
    failed) as a failed point, in its run folder where the disk allows."""
    line = f"its job did not start: {type(err).__name__}: {' '.join(str(err).split())}"
    record_error(entry.run_dir, line)
    entry.state = PointState("failed", line)
    say(f"{entry.label}: {summary_line(entry.state)}")


def _heartbeat(running: list[Entry], waiting: int, done: int, say: Say) -> None:
    steps = ", ".join(f"{e.label.split(' ', 1)[-1]} at step {latest_step(e.run_dir) or 0}"
                      for e in running)
    say(f"running: {steps or 'none'}; {waiting} waiting, {done} ended")


def run_local(executor: Any, resources: Resources, entries: list[Entry], say: Say,
              on_start: Callable[[Entry], None] = lambda entry: None) -> None:
    """Runs the entries on this machine, at most `resources.max_parallel` (default 1) at a
    time, each job with its own `gpus_per_node` GPUs; returns when all have ended.
    `on_start(entry)` is called as each job starts. A job that cannot be submitted is a
    failed point (`entry.state`), and the others go on."""
    slots = resources.max_parallel or 1
    per_job = resources.gpus_per_node
    pending = collections.deque(entries)
    running: dict[int, Entry] = {}
    last_beat = time.monotonic()
    try:
        while pending or running:
            for slot, entry in list(running.items()):
                if entry.submitted.done():
                    _ended(entry, say)
                    del running[slot]
            while pending and len(running) < slots:
                slot = min(set(range(slots)) - set(running))
                gpus = tuple(range(slot * per_job, (slot + 1) * per_job))
                executor.update_parameters(**local_parameters(resources, gpus))
                entry = pending.popleft()
                try:
                    with _stderr_of_children(os.path.join(executor.folder, CONTROLLER_LOG)):
                        entry.submitted = executor.submit(entry.job)
                except Exception as err:  # noqa: BLE001 - this point fails, not the sweep
                    _not_started(entry, err, say)
                    continue
                running[slot] = entry
                on_start(entry)
                on = f" on GPUs {','.join(map(str, gpus))}" if gpus else ""
                say(f"{entry.label}: job {entry.submitted.job_id} started{on}; log "
                    f"{job_log(entry.submitted)}")
            if not running:
                break
            if time.monotonic() - last_beat >= HEARTBEAT_S:
                last_beat = time.monotonic()
                _heartbeat(list(running.values()), len(pending),
                           len(entries) - len(pending) - len(running), say)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        # A Ctrl-C at a terminal reached the jobs too, and they are ending; a SIGINT sent to
        # this process alone did not: those still running after a moment are cancelled.
        deadline = time.monotonic() + CANCEL_GRACE_S
        while any(not e.submitted.done() for e in running.values()) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        for entry in running.values():
            if not entry.submitted.done():
                entry.submitted.cancel(check=False)  # SIGINT: the run saves if it has time
        say(f"stopped {len(running)} running job(s); {len(pending)} never started.")
        raise


@contextlib.contextmanager
def _stderr_of_children(path: str) -> Iterator[None]:
    """Processes started within the block write their stderr to `path`: submitit's local job
    controllers, whose Ctrl-C tracebacks would otherwise land on this command's terminal
    (each job's own output goes to its log files)."""
    sys.stderr.flush()
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)  # less the umask
    saved = os.dup(2)
    try:
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


def wait_for(entries: list[Entry], say: Say) -> None:
    """Waits until every submitted entry's job has ended (SLURM `--wait`)."""
    left = list(entries)
    last_beat = time.monotonic()
    try:
        while left:
            for entry in list(left):
                if entry.submitted.done():
                    _ended(entry, say)
                    left.remove(entry)
            if left:
                if time.monotonic() - last_beat >= HEARTBEAT_S:
                    last_beat = time.monotonic()
                    _heartbeat(left, 0, len(entries) - len(left), say)
                time.sleep(POLL_S * 10)
    except KeyboardInterrupt:
        say(f"stopped waiting; the {len(left)} job(s) not ended go on in SLURM's queue.")
        raise
