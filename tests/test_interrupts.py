"""SIGINT and SIGTERM at any moment of `jaxlstm train`: exit 130 and one line, and either no
run folder or one whose summary says "interrupted" and that `--resume` completes.

One child process runs the command (in-process, `jaxlstm.cli.main`) once per moment, each
time sending itself a real signal when the run reaches that moment (a function it enters),
then resumes what was left and reports; sharing the process shares the compiled steps, so
the dozen runs cost little more than one. The moments span a run's life: reading the config,
building the task and model, compiling the initial state, claiming and writing the folder,
the first batches, a step's evaluation and checkpoint, the final evaluations, the plots, the
summary's writing and the report after it. Signals during the imports are
`test_cli.test_ctrl_c_while_the_command_imports_jax_is_one_line_and_130`'s.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.test_cli import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (moment, module, function, which call, signal, how the run ends: "nothing" written, or
# "interrupted" at that step, or "completed" once the summary says so).
MOMENTS = [
    ("reading the config", "jaxlstm.cli.train", "load_config", 1, "SIGINT", "nothing"),
    ("building the task and model", "jaxlstm.train.run", "_build", 1, "SIGTERM", "nothing"),
    ("compiling the initial state", "jaxlstm.train.mesh", "init_state", 1, "SIGINT",
     "nothing"),
    ("claiming the run folder", "jaxlstm.train.run", "choose_run_dir", 1, "SIGTERM", 0),
    ("writing the first summary", "jaxlstm.train.run", "write_summary", 1, "SIGINT", 0),
    ("reading the validation split", "jaxlstm.train.run", "HeldOut", 1, "SIGTERM", 1),
    ("an evaluation in training", "jaxlstm.train.run", "evaluate", 1, "SIGINT", 4),
    ("a checkpoint's save", "jaxlstm.train.checkpoint.Checkpoints", "save", 1, "SIGTERM", 5),
    ("the final evaluations", "jaxlstm.train.run", "_test_results", 1, "SIGINT", 8),
    ("drawing the plots", "jaxlstm.train.plots", "draw_all", 1, "SIGTERM", 8),
    ("writing the final summary", "jaxlstm.train.run", "write_summary", 2, "SIGINT", 8),
    ("printing the report", "jaxlstm.cli.train", "_report", 1, "SIGTERM", "completed"),
]

CHILD = r"""
import contextlib, importlib, io, json, os, signal, sys
from jaxlstm.cli import main

root, args, moments = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])


def signal_on_call(path, name, nth, signame):
    try:
        owner = importlib.import_module(path)
    except ModuleNotFoundError:  # a class: module.Class
        module, _, cls = path.rpartition(".")
        owner = getattr(importlib.import_module(module), cls)
    original, calls = getattr(owner, name), [0]

    def entered(*a, **k):
        calls[0] += 1
        if calls[0] == nth:
            os.kill(os.getpid(), getattr(signal, signame))  # a real signal, to this process
        return original(*a, **k)

    setattr(owner, name, entered)
    return lambda: setattr(owner, name, original)


def train(runs_root, *extra):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", "quickstart", *args, f"runs_root={runs_root}", *extra])
    return code, err.getvalue().splitlines()


def folder(runs_root):
    runs = sorted(os.listdir(os.path.join(runs_root, "quickstart"))) if os.path.isdir(
        os.path.join(runs_root, "quickstart")) else []
    if not runs:
        return None, None
    run = os.path.join(runs_root, "quickstart", runs[-1])
    with open(os.path.join(run, "summary.json")) as f:
        summary = json.load(f)
    metrics = os.path.join(run, "metrics.jsonl")
    return summary, open(metrics).read() if os.path.exists(metrics) else None


for i, (what, path, name, nth, signame, _) in enumerate(moments):
    runs_root = os.path.join(root, str(i))
    undo = signal_on_call(path, name, nth, signame)
    try:
        code, lines = train(runs_root)
    finally:
        undo()
    summary, _ = folder(runs_root)
    report = {"moment": what, "code": code, "lines": lines, "summary": summary}
    if summary is not None and summary["status"] == "interrupted":
        report["resumed_code"], report["resumed_lines"] = train(
            runs_root, "--resume", "logging.progress=true")  # off a terminal: lines
        report["resumed"], report["metrics"] = folder(runs_root)
    print(json.dumps(report), flush=True)
