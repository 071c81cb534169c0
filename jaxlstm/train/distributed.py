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
  (`watching_peers`), instead of leaving them to JAX, which aborts them with a C++ stack.

How a job of several processes can fail, and what each process then does:

- a malformed `distributed.coordinator_address`: the config refuses it (exit 2);
- a process that never starts, or a coordinator address nobody answers at: after
  `distributed.initialization_timeout_s` one line and exit 2 on each process that did start
  (JAX itself would abort a few seconds later, with a C++ stack);
- processes given different configs: one line naming each differing key, exit 2, on all;
- a process that dies while they train (kill -9, out of memory, a crash): every other process
  prints one line and exits with code 1 within `GRACE_S` seconds; process 0 first marks
  `summary.json` "failed" with the reason (through `PeerWatch.on_failure`), and `--resume` on
  every process continues from the last checkpoint. A host that vanishes without closing
  its connections (power loss, a network partition) is noticed only by JAX's heartbeat,
  after `distributed.heartbeat_timeout_s`: JAX then aborts the survivors (SIGABRT, a C++
  stack) and the summary still says "running"; `--resume` works the same.

`initialize` must run before anything touches a device: `jax.distributed.initialize` refuses
afterwards.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import itertools
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from jaxlstm.train.config import (
    ConfigError,
    DistributedConfig,
    ExperimentConfig,
    address_problem,
)

NOT_JOINED_EXIT = 2  # jaxlstm.cli.exits.BAD_INPUT: the processes were not started as configured
PEER_STOPPED_EXIT = 1  # jaxlstm.cli.exits.STOPPED: the folder is consistent; resume
GRACE_S = 3.0
"""How long a process waits, once another has stopped, before it stops too: processes that
refuse alike (a config error every process raises) all leave in this time, and only a process
still waiting for the one that stopped is left to end."""


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
    _start_watching(config)
    return True


def _runtime() -> Any:
    """JAX's distributed state: the coordination service's client (its key-value store) and
    this process's place. Private to JAX, read as orbax and `multihost_utils` read it."""
    from jax._src import distributed as jax_distributed

    return jax_distributed.global_state


def _host_and_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


def _answers(address: str) -> bool:
    """Whether something accepts TCP connections at `address` ("host:port")."""
    try:
        with socket.create_connection(_host_and_port(address), timeout=2):
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
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = value

    walk("", {k: v for k, v in dataclasses.asdict(config).items() if k != "distributed"})
    return flat


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


# When one process of a job dies, JAX leaves the others waiting in their next collective
# until its heartbeat gives up on the dead one (`heartbeat_timeout_s`, 100 s by default), and
# then aborts them from C++: SIGABRT, a C++ stack, no Python code run, so nothing can mark the
# summary. (Its `missed_heartbeat_callback` cannot help from Python: jaxlib 0.10.2 cannot
# pass the callback's absl::Status argument to Python, and the call ends in std::terminate.)
# So every process keeps one plain TCP connection to process 0, of its own: a process that
# dies closes it, whatever killed it, which says at once that it is gone; and a process that
# hangs, or whose host or network fails, stops sending on it, which is noticed before JAX's
# heartbeat gives up (at `SILENCE_FRACTION` of its timeout).

SILENCE_FRACTION = 0.6
"""A peer silent this fraction of `distributed.heartbeat_timeout_s` is taken for dead: early
enough to mark the summary and exit before JAX aborts this process, late enough that a busy
peer (its Python threads wait for the GIL) is never mistaken for a dead one."""


