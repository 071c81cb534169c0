"""Optional packages: a task whose package is missing says which extra installs it (one line,
exit 2), `jaxlstm configs` marks the configs that need one, and the test install pulls no
torch while CI still runs the parity tests."""

import ast
import importlib.util
import pathlib
import re
import sys
import tomllib

import pytest

from jaxlstm.cli import main
from jaxlstm.tasks import digits, sunspots
from jaxlstm.train import run

ROOT = pathlib.Path(__file__).parent.parent
TORCH_BASED = {"torch", "xlstm", "mlstm-kernels"}


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def block(monkeypatch, *modules: str) -> None:
    """Makes `import module` fail as if the package were not installed."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


@pytest.mark.parametrize("config, modules, task, package, loader", [
    ("digits_rows", ("sklearn", "sklearn.datasets"), "digits", "scikit-learn",
     digits.load_digits_arrays),
    ("sunspots", ("statsmodels", "statsmodels.datasets", "statsmodels.datasets.sunspots"),
     "sunspots", "statsmodels", sunspots.load_sunspots),
], ids=["digits", "sunspots"])
def test_a_missing_task_package_is_one_line_naming_the_extra(config, modules, task, package,
                                                             loader, monkeypatch, tmp_path,
                                                             capsys):
    block(monkeypatch, *modules)
    loader.cache_clear()  # the data another test loaded would hide the missing package
    monkeypatch.setattr(run, "_BUILT", {})  # and so would a task built by another test
    assert main(["train", config, f"runs_root={tmp_path}", "logging.progress=false"]) == 2
    assert one_line(capsys) == (f"config error: task.name: {task} needs {package}: "
                                "pip install 'jaxlstm[tasks]'")
    assert list(tmp_path.iterdir()) == []


def test_configs_marks_the_configs_that_need_an_extra(monkeypatch, capsys):
    block(monkeypatch, "sklearn")
    assert main(["configs"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[:-1]}
    for name in ("digits_rows", "digits_pixels"):
        assert lines[name].endswith(
            "[needs scikit-learn, not installed: pip install 'jaxlstm[tasks]']")
    statsmodels = ("installed" if importlib.util.find_spec("statsmodels")
                   else "not installed: pip install 'jaxlstm[tasks]'")
    assert lines["sunspots"].endswith(f"[needs statsmodels, {statsmodels}]")
    marked = {name for name, line in lines.items() if "[needs " in line}
    assert marked == {"digits_rows", "digits_pixels", "sunspots"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in requirements}


def test_the_test_extra_pulls_no_torch_and_ci_installs_the_reference_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert not _names(project["dependencies"]) & TORCH_BASED
    assert not _names(extras["test"]) & TORCH_BASED  # an unpinned torch is the CUDA build
    assert TORCH_BASED <= _names(extras["reference"])
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    pinned = next(i for i, line in enumerate(ci) if re.search(r"\btorch==[\d.]+", line))
    reference = next(i for i, line in enumerate(ci) if ".[test,reference" in line)
    assert pinned < reference  # the CPU wheel first, so the extra's torch is already there
    # The onnx extra's converter caps orbax-checkpoint: it is its own extra, which CI adds.
    assert "jax2onnx" in _names(extras["onnx"]) and "jax2onnx" not in _names(extras["test"])
    assert re.search(r"\.\[test,reference,onnx\]", ci[reference])


def test_every_torch_test_skips_with_a_reason_without_torch():
    """Each `pytest.importorskip` of a torch-based package says what to install."""
    unexplained = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "importorskip" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                module = node.args[0].value
                top = module.split(".")[0].replace("_", "-")
                if (top in TORCH_BASED or module == "safetensors.torch") and not any(
                        k.arg == "reason" for k in node.keywords):
                    unexplained.append(f"{path.name}:{node.lineno} {module}")
    assert unexplained == []
