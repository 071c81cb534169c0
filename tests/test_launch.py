"""`jaxlstm launch`: grids, bad input, SLURM parameters (with a fake sbatch), and a real sweep
through submitit's local executor, resumed.

Only two tests start jobs (each a fresh Python importing jax and compiling: seconds of CPU);
everything else runs in this process without training, or trains in it at tiny size.
"""

import importlib.util
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

from jaxlstm.cli import main
from jaxlstm.launch import executors, grid, jobs
from jaxlstm.launch import sweep as sweeps
from jaxlstm.launch.executors import Resources
from tests.test_train import QUICKSTART, TINY

SMALL = [*TINY, "training.steps=4", "training.eval_every=4", "checkpointing.every=4"]


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- grids: pure Python ---------------------------------------------------------------------

@pytest.mark.parametrize("value, parts", [
    ("1e-3", ["1e-3"]),
    ("1e-3,3e-3,1e-2", ["1e-3", "3e-3", "1e-2"]),
    ("[1,2]", ["[1,2]"]),
    ("[1,2],[3,4]", ["[1,2]", "[3,4]"]),
    ("{a: 1, b: [2,3]},{a: 2}", ["{a: 1, b: [2,3]}", "{a: 2}"]),
    ("'a,b'", ["'a,b'"]),
    ("'a,b','c'", ["'a,b'", "'c'"]),
    ('"a,\\"b,c"', ['"a,\\"b,c"']),
    ("'it''s,x',y", ["'it''s,x'", "y"]),
    ("", [""]),
])
def test_values_split_on_top_level_commas_only(value, parts):
    assert grid.split_values(value) == parts


def test_grid_is_the_cartesian_product_first_key_slowest():
    g = grid.expand_grid(["training.steps=4", "optimizer.learning_rate=1e-3,3e-3",
                          "model.cell=[1,2]", "model.hidden_size=8,16,32"])
    assert g.constant == ("training.steps=4", "model.cell=[1,2]")
    assert g.swept == {"optimizer.learning_rate": ("1e-3", "3e-3"),
                       "model.hidden_size": ("8", "16", "32")}
    assert [p.overrides for p in g.points[:4]] == [
        ("optimizer.learning_rate=1e-3", "model.hidden_size=8"),
        ("optimizer.learning_rate=1e-3", "model.hidden_size=16"),
        ("optimizer.learning_rate=1e-3", "model.hidden_size=32"),
        ("optimizer.learning_rate=3e-3", "model.hidden_size=8")]
    assert len(g.points) == 6 and g.is_sweep
    assert g.points[0].name == "optimizer.learning_rate=1e-3,model.hidden_size=8"
    assert not grid.expand_grid(["model.cell=[1,2]", "a=b"]).is_sweep


def test_point_names_are_file_system_safe_and_distinct():
    g = grid.expand_grid(["task.options.path=a/b,a:b,'x y'"])
    names = [p.name for p in g.points]
    assert names == ["task.options.path=a_b", "task.options.path=a_b-2",
                     "task.options.path=_x_y_"]
    long = grid.expand_grid([f"task.options.text={'x' * 300},{'x' * 299}y"])
    assert all(len(p.name) <= grid.MAX_NAME for p in long.points)
    assert len({p.name for p in long.points}) == 2


@pytest.mark.parametrize("overrides, message", [
    (["a=1,,2"], "empty value"),
    (["a=1,"], "empty value"),
    (["a=1,2,1"], "given twice"),
    (["a=1,2", "a=3,4"], "swept twice"),
    (["a=1,2", "a=3"], "both swept and fixed"),
    (["run_dir=x,y"], "cannot be swept"),
    (["name=a,b"], "cannot be swept"),
])
def test_grid_errors_name_the_override(overrides, message):
    with pytest.raises(grid.GridError, match=message):
        grid.expand_grid(overrides)


# --- bad input: one line, exit 2, nothing written ---------------------------------------------

