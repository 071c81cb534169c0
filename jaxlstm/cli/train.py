"""`jaxlstm train CONFIG [key=value ...] [--resume]`: one experiment, from a config to a run folder.

CONFIG is a shipped config's name (`jaxlstm configs`) or a YAML file. The run folder is
`runs/<name>/<time>/` (see `jaxlstm.train.run`); the exit code says how the run ended.
"""

from __future__ import annotations

import json
from typing import Any

from jaxlstm.cli import reference, shipped
from jaxlstm.cli.exits import DONE, INTERRUPTED, STOPPED, EarlyExit, UsageError, command
from jaxlstm.cli.parser import OneLineParser
from jaxlstm.train.config import ExperimentConfig, load_config

USAGE = "CONFIG [key=value ...] [--resume] [--allow-data-change]"
SUMMARY = "train an LSTM from a shipped config's name or a YAML file"

STATUS_EXIT = {"completed": DONE, "early_stopped": DONE, "non_finite": STOPPED,
               "write_failed": STOPPED, "interrupted": INTERRUPTED}

_ARGUMENTS = f"""\
usage: jaxlstm train {USAGE}

Trains an LSTM from a config and writes a run folder, runs/<name>/<time>/: the resolved
config, metrics, checkpoints, a summary and plots.

arguments (flags and overrides in any order):
  CONFIG       a shipped config's name (listed below) or a YAML file
  key=value    override any key below, e.g. model.hidden_size=128
  --resume     continue the newest run of this config from its last checkpoint (resume=true)
  --allow-data-change
               let --resume continue although a data file recorded in the run folder's
               data.json changed (allow_data_change=true); refused otherwise
  -h, --help   this text"""


def parse_args(argv: list[str]) -> tuple[str, list[str]]:
    """The CONFIG argument and the overrides (`--resume` becomes `resume=true`).

    Flags may come anywhere, before, between or after the overrides.

    Raises:
        UsageError: no CONFIG, or an unknown flag.
        EarlyExit: after printing the help for -h/--help.
    """
    parser = OneLineParser(prog="jaxlstm train", usage=f"jaxlstm train {USAGE}", add_help=False)
    parser.add_argument("config", nargs="?")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--allow-data-change", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    # Plain parse_args fails on `CONFIG --resume key=value`: the positionals are consumed
    # before the flag, and the later override is "unrecognized". The intermixed parse reads
    # every flag first, then fills the positionals in order.
    args = parser.parse_intermixed_args(argv)
    if args.help:
        print(f"{_ARGUMENTS}\n\n{reference.train_reference()}")
        raise EarlyExit(DONE)
    if args.config is None:
        raise UsageError("missing CONFIG, a shipped config's name or a YAML file (see "
                         "jaxlstm train --help).")
    return args.config, (args.overrides + (["resume=true"] if args.resume else [])
                         + (["allow_data_change=true"] if args.allow_data_change else []))


def _report(config: ExperimentConfig, result: Any) -> None:
    """Two lines on stdout: the validation metric (and the test split's, when the task has
    one) in words, then the summary's metrics as JSON."""
    summary = result.summary
    metric = summary["metric"]
    stopped = " (stopped early)" if result.status == "early_stopped" else ""
    test = summary.get("test")
    tested = ("" if test is None else f"; test {metric} {test[metric]:.4f} on the "
              f"{summary['test_on']} state (step {summary['test_step']})")
    print(f"{config.name}: {metric} {summary['final'][metric]:.4f} "
          f"(baseline {summary['baseline'][metric]:.4f}) after {result.step} steps{stopped}"
          f"{tested}, {summary['wall_time_s']:.0f} s; run folder {result.run_dir}")
    print(json.dumps({key: summary[key] for key in ("final", "baseline", "best", "test")
                      if key in summary}, sort_keys=True))


@command("jaxlstm train")
def main(argv: list[str]) -> int:
    """Runs `jaxlstm train` on `argv` (without the program and command names).

    Returns:
        0 completed or stopped early (`training.patience`), 1 stopped on a non-finite loss
        or gradient, 2 bad config or input (one line on stderr), 130 interrupted (training
        saves a checkpoint first).
    """
    config_arg, overrides = parse_args(argv)
    config = load_config(shipped.resolve(config_arg), overrides)
    # flax, optax and orbax take seconds to import: only once the config is known to be good.
    from jaxlstm.train.run import run_experiment
    from jaxlstm.train.run_folder import FINISHED

    result = run_experiment(config)
    if result.status in FINISHED:
        _report(config, result)
    return STATUS_EXIT[result.status]
