"""Will a run fit in memory? An estimate from the config and the task, before anything is built.

A config can ask for more memory than any machine has (`model.hidden_size=10**9`,
`training.batch_size=10**9`, a task's `seq_len` of 10**9), and without a check the run finds
out late: an XLA abort, or a MemoryError traceback after the run folder was made. `check_fits`
runs after the task is built and before the model's state is, and refuses in one line naming
the key and the estimate:

    model.hidden_size: 1000000000 needs about 48 EB for the parameters and optimizer state
    (16 EB of parameters); this machine has 21 GB.

What is counted, per device (the state is replicated, the batch split over the devices):
- the parameters and the optimizer state: their exact shapes, from `jax.eval_shape` of the
  model's and the optimizer's init, which traces shapes and allocates nothing;
- a training (micro-)batch: its arrays (one row is drawn from the task and scaled), the outputs
  and, roughly, the activations the backward pass keeps per step and row (`_stored_per_step`):
  what each layer's family (or each block's kind) declares as its `activation_floats`, in the
  form the run uses (a few vectors of the width; a form's T x T or chunk matrices);
- an evaluation batch, forward only.
It is a floor rather than a bound (XLA's temporaries come on top), so it refuses only what
cannot fit, never a config that would. The tasks that build their held-out data when they are
made (most built-in ones) allocate it inside `make_task`: a NumPy allocation larger than the
machine fails there at once, and `task_too_big` turns that MemoryError into the same kind of
line, naming the task's largest option.

The memory to compare with: on a CPU, the host's available memory (MemAvailable, or the
cgroup's limit when smaller), shared by its local devices; on a GPU or TPU, the device's
`bytes_limit`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import numpy as np

from jaxlstm.tasks.base import TaskSpec, held_out
from jaxlstm.train.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    cell_families,
    default_mode,
)

FLOAT_BYTES = 4  # activations are counted as float32 (bfloat16 halves them: a floor still)


def format_bytes(count: float) -> str:
    """`count` bytes in decimal units, rounded: "2.5 kB", "48 EB", "413 kB"."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    power = min(int(math.log10(max(count, 1)) // 3), len(units) - 1)
    value = count / 1000 ** power
    return f"{value:.2g} {units[power]}" if value < 10 else f"{value:.0f} {units[power]}"


def state_bytes(config: ExperimentConfig, spec: TaskSpec) -> tuple[int, int]:
    """(parameters, parameters + optimizer state), in bytes: the exact shapes the model's and
    optimizer's init would make, traced by `jax.eval_shape` (nothing is allocated)."""
    from jaxlstm.train.model import Model
    from jaxlstm.train.optim import make_optimizer, make_schedule

    model = Model(config.model, spec)
    tx = make_optimizer(config.optimizer, make_schedule(
        config.schedule, config.optimizer.learning_rate, config.training.steps))

    def init() -> tuple[Any, Any]:
        params = model.init(jax.random.PRNGKey(0))
        return params, tx.init(params)

    params, opt_state = jax.eval_shape(init)
    params_bytes = _tree_bytes(params)
    return params_bytes, params_bytes + _tree_bytes(opt_state)


def _tree_bytes(tree: Any) -> int:
    return sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
               for leaf in jax.tree.leaves(tree) if hasattr(leaf, "shape"))


def _stored_per_step(model: ModelConfig, steps: int, backend: str) -> float:
    """Floats the stack keeps for the backward pass per step and row (see the module doc):
    the families' (or block kinds') own `activation_floats` in the form the run uses."""
    from jaxlstm import blocks as block_kinds

    width, mode = model.hidden_size, default_mode(model, backend)
    options = {"num_heads": model.num_heads, "proj_size": model.proj_size}
    if model.blocks is not None:
        return block_kinds.activation_floats(model.blocks, width, steps, mode, **options)
    directions = 2 if model.bidirectional else 1
    total = 0.0
    for family in cell_families(model):
        form = mode if family.modes and isinstance(mode, str) else family.default_mode(backend)
        total += family.activation_floats(width, steps, form, **options)
    return directions * total


