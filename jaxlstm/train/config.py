"""The experiment schema: typed dataclasses, filled from YAML with OmegaConf.

    cfg = load_config("configs/adding.yaml", ["model.hidden_size=128", "training.steps=2000"])

OmegaConf checks every key and type against these dataclasses, so a typo or a wrong type is
reported with its full key path; `load_config` turns any such problem into one `ConfigError`
line naming the file, the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException


@dataclasses.dataclass
class ModelConfig:
    """The recurrent stack and its read-out head. `cell` is any registered family
    (`jaxlstm.family.names()`) or LSTM variant, or one per layer separated by commas
    ("lstm,peephole"); a key that is a family option (proj_size, forget_bias, num_heads,
    recurrent_dropout, zoneout_h, zoneout_c, unroll, remat_chunk) set away from its default is
    refused unless some layer's family declares it, as is a `mode` no layer's family has (a
    family with several forms runs in the form `mode` picks). Every API runs every family:
    linen and nnx through the LSTM's own modules for a stack of LSTM layers, through
    `jaxlstm.flax.linen.Recurrent` / `.nnx.Recurrent` otherwise."""

    api: str = "functional"  # "functional" (jaxlstm.lstm_stack), "linen" or "nnx" (jaxlstm.flax)
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    # A registered family or LSTM variant (jaxlstm.family.resolve), e.g. "lstm", "peephole";
    # or one per layer, comma-separated: "lstm,peephole" (jaxlstm.family.names() lists them)
    cell: str = "lstm"
    num_heads: int = 4  # heads of a multi-head cell or block; divides hidden_size
    # Residual blocks in place of the cell stack, hidden_size being the residual width
    # (functional API only): one letter per block, any mix of the registered kinds
    # (jaxlstm.blocks.letters(), e.g. "msm" as the xLSTM paper stacks them, "lll" as the
    # minRNN paper does).
    blocks: str | None = None
    # The form a cell (or block) whose family has several runs in (jaxlstm.family's `modes`).
    # The forms compute the same function; only speed and rounding differ.
    mode: str | None = None
    proj_size: int | None = None
    dropout: float = 0.0  # between layers
    recurrent_dropout: float = 0.0
    zoneout_h: float = 0.0
    zoneout_c: float = 0.0
    forget_bias: float = 1.0  # the forget gate's initial bias
    unroll: int | None = None  # steps per scan iteration; null chooses by problem size
    remat_chunk: int | None = None  # keep every K-th state for the backward pass; null: all
    # The computation's dtype: "float32", or "bfloat16" (mixed precision: the stack and head
    # compute in bfloat16 while the params, their gradients and the optimizer state stay
    # float32, as accelerator users expect; the loss is computed in float32).
    dtype: str = "float32"


@dataclasses.dataclass
class TaskConfig:
    """Which task, and its own options (see `jaxlstm.tasks`)."""

    name: str = MISSING
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class OptimizerConfig:
    """Any optax optimizer by name, with keyword arguments, clipping and weight decay."""

    name: str = "adam"
    learning_rate: float = 1e-3
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    clip_norm: float | None = 1.0  # clip by global norm; null for none
    weight_decay: float = 0.0  # decoupled (AdamW-style), on matrices only


@dataclasses.dataclass
class ScheduleConfig:
    """Learning-rate schedule: "constant", "cosine" or "warmup_cosine"."""

    name: str = "constant"
    warmup_steps: int = 0
    final_fraction: float = 0.0  # cosine's end value, as a fraction of the peak


@dataclasses.dataclass
class TrainingConfig:
    """How long, on how much data at a time, and from which seed."""

    steps: int = 1000  # total optimizer steps (a resume may raise it)
    batch_size: int = 32
    eval_every: int = 250  # held-out metrics every N steps and at the end
    eval_batch_size: int = 256
    seed: int = 0  # in [0, 2**32): params, batches and dropout all follow from it
    # Accumulate gradients over K micro-batches of batch_size / K rows each (the same update
    # as the whole batch, to float tolerance, in 1/K of the activation memory).
    grad_accum: int = 1
    # Stop after this many evaluations without improvement of the task's metric on the
    # validation split (status "early_stopped", exit code 0); null: never.
    patience: int | None = None
    # Training batches computed ahead in background threads (jaxlstm.train.loader), so that
    # reading files overlaps training; 0 computes each in the training thread.
    prefetch: int = 2
    loader_threads: int = 1  # threads computing them


@dataclasses.dataclass
class LoggingConfig:
    """What the run reports while it trains."""

    log_every: int = 50  # train metrics (and a progress line off a terminal) every N steps
    progress: bool = True  # a live bar on a terminal, one line per log_every steps elsewhere
    tensorboard: bool = True  # when tensorboardX is installed
    plots: bool = True  # when matplotlib is installed


@dataclasses.dataclass
class CheckpointConfig:
    """Orbax checkpoints in the run folder, for resuming."""

    every: int = 500  # and at the end, and on Ctrl-C or SIGTERM
    keep: int = 3  # the newest K are kept
    # Also keep the checkpoint with the best validation metric (in best_checkpoint/), on which
    # the test split is evaluated at the end; false: the test split is evaluated on the final
    # state.
    keep_best: bool = True


@dataclasses.dataclass
class DistributedConfig:
    """Several processes (hosts) training one model: `jax.distributed.initialize`'s arguments.

    Nothing to set on one machine, nor under SLURM (srun) or Open MPI, which JAX detects; on a
    TPU pod slice set `enabled: true`; to start processes by hand, set the address, the count
    and each process's own `process_id`, and give every process the same config otherwise
    (the processes compare theirs before anything else, and refuse to differ)."""

    enabled: bool | None = None  # null: if a value below is set or srun/mpirun ran us; true: always (TPU pods)
    coordinator_address: str | None = None  # "host:port" of process 0: 10.0.0.1:1234, '[::1]:1234'
    num_processes: int | None = None  # processes in the job; null: detected
    process_id: int | None = None  # this process, in [0, num_processes); null: detected
    local_device_ids: list[int] | None = None  # this process's devices; null: all it sees
    # How long the processes wait for each other to join (and to compare their configs);
    # then each process that did start says so in one line and exits with code 2.
    initialization_timeout_s: int = 300
    # JAX declares a process dead after this long without its heartbeat, and aborts the others
    # (SIGABRT, a C++ stack). The runner notices first, a process that dies at once and one
    # silent for 0.6 of this, and ends the others in one line, exit code 1, after process 0
    # marks summary.json "failed" (jaxlstm.train.distributed).
    heartbeat_timeout_s: int = 100
    shutdown_timeout_s: int = 300  # how long process 0 waits for the others at the end


def address_problem(address: str) -> str | None:
    """What is wrong with a coordinator address (None when it is "host:port"): JAX would
    otherwise fail on it with an IndexError or a connection that never comes."""
    host, colon, port = address.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]") and len(host) > 2
    if (colon and port.isdigit() and 0 < int(port) < 65536 and host and not any(
            c.isspace() for c in address) and (bracketed or "[" not in host and ":" not in host)):
        return None
    return (f"expected host:port, e.g. 10.0.0.1:1234 or [::1]:1234 (a port in 1-65535), got "
            f"{address!r}.")


@dataclasses.dataclass
class ExperimentConfig:
    """One experiment. `name` defaults to the config file's stem; runs go to
    `<runs_root>/<name>/<timestamp>/` unless `run_dir` is given."""

    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
    checkpointing: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    name: str | None = None
    runs_root: str = "runs"
    run_dir: str | None = None  # an explicit run folder instead of <runs_root>/<name>/<time>
    resume: bool = False  # continue the newest run (or run_dir) from its newest checkpoint
    # Let a resume continue although a data file recorded in the run folder's data.json
    # changed (size or content hash); without it such a resume is refused.
    allow_data_change: bool = False


class ConfigError(ValueError):
    """A config problem, as one line: the file, the key path and what was expected."""


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split("\n")[0].split())


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or ""
    message = str(err).split("\n")[0].strip()
    return f"{key}: {message}" if key else message


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()
                ) -> ExperimentConfig:
    """Reads a YAML config, applies `key=value` overrides, validates against the schema.

    Args:
        path: the YAML file.
        overrides: dotted `key=value` strings, e.g. `model.hidden_size=128`.

    Returns:
        The typed `ExperimentConfig` (with `name` set to the file's stem if it was not given).

    Raises:
        ConfigError: a missing file, unknown key, wrong type or missing value, in one line.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such config file.")
    schema = OmegaConf.structured(ExperimentConfig)
    try:
        from_file = OmegaConf.load(path)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: "
                          f"{err.object[err.start:err.start + 1]!r}).") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_first_line(err)}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read: {err.strerror}.") from None
    if not isinstance(from_file, type(schema)):
        raise ConfigError(f"{path}: the top level must be a mapping of sections.")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"{path}: overrides must be key=value, got {bad[0]!r}.")
    try:
        merged = OmegaConf.merge(schema, from_file)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: {_describe(err)}") from None
    for override in overrides:
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([override]))
        except OmegaConfBaseException as err:
            raise ConfigError(f"{path}: override {_describe(err)}") from None
        except yaml.YAMLError as err:  # the value after '=' is parsed as YAML
            raise ConfigError(f"{path}: override {override!r}: not valid YAML: "
                              f"{_first_line(err)}") from None
    try:
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: {_describe(err)}") from None
    assert isinstance(config, ExperimentConfig)
    if config.name is None:
        config.name = os.path.splitext(os.path.basename(path))[0]
    check_values(config, path)
    return config


