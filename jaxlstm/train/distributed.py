"""Several processes, one model: starting JAX's multi-controller runtime, and agreeing.

Every process runs the same program on its own devices (JAX's multi-controller model): the
same jitted steps in the same order, each feeding its slice of the batch. This module

- starts the runtime (`jax.distributed.initialize`) when the config's `distributed` section
  says so, or when JAX would detect a cluster of more than one process (SLURM under `srun`,
  Open MPI's `mpirun`); nothing happens on a single machine; on a TPU pod slice set
  `distributed.enabled=true` and JAX detects the rest;
- checks that every process was given the same config (`check_same_config`): processes
  started by hand with a different learning rate would otherwise train a model no
  `config.yaml` describes, and different sizes end in a collective that does not match;
- answers who writes (`is_primary`: process 0 writes the run folder's files);
- makes the host-side decisions every process must take identically (stop now? which folder?)
  the same on all of them (`agree`, `broadcast_text`); a process that decided alone would
  leave the others waiting in a collective forever;
- ends every process in one line when one of them stops in the middle of a run
  (`peer_watch.watching_peers`), instead of leaving them to JAX, which aborts them with a C++ stack.

How a job of several processes can fail, and what each process then does:

- a malformed `distributed.coordinator_address`: the config refuses it (exit 2);
- a process that never starts, or a coordinator address nobody answers at: after
  `distributed.initialization_timeout_s` one line and exit 2 on each process that did start
  (JAX itself would abort a few seconds later, with a C++ stack);
- processes given different configs: one line naming each differing key, exit 2, on all;
- a process that dies while they train (kill -9, out of memory, a crash): every other process
  prints one line and exits with code 1 within `peer_watch.GRACE_S` seconds; process 0 first marks
  `summary.json` "failed" with the reason (through `peer_watch.PeerWatch.on_failure`), and `--resume` on
  every process continues from the last checkpoint. A host that vanishes without closing
  its connections (power loss, a network partition) is noticed only by JAX's heartbeat,
  after `distributed.heartbeat_timeout_s`: JAX then aborts the survivors (SIGABRT, a C++
  stack) and the summary still says "running"; `--resume` works the same.

`initialize` must run before anything touches a device: `jax.distributed.initialize` refuses
afterwards.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import socket
import sys
import threading
from typing import Any

import jax
import numpy as np

from jaxlstm.train import peer_watch
from jaxlstm.train.config import (
    ConfigError,
    DistributedConfig,
    ExperimentConfig,
    address_problem,
    flatten,
)

NOT_JOINED_EXIT = 2  # jaxlstm.cli.exits.BAD_INPUT: the processes were not started as configured


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
    the same process (a second run, a sweep point) does nothing. When not every process has
    joined after `config.initialization_timeout_s`, this process prints one line and exits
    with code 2 (`NOT_JOINED_EXIT`): JAX would abort it with a C++ stack a few seconds later,
    from C++ code that Python cannot catch.

    Raises:
        ConfigError: the runtime cannot start as configured (e.g. devices are already in use,
            or the config names some but not all of the values JAX cannot detect).
    """
    if not wanted(config):
        return False
    if jax.distributed.is_initialized():
        return True
    from_env = os.environ.get("JAX_COORDINATOR_ADDRESS")  # the config's value is checked
    if config.coordinator_address is None and from_env and address_problem(from_env):
        raise ConfigError(f"JAX_COORDINATOR_ADDRESS: {address_problem(from_env)}")
    # JAX's preemption service would catch SIGTERM in C++ (and tell only code that polls it):
    # the runner's own handler, which stops every process at the same step, must get it.
    jax.config.update("jax_enable_preemption_service", False)
    deadline = threading.Timer(config.initialization_timeout_s, _not_joined, args=(config,))
    deadline.daemon = True
    deadline.start()
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
    finally:
        deadline.cancel()
    peer_watch.start(_runtime(), config)
    return True


def _runtime() -> Any:
    """JAX's distributed state: the coordination service's client (its key-value store) and
    this process's place. Private to JAX, read as orbax and `multihost_utils` read it."""
    from jax._src import distributed as jax_distributed

    return jax_distributed.global_state