@pytest.mark.parametrize("args, expected", [
    ([QUICKSTART, "--bogus"], "unrecognized arguments"),
    ([], "missing CONFIG"),
    ([QUICKSTART, "optimizer.learning_rate=1e-3,,3e-3"], "empty value"),
    ([QUICKSTART, "model.hidden_size=8,eight"], "model.hidden_size"),
    ([QUICKSTART, "optimizer.lr=1,2"], "optimizer.lr"),
    ([QUICKSTART, "a.b=1,2", "run_dir=/x"], "run_dir"),
    ([QUICKSTART, "--nodes", "2", "--executor", "local"], "--nodes"),
    ([QUICKSTART, "--nodes", "0"], "--nodes"),
    ([QUICKSTART, "--mem", "lots", "--executor", "local"], "--mem"),
    ([QUICKSTART, "--executor", "slurm"], "sbatch and srun not found"),
    ([QUICKSTART, "--executor", "slurm", "--gpus-per-node", "3", "--dry-run"],
     "multiple of the 3 GPUs"),
    (["--resume", "nowhere"], "neither a sweep folder"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, expected, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no sbatch here, even on a cluster
    runs = tmp_path / "runs"
    code = main(["launch", *args, *([f"runs_root={runs}", *SMALL] if args else [])])
    assert code == 2
    assert expected in one_line(capsys)
    assert not runs.exists()


# --- SLURM: parameters and scripts, without a cluster -----------------------------------------

def test_slurm_jobs_run_one_task_per_gpu_with_the_flags_as_sbatch_options(tmp_path):
    gpu = Resources("slurm", nodes=2, gpus_per_node=4, partition="gpu", time_min=30,
                    account="lab", qos="high", constraint="a100", cpus_per_task=8, mem="64G",
                    slurm=(("exclusive", True), ("mail-type", "END")),
                    setup=("module load cuda",), job_name="jaxlstm-adding", max_parallel=2)
    params = executors.slurm_parameters(gpu)
    assert params["nodes"] == 2 and params["ntasks_per_node"] == 4
    assert params["gpus_per_node"] == 4 and params["array_parallelism"] == 2
    script = executors.sbatch_script(gpu, str(tmp_path), array_size=3)
    for line in ["--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu",
                 "--time=30", "--account=lab", "--qos=high", "--constraint=a100",
                 "--cpus-per-task=8", "--mem=64G", "--array=0-2%2", "--exclusive",
                 "--mail-type=END", "--job-name=jaxlstm-adding",
                 f"--signal=USR2@{executors.SIGNAL_DELAY_S}"]:
        assert f"#SBATCH {line}\n" in script, line
    assert "\nmodule load cuda\n" in script and "srun --unbuffered" in script
    cpu = executors.slurm_parameters(Resources("slurm", nodes=3))
    assert cpu["ntasks_per_node"] == 1 and "gpus_per_node" not in cpu
    assert cpu["time"] == executors.DEFAULT_SLURM_TIME_MIN
    assert executors.local_parameters(Resources("local"), (2, 3))["visible_gpus"] == (2, 3)


def test_dry_run_prints_the_points_and_sbatch_script_and_writes_nothing(tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    code = main(["launch", QUICKSTART, *SMALL, "optimizer.learning_rate=1e-3,3e-3",
                 f"runs_root={tmp_path / 'runs'}", "--executor", "slurm", "--gpus-per-node",
                 "2", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "optimizer.learning_rate=3e-3 -> " in out and "#SBATCH --array=0-1%2\n" in out
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch, srun and squeue on the PATH: sbatch keeps each script and answers with the next
    job id; squeue lists what `queue` holds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "sbatch": f"""#!/bin/sh
n=$(cat {bin_dir}/count 2>/dev/null || echo 4241); n=$((n + 1)); echo $n > {bin_dir}/count
cp "$1" {bin_dir}/job-$n.sh
echo "Submitted batch job $n"
""",
        "srun": "#!/bin/sh\nexit 0\n",
        "squeue": f"#!/bin/sh\ncat {bin_dir}/queue 2>/dev/null\nexit 0\n",
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def test_slurm_sweep_is_one_array_then_a_table_job(fake_slurm, tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["launch", QUICKSTART, *SMALL, "optimizer.learning_rate=1e-3,3e-3",
            f"runs_root={runs}", "--executor", "slurm", "--nodes", "2", "--gpus-per-node", "4",
            "--partition", "gpu", "--time", "30", "--max-parallel", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    array, table_job = (fake_slurm / "job-4242.sh").read_text(), \
        (fake_slurm / "job-4243.sh").read_text()
    for line in ["--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu",
                 "--time=30", "--array=0-1%1"]:
        assert f"#SBATCH {line}\n" in array, line
    assert "#SBATCH --dependency=afterany:4242\n" in table_job
    assert "#SBATCH --ntasks-per-node=1\n" in table_job and "gpus" not in table_job
    (folder,) = (runs / "quickstart").iterdir()
    record = json.loads((folder / "sweep.json").read_text())
    assert record["launches"][0]["jobs"] == {"optimizer.learning_rate=1e-3": "4242_0",
                                             "optimizer.learning_rate=3e-3": "4242_1"}
    assert (folder / "submitit" / "4242_1_submitted.pkl").is_file()
    assert "4242_0  [1/2] optimizer.learning_rate=1e-3" in out and "table job 4243" in out

    (fake_slurm / "queue").write_text("4242_1\n")  # still running: a resume must wait
    assert main(["launch", "--resume", str(folder), "--executor", "slurm"]) == 2
    assert "still queued or running (4242_1)" in one_line(capsys)


def test_one_config_is_one_job_in_its_own_run_folder(fake_slurm, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["launch", QUICKSTART, *SMALL, f"runs_root={runs}", "--executor", "slurm",
                 "--account", "lab"]) == 0
    script = (fake_slurm / "job-4242.sh").read_text()
    assert "--array" not in script and "#SBATCH --account=lab\n" in script
    assert not (fake_slurm / "job-4243.sh").exists()  # no sweep, no table job
    (run_dir,) = (runs / "quickstart").iterdir()
    assert os.listdir(run_dir) == ["submitit"]  # claimed; the job writes the rest
    assert f"4242  quickstart -> {run_dir}" in capsys.readouterr().out


def test_a_resume_waits_for_local_jobs_still_running(tmp_path):
    import subprocess

    # A process whose command line names submitit, as a local controller's does. Not
    # `sh -c "sleep 30"`: dash execs its last command, and the command line becomes sleep's.
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "submitit"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the child has exec'd its own command line
            with open(f"/proc/{job.pid}/cmdline", "rb") as f:
                if b"submitit" in f.read():
                    break
            time.sleep(0.02)
        launch = {"executor": "local", "host": executors.hostname(),
                  "jobs": {"a": str(job.pid), "b": "999999999"}}
        assert executors.still_queued(launch) == [str(job.pid)]
        assert executors.still_queued({**launch, "host": "elsewhere"}) == []
    finally:
        job.kill()
        job.wait()


# --- jobs, in this process ----------------------------------------------------------------------

def test_a_failed_point_leaves_one_line_that_the_table_shows(tmp_path):
    g = grid.expand_grid(["training.batch_size=7,8"])  # 7 rows cannot split over 2 devices
    folder = tmp_path / "sweep"
    folder.mkdir()
    from jaxlstm.train.config import load_config

    base = load_config(QUICKSTART, [*SMALL, f"runs_root={tmp_path}"])
    sweep = sweeps.create(str(folder), "quickstart", QUICKSTART, ["training.batch_size=7,8"],
                          g, base)
    job = jobs.TrainJob(sweep.point_config(g.points[0]), str(folder))
    with pytest.raises(Exception, match="training.batch_size"):
        job()
    state = sweeps.point_state(sweep.run_dir(g.points[0]))
    assert state.status == "failed" and "multiple of the number of devices" in state.detail
    text = (folder / "sweep.md").read_text()
    assert "| 1 | 7 | failed: training.batch_size: expected a multiple" in text
    assert "| 2 | 8 | not started |" in text


def test_the_time_limit_warning_stops_the_run_like_sigterm_then_requeues():
    stops, requeues = [], []
    previous_term = signal.signal(signal.SIGTERM, lambda s, f: stops.append(s))
    previous_usr = signal.signal(signal.SIGUSR2, lambda s, f: requeues.append(s))
    try:
        with jobs._SaveThenRequeue() as warning:
            os.kill(os.getpid(), signal.SIGUSR2)
        assert warning.signalled and stops == [signal.SIGUSR2] and requeues == []
        warning.hand_over()  # submitit's handler: checkpoint, requeue
        assert requeues == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGUSR2, previous_usr)


def test_a_time_limit_warning_before_the_run_folder_requeues_the_job(monkeypatch, tmp_path):
    # While the run still builds and compiles, a signal stops it at once with nothing
    # written (Interrupted); the time-out warning must then still requeue the job.
    from jaxlstm.train.config import load_config
    from jaxlstm.train.interrupts import Interrupted, RunSignals

    def run_experiment(config, **how):
        with RunSignals():
            os.kill(os.getpid(), signal.SIGUSR2)  # handled on the next bytecode
            raise AssertionError("the warning did not stop the run")

    monkeypatch.setattr("jaxlstm.train.run.run_experiment", run_experiment)
    requeues = []
    previous_usr = signal.signal(signal.SIGUSR2, lambda s, f: requeues.append(s))
    try:
        config = load_config(QUICKSTART, [*SMALL, f"run_dir={tmp_path / 'run'}"])
        with pytest.raises(Interrupted):
            jobs.TrainJob(config)()
        assert requeues == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous_usr)


# --- a sweep through submitit's local executor, and its resume -------------------------------

@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """A 2-point sweep run by the local executor, 2 jobs at once: (exit code, stdout, folder)."""
    import contextlib
    import io

    runs = tmp_path_factory.mktemp("runs")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["launch", QUICKSTART, *SMALL, "optimizer.learning_rate=1e-3,3e-3",
                     f"runs_root={runs}", "--executor", "local", "--max-parallel", "2"])
    (folder,) = (runs / "quickstart").iterdir()
    return code, out.getvalue(), folder


def final_metrics(folder: Path) -> dict[str, float]:
    finals = {}
    for point in ("optimizer.learning_rate=1e-3", "optimizer.learning_rate=3e-3"):
        summary = json.loads((folder / point / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["step"] == 4
        finals[point] = summary["final"][summary["metric"]]
    return finals


@pytest.mark.slow
def test_local_sweep_runs_every_point_and_writes_the_table(local_sweep):
    code, out, folder = local_sweep
    assert code == 0, out
    finals = final_metrics(folder)
    text = (folder / "sweep.md").read_text()
    assert "2 of 2 points completed" in text
    for n, (point, value) in enumerate(finals.items(), start=1):
        assert f"| {n} | {point.split('=')[1]} | completed | " in text
        assert f"{value:.4g}" in text
        assert f"{point}: completed, mse {value:.4g} (4 steps" in out
    assert out.count(": job ") == 2 and "_0_log.out" in out
    if importlib.util.find_spec("matplotlib"):
        assert (folder / "sweep.png").stat().st_size > 5_000


@pytest.mark.slow
def test_resume_skips_completed_points_and_continues_an_unfinished_one(local_sweep, capsys):
    _, _, folder = local_sweep
    finals = final_metrics(folder)
    table_before = (folder / "sweep.md").stat().st_mtime_ns
    assert main(["launch", "--resume", str(folder)]) == 0  # nothing to run: only the table
    assert "2 of 2 points completed (skipped), 0 to run" in capsys.readouterr().out
    assert (folder / "sweep.md").stat().st_mtime_ns > table_before
    assert len(json.loads((folder / "sweep.json").read_text())["launches"]) == 1

    # As if the first point's job had been killed after its last checkpoint.
    first, second = folder / "optimizer.learning_rate=1e-3", folder / "optimizer.learning_rate=3e-3"
    summary = json.loads((first / "summary.json").read_text())
    (first / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    untouched = (second / "summary.json").stat().st_mtime_ns
    assert main(["launch", "--resume", str(folder), "--executor", "local"]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 points completed (skipped), 1 to run" in out
    assert "[1/2] optimizer.learning_rate=1e-3: completed" in out
    resumed = json.loads((first / "summary.json").read_text())
    assert resumed["status"] == "completed" and [r["step"] for r in resumed["resumes"]] == [4]
    assert final_metrics(folder) == finals
    assert (second / "summary.json").stat().st_mtime_ns == untouched
    assert "2 of 2 points completed" in (folder / "sweep.md").read_text()
    launches = json.loads((folder / "sweep.json").read_text())["launches"]
    assert list(launches[-1]["jobs"]) == ["optimizer.learning_rate=1e-3"]
