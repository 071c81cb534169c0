"""The experiment schema: typed dataclasses, filled from YAML with OmegaConf.

    cfg = load_config("configs/adding.yaml", ["model.hidden_size=128", "training.steps=2000"])

OmegaConf checks every key and type against these dataclasses, so a typo or a wrong type is
reported with its full key path; `load_config` turns any such problem into one `ConfigError`
line naming the file, the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException


@dataclasses.dataclass
class ModelConfig:
    """The LSTM and its read-out head."""

    api: str = "functional"  # "functional" (jaxlstm.lstm_stack) or "linen" (jaxlstm.flax)
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    cell: str = "lstm"  # "lstm", "peephole", "cifg", "layer_norm", "retained_readout"
    proj_size: int | None = None
    dropout: float = 0.0  # between layers
    recurrent_dropout: float = 0.0
    zoneout_h: float = 0.0
    zoneout_c: float = 0.0
    forget_bias: float = 1.0
    unroll: int | None = None
    remat_chunk: int | None = None


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
    steps: int = 1000
    batch_size: int = 32
    eval_every: int = 250
    eval_batch_size: int = 256
    seed: int = 0


@dataclasses.dataclass
class LoggingConfig:
    log_every: int = 50
    progress: bool = True  # a live progress bar (rich)
    tensorboard: bool = True  # when tensorboardX is installed
    plots: bool = True  # when matplotlib is installed


@dataclasses.dataclass
class CheckpointConfig:
    every: int = 500
    keep: int = 3


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
    name: str | None = None
    runs_root: str = "runs"
    run_dir: str | None = None
    resume: bool = False


class ConfigError(ValueError):
    """A config problem, as one line: the file, the key path and what was expected."""


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
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(from_file, type(schema)):
        raise ConfigError(f"{path}: the top level must be a mapping of sections.")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"{path}: overrides must be key=value, got {bad[0]!r}.")
    try:
        merged = OmegaConf.merge(schema, from_file)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: {_describe(err)}") from None
    try:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: override {_describe(err)}") from None
    try:
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: {_describe(err)}") from None
    assert isinstance(config, ExperimentConfig)
    if config.name is None:
        config.name = os.path.splitext(os.path.basename(path))[0]
    check_values(config, path)
    return config


def check_values(config: ExperimentConfig, path: str = "config") -> None:
    """Range checks OmegaConf's types cannot express, each naming its key."""

    def fail(key: str, expected: str, got: Any) -> None:
        raise ConfigError(f"{path}: {key}: expected {expected}, got {got!r}.")

    for key, value in (("model.hidden_size", config.model.hidden_size),
                       ("model.num_layers", config.model.num_layers),
                       ("training.steps", config.training.steps),
                       ("training.batch_size", config.training.batch_size),
                       ("training.eval_every", config.training.eval_every),
                       ("training.eval_batch_size", config.training.eval_batch_size),
                       ("logging.log_every", config.logging.log_every),
                       ("checkpointing.every", config.checkpointing.every),
                       ("checkpointing.keep", config.checkpointing.keep)):
        if value < 1:
            fail(key, "a positive int", value)
    if config.model.api not in ("functional", "linen"):
        fail("model.api", "one of functional, linen", config.model.api)
    for key in ("dropout", "recurrent_dropout", "zoneout_h", "zoneout_c"):
        value = getattr(config.model, key)
        if not 0.0 <= value < 1.0:
            fail(f"model.{key}", "a rate in [0, 1)", value)
    if config.optimizer.learning_rate <= 0:
        fail("optimizer.learning_rate", "a positive float", config.optimizer.learning_rate)
    if config.schedule.name not in ("constant", "cosine", "warmup_cosine"):
        fail("schedule.name", "one of constant, cosine, warmup_cosine", config.schedule.name)


def to_yaml(config: ExperimentConfig) -> str:
    """The resolved config as YAML: re-running from it reproduces the run."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))
