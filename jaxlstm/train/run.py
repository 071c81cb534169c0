"""One experiment from a config to a run folder.

    runs/<name>/<timestamp>/
        config.yaml      the resolved config (re-running it reproduces the run); never
                         rewritten by a resume
        metrics.jsonl    train metrics every `log_every` steps, eval metrics every `eval_every`
        speed.jsonl      steps/s and sequences/s
        checkpoints/     orbax checkpoints every `checkpointing.every` steps and at the end
        summary.json     status, final metrics, the baseline's, wall time, versions, device,
                         and `resumes`: each resume's step and accepted config changes
        *.png            loss curves and the task's own picture (with matplotlib)

Where it runs: on every device of every process, data-parallel (see `mesh`): the state
replicated, each batch split over the devices, each process building only its rows. On
several processes (`distributed`) they all run this same function; process 0 alone writes the
folder's files, every process takes part in the checkpoints, and host-side decisions (stop
now, which folder) are agreed so that no process waits alone in a collective. The global batch
is `training.batch_size` whatever the device count, so 1 device, 4 devices and 2 hosts train
the same model up to the order of floating-point sums; `summary.json` records where it ran.

Resuming (`resume=true`) continues from the newest checkpoint that restores cleanly of the
newest run of the same name (or of `run_dir`); see `run_folder` for what a resume may change.
Batches are a function of (seed, step) and dropout keys of (rng, step), so an
interrupted-then-resumed run ends with exactly the parameters and metrics of an uninterrupted
one. Every failure leaves the folder resumable:
- a non-finite loss, gradient or updated state stops the run without saving, so the last good
  checkpoint stays as it was (status "non_finite");
- Ctrl-C (SIGINT) and SIGTERM (what SLURM sends before killing a job) finish the current
  step, save and stop (status "interrupted");
- a failed write (a full disk) stops the run with what is on disk consistent up to the last
  checkpoint (status "write_failed");
- a kill -9 leaves at most a torn last metrics line and an unfinished checkpoint, which the
  next resume drops and moves aside.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import signal
import sys
import time
from typing import Any, Self

import jax
import numpy as np

from jaxlstm.tasks import make_task
from jaxlstm.tasks.base import batch_weight
from jaxlstm.train import distributed, mesh, plots
from jaxlstm.train.checkpoint import (
    Checkpoints,
    NonFiniteState,
    NoUsableCheckpoint,
    host_copy,
    report_skipped,
    state_arrays,
)
from jaxlstm.train.config import ConfigError, ExperimentConfig, to_yaml
from jaxlstm.train.files import json_safe, write_atomically
from jaxlstm.train.logs import MetricsLog, NoLog, read_metrics
from jaxlstm.train.mesh import DataParallel
from jaxlstm.train.model import Model
from jaxlstm.train.optim import make_optimizer, make_schedule
from jaxlstm.train.progress import Progress
from jaxlstm.train.run_folder import (
    RunFolderError,
    choose_run_dir,
    read_summary,
    resume_changes,
    saved_config,
    write_summary,
)
from jaxlstm.train.step import TrainState


@dataclasses.dataclass
class RunResult:
    """What a run ended with: `status` is "completed", "interrupted" (a signal; a checkpoint
    was saved), "non_finite" or "write_failed" (stopped; the last checkpoint is good)."""

    status: str
    run_dir: str
    step: int
    summary: dict[str, Any]


class HeldOut:
    """The held-out batches, placed on the mesh once, with their weights."""

    def __init__(self, parallel: DataParallel, batches: list[dict[str, np.ndarray]]):
        self.batches = batches  # NumPy, for the plots
        self.weights = [batch_weight(batch) for batch in batches]
        self.placed = [parallel.eval_batch(batch) for batch in batches]
        self.step = mesh.eval_step(parallel)


def evaluate(state: TrainState, held_out: HeldOut) -> dict[str, float]:
    """The task's metrics over the whole held-out set (every process's rows), weighted by
    each batch's target steps."""
    totals: dict[str, float] = {}
    for batch, weight in zip(held_out.placed, held_out.weights, strict=True):
        for key, value in held_out.step(state, batch).items():
            totals[key] = totals.get(key, 0.0) + float(value) * weight
    return {key: value / sum(held_out.weights) for key, value in totals.items()}


