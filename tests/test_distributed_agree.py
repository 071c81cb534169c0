"""Several processes that must agree, and how a job of several ends when they do not: configs
that differ, a coordinator address without a port, a process that never starts, one that
dies or hangs while the others train, and SIGTERM reaching the runner rather than JAX.

The job-level tests start real processes of the `jaxlstm train` command on 127.0.0.1 (CPU
devices, gloo collectives), as `tests/test_distributed.py` does; how the processes watch each
other (`PeerWatch`) is tested on a socket pair within this process, where a hang is cheap.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from jaxlstm.train import peer_watch
from jaxlstm.train.config import ConfigError, load_config
from tests.test_distributed import ROOT, child_env, free_port
from tests.test_train import QUICKSTART, TINY, read

WAIT_S = 120
# What a process that JAX aborted, or that crashed in Python, prints: a traceback, JAX's
# C++ log lines (glog's "E1207 12:26:41.228784 ..."), a C++ stack.
NOT_ONE_LINE = re.compile(r"Traceback|^[EF]\d{4} \d\d:|Check failure|terminate called",
                          re.MULTILINE)


def train(run_dir, process_id, port, *overrides, timeout_s=30):
    """One process of a 2-process `jaxlstm train` of the tiny quickstart, 1 device each."""
    return subprocess.Popen(
        [sys.executable, "-m", "jaxlstm.cli", "train", QUICKSTART, *TINY, f"run_dir={run_dir}",
         f"distributed.coordinator_address=127.0.0.1:{port}", "distributed.num_processes=2",
         f"distributed.process_id={process_id}",
         f"distributed.initialization_timeout_s={timeout_s}",
         "distributed.heartbeat_timeout_s=10", "distributed.shutdown_timeout_s=10",
         *overrides],
        cwd=ROOT, env=child_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ended(process, timeout=WAIT_S):
    try:
        _, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, err


def test_processes_given_different_configs_refuse_alike_before_anything(tmp_path):
    run_dir = tmp_path / "run"
    port = free_port()
    processes = [train(run_dir, 0, port, "training.steps=4"),
                 train(run_dir, 1, port, "training.steps=5", "optimizer.learning_rate=0.003")]
    expected = ("config error: distributed: the processes' configs differ: "
                "optimizer.learning_rate 0.005 (process 0) vs 0.003 (process 1); "
                "training.steps 4 (process 0) vs 5 (process 1).")
    for process in processes:
        code, err = ended(process)
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith(expected), err
    assert not os.path.exists(run_dir)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:", "host:0", "host:65536",
                                     "::1:1234", "a b:1234"])
def test_a_coordinator_address_that_is_not_host_and_port_is_one_config_error(address):
    with pytest.raises(ConfigError, match=r"distributed\.coordinator_address: expected "
                                          r"host:port, e\.g\."):
        load_config(QUICKSTART, [f"distributed.coordinator_address='{address}'"])
    for good in ("10.0.0.1:1234", "'[::1]:1234'", "node-7.cluster:29500"):  # quoted: YAML
        load_config(QUICKSTART, [f"distributed.coordinator_address={good}"])


def test_a_peer_that_never_starts_is_one_line_and_exit_2_after_the_timeout(tmp_path):
    run_dir = tmp_path / "run"
    started = time.monotonic()
    code, err = ended(train(run_dir, 0, free_port(), timeout_s=2))
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert err.startswith("distributed: not all 2 processes joined within "
                          "distributed.initialization_timeout_s (2 s) (this is process 0"), err
    assert time.monotonic() - started < 30
    assert not os.path.exists(run_dir)


def test_a_killed_process_ends_the_other_in_one_line_and_a_summary_that_says_failed(tmp_path):
    run_dir = tmp_path / "run"
    port = free_port()
    long_run = ["training.steps=100000", "training.eval_every=100000", "logging.log_every=1",
                "checkpointing.every=2"]
    processes = [train(run_dir, i, port, *long_run) for i in range(2)]
    try:
        deadline = time.monotonic() + WAIT_S
        while not (os.path.exists(run_dir / "metrics.jsonl")
                   and read(run_dir).count("\n") >= 3):
            assert processes[0].poll() is None, processes[0].communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the two processes never got going"
            time.sleep(0.1)
        processes[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        code, err = ended(processes[0], timeout=60)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate()
    assert code == peer_watch.PEER_STOPPED_EXIT, err
    assert time.monotonic() - killed_at < 8  # before JAX's heartbeat (10 s) would abort it
    assert not NOT_ONE_LINE.search(err), err
    last = err.strip().splitlines()[-1]
    reason = "process 1 of 2 ended without a word (killed, out of memory, or its host went down)"
    assert last.startswith(f"distributed: {reason}; this process stops too (exit code 1). "
                           "Start every process again with --resume"), err
    with open(run_dir / "summary.json") as f:
        summary = json.load(f)
    assert (summary["status"], summary["failure"]) == ("failed", reason)
    assert summary["step"] >= 3 and os.listdir(run_dir / "checkpoints")  # --resume has one


def test_sigterm_reaches_the_runner_not_jax_preemption_service():
    # The runner's own handler stops every process at the same step (and SLURM sends SIGTERM
    # before it kills a job); JAX's preemption service would catch the signal in C++.
    child = f"""
