"""xLSTM's cells (`model.cell: slstm | mlstm`) in the config-driven runner."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.train.config import ConfigError, load_config
from jaxlstm.train.run import run_experiment
from tests.test_train import ROOT, final_params, read

PARITY = os.path.join(ROOT, "configs", "parity.yaml")
TINY_PARITY = ["task.options.train_max_len=8", "task.options.eval_min_len=8",
               "task.options.eval_max_len=12", "task.options.eval_size=32",
               "model.hidden_size=8", "model.num_heads=2", "training.batch_size=8",
               "training.eval_batch_size=32", "training.steps=4", "training.eval_every=2",
               "logging.log_every=2", "checkpointing.every=2", "logging.progress=false",
               "logging.tensorboard=false", "logging.plots=false"]


def test_slstm_trains_on_variable_length_sequences(tmp_path):
    """Parity: variable lengths and the "last" read-out (the mLSTM's: the resume test)."""
    config = load_config(PARITY, [*TINY_PARITY, "model.cell=slstm", "model.num_layers=2",
                                  "model.dropout=0.1", "model.bidirectional=true",
                                  f"runs_root={tmp_path}"])
    result = run_experiment(config)
    assert result.status == "completed" and result.step == 4
    assert np.isfinite(result.summary["final"]["loss"])
    assert 0.0 <= result.summary["final"]["accuracy"] <= 1.0
    params = final_params(result.run_dir, config).params
    assert "lstm" in params


def test_mlstm_trains_on_variable_lengths_and_a_resumed_run_equals_an_uninterrupted_one(
        tmp_path):
    """Parity (variable lengths, the "last" read-out) with a bidirectional two-layer mLSTM and
    dropout; one config for the three runs, so its steps compile once."""
    extra = [*TINY_PARITY, "model.cell=mlstm", "model.num_layers=2", "model.dropout=0.2",
             "model.bidirectional=true"]

    def config_in(name, *more):
        return load_config(PARITY, [*extra, f"runs_root={tmp_path / name}", *more])

    config = config_in("whole")
    whole = run_experiment(config)
    assert whole.status == "completed" and whole.step == 4
    assert np.isfinite(whole.summary["final"]["loss"])
    assert 0.0 <= whole.summary["final"]["accuracy"] <= 1.0
    interrupted = run_experiment(config_in("split"), interrupt_at=3)  # between checkpoints 2, 4
    assert interrupted.status == "interrupted" and interrupted.step == 3
    resumed = run_experiment(config_in("split", "resume=true"))
    assert resumed.run_dir == interrupted.run_dir and resumed.status == "completed"
    assert read(resumed.run_dir) == read(whole.run_dir)
    a = final_params(whole.run_dir, config).params
    b = final_params(resumed.run_dir, config).params
    assert type(a["lstm"][0].forward).__name__ == "MLSTMParams"   # a stack of mLSTM layers
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_mlstm_last_readout_is_the_output_at_each_last_valid_step():
    from jaxlstm.tasks.base import TaskSpec
    from jaxlstm.train.config import ModelConfig
    from jaxlstm.train.model import Model

    spec = TaskSpec(name="t", input_size=3, output_size=2, readout="last",
                    kind="classification", metric="accuracy")
    model = Model(ModelConfig(cell="mlstm", hidden_size=8, num_heads=2, num_layers=2,
                              bidirectional=True), spec)
    params = model.init(jax.random.PRNGKey(0))
    xs = jax.random.normal(jax.random.PRNGKey(1), (3, 7, 3))
    lengths = jnp.array([7, 4, 1])
    apply = jax.jit(model.apply, static_argnums=4)
    batched = apply(params, xs, lengths, jax.random.PRNGKey(2), False)
    for b, n in enumerate(lengths.tolist()):
        alone = apply(params, xs[b:b + 1, :n], None, jax.random.PRNGKey(2), False)
        np.testing.assert_allclose(batched[b], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("overrides, key", [
    (["model.cell=slstm", "model.recurrent_dropout=0.1"], "model.recurrent_dropout"),
    (["model.cell=slstm", "model.zoneout_c=0.1"], "model.zoneout_c"),
    (["model.cell=mlstm", "model.proj_size=4"], "model.proj_size"),
    (["model.cell=mlstm", "model.unroll=2"], "model.unroll"),
    (["model.cell=slstm", "model.forget_bias=2.0"], "model.forget_bias"),
    (["model.cell=mlstm", "model.num_heads=3"], "model.num_heads"),
    (["model.cell=slstm", "model.num_heads=0"], "model.num_heads"),
    (["model.num_heads=2"], "model.num_heads"),  # an LSTM has no heads
    (["model.cell=xlstm"], "model.cell"),
    (["model.blocks=mx"], "model.blocks"),
    (["model.blocks=ms", "model.bidirectional=true"], "model.bidirectional"),
    (["model.blocks=ms", "model.cell=slstm"], "model.cell"),
    (["model.blocks=ms", "model.api=nnx"], "model.api"),
])
def test_options_that_do_not_apply_are_one_line_config_errors(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config(PARITY, ["model.hidden_size=8", *overrides])
    message = str(err.value)
    assert "\n" not in message and key in message and PARITY in message, message


def test_blocks_of_any_kinds_train_and_the_sampling_command_generates_from_them(tmp_path,
                                                                               capsys):
    """model.blocks: residual blocks instead of the cell stack, any mix of the registered
    kinds (an mLSTM block over a minLSTM block: the two papers' blocks in one stack), trained,
    then sampled by the command. (The "last" read-out of blocks on variable lengths:
    test_train_minrnn; cell stacks' sampling: test_train and tests/test_decode.py.)"""
    from experiments.sample import main
    from jaxlstm.blocks import kind_of

    config = load_config(os.path.join(ROOT, "configs", "text.yaml"), [
        "task.options.seq_len=12", "model.blocks=ml", "model.num_heads=2",
        "model.recurrent_dropout=0",
        "model.hidden_size=8", "training.steps=2", "training.batch_size=4",
        "training.eval_every=2", "logging.progress=false", "logging.tensorboard=false",
        "logging.plots=false", "checkpointing.every=2", f"runs_root={tmp_path}"])
    result = run_experiment(config)
    params = final_params(result.run_dir, config).params
    assert set(params) == {"blocks", "head"}
    assert [kind_of(block).letter for block in params["blocks"].blocks] == ["m", "l"]
    assert os.path.getsize(os.path.join(result.run_dir, "samples.txt")) > 400
    assert main([result.run_dir, "--prompt", "def ", "--length", "20"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("def ") and len(text) >= 24


def test_a_stack_mixing_families_trains_and_refuses_what_no_layer_takes(tmp_path):
    """model.cell one per layer: an mLSTM layer over a projected LSTM (the mLSTM and sLSTM
    layers' own stacking is checked in tests/test_stack.py; linen and nnx run mixed stacks in
    the tests below)."""
    config = load_config(PARITY, [*TINY_PARITY, "model.cell=lstm,mlstm", "model.num_layers=2",
                                  "model.proj_size=4", "training.steps=2",
                                  f"runs_root={tmp_path}"])
    result = run_experiment(config)
    assert result.status == "completed" and np.isfinite(result.summary["final"]["loss"])
    params = final_params(result.run_dir, config).params["lstm"]
    assert [type(layer.forward).__name__ for layer in params] == ["LSTMParams", "MLSTMParams"]
    assert params[1].forward.w_q.shape[0] == 4                    # reads the projection
    for overrides, message in (
            (["model.cell=slstm,mlstm", "model.num_layers=3"],
             "model.cell: expected one name, or one per layer (model.num_layers = 3), got 2"),
            (["model.cell=slstm,mlstm", "model.num_layers=2", "model.zoneout_h=0.1"],
             "model.zoneout_h: does not apply to cell 'slstm,mlstm'"),
            (["model.cell=slstm,gru2", "model.num_layers=2"],
             "model.cell: expected one of lstm, peephole")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(PARITY, ["model.hidden_size=8", *overrides])


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_linen_and_nnx_run_any_family_as_the_functional_model_does(api):
    """model.api linen / nnx with layers of other families (the protocol's Recurrent
    modules): given the same stack params, the model's outputs equal the functional API's,
    and sampling rebuilds the stack from the module's params."""
    from flax import nnx

    from jaxlstm.flax.recurrent import params_to_dict
    from jaxlstm.tasks.base import TaskSpec
    from jaxlstm.train.config import ModelConfig
    from jaxlstm.train.model import Model, stack_and_head
    from jaxlstm.train.sample import sample

    spec = TaskSpec(name="t", input_size=5, output_size=5, readout="last",
                    kind="classification", metric="accuracy")
    options = dict(cell="min_gru,mlstm", num_layers=2, hidden_size=4, num_heads=2, dropout=0.2)
    functional = Model(ModelConfig(**options), spec)
    module = Model(ModelConfig(api=api, **options), spec)
    params = functional.init(jax.random.key(0))
    got = module.init(jax.random.key(1))
    head = {"kernel": params["head"]["w"], "bias": params["head"]["b"]}
    if api == "linen":
        got = {"stack": params_to_dict(params["lstm"]), "head": head}
    else:
        nnx.replace_by_pure_dict(got, {"lstm": {"weights": params_to_dict(params["lstm"])},
                                       "head": head})
    xs = jax.random.normal(jax.random.key(2), (3, 6, 5))
    lengths = jnp.array([6, 2, 4])
    want = functional.apply(params, xs, lengths, jax.random.key(3), False)
    np.testing.assert_allclose(module.apply(got, xs, lengths, jax.random.key(3), False), want,
                               rtol=1e-5, atol=1e-6)
    trained = module.apply(got, xs, lengths, jax.random.key(3), True)
    if api == "nnx":   # the key itself draws the masks, as in the functional model
        np.testing.assert_allclose(
            trained, functional.apply(params, xs, lengths, jax.random.key(3), True),
            rtol=1e-5, atol=1e-6)
    else:              # linen draws them from its 'dropout' stream
        assert np.all(np.isfinite(trained)) and not np.allclose(trained, want)
    stack, w, _ = stack_and_head(got, module)
    assert type(stack[1].forward).__name__ == "MLSTMParams"
    np.testing.assert_array_equal(w, params["head"]["w"])
    ids = sample(got, np.array([1, 2]), 3, 5, key=jax.random.key(4), model=module)
    np.testing.assert_array_equal(ids, sample(params, np.array([1, 2]), 3, 5,
                                              key=jax.random.key(4)))


@pytest.mark.parametrize("api", ["functional", "linen", "nnx"])
def test_the_gru_trains_on_every_api(tmp_path, api):
    """A family added in its own folder (the GRU) runs in the runner on every API with no
    change above the families; an option it does not declare is refused by key."""
    config = load_config(PARITY, [*TINY_PARITY, "model.cell=gru", "training.steps=2",
                                  "model.num_heads=4", f"model.api={api}",
                                  f"runs_root={tmp_path}"])
    result = run_experiment(config)
    assert result.status == "completed" and np.isfinite(result.summary["final"]["loss"])
    if api == "functional":
        with pytest.raises(ConfigError, match=re.escape(
                "model.zoneout_c: does not apply to cell 'gru' (got 0.1; it applies to LSTM "
                "layers)")):
            load_config(PARITY, ["model.cell=gru", "model.zoneout_c=0.1"])
