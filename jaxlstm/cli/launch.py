"""`jaxlstm launch`: one config, or a sweep of overrides, as submitit jobs on SLURM or here.

    jaxlstm launch CONFIG [key=value[,value...] ...] [--executor slurm|local] [flags]
    jaxlstm launch --resume SWEEP_DIR|RUN_DIR [flags]

The command parses its flags into a `jaxlstm.launch.launcher.Request` and launches it; the
launcher checks everything before it submits anything (a problem is one line, exit code 2).
The local executor's jobs are this command's children, so it waits for them; on SLURM it
submits and returns (or waits, with --wait), and the sweep's table is written by the jobs
themselves, see `jaxlstm.launch.launcher`. `_ARGUMENTS` is the user's account of all this.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from jaxlstm.cli import reference, shipped
from jaxlstm.cli.exits import DONE, STOPPED, EarlyExit, UsageError, command
from jaxlstm.cli.parser import OneLineParser
from jaxlstm.launch import executors
from jaxlstm.launch.executors import ExecutorError, Resources
from jaxlstm.launch.grid import GridError
from jaxlstm.launch.launcher import LaunchError, Request, launch

USAGE = "CONFIG [key=value[,value...] ...] [--executor slurm|local] [--resume DIR] ..."
SUMMARY = "run a config, or a sweep of overrides, as submitit jobs on SLURM or on this machine"


_ARGUMENTS = f"""\
usage: jaxlstm launch CONFIG [key=value[,value...] ...] [--executor slurm|local] [--nodes N]
                      [--gpus-per-node K] [--time MIN] [--max-parallel N] [--wait] [flags]
       jaxlstm launch --resume SWEEP_DIR|RUN_DIR [flags]

