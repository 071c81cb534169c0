"""`jaxlstm runs` and `jaxlstm compare`: run folders found, listed, set side by side.

Most run folders here are written by hand (a `config.yaml`, a `summary.json`, a
`metrics.jsonl`), as the runner leaves them at each status, so that no test trains for them;
one module fixture trains two tiny runs through `jaxlstm train` to show the whole path.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jaxlstm.cli import main, shipped
from jaxlstm.launch import grid, sweep
from jaxlstm.train import runs_index
from jaxlstm.train.config import load_config, to_yaml
from tests.test_cli import one_line, snapshot
from tests.test_train import TINY

QUICKSTART = shipped.resolve("quickstart")


def write_run(folder: Path, overrides=(), summary=None, curve=(), config=QUICKSTART) -> Path:
    """A run folder as the runner leaves it: the config `config` + `overrides` resolved, and
    (when given) its summary and a `metrics.jsonl` with one train and one eval line per
    (step, loss) of `curve`."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(to_yaml(load_config(config, list(overrides))))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    lines = [json.dumps({"split": split, "step": step, "loss": loss, "mse": loss})
             for step, loss in curve for split in ("train", "eval")]
    (folder / "metrics.jsonl").write_text("".join(f"{line}\n" for line in lines))
    return folder


def completed(step: int, mse: float, **more) -> dict:
    return {"name": "quickstart", "status": "completed", "step": step, "metric": "mse",
            "final": {"mse": mse, "loss": mse}, "baseline": {"mse": 0.1773, "loss": 0.1773},
            "best": {"step": step, "metrics": {"mse": mse}}, "test": None,
            "wall_time_s": 12.0, **more}


