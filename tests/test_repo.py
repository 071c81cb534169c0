"""The project's promises about itself: layering, the README's commands and example."""

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CORE_ALLOWED = {"jax", "jaxlib", "numpy", "chex", "jaxlstm"}


def code_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


# One fresh Python process stands for a user: it imports jaxlstm (recording which heavy
# packages that pulled in), runs each README example in a fresh namespace with its stdout
# captured on its own, then runs the example job as `python -m experiments.example`. Importing
# jax costs seconds of CPU, so the checks share the process instead of starting one each.
USER_PROCESS = r"""
import contextlib, io, json, runpy, sys, traceback

request = json.loads(sys.stdin.read())
import jaxlstm  # noqa: E402,F401
report = {"heavy_modules": sorted(m for m in ("flax", "optax", "orbax") if m in sys.modules)}


def run(code):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code()
        error = None
    except BaseException:  # noqa: BLE001 - reported to the test, which fails on it
        error = traceback.format_exc()
    return {"stdout": out.getvalue(), "error": error}


report["blocks"] = [
    run(lambda block=block: exec(compile(block, f"<README block {n}>", "exec"),
                                 {"__name__": "__main__"}))
    for n, block in enumerate(request["blocks"])
]
sys.argv = ["experiments.example", *request["example_args"]]
report["example"] = run(lambda: runpy.run_module("experiments.example", run_name="__main__",
                                                 alter_sys=True))
print(json.dumps(report))
"""
EXAMPLE_ARGS = ["--steps", "20", "--seq-len", "8", "--hidden-size", "8", "--batch-size", "16"]


def readme_blocks_to_run():
    """The README's ```python blocks, None where the block needs an optional extra that is not
    installed (torch, or matplotlib for plotting), or reads an export that the README's
    commands write first (tests/test_export.py runs it after them)."""
    blocks = code_blocks("python")
    runnable = []
    for block in blocks:
        if "onnxruntime.InferenceSession" in block:
            runnable.append(None)
            continue
        optional = [m for m in ("torch", "matplotlib") if f"import {m}" in block
                    or (m == "matplotlib" and "plot_gates" in block)]
        missing = any(importlib.util.find_spec(m) is None for m in optional)
        runnable.append(None if missing else block)
    return runnable


@pytest.fixture(scope="module")
def user_process(tmp_path_factory):
    """What the user process above reports, run once for the tests of this module."""
    blocks = readme_blocks_to_run()
    request = {"blocks": [b for b in blocks if b is not None], "example_args": EXAMPLE_ARGS}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", USER_PROCESS], input=json.dumps(request),
        cwd=tmp_path_factory.mktemp("user"), env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    ran = iter(report["blocks"])
    report["blocks"] = [None if b is None else next(ran) for b in blocks]
    return report


def test_core_modules_import_only_jax_numpy_chex():
    # The core: jaxlstm/*.py and the cell families' packages (jaxlstm/xlstm/, jaxlstm/minrnn/).
    core = [*(ROOT / "jaxlstm").glob("*.py"), *(ROOT / "jaxlstm" / "xlstm").glob("*.py"),
            *(ROOT / "jaxlstm" / "minrnn").glob("*.py")]
    for path in sorted(core):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in CORE_ALLOWED or top in sys.stdlib_module_names, (
                    f"{path.name} imports {name}; core modules import jax, numpy and chex only"
                )


@pytest.mark.slow  # shares the user process with the README examples
def test_import_jaxlstm_pulls_in_no_flax_optax_orbax(user_process):
    assert user_process["heavy_modules"] == []


def test_ci_runs_the_readme_test_command():
    commands = [block.strip() for block in code_blocks("bash")]
    test_command = next(c for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, f".ci/run must run the README's test command: {test_command}"


README_OUTPUTS = [  # what each ```python block of the README prints, in order
    "(8, 20, 16) (8, 16)",
    "lstm (4, 12, 8) True\nslstm (4, 12, 8) True\nmlstm (4, 12, 8) True\n"
    "min_lstm (4, 12, 8) True\nmin_gru (4, 12, 8) True\ngru (4, 12, 8) True",
    "True",
    "completed True",
    "(4, 12, 32) (4, 16)",
    "['LSTMParams', 'SLSTMParams', 'MLSTMParams'] (4, 12, 16)\nTrue\n(4, 20)",
    "lstm (4, 12, 8) (4, 16) NoneType LSTMGates\n"
    "peephole (4, 12, 8) (4, 16) PeepholeWeights LSTMGates\n"
    "cifg (4, 12, 8) (4, 16) CoupledGates LSTMGates\n"
    "layer_norm (4, 12, 8) (4, 16) LayerNormWeights LSTMGates\n"
    "retained_readout (4, 12, 8) (4, 16) RetainedReadoutWeights RetainedReadoutGates\n"
    "(4, 12, 16) (4, 8)",
    "(4, 16) (12, 4, 16)",
    "(4, 12, 16) (4, 12, 32) (4, 16)",
    "True (4, 12, 8)",
    "True",
    "True True",
    "(4, 100, 32) (4, 32) (4, 8, 4, 8)\n(4, 100, 64) SLSTMState",
    "(4, 100, 32) (4, 4, 8, 8)\nTrue True\nTrue",
    "(4, 1000, 32) (4, 32) True\n(4, 1000, 64) (4, 32)",
    "10",
    "(8, 32)",
    "True",
    "(1, 1)",
]


@pytest.mark.slow
def test_readme_examples_run_as_written(user_process):
    blocks = code_blocks("python")
    assert len(blocks) == len(README_OUTPUTS), "add the new README example's output here"
    for block, expected, result in zip(blocks, README_OUTPUTS, user_process["blocks"]):
        if result is None:
            continue  # the torch and plot extras are optional
        assert result["error"] is None, f"{block}\n{result['error']}"
        assert result["stdout"].strip() == expected, block


@pytest.mark.slow
def test_example_job_runs_and_reports(user_process):
    result = user_process["example"]
    assert result["error"] is None, result["error"]
    assert re.search(r"test MSE after training: \d+\.\d+", result["stdout"]), result["stdout"]
    assert "f: marked" in result["stdout"]


def test_readme_first_command_runs_the_quickstart_config():
    """The command is the installed console script; the config ships inside the package
    (tests/test_cli.py runs both from a non-editable install in another folder)."""
    first = code_blocks("bash")[0].strip()
    assert first == "pip install -e . && jaxlstm train quickstart"
    assert (ROOT / "jaxlstm" / "configs" / "quickstart.yaml").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'jaxlstm = "jaxlstm.cli:main"' in pyproject