def _with_forms(model: ModelConfig, path: str = "config") -> list[Any]:
    """What `model.mode` chooses the form of: the block kinds (`jaxlstm.blocks.BlockKind`) of
    `model.blocks`, or the layer families (`jaxlstm.family.Family`) of `model.cell`, that
    have several forms; each has `modes`, and a `family` or is one."""
    from jaxlstm import blocks as block_kinds

    if model.blocks is not None:
        return [k for k in block_kinds.kinds(model.blocks) if k.modes]
    return [f for f in cell_families(model, path) if f.modes]


def default_mode(model: ModelConfig, backend: str) -> str | dict[str, str] | None:
    """The form `model` runs in on `backend` ("cpu", "gpu", "tpu", as `jax.default_backend()`
    says): its `mode` when set, else each family's `default_mode(backend)`, the one rule the
    families declare. One form when every block or layer with forms defaults to the same;
    for blocks of different kinds, {letter: form}; for layers of different families, None
    (each runs its own sequence function's default). None for cells with one form."""
    from jaxlstm import family as families

    if model.mode is not None:
        return model.mode
    owners = _with_forms(model)
    if not owners:
        return None
    if model.blocks is not None:
        forms = {k.letter: families.get(k.family).default_mode(backend) for k in owners}
    else:
        forms = {f.name: f.default_mode(backend) for f in owners}
    if len(set(forms.values())) == 1:
        return next(iter(forms.values()))
    return forms if model.blocks is not None else None


