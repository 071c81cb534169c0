"""Training: config schema, optax loop, orbax checkpoints, metrics logs and run folders.

Sits above the core and `jaxlstm.flax`; `import jaxlstm` does not load it (it imports flax,
optax, orbax and OmegaConf).
"""

from jaxlstm.train.config import ConfigError, ExperimentConfig, load_config
from jaxlstm.train.step import TrainState, eval_step, train_step

__all__ = ["ConfigError", "ExperimentConfig", "TrainState", "eval_step", "load_config",
           "train_step"]
