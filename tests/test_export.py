"""Exported models (`jaxlstm.export`, `jaxlstm export`) compute what the JAX model computes.

StableHLO: the exported program, deserialised (no config, no model code) and called at batch
and length other than any it was traced with, equals the model's jitted function to 1e-5;
the step export fed its own state for 100 steps equals the JAX step function (the decoding
step of the layer protocol) fed its own. ONNX: the same in ONNX Runtime, for the models
jax2onnx converts; those it cannot convert are refused in one line.
"""

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxlstm.export import export_model, load
from jaxlstm.export.functions import model_function
from jaxlstm.tasks.base import TaskSpec
from jaxlstm.train.config import ModelConfig
from jaxlstm.train.model import Model
from tests.test_train import QUICKSTART

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
STREAM_STEPS = 100
EVERY = TaskSpec(name="t", input_size=3, output_size=2, readout="every", kind="regression",
                 metric="mse")
LAST = TaskSpec(name="t", input_size=3, output_size=4, readout="last", kind="classification",
                metric="accuracy")
MODELS = {  # small models of every family, stacked and in blocks
    "lstm_bidirectional": ({"cell": "lstm", "num_layers": 2, "bidirectional": True}, LAST),
    "lstm_stack": ({"cell": "lstm", "num_layers": 2, "proj_size": 4}, EVERY),
    "slstm": ({"cell": "slstm", "num_heads": 2}, EVERY),
    "mlstm": ({"cell": "mlstm", "num_heads": 2}, EVERY),
    "mlstm_recurrent": ({"cell": "mlstm", "num_heads": 2, "mode": "recurrent"}, LAST),
    "min_lstm": ({"cell": "min_lstm"}, EVERY),
    "min_gru": ({"cell": "min_gru"}, LAST),
    "gru": ({"cell": "gru"}, EVERY),
    "blocks": ({"blocks": "msl", "num_heads": 2}, EVERY),
    "blocks_recurrent": ({"blocks": "ms", "num_heads": 2, "mode": "recurrent"}, EVERY),
}
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("jax2onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="jax2onnx and onnxruntime are not "
                                "installed: pip install 'jaxlstm[onnx]' onnxruntime")


def model_and_params(name):
    options, spec = MODELS[name]
    model = Model(ModelConfig(hidden_size=8, **options), spec)
    return model, model.init(jax.random.key(1))


def sequence_inputs(rng, batch, steps):
    xs = rng.standard_normal((batch, steps, 3)).astype(np.float32)
    return xs, rng.integers(1, steps + 1, batch).astype(np.int32)


def check_sequence(name, tmp_path, format):
    model, params = model_and_params(name)
    exported = load(export_model(params, model, tmp_path / name, format=format).out)
    function = jax.jit(model_function(params, model, "sequence")[0])
    rng = np.random.default_rng(0)
    for batch, steps in ((3, 7), (1, 12)):  # neither size is one it was traced with
        xs, lengths = sequence_inputs(rng, batch, steps)
        np.testing.assert_allclose(np.asarray(exported(xs, lengths)),
                                   np.asarray(function(xs, lengths)), **TOLERANCE)


def check_stream(name, tmp_path, format, batch=2):
    """100 steps of each, each fed its own state: the same outputs and states throughout."""
    model, params = model_and_params(name)
    exported = load(export_model(params, model, tmp_path / name, format=format,
                                 what="step").out)
    step, signature = model_function(params, model, "step")
    step = jax.jit(step)
    xs = np.random.default_rng(1).standard_normal((STREAM_STEPS, batch, 3)).astype(np.float32)
    ours = theirs = exported.initial_state(batch)
    assert [s.name for s in signature.state] == [s["name"] for s in
                                                 exported.description["state"]]
    for x in xs:
        y, *theirs = exported(x, *theirs)
        want, *ours = step(x, *ours)
        np.testing.assert_allclose(np.asarray(y), np.asarray(want), **TOLERANCE)
    for a, b in zip(theirs, ours, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOLERANCE)


