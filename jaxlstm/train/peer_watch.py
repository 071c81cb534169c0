"""Watching the other processes of a run, so that one that dies, hangs or stops alone ends the
others in one line, with the summary marked "failed", instead of JAX's abort.

When one process of a job dies, JAX leaves the others waiting in their next collective
until its heartbeat gives up on the dead one (`heartbeat_timeout_s`, 100 s by default), and
then aborts them from C++: SIGABRT, a C++ stack, no Python code run, so nothing can mark the
summary. (Its `missed_heartbeat_callback` cannot help from Python: jaxlib 0.10.2 cannot
pass the callback's absl::Status argument to Python, and the call ends in std::terminate.)
So every process keeps one plain TCP connection to process 0, of its own: a process that
dies closes it, whatever killed it, which says at once that it is gone; and a process that
hangs, or whose host or network fails, stops sending on it, which is noticed before JAX's
heartbeat gives up (at `SILENCE_FRACTION` of its timeout).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from jaxlstm.train.config import ConfigError, DistributedConfig

PEER_STOPPED_EXIT = 1  # jaxlstm.cli.exits.STOPPED: the folder is consistent; resume
GRACE_S = 3.0
"""How long a process waits, once another has stopped, before it stops too: processes that
refuse alike (a config error every process raises) all leave in this time, and only a process
still waiting for the one that stopped is left to end."""


def host_and_port(address: str) -> tuple[str, int]:
    """(host, port) of a `host:port` address (an IPv6 host in brackets, `[::1]:1234`)."""
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


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
            connection = socket.create_connection((host_and_port(coordinator)[0], port),
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


def start(state: Any, config: DistributedConfig) -> None:
    """Starts watching the other processes (once per process, and only where there are
    others); `state` is JAX's distributed state (`distributed._runtime()`)."""
    global _WATCH
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