def dead_pid() -> int:
    """The id of a process of this machine that has ended."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


@pytest.fixture
def root(tmp_path) -> Path:
    """A runs root with a run at every status `jaxlstm runs` tells apart."""
    runs = tmp_path / "runs"
    write_run(runs / "quickstart" / "20250101-120000",
              ["model.hidden_size=16", "optimizer.learning_rate=1e-3", "training.steps=40"],
              completed(40, 0.0512, config_source="quickstart",
                        overrides=["model.hidden_size=16", "optimizer.learning_rate=1e-3",
                                   "training.steps=40"]),
              curve=[(20, 0.3), (40, 0.0512)])
    write_run(runs / "quickstart" / "20250102-090000", ["training.seed=3"],
              {"name": "quickstart", "status": "interrupted", "step": 20,
               "overrides": ["training.seed=3"]}, curve=[(20, 0.25)])
    write_run(runs / "quickstart" / "20250102-100000", ["training.seed=4"],
              {"name": "quickstart", "status": "running", "step": 30, "overrides": [],
               "pid": dead_pid(), "host": socket.gethostname()})
    write_run(runs / "quickstart" / "20250103-080000", ["training.seed=5"])  # no summary yet
    write_run(runs / "mine" / "20241231-235959", ["model.hidden_size=16", "name=mine"],
              completed(1500, 0.0112, name="mine"))  # an older run of no shipped config
    return runs


def table(capsys) -> list[list[str]]:
    """The rows `jaxlstm runs` printed, split at two or more spaces."""
    import re

    return [re.split(r"  +", line.strip()) for line in capsys.readouterr().out.splitlines()]


def test_runs_lists_newest_first_with_status_step_metric_and_overrides(root, capsys):
    assert main(["runs", "--root", str(root)]) == 0
    header, *rows, footnote = table(capsys)
    assert header == ["RUN", "STARTED", "STATUS", "STEP", "FINAL", "BASELINE", "OVERRIDES"]
    assert [row[:4] for row in rows] == [
        ["quickstart/20250103-080000", "2025-01-03 08:00", "started", "-"],
        ["quickstart/20250102-100000", "2025-01-02 10:00", "running?", "30/1500"],
        ["quickstart/20250102-090000", "2025-01-02 09:00", "interrupted", "20/1500"],
        ["quickstart/20250101-120000", "2025-01-01 12:00", "completed", "40/40"],
        ["mine/20241231-235959", "2024-12-31 23:59", "completed", "1500/1500"]]
    assert [row[4:] for row in rows[1:]] == [
        ["-", "-", "no overrides"],
        ["-", "-", "training.seed=3"],
        # the recorded overrides, each value as config.yaml holds it
        ["mse 0.0512", "0.1773",
         "model.hidden_size=16 optimizer.learning_rate=0.001 training.steps=40"],
        # nothing recorded, and no shipped config of its name: nothing to compare with
        ["mse 0.0112", "0.1773", "-"]]
    assert rows[0][4:] == ["-", "-", "training.seed=5 *"]  # inferred from the shipped config
    assert footnote[0].startswith("* not recorded (an older run)")


def test_runs_of_one_name_as_json(root, capsys):
    assert main(["runs", "quickstart", "--root", str(root), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["status"], r["step"]) for r in records] == [
        ("started", None), ("running?", 30), ("interrupted", 20), ("completed", 40)]
    done = records[-1]
    assert done["folder"] == str(root / "quickstart" / "20250101-120000")
    assert (done["final"]["mse"], done["baseline"]["mse"]) == (0.0512, 0.1773)
    assert done["config_source"] == "quickstart" and not done["overrides_inferred"]
    assert records[0]["overrides"] == ["training.seed=5"] and records[0]["overrides_inferred"]


def test_a_running_run_whose_process_lives_stays_running(tmp_path, capsys):
    write_run(tmp_path / "quickstart" / "20250101-120000",
              summary={"status": "running", "step": 7, "pid": os.getpid(),
                       "host": socket.gethostname()})
    assert main(["runs", "--root", str(tmp_path)]) == 0
    assert table(capsys)[1][2:4] == ["running", "7/1500"]


@pytest.mark.parametrize("argv, expected", [
    (["--root", "{root}/nowhere"], "nowhere: no such folder (the runs root"),
    (["digits", "--root", "{root}"], "no runs of 'digits' in "),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_runs_input_is_one_line_and_exit_2(root, argv, expected, capsys):
    assert main(["runs", *(a.format(root=root) for a in argv)]) == 2
    assert expected in one_line(capsys)


def test_describe_overrides_tells_values_apart_not_spellings():
    config = load_config(QUICKSTART, ["optimizer.learning_rate=1e-3", "training.seed=0",
                                      "model.hidden_size=16", "task.options.eval_size=64",
                                      "resume=true", "runs_root=elsewhere",
                                      "distributed.num_processes=1"])
    # 1e-3 is the file's 0.005 changed; seed 0 is the file's (the default); where it runs
    # and how it resumes do not describe the run
    assert runs_index.describe_overrides(config, QUICKSTART) == (
        "task.options.eval_size=64 model.hidden_size=16 optimizer.learning_rate=0.001")
    assert runs_index.describe_overrides(load_config(QUICKSTART), QUICKSTART) == "no overrides"


def test_describe_overrides_of_a_run_folder_against_a_yaml_file(tmp_path):
    source = tmp_path / "mine.yaml"
    source.write_text("task:\n  name: adding\nmodel:\n  hidden_size: 16\n")
    run = write_run(tmp_path / "run", ["training.steps=7", "name=other"], config=source)
    assert runs_index.describe_overrides(run / "config.yaml", source) == "training.steps=7"
    assert runs_index.format_overrides(["a.b=1", "c='x y'", "a.b=2", "resume=true"]) == (
        "a.b=2 'c='\"'\"'x y'\"'\"''")


def test_compare_prints_differing_keys_and_metrics_and_draws_the_curves(root, tmp_path,
                                                                        capsys):
    out = tmp_path / "pictures"
    out.mkdir()
    assert main(["compare", "quickstart/20250101-120000", str(root / "quickstart" /
                 "20250102-090000"), "--root", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    differing = lines[lines.index("config keys that differ:") + 2:lines.index("")]
    assert [line.split() for line in differing] == [
        ["model.hidden_size", "16", "64"], ["optimizer.learning_rate", "0.001", "0.005"],
        ["training.steps", "40", "1500"], ["training.seed", "0", "3"]]
    assert "status         completed        interrupted" in printed
    assert "final mse      0.0512           -" in printed
    assert lines[-1] == f"curves: {out / 'compare.png'}"
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_takes_a_sweep_folder_as_its_points(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the picture's default place
    base = load_config(QUICKSTART)
    points = grid.expand_grid(["training.seed=1,2"])
    folder = tmp_path / "runs" / "quickstart" / "sweep-20250101-120000"
    folder.mkdir(parents=True)
    record = sweep.create(str(folder), "quickstart", QUICKSTART, ["training.seed=1,2"],
                          points, base)
    for point, mse in zip(points.points, (0.5, 0.25), strict=True):
        write_run(Path(record.run_dir(point)), point.overrides, completed(1500, mse),
                  curve=[(1500, mse)])
    assert main(["compare", str(folder)]) == 0
    printed = capsys.readouterr().out
    rows = [line.split() for line in printed.splitlines()]
    assert rows[1:3] == [["key", "training.seed=1", "training.seed=2"],  # the points' names
                         ["training.seed", "1", "2"]]
    assert printed.splitlines()[-1] == f"curves: {tmp_path / 'compare.png'}"


@pytest.mark.parametrize("runs, expected", [
    (["quickstart/20250101-120000", "quickstart/19990101-000000"],
     "quickstart/19990101-000000: no such run folder, nor runs of that name in "),
    (["quickstart/20250101-120000", "{root}"],
     "runs: not a run folder (it has no config.yaml), nor a sweep folder"),
    (["quickstart/20250101-120000"], "compare needs at least two runs, got 1"),
    (["quickstart/20250101-120000", "{root}/quickstart/20250101-120000"],
     "compare needs at least two runs, got 1"),  # one run named twice
    (["mine", "quickstart", "--out", "{root}/no/such/folder/c.png"],
     "--out {root}/no/such/folder/c.png: no such folder"),
])
def test_bad_compare_input_is_one_line_and_exit_2_and_writes_nothing(root, runs, expected,
                                                                     capsys, monkeypatch):
    monkeypatch.chdir(root)
    before = snapshot(root)
    argv = [a.format(root=root) for a in runs]
    assert main(["compare", *argv, "--root", str(root)]) == 2
    assert expected.format(root=root) in one_line(capsys)
    assert snapshot(root) == before


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two tiny runs of one config, trained through `jaxlstm train`: the runs root."""
    runs = tmp_path_factory.mktemp("trained") / "runs"
    for seed in (1, 2):
        assert main(["train", "quickstart", *TINY, "training.steps=2",
                     f"training.seed={seed}", f"runs_root={runs}"]) == 0
    return runs


def test_trained_runs_are_listed_and_compared(trained, tmp_path, capsys):
    capsys.readouterr()
    assert main(["runs", "--root", str(trained)]) == 0
    rows = table(capsys)[1:]
    assert [row[2:4] for row in rows] == [["completed", "2/2"]] * 2
    assert [row[-1].split()[-1] for row in rows] == ["training.seed=2", "training.seed=1"]
    assert main(["compare", *(row[0] for row in rows), "--root", str(trained),
                 "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "training.seed  2" in printed and (tmp_path / "compare.png").is_file()