code, _ = train(os.path.join(root, "whole"))
summary, metrics = folder(os.path.join(root, "whole"))
print(json.dumps({"moment": "uninterrupted", "code": code, "summary": summary,
                  "metrics": metrics}), flush=True)
"""

ARGS = [*TINY[:-1], "logging.plots=true", "training.steps=8", "training.eval_every=4",
        "checkpointing.every=4", "logging.log_every=2"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupts")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), json.dumps(ARGS),
         json.dumps([list(m) for m in MOMENTS])],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert child.returncode == 0, child.stderr[-3000:]
    found = [json.loads(line) for line in child.stdout.splitlines()]
    return {r["moment"]: r for r in found}


def cause(signame):
    return "Ctrl-C" if signame == "SIGINT" else signame


@pytest.mark.parametrize("moment", MOMENTS, ids=[m[0] for m in MOMENTS])
def test_a_signal_at_any_moment_ends_in_one_line_and_a_resumable_state(reports, moment):
    what, _, _, _, signame, ends = moment
    report, whole = reports[what], reports["uninterrupted"]
    assert not any("Traceback" in line for line in report["lines"]), report["lines"]
    if ends == "nothing":
        assert report["code"] == 130 and report["summary"] is None  # no folder at all
        assert report["lines"] == [f"jaxlstm train: interrupted by {cause(signame)}."]
        return
    if ends == "completed":  # after the summary's last byte: the run is over
        assert report["code"] == 0 and report["summary"]["status"] == "completed"
        return
    assert report["code"] == 130
    summary = report["summary"]
    assert (summary["status"], summary["step"]) == ("interrupted", ends)
    assert "final" not in summary  # an interrupted run claims no results
    said = [line for line in report["lines"] if "interrupted by" in line]
    assert len(said) == 1 and f"interrupted by {cause(signame)}" in said[0], report["lines"]
    # --resume completes it, exactly as if it had never stopped.
    resumed = report["resumed"]
    assert report["resumed_code"] == 0 and resumed["status"] == "completed"
    assert resumed["final"] == whole["summary"]["final"]
    assert report["metrics"] == whole["metrics"]
    assert [s["status"] for s in resumed["segments"]] == ["interrupted", "completed"]
    # Off a terminal the first line says what resumed from where, and the first progress
    # line already shows the last evaluation before the interruption.
    lines = report["resumed_lines"]
    assert lines[0].startswith("resuming ") and lines[0].endswith(f" from step {ends}")
    evals = [json.loads(line) for line in whole["metrics"].splitlines()]
    last = [r["mse"] for r in evals if r["split"] == "eval" and r["step"] <= ends]
    progress = [line for line in lines if line.startswith("step ")]
    if ends < 8:
        assert f"eval mse {f'{last[-1]:.4g}' if last else '-'} " in progress[0]
    assert resumed["wall_time_s"] == pytest.approx(
        sum(s["wall_time_s"] for s in resumed["segments"]), abs=0.02)


SIGNAL_WHILE_EXITING = r"""
import atexit, os, signal, sys
from jaxlstm.cli import main

# Registered before jax's own exit handlers, so it runs after them: late in the shutdown.
atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))
sys.argv = ["jaxlstm", "train", "quickstart", *sys.argv[1:]]
sys.exit(main())  # as the console script: the command owns this process
"""


def test_a_signal_while_a_finished_command_exits_keeps_its_exit_code(tmp_path):
    done = subprocess.run([sys.executable, "-c", SIGNAL_WHILE_EXITING, *TINY,
                           "training.steps=2", f"runs_root={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]  # not -15: the run had completed
    (run,) = os.listdir(tmp_path / "quickstart")
    with open(tmp_path / "quickstart" / run / "summary.json") as f:
        assert json.load(f)["status"] == "completed"
