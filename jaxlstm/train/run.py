"""One experiment from a config to a run folder.

    runs/<name>/<timestamp>/
        config.yaml      the resolved config (re-running it reproduces the run)
        metrics.jsonl    train metrics every `log_every` steps, eval metrics every `eval_every`
        speed.jsonl      steps/s and sequences/s
        checkpoints/     orbax checkpoints every `checkpointing.every` steps and at the end
        summary.json     final metrics, the baseline's, wall time, versions, device, status
        *.png            loss curves and the task's own picture (with matplotlib)

Resuming (`resume=true`) continues from the latest checkpoint of the newest run of the same
name (or of `run_dir`): batches are a function of (seed, step) and dropout keys of (rng, step),
so an interrupted-then-resumed run ends with exactly the parameters and metrics of an
uninterrupted one. A non-finite loss or gradient stops the run without saving, so the last
good checkpoint stays as it was. Ctrl-C finishes the current step, saves and stops.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import signal
import sys
import time
from typing import Any, Self

import jax
import numpy as np

from jaxlstm.tasks import make_task
from jaxlstm.tasks.base import batch_weight
from jaxlstm.train import plots
from jaxlstm.train.checkpoint import Checkpoints
from jaxlstm.train.config import ConfigError, ExperimentConfig, to_yaml
from jaxlstm.train.logs import MetricsLog, read_metrics
from jaxlstm.train.model import Model
from jaxlstm.train.optim import make_optimizer, make_schedule
from jaxlstm.train.step import TrainState, jit_eval_step, jit_train_step


@dataclasses.dataclass
class RunResult:
    """What a run ended with: `status` is "completed", "interrupted" or "non_finite"."""

    status: str
    run_dir: str
    step: int
    summary: dict[str, Any]


def _run_dir(config: ExperimentConfig) -> str:
    if config.run_dir:
        return config.run_dir
    root = os.path.join(config.runs_root, config.name or "run")
    if config.resume and os.path.isdir(root):
        runs = sorted(d for d in os.listdir(root)
                      if os.path.isdir(os.path.join(root, d, "checkpoints")))
        if runs:
            return os.path.join(root, runs[-1])
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = os.path.join(root, stamp), 1
    while os.path.exists(path):
        path, n = os.path.join(root, f"{stamp}-{n}"), n + 1
    return path


def evaluate(state: TrainState, batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """The task's metrics over the held-out batches, weighted by their target steps."""
    totals: dict[str, float] = {}
    weight = 0.0
    for batch in batches:
        w = batch_weight(batch)
        for key, value in jit_eval_step(state, batch).items():
            totals[key] = totals.get(key, 0.0) + float(value) * w
        weight += w
    return {key: value / weight for key, value in totals.items()}


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
    """Set by Ctrl-C (SIGINT): the loop finishes its step, saves and stops."""

    def __init__(self) -> None:
        self.set = False
        self._previous = None

    def __enter__(self) -> Self:
        def handler(signum, frame):
            self.set = True

        try:
            self._previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no handler, Ctrl-C is the caller's
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _progress(enabled: bool, total: int, start: int):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(),
                        console=Console(stderr=True), disable=not enabled, transient=False)
    task_id = progress.add_task("train", total=total, completed=start, loss="-")
    return progress, task_id


def run_experiment(config: ExperimentConfig, *, interrupt_at: int | None = None) -> RunResult:
    """Trains per `config` and writes the run folder; see the module docstring.

    Args:
        config: a validated `ExperimentConfig` (from `load_config`).
        interrupt_at: act as if Ctrl-C came right after this step (for tests).

    Raises:
        ConfigError: for task options the task rejects.
    """
    try:
        task = make_task(config.task.name, **config.task.options)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    started = time.perf_counter()
    run_dir = _run_dir(config)
    os.makedirs(run_dir, exist_ok=True)
    saved = dataclasses.replace(config, run_dir=None, resume=False)
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write(to_yaml(saved))

    train_cfg = config.training
    schedule = make_schedule(config.schedule, config.optimizer.learning_rate, train_cfg.steps)
    try:
        tx = make_optimizer(config.optimizer, schedule)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    state = TrainState.create(model=Model(config.model, task.spec), tx=tx, schedule=schedule,
                              task_metrics=task.metrics, seed=train_cfg.seed)
    checkpoints = Checkpoints(os.path.join(run_dir, "checkpoints"), config.checkpointing.keep)
    resume_step = checkpoints.latest_step() if config.resume else None
    if resume_step is not None:
        state = checkpoints.restore(state, resume_step)
    log = MetricsLog(run_dir, tensorboard=config.logging.tensorboard, resume_step=resume_step)
    eval_batches = task.eval_batches(train_cfg.eval_batch_size)

    step = int(state.step)
    status = "completed"
    window_start, window_steps = time.perf_counter(), 0
    progress, bar = _progress(config.logging.progress, train_cfg.steps, step)
    with _StopFlag() as stop, progress:
        while step < train_cfg.steps:
            batch = task.train_batch(train_cfg.seed, step, train_cfg.batch_size)
            state, metrics = jit_train_step(state, batch)
            step += 1
            window_steps += 1
            values = {k: float(v) for k, v in metrics.items()}
            if not (math.isfinite(values["loss"]) and math.isfinite(values["grad_norm"])):
                last = checkpoints.latest_step()
                print(f"non-finite loss or gradient at step {step} (loss {values['loss']}, "
                      f"grad_norm {values['grad_norm']}): stopping; the last good checkpoint "
                      f"(step {last}) is untouched.", file=sys.stderr)
                status = "non_finite"
                break
            progress.update(bar, completed=step, loss=f"{values['loss']:.4f}")
            if step % config.logging.log_every == 0 or step == train_cfg.steps:
                log.write(step, "train", values)
                elapsed = time.perf_counter() - window_start
                if window_steps > 1:
                    rate = window_steps / elapsed
                    log.write_speed(step, {"steps_per_s": rate,
                                           "sequences_per_s": rate * train_cfg.batch_size})
                window_start, window_steps = time.perf_counter(), 0
            if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
                log.write(step, "eval", evaluate(state, eval_batches))
            if interrupt_at is not None and step == interrupt_at:
                stop.set = True
            if stop.set or step % config.checkpointing.every == 0 or step == train_cfg.steps:
                checkpoints.save(state)
            if stop.set and step < train_cfg.steps:
                status = "interrupted"
                print(f"interrupted: saved a checkpoint at step {step} in {run_dir}; "
                      "resume with resume=true.", file=sys.stderr)
                break
    checkpoints.close()
    log.close()

    summary: dict[str, Any] = {
        "name": config.name, "status": status, "step": step,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "versions": _versions(),
        "device": str(jax.devices()[0].device_kind), "platform": jax.devices()[0].platform,
    }
    if status == "completed":
        final = evaluate(state, eval_batches)
        summary.update(final=final, baseline=task.baseline(), metric=task.spec.metric,
                       higher_is_better=task.spec.higher_is_better)
        speed_path = os.path.join(run_dir, "speed.jsonl")
        if os.path.exists(speed_path):
            rates = read_metrics(speed_path)
            if rates:
                summary["steps_per_s"] = float(np.median([r["steps_per_s"] for r in rates]))
                summary["sequences_per_s"] = summary["steps_per_s"] * train_cfg.batch_size
        if config.logging.plots:
            summary["plots"] = plots.draw_all(run_dir, state, task, eval_batches)
        if hasattr(task, "decode") and not config.model.bidirectional:
            summary["samples"] = write_samples(run_dir, state.params, task, train_cfg.seed)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    return RunResult(status, run_dir, step, summary)
