"""The same config on 1 device, 4 devices and 2 processes trains the same model, and a run
killed with SIGKILL and resumed ends exactly as an uninterrupted one, on each layout.

The runs train on file data: the adding problem's sequences written to an .npz file and
converted to ArrayRecord shards (`task.name: arrays`, `task.options.path: <shards>`), so each
process streams only its rows of every batch from disk through the prefetching loader, whose
position is saved with each checkpoint.

Device counts are fixed when jax starts, so every run here is a child process
(`tests/distributed_run.py`) with its own `--xla_force_host_platform_device_count`; the two
processes of a multi-process run meet through `jax.distributed.initialize` on 127.0.0.1 (gloo
collectives on CPU), each with 2 devices. The runs are started together in a few waves, once
per module, and the tests read their folders.

Tolerance: the global batch is the same on every layout, so the only difference is the order
in which the gradient's batch sum is added up (per device, then across devices). Measured
differences after 12 Adam steps are around 1e-7 relative; the tests allow 1e-5 relative (plus
1e-7 absolute for values near zero), far below any real difference (a different batch or a
missing gradient average changes the loss in the second or third digit).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxlstm.tasks.files import ArraysTask, shards
from jaxlstm.train.config import load_config
from tests.test_train import QUICKSTART, TINY, final_params, read

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, "tests", "distributed_run.py")
RUN = [*TINY, "training.steps=12", "training.eval_every=4", "logging.log_every=2",
       "checkpointing.every=4"]
# The quickstart's tiny settings on file data: the adding problem (T=8) in shards.
FILE_CONFIG = """\
task:
  name: arrays
  options: {{path: {path}}}
model: {{hidden_size: 8}}
optimizer: {{name: adam, learning_rate: 0.005}}
training: {{steps: 12, batch_size: 8, eval_every: 4, eval_batch_size: 64}}
logging: {{log_every: 2, progress: false, tensorboard: false, plots: false}}
checkpointing: {{every: 4}}
"""
KILL_AT = 6  # SIGKILL when asked for step 6's batch: checkpoint 4 is on disk, steps 5-6 not
RTOL, ATOL = 1e-5, 1e-7
WAIT_S = 150  # per wave; a hung collective fails the test instead of hanging the suite

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env


def file_config(folder):
    """A config training on the adding problem's sequences, converted to shards."""
    from jaxlstm.tasks.adding import adding_batch

    batch = adding_batch(np.random.default_rng(0), 400, 8)
    np.savez(folder / "adding.npz", inputs=batch["inputs"], targets=batch["targets"][:, 0])
    converted = str(folder / "adding-shards")
    shards.convert(ArraysTask(path=str(folder / "adding.npz")), converted, {},
                   shard_bytes=8000)
    path = folder / "file.yaml"
    path.write_text(FILE_CONFIG.format(path=converted))
    return str(path)


def start(run_dir, devices, *overrides, interrupt_at=None, kill_at=None, config=None):
    """A child run: on the file-data config, or `config` (a YAML file) with the tiny `RUN`
    overrides."""
    request = {"config": config or CONFIG["file"],
               "overrides": [f"run_dir={run_dir}", *overrides] if config is None
               else [*RUN, f"run_dir={run_dir}", *overrides],
               "interrupt_at": interrupt_at, "kill_at": kill_at}
    return subprocess.Popen([sys.executable, CHILD, json.dumps(request)], cwd=ROOT,
                            env=child_env(devices), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def start_two_processes(run_dir, *overrides, steps_overrides=(), interrupt_at=None,
                        kill_at=None, config=None):
    """Two processes of one run, 2 devices each; short timeouts so a dead peer is noticed."""
    address = f"127.0.0.1:{free_port()}"
    return [start(run_dir, 2, f"distributed.coordinator_address={address}",
                  "distributed.num_processes=2", f"distributed.process_id={i}",
                  "distributed.initialization_timeout_s=60",
                  "distributed.heartbeat_timeout_s=10", "distributed.shutdown_timeout_s=20",
                  *overrides, *steps_overrides, interrupt_at=interrupt_at, kill_at=kill_at,
                  config=config)
            for i in range(2)]


def finish(processes, *, expect=0):
    """Waits for every process; returns the last stdout line (JSON) of each (None for a
    process killed as `expect` < 0 asks)."""
    deadline = time.monotonic() + WAIT_S
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert process.returncode == expect, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]) if expect >= 0 else None)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return results


