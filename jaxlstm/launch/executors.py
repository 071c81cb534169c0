"""submitit executors from the command line's resources: SLURM, or this machine.

On SLURM a job is `nodes` nodes with one task (process) per GPU, `ntasks_per_node =
gpus_per_node`, started by `srun`: JAX's SLURM detection then gives each process its local GPU
(`SLURM_LOCALID`, jax#16788), and `run_experiment` starts the distributed runtime because it
sees more than one task. Without GPUs a node runs one task, which uses all the node's CPU
devices. The sbatch parameters are submitit's `SlurmExecutor` names, which are sbatch's own
(`partition`, `time`, `ntasks_per_node`, ...); `--slurm KEY=VALUE` adds any other
(`additional_parameters`).

The local executor runs each job as a subprocess of this machine, one process per job, with
the GPUs it is given (submitit sets `CUDA_VISIBLE_DEVICES`; none by default): jobs that run at
the same time get disjoint GPUs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from typing import Any

DEFAULT_SLURM_TIME_MIN = 60
LOCAL_NO_LIMIT_MIN = 60 * 24 * 365  # a local job runs until it ends
SIGNAL_DELAY_S = 120  # SLURM warns a job this long before its time limit (USR2): save, requeue
MEM = re.compile(r"^\d+[KMGT]?$")


class ExecutorError(RuntimeError):
    """The executor cannot be used here (no sbatch, bad resources): one line."""


@dataclasses.dataclass(frozen=True)
class Resources:
    """What each job asks for, from the command line."""

    executor: str  # "slurm" or "local"
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem: str | None = None  # per node, SLURM's syntax: 64G
    time_min: int | None = None  # None: DEFAULT_SLURM_TIME_MIN on SLURM, no limit locally
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    slurm: tuple[tuple[str, str | bool], ...] = ()  # --slurm KEY=VALUE (KEY alone: True)
    setup: tuple[str, ...] = ()  # shell lines run in the sbatch script before srun
    job_name: str | None = None  # None: "jaxlstm"; the launcher names jobs after the config
    max_parallel: int | None = None  # jobs running at once; None: SLURM's choice, 1 locally

    @property
    def tasks_per_node(self) -> int:
        """One process per GPU on SLURM; one per node without GPUs, and locally."""
        return max(1, self.gpus_per_node) if self.executor == "slurm" else 1

    def slurm_only(self) -> list[str]:
        """The flags given that only SLURM uses (the local executor ignores them)."""
        flags = {"--partition": self.partition, "--account": self.account, "--qos": self.qos,
                 "--constraint": self.constraint, "--cpus-per-task": self.cpus_per_task,
                 "--mem": self.mem, "--slurm": self.slurm or None,
                 "--setup": self.setup or None}
        return [flag for flag, value in flags.items() if value is not None]


def check_resources(resources: Resources) -> None:
    """ExecutorError for resources no executor can provide as asked."""
    if resources.executor == "local" and resources.nodes != 1:
        raise ExecutorError("--nodes: the local executor runs on this machine only; use "
                            "--executor slurm for several nodes.")
    if resources.mem is not None and not MEM.match(resources.mem):
        raise ExecutorError(f"--mem: expected SLURM's syntax, a number with an optional unit "
                            f"K, M, G or T (64G), got {resources.mem!r}.")


def check_slurm_available() -> None:
    """ExecutorError unless `sbatch` and `srun` are on the PATH (a SLURM login node)."""
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise ExecutorError(f"--executor slurm: {' and '.join(missing)} not found on the PATH; "
                            "run this on a SLURM login node, or use --executor local.")


def default_executor() -> str:
    """"slurm" where `sbatch` is on the PATH, "local" elsewhere."""
    return "slurm" if shutil.which("sbatch") else "local"


def slurm_parameters(resources: Resources) -> dict[str, Any]:
    """`SlurmExecutor.update_parameters` keyword arguments (sbatch's names) for `resources`."""
    params: dict[str, Any] = {
        "job_name": resources.job_name or "jaxlstm",
        "nodes": resources.nodes,
        "ntasks_per_node": resources.tasks_per_node,
        "time": resources.time_min or DEFAULT_SLURM_TIME_MIN,
        "signal_delay_s": SIGNAL_DELAY_S,
    }
    if resources.gpus_per_node:
        params["gpus_per_node"] = resources.gpus_per_node
    for key in ("partition", "account", "qos", "constraint", "cpus_per_task", "mem"):
        value = getattr(resources, key)
        if value is not None:
            params[key] = value
    if resources.max_parallel:
        params["array_parallelism"] = resources.max_parallel
    if resources.setup:
        params["setup"] = list(resources.setup)
    if resources.slurm:
        params["additional_parameters"] = dict(resources.slurm)
    return params


def local_parameters(resources: Resources, gpus: tuple[int, ...] = ()) -> dict[str, Any]:
    """`LocalExecutor.update_parameters` keyword arguments: one process, `gpus` visible."""
    return {"tasks_per_node": 1, "nodes": 1, "gpus_per_node": len(gpus),
            "visible_gpus": gpus, "timeout_min": resources.time_min or LOCAL_NO_LIMIT_MIN,
            "signal_delay_s": SIGNAL_DELAY_S}


def make_executor(resources: Resources, folder: str) -> Any:
    """A submitit executor writing its scripts, pickles and logs into `folder`.

    Raises:
        ExecutorError: SLURM asked for where there is none, parameters submitit rejects, or
            a folder that cannot be created.
    """
    import submitit

    try:
        if resources.executor == "slurm":
            check_slurm_available()
            executor = submitit.SlurmExecutor(folder)
            executor.update_parameters(**slurm_parameters(resources))
        else:
            executor = submitit.LocalExecutor(folder)
            executor.update_parameters(**local_parameters(resources))
    except (ValueError, RuntimeError) as err:
        if isinstance(err, ExecutorError):
            raise
        raise ExecutorError(f"submitit: {str(err).splitlines()[0]}") from None
    except OSError as err:  # its folder cannot be created (a full disk, no permission)
        raise ExecutorError(f"submitit folder {folder}: {err.strerror or err}.") from None
    return executor


def sbatch_script(resources: Resources, folder: str, array_size: int = 1) -> str:
    """The sbatch script a submission of `array_size` jobs would write, rendered by submitit
    (its `_make_sbatch_string`, what `SlurmExecutor` calls) without submitting anything."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = os.path.abspath(folder)
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(folder)}"
    return _make_sbatch_string(command=command, folder=folder,
                               map_count=array_size if array_size > 1 else None,
                               **slurm_parameters(resources))


def hostname() -> str:
    return socket.gethostname()


def still_queued(launch: dict[str, Any]) -> list[str]:
    """The jobs of an earlier `launch` (as `sweep.json` records it) that are still queued or
    running: by `squeue` for SLURM, by their controller's process id on the same host for
    the local executor. Empty when that cannot be known."""
    jobs = list(launch.get("jobs", {}).values())
    if not jobs:
        return []
    if launch.get("executor") == "slurm":
        if shutil.which("squeue") is None:
            return []
        main_ids = sorted({str(job).split("_")[0] for job in jobs})
        try:
            listed = subprocess.run(["squeue", "--noheader", "--format=%i",
                                     f"--jobs={','.join(main_ids)}"], capture_output=True,
                                    text=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError):
            return []
        return [line.strip() for line in listed.stdout.splitlines() if line.strip()]
    if launch.get("host") != hostname():
        return []
    alive = []
    for job in jobs:
        try:
            with open(f"/proc/{int(job)}/cmdline", "rb") as f:
                if b"submitit" in f.read():
                    alive.append(str(job))
        except (OSError, ValueError):
            pass
    return alive


def job_log(job: Any) -> str:
    """Where a submitted job's output goes (task 0's stdout)."""
    return os.fspath(job.paths.stdout).replace("%t", "0")