def write_samples(run_dir: str, params: Any, task: Any, seed: int, *, prompt: str = "The ",
                  length: int = 400, count: int = 3) -> str:
    """Generated text from a next-character model into `samples.txt`; returns the path."""
    from jaxlstm.train.sample import sample

    path = os.path.join(run_dir, "samples.txt")
    prompt_ids = task.encode(prompt)
    with open(path, "w") as f:
        for n in range(count):
            ids = sample(params, prompt_ids, length, task.spec.input_size,
                         key=jax.random.fold_in(jax.random.PRNGKey(seed), n))
            f.write(f"--- sample {n + 1} (prompt {prompt!r}, temperature 0.8)\n")
            f.write(prompt + task.decode(ids) + "\n\n")
    return path


def _versions() -> dict[str, str]:
    import flax
    import optax

    import jaxlstm

    return {"jaxlstm": jaxlstm.__version__, "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "python": sys.version.split()[0]}


class _StopFlag:
    """Set by Ctrl-C (SIGINT) or SIGTERM: the loop finishes its step, saves and stops."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.set = False
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        def handler(signum, frame):
            self.set = True
            self.signal_name = signal.Signals(signum).name

        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, handler)
            except ValueError:  # not the main thread: no handler, signals are the caller's
                pass
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


# The task, optimizer and model of recent configs, so that running the same config again in
# one process (a notebook, a sweep, the tests) reuses the compiled steps: jit keys its cache
# on these static parts of the train state by identity.
_BUILT: dict[str, tuple[Any, Any, Any, Model]] = {}


def _build(config: ExperimentConfig) -> tuple[Any, Any, Any, Model]:
    """(task, schedule, optimizer, model) for `config`; ConfigError for bad task options."""
    key = repr((config.task, config.model, config.optimizer, config.schedule,
                config.training.steps))
    if key in _BUILT:
        return _BUILT[key]
    try:
        task = make_task(config.task.name, **config.task.options)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    schedule = make_schedule(config.schedule, config.optimizer.learning_rate,
                             config.training.steps)
    try:
        tx = make_optimizer(config.optimizer, schedule)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if len(_BUILT) >= 8:
        _BUILT.pop(next(iter(_BUILT)))
    _BUILT[key] = (task, schedule, tx, Model(config.model, task.spec))
    return _BUILT[key]


def _prepare_folder(config: ExperimentConfig) -> tuple[str, dict[str, Any]]:
    """Process 0's part: chooses, checks and creates the run folder (writing `config.yaml` for
    a new run); returns (run_dir, the resume's accepted changes)."""
    run_dir = choose_run_dir(config)
    changes = resume_changes(run_dir, config) if config.resume else {}
    try:
        os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
        if not config.resume:
            write_atomically(os.path.join(run_dir, "config.yaml"),
                             to_yaml(saved_config(config)))
    except OSError as err:
        raise RunFolderError(f"run folder {run_dir}: {err.strerror or err}.") from None
    return run_dir, changes


def _agreed_folder(config: ExperimentConfig) -> tuple[str, dict[str, Any]]:
    """`_prepare_folder` on process 0, its outcome (the folder or the refusal) on all."""
    outcome: dict[str, Any] = {}
    if distributed.is_primary():
        try:
            run_dir, changes = _prepare_folder(config)
            outcome = {"run_dir": run_dir, "changes": json_safe(changes)}
        except RunFolderError as err:
            outcome = {"error": str(err)}
    outcome = json.loads(distributed.broadcast_text(json.dumps(outcome)))
    if "error" in outcome:
        raise RunFolderError(outcome["error"])
    return outcome["run_dir"], outcome["changes"]


def _open_run_folder(config: ExperimentConfig, state: TrainState, where: dict[str, Any]
                     ) -> tuple[str, Checkpoints, TrainState, int | None, dict[str, Any]]:
    """Chooses and prepares the run folder; returns (run_dir, checkpoints, state,
    resume_step, summary). Every check that can refuse runs before anything is written."""
    run_dir, changes = _agreed_folder(config)
    try:
        checkpoints = Checkpoints(os.path.join(run_dir, "checkpoints"),
                                  config.checkpointing.keep)
    except OSError as err:
        raise RunFolderError(f"run folder {run_dir}: {err.strerror or err}.") from None
    summary: dict[str, Any] = {"name": config.name, "status": "running", "step": 0, **where}
    resume_step = None
    if config.resume:
        try:
            restored, skipped = checkpoints.restore_newest_good(state)
        except NoUsableCheckpoint as err:
            checkpoints.close()
            raise RunFolderError(f"resume: {err}") from None
        state = restored if restored is not None else state
        resume_step = int(state.step)
        previous = read_summary(run_dir)
        record = {"step": resume_step, "time": datetime.datetime.now().isoformat(
            timespec="seconds"), "changed": changes,
            "skipped_checkpoints": {s.name: s.reason for s in skipped},
            "processes": where["processes"], "devices": where["devices"]}
        summary.update(step=resume_step, resumes=[*previous.get("resumes", []), record])
        if distributed.is_primary():
            report_skipped(skipped, resume_step)
    if distributed.is_primary():
        write_summary(run_dir, summary)
    return run_dir, checkpoints, state, resume_step, summary


def run_experiment(config: ExperimentConfig, *, interrupt_at: int | None = None) -> RunResult:
    """Trains per `config` and writes the run folder; see the module docstring.

    On several processes, every process calls this with the same config (its `distributed`
    section aside) and gets the same result; only process 0 writes files.

    Args:
        config: a validated `ExperimentConfig` (from `load_config`).
        interrupt_at: act as if Ctrl-C came right after this step (for tests).

    Raises:
        ConfigError: task options the task rejects, an optimizer that fails to build, a batch
            size that does not split over the devices, or a distributed runtime that cannot
            start.
        RunFolderError (a ConfigError): a run folder that cannot be used as asked (reused
            without resume, nothing to resume, a resume that changes the model, no checkpoint
            that restores, not writable). Nothing has been written when these are raised.
    """
    distributed.initialize(config.distributed)  # before anything touches a device
    task, schedule, tx, model = _build(config)
    train_cfg = config.training
    parallel = DataParallel.over_all_devices()
    parallel.check_batch_size(train_cfg.batch_size)
    primary = distributed.is_primary()
    started = time.perf_counter()
    state = mesh.init_state(parallel, lambda: TrainState.create(
        model=model, tx=tx, schedule=schedule, task_metrics=task.metrics,
        seed=train_cfg.seed))
    where = parallel.describe()
    run_dir, checkpoints, state, resume_step, summary = _open_run_folder(config, state, where)
    log: MetricsLog | NoLog = (
        MetricsLog(run_dir, tensorboard=config.logging.tensorboard, resume_step=resume_step)
        if primary else NoLog())
    held_out = HeldOut(parallel, task.eval_batches(train_cfg.eval_batch_size))
    rows = parallel.local_rows(train_cfg.batch_size)
    train_step = mesh.train_step(parallel)

    step = int(state.step)
    status = "completed"
    window_start, window_steps = time.perf_counter(), 0
    progress = Progress(enabled=config.logging.progress and primary, total=train_cfg.steps,
                        start=step, every=config.logging.log_every, metric=task.spec.metric)
    try:
        with _StopFlag() as stop, progress:
            while step < train_cfg.steps:
                local = task.train_batch(train_cfg.seed, step, train_cfg.batch_size, rows=rows)
                state, metrics = train_step(
                    state, parallel.global_batch(local, train_cfg.batch_size))
                step += 1
                window_steps += 1
                state_finite = bool(metrics.pop("state_finite"))
                values = {k: float(v) for k, v in metrics.items()}
                if not (np.isfinite(values["loss"]) and np.isfinite(values["grad_norm"])
                        and state_finite):  # the same on every process: metrics are global
                    if primary:
                        print(f"non-finite loss, gradient or updated params at step {step} "
                              f"(loss {values['loss']}, grad_norm {values['grad_norm']}, "
                              f"params {'finite' if state_finite else 'not finite'}): "
                              f"stopping; the last good checkpoint (step "
                              f"{checkpoints.latest_step()}) is untouched.", file=sys.stderr)
                    status = "non_finite"
                    break
                evaluation = None
                if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
                    evaluation = evaluate(state, held_out)  # a collective: every process
                write_error = None
                try:
                    if step % config.logging.log_every == 0 or step == train_cfg.steps:
                        log.write(step, "train", values)
                        elapsed = time.perf_counter() - window_start
                        if window_steps > 1:
                            rate = window_steps / elapsed
                            log.write_speed(step, {"steps_per_s": rate, "sequences_per_s":
                                                   rate * train_cfg.batch_size})
                        window_start, window_steps = time.perf_counter(), 0
                    if evaluation is not None:
                        log.write(step, "eval", evaluation)
                        progress.evaluated(evaluation[task.spec.metric])
                except OSError as err:  # only process 0 writes: it tells the others below
                    write_error = err
                progress.step(step, values["loss"])
                if interrupt_at is not None and step == interrupt_at:
                    stop.set, stop.signal_name = True, "SIGINT"
                stops = distributed.agree(
                    (_SIGNALLED if stop.set else 0) | (_WRITE_FAILED if write_error else 0))
                if stops & _WRITE_FAILED:
                    raise write_error or OSError("process 0 could not write its files")
                if stops & _SIGNALLED or step % config.checkpointing.every == 0 \
                        or step == train_cfg.steps:
                    checkpoints.save(state)
                if stops & _SIGNALLED and step < train_cfg.steps:
                    status = "interrupted"
                    if primary:
                        cause = stop.signal_name or "a signal to another process"
                        print(f"interrupted by {cause}: saved a checkpoint at step {step} in "
                              f"{run_dir}; resume with --resume.", file=sys.stderr)
                    break
    except NonFiniteState as err:
        status = "non_finite"
        if primary:
            print(f"{err} The last good checkpoint (step {checkpoints.latest_step()}) is "
                  "untouched.", file=sys.stderr)
    except OSError as err:
        status = "write_failed"
        if primary:
            print(f"could not write to {run_dir}: {err.strerror or err}; stopping at step "
                  f"{step}. The folder is consistent up to checkpoint "
                  f"{checkpoints.latest_step()}: make room and resume with --resume.",
                  file=sys.stderr)
    finally:
        checkpoints.close()
        log.close()

    summary.update({
        "status": status, "step": step,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "versions": _versions(),
    })
    if status == "completed":
        final = evaluate(state, held_out)
        summary.update(final=final, baseline=task.baseline(), metric=task.spec.metric,
                       higher_is_better=task.spec.higher_is_better)
        if primary:
            _finish_folder(config, run_dir, summary, host_state(state), task, held_out)
    if primary:
        try:
            write_summary(run_dir, summary)
        except OSError as err:  # the checkpoints and metrics are complete; say so and go on
            print(f"could not write summary.json in {run_dir}: {err.strerror or err}.",
                  file=sys.stderr)
    return RunResult(status, run_dir, step, summary)


# Why a process wants to stop, as bits: `distributed.agree` ORs them over the processes.
_SIGNALLED, _WRITE_FAILED = 1, 2


def host_state(state: TrainState) -> TrainState:
    """The state with NumPy arrays: this process's own copy, for work that runs on process 0
    alone (plots, samples), which must not touch arrays spanning other processes."""
    return state.replace(**host_copy(state_arrays(state)))


def _finish_folder(config: ExperimentConfig, run_dir: str, summary: dict[str, Any],
                   state: TrainState, task: Any, held_out: HeldOut) -> None:
    """Process 0's last files: the speed summary, plots and text samples."""
    speed_path = os.path.join(run_dir, "speed.jsonl")
    if os.path.exists(speed_path):
        rates = read_metrics(speed_path)
        if rates:
            summary["steps_per_s"] = float(np.median([r["steps_per_s"] for r in rates]))
            summary["sequences_per_s"] = summary["steps_per_s"] * config.training.batch_size
    if config.logging.plots:
        try:
            summary["plots"] = plots.draw_all(run_dir, state, task, held_out.batches)
        except Exception as err:  # noqa: BLE001 - a picture must not cost the summary
            print(f"plots failed: {type(err).__name__}: {err}", file=sys.stderr)
    if (hasattr(task, "decode") and not config.model.bidirectional
            and config.model.cell != "mlstm"
            and config.model.blocks is None):  # sampling runs an LSTM or sLSTM stack
        summary["samples"] = write_samples(run_dir, state.params, task, config.training.seed)