CONFIG: dict[str, str] = {}  # "file": the file-data config, written by the fixture


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders: `one` (1 device), `four` (4 devices), `two_processes` (2 x 2 devices); on
    each layout a run killed with SIGKILL at step 6 and resumed on the same layout
    (`one_killed`, `four_killed`, `two_killed`); the killed 4-device run also resumed on 1
    device and on 2 processes (copies: `four_then_one`, `four_then_two`); and a 2-process run
    interrupted (Ctrl-C) at step 6 and resumed on 2 processes (`two_split`)."""
    root = tmp_path_factory.mktemp("distributed")
    CONFIG["file"] = file_config(root)
    names = ("one", "four", "two_processes", "one_killed", "four_killed", "two_split",
             "two_killed")
    folder = {name: str(root / name) for name in names}
    done = {}
    first = [start(folder["one"], 1), start(folder["four"], 4)]
    killed = [start(folder["one_killed"], 1, kill_at=KILL_AT),
              start(folder["four_killed"], 4, kill_at=KILL_AT)]
    done["one"], done["four"] = finish(first)
    finish(killed, expect=-signal.SIGKILL)
    folder["four_then_one"] = str(root / "four_then_one")
    folder["four_then_two"] = str(root / "four_then_two")
    shutil.copytree(folder["four_killed"], folder["four_then_one"])
    shutil.copytree(folder["four_killed"], folder["four_then_two"])
    second = [start(folder["four_then_one"], 1, "resume=true"),
              *start_two_processes(folder["two_processes"]),
              start(folder["one_killed"], 1, "resume=true"),
              start(folder["four_killed"], 4, "resume=true")]
    results = finish(second)
    done["four_then_one"], done["two_processes"] = results[0], results[1]
    done["two_processes_other"] = results[2]
    done["one_resumed"], done["four_resumed"] = results[3], results[4]
    third = [*start_two_processes(folder["four_then_two"], "resume=true"),
             *start_two_processes(folder["two_split"], interrupt_at=6)]
    results = finish(third)
    done["four_then_two"], done["two_split"] = results[0], results[2]
    killed = start_two_processes(folder["two_killed"], kill_at=KILL_AT)
    for process in killed:  # both kill themselves; a survivor's peer may be gone first
        process.communicate(timeout=WAIT_S)
        assert process.returncode != 0
    fourth = [*start_two_processes(folder["two_split"], "resume=true"),
              *start_two_processes(folder["two_killed"], "resume=true")]
    results = finish(fourth)
    done["two_resumed"], done["two_killed_resumed"] = results[0], results[2]
    return folder, done


def records(run_dir):
    return [json.loads(line) for line in read(run_dir).splitlines()]


def assert_same_metrics(run_dir, reference):
    ours, theirs = records(run_dir), records(reference)
    assert [(r["step"], r["split"], sorted(r)) for r in ours] == \
        [(r["step"], r["split"], sorted(r)) for r in theirs]
    worst = 0.0
    for mine, other in zip(ours, theirs, strict=True):
        for key in sorted(set(mine) - {"step", "split"}):
            worst = max(worst, abs(mine[key] - other[key]) / max(abs(other[key]), 1e-30))
            np.testing.assert_allclose(mine[key], other[key], rtol=RTOL, atol=ATOL,
                                       err_msg=f"step {mine['step']} {mine['split']} {key}")
    print(f"{os.path.basename(run_dir)}: metrics differ by at most {worst:.2e} relative")


def assert_same_params(run_dir, reference):
    config = load_config(CONFIG["file"])
    ours = final_params(run_dir, config).params
    theirs = final_params(reference, config).params
    worst = 0.0
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        worst = max(worst, float(np.max(np.abs(a - b))))
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    print(f"{os.path.basename(run_dir)}: params differ by at most {worst:.2e} absolute")


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def test_four_devices_train_what_one_device_trains(runs):
    folder, done = runs
    assert (done["one"]["devices"], done["four"]["devices"]) == (1, 4)
    assert summary(folder["four"])["mesh"] == {"data": 4}
    assert_same_metrics(folder["four"], folder["one"])
    assert_same_params(folder["four"], folder["one"])


def test_two_processes_train_what_one_device_trains(runs):
    folder, done = runs
    assert done["two_processes"]["processes"] == 2 and done["two_processes"]["devices"] == 4
    assert done["two_processes_other"]["run_dir"] == done["two_processes"]["run_dir"]
    where = summary(folder["two_processes"])
    assert (where["processes"], where["devices"], where["local_devices"]) == (2, 4, 2)
    assert_same_metrics(folder["two_processes"], folder["one"])
    assert_same_params(folder["two_processes"], folder["one"])


def test_only_process_zero_writes_and_the_saved_config_runs_anywhere(runs):
    folder, _ = runs
    saved = load_config(os.path.join(folder["two_processes"], "config.yaml"))
    assert saved.distributed.coordinator_address is None  # where it ran is not what it is
    assert sorted(os.listdir(folder["two_processes"])) == sorted(os.listdir(folder["one"]))


@pytest.mark.parametrize("resumed", ["four_then_one", "four_then_two"])
def test_a_checkpoint_written_on_four_devices_resumes_elsewhere(runs, resumed):
    folder, done = runs
    # The 4-device run killed after step 6 resumes from its checkpoint of step 4.
    assert done[resumed]["status"] == "completed"
    assert_same_metrics(folder[resumed], folder["one"])
    assert_same_params(folder[resumed], folder["one"])
    resumes = summary(folder[resumed])["resumes"]
    assert [(r["step"], r["devices"]) for r in resumes] == [(4, 1 if "one" in resumed else 4)]


def test_two_processes_interrupted_then_resumed_equal_two_processes_uninterrupted(runs):
    # Exact: same layout, same sums, so the files are identical, not merely close.
    folder, done = runs
    assert done["two_split"]["status"] == "interrupted" and done["two_split"]["step"] == 6
    assert done["two_resumed"]["status"] == "completed"
    assert_identical_runs(folder["two_split"], folder["two_processes"])


def assert_identical_runs(run_dir, reference):
    """The same metrics file, byte for byte, and the same final parameters, bit for bit."""
    assert read(run_dir) == read(reference)
    config = load_config(CONFIG["file"])
    resumed = final_params(run_dir, config).params
    whole = final_params(reference, config).params
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(whole), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("layout, reference", [("one", "one"), ("four", "four"),
                                               ("two", "two_processes")])
def test_killed_on_file_data_then_resumed_equals_uninterrupted_on_each_layout(runs, layout,
                                                                             reference):
    # Exact: each resumed run is compared with the uninterrupted run of its own layout.
    folder, done = runs
    resumed = done[f"{layout}_resumed" if layout != "two" else "two_killed_resumed"]
    assert resumed["status"] == "completed"
    run_dir = folder[f"{layout}_killed"]
    assert [r["step"] for r in summary(run_dir)["resumes"]] == [4]
    assert_identical_runs(run_dir, folder[reference])
    with open(os.path.join(run_dir, "checkpoints", "12", "loader", "metadata")) as f:
        assert json.load(f) == {"next_index": 12}  # the loader's position, saved with it


def test_a_batch_that_does_not_split_over_the_devices_is_one_line_and_exit_2(tmp_path):
    process = subprocess.run(  # noqa: PLW1510 - the exit code is the test
        [sys.executable, "-m", "jaxlstm.cli", "train", QUICKSTART, *RUN,
         f"run_dir={tmp_path / 'odd'}", "training.batch_size=6"],
        cwd=ROOT, env=child_env(4), capture_output=True, text=True, timeout=WAIT_S)
    assert process.returncode == 2, process.stderr
    assert process.stderr.count("\n") == 1
    assert "training.batch_size: expected a multiple of the number of devices (4" in \
        process.stderr
    assert not os.path.exists(tmp_path / "odd")


SLURM_TASK = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_PROCID": "1",
              "SLURM_LOCALID": "0"}


@pytest.mark.parametrize("env, values, expected", [
    ({}, {}, False),  # one machine: nothing to start
    ({**SLURM_TASK, "SLURM_NTASKS": "1"}, {}, False),  # one SLURM task: still one process
    ({**SLURM_TASK, "SLURM_NTASKS": "4"}, {}, True),  # srun with 4 tasks
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, {}, False),  # sbatch's script, not a step
    ({"OMPI_MCA_orte_hnp_uri": "1;tcp://h:1", "OMPI_COMM_WORLD_SIZE": "2"}, {}, True),
    ({}, {"coordinator_address": "127.0.0.1:1234"}, True),
    ({}, {"enabled": True}, True),  # a TPU pod slice
    ({**SLURM_TASK, "SLURM_NTASKS": "4"}, {"enabled": False}, False),
])
def test_the_runtime_starts_exactly_when_there_are_several_processes(monkeypatch, env, values,
                                                                      expected):
    from jaxlstm.train import distributed
    from jaxlstm.train.config import DistributedConfig

    for name in [*SLURM_TASK, "SLURM_NTASKS", "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.wanted(DistributedConfig(**values)) is expected


def test_bad_distributed_values_are_config_errors(tmp_path):
    from jaxlstm.train.config import ConfigError

    for override, message in (("distributed.process_id=2", "distributed.process_id"),
                              ("distributed.num_processes=0", "distributed.num_processes"),
                              ("distributed.local_device_ids=[]", "local_device_ids"),
                              ("distributed.heartbeat_timeout_s=0", "heartbeat_timeout_s")):
        with pytest.raises(ConfigError, match=message):
            load_config(QUICKSTART, [override, "distributed.num_processes=2"]
                        if "process_id" in override else [override])