import os, signal, time
from jaxlstm.train import distributed
from jaxlstm.train.config import DistributedConfig
seen = []
signal.signal(signal.SIGTERM, lambda *_: seen.append(1))  # as the runner does, before
distributed.initialize(DistributedConfig(coordinator_address="127.0.0.1:{free_port()}",
                                         num_processes=1, process_id=0))
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.2)
print("seen" if seen else "lost")
"""
    result = subprocess.run([sys.executable, "-c", child], cwd=ROOT, env=child_env(1),
                            capture_output=True, text=True, timeout=WAIT_S, check=True)
    assert result.stdout.split() == ["seen"], result.stderr


# --- PeerWatch, on a socket pair: process 0's watch, and the peer's end as raw lines ---


@pytest.fixture
def watch(monkeypatch):
    """Process 0's watch of one peer, whose end of the connection the test holds (`peer_end`),
    installed as `watching_peers`'s; `exits` records the failure reasons and exit codes
    instead of ending pytest."""
    monkeypatch.setattr(peer_watch, "GRACE_S", 0.3)
    exits, released = [], threading.Event()

    def exit_instead(code):
        exits.append(code)
        released.wait()  # the thread that would have ended the process goes no further

    monkeypatch.setattr(peer_watch.os, "_exit", exit_instead)
    ours, theirs = socket.socketpair()
    peers = peer_watch.PeerWatch(0, 2, silence_s=1.0)
    peers.on_failure = exits.append
    peers._register(1, ours)
    for target, args in ((peers._read, (ours, 1)), (peers._beat, ())):
        threading.Thread(target=target, args=args, daemon=True).start()
    monkeypatch.setattr(peer_watch, "_WATCH", peers)
    peers.exits, peers.peer_end = exits, theirs
    yield peers
    released.set()
    peers.close()
    theirs.close()


def wait_for(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_a_silent_peer_is_taken_for_dead_before_jax_would_abort(watch):
    with peer_watch.watching_peers():  # the peer says nothing: hung, or its host is gone
        assert wait_for(lambda: watch.exits, 5)
    silent = "process 1 of 2 has not answered for 1 s (hung, or its host or the network failed)"
    assert watch.exits == [silent, 1]


def test_a_peer_that_refuses_as_this_process_does_is_no_failure(watch):
    with pytest.raises(ConfigError), peer_watch.watching_peers():
        watch.peer_end.sendall(b"stopped resume: nothing to resume\n")
        raise ConfigError("resume: nothing to resume")
    assert not wait_for(lambda: watch.exits, 0.6)  # past the grace
    watch.peer_end.settimeout(1)
    assert b"stopped resume: nothing to resume\n" in watch.peer_end.recv(4096)  # it heard
    watch.peer_end.close()  # it exits, as this process does
    assert not wait_for(lambda: watch.exits, 0.3)


def test_a_peer_that_stops_alone_ends_this_process_after_the_grace(watch):
    with peer_watch.watching_peers():
        watch.peer_end.sendall(b"stopped KeyboardInterrupt\n")  # e.g. Ctrl-C on its terminal
        time.sleep(0.1)
        assert not watch.exits
        assert wait_for(lambda: watch.exits, 5)
    assert watch.exits == ["process 1 of 2 stopped: KeyboardInterrupt", 1]


def test_a_peer_that_finished_may_end_without_failing_this_one(watch):
    with peer_watch.watching_peers():
        watch.peer_end.sendall(b"done\n")
        watch.peer_end.close()
        assert not wait_for(lambda: watch.exits, 1.5)  # past the silence, too
