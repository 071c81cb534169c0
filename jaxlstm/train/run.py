"""One experiment from a config to a run folder.

    runs/<name>/<timestamp>/
        config.yaml      the resolved config (re-running it reproduces the run); never
                         rewritten by a resume
        metrics.jsonl    train metrics every `log_every` steps, eval metrics every `eval_every`
        speed.jsonl      steps/s and sequences/s
        checkpoints/     orbax checkpoints every `checkpointing.every` steps and at the end
        best_checkpoint/ the state with the best validation metric (`checkpointing.keep_best`)
        summary.json     status, final (validation) metrics, the baseline's, `best`, `test`,
                         wall time, versions, device, and `resumes`: each resume's step and
                         accepted config changes
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
  next resume drops and moves aside;
- on several processes, one that dies, hangs or stops alone ends the others in one line
  (exit code 1) after process 0 marks the summary "failed" with the reason in "failure"
  (`peer_watch.watching_peers`).

The validation split, the best checkpoint and early stopping. The task's `spec.metric` on the
validation split ("valid") is evaluated every `eval_every` steps and at the end; an evaluation
improves when it is strictly better in the direction `spec.higher_is_better` says (`BestSoFar`;
a NaN never improves). With `checkpointing.keep_best` the state at each improvement is saved to
`best_checkpoint/` (a second `Checkpoints`, with the same CRCs and atomic writes). With
`training.patience` P, P evaluations in a row without improvement stop the run: it saves its
checkpoint and ends as a completed run does, with status "early_stopped" (exit code 0); a run
whose patience runs out at its last step is "completed".

At the end (completed or early-stopped) `summary.json` has `final` and `baseline` (the
validation split's, as before), `best` ({"step", "metrics"}: the best validation evaluation)
and `test`: the test split's metrics, evaluated once, on the best checkpoint (`test_on`
"best") or, with `keep_best: false`, on the final state (`test_on` "final"); `test_step` is
the step evaluated and `baseline_test` the baseline on the test split. A task without a test
split gets `test: null` and `test_unavailable` saying so. Held-out splits that a task returns
as a list are placed on the devices once; any other iterable streams, batch by batch.

How the best state survives a resume, exactly. `BestSoFar` (the best step, its metrics, the
evaluations since) is a function of the validation evaluations in order, so a resume rebuilds
it by replaying the eval lines of `metrics.jsonl` up to the restored step (process 0 reads
them and broadcasts the result, so every process decides alike). The best checkpoint on disk
is kept consistent with that:
- at an improvement the best is saved *before* the regular checkpoint of the same step, and a
  regular checkpoint then deletes every best checkpoint but the newest; so `best_checkpoint/`
  holds the best as of the newest regular checkpoint plus the improvements after it, and a
  kill at any point (between a best save and the next regular checkpoint, or in the middle of
  either save) leaves the best of every step a resume can restore;
- a resume moves the best checkpoints newer than its restored step aside (with leftovers of an
  unfinished save), into `unusable_checkpoints/best_checkpoint/`: the resumed run recomputes
  those steps bit for bit and saves them again;
- when the best step is the restored step itself and its checkpoint is missing (a run resumed
  with `keep_best` turned on), it is saved from the restored state; any other missing or
  corrupted best checkpoint makes the test split run on the final state, said on stderr and by
  `test_on: "final"`. (A resume that falls back past a corrupted regular checkpoint can meet
  this: only the newest regular checkpoint's best is kept.)
A resumed run whose patience was already spent stays stopped.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

import jax
import numpy as np
from omegaconf import MISSING

from jaxlstm.tasks import check_task, make_task
from jaxlstm.tasks.base import (
    Batch,
    SplitUnavailable,
    baseline_of,
    batch_weight,
    held_out,
)
from jaxlstm.tasks.files import DataError
from jaxlstm.tasks.files.fingerprint import differences as data_differences
from jaxlstm.tasks.files.fingerprint import fingerprints
from jaxlstm.train import distributed, memory, mesh, peer_watch, plots
from jaxlstm.train.best import BestSoFar
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
from jaxlstm.train.interrupts import RunSignals, describe
from jaxlstm.train.loader import LoaderStateMismatch, TrainBatches
from jaxlstm.train.logs import MetricsLog, NoLog, read_metrics
from jaxlstm.train.mesh import DataParallel
from jaxlstm.train.model import Model
from jaxlstm.train.optim import make_optimizer, make_schedule
from jaxlstm.train.progress import Progress
from jaxlstm.train.run_folder import (
    FINISHED,
    RunFolderError,
    choose_run_dir,
    discard_if_empty,
    read_summary,
    resume_changes,
    saved_config,
    write_summary,
)
from jaxlstm.train.step import TrainState

BEST_DIR = "best_checkpoint"


@dataclasses.dataclass
class RunResult:
    """What a run ended with: `status` is "completed", "early_stopped" (`training.patience`
    evaluations without improvement), "interrupted" (a signal; a checkpoint was saved),
    "non_finite" or "write_failed" (stopped; the last checkpoint is good)."""

    status: str
    run_dir: str
    step: int
    summary: dict[str, Any]


class HeldOut:
    """One held-out split of a task, ready to evaluate on the mesh.

    A list of batches (what the built-in tasks return) is placed on the devices once and
    reused at every evaluation. Any other iterable is streamed: `read` (the task's
    `eval_batches` for the split) is called anew at each evaluation, and each batch is placed,
    evaluated and dropped, so a held-out set read from a large file never sits in memory
    whole. `cache=False` streams a list too (the test split is evaluated once: a placed copy
    would only hold memory).

    Raises:
        SplitUnavailable: the task has no such split (from the first `read`).
    """

    def __init__(self, parallel: DataParallel, read: Callable[[], Iterable[Batch]], *,
                 cache: bool = True):
        self.parallel, self.read = parallel, read
        self.step = mesh.eval_step(parallel)
        batches = read()
        self.batches = batches if isinstance(batches, list) else None  # NumPy, for the plots
        self.placed = ([(parallel.eval_batch(b), batch_weight(b)) for b in batches]
                       if cache and self.batches is not None else None)

    def __iter__(self) -> Iterator[tuple[Any, float]]:
        """(placed batch, weight) pairs, one pass over the split."""
        if self.placed is not None:
            yield from self.placed
            return
        for batch in self.batches if self.batches is not None else self.read():
            yield self.parallel.eval_batch(batch), batch_weight(batch)

    def sample(self, count: int = 2) -> list[Batch]:
        """NumPy batches for the plots: all of a list, the first `count` of a stream."""
        if self.batches is not None:
            return self.batches
        return list(islice(self.read(), count))


def evaluate(state: TrainState, split: HeldOut) -> dict[str, float]:
    """The task's metrics over a whole held-out split (every process's rows), weighted by
    each batch's target steps."""
    totals: dict[str, float] = {}
    total_weight = 0.0
    for batch, weight in split:
        for key, value in split.step(state, batch).items():
            totals[key] = totals.get(key, 0.0) + float(value) * weight
        total_weight += weight
    return {key: value / total_weight for key, value in totals.items()}