def default_mode_rule() -> str:
    """What `model.mode: null` runs, in words, for --help: generated from the families'
    declarations (`modes`, `backend_modes`)."""
    from jaxlstm import blocks as block_kinds
    from jaxlstm import family as families

    clauses = []
    for family in map(families.get, families.names()):
        if not family.modes:
            continue
        letters = [letter for letter in block_kinds.letters()
                   if block_kinds.kind(letter).family == family.name]
        forms = [f"{mode} on {backend}" for backend, mode in family.backend_modes.items()]
        forms.append(f"{family.modes[0]} elsewhere" if forms else family.modes[0])
        owners = family.name + (f" (and '{', '.join(letters)}' blocks)" if letters else "")
        clauses.append(f"{owners}: {', '.join(forms)}")
    return "null: " + "; ".join(clauses) + "."


DTYPES = ("float32", "bfloat16")
"""`model.dtype`: the computation's dtype (params and optimizer state stay float32)."""

SEED_LIMIT = 2**32  # seeds feed jax.random.PRNGKey and NumPy's generators


def check_values(config: ExperimentConfig, path: str = "config") -> None:
    """Range checks OmegaConf's types cannot express, each naming its key.

    Everything a run would otherwise reject later (or, worse, accept: a negative `clip_norm`
    flips the gradient's sign in optax) is caught here, before any folder is created.
    """

    def fail(key: str, expected: str, got: Any) -> None:
        raise ConfigError(f"{path}: {key}: expected {expected}, got {got!r}.")

    model, optimizer, schedule = config.model, config.optimizer, config.schedule
    for key, value in (("model.hidden_size", model.hidden_size),
                       ("model.num_layers", model.num_layers),
                       ("training.steps", config.training.steps),
                       ("training.batch_size", config.training.batch_size),
                       ("training.eval_every", config.training.eval_every),
                       ("training.eval_batch_size", config.training.eval_batch_size),
                       ("logging.log_every", config.logging.log_every),
                       ("checkpointing.every", config.checkpointing.every),
                       ("checkpointing.keep", config.checkpointing.keep)):
        if value < 1:
            fail(key, "a positive int", value)
    for key in ("proj_size", "unroll", "remat_chunk"):
        value = getattr(model, key)
        if value is not None and value < 1:
            fail(f"model.{key}", "a positive int or null", value)
    if model.api not in ("functional", "linen", "nnx"):
        fail("model.api", "one of functional, linen, nnx", model.api)
    _check_cell_options(model, path)
    for key in ("dropout", "recurrent_dropout", "zoneout_h", "zoneout_c"):
        value = getattr(model, key)
        if not 0.0 <= value < 1.0:
            fail(f"model.{key}", "a rate in [0, 1)", value)
    if not math.isfinite(model.forget_bias):
        fail("model.forget_bias", "a finite float", model.forget_bias)
    if model.dtype not in DTYPES:
        fail("model.dtype", f"one of {', '.join(DTYPES)}", model.dtype)
    training = config.training
    if training.grad_accum < 1:
        fail("training.grad_accum", "a positive int", training.grad_accum)
    if training.batch_size % training.grad_accum:
        fail("training.grad_accum", f"a divisor of training.batch_size "
             f"({training.batch_size})", training.grad_accum)
    if training.patience is not None and training.patience < 1:
        fail("training.patience", "a positive int or null", training.patience)
    if training.prefetch < 0:
        fail("training.prefetch", "an int >= 0", training.prefetch)
    if training.loader_threads < 1:
        fail("training.loader_threads", "a positive int", training.loader_threads)
    dist = config.distributed
    for key in ("initialization_timeout_s", "heartbeat_timeout_s", "shutdown_timeout_s"):
        if getattr(dist, key) < 1:
            fail(f"distributed.{key}", "a positive int", getattr(dist, key))
    if dist.coordinator_address is not None and address_problem(dist.coordinator_address):
        raise ConfigError(f"{path}: distributed.coordinator_address: "
                          f"{address_problem(dist.coordinator_address)}")
    if dist.num_processes is not None and dist.num_processes < 1:
        fail("distributed.num_processes", "a positive int or null", dist.num_processes)
    if dist.process_id is not None and not (
            0 <= dist.process_id < (dist.num_processes or SEED_LIMIT)):
        fail("distributed.process_id", "an int in [0, num_processes) or null", dist.process_id)
    if dist.local_device_ids is not None and (
            not dist.local_device_ids or min(dist.local_device_ids) < 0):
        fail("distributed.local_device_ids", "a non-empty list of ints >= 0 or null",
             dist.local_device_ids)
    if not 0 <= config.training.seed < SEED_LIMIT:
        fail("training.seed", "an int in [0, 2**32)", config.training.seed)
    if not (math.isfinite(optimizer.learning_rate) and optimizer.learning_rate > 0):
        fail("optimizer.learning_rate", "a positive finite float", optimizer.learning_rate)
    if optimizer.clip_norm is not None and not (math.isfinite(optimizer.clip_norm)
                                                and optimizer.clip_norm > 0):
        fail("optimizer.clip_norm", "a positive finite float or null", optimizer.clip_norm)
    if not (math.isfinite(optimizer.weight_decay) and optimizer.weight_decay >= 0):
        fail("optimizer.weight_decay", "a finite float >= 0", optimizer.weight_decay)
    if schedule.name not in ("constant", "cosine", "warmup_cosine"):
        fail("schedule.name", "one of constant, cosine, warmup_cosine", schedule.name)
    if schedule.warmup_steps < 0:
        fail("schedule.warmup_steps", "an int >= 0", schedule.warmup_steps)
    if not 0.0 <= schedule.final_fraction <= 1.0:
        fail("schedule.final_fraction", "a fraction in [0, 1]", schedule.final_fraction)
    try:
        from jaxlstm.train.optim import check_optimizer

        check_optimizer(optimizer)
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None