Runs experiments as submitit jobs, on a SLURM cluster or on this machine: a config as one job,
or a sweep, one job per point of a grid of overrides. Everything (flags, grid, every point's
config, run folders, SLURM's presence) is checked before anything is submitted.

sweeps:
  An override with comma-separated values is swept; the grid is every combination, the first
  swept key varying slowest:
    jaxlstm launch quickstart optimizer.learning_rate=1e-3,3e-3 model.hidden_size=32,64
  is 4 points, each in its own run folder <runs_root>/<name>/sweep-<time>/<point>/, the point
  named by its values: optimizer.learning_rate=1e-3,model.hidden_size=32/. Values split on
  top-level commas only: a comma inside [...], {{...}} or quotes belongs to one YAML value
  (model.x=[1,2] is one value, model.x=[1,2],[3,4] two; a string with a comma is quoted:
  "key='a,b'"). The sweep folder holds sweep.json (the grid, each point's run folder, each
  launch's jobs), base.yaml (the resolved base config), the points' run folders and sweep.md
  (and sweep.png with matplotlib): each point's status and final held-out metric, best marked.

waiting and the table:
  --executor local  runs the jobs on this machine, at most --max-parallel at once, printing
                    each job's id and log as it starts and its result as it ends; writes
                    sweep.md and returns when all have ended (Ctrl-C cancels them).
  --executor slurm  submits (a job array for a sweep), prints the job ids and the sweep folder
                    and returns; with --wait it waits and reports as locally. The table does
                    not need anyone to wait: each point's job rewrites sweep.md as it ends,
                    and a one-task job that starts after the whole array (afterany) writes it
                    once every point has ended, however it ended.

resuming:
  --resume SWEEP_DIR  skips the finished points (summary.json status "completed" or
                      "early_stopped"), continues the unfinished ones from their
                      checkpoints and starts the others, with
                      the grid and base config recorded in the sweep folder (CONFIG and the
                      overrides may be left out, or repeated as first given); with every point
                      completed it only rewrites sweep.md. Refused while the sweep's jobs are
                      still queued or running.
  --resume RUN_DIR    continues one run (its config.yaml, or CONFIG, plus any overrides).
  On SLURM a job warned of its time limit (USR2, 120 s before) saves a checkpoint and is
  requeued, up to 3 times, continuing where it stopped; preemption's SIGTERM also saves.

where the jobs run:
  SLURM: each job is --nodes nodes with one process per GPU (ntasks-per-node = --gpus-per-node;
  one per node without GPUs), started by srun; JAX's SLURM detection gives each process its
  GPU and joins them, and training.batch_size, the global batch, is split over all GPUs.
  Local: each job is one process here, given --gpus-per-node GPUs (CUDA_VISIBLE_DEVICES; jobs
  running at once get different ones; none by default, so JAX uses the CPU).
  Jobs run this command's Python in this folder: on a cluster both must be on a filesystem
  the nodes share (this Python: {sys.executable}).

arguments (flags and overrides in any order):
  CONFIG                a shipped config's name (jaxlstm configs) or a YAML file
  key=value[,value...]  overrides of the config's keys (below); several values make a sweep
  --executor E          slurm or local (default: slurm where sbatch is on the PATH, else local)
  --nodes N             nodes per job (default 1; SLURM only)
  --gpus-per-node K     GPUs per node (default 0)
  --time MIN            time limit per job, minutes (default {executors.DEFAULT_SLURM_TIME_MIN} on SLURM, none locally)
  --max-parallel N      jobs running at once (default: 1 locally, SLURM's own limit)
  --wait                SLURM: wait for the jobs, report each and write the table
  --resume DIR          resume a sweep folder or a run folder (above)
  --folder DIR          submitit's scripts, pickles and logs (default: SWEEP_DIR/submitit, or
                        RUN_DIR/submitit for one run)
  --dry-run             print the points, their run folders and the sbatch script; submit and
                        write nothing
  -h, --help            this text
 SLURM only (the local executor ignores them):
  --partition P, --account A, --qos Q, --constraint C
  --cpus-per-task N     CPUs per task (process)
  --mem SIZE            memory per node, SLURM's syntax (64G)
  --setup CMD           a shell line the job script runs before srun, e.g. "module load cuda"
                        or "source .venv/bin/activate" (repeatable)
  --slurm KEY[=VALUE]   any other sbatch option: --slurm mail-type=END --slurm exclusive
                        (repeatable; a GPU cluster wanting --gres: --slurm gres=gpu:4)
  --job-name NAME       default jaxlstm-<config name>

examples:
  jaxlstm launch quickstart optimizer.learning_rate=1e-3,3e-3 --executor local --max-parallel 2
  jaxlstm launch --resume runs/quickstart/sweep-<time>
  jaxlstm launch adding optimizer.learning_rate=1e-3,3e-3,1e-2 model.hidden_size=128,256 \\
      --executor slurm --gpus-per-node 1 --partition gpu --time 120 --max-parallel 4
  jaxlstm launch text --executor slurm --nodes 2 --gpus-per-node 4 --partition gpu \\
      --time 240 --cpus-per-task 8 --setup "source .venv/bin/activate" --wait

exit codes:
  0    every run completed (on SLURM without --wait: every job was submitted)
  1    a run did not complete: it failed, stopped on a non-finite value or was interrupted
       (its line and sweep.md say which; resume with --resume)
  2    bad config, overrides, flags or folder, or a submission SLURM refused (one line on
       stderr; nothing submitted)
  130  Ctrl-C (local jobs are cancelled: resume with --resume)"""


def _slurm_option(text: str) -> tuple[str, str | bool]:
    key, sep, value = text.partition("=")
    key = key.strip().lstrip("-")
    if not key:
        raise UsageError(f"--slurm {text!r}: expected KEY=VALUE or KEY (see jaxlstm launch "
                         "--help).")
    return key, value if sep else True


def parse_args(argv: list[str]) -> Any:
    """The parsed command line (flags anywhere among the overrides).

    Raises:
        UsageError: an unknown flag, a bad value, or neither CONFIG nor --resume.
        EarlyExit: after printing the help for -h/--help.
    """
    parser = OneLineParser(prog="jaxlstm launch", usage=f"jaxlstm launch {USAGE}",
                           add_help=False)
    parser.add_argument("config", nargs="?")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--executor", choices=("slurm", "local"))
    for flag in ("--nodes", "--gpus-per-node", "--time", "--max-parallel", "--cpus-per-task"):
        parser.add_argument(flag, type=int)
    for flag in ("--partition", "--account", "--qos", "--constraint", "--mem", "--job-name",
                 "--folder", "--resume"):
        parser.add_argument(flag)
    parser.add_argument("--setup", action="append", default=[])
    parser.add_argument("--slurm", action="append", default=[])
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    args = parser.parse_intermixed_args(argv)
    if args.help:
        print(f"{_ARGUMENTS}\n\n{reference.config_reference()}\n\nshipped configs (in "
              f"{shipped.CONFIGS_DIR}):\n" + "\n".join(f"  {line}"
                                                       for line in shipped.listing()))
        raise EarlyExit(DONE)
    if args.config and "=" in args.config and not os.path.isfile(args.config):
        args.overrides.insert(0, args.config)  # `--resume DIR key=value`: no CONFIG given
        args.config = None
    if args.config is None and args.resume is None:
        raise UsageError("missing CONFIG, a shipped config's name or a YAML file, or --resume "
                         "DIR (see jaxlstm launch --help).")
    minimum = {"nodes": 1, "gpus_per_node": 0, "time": 1, "max_parallel": 1, "cpus_per_task": 1}
    for key, least in minimum.items():
        value = getattr(args, key)
        if value is not None and value < least:
            raise UsageError(f"--{key.replace('_', '-')}: expected an int >= {least}, got "
                             f"{value}.")
    return args


def _resources(args: Any) -> Resources:
    return Resources(
        executor=args.executor or executors.default_executor(), nodes=args.nodes or 1,
        gpus_per_node=args.gpus_per_node or 0, cpus_per_task=args.cpus_per_task, mem=args.mem,
        time_min=args.time, partition=args.partition, account=args.account, qos=args.qos,
        constraint=args.constraint, slurm=tuple(_slurm_option(s) for s in args.slurm),
        setup=tuple(args.setup), job_name=args.job_name, max_parallel=args.max_parallel)


@command("jaxlstm launch")
def main(argv: list[str]) -> int:
    """Runs `jaxlstm launch` on `argv` (without the program and command names).

    Returns:
        0 every run completed (or was submitted, on SLURM without --wait), 1 a run did not
        complete, 2 bad input or a refused submission (one line on stderr), 130 Ctrl-C.
    """
    args = parse_args(argv)
    request = Request(
        config=args.config, config_file=shipped.resolve(args.config) if args.config else None,
        overrides=tuple(args.overrides), resources=_resources(args), resume=args.resume,
        folder=args.folder, wait=args.wait, dry_run=args.dry_run)
    try:
        return DONE if launch(request) else STOPPED
    except (GridError, ExecutorError, LaunchError) as err:
        raise UsageError(str(err)) from None
