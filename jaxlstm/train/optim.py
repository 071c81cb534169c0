"""The optimizer from the config: any optax optimizer by name, a schedule, clipping, decay."""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxlstm.train.config import OptimizerConfig, ScheduleConfig


def make_schedule(config: ScheduleConfig, peak: float, total_steps: int) -> optax.Schedule:
    """constant; cosine from `peak` to `peak * final_fraction`; or the same after a linear
    warm-up from 0 over `warmup_steps`."""
    end = peak * config.final_fraction
    if config.name == "constant":
        return optax.constant_schedule(peak)
    if config.name == "cosine":
        return optax.cosine_decay_schedule(peak, max(1, total_steps),
                                           alpha=config.final_fraction)
    return optax.warmup_cosine_decay_schedule(0.0, peak, config.warmup_steps,
                                              max(total_steps, config.warmup_steps + 1),
                                              end_value=end)


def _matrices(params: Any) -> Any:
    """Weight decay applies to matrices (kernels), not to biases, gains or peepholes."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: OptimizerConfig, schedule: optax.Schedule
                   ) -> optax.GradientTransformation:
    """`optax.<name>(learning_rate=schedule, **kwargs)`, after clipping by global norm.

    Weight decay is passed to optimizers that take it (adamw, lion, ...), masked to matrices;
    for others it is added to the gradient before the optimizer (L2 regularisation).

    Raises:
        ValueError: naming `optimizer.name` or `optimizer.kwargs` when optax has no such
            optimizer or it rejects the arguments.
    """
    factory = getattr(optax, config.name, None)
    if not callable(factory) or config.name.startswith("_"):
        raise ValueError(f"optimizer.name: optax has no optimizer {config.name!r}.")
    kwargs = dict(config.kwargs)
    accepts = inspect.signature(factory).parameters
    transforms = []
    if config.clip_norm is not None:
        transforms.append(optax.clip_by_global_norm(config.clip_norm))
    if config.weight_decay:
        if "weight_decay" in accepts:
            kwargs.update(weight_decay=config.weight_decay, mask=_matrices)
        else:
            transforms.append(optax.add_decayed_weights(config.weight_decay, _matrices))
    try:
        transforms.append(factory(learning_rate=schedule, **kwargs))
    except TypeError as err:
        raise ValueError(f"optimizer.kwargs: optax.{config.name} rejects them: {err}") from None
    return optax.chain(*transforms)


def check_optimizer(config: OptimizerConfig) -> None:
    """Builds the optimizer and traces one update on a tiny tree, so that a bad name or
    keyword argument (`b1: abc`) is reported when the config is loaded, not at step 1.

    Raises:
        ValueError: naming `optimizer.name` or `optimizer.kwargs`.
    """
    tx = make_optimizer(config, optax.constant_schedule(config.learning_rate))

    def one_update():
        params = {"w": jnp.ones((2, 2), jnp.float32), "b": jnp.ones((2,), jnp.float32)}
        return tx.update(params, tx.init(params), params)[0]

    try:
        # Traced, not run: a config is loaded before `jax.distributed.initialize`, which
        # refuses to start once anything has touched a device.
        jax.eval_shape(one_update)
    except Exception as err:  # noqa: BLE001 - optax raises whatever the bad kwarg causes
        message = " ".join(str(err).split("\n")[0].split())[:200]
        raise ValueError(f"optimizer.kwargs: optax.{config.name} fails with "
                         f"{dict(config.kwargs)}: {type(err).__name__}: {message}") from None