def _output_floats(spec: TaskSpec, steps: int) -> float:
    """Floats per row for the head: its outputs, their softmax and gradient, at every read-out
    step."""
    read_out = steps if spec.readout == "every" else 1
    return 3 * spec.output_size * read_out


def batch_bytes(config: ExperimentConfig, spec: TaskSpec, steps: int, row_bytes: int,
                rows: float, backend: str, *, train: bool = True) -> float:
    """Bytes of `rows` rows of a batch of `steps` steps: the arrays (`row_bytes` each), the
    outputs and, for training, the activations kept for the backward pass (for evaluation, one
    layer's outputs: the forward pass keeps nothing else)."""
    model = config.model
    if train:
        per_step = _stored_per_step(model, steps, backend)
    else:
        per_step = 2 * model.hidden_size * (2 if model.bidirectional else 1)
    floats = steps * per_step + _output_floats(spec, steps)
    return rows * (row_bytes + floats * FLOAT_BYTES)


def available_memory() -> tuple[int | None, str]:
    """(bytes one device can use, how to say it), or (None, "") when unknown. A GPU or TPU
    reports its `bytes_limit`; a CPU device has the host's available memory."""
    device = jax.local_devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]), f"each {device.device_kind} holds"
    host = _host_available()
    return host, "this machine has" if host is not None else ""


def _host_available() -> int | None:
    """MemAvailable (what can be allocated without swapping), or the cgroup's room when the
    process runs under a smaller memory limit; None when neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":  # the page cache (files read) counts as used but is reclaimed
            found.append(int(limit) - used + _cgroup_stat("inactive_file"))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def _cgroup_stat(key: str) -> int:
    """One value of the cgroup's memory.stat (bytes), 0 where it cannot be read."""
    try:
        with open("/sys/fs/cgroup/memory.stat") as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _one_row(task: Any, seed: int) -> tuple[int, int] | None:
    """(steps, bytes) of one training row of `task`, drawn as a batch of one; None when the
    task cannot draw one (a user's task may insist on larger batches)."""
    try:
        batch = task.train_batch(seed, 0, 1)
        return int(np.shape(batch["inputs"])[1]), sum(int(np.asarray(v).nbytes)
                                                        for v in batch.values())
    except Exception:  # noqa: BLE001 - the estimate is a courtesy: the parameters still count
        return None


