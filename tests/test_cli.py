"""The `jaxlstm` command: installed from a wheel, its help, its arguments and its exit codes.

Commands run in-process through `jaxlstm.cli.main` (a list of arguments in, an exit code out);
only the installed console script runs as a real process, since installing is the point there.
"""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import typing
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from jaxlstm.cli import main, reference, shipped
from jaxlstm.cli.train import parse_args
from jaxlstm.train.config import ExperimentConfig
from tests.test_train import TINY

ROOT = Path(__file__).resolve().parents[1]


def one_line(capsys) -> str:
    """The single line a failed command wrote to stderr."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> list:
    """Every path under `folder` with its size and modification time."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A non-editable install of a wheel built from this checkout: the folder it went to."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT / "jaxlstm", source / "jaxlstm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
                    str(source)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp / "dist").glob("jaxlstm-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in files
                            if n.endswith("entry_points.txt"))
    assert {f"jaxlstm/configs/{name}.yaml" for name in shipped.names()} <= files
    assert "jaxlstm/cli/__main__.py" in files and "jaxlstm/benchmark/harness.py" in files
    assert "jaxlstm = jaxlstm.cli:main" in entry_points
    site = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return site


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # PYTHONPATH puts the installed copy ahead of the checkout's editable install.
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run([str(site / "bin" / "jaxlstm"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_installed_console_script_lists_configs_and_trains_from_another_folder(installed,
                                                                                tmp_path):
    listed = run_installed(installed, tmp_path, "configs")
    assert listed.returncode == 0, listed.stderr
    assert f"(in {installed / 'jaxlstm' / 'configs'}" in listed.stdout  # the wheel's copy
    assert any(line.split()[:2] == ["quickstart", "adding"]
               for line in listed.stdout.splitlines())

    trained = run_installed(installed, tmp_path, "train", "quickstart", *TINY,
                            "training.steps=4", f"runs_root={tmp_path / 'runs'}")
    assert trained.returncode == 0, trained.stderr
    # The final line names the overrides (not where the run went), so that two runs of one
    # config are told apart; off a terminal the first line on stderr names the run folder.
    label, _, rest = trained.stdout.partition("): mse ")
    assert label.startswith("quickstart (") and rest
    assert sorted(label.removeprefix("quickstart (").split()) == sorted(
        [*TINY, "training.steps=4"])
    (run_dir,) = (tmp_path / "runs" / "quickstart").iterdir()
    assert trained.stderr.splitlines()[0] == f"run folder {run_dir}"
    assert (run_dir / "summary.json").is_file() and (run_dir / "checkpoints").is_dir()


def test_help_lists_every_config_key_generated_from_the_dataclasses(capsys):
    assert main(["--help"]) == 0
    overview = capsys.readouterr().out
    assert main(["train", "--help"]) == 0
    train_help = capsys.readouterr().out
    hints = typing.get_type_hints(ExperimentConfig)
    for text in (overview, train_help):
        for field in dataclasses.fields(ExperimentConfig):
            if dataclasses.is_dataclass(hints[field.name]):
                for key in dataclasses.fields(hints[field.name]):
                    assert f"\n    {field.name}.{key.name}: " in text
            else:
                assert f"\n    {field.name}: " in text
        assert all(f"\n  {name} " in text for name in shipped.names())
        assert "jaxlstm train quickstart model.hidden_size=" in text
        assert all(f"\n  {code} " in text for code in (0, 1, 2, 130))
    assert all(f"\n  {command}" in overview for command in ("train", "sample", "configs",
                                                           "bench"))


def test_help_shows_a_new_key_with_its_type_default_and_comment(monkeypatch):
    @dataclasses.dataclass
    class Extra:
        """A section added later."""

        depth: int | None = 3  # how deep

    @dataclasses.dataclass
    class Config:
        extra: Extra = dataclasses.field(default_factory=Extra)
        flag: bool = False

    monkeypatch.setattr(reference, "ExperimentConfig", Config)
    text = reference.config_reference()
    assert "  extra: A section added later." in text
    assert "    extra.depth: int | None = 3  # how deep" in text
    assert "    flag: bool = false" in text


@pytest.mark.parametrize("argv", [
    ["quickstart", "--resume", "model.hidden_size=8"],
    ["--resume", "quickstart", "model.hidden_size=8"],
    ["quickstart", "model.hidden_size=8", "--resume"],
])
def test_flags_and_overrides_in_any_order(argv):
    assert parse_args(argv) == ("quickstart", ["model.hidden_size=8", "resume=true"])


def test_shipped_configs_by_name_and_files_by_path(tmp_path, capsys):
    assert shipped.resolve("quickstart") == str(shipped.CONFIGS_DIR / "quickstart.yaml")
    own = tmp_path / "quickstart"  # an existing file wins over a shipped name
    own.write_text("task:\n  name: adding\n")
    assert shipped.resolve(str(own)) == str(own)

    assert main(["train", "no_such_config", "training.steps=1"]) == 2
    line = one_line(capsys)
    assert line.startswith("config error: no_such_config: no such config file")
    assert ", ".join(shipped.names()) in line

    assert main(["configs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed[:-1]] == shipped.names()


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["train"],
                                  ["train", "quickstart", "--bogus"], ["configs", "extra"],
                                  ["sample"], ["bench", "--sizes", "S9"]])
def test_bad_command_lines_are_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    assert one_line(capsys).startswith(("jaxlstm", "config error"))


@pytest.mark.parametrize("status, code", [("non_finite", 1), ("write_failed", 1),
                                          ("interrupted", 130)])
def test_train_exit_code_follows_the_run_status(status, code, monkeypatch, tmp_path):
    import jaxlstm.train.run

    def fake_run(config, **how):
        return SimpleNamespace(status=status, run_dir=str(tmp_path), step=1, summary={})

    monkeypatch.setattr(jaxlstm.train.run, "run_experiment", fake_run)
    assert main(["train", "quickstart", f"runs_root={tmp_path}"]) == code


def test_ctrl_c_during_start_up_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("jaxlstm.cli.train.load_config", interrupted)
    assert main(["train", "quickstart"]) == 130
    assert one_line(capsys) == "jaxlstm train: interrupted by Ctrl-C."


CTRL_C_WHILE_IMPORTING = """
import builtins, os, signal, sys
real_import = builtins.__import__

def import_and_press_ctrl_c(name, *args, **kwargs):
    if name == "optax":  # deep inside the command's imports, seconds into a real start-up
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)

builtins.__import__ = import_and_press_ctrl_c
from jaxlstm.cli import main
sys.exit(main(["train", "quickstart"]))
"""


def test_ctrl_c_while_the_command_imports_jax_is_one_line_and_130(tmp_path):
    # As from a terminal: SIGINT at its default, whatever this process inherited (a process
    # started with SIGINT ignored, as by `nohup` or a background job, rightly ignores it).
    result = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_IMPORTING], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert result.returncode == 130, result.stderr
    assert result.stderr == "jaxlstm: interrupted by Ctrl-C.\n"
    assert not os.listdir(tmp_path)


def test_clone_entry_points_are_the_package_commands():
    import experiments.benchmark
    import experiments.sample
    import experiments.train
    import jaxlstm.cli

    assert experiments.train.main is jaxlstm.cli.train.main
    assert experiments.sample.main is jaxlstm.cli.sample.main
    assert experiments.benchmark.main is jaxlstm.cli.bench.main


@pytest.fixture
def runs(tmp_path) -> Path:
    """Run folders that fail before sampling: a config.yaml and no usable checkpoint."""
    for name, config in {"text": "task:\n  name: text\n",
                         "adding": "task:\n  name: adding\n",
                         "bidirectional": "task:\n  name: text\nmodel:\n  bidirectional: true\n",
                         "broken": "task:\n  name: text\nmodel:\n  hiden_size: 3\n"}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(config)
    (tmp_path / "empty").mkdir()
    shutil.copytree(tmp_path / "text", tmp_path / "damaged")
    (tmp_path / "damaged" / "checkpoints" / "3").mkdir(parents=True)  # a write cut short
    return tmp_path


@pytest.mark.parametrize("run, options, expected", [
    ("text", ["--length", "-1"], "--length must be an int >= 0, got -1"),
    ("text", ["--length", "1000001"], "--length must be at most 1,000,000"),
    ("text", ["--length", "ten"], "argument --length: invalid int value"),
    ("text", ["--temperature", "0"], "--temperature must be a finite number > 0"),
    ("text", ["--temperature", "nan"], "--temperature must be a finite number > 0"),
    ("text", ["--temperature", "inf"], "--temperature must be a finite number > 0"),
    ("text", ["--seed", str(2**64)], "--seed must be in [0, 4294967295]"),
    ("text", ["--seed", "-1"], "--seed must be in [0, 4294967295]"),
    ("text", ["--prompt", ""], "--prompt must have at least one character"),
    ("text", ["--prompt", "caf\u00e9\t"], "outside the text task's vocabulary: '\u00e9', '\\t'"),
    ("missing", [], "missing: no such run folder"),
    ("empty", [], "empty: not a run folder (it has no config.yaml)"),
    ("broken", [], "model.hiden_size"),
    ("bidirectional", [], "sampling needs a unidirectional one"),
    ("adding", [], "task 'adding' has no text to sample"),
    ("text", [], "text has no checkpoint to sample from"),
    ("damaged", [], "checkpoint 3 in "),
])
def test_bad_sampling_input_is_one_line_and_changes_nothing(runs, run, options, expected,
                                                            capsys):
    before = snapshot(runs)
    assert main(["sample", str(runs / run), *options]) == 2
    assert expected in one_line(capsys)
    assert snapshot(runs) == before


def test_sample_function_checks_its_arguments():
    from jaxlstm.train.sample import sample

    key = object()  # never reached: the checks come first
    for length, temperature, prompt, match in [
            (-1, 0.8, [1], "length must be an int >= 0"),
            (3, float("nan"), [1], "temperature must be a finite number > 0"),
            (3, 0.8, [], "prompt_ids must be a non-empty 1-D array"),
            (3, 0.8, [97], r"prompt_ids must be in \[0, 97\)")]:
        with pytest.raises(ValueError, match=match):
            sample(None, prompt, length, 97, key=key, temperature=temperature)


def test_output_into_a_closed_pipe_stops_quietly():
    # `jaxlstm configs | head -1`: the reader is gone before the command writes.
    process = subprocess.Popen([sys.executable, "-m", "jaxlstm.cli", "configs"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=120) == 141, err
    assert err == ""
