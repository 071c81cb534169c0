"""`jaxlstm train CONFIG [key=value ...] [--resume]`: one experiment, from a config to a run folder.

CONFIG is a shipped config's name (`jaxlstm configs`) or a YAML file. The run folder is
`runs/<name>/<time>/` (see `jaxlstm.train.run`); the exit code says how the run ended.
"""

from __future__ import annotations

import json
import os
from typing import Any

from jaxlstm.cli import exits, reference, shipped
from jaxlstm.cli.exits import DONE, INTERRUPTED, STOPPED, EarlyExit, UsageError, command
from jaxlstm.cli.parser import OneLineParser
from jaxlstm.train.config import ExperimentConfig, load_config
from jaxlstm.train.interrupts import RunSignals
from jaxlstm.train.runs_index import NO_OVERRIDES, describe_overrides

USAGE = "CONFIG [key=value ...] [--resume] [--allow-data-change]"
SUMMARY = "train an LSTM from a shipped config's name or a YAML file"

# Overrides that say how to run, not what: not part of a run's recorded origin.
RUN_FLAGS = ("resume", "allow_data_change", "run_dir", "runs_root")

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


def _report(config: ExperimentConfig, result: Any, overrides: str) -> None:
    """Two lines on stdout: the validation metric (and the test split's, when the task has
    one) in words, after the config's name and `overrides` (how the config differs from its
    file), then the summary's metrics as JSON."""
    summary = result.summary
    metric = summary["metric"]
    stopped = " (stopped early)" if result.status == "early_stopped" else ""
    test = summary.get("test")
    tested = ("" if test is None else f"; test {metric} {test[metric]:.4f} on the "
              f"{summary['test_on']} state (step {summary['test_step']})")
    label = config.name + ("" if overrides == NO_OVERRIDES else f" ({overrides})")
    print(f"{label}: {metric} {summary['final'][metric]:.4f} "
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
    # From here to the summary's last byte, SIGINT and SIGTERM end the run in one of two
    # states: nothing written, or a folder saying "interrupted" (see jaxlstm.train.interrupts).
    with RunSignals(ignore_once_over=exits.owns_process()) as signals:
        path = shipped.resolve(config_arg)
        config = load_config(path, overrides)
        # flax, optax and orbax take seconds to import: only once the config is good.
        from jaxlstm.train.run import run_experiment
        from jaxlstm.train.run_folder import FINISHED

        source = config_arg if path != config_arg else os.path.abspath(path)
        given = [o for o in overrides if o.split("=", 1)[0] not in RUN_FLAGS]
        # How the config differs from its file (tells two runs of one config apart), read
        # now: the file may change while the run trains.
        overrides = describe_overrides(config, path)
        result = run_experiment(config, signals=signals,
                                origin={"config_source": source, "overrides": given})
        if result.status in FINISHED and "final" in result.summary:
            _report(config, result, overrides)
        return STATUS_EXIT[result.status]
