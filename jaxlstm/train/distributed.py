"""Several processes, one model: starting JAX's multi-controller runtime, and agreeing.

Every process runs the same program on its own devices (JAX's multi-controller model): the
same jitted steps in the same order, each feeding its slice of the batch. This module

- starts the runtime (`jax.distributed.initialize`) when the config's `distributed` section
  says so, or when JAX would detect a cluster of more than one process (SLURM under `srun`,
  Open MPI's `mpirun`); nothing happens on a single machine; on a TPU pod slice set
  `distributed.enabled=true` and JAX detects the rest;
- answers who writes (`is_primary`: process 0 writes the run folder's files);
- makes the host-side decisions every process must take identically (stop now? which folder?)
  the same on all of them (`agree`, `broadcast_text`); a process that decided alone would
  leave the others waiting in a collective forever.

It must run before anything touches a device: `jax.distributed.initialize` refuses afterwards.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxlstm.train.config import ConfigError, DistributedConfig


def _detected_process_count() -> int:
    """How many processes a cluster manager started this job with (1 when none did)."""
    env = os.environ
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
             "SLURM_LOCALID")  # what JAX's SLURM detector needs: set by srun, not by sbatch
    if all(name in env for name in slurm):
        return int(env["SLURM_NTASKS"])
    if "OMPI_MCA_orte_hnp_uri" in env:  # JAX's Open MPI detector
        return int(env.get("OMPI_COMM_WORLD_SIZE", "2"))
    return 1


def wanted(config: DistributedConfig) -> bool:
    """Whether this process is one of several: the config says so, or a cluster does."""
    if config.enabled is not None:
        return config.enabled
    explicit = (config.coordinator_address, config.num_processes, config.process_id,
                config.local_device_ids)
    return any(value is not None for value in explicit) or _detected_process_count() > 1


def initialize(config: DistributedConfig) -> bool:
    """Starts JAX's distributed runtime if `wanted(config)`; returns whether it runs.

    Values left null are detected by JAX from the cluster's environment. Calling it again in
    the same process (a second run, a sweep point) does nothing.

    Raises:
        ConfigError: the runtime cannot start as configured (e.g. devices are already in use,
            or the config names some but not all of the values JAX cannot detect).
    """
    if not wanted(config):
        return False
    if jax.distributed.is_initialized():
        return True
    try:
        jax.distributed.initialize(
            coordinator_address=config.coordinator_address,
            num_processes=config.num_processes,
            process_id=config.process_id,
            local_device_ids=config.local_device_ids,
            initialization_timeout=config.initialization_timeout_s,
            heartbeat_timeout_seconds=config.heartbeat_timeout_s,
            shutdown_timeout_seconds=config.shutdown_timeout_s,
        )
    except (RuntimeError, ValueError) as err:
        message = " ".join(str(err).split("\n")[0].split())
        raise ConfigError(f"distributed: jax.distributed.initialize failed: {message}") from None
    return True


def is_primary() -> bool:
    """Whether this process writes the run folder's files (process 0)."""
    return jax.process_index() == 0


def agree(flags: int) -> int:
    """The bitwise OR of `flags` over every process: a stop one process decides (a signal, a
    failed write) becomes every process's stop at the same step."""
    if jax.process_count() == 1:
        return flags
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(np.array([flags], np.int32))
    return int(np.bitwise_or.reduce(np.asarray(gathered).reshape(-1)))


_TEXT_BYTES = 4096


def broadcast_text(text: str) -> str:
    """Process 0's `text` on every process (e.g. the run folder it chose)."""
    if jax.process_count() == 1:
        return text
    from jax.experimental import multihost_utils

    data = text.encode()
    if len(data) > _TEXT_BYTES:
        raise ValueError(f"broadcast_text: at most {_TEXT_BYTES} bytes, got {len(data)}.")
    buffer = np.zeros(_TEXT_BYTES + 4, np.uint8)
    buffer[:4] = np.frombuffer(np.uint32(len(data)).tobytes(), np.uint8)
    buffer[4:4 + len(data)] = np.frombuffer(data, np.uint8)
    received = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    length = int(np.frombuffer(received[:4].tobytes(), np.uint32)[0])
    return received[4:4 + length].tobytes().decode()


def sync(name: str) -> None:
    """Waits until every process reaches this point (a no-op in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
