"""A launch from request to jobs: one config, a new sweep, or a sweep resumed.

    launch(Request(config="quickstart", config_file=path,
                   resources=Resources("local", max_parallel=2),
                   overrides=("optimizer.learning_rate=1e-3,3e-3",)))

Everything is checked before anything is submitted or written: the grid, every point's config
(`load_config`) and that no two points are the same config (a value written two ways), the
global batch against the GPUs asked for, the run folders (a resumed run's config against its
saved one), and that SLURM is there. Then

- one config is one job in the run folder `run_experiment` would choose (claimed now, so
  that two launches in the same second get two folders);
- a sweep gets a new sweep folder (see `sweep`), one job per point, each point's run folder
  inside it;
- a resumed sweep runs its points that are not completed, from the recorded grid.

Waiting: the local executor's jobs are this process's children, so `launch` waits for them,
saying when each starts and ends, and writes the table. On SLURM it submits, says the job
ids and returns, unless asked to wait; the table is then written by each point's job as it
ends and by a one-task job that SLURM starts once the whole array has ended (`afterany`),
so it never depends on anyone waiting. `launch --resume` writes it too.

A point that fails (a run that ends `write_failed` or `non_finite`, a job that raises, a job
that cannot even start, say on a full disk) is recorded in its run folder where the disk
allows and said in one line; the other points go on, and the table is written at the end
from the run folders (or one line says how to write it later).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shlex
from collections.abc import Callable, Iterator
from typing import Any

from jaxlstm.launch import executors, grid, table
from jaxlstm.launch import sweep as sweeps
from jaxlstm.launch.executors import ExecutorError, Resources
from jaxlstm.train.config import ConfigError, ExperimentConfig, load_config, to_yaml
from jaxlstm.train.run_folder import (
    RunFolderError,
    check_writable,
    choose_run_dir,
    discard_if_empty,
    resume_changes,
    runs_folder,
)

TABLE_JOB_TIME_MIN = 10
Say = Callable[[str], None]


class LaunchError(ValueError):
    """A launch that cannot go ahead as asked (a resume of a sweep with another grid, of jobs
    still running, of a folder that holds nothing): one line."""


@dataclasses.dataclass(frozen=True)
class Request:
    """What to launch, where, and how."""

    config: str | None  # CONFIG as typed (a shipped name or a file), recorded in sweep.json
    config_file: str | None  # the YAML file it names; None: the --resume folder's
    resources: Resources  # where and on what each job runs
    overrides: tuple[str, ...] = ()  # `key=value`, several comma-separated values sweep
    resume: str | None = None  # a sweep folder or a run folder to continue
    folder: str | None = None  # submitit's; default <sweep or run folder>/submitit
    wait: bool = False  # SLURM: wait for the jobs (the local executor always does)
    dry_run: bool = False  # say what would be submitted; submit and write nothing


def _print(line: str) -> None:
    print(line, flush=True)


def launch(request: Request, say: Say = _print) -> bool:
    """Launches `request` (see the module docstring), saying what happens through `say`.

    Returns:
        True when every run completed (on SLURM without `wait`: every job was submitted).

    Raises:
        ConfigError (or RunFolderError): a config or run folder problem, in one line.
        GridError, ExecutorError, LaunchError: bad overrides, resources or request.
        Nothing has been submitted or written when these are raised.
    """
    if request.resume is not None:
        if sweeps.is_sweep_folder(request.resume):
            return _resume_sweep(request, say)
        if not os.path.isfile(os.path.join(request.resume, "config.yaml")):
            raise LaunchError(f"--resume {request.resume}: neither a sweep folder (no "
                              f"{sweeps.SWEEP_FILE}) nor a run folder (no config.yaml).")
    points = grid.expand_grid(request.overrides)
    if not points.is_sweep:
        return _launch_one(request, say)
    if request.resume is not None:
        raise LaunchError(f"--resume {request.resume} continues one run: give no swept values.")
    return _launch_sweep(request, points, say)


def _ready(request: Request, name: str, say: Say) -> Resources:
    """The request's resources with a job name, checked, SLURM's presence included."""
    resources = dataclasses.replace(request.resources,
                                    job_name=request.resources.job_name or f"jaxlstm-{name}")
    executors.check_resources(resources)
    if resources.executor == "slurm" and not request.dry_run:
        executors.check_slurm_available()
    ignored = resources.slurm_only() if resources.executor == "local" else []
    if ignored:
        say(f"the local executor ignores {', '.join(ignored)} (SLURM only)")
    return resources


def _check_devices(config: ExperimentConfig, resources: Resources, source: str) -> None:
    """ConfigError when the global batch cannot split over the GPUs asked for."""
    gpus = resources.nodes * resources.gpus_per_node
    if resources.executor == "slurm" and gpus and config.training.batch_size % gpus:
        raise ConfigError(f"{source}: training.batch_size: expected a multiple of the {gpus} "
                          f"GPUs ({resources.nodes} node(s) x {resources.gpus_per_node}), got "
                          f"{config.training.batch_size}.")


def _launch_one(request: Request, say: Say) -> bool:
    """One config, one job, in the run folder `run_experiment` would choose (or --resume's)."""
    overrides = list(request.overrides)
    if request.resume is not None:
        config_file = request.config_file or os.path.join(request.resume, "config.yaml")
        overrides.append("resume=true")
    elif request.config_file is None:
        raise LaunchError("missing CONFIG, a shipped config's name or a YAML file.")
    else:
        config_file = request.config_file
    config = load_config(config_file, overrides)
    if request.resume is not None:
        config = dataclasses.replace(config, run_dir=request.resume)
    resources = _ready(request, config.name or "run", say)
    _check_devices(config, resources, config_file)
    # A new run's folder is claimed now, so that two launches in the same second get two.
    run_dir = os.path.abspath(choose_run_dir(config, claim=not request.dry_run))
    claimed = not config.resume and not config.run_dir and not request.dry_run
    if config.resume:
        resume_changes(run_dir, config)
    config = dataclasses.replace(config, run_dir=run_dir, resume=False)  # the job decides
    runner = _Runner(request, resources, os.path.join(run_dir, "submitit"), say)
    if request.dry_run:
        return runner.dry_run([(config.name or "run", run_dir)])
    try:
        os.makedirs(run_dir, exist_ok=True)  # an explicit run_dir may not exist yet
    except OSError as err:
        raise RunFolderError(f"run_dir: cannot create {run_dir}: {err.strerror or err}."
                             ) from None
    entries = _entries([(config.name or "run", config)], None)
    try:
        ok = runner.run(entries, None)
    except BaseException:
        if claimed:  # refused before its job wrote anything: no empty folder left behind
            discard_if_empty(run_dir)
        raise
    if entries[0].state is not None:
        say(f"run folder {run_dir}")
    return ok


def _launch_sweep(request: Request, points: grid.Grid, say: Say) -> bool:
    """A new sweep: checks every point, creates the sweep folder, submits every point."""
    for override in points.constant:
        key = override.partition("=")[0].strip()
        if key in ("run_dir", "resume"):
            raise LaunchError(f"{override}: a sweep gives each point its own run folder; to "
                              "resume a sweep use --resume SWEEP_DIR.")
    if request.config_file is None:
        raise LaunchError("missing CONFIG, a shipped config's name or a YAML file.")
    base = load_config(request.config_file, points.constant)
    resources = _ready(request, base.name or "sweep", say)
    resolved = []
    for point in points.points:
        config = load_config(request.config_file, [*points.constant, *point.overrides])
        _check_devices(config, resources, f"{request.config_file} ({point.name})")
        resolved.append(to_yaml(config))
    grid.check_distinct(points, resolved)
    root = runs_folder(dataclasses.replace(base, name=base.name or "sweep"))
    check_writable(root, "runs_root")
    if request.dry_run:
        where = os.path.join(root, "sweep-<time>")
        return _Runner(request, resources, os.path.join(where, "submitit"), say).dry_run(
            [(p.name, os.path.join(where, p.name)) for p in points.points])
    sweep = sweeps.new_sweep(root, request.config or request.config_file,
                             request.config_file, list(request.overrides), points, base)
    say(f"sweep folder: {sweep.folder} ({len(points.points)} points)")
    return _run_points(request, resources, sweep, list(points.points), say)


def _resume_sweep(request: Request, say: Say) -> bool:
    """Skips the sweep's completed points and runs the others, from its recorded grid."""
    assert request.resume is not None
    sweep = sweeps.load(request.resume)
    if (request.config or request.overrides) and (
            request.config != sweep.config or tuple(request.overrides) != sweep.overrides):
        raise LaunchError(
            f"--resume {request.resume}: this sweep was launched as `{sweep.config} "
            f"{' '.join(sweep.overrides)}`; leave CONFIG and the overrides out (the grid comes "
            "from its sweep.json) or repeat them unchanged.")
    base = load_config(os.path.join(sweep.folder, sweeps.BASE_FILE))
    resources = _ready(request, base.name or "sweep", say)
    if sweep.launches:
        queued = executors.still_queued(sweep.launches[-1])
        if queued:
            raise LaunchError(f"--resume {request.resume}: jobs of this sweep are still queued "
                              f"or running ({', '.join(queued[:5])}); wait for them, or cancel "
                              "them, then resume.")
    states = {p.name: sweeps.point_state(sweep.run_dir(p)) for p in sweep.grid.points}
    todo = [p for p in sweep.grid.points if not states[p.name].completed]
    say(f"sweep folder: {sweep.folder}: {len(states) - len(todo)} of {len(states)} points "
        f"completed (skipped), {len(todo)} to run")
    for point in todo:  # refuse a point whose run cannot continue, before submitting any
        config = sweep.point_config(point)
        _check_devices(config, resources, f"{sweep.folder} ({point.name})")
        if os.path.isfile(os.path.join(sweep.run_dir(point), "config.yaml")):
            resume_changes(sweep.run_dir(point), dataclasses.replace(config, resume=True))
    runner = _Runner(request, resources, os.path.join(sweep.folder, "submitit"), say)
    if request.dry_run:
        return runner.dry_run([(f"{p.name} ({states[p.name].status})", sweep.run_dir(p))
                               for p in todo])
    if not todo:
        say(_write_table(sweep))
        return True
    return _run_points(request, resources, sweep, todo, say)


def _write_table(sweep: sweeps.Sweep) -> str:
    """Writes the sweep's table; returns `table PATH`, or, where it cannot be written (a full
    disk), one line saying how to write it later, having removed the older one: the sweep
    folder holds a true table or none."""
    try:
        return f"table {table.write_table(sweep)[0]}"
    except OSError as err:
        removed = table.remove_table(sweep)
        return (f"could not write {table.TABLE_FILE} ({err.strerror or err})"
                + ("; the older one is removed" if removed else "")
                + f"; once there is room, jaxlstm launch --resume {shlex.quote(sweep.folder)} "
                "runs the points not completed and writes it")


def _run_points(request: Request, resources: Resources, sweep: sweeps.Sweep,
                points: list[grid.Point], say: Say) -> bool:
    index = {p.name: i for i, p in enumerate(sweep.grid.points)}
    total = len(sweep.grid.points)
    pairs = [(f"[{index[p.name] + 1}/{total}] {p.name}", sweep.point_config(p)) for p in points]
    runner = _Runner(request, resources, os.path.join(sweep.folder, "submitit"), say)
    return runner.run(_entries(pairs, sweep.folder), sweep)


def _entries(pairs: list[tuple[str, ExperimentConfig]], sweep_folder: str | None) -> list[Any]:
    from jaxlstm.launch.jobs import TrainJob
    from jaxlstm.launch.submit import Entry

    return [Entry(label, config.run_dir or "", TrainJob(config, sweep_folder))
            for label, config in pairs]


@contextlib.contextmanager
def _sbatch_errors() -> Iterator[None]:
    """A refused submission as one ExecutorError line (submitit prints sbatch's stderr)."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    except Exception as err:  # noqa: BLE001 - submitit's FailedJobError, OSError, ...
        lines = [line for line in (str(err) or captured.getvalue()).splitlines() if line]
        raise ExecutorError(f"the submission failed: {lines[0] if lines else err}") from None


class _Runner:
    """Submits entries to the executor the resources name, and says what happens."""

    def __init__(self, request: Request, resources: Resources, folder: str, say: Say):
        self.request = request
        self.resources = resources
        self.folder = request.folder or folder
        self.say = say

    def dry_run(self, points: list[tuple[str, str]]) -> bool:
        self.say(f"dry run: {len(points)} job(s) on the {self.resources.executor} executor, "
                 f"submitit folder {self.folder}")
        for label, run_dir in points:
            self.say(f"  {label} -> {run_dir}")
        if self.resources.executor == "slurm" and points:
            self.say(executors.sbatch_script(self.resources, self.folder, len(points)))
        return True

    def run(self, entries: list[Any], sweep: sweeps.Sweep | None) -> bool:
        """Submits `entries`; on SLURM without `wait` returns once submitted, else when every
        job has ended. Returns whether every run completed (or was submitted)."""
        from jaxlstm.launch import submit

        executor = executors.make_executor(self.resources, self.folder)
        launch = (sweeps.record_launch(sweep, self.resources.executor, executors.hostname(),
                                       self.folder) if sweep is not None else None)
        self._save_record(sweep)

        def started(*new: Any) -> None:  # sweep.json knows every job as soon as it exists
            if sweep is not None and launch is not None:
                launch["jobs"].update({os.path.basename(e.run_dir): str(e.submitted.job_id)
                                       for e in new})
                self._save_record(sweep)

        if self.resources.executor == "local":
            try:
                submit.run_local(executor, self.resources, entries, self.say,
                                 on_start=started)
            except KeyboardInterrupt:
                target = sweep.folder if sweep is not None else entries[0].run_dir
                self.say(f"resume with: jaxlstm launch --resume {shlex.quote(target)}")
                raise
            return self._finish(entries, sweep)
        with _sbatch_errors():
            submit.submit_slurm(executor, entries)
        started(*entries)
        self._report_submitted(entries, sweep)
        if not self.request.wait:
            return True
        submit.wait_for(entries, self.say)
        return self._finish(entries, sweep)

    def _save_record(self, sweep: sweeps.Sweep | None) -> None:
        """Saves `sweep.json`'s launch record; one line where it cannot (a full disk): the
        record only says where the jobs are, and the points go on without it."""
        if sweep is None:
            return
        try:
            sweeps.save(sweep)
        except OSError as err:
            self.say(f"could not update {sweeps.SWEEP_FILE}: {err.strerror or err}; the "
                     "sweep goes on")

    def _finish(self, entries: list[Any], sweep: sweeps.Sweep | None) -> bool:
        """Whether every run completed; a sweep's table is written first (`_write_table`)."""
        if sweep is None:
            return entries[0].state is not None and entries[0].state.completed
        states = [sweeps.point_state(sweep.run_dir(p)) for p in sweep.grid.points]
        done = sum(s.completed for s in states)
        self.say(f"{done} of {len(states)} points completed; {_write_table(sweep)}")
        return done == len(states)

    def _report_submitted(self, entries: list[Any], sweep: sweeps.Sweep | None) -> None:
        resources = self.resources
        main_ids = sorted({str(e.submitted.job_id).split("_")[0] for e in entries})
        if len(entries) > 1:
            limit = (f", at most {resources.max_parallel} at once" if resources.max_parallel
                     else "")
            what = f"job array {main_ids[0]} ({len(entries)} jobs{limit})"
        else:
            what = f"job {entries[0].submitted.job_id}"
        gpus = (f", {resources.gpus_per_node} GPU(s) per node" if resources.gpus_per_node
                else "")
        self.say(f"submitted to SLURM: {what}, each {resources.nodes} node(s) x "
                 f"{resources.tasks_per_node} task(s){gpus}; logs in {self.folder}")
        for entry in entries:
            self.say(f"  {entry.submitted.job_id}  {entry.label} -> {entry.run_dir}")
        if sweep is not None:
            self._submit_table_job(sweep, main_ids)
            if not self.request.wait:
                self.say(f"resume or refresh the table later: jaxlstm launch --resume "
                         f"{shlex.quote(sweep.folder)}")

    def _submit_table_job(self, sweep: sweeps.Sweep, main_ids: list[str]) -> None:
        from jaxlstm.launch import jobs

        small = dataclasses.replace(
            self.resources, nodes=1, gpus_per_node=0, cpus_per_task=None, mem=None,
            time_min=TABLE_JOB_TIME_MIN, constraint=None, slurm=(), max_parallel=None,
            job_name=f"{self.resources.job_name}-table")
        after = "afterany:" + ":".join(main_ids)
        try:
            executor = executors.make_executor(small, self.folder)
            executor.update_parameters(dependency=after)
            with _sbatch_errors():
                job = executor.submit(jobs.write_table, sweep.folder)
        except ExecutorError as err:
            self.say(f"no table job ({err}); each point still rewrites sweep.md as it ends")
            return
        self.say(f"table job {job.job_id} writes sweep.md once they have all ended ({after})")
