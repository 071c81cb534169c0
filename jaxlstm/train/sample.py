"""Generating sequences from a trained next-symbol model (the text task), one step at a time.

The prompt is read by the stack in its fast form, then each sampled symbol is fed back in, one
step of each layer's family per character (`jaxlstm.decode.generate`): any family's stack.

    params = restore_params(run_dir, config, task)    # a run folder's latest checkpoint
    ids = sample(params, task.encode("The "), 200, task.spec.input_size, key=key)
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.decode import generate_from
from jaxlstm.train.checkpoint import Checkpoints
from jaxlstm.train.config import ExperimentConfig
from jaxlstm.train.model import Model, decoder
from jaxlstm.train.optim import make_optimizer, make_schedule
from jaxlstm.train.step import TrainState

Array = jax.Array


def check_sampling(length: int, temperature: float) -> None:
    """Raises ValueError unless `length` is an int >= 0 and `temperature` finite and > 0."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"length must be an int >= 0, got {length!r}.")
    if not (isinstance(temperature, (int, float, np.number)) and math.isfinite(temperature)
            and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")


def sample(params: Any, prompt_ids: np.ndarray, length: int, vocab_size: int, *, key: Array,
           temperature: float = 0.8, model: Model | None = None) -> np.ndarray:
    """Reads `prompt_ids`, then samples `length` ids from softmax(logits / temperature).

    Args:
        params: a trained model's params (functional, linen or nnx API, any unidirectional
            cell stack or block stack).
        prompt_ids: int ids (P,), P >= 1, each in [0, vocab_size).
        length: how many ids to generate, >= 0.
        vocab_size: the one-hot input size.
        key: PRNG key.
        temperature: softmax temperature, finite and > 0; lower is more conservative.
        model: the `Model` the params are of (needed for a linen or nnx `Recurrent` stack).

    Returns:
        The generated ids (length,), not including the prompt.

    Raises:
        ValueError: for any argument outside the ranges above, or a bidirectional model.
    """
    check_sampling(length, temperature)
    prompt_ids = np.asarray(prompt_ids)
    if prompt_ids.ndim != 1 or prompt_ids.size == 0:
        raise ValueError(f"prompt_ids must be a non-empty 1-D array, got shape "
                         f"{prompt_ids.shape}.")
    if prompt_ids.min() < 0 or prompt_ids.max() >= vocab_size:
        raise ValueError(f"prompt_ids must be in [0, {vocab_size}), got "
                         f"{prompt_ids.min()}..{prompt_ids.max()}.")
    prefill, step, w, b = decoder(params, model)
    if length == 0:
        return np.zeros((0,), np.int32)
    prompt = jnp.eye(vocab_size, dtype=jnp.float32)[jnp.asarray(prompt_ids)][None]

    def choose(key_t: Array, h: Array) -> tuple[Array, Array]:
        logits = h @ w
        logits = (logits + jnp.reshape(b, (1,) * (logits.ndim - 1) + b.shape)) / temperature
        token = jax.random.categorical(key_t, logits)
        return jax.nn.one_hot(token, vocab_size, dtype=jnp.float32), token

    tokens, _ = jax.jit(lambda x, k: generate_from(prefill, step, x, length, choose, key=k))(
        prompt, key)
    return np.asarray(tokens[0])


CHECKPOINTS = ("latest", "best")


def run_task(config: ExperimentConfig, run_dir: str | os.PathLike) -> Any:
    """The task a run was trained on: rebuilt from its config, or read from the run folder
    where the task keeps what it needs there (a text file's vocabulary).

    Raises:
        TypeError, ValueError: as `jaxlstm.tasks.make_task`, for the config's task options.
    """
    from jaxlstm.tasks import TASKS, make_task

    task_class = TASKS.get(config.task.name)
    if hasattr(task_class, "from_run_folder"):  # its vocabulary is in the run folder
        return task_class.from_run_folder(os.fspath(run_dir))
    return make_task(config.task.name, **config.task.options)


def restore_params(run_dir: str | os.PathLike, config: ExperimentConfig, task: Any) -> Any:
    """The params of `run_dir`'s latest checkpoint, for the model `config` and `task` describe
    (`restore_checkpoint`'s, for "latest")."""
    try:
        return restore_checkpoint(run_dir, config, task)[0]
    except FileNotFoundError:
        raise FileNotFoundError(f"{os.fspath(run_dir)} has no checkpoint to sample from."
                                ) from None


def restore_checkpoint(run_dir: str | os.PathLike, config: ExperimentConfig, task: Any, *,
                       which: str = "latest") -> tuple[Any, int]:
    """The params of a checkpoint of `run_dir`, for the model `config` and `task` describe,
    and the checkpoint's step.

    `which`: "latest", the newest regular checkpoint; "best", the newest in `best_checkpoint/`
    (the state with the best validation metric, `checkpointing.keep_best`).
    The checkpoints are opened read-only: nothing in the run folder is created or changed.

    Raises:
        FileNotFoundError: the run folder has no such checkpoint.
        ValueError: `which` is neither, or the checkpoint does not restore cleanly (damaged or
            unfinished).
    """
    if which not in CHECKPOINTS:
        raise ValueError(f"which must be one of {', '.join(CHECKPOINTS)}, got {which!r}.")
    folder = "checkpoints" if which == "latest" else "best_checkpoint"
    directory = os.path.join(os.fspath(run_dir), folder)
    kind = "checkpoint" if which == "latest" else "best checkpoint"
    missing = FileNotFoundError(f"{os.fspath(run_dir)} has no {kind} ({folder}/ holds none).")
    if not os.path.isdir(directory):
        raise missing
    checkpoints = Checkpoints(directory, config.checkpointing.keep if which == "latest"
                              else None, read_only=True)
    try:
        step = checkpoints.latest_step()
        if step is None:
            raise missing
        # The optimizer state is restored with the params, so the state must have the run's
        # structure; the schedule's length does not change it.
        schedule = make_schedule(config.schedule, config.optimizer.learning_rate, 1)
        state = TrainState.create(model=Model(config.model, task.spec),
                                  tx=make_optimizer(config.optimizer, schedule),
                                  schedule=schedule, task_metrics=task.metrics,
                                  seed=config.training.seed)
        try:
            return checkpoints.restore(state, step).params, step
        except Exception as err:  # noqa: BLE001 - orbax and tensorstore raise many types
            reason = " ".join(str(err).split("\n")[0].split())[:160] or type(err).__name__
            raise ValueError(f"checkpoint {step} in {directory} does not restore: "
                             f"{reason}") from None
    finally:
        checkpoints.close()