def _refuse_changed(model: ModelConfig, keys: Any, where: str, path: str) -> None:
    """ConfigError naming the first of `keys` set away from its default: it does not apply
    `where` (e.g. "with model.blocks")."""
    defaults = ModelConfig()
    for key in keys:
        if getattr(model, key) != getattr(defaults, key):
            raise ConfigError(f"{path}: model.{key}: does not apply {where} (got "
                              f"{getattr(model, key)!r}); leave it at its default, "
                              f"{getattr(defaults, key)!r}.")


def _check_blocks(model: ModelConfig, path: str) -> None:
    """`model.blocks` replaces the cell stack: letters of registered block kinds, and the
    stack's own options at their defaults (num_heads too, unless a kind of the stack takes
    it)."""
    from jaxlstm import blocks as block_kinds

    try:
        chosen = block_kinds.kinds(model.blocks)
    except ValueError:
        raise ConfigError(f"{path}: model.blocks: expected a non-empty string of "
                          f"{block_kinds.describe()} blocks, e.g. 'msm', got "
                          f"{model.blocks!r}.") from None
    if model.api != "functional":
        raise ConfigError(f"{path}: model.api: model.blocks runs on the functional API only, "
                          f"got {model.api!r}.")
    keys = ["cell", "num_layers", "bidirectional", "proj_size", "dropout", "recurrent_dropout",
            "zoneout_h", "zoneout_c", "forget_bias", "unroll", "remat_chunk"]
    if not any("num_heads" in k.init_options for k in chosen):
        keys.append("num_heads")
    elif model.hidden_size % model.num_heads:
        raise ConfigError(f"{path}: model.num_heads: expected a divisor of model.hidden_size "
                          f"({model.hidden_size}), got {model.num_heads!r}.")
    _refuse_changed(model, keys, "with model.blocks", path)


