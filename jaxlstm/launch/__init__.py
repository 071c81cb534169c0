"""Launching experiments as jobs, one config or a sweep, on SLURM or this machine (submitit).

The layer above `jaxlstm.train`: it imports the training layer, which never imports it. The
command is `jaxlstm launch` (`jaxlstm.cli.launch`); the pieces are

    launcher.py   a launch from request to jobs: checks, folders, submission, the report
    grid.py       which overrides are swept, the grid's points in a fixed order, their names
    sweep.py      the sweep folder: sweep.json, base.yaml, each point's run folder and state
    table.py      sweep.md and sweep.png from the points' run folders
    executors.py  submitit's SLURM and local executors from the requested resources
    jobs.py       what a job runs: `TrainJob` (run_experiment in every task) and the table job
    submit.py     submitting, bounded local parallelism, waiting, one line per event

A job is one `run_experiment(config)` per task with `run_dir` set by the launcher; on SLURM a
job has one task per GPU and `run_experiment` joins them into one data-parallel run. The state
of a sweep lives in its run folders, so the table can be rewritten, and the sweep resumed, at
any time. submitit is imported by `jobs` and `executors` only when a job is made.
"""

from jaxlstm.launch.executors import ExecutorError, Resources
from jaxlstm.launch.grid import Grid, GridError, Point, expand_grid, split_values
from jaxlstm.launch.launcher import LaunchError, Request, launch
from jaxlstm.launch.sweep import Sweep, point_state
from jaxlstm.launch.table import write_table

__all__ = ["ExecutorError", "Grid", "GridError", "LaunchError", "Point", "Request",
           "Resources", "Sweep", "expand_grid", "launch", "point_state", "split_values",
           "write_table"]