def write_samples(run_dir: str, params: Any, task: Any, seed: int, *, prompt: str = "The ",
                  length: int = 400, count: int = 3, model: Any = None) -> str:
    """Generated text from a next-character model into `samples.txt`; returns the path."""
    from jaxlstm.train.sample import sample

    path = os.path.join(run_dir, "samples.txt")
    prompt_ids = task.encode(prompt)
    with open(path, "w") as f:
        for n in range(count):
            ids = sample(params, prompt_ids, length, task.spec.input_size,
                         key=jax.random.fold_in(jax.random.PRNGKey(seed), n), model=model)
            f.write(f"--- sample {n + 1} (prompt {prompt!r}, temperature 0.8)\n")
            f.write(prompt + task.decode(ids) + "\n\n")
    return path


def _versions() -> dict[str, str]:
    import flax
    import optax

    import jaxlstm

    return {"jaxlstm": jaxlstm.__version__, "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "python": sys.version.split()[0]}


# The task, optimizer and model of recent configs, so that running the same config again in
# one process (a notebook, a sweep, the tests) reuses the compiled steps: jit keys its cache
# on these static parts of the train state by identity.
_BUILT: dict[str, tuple[Any, Any, Any, Model]] = {}


def _build(config: ExperimentConfig, task: Any = None) -> tuple[Any, Any, Any, Model]:
    """(task, schedule, optimizer, model) for `config`, with `task` when given (else the one
    `config.task` names); ConfigError for bad task options."""
    # A task object is keyed by identity: the entry holds the object, so no other live object
    # can share its id while the entry exists.
    task_key = config.task if task is None else ("object", id(task))
    key = repr((task_key, config.model, config.optimizer, config.schedule,
                config.training.steps))
    if key in _BUILT:
        return _BUILT[key]
    if task is not None:
        try:
            check_task(task, config.task.name)
        except TypeError as err:
            raise ConfigError(str(err)) from None
    else:
        try:
            task = make_task(config.task.name, **config.task.options)
        except DataError:
            raise  # names the file, not a config key: the command says "data error"
        except MemoryError as err:  # a task that builds its data when made, too large to fit
            raise ConfigError(memory.task_too_big(config, err)) from None
        except (TypeError, ValueError) as err:  # MissingExtra (an optional package) is one too
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


def _named_after(config: ExperimentConfig, task: Any) -> ExperimentConfig:
    """`config` with `task.name` set to `task`'s `module:qualname` when it is missing, so that
    `config.yaml` is complete and a resume with the same task object compares equal."""
    if task is None or config.task.name != MISSING:
        return config
    cls = type(task)
    return dataclasses.replace(config, task=dataclasses.replace(
        config.task, name=f"{cls.__module__}:{cls.__qualname__}"))


DATA_FILE = "data.json"
"""The run folder's record of its data: each file's path, size and SHA-256 (`fingerprint`)."""


def _data_fingerprints(task: Any) -> list[dict[str, Any]]:
    """Each data file of `task` (`data_files`, for the tasks that read files) with its size
    and SHA-256."""
    return fingerprints(task.data_files() if hasattr(task, "data_files") else [])


def _data_changes(config: ExperimentConfig, run_dir: str, current: list[dict[str, Any]]
                  ) -> list[str]:
    """A resume's data (`current` fingerprints) against the run's `data.json`: [] when
    unchanged (or never recorded); the changes when `allow_data_change` lets them through;
    RunFolderError naming the first changed file otherwise."""
    path = os.path.join(run_dir, DATA_FILE)
    try:
        with open(path) as f:
            recorded = json.load(f)["files"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunFolderError(f"resume: {path} cannot be read ({err}).") from None
    problems = data_differences(recorded, current)
    if problems and not config.allow_data_change:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RunFolderError(f"resume: the data changed since {run_dir} started: "
                             f"{problems[0]}{more}; pass --allow-data-change "
                             f"(allow_data_change=true) to continue on the new data.")
    return problems


def _prepare_folder(config: ExperimentConfig, task: Any) -> tuple[str, dict[str, Any]]:
    """Process 0's part: chooses, checks and creates the run folder (writing `config.yaml`,
    `data.json` and the task's artifacts for a new run); returns (run_dir, the resume's
    accepted changes). A new run's folder, claimed here, is given back (removed while it
    holds no file) when this fails or is interrupted."""
    run_dir = choose_run_dir(config)
    try:
        return run_dir, _fill_folder(config, task, run_dir)
    except BaseException:
        if not config.resume and not config.run_dir:
            discard_if_empty(run_dir)
        raise


def _fill_folder(config: ExperimentConfig, task: Any, run_dir: str) -> dict[str, Any]:
    """`_prepare_folder` once the folder is chosen: the checks and writes; the changes."""
    changes = resume_changes(run_dir, config) if config.resume else {}
    data = _data_fingerprints(task)  # hashes every data file once
    data_changes = _data_changes(config, run_dir, data) if config.resume else []
    if data_changes:
        changes["data"] = data_changes
    try:
        os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
        if data and (not config.resume or data_changes):
            write_atomically(os.path.join(run_dir, DATA_FILE),
                             json.dumps({"files": data}, indent=2) + "\n")
        if not config.resume:
            for name, text in (task.artifacts() if hasattr(task, "artifacts") else {}).items():
                write_atomically(os.path.join(run_dir, name), text)
            write_atomically(os.path.join(run_dir, "config.yaml"),
                             to_yaml(saved_config(config)))
    except OSError as err:
        raise RunFolderError(f"run folder {run_dir}: {err.strerror or err}.") from None
    return changes


def _agreed_folder(config: ExperimentConfig, task: Any) -> tuple[str, dict[str, Any]]:
    """`_prepare_folder` on process 0, its outcome (the folder or the refusal) on all."""
    outcome: dict[str, Any] = {}
    if distributed.is_primary():
        try:
            run_dir, changes = _prepare_folder(config, task)
            outcome = {"run_dir": run_dir, "changes": json_safe(changes)}
        except RunFolderError as err:
            outcome = {"error": str(err)}
    outcome = json.loads(distributed.broadcast_text(json.dumps(outcome)))
    if "error" in outcome:
        raise RunFolderError(outcome["error"])
    return outcome["run_dir"], outcome["changes"]


def _open_run_folder(config: ExperimentConfig, task: Any, state: TrainState,
                     where: dict[str, Any], origin: dict[str, Any] | None
                     ) -> tuple[str, Checkpoints, TrainState, int | None, dict[str, Any]]:
    """Chooses and prepares the run folder; returns (run_dir, checkpoints, state,
    resume_step, summary). Every check that can refuse runs before anything is written.

    The summary starts as "running" with where this process runs (`where`: devices, host,
    pid) and, for a new run, `origin` (config_source, overrides); a resume keeps the run's
    origin and earlier `segments`, and adds a record to `resumes`."""
    run_dir, changes = _agreed_folder(config, task)
    try:
        checkpoints = Checkpoints(os.path.join(run_dir, "checkpoints"),
                                  config.checkpointing.keep)
    except OSError as err:
        raise RunFolderError(f"run folder {run_dir}: {err.strerror or err}.") from None
    summary: dict[str, Any] = {"name": config.name, "status": "running", "step": 0, **where,
                               **(origin or {})}
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
        summary.update({key: previous[key] for key in ORIGIN_KEYS if key in previous})
        summary.update(step=resume_step, resumes=[*previous.get("resumes", []), record],
                       segments=earlier_segments(previous))
        if distributed.is_primary():
            report_skipped(skipped, resume_step)
    if distributed.is_primary():
        write_summary(run_dir, summary)
    return run_dir, checkpoints, state, resume_step, summary


ORIGIN_KEYS = ("config_source", "overrides")
"""`summary.json`'s record of where a run's config came from (`jaxlstm train`'s CONFIG
argument and its key=value overrides): kept by every resume."""


def earlier_segments(previous: dict[str, Any]) -> list[dict[str, Any]]:
    """The `segments` of a run's previous summary: one per process lifetime that worked on
    the run (a run written before segments were recorded counts as one)."""
    if "segments" in previous:
        return list(previous["segments"])
    if "wall_time_s" in previous:
        return [{"to_step": previous.get("step"), "status": previous.get("status"),
                 "wall_time_s": previous["wall_time_s"]}]
    return []


def _already_finished(config: ExperimentConfig) -> RunResult | None:
    """For a resume of a run that ended as planned (completed, early-stopped) and that the
    config does not extend (more `training.steps`, another `training.patience`): its result,
    said in one line, with nothing written; None otherwise (the run goes ahead, and refuses
    what it must there)."""
    if not config.resume:
        return None
    outcome: dict[str, Any] = {}
    if distributed.is_primary():
        try:
            run_dir = choose_run_dir(config)
            previous = read_summary(run_dir)
            extends = {"training.steps", "training.patience"} & set(
                resume_changes(run_dir, config))
        except RunFolderError:
            previous, extends = {}, set()  # the run itself says why, in its words
        if previous.get("status") in FINISHED and not extends:
            outcome = {"status": previous["status"], "step": previous.get("step", 0),
                       "run_dir": run_dir}
            ended = previous["status"].replace("_", " ")
            print(f"{run_dir}: the run is finished ({ended} at step {outcome['step']}); "
                  "nothing to resume. To train on, start a new run with more "
                  "training.steps (with schedule.name=constant, resume with more).",
                  file=sys.stderr)
    outcome = json.loads(distributed.broadcast_text(json.dumps(outcome)))
    if not outcome:
        return None
    summary = read_summary(outcome["run_dir"]) if distributed.is_primary() else {}
    return RunResult(outcome["status"], outcome["run_dir"], outcome["step"], summary)


def _recovered_best(task: Any, run_dir: str, resume_step: int | None) -> BestSoFar:
    """The best validation result so far: none for a new run; for a resume, the eval lines of
    `metrics.jsonl` up to the restored step replayed (process 0 reads them, every process gets
    the result, so that all take the same decisions from it)."""
    spec = task.spec
    if resume_step is None:
        return BestSoFar(spec.metric, spec.higher_is_better)
    fields: dict[str, Any] = {}
    if distributed.is_primary():
        path = os.path.join(run_dir, "metrics.jsonl")
        records = read_metrics(path) if os.path.exists(path) else []
        fields = dataclasses.asdict(BestSoFar.from_records(
            records, spec.metric, spec.higher_is_better, up_to=resume_step))
    return BestSoFar(**json.loads(distributed.broadcast_text(json.dumps(fields))))


def _open_best_checkpoints(config: ExperimentConfig, run_dir: str, state: TrainState,
                           best: BestSoFar, resume_step: int | None, summary: dict[str, Any]
                           ) -> Checkpoints | None:
    """The best checkpoint's folder (None without `checkpointing.keep_best`), made consistent
    with `best` on a resume: checkpoints newer than the restored step (saved before a kill,
    past the newest regular checkpoint) are moved aside, since the resumed run recomputes
    them, and recorded in the summary's resume record; the best state, when it is the
    restored one and is missing (keep_best was off), is saved from it."""
    if not config.checkpointing.keep_best:
        return None
    try:
        manager = Checkpoints(os.path.join(run_dir, BEST_DIR), None,
                              aside=os.path.join(run_dir, "unusable_checkpoints", BEST_DIR))
    except OSError as err:
        raise RunFolderError(f"run folder {run_dir}: {err.strerror or err}.") from None
    if resume_step is not None:
        moved = manager.move_aside_newer(resume_step, f"newer than step {resume_step}")
        if moved:
            summary["resumes"][-1]["skipped_best_checkpoints"] = {m.name: m.reason
                                                                  for m in moved}
        if moved and distributed.is_primary():
            print(f"{BEST_DIR}: moved {', '.join(m.name for m in moved)} to "
                  f"unusable_checkpoints/{BEST_DIR}/ (newer than the resumed step "
                  f"{resume_step}, or unfinished); the resumed run saves its best again.",
                  file=sys.stderr)
        if best.step == resume_step and resume_step not in manager.all_steps():
            manager.save(state)
    return manager


def run_experiment(config: ExperimentConfig, *, task: Any = None,
                   interrupt_at: int | None = None, signals: RunSignals | None = None,
                   origin: dict[str, Any] | None = None) -> RunResult:
    """Trains per `config` and writes the run folder; see the module docstring.

    On several processes, every process calls this with the same config (its `distributed`
    section aside) and gets the same result; only process 0 writes files.

        result = run_experiment(load_config("my.yaml"), task=MyTask(...))  # e.g. a notebook
        result.summary["test"]

    Args:
        config: a validated `ExperimentConfig` (from `load_config`).
        task: a task object (see `jaxlstm.tasks.base.Task`) to train on instead of the one
            `config.task` names; a missing `task.name` becomes the object's
            `module:qualname` in `config.yaml`. A resume must pass the same kind of task.
        interrupt_at: act as if Ctrl-C came right after this step (for tests).
        signals: the `RunSignals` already installed by the caller (the `jaxlstm train`
            command installs them before reading the config); by default the run installs
            its own for its duration (see `jaxlstm.train.interrupts`).
        origin: where the config came from, recorded in a new run's `summary.json`:
            `config_source` (the shipped config's name or the file) and `overrides`.

    Raises:
        ConfigError: task options the task rejects, an optimizer that fails to build, a batch
            size that does not split over the devices, or a distributed runtime that cannot
            start.
        RunFolderError (a ConfigError): a run folder that cannot be used as asked (reused
            without resume, nothing to resume, a resume that changes the model, no checkpoint
            that restores, not writable). Nothing has been written when these are raised.
        Interrupted (a KeyboardInterrupt): SIGINT or SIGTERM before the run folder was
            claimed; nothing has been written. Later signals end the run "interrupted".
    """
    if signals is None:
        with RunSignals() as own:
            return run_experiment(config, task=task, interrupt_at=interrupt_at, signals=own,
                                  origin=origin)
    segment = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
               "host": socket.gethostname(), "pid": os.getpid()}
    started = time.perf_counter()
    distributed.initialize(config.distributed)  # before anything touches a device
    distributed.check_same_config(config)  # before any collective, before any file
    with peer_watch.watching_peers() as peers:
        return _train(config, task, interrupt_at, signals, origin, peers, segment, started)


def _train(config: ExperimentConfig, task: Any, interrupt_at: int | None,
           signals: RunSignals, origin: dict[str, Any] | None, peers: Any,
           segment: dict[str, Any], started: float) -> RunResult:
    """`run_experiment` once the processes (if several) are known to agree and are watched:
    the build, the folder, the loop and the end."""
    config = _named_after(config, task)
    finished = _already_finished(config)
    if finished is not None:
        signals.over()
        return finished
    task, schedule, tx, model = _build(config, task)
    train_cfg = config.training
    parallel = DataParallel.over_all_devices()
    parallel.check_batch_size(train_cfg.batch_size, grad_accum=train_cfg.grad_accum)
    memory.check_fits(config, task)  # before the train state and the run folder exist
    primary = distributed.is_primary()
    state = mesh.init_state(parallel, lambda: TrainState.create(
        model=model, tx=tx, schedule=schedule, task_metrics=task.metrics,
        seed=train_cfg.seed, grad_accum=train_cfg.grad_accum))
    where = parallel.describe()
    signals.defer()  # from here a signal leaves a folder that says "interrupted"
    run_dir, checkpoints, state, resume_step, summary = _open_run_folder(
        config, task, state, {**where, **segment}, origin)
    step = int(state.step)

    def mark_failed(reason: str) -> None:
        """summary.json says "failed" when a peer's death ends this process (called from
        the watch's thread), unless it already says how the run ended."""
        with _SUMMARY_WRITES:
            if summary["status"] != "running":
                return
            ended = {**segment, "from_step": resume_step or 0, "to_step": step,
                     "wall_time_s": round(time.perf_counter() - started, 2)}
            _write_final_summary(run_dir, {**summary, "failure": reason}, "failed", step,
                                 [*summary.get("segments", []), ended])

    peers.on_failure = mark_failed
    if _agreed_stop(signals):  # a signal while the folder was prepared
        checkpoints.close()
        return _end(run_dir, summary, "interrupted", step, resume_step, segment, started,
                    signals, f"interrupted by {describe(signals.signal_name)} before "
                    f"training; resume with --resume.")
    best = _recovered_best(task, run_dir, resume_step)
    if primary:  # the first line off a terminal: where this run writes, and from where
        print(f"run folder {run_dir}" if resume_step is None else
              f"resuming {run_dir} from step {resume_step}", file=sys.stderr, flush=True)
        if hasattr(task, "describe"):  # what was read, once the run is going ahead
            print(task.describe(), file=sys.stderr, flush=True)
    # Everything opened from here is closed below, whatever happens; a write that fails
    # before or during training ends the run "write_failed", as in the loop.
    log: MetricsLog | NoLog = NoLog()
    best_checkpoints: Checkpoints | None = None
    batches: TrainBatches | None = None
    try:
        log = (
            MetricsLog(run_dir, tensorboard=config.logging.tensorboard, resume_step=resume_step)
            if primary else NoLog())
        best_checkpoints = _open_best_checkpoints(config, run_dir, state, best, resume_step,
                                                  summary)
        valid = HeldOut(parallel, lambda: held_out(task, train_cfg.eval_batch_size, "valid"))
        rows = parallel.local_rows(train_cfg.batch_size)
        train_step = mesh.train_step(parallel)

        batches = TrainBatches(task, seed=train_cfg.seed, batch_size=train_cfg.batch_size,
                               rows=rows, steps=train_cfg.steps, start=step,
                               threads=train_cfg.loader_threads, prefetch=train_cfg.prefetch)
        if resume_step is not None and resume_step in checkpoints.all_steps():
            try:
                batches.restore(checkpoints.loader_state(resume_step), resume_step)
            except LoaderStateMismatch as err:
                raise RunFolderError(f"resume: {err}.") from None
        # A resumed run that had stopped early stays stopped (its patience was spent).
        status = ("early_stopped" if best.out_of_patience(train_cfg.patience)
                  and step < train_cfg.steps else "completed")
        evaluation, evaluated_at = None, None
        window_start, window_steps = time.perf_counter(), 0
        progress = Progress(enabled=config.logging.progress and primary, total=train_cfg.steps,
                            start=step, every=config.logging.log_every, metric=task.spec.metric)
        if best.last is not None:  # a resumed run's first progress line shows its last eval
            progress.evaluated(best.last)
        with progress:
            while step < train_cfg.steps and status == "completed":
                local = next(batches)  # task.train_batch(seed, step, ...), read ahead
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
                improved = False
                if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
                    evaluation = evaluate(state, valid)  # a collective: every process
                    evaluated_at = step
                    # Global metrics: every process takes the same decisions from them.
                    improved = best.update(step, evaluation)
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
                    if evaluated_at == step:
                        log.write(step, "eval", evaluation)
                        progress.evaluated(evaluation[task.spec.metric])
                except OSError as err:  # only process 0 writes: it tells the others below
                    write_error = err
                progress.step(step, values["loss"])
                if interrupt_at is not None and step == interrupt_at:
                    signals.request("SIGINT")
                stops = distributed.agree(
                    (_SIGNALLED if signals.requested else 0)
                    | (_WRITE_FAILED if write_error else 0)
                    | (_PATIENCE_SPENT if best.out_of_patience(train_cfg.patience) else 0))
                if stops & _WRITE_FAILED:
                    raise write_error or OSError("process 0 could not write its files")
                if improved and best_checkpoints is not None:
                    best_checkpoints.save(state)  # before the regular checkpoint: see above
                if stops & (_SIGNALLED | _PATIENCE_SPENT) \
                        or step % config.checkpointing.every == 0 or step == train_cfg.steps:
                    checkpoints.save(state, loader=batches.state())
                    if best_checkpoints is not None:
                        best_checkpoints.keep_newest()
                if stops & _PATIENCE_SPENT and step < train_cfg.steps:
                    status = "early_stopped"
                    if primary:
                        print(f"early stopping at step {step}: no improvement of the "
                              f"validation {task.spec.metric} in {train_cfg.patience} "
                              f"evaluation(s) (best at step {best.step}).", file=sys.stderr)
                    break
                if stops & _SIGNALLED and step < train_cfg.steps:
                    status = "interrupted"
                    if primary:
                        cause = (describe(signals.signal_name) if signals.requested
                                 else "a signal to another process")
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
            last = checkpoints.latest_step()
            upto = (f"up to checkpoint {last}" if last is not None
                    else "(no checkpoint yet: a resume starts from step 0)")
            print(f"could not write to {run_dir}: {err.strerror or err}; stopping at step "
                  f"{step}. The folder is consistent {upto}: make room and resume with "
                  "--resume.",
                  file=sys.stderr)
    finally:
        _close_all(batches, checkpoints, log, best_checkpoints)

    summary["versions"] = _versions()
    if status in FINISHED:
        status = _finish(config, run_dir, summary, status, state, task, parallel, valid,
                         best, evaluation if evaluated_at == step else None, signals)
    return _end(run_dir, summary, status, step, resume_step, segment, started, signals)


def _close_all(*opened: Any) -> None:
    """Closes what a run opened (None: never opened). A close that fails to write (orbax
    finishing a save on a full disk) is already said by the error that ended the run, or is
    said here in one line; the folder is consistent up to its last good checkpoint."""
    for thing in opened:
        if thing is None:
            continue
        try:
            thing.close()
        except OSError as err:
            if distributed.is_primary():
                print(f"could not finish writing ({err.strerror or err}); the folder is "
                      "consistent up to its last checkpoint.", file=sys.stderr)


# Why a process wants to stop, as bits: `distributed.agree` ORs them over the processes.
_SIGNALLED, _WRITE_FAILED, _PATIENCE_SPENT = 1, 2, 4


def _agreed_stop(signals: RunSignals) -> bool:
    """Whether any process was signalled (every process gets the same answer)."""
    return bool(distributed.agree(_SIGNALLED if signals.requested else 0) & _SIGNALLED)


def _finish(config: ExperimentConfig, run_dir: str, summary: dict[str, Any], status: str,
            state: TrainState, task: Any, parallel: DataParallel, valid: HeldOut,
            best: BestSoFar, final: dict[str, float] | None, signals: RunSignals) -> str:
    """A finished run's last work, into `summary`: the final validation metrics, the test
    split's and the files (plots, samples); returns the status, "interrupted" when a signal
    came meanwhile (checked between the parts; the trained checkpoint is saved, so a resume
    does this work again and completes the run)."""
    if _stopped_while_finishing(signals, run_dir, status, int(state.step)):
        return "interrupted"
    summary.update(final=final if final is not None else evaluate(state, valid),
                   baseline=baseline_of(task, "valid"), metric=task.spec.metric,
                   higher_is_better=task.spec.higher_is_better, best=best.to_json())
    if _stopped_while_finishing(signals, run_dir, status, int(state.step)):
        return "interrupted"
    summary.update(_test_results(config, run_dir, task, parallel, state, best))
    if _stopped_while_finishing(signals, run_dir, status, int(state.step)):
        return "interrupted"
    failed = False
    if distributed.is_primary():
        try:
            _finish_folder(config, run_dir, summary, host_state(state), task, valid)
        except OSError as err:  # e.g. samples.txt on a full disk: the checkpoint is saved
            failed = True
            print(f"could not write to {run_dir}: {err.strerror or err}; the trained "
                  f"checkpoint (step {int(state.step)}) is saved: make room and resume with "
                  "--resume to finish the run.", file=sys.stderr)
    if distributed.agree(_WRITE_FAILED if failed else 0) & _WRITE_FAILED:  # alike on all
        return "write_failed"
    return status  # `_end` looks once more, just before it writes the summary


def _stopped_while_finishing(signals: RunSignals, run_dir: str, status: str, step: int
                             ) -> bool:
    """Whether a signal (to any process) came while a finished run does its last work; says
    so on process 0. Its trained checkpoint is saved, so `--resume` does that work again."""
    if not _agreed_stop(signals):
        return False
    if distributed.is_primary():
        cause = describe(signals.signal_name) if signals.requested else "a signal"
        print(f"interrupted by {cause} while finishing the run ({status.replace('_', ' ')} "
              f"at step {step}, checkpoint saved) in {run_dir}; --resume finishes it.",
              file=sys.stderr)
    return True


def _end(run_dir: str, summary: dict[str, Any], status: str, step: int,
         resume_step: int | None, segment: dict[str, Any], started: float,
         signals: RunSignals, message: str | None = None) -> RunResult:
    """Writes the final `summary.json` (process 0) with the status, the step and this
    process's segment of the run (when it started, where, its steps and wall time) after the
    earlier segments (`segments`; `wall_time_s` is their total). A finished run looks for a
    signal once more before writing and once after: one that came while its summary was
    being written makes the summary say "interrupted" after all (a resume finishes it)."""
    segment = {**segment, "from_step": resume_step or 0, "to_step": step,
               "wall_time_s": round(time.perf_counter() - started, 2)}
    segments = [*summary.get("segments", []), segment]
    if message and distributed.is_primary():
        print(message, file=sys.stderr)
    if status in FINISHED and _stopped_while_finishing(signals, run_dir, status, step):
        status = "interrupted"
    _write_final_summary(run_dir, summary, status, step, segments)
    if status in FINISHED and _stopped_while_finishing(signals, run_dir, status, step):
        status = "interrupted"
        _write_final_summary(run_dir, summary, status, step, segments)
    signals.over()  # the summary says how the run ended: a later signal changes nothing
    return RunResult(status, run_dir, step, summary)


# The final summary is written by the main thread, or by the peer watch's thread when
# another process dies (`mark_failed`): one at a time, and the first one's word stands.
_SUMMARY_WRITES = threading.RLock()


def _write_final_summary(run_dir: str, summary: dict[str, Any], status: str, step: int,
                         segments: list[dict[str, Any]]) -> None:
    with _SUMMARY_WRITES:
        _write_final_summary_now(run_dir, summary, status, step, segments)


def _write_final_summary_now(run_dir: str, summary: dict[str, Any], status: str, step: int,
                             segments: list[dict[str, Any]]) -> None:
    if status not in FINISHED:  # a finished run's results belong to it alone
        for key in ("final", "baseline", "best", "test", "test_on", "test_step",
                    "baseline_test", "test_unavailable", "plots", "samples"):
            summary.pop(key, None)
    segments[-1]["status"] = status
    summary.update(status=status, step=step, segments=segments,
                   wall_time_s=round(sum(s["wall_time_s"] for s in segments), 2))
    if distributed.is_primary():
        try:
            write_summary(run_dir, summary)
        except OSError as err:  # the checkpoints and metrics are complete; say so and go on
            print(f"could not write summary.json in {run_dir}: {err.strerror or err}.",
                  file=sys.stderr)


def _test_results(config: ExperimentConfig, run_dir: str, task: Any, parallel: DataParallel,
                  state: TrainState, best: BestSoFar) -> dict[str, Any]:
    """`summary.json`'s test entries: `test` (the test split's metrics, or None with
    `test_unavailable` saying why), `baseline_test` when the task has one, and which state
    was evaluated (`test_on`: "best" or "final", at `test_step`)."""
    try:
        test = HeldOut(parallel, lambda: held_out(task, config.training.eval_batch_size,
                                                  "test"), cache=False)
        evaluated, on = _best_state(config, run_dir, state, best)
        # Inside the try: a generator's SplitUnavailable comes with its first batch.
        results = {"test": evaluate(evaluated, test), "test_on": on,
                   "test_step": int(evaluated.step)}
    except SplitUnavailable as err:
        return {"test": None, "test_unavailable": str(err)}
    try:
        results["baseline_test"] = baseline_of(task, "test")
    except SplitUnavailable:
        pass
    return results


def _best_state(config: ExperimentConfig, run_dir: str, state: TrainState, best: BestSoFar
                ) -> tuple[TrainState, str]:
    """(the state with the best validation metric, "best"), or (the final `state`, "final")
    without `keep_best`, without a finite evaluation, or when the best checkpoint does not
    restore (said on stderr)."""
    if not config.checkpointing.keep_best or best.step is None:
        return state, "final"
    if best.step == int(state.step):
        return state, "best"
    saved = Checkpoints(os.path.join(run_dir, BEST_DIR), None, read_only=True)
    try:
        if best.step not in saved.all_steps():
            raise FileNotFoundError("it is not on disk")
        return saved.restore(state, best.step), "best"
    except Exception as err:  # noqa: BLE001 - orbax and tensorstore raise many types
        if distributed.is_primary():
            reason = " ".join(str(err).split())[:160] or type(err).__name__
            print(f"{BEST_DIR}: the best checkpoint (step {best.step}) is unavailable "
                  f"({reason}); the test split is evaluated on the final state.",
                  file=sys.stderr)
        return state, "final"
    finally:
        saved.close()


def host_state(state: TrainState) -> TrainState:
    """The state with NumPy arrays: this process's own copy, for work that runs on process 0
    alone (plots, samples), which must not touch arrays spanning other processes."""
    return state.replace(**host_copy(state_arrays(state)))


def _finish_folder(config: ExperimentConfig, run_dir: str, summary: dict[str, Any],
                   state: TrainState, task: Any, valid: HeldOut) -> None:
    """Process 0's last files: the speed summary, plots and text samples."""
    speed_path = os.path.join(run_dir, "speed.jsonl")
    if os.path.exists(speed_path):
        rates = read_metrics(speed_path)
        if rates:
            summary["steps_per_s"] = float(np.median([r["steps_per_s"] for r in rates]))
            summary["sequences_per_s"] = summary["steps_per_s"] * config.training.batch_size
    if config.logging.plots:
        try:
            summary["plots"] = plots.draw_all(run_dir, state, task, valid.sample())
        except Exception as err:  # noqa: BLE001 - a picture must not cost the summary
            print(f"plots failed: {type(err).__name__}: {err}", file=sys.stderr)
    if hasattr(task, "decode") and not config.model.bidirectional:  # sampling steps the model
        summary["samples"] = write_samples(run_dir, state.params, task, config.training.seed,
                                           model=Model(config.model, task.spec))