def block_options(model: ModelConfig) -> dict[str, Any]:
    """The init options of `model.blocks`' stack from the config: num_heads, for stacks with
    a kind that takes it."""
    from jaxlstm import blocks as block_kinds

    chosen = block_kinds.kinds(model.blocks)
    return ({"num_heads": model.num_heads}
            if any("num_heads" in k.init_options for k in chosen) else {})


def _check_mode(model: ModelConfig, path: str) -> None:
    """`model.mode` names a form of every cell (or block) that has forms (`model.blocks`
    already checked)."""
    if model.mode is None:
        return
    from jaxlstm import blocks as block_kinds
    from jaxlstm import family as families

    owners = _with_forms(model, path)
    if not owners:
        names = [f.name for f in map(families.get, families.names()) if f.modes]
        kinds = [k for k in block_kinds.letters() if block_kinds.kind(k).modes]
        what = (f"blocks {model.blocks!r}" if model.blocks is not None
                else f"cell {model.cell!r}")
        raise ConfigError(f"{path}: model.mode: applies to cells {families.join(names)} (and "
                          f"blocks {', '.join(kinds)}), not to {what}; leave it at its "
                          "default, None.")
    # A mode must be a form of every layer (block) that has forms.
    owner = next((o for o in owners if model.mode not in o.modes), owners[0])
    what = (f"{owner.label} blocks" if model.blocks is not None else f"cell {owner.name!r}")
    if model.mode not in owner.modes:
        raise ConfigError(f"{path}: model.mode: expected one of {', '.join(owner.modes)} for "
                          f"{what}, got {model.mode!r}.")


