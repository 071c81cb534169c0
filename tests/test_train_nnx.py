"""`model.api: nnx` in the config-driven runner: the params it trains, checkpoints and restores
are an `nnx.State`, with the resume, determinism and sampling guarantees of the other APIs, and
the same weights give the same outputs through the functional, linen and nnx models."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from jaxlstm.flax import to_module_params
from jaxlstm.tasks.base import TaskSpec
from jaxlstm.train.config import ConfigError, ModelConfig, load_config
from jaxlstm.train.model import Model, stack_and_head
from jaxlstm.train.run import run_experiment
from tests.test_train import QUICKSTART, ROOT, TINY, final_params, read, tiny_config

TOL = {"atol": 1e-5, "rtol": 1e-5}
# Every path of the model in use: dropout between layers, recurrent dropout and zoneout (masks
# from the step's key), and weight decay masked to matrices (optax's mask is a tree over the
# nnx.State). The first two tests share this config, so the second reuses the first's compiled
# steps (the runner caches its model, optimizer and steps per config).
NNX = ["model.api=nnx", "model.dropout=0.2", "model.zoneout_c=0.3", "model.num_layers=2",
       "model.recurrent_dropout=0.1", "optimizer.name=adamw", "optimizer.weight_decay=0.01"]


def test_nnx_run_through_the_cli_checkpoints_an_nnx_state(tmp_path, capsys):
    from experiments.train import main

    code = main([QUICKSTART, *TINY, *NNX, "training.steps=12", "training.eval_every=4",
                 "logging.log_every=2", "checkpointing.every=4", f"runs_root={tmp_path}"])
    assert code == 0, capsys.readouterr().err
    (run,) = os.listdir(tmp_path / "quickstart")
    run_dir = tmp_path / "quickstart" / run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 12
    assert "api: nnx" in (run_dir / "config.yaml").read_text()
    # On disk: the nnx.State's tree (the LSTM module's layers and an nnx.Linear head).
    saved = ocp.StandardCheckpointer().restore(run_dir / "checkpoints" / "12" / "state")
    params = jax.tree.map(np.shape, saved["params"])
    assert set(params) == {"lstm", "head"}
    assert set(params["head"]) == {"kernel", "bias"}
    assert set(params["lstm"]) == {"layer_0", "layer_1"}
    assert set(params["lstm"]["layer_0"]) == {"forward"}
    with pytest.raises(ConfigError, match="one of functional, linen, nnx"):
        load_config(QUICKSTART, ["model.api=haiku"])


def test_nnx_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    whole = run_experiment(tiny_config(tmp_path / "whole", *NNX))
    config = tiny_config(tmp_path / "split", *NNX)
    interrupted = run_experiment(config, interrupt_at=6)  # between checkpoints 4 and 8
    assert interrupted.status == "interrupted" and interrupted.step == 6
    resumed = run_experiment(tiny_config(tmp_path / "split", *NNX, "resume=true"))
    assert resumed.run_dir == interrupted.run_dir and resumed.status == "completed"
    assert read(resumed.run_dir) == read(whole.run_dir)
    a = final_params(whole.run_dir, config).params
    b = final_params(resumed.run_dir, config).params
    assert isinstance(a, nnx.State) and isinstance(b, nnx.State)
    start = jax.eval_shape(Model(config.model, _spec("last", 2, 1)).init, jax.random.key(0))
    assert jax.tree.structure(a) == jax.tree.structure(start)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _spec(readout, inputs, outputs):
    return TaskSpec(name="t", input_size=inputs, output_size=outputs, readout=readout,
                    kind="regression", metric="mse")


def _same_weights(functional, linen_shapes, nnx_shapes):
    """The functional model's params as the linen and nnx models hold them (their layouts
    given by `Model.init`'s shapes)."""
    stack, w, b = stack_and_head(functional)
    module = to_module_params(stack)
    (name,) = [k for k in linen_shapes if k.startswith("LSTM")]
    linen = {name: module, "head": {"kernel": w, "bias": b}}
    assert jax.tree.map(np.shape, linen) == jax.tree.map(lambda s: s.shape, dict(linen_shapes))
    state = nnx_shapes
    nnx.replace_by_pure_dict(state, {"lstm": module, "head": {"kernel": w, "bias": b}})
    assert isinstance(state, nnx.State)
    # Every leaf replaced (none left abstract), and read back by `stack_and_head` as it was.
    for x, y in zip(jax.tree.leaves(stack_and_head(functional)),
                    jax.tree.leaves(stack_and_head(state)), strict=True):
        np.testing.assert_array_equal(x, y)
    return linen, state