def _eval_batch(task: Any, batch_size: int) -> tuple[int, int, int] | None:
    """(rows, steps, bytes per row) of the largest evaluation batch, when the task holds its
    validation split as a list (the built-in tasks: it is built already); None for a stream,
    which is not read here."""
    try:
        batches = held_out(task, batch_size, "valid")
    except Exception:  # noqa: BLE001 - as for `_one_row`
        return None
    if not isinstance(batches, list) or not batches:
        return None
    largest = max(batches, key=lambda b: sum(np.asarray(v).nbytes for v in b.values()))
    rows = len(largest["inputs"])
    return (rows, int(np.shape(largest["inputs"])[1]),
            sum(int(np.asarray(v).nbytes) for v in largest.values()) // max(rows, 1))


def refusal(config: ExperimentConfig, spec: TaskSpec, row: tuple[int, int] | None, *,
            available: int, where: str, eval_batch: tuple[int, int, int] | None = None,
            local_devices: int = 1, devices: int = 1, backend: str = "cpu") -> str:
    """Why the run cannot fit in `available` bytes, in one line naming the key; "" if it can.

    `row` is one training row's (steps, bytes) (None: count the state only); `eval_batch` the
    largest evaluation batch's (rows, steps, bytes per row) (None: not counted). `local_devices`
    share `available` (CPU devices share the host's memory: pass 1 for a device with its own);
    batches are split over `devices`, all processes' together.
    """
    model = config.model
    # Each layer has at least a bias of its width: a floor that refuses an absurd depth before
    # eval_shape would trace every layer.
    layers = len(model.blocks) if model.blocks else (
        model.num_layers * (2 if model.bidirectional else 1))
    floor = layers * model.hidden_size * FLOAT_BYTES
    if floor * local_devices > available:
        params, state, about = floor, floor, "at least"
    else:
        (params, state), about = state_bytes(config, spec), "about"
    if state * local_devices > available:
        key, value = max((("model.hidden_size", model.hidden_size),
                          ("model.num_layers", model.num_layers)), key=lambda kv: kv[1])
        copies = f", a copy on each of {local_devices} devices" if local_devices > 1 else ""
        return (f"{key}: {value} needs {about} {format_bytes(state * local_devices)} for the "
                f"parameters and optimizer state ({format_bytes(params)} of parameters"
                f"{copies}); {where} {format_bytes(available)}.")
    if row is None:
        return ""
    steps, row_bytes = row
    training = config.training
    share = local_devices / devices  # the part of each batch this memory holds
    train = batch_bytes(config, spec, steps, row_bytes,
                        training.batch_size / training.grad_accum * share, backend)
    evaluation = 0.0
    if eval_batch is not None:
        eval_rows, eval_steps, eval_row_bytes = eval_batch
        evaluation = batch_bytes(config, spec, eval_steps, eval_row_bytes, eval_rows * share,
                                 backend, train=False)
    batch = max(train, evaluation)
    if state * local_devices + batch <= available:
        return ""
    if train >= evaluation:
        what = (f"training.batch_size: {training.batch_size} sequences of {steps} steps need "
                f"about {format_bytes(batch)} for a batch and the activations its backward "
                "pass keeps")
        if training.grad_accum > 1:
            what += f" (micro-batches of {training.batch_size // training.grad_accum})"
        advice = "lower it or the sequence length, or raise training.grad_accum"
    else:
        what = (f"training.eval_batch_size: {training.eval_batch_size}: evaluation batches of "
                f"{eval_rows} sequences of {eval_steps} steps need about "
                f"{format_bytes(batch)}")
        advice = "lower it or the sequence length"
    return (f"{what}, plus {format_bytes(state * local_devices)} for the parameters and "
            f"optimizer state; {where} {format_bytes(available)} ({advice}).")


def check_fits(config: ExperimentConfig, task: Any) -> None:
    """ConfigError, in one line naming the key and the estimate, when the run cannot fit in
    this machine's memory (see the module doc). Call it after the task is built and before
    the train state is; on several processes every process calls it, and all refuse if one
    does (each host checks its own memory).
    """
    from jaxlstm.train import distributed

    available, where = available_memory()
    reason = ""
    if available is not None:
        on_cpu = jax.local_devices()[0].platform == "cpu"
        reason = refusal(config, task.spec, _one_row(task, config.training.seed),
                         available=available, where=where,
                         eval_batch=_eval_batch(task, config.training.eval_batch_size),
                         local_devices=jax.local_device_count() if on_cpu else 1,
                         devices=jax.device_count(), backend=jax.default_backend())
    if distributed.agree(1 if reason else 0) and not reason:
        reason = ("another process of this run refused the config: it does not fit that "
                  "host's memory (its own line says which key).")
    if reason:
        raise ConfigError(reason)


def task_too_big(config: ExperimentConfig, error: MemoryError) -> str:
    """The line for a task whose data did not fit while it was built (`make_task` raised
    MemoryError): it names the task's largest option, the likely cause, and NumPy's own
    estimate."""
    options = {key: value for key, value in config.task.options.items()
               if isinstance(value, int) and not isinstance(value, bool)}
    detail = " ".join(str(error).split()) or "out of memory"
    available = _host_available()
    has = f"; this machine has {format_bytes(available)}" if available is not None else ""
    if not options:
        return (f"task.name: {config.task.name}: building the task's data ran out of memory "
                f"({detail}){has}.")
    key = max(options, key=options.get)
    return (f"task.options.{key}: {options[key]}: building the {config.task.name} task's data "
            f"ran out of memory ({detail}){has}.")