_FAMILY_KEYS = {"proj_size": "init", "forget_bias": "init", "num_heads": "init",
                "recurrent_dropout": "apply", "zoneout_h": "apply", "zoneout_c": "apply",
                "unroll": "apply", "remat_chunk": "apply"}
"""The model keys that are options of a recurrent family, and which of the family's
declarations (`init_options` or `apply_options`, `jaxlstm.family`) names them."""


def layer_cells(model: ModelConfig) -> tuple[str, ...]:
    """The cell of each layer: `model.cell` is one name for every layer, or one per layer
    separated by commas ("lstm,peephole": a peephole layer over an LSTM layer)."""
    cells = tuple(name.strip() for name in model.cell.split(","))
    return cells if len(cells) > 1 else cells * model.num_layers


def cell_families(model: ModelConfig, path: str = "config") -> list[Any]:
    """The family (`jaxlstm.family.Family`) of each layer `model.cell` names; a ConfigError
    naming the key otherwise."""
    from jaxlstm import family as families

    cells = layer_cells(model)
    if len(cells) != model.num_layers:
        raise ConfigError(f"{path}: model.cell: expected one name, or one per layer "
                          f"(model.num_layers = {model.num_layers}), got {len(cells)}: "
                          f"{model.cell!r}.")
    known = list(dict.fromkeys(name for family in map(families.get, families.names())
                               for name in (family.name, *family.cells)))
    for cell in cells:
        if cell not in known:
            raise ConfigError(f"{path}: model.cell: expected one of {', '.join(known)} (or one "
                              f"per layer, comma-separated), got {cell!r}.")
    return [families.resolve(cell)[0] for cell in cells]


def _check_cell_options(model: ModelConfig, path: str) -> None:
    """Refuses, naming the key, each model option that no layer's family declares (generated
    from the families' declarations), a mode none of them has, and a width the heads do not
    divide."""
    from jaxlstm import family as families

    if model.num_heads < 1:
        raise ConfigError(f"{path}: model.num_heads: expected a positive int, got "
                          f"{model.num_heads!r}.")
    if model.blocks is not None:
        _check_blocks(model, path)
    _check_mode(model, path)
    if model.blocks is not None:
        return
    layer_families = cell_families(model, path)
    defaults = ModelConfig()
    for key, kind in _FAMILY_KEYS.items():
        value = getattr(model, key)
        declared = [f for f in layer_families
                    if key in (f.init_options if kind == "init" else f.apply_options)]
        if value != getattr(defaults, key) and not declared:
            takers = families.takers(key, kind)
            raise ConfigError(
                f"{path}: model.{key}: does not apply to cell {model.cell!r} (got {value!r}; "
                f"it applies to {families.join(takers)} layers); leave it at its default, "
                f"{getattr(defaults, key)!r}.")
        if key == "num_heads" and declared and model.hidden_size % model.num_heads:
            raise ConfigError(f"{path}: model.num_heads: expected a divisor of "
                              f"model.hidden_size ({model.hidden_size}), got "
                              f"{model.num_heads!r}.")


def flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping (a config as a dict) as {dotted key: value}; an empty mapping stays
    one value (`{}`), so that `task.options: {}` is a key like any other."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def to_yaml(config: ExperimentConfig) -> str:
    """The resolved config as YAML: re-running from it reproduces the run."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))