def _answers(address: str) -> bool:
    """Whether something accepts TCP connections at `address` ("host:port")."""
    try:
        with socket.create_connection(peer_watch.host_and_port(address), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def _not_joined(config: DistributedConfig) -> None:
    """The join's deadline passed: one line, exit 2, before JAX aborts this process.

    JAX's own deadline ends in LOG(QFATAL) in C++ (SIGABRT, a stack), which no Python
    handler can turn into a message; this timer fires first, as JAX gives the join a few
    seconds more than `initialization_timeout` (measured with jax 0.10.2: 5 s more)."""
    state = _runtime()
    address = state.coordinator_address or config.coordinator_address or "(detected)"
    process = config.process_id if config.process_id is not None else state.process_id
    count = config.num_processes or state.num_processes
    waited = f"distributed.initialization_timeout_s ({config.initialization_timeout_s} s)"
    if process != 0 and not _answers(address):
        line = (f"distributed: nothing answered at the coordinator address {address} within "
                f"{waited}: start process 0 there, or correct distributed.coordinator_address.")
    else:
        line = (f"distributed: not all {count} processes joined within {waited} (this is "
                f"process {process}, coordinator {address}): start every process with the "
                "same coordinator_address and num_processes, each with its own process_id.")
    print(line, file=sys.stderr, flush=True)
    os._exit(NOT_JOINED_EXIT)


_CONFIG_CHECKS = itertools.count()  # each check's keys in the key-value store are its own
_LISTED_DIFFERENCES = 8


def check_same_config(config: ExperimentConfig) -> None:
    """Refuses a job whose processes were given different configs (`distributed.*` aside).

    Every process puts its resolved config into the coordination service's key-value store,
    process 0 compares them and puts its verdict there, and every process reads the verdict:
    no device collective is involved (one between processes of different sizes would itself
    fail to match), and all processes refuse alike, before anything is computed or written.
    Does nothing in a single process.

    Args:
        config: the `ExperimentConfig` this process was given.

    Raises:
        ConfigError, on every process: the configs differ (naming each differing key and the
            values of both processes), or a process did not answer within
            `distributed.initialization_timeout_s`.
    """
    state = _runtime()
    if state.client is None or state.num_processes == 1:
        return
    client, me, count = state.client, state.process_id, state.num_processes
    prefix = f"jaxlstm/config/{next(_CONFIG_CHECKS)}"
    timeout_ms = config.distributed.initialization_timeout_s * 1000
    client.key_value_set(f"{prefix}/{me}", json.dumps(_flat_config(config), default=repr))
    if me == 0:
        client.key_value_set(f"{prefix}/verdict", _verdict(client, prefix, count, timeout_ms,
                                                           config))
    try:
        verdict = client.blocking_key_value_get(f"{prefix}/verdict", timeout_ms)
    except Exception:  # noqa: BLE001 - jax raises its own runtime errors: any means no answer
        verdict = (f"distributed: process 0 did not compare the configs within "
                   f"distributed.initialization_timeout_s "
                   f"({config.distributed.initialization_timeout_s} s).")
    if verdict:
        raise ConfigError(verdict)


_UNSET = object()  # a key one process's config has and another's lacks (task options)


def _flat_config(config: ExperimentConfig) -> dict[str, Any]:
    """The config as {dotted key: value}, less `distributed` (where each process runs)."""
    return flatten({k: v for k, v in dataclasses.asdict(config).items()
                    if k != "distributed"})


def _verdict(client: Any, prefix: str, count: int, timeout_ms: int,
             config: ExperimentConfig) -> str:
    """Process 0's comparison: "" when every process has its config, else the one line."""
    # Through JSON, as the others' arrive: a tuple and a list of the same values are equal.
    ours = json.loads(json.dumps(_flat_config(config), default=repr))
    differences = []
    for process in range(1, count):
        try:
            theirs = json.loads(client.blocking_key_value_get(f"{prefix}/{process}",
                                                              timeout_ms))
        except Exception:  # noqa: BLE001 - jax raises its own runtime errors
            return (f"distributed: process {process} did not send its config within "
                    f"distributed.initialization_timeout_s "
                    f"({config.distributed.initialization_timeout_s} s).")
        for key in sorted(set(ours) | set(theirs)):
            if ours.get(key, _UNSET) != theirs.get(key, _UNSET):
                differences.append(f"{key} {_shown(ours.get(key, _UNSET))} (process 0) vs "
                                   f"{_shown(theirs.get(key, _UNSET))} (process {process})")
    if not differences:
        return ""
    more = len(differences) - _LISTED_DIFFERENCES
    listed = "; ".join(differences[:_LISTED_DIFFERENCES]) + (f"; and {more} more"
                                                             if more > 0 else "")
    return (f"distributed: the processes' configs differ: {listed}. Start every process "
            "with the same config and overrides (distributed.* aside).")


def _shown(value: Any) -> str:
    return "(not set)" if value is _UNSET else json.dumps(value)


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
