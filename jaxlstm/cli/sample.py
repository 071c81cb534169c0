"""`jaxlstm sample RUN_DIR`: text generated from a text run's latest checkpoint.

Everything that can be checked without jax is checked first (the options, the run folder, its
config, the task, the prompt), each failure one line with exit code 2; the run folder is only
read, never written.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from jaxlstm.cli.exits import DONE, UsageError, command
from jaxlstm.cli.parser import OneLineParser
from jaxlstm.train.config import SEED_LIMIT, ConfigError, ExperimentConfig, load_config

USAGE = "RUN_DIR [--prompt TEXT] [--length N] [--temperature T] [--seed S]"
SUMMARY = "generate text from a text run's latest checkpoint"

MAX_LENGTH = 1_000_000  # about a minute of one-character steps; more is almost surely a typo


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog="jaxlstm sample", usage=f"jaxlstm sample {USAGE}",
        description="Prints the prompt followed by the generated text.",
        epilog="Exit codes: 0 done, 2 bad input (one line on stderr), 130 Ctrl-C.")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a run folder of a text-task config, e.g. runs/text/<time>")
    parser.add_argument("--prompt", metavar="TEXT", default="The ",
                        help="text to continue: at least one character, all in the task's "
                             "vocabulary (default %(default)r)")
    parser.add_argument("--length", metavar="N", type=int, default=400,
                        help=f"characters to generate, 0 to {MAX_LENGTH:,}; 0 prints the prompt "
                             "(default %(default)s)")
    parser.add_argument("--temperature", metavar="T", type=float, default=0.8,
                        help="softmax temperature, finite and > 0; lower is more conservative "
                             "(default %(default)s)")
    parser.add_argument("--seed", metavar="S", type=int, default=0,
                        help=f"sampling seed, 0 to {SEED_LIMIT - 1} (default %(default)s)")
    return parser


def _check_options(args: argparse.Namespace) -> None:
    """Raises UsageError for an option out of its range (see `jaxlstm sample --help`)."""
    from jaxlstm.train.sample import check_sampling

    try:
        check_sampling(args.length, args.temperature)
    except ValueError as err:
        raise UsageError(f"--{err}") from None
    if args.length > MAX_LENGTH:
        raise UsageError(f"--length must be at most {MAX_LENGTH:,}, got {args.length}.")
    if not 0 <= args.seed < SEED_LIMIT:  # the same range as training.seed
        raise UsageError(f"--seed must be in [0, {SEED_LIMIT - 1}], got {args.seed}.")
    if not args.prompt:
        raise UsageError("--prompt must have at least one character to start from.")


def _run_config(run_dir: str) -> ExperimentConfig:
    """The config a run folder was trained with (its `config.yaml`)."""
    if not os.path.isdir(run_dir):
        raise UsageError(f"{run_dir}: no such run folder.")
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        raise UsageError(f"{run_dir}: not a run folder (it has no config.yaml).")
    config = load_config(path)
    if config.model.bidirectional:
        raise UsageError(f"{run_dir}: the model is bidirectional; sampling needs a "
                         "unidirectional one.")
    return config


def _text_task(config: ExperimentConfig, run_dir: str) -> Any:
    """The run's task, which must be one with text to sample (it can `decode`)."""
    from jaxlstm.tasks import TASKS

    if not hasattr(TASKS.get(config.task.name), "decode"):
        text_tasks = [name for name, task in TASKS.items() if hasattr(task, "decode")]
        raise UsageError(f"{run_dir}: task {config.task.name!r} has no text to sample; "
                         f"sampling needs a run of a text task ({', '.join(text_tasks)}).")
    from jaxlstm.train.sample import run_task

    try:
        return run_task(config, run_dir)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{os.path.join(run_dir, 'config.yaml')}: {err}") from None


def _check_prompt(prompt: str, task: Any) -> None:
    """Raises UsageError naming the prompt's characters the task cannot encode."""
    outside = [c for c in dict.fromkeys(prompt) if task.decode(task.encode(c)) != c]
    if outside:
        raise UsageError(f"--prompt has characters outside the {task.spec.name} task's "
                         f"vocabulary: {', '.join(map(repr, outside))}.")


@command("jaxlstm sample")
def main(argv: list[str]) -> int:
    """Runs `jaxlstm sample` on `argv`; returns 0, or 2 after one line for bad input."""
    args = _parser().parse_args(argv)
    _check_options(args)
    config = _run_config(args.run_dir)
    task = _text_task(config, args.run_dir)
    _check_prompt(args.prompt, task)

    import jax

    from jaxlstm.train.model import Model
    from jaxlstm.train.sample import restore_params, sample

    try:
        params = restore_params(args.run_dir, config, task)
    except (FileNotFoundError, ValueError) as err:  # no checkpoint, or a damaged one
        raise UsageError(str(err)) from None
    ids = sample(params, task.encode(args.prompt), args.length, task.spec.input_size,
                 key=jax.random.PRNGKey(args.seed), temperature=args.temperature,
                 model=Model(config.model, task.spec))
    print(args.prompt + task.decode(ids))
    return DONE
