"""Generate text from a trained text-task run's latest checkpoint:

    python -m experiments.sample runs/text/<time> [--prompt "The "] [--length 400]
                                 [--temperature 0.8] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

from jaxlstm.train.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run folder of a text-task config")
    parser.add_argument("--prompt", default="The ")
    parser.add_argument("--length", type=int, default=400)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        config = load_config(os.path.join(args.run_dir, "config.yaml"))
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    from jaxlstm.tasks import make_task
    from jaxlstm.train.checkpoint import Checkpoints
    from jaxlstm.train.model import Model
    from jaxlstm.train.optim import make_optimizer, make_schedule
    from jaxlstm.train.sample import sample
    from jaxlstm.train.step import TrainState

    task = make_task(config.task.name, **config.task.options)
    if not hasattr(task, "decode"):
        print(f"error: task {config.task.name!r} has no text to sample.", file=sys.stderr)
        return 2
    schedule = make_schedule(config.schedule, config.optimizer.learning_rate, 1)
    state = TrainState.create(model=Model(config.model, task.spec),
                              tx=make_optimizer(config.optimizer, schedule), schedule=schedule,
                              task_metrics=task.metrics, seed=config.training.seed)
    checkpoints = Checkpoints(os.path.join(args.run_dir, "checkpoints"), 1)
    state = checkpoints.restore(state)
    ids = sample(state.params, task.encode(args.prompt), args.length, task.spec.input_size,
                 key=jax.random.PRNGKey(args.seed), temperature=args.temperature)
    print(args.prompt + task.decode(ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