@pytest.mark.parametrize("name", ["lstm_bidirectional", "slstm", "mlstm", "min_lstm",
                                  "min_gru", "gru", "blocks"])
def test_stablehlo_sequence_equals_the_model_at_any_batch_and_length(name, tmp_path):
    check_sequence(name, tmp_path, "stablehlo")


@pytest.mark.parametrize("name", ["lstm_stack", "slstm", "mlstm", "min_lstm", "blocks"])
def test_stablehlo_step_streams_100_steps_as_the_model_steps(name, tmp_path):
    check_stream(name, tmp_path, "stablehlo")


def test_stablehlo_export_is_for_cpu_cuda_and_tpu_with_symbolic_sizes(tmp_path):
    model, params = model_and_params("lstm_stack")
    exported = export_model(params, model, tmp_path / "x")
    description = json.loads((tmp_path / "x" / "export.json").read_text())
    assert description == exported.description
    assert description["platforms"] == ["cpu", "cuda", "tpu"]
    assert [t["shape"] for t in description["inputs"]] == [["batch", "time", 3], ["batch"]]
    program = jax.export.deserialize(bytearray((tmp_path / "x" / "model.stablehlo")
                                               .read_bytes()))
    assert program.platforms == ("cpu", "cuda", "tpu")
    assert [str(d) for d in program.in_avals[0].shape] == ["batch", "time", "3"]


def test_a_step_export_starts_from_the_models_initial_state(tmp_path):
    model, params = model_and_params("blocks")
    _, signature = model_function(params, model, "step")
    # Each leaf is described by the value its family's initial state holds (every element).
    from jaxlstm.train.model import decoder_initial_state

    start = jax.tree.leaves(decoder_initial_state(params, (1,), model))
    assert [leaf.initial for leaf in signature.state] == [float(np.ravel(a)[0]) for a in start]
    with pytest.raises(ValueError, match="a step export needs a unidirectional model"):
        model_function(*reversed(model_and_params("lstm_bidirectional")), "step")


@needs_onnx
@pytest.mark.parametrize("name", ["lstm_stack", "slstm", "mlstm_recurrent", "min_lstm", "gru",
                                  "blocks_recurrent"])
def test_onnx_sequence_equals_the_model_in_onnx_runtime(name, tmp_path):
    check_sequence(name, tmp_path, "onnx")


@needs_onnx
@pytest.mark.parametrize("name", ["lstm_stack", "slstm", "mlstm", "min_gru", "blocks"])
def test_onnx_step_streams_100_steps_in_onnx_runtime(name, tmp_path):
    check_stream(name, tmp_path, "onnx")


@needs_onnx
def test_what_onnx_cannot_express_is_refused_naming_why(tmp_path):
    for name, reason in (("lstm_bidirectional", "Reverse scan"),   # the backward direction
                         ("mlstm", "Symbolic dimension")):  # chunkwise: pads by a symbolic T
        model, params = model_and_params(name)
        with pytest.raises(NotImplementedError, match=reason):
            export_model(params, model, tmp_path / name, format="onnx")
        assert not (tmp_path / name).exists()


# --- The command ------------------------------------------------------------------------------

def export_command(*args):
    from jaxlstm.cli import main

    return main(["export", *map(str, args)])


def one_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from jaxlstm.train.config import load_config
    from jaxlstm.train.run import run_experiment

    root = tmp_path_factory.mktemp("runs")
    config = load_config(QUICKSTART, [
        "training.steps=2", "training.batch_size=4", "training.eval_every=2",
        "model.hidden_size=8", "logging.progress=false", "logging.plots=false",
        "logging.tensorboard=false", "checkpointing.every=2", f"runs_root={root}"])
    return run_experiment(config).run_dir


