"""minLSTM / minGRU (`model.cell: min_lstm | min_gru`, `model.blocks: "lg"`) in the runner."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.tasks.base import TaskSpec
from jaxlstm.train.config import ConfigError, ModelConfig, load_config
from jaxlstm.train.model import Model
from jaxlstm.train.run import run_experiment
from tests.test_train import ROOT, final_params
from tests.test_train_xlstm import TINY_PARITY

PARITY = os.path.join(ROOT, "configs", "parity.yaml")
TINY = [item for item in TINY_PARITY if not item.startswith("model.num_heads")]


@pytest.mark.parametrize("extra, key", [
    (["model.cell=min_lstm", "model.num_layers=2", "model.dropout=0.1"], "lstm"),
    (["model.blocks=lg"], "blocks"),
])
def test_min_cells_and_blocks_train_on_variable_length_sequences(tmp_path, extra, key):
    config = load_config(PARITY, [*TINY, *extra, f"runs_root={tmp_path}"])
    result = run_experiment(config)
    assert result.status == "completed" and result.step == 4
    assert np.isfinite(result.summary["final"]["loss"])
    assert key in final_params(result.run_dir, config).params


def test_min_gru_last_readout_is_each_sequence_alone():
    """Both directions' final h, after each sequence's last valid step, reach the head."""
    spec = TaskSpec(name="t", input_size=3, output_size=2, readout="last",
                    kind="classification", metric="accuracy")
    model = Model(ModelConfig(cell="min_gru", hidden_size=8, num_layers=2, bidirectional=True),
                  spec)
    params = model.init(jax.random.PRNGKey(0))
    xs = jax.random.normal(jax.random.PRNGKey(1), (3, 7, 3))
    lengths = jnp.array([7, 4, 1])
    apply = jax.jit(model.apply, static_argnums=4)
    batched = apply(params, xs, lengths, jax.random.PRNGKey(2), False)
    for b, n in enumerate(lengths.tolist()):
        alone = apply(params, xs[b:b + 1, :n], None, jax.random.PRNGKey(2), False)
        np.testing.assert_allclose(batched[b], alone[0], rtol=1e-5, atol=1e-5)


def test_every_mode_of_a_model_computes_the_same_outputs():
    """model.mode picks the form (speed), never the function."""
    spec = TaskSpec(name="t", input_size=3, output_size=2, readout="every",
                    kind="classification", metric="accuracy")
    xs = jax.random.normal(jax.random.PRNGKey(1), (2, 9, 3))
    lengths = jnp.array([9, 5])
    for base, modes in (({"cell": "min_lstm", "num_layers": 2}, ("parallel", "sequential")),
                        ({"blocks": "g"}, ("parallel",)),
                        ({"cell": "mlstm", "num_heads": 2}, ("recurrent",))):
        default = Model(ModelConfig(hidden_size=8, **base), spec)
        params = default.init(jax.random.PRNGKey(0))
        expected = default.apply(params, xs, lengths, jax.random.PRNGKey(2), False)
        for mode in modes:
            got = Model(ModelConfig(hidden_size=8, mode=mode, **base), spec).apply(
                params, xs, lengths, jax.random.PRNGKey(2), False)
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=mode)


def test_sampling_steps_a_min_lstm_model():
    from jaxlstm.train.sample import sample

    spec = TaskSpec(name="t", input_size=5, output_size=5, readout="every",
                    kind="classification", metric="accuracy")
    params = Model(ModelConfig(cell="min_lstm", hidden_size=8, num_layers=2),
                   spec).init(jax.random.PRNGKey(0))
    ids = sample(params, np.array([1, 2, 3]), 6, 5, key=jax.random.PRNGKey(1))
    assert ids.shape == (6,) and ids.min() >= 0 and ids.max() < 5


@pytest.mark.parametrize("overrides, message", [
    (["model.cell=min_gru", "model.num_heads=2"], "model.num_heads: does not apply to cell"),
    (["model.cell=min_lstm", "model.proj_size=4"], "model.proj_size: does not apply"),
    (["model.cell=min_lstm", "model.unroll=2"], "model.unroll: does not apply"),
    (["model.blocks=lx"], "model.blocks: expected a non-empty string of 'm' \\(mLSTM\\)"),
    (["model.blocks=ll", "model.num_heads=2"], "model.num_heads: does not apply with"),
    (["model.cell=min_lstm", "model.mode=recurrent"],
     "model.mode: expected one of parallel, sequential for cell 'min_lstm'"),
    (["model.blocks=mm", "model.mode=sequential"],
     "model.mode: expected one of chunkwise, parallel, recurrent for mLSTM blocks"),
    (["model.mode=parallel"], "model.mode: applies to cells mlstm, min_lstm and min_gru"),
])
def test_options_that_do_not_apply_are_refused_by_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PARITY, overrides)
