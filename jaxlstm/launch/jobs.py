"""What a submitted job runs: one experiment (`TrainJob`), or a sweep's table (`write_table`).

A `TrainJob` is pickled by submitit and run by every task of its job (one per GPU on SLURM).
Each task calls `run_experiment` with the same config; `run_experiment` starts the distributed
runtime when there are several tasks and lets process 0 alone write files. Before that the
job decides, the same on every task, whether its run folder already holds a run (an earlier
attempt of this job, requeued after a time-out or a preemption, or an unfinished point of a
resumed sweep): then it resumes it (`resume=true`), otherwise it starts it.

Time limits: SLURM warns each task with USR2 `SIGNAL_DELAY_S` before the limit (submitit's
`--signal`). The job turns the warning into what SIGTERM does to a run (finish the step, save a
checkpoint, stop) and then hands it to submitit, which requeues the job (up to 3 time-outs);
the requeued job resumes from that checkpoint. Preemption's SIGTERM saves the same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from types import FrameType
from typing import Any, Self

import submitit

from jaxlstm.launch import sweep as sweeps
from jaxlstm.launch import table
from jaxlstm.train.config import ConfigError, ExperimentConfig
from jaxlstm.train.interrupts import Interrupted
from jaxlstm.train.run_folder import read_summary


def _global_rank() -> int:
    """This task's rank in its submitit job (0 outside one)."""
    try:
        return submitit.JobEnvironment().global_rank
    except RuntimeError:
        return 0


class _SaveThenRequeue:
    """Within the block, submitit's time-out signal (USR2) stops the run as SIGTERM would:
    the handler `run_experiment` installs for SIGTERM while it trains is called. submitit's own
    handler (checkpoint the job, requeue it, exit) runs afterwards, via `hand_over`."""

    def __init__(self) -> None:
        self.signum = submitit.JobEnvironment._usr_sig()
        self.previous: Any = None
        self.signalled = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True
        stop = signal.getsignal(signal.SIGTERM)  # the run's stop flag while it trains
        if callable(stop):
            stop(signum, frame)

    def __enter__(self) -> Self:
        try:
            self.previous = signal.signal(self.signum, self._handler)
        except ValueError:  # not the main thread: signals stay the caller's
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(self.signum, self.previous)

    def hand_over(self) -> None:
        """Lets submitit's handler requeue the job (on rank 0 it exits the process)."""
        if callable(self.previous):
            self.previous(self.signum, None)


class TrainJob(submitit.helpers.Checkpointable):
    """One experiment as a submitit job: `run_experiment(config)` in every task.

    Args:
        config: a validated config whose `run_dir` is set (the launcher sets it).
        sweep_folder: the sweep this run is a point of; its table is rewritten when it ends.

    Returns (when called): {"status", "run_dir", "step"} of the run.
    """

    def __init__(self, config: ExperimentConfig, sweep_folder: str | None = None) -> None:
        if not config.run_dir:
            raise ValueError("TrainJob needs a config with run_dir set.")
        self.config = config
        self.sweep_folder = sweep_folder

    def __call__(self) -> dict[str, Any]:
        from jaxlstm.train import distributed
        from jaxlstm.train.run import run_experiment

        run_dir = self.config.run_dir
        assert run_dir is not None
        writer = _global_rank() == 0
        error_file = os.path.join(run_dir, sweeps.ERROR_FILE)
        if writer and os.path.exists(error_file):
            os.remove(error_file)  # an earlier attempt's; this one starts afresh
        try:
            distributed.initialize(self.config.distributed)  # before the agreed decision
            # Every process resumes or none does: process 0's view of the folder decides.
            started = os.path.isfile(os.path.join(run_dir, "config.yaml"))
            resume = json.loads(distributed.broadcast_text(json.dumps(started)))
            with _SaveThenRequeue() as warning:
                try:
                    result = run_experiment(dataclasses.replace(self.config, resume=resume))
                except Interrupted:  # before the run folder was claimed: nothing written
                    if warning.signalled:  # the time-out warning: requeue, start afresh
                        warning.hand_over()
                    raise
            if writer and read_summary(run_dir).get("status") != result.status:
                # summary.json could not say how the run ended (a full disk): the table
                # reads the run folder, which must not say "running" for an ended run.
                sweeps.record_error(run_dir, f"{result.status} at step {result.step}; "
                                    "summary.json could not be written")
        except Exception as err:
            if writer:
                self._record_error(run_dir, err)
            raise
        finally:
            if writer:
                self._update_table()
        if warning.signalled and result.status == "interrupted":
            warning.hand_over()
        return {"status": result.status, "run_dir": result.run_dir, "step": result.step}

    @staticmethod
    def _record_error(run_dir: str, err: Exception) -> None:
        """`job_error.txt` in the run folder: the error in one line, for the sweep's table."""
        message = " ".join(str(err).split())
        sweeps.record_error(run_dir, message if isinstance(err, ConfigError)
                            else f"{type(err).__name__}: {message}")

    def _update_table(self) -> None:
        """Rewrites the sweep's table; where it cannot (a full disk), removes the older one,
        which would show this point as it no longer is."""
        if self.sweep_folder is None:
            return
        try:
            sweep = sweeps.load(self.sweep_folder)
        except ConfigError as err:
            print(f"could not update the sweep's table: {err}", file=sys.stderr)
            return
        try:
            table.write_table(sweep)
        except OSError as err:
            table.remove_table(sweep)
            print(f"could not update the sweep's table: {err}", file=sys.stderr)


def write_table(sweep_folder: str) -> str:
    """The SLURM table job: writes `sweep.md` (and `sweep.png`); returns the table's path."""
    return table.write_table(sweeps.load(sweep_folder))[0]