def test_the_command_exports_a_run_that_runs_without_its_config(trained_run, tmp_path,
                                                                capsys):
    assert export_command(trained_run, "--what", "step", "--out", tmp_path / "step") == 0
    assert f"to {tmp_path / 'step'}" in capsys.readouterr().out
    exported = load(tmp_path / "step")
    assert exported.description["source"]["checkpoint"] == "best"
    assert exported.description["source"]["step"] == 2
    y, *_state = exported(np.ones((5, 2), np.float32), *exported.initial_state(5))
    assert np.asarray(y).shape == (5, 1) and np.all(np.isfinite(np.asarray(y)))
    # An older export is replaced, and no staging folder is left behind.
    assert export_command(trained_run, "--what", "step", "--out", tmp_path / "step",
                          "--checkpoint", "latest") == 0
    assert load(tmp_path / "step").description["source"]["checkpoint"] == "latest"
    assert sorted(os.listdir(tmp_path)) == ["step"]
    # The default place: beside the run's checkpoints.
    assert export_command(trained_run) == 0
    assert load(os.path.join(trained_run, "export", "stablehlo-sequence")).description[
        "what"] == "sequence"


@pytest.mark.parametrize("case", ["no run", "no checkpoint", "not an export", "unwritable",
                                  "bad mode", "no converter", "format"])
def test_bad_input_is_one_line_and_exit_2(case, trained_run, tmp_path, capsys, monkeypatch):
    run, args = trained_run, ["--out", tmp_path / "x"]
    if case == "no run":
        run, expected = tmp_path / "nowhere", "no such run folder"
    elif case == "no checkpoint":
        run = tmp_path / "fresh"
        run.mkdir()
        shutil.copy(os.path.join(trained_run, "config.yaml"), run / "config.yaml")
        expected = "has no checkpoint (checkpoints/ holds none)"
    elif case == "not an export":
        (tmp_path / "x").write_text("mine")
        expected = "exists and is not an export"
    elif case == "unwritable":
        (tmp_path / "file").write_text("")
        args, expected = ["--out", tmp_path / "file" / "x"], "is not a folder"
    elif case == "bad mode":   # the quickstart's LSTM has one form: refused by key
        args, expected = [*args, "--mode", "recurrent"], "model.mode"
    elif case == "no converter":
        from jaxlstm.export import onnx as onnx_format

        monkeypatch.setattr(onnx_format, "available", lambda: False)
        args, expected = [*args, "--format", "onnx"], "--format onnx needs jax2onnx: pip install"
    else:                      # a model the format's converter cannot express
        from jaxlstm.export import onnx as onnx_format

        def cannot(function, signature):
            raise NotImplementedError("jax2onnx 0.0 cannot convert this model's sequence "
                                      "function: Reverse scan is not supported")

        monkeypatch.setattr(onnx_format, "available", lambda: True)
        monkeypatch.setattr(onnx_format, "export_function", cannot)
        args, expected = [*args, "--format", "onnx"], "Reverse scan is not supported"
    assert export_command(run, *args) == 2
    assert expected in one_line(capsys)
    assert case == "not an export" or not (tmp_path / "x").exists()


@needs_onnx
def test_the_readmes_serving_commands_run_as_written(trained_run, tmp_path, monkeypatch):
    """The README's export command (on this run instead of `<time>`), then its Python, in a
    fresh process that never imports jaxlstm."""
    from tests.test_repo import README, code_blocks

    (commands,) = [block for block in code_blocks("bash") if "jaxlstm export" in block]
    (export_line,) = [line for line in commands.splitlines() if "jaxlstm export" in line]
    words = shlex.split(export_line)[2:]
    assert words[0] == "runs/quickstart/<time>"
    monkeypatch.chdir(tmp_path)
    assert export_command(trained_run, *words[1:]) == 0
    (program,) = [block for block in code_blocks("python") if "onnxruntime" in block]
    check = "\nimport sys\nprint('jaxlstm' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", program + check], check=False, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["(1,", "1)", "False"], result.stdout
    assert "quickstart-step" in README
