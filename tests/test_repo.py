"""The project's promises about itself: layering, the README's commands and example."""

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CORE_ALLOWED = {"jax", "jaxlib", "numpy", "chex", "jaxlstm"}


def code_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def run_python(code, cwd=ROOT, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )


def test_core_modules_import_only_jax_numpy_chex():
    for path in sorted((ROOT / "jaxlstm").glob("*.py")):
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


def test_import_jaxlstm_pulls_in_no_flax_optax_orbax():
    result = run_python(
        "import sys, jaxlstm; "
        "print(sorted(m for m in ('flax', 'optax', 'orbax') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_ci_runs_the_readme_test_command():
    commands = [block.strip() for block in code_blocks("bash")]
    test_command = next(c for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, f".ci/run must run the README's test command: {test_command}"


README_OUTPUTS = [  # what each ```python block of the README prints, in order
    "(8, 20, 16) (8, 16)",
    "(4, 12, 32) (4, 16)",
    "lstm (4, 12, 8) (4, 16) NoneType LSTMGates\n"
    "peephole (4, 12, 8) (4, 16) PeepholeWeights LSTMGates\n"
    "cifg (4, 12, 8) (4, 16) CoupledGates LSTMGates\n"
    "layer_norm (4, 12, 8) (4, 16) LayerNormWeights LSTMGates\n"
    "retained_readout (4, 12, 8) (4, 16) RetainedReadoutWeights RetainedReadoutGates\n"
    "(4, 12, 16) (4, 8)",
    "(4, 16) (12, 4, 16)",
    "(4, 12, 16) (4, 12, 32) (4, 16)",
    "True (4, 12, 8)",
    "10",
    "(8, 32)",
    "True",
]


def test_readme_examples_run_as_written(tmp_path):
    blocks = code_blocks("python")
    assert len(blocks) == len(README_OUTPUTS), "add the new README example's output here"
    for block, expected in zip(blocks, README_OUTPUTS):
        optional = [m for m in ("torch", "matplotlib") if f"import {m}" in block
                    or (m == "matplotlib" and "plot_gates" in block)]
        if any(importlib.util.find_spec(m) is None for m in optional):
            continue  # the torch and plot extras are optional
        result = run_python(block, cwd=tmp_path)
        assert result.returncode == 0, f"{block}\n{result.stderr}"
        assert result.stdout.strip() == expected, block


def test_example_job_runs_and_reports():
    result = subprocess.run(
        [sys.executable, "-m", "experiments.example", "--steps", "20", "--seq-len", "8",
         "--hidden-size", "8", "--batch-size", "16"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"test MSE after training: \d+\.\d+", result.stdout), result.stdout
    assert "f: marked" in result.stdout


def test_readme_first_command_runs_the_quickstart_config():
    first = code_blocks("bash")[0].strip()
    assert first == "pip install -e . && python -m experiments.train configs/quickstart.yaml"
    assert (ROOT / "configs" / "quickstart.yaml").is_file()