@pytest.mark.parametrize("case", ["bidirectional_2_layers_last", "peephole_projected_every"])
def test_same_weights_give_the_same_outputs_in_every_api(case):
    options, spec = {
        "bidirectional_2_layers_last": (
            {"hidden_size": 5, "num_layers": 2, "bidirectional": True, "dropout": 0.3,
             "recurrent_dropout": 0.2, "zoneout_c": 0.1}, _spec("last", 3, 2)),
        "peephole_projected_every": (
            {"hidden_size": 4, "cell": "peephole", "proj_size": 3}, _spec("every", 3, 4)),
    }[case]
    models = {api: Model(ModelConfig(api=api, unroll=1, **options), spec)
              for api in ("functional", "linen", "nnx")}
    # Random weights for the functional model (no initialiser to compile), then the same
    # arrays in the linen and nnx models' layouts.
    rng = np.random.default_rng(0)
    shapes = {api: jax.eval_shape(model.init, jax.random.PRNGKey(1))
              for api, model in models.items()}
    params = {"functional": jax.tree.map(
        lambda s: jnp.asarray(rng.normal(scale=0.5, size=s.shape), s.dtype),
        shapes["functional"])}
    params["linen"], params["nnx"] = _same_weights(params["functional"], shapes["linen"],
                                                   shapes["nnx"])
    inputs = jnp.asarray(rng.normal(size=(3, 6, spec.input_size)), jnp.float32)
    lengths = jnp.array([6, 2, 0])
    key = jax.random.PRNGKey(2)
    outputs = {api: jax.jit(model.apply, static_argnums=4)(params[api], inputs, lengths, key,
                                                           False)
               for api, model in models.items()}
    steps = 1 if spec.readout == "last" else 6
    assert outputs["functional"].shape == (3, steps, spec.output_size)
    assert float(jnp.max(jnp.abs(outputs["functional"]))) > 1e-3
    np.testing.assert_allclose(outputs["linen"], outputs["functional"], **TOL)
    np.testing.assert_allclose(outputs["nnx"], outputs["functional"], **TOL)
    if models["nnx"].config.dropout:
        # Training: nnx draws its masks from the key exactly as the functional stack does.
        train = {api: jax.jit(models[api].apply, static_argnums=4)(
            params[api], inputs, lengths, key, True) for api in ("functional", "nnx")}
        assert not np.allclose(train["functional"], outputs["functional"], **TOL)
        np.testing.assert_allclose(train["nnx"], train["functional"], **TOL)


def test_sampling_from_an_nnx_checkpoint(tmp_path, capsys):
    from experiments.sample import main
    from jaxlstm.tasks import make_task
    from jaxlstm.train.sample import restore_params

    config = load_config(os.path.join(ROOT, "configs", "text.yaml"), [
        "model.api=nnx", "task.options.seq_len=12", "model.hidden_size=8", "model.unroll=1",
        "training.steps=3", "training.batch_size=4", "training.eval_every=3",
        "logging.progress=false", "logging.tensorboard=false", "logging.plots=false",
        "checkpointing.every=3", f"runs_root={tmp_path}"])
    result = run_experiment(config)  # text.yaml sets recurrent dropout: masks from the key
    assert result.status == "completed"
    assert os.path.getsize(os.path.join(result.run_dir, "samples.txt")) > 400
    assert main([result.run_dir, "--prompt", "def ", "--length", "50"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("def ") and len(text) >= 54  # the prompt, 50 characters, a newline
    params = restore_params(result.run_dir, config, make_task(config.task.name,
                                                              **config.task.options))
    assert isinstance(params, nnx.State)