class PeerWatch:
    """This process's connections to the others while they train together (see
    `watching_peers`). `on_failure(reason)` is called, in a background thread, just before a
    peer's death ends this process: the runner sets it to mark `summary.json` failed.

    Messages, one line each: "hello ID" (a peer connects to process 0), "beat" (every
    `self.interval_s`), "enter" (a run starts), "done" (past its last collective: it may end
    from now on), "stopped REASON" (it left a run by an error), "fail REASON" (process 0 ends
    the job)."""

    def __init__(self, process_id: int, count: int, silence_s: float):
        self.process_id, self.count = process_id, count
        self.silence_s = silence_s
        self.interval_s = min(1.0, silence_s / 10)
        self.on_failure: Callable[[str], None] | None = None
        self._lock = threading.Condition()
        self._connections: dict[int, socket.socket] = {}
        self._heard_at: dict[int, float] = {}  # peer -> when its last line came
        self._finished: set[int] = set()  # peers past their last collective: they may end
        self._stopped: dict[int, str] = {}  # peers that left a run unfinished -> why
        self._closed: set[int] = set()  # peers whose connection closed: gone for good
        self._inside = False  # between `enter` and leaving: collectives with every peer ahead
        self._exiting = False  # this process exits: nothing more to watch
        self._failing = False
        self._server: socket.socket | None = None

    # --- the connections: every process to process 0, set up in the background ---

    def start(self, client: Any, coordinator: str, timeout_s: int) -> None:
        """Process 0 listens and publishes its port in the key-value store; the others
        connect to it. A process that cannot connect goes unwatched (JAX's heartbeat remains)."""
        if self.process_id == 0:
            family = socket.AF_INET6 if socket.has_dualstack_ipv6() else socket.AF_INET
            self._server = socket.create_server(("", 0), family=family,
                                                dualstack_ipv6=family == socket.AF_INET6)
            client.key_value_set("jaxlstm/peers/port", str(self._server.getsockname()[1]))
            target: Callable[..., None] = self._accept
            args: tuple[Any, ...] = ()
        else:
            target, args = self._connect, (client, coordinator, timeout_s)
        for run, arguments in ((target, args), (self._beat, ())):
            threading.Thread(target=run, args=arguments, name="jaxlstm-peers",
                             daemon=True).start()
        atexit.register(self.close)

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:  # closed at exit
                return
            threading.Thread(target=self._read, args=(connection, None), daemon=True,
                             name="jaxlstm-peer").start()

    def _connect(self, client: Any, coordinator: str, timeout_s: int) -> None:
        try:
            port = int(client.blocking_key_value_get("jaxlstm/peers/port", timeout_s * 1000))
            connection = socket.create_connection((_host_and_port(coordinator)[0], port),
                                                  timeout=timeout_s)
            connection.settimeout(None)
            connection.sendall(f"hello {self.process_id}\n".encode())
        except Exception:  # noqa: BLE001 - unwatched, as before: JAX's heartbeat remains
            return
        self._register(0, connection)
        self._read(connection, 0)

    def _register(self, peer: int, connection: socket.socket) -> None:
        with self._lock:
            self._connections[peer] = connection
            self._heard_at[peer] = time.monotonic()

    def _read(self, connection: socket.socket, peer: int | None) -> None:
        """Follows one peer's messages until its connection closes."""
        try:
            for line in connection.makefile("r", encoding="utf-8"):
                word, _, rest = line.rstrip("\n").partition(" ")
                if word == "hello" and peer is None:
                    peer = int(rest)
                    self._register(peer, connection)
                elif peer is not None:
                    self._heard(peer, word, rest)
        except (OSError, ValueError):
            pass
        if peer is None:
            return
        with self._lock:
            self._closed.add(peer)
            if peer in self._finished or peer in self._stopped:
                return  # it finished, or said why it stopped: `_heard` saw to it
            reason = (f"process {peer} of {self.count} ended without a word (killed, out "
                      "of memory, or its host went down)")
            self._stopped[peer] = reason
            self._lock.notify_all()
            inside = self._inside and not self._exiting
        if inside:  # no grace: only a process that died says nothing, and nobody can go on
            self.fail(reason)

    def _heard(self, peer: int, word: str, rest: str) -> None:
        if word == "fail":  # no grace: process 0 has waited, and is gone in a moment
            self.fail(rest)
        with self._lock:
            self._heard_at[peer] = time.monotonic()
            if word in ("enter", "done"):
                self._stopped.pop(peer, None)
                (self._finished.add if word == "done" else self._finished.discard)(peer)
            elif word == "stopped":
                self._stopped[peer] = f"process {peer} of {self.count} stopped: {rest}"
                self._lock.notify_all()
        if word == "stopped":
            self._fail_unless_leaving()

    def _fail_unless_leaving(self) -> None:
        """A peer stopped: this process ends too unless it leaves the run itself within
        `GRACE_S` (it refused alike), as it would otherwise wait for the peer forever."""
        with self._lock:
            self._lock.wait_for(lambda: not self._inside or self._exiting, timeout=GRACE_S)
            reason = (next(iter(self._stopped.values()), None)
                      if self._inside and not self._exiting else None)
        if reason:
            self.fail(reason)

    def _beat(self) -> None:
        """Says "beat" to every connection, and ends this process when a peer it waits for
        has been silent `silence_s` (hung, or its host or the network failed)."""
        while True:
            time.sleep(self.interval_s)
            self._send_all("beat")
            now = time.monotonic()
            with self._lock:
                if self._exiting:
                    return
                silent = [p for p, at in self._heard_at.items() if now - at > self.silence_s
                          and p not in self._finished and p not in self._closed]
                inside = self._inside
            if silent and inside:
                self.fail(f"process {silent[0]} of {self.count} has not answered for "
                          f"{self.silence_s:.0f} s (hung, or its host or the network failed)")

    def _send_all(self, message: str) -> None:
        with self._lock:
            connections = list(self._connections.values())
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.sendall(f"{message}\n".encode())

    # --- a run: entered, left, or ended by a peer ---

    def enter(self) -> None:
        """This process starts a run with every peer (collectives ahead)."""
        with self._lock:
            self._inside = True
            gone = [self._stopped.get(p, f"process {p} of {self.count} has ended")
                    for p in sorted(self._closed)]
        if gone:
            self.fail(gone[0])
        self._send_all("enter")

    def leave(self) -> None:
        """This process is past its last collective: a peer may end from now on."""
        self._send_all("done")
        with self._lock:
            self._inside = False
            self._lock.notify_all()

    def leave_by(self, error: BaseException) -> None:
        """This process leaves the run by `error`. An error that is not a refusal or a
        signal may be the echo of a peer's stop (a collective failing for want of the peer):
        when a peer stopped with another reason within `GRACE_S`, the peer's stop ends this
        process, as it would have in the background."""
        ours = _describe(error)
        echo = isinstance(error, Exception) and not isinstance(error, ConfigError)
        with self._lock:
            if echo:
                self._lock.wait_for(lambda: bool(self._stopped), timeout=GRACE_S)
            theirs = [r for r in self._stopped.values() if not r.endswith(f": {ours}")]
        if echo and theirs:
            self.fail(theirs[0])
        self._send_all(f"stopped {ours}")
        with self._lock:
            self._inside = False
            self._lock.notify_all()

    def fail(self, reason: str) -> None:
        """Ends this process (exit code 1, one line) because of a peer: `on_failure` first
        (the summary), then process 0 tells the others why. Returns only while this process
        exits anyway."""
        with self._lock:
            if self._exiting and not self._failing:
                return
            while self._failing:  # another thread ends the process
                self._lock.wait()
            self._failing = self._exiting = True
        if self.on_failure is not None:
            try:
                self.on_failure(reason)
            except Exception as err:  # noqa: BLE001 - the line below must still come
                print(f"distributed: could not record the failure: {_describe(err)}",
                      file=sys.stderr)
        if self.process_id == 0:
            self._send_all(f"fail {reason}")
        print(f"distributed: {reason}; this process stops too (exit code "
              f"{PEER_STOPPED_EXIT}). Start every process again with --resume to continue "
              "from the last checkpoint.", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(PEER_STOPPED_EXIT)

    def close(self) -> None:
        """At exit: nothing more to watch; the peers see this connection close."""
        with self._lock:
            self._exiting = True
            self._lock.notify_all()
            connections = list(self._connections.values())
        for connection in [*connections, *([self._server] if self._server else [])]:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


def _describe(error: BaseException) -> str:
    """An error in one line, as a peer's stop is reported."""
    text = " ".join(str(error).split())
    if isinstance(error, ConfigError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


_WATCH: PeerWatch | None = None


def _start_watching(config: DistributedConfig) -> None:
    global _WATCH
    state = _runtime()
    if state.num_processes > 1 and _WATCH is None:
        _WATCH = PeerWatch(state.process_id, state.num_processes,
                           SILENCE_FRACTION * config.heartbeat_timeout_s)
        _WATCH.start(state.client, state.coordinator_address, config.initialization_timeout_s)


class _Alone:
    """What `watching_peers` yields in a single process: nothing to watch."""

    on_failure: Callable[[str], None] | None = None


@contextlib.contextmanager
def watching_peers() -> Iterator[PeerWatch | _Alone]:
    """The span of a run in which every process needs every other (its collectives).

    Inside it, a process that dies (at once), hangs (after `SILENCE_FRACTION` of
    `distributed.heartbeat_timeout_s`) or stops alone by an error (after `GRACE_S`) ends
    every other: one line on stderr naming the process and why, `on_failure(reason)` first
    (set it on the yielded object once there is a summary to mark), exit code 1
    (`PEER_STOPPED_EXIT`).
    Leaving it normally tells the others this process is done; leaving by an exception that
    every process raises alike (a refusal) re-raises it, as on one process.

        with distributed.watching_peers() as peers:
            ...  # open the run folder
            peers.on_failure = mark_summary_failed
            ...  # train, evaluate
    """
    watch = _WATCH
    if watch is None:
        yield _Alone()
        return
    watch.enter()
    try:
        yield watch
    except BaseException as err:
        watch.leave_by(err)
        raise
    watch.leave()
