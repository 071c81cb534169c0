"""Gradient accumulation (`training.grad_accum`) and mixed precision (`model.dtype`) in the
runner's train step.

Shapes are tiny (hidden 8, T 8, batch 8) and each program is compiled once: the whole-batch
step is a module fixture every accumulation test compares against.
"""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.tasks.base import TaskSpec, classification_metrics
from jaxlstm.train import mesh
from jaxlstm.train.config import ConfigError, ModelConfig, OptimizerConfig, ScheduleConfig
from jaxlstm.train.mesh import DataParallel
from jaxlstm.train.model import Model
from jaxlstm.train.optim import make_optimizer, make_schedule
from jaxlstm.train.run import run_experiment
from jaxlstm.train.step import TrainState, jit_train_step
from tests.test_train import tiny_config

# Per-step classification ("every" read-out) with a mask, as in the masked tasks.
SPEC = TaskSpec("masked", input_size=3, output_size=4, readout="every", kind="classification",
                metric="accuracy")
BATCH, STEPS = 8, 8
# Valid target steps per row. Micro-batch j holds rows j, j + K, ...: for K = 2 they count
# 26 and 6 steps, for K = 4 14, 4, 12 and 2, so an unweighted mean of the micro-batches'
# gradients is not the whole batch's.
VALID_STEPS = np.array([8, 1, 7, 2, 6, 3, 5, 0])
# SGD with momentum: the update is linear in the gradient (Adam's g / (|g| + eps) would magnify
# rounding in near-zero components), and the momentum trace in opt_state is the gradient.
OPTIMIZER = OptimizerConfig(name="sgd", learning_rate=0.1, kwargs={"momentum": 0.9})
RTOL, ATOL = 1e-5, 1e-6  # the gradients are ~1e-2


def masked_batch():
    rng = np.random.default_rng(0)
    return {
        "inputs": rng.normal(size=(BATCH, STEPS, SPEC.input_size)).astype(np.float32),
        "targets": rng.integers(0, SPEC.output_size, (BATCH, STEPS)).astype(np.int32),
        "mask": (np.arange(STEPS)[None, :] < VALID_STEPS[:, None]).astype(np.float32),
    }


def unmasked_batch():
    return {key: value for key, value in masked_batch().items() if key != "mask"}


def make_state(grad_accum):
    schedule = make_schedule(ScheduleConfig(), OPTIMIZER.learning_rate, 1)
    return TrainState.create(model=Model(ModelConfig(hidden_size=8), SPEC),
                             tx=make_optimizer(OPTIMIZER, schedule), schedule=schedule,
                             task_metrics=classification_metrics, seed=0,
                             grad_accum=grad_accum)


def host(tree):
    return jax.tree.map(np.asarray, tree)


def assert_same_step(got, want):
    """(state, metrics) of one step equal to float tolerance (state_finite compared as is)."""
    (state, metrics), (want_state, want_metrics) = host(got), want
    for name in ("params", "opt_state"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL),
                     getattr(state, name), getattr(want_state, name))
    assert set(metrics) == set(want_metrics)
    for name, value in want_metrics.items():
        np.testing.assert_allclose(metrics[name], value, rtol=RTOL, err_msg=name)


@pytest.fixture(scope="module")
def whole_batch_step():
    """One step on the masked batch at once (K = 1), on the host."""
    return host(jit_train_step(make_state(1), masked_batch()))


@pytest.mark.parametrize("grad_accum", [2, 4])
def test_accumulated_step_equals_the_whole_batch_step(whole_batch_step, grad_accum):
    weights = VALID_STEPS.reshape(-1, grad_accum).sum(axis=0)
    assert len(set(weights)) == grad_accum  # micro-batches of different weights
    assert_same_step(jit_train_step(make_state(grad_accum), masked_batch()), whole_batch_step)


def test_accumulated_step_without_a_mask_equals_the_whole_batch_step():
    """Without a mask each micro-batch weighs rows x T_out. (The whole batch's step is taken
    with a mask of ones, the same loss, to reuse the compiled masked step.)"""
    batch = unmasked_batch()
    ones = np.ones_like(masked_batch()["mask"])
    want = host(jit_train_step(make_state(1), {**batch, "mask": ones}))
    assert_same_step(jit_train_step(make_state(2), batch), want)


def test_accumulated_step_on_the_two_device_mesh_moves_no_rows(whole_batch_step):
    parallel = DataParallel.over_all_devices()
    assert parallel.device_count == 2  # tests/conftest.py
    parallel.check_batch_size(BATCH, grad_accum=2)
    state, batch = make_state(2), masked_batch()
    compiled = mesh.train_step(parallel).lower(state, batch).compile()
    # Each device keeps its own rows: the gradients' all-reduce is the only collective.
    moves = re.findall(r"\b(all-gather|all-to-all|collective-permute)\b", compiled.as_text())
    assert not moves, moves
    assert_same_step(compiled(state, batch), whole_batch_step)


def test_batch_that_does_not_split_into_micro_batches_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        tiny_config(tmp_path, "training.grad_accum=3")
    message = str(error.value)
    assert "training.grad_accum: expected a divisor of training.batch_size (8), got 3" in message
    assert "\n" not in message


def test_micro_batches_that_do_not_split_over_the_devices_are_a_config_error(tmp_path):
    """grad_accum 8 divides the batch of 8, but micro-batches of 1 row cannot split over 2
    devices; refused before any folder is made."""
    with pytest.raises(ConfigError) as error:
        run_experiment(tiny_config(tmp_path / "runs", "training.grad_accum=8"))
    message = str(error.value)
    assert message.startswith("training.batch_size: expected a multiple of "
                              "training.grad_accum x the number of devices (8 x 2 = 16)")
    assert message.endswith("got 8.") and "\n" not in message
    assert not os.path.exists(tmp_path / "runs")


def dot_operand_dtypes(jaxpr) -> list[str]:
    """The operand dtypes of every dot_general in `jaxpr`, nested jaxprs (scans) included."""
    dtypes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            dtypes += [str(var.aval.dtype) for var in eqn.invars]
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    dtypes += dot_operand_dtypes(sub)
    return dtypes


@pytest.mark.parametrize("api", ["functional", "linen", "nnx"])
def test_bfloat16_model_computes_in_bfloat16_with_float32_loss_and_gradients(api):
    """Traced, not run: every matrix product of the loss and its gradient multiplies bfloat16
    operands (some of the gradient's accumulate in float32), the loss and the gradients are
    float32, and the float32 model has no bfloat16 at all."""
    batch = jax.tree.map(jnp.asarray, masked_batch())
    key = jax.random.PRNGKey(1)

    def loss_and_grads(dtype):
        model = Model(ModelConfig(api=api, hidden_size=8, dtype=dtype), SPEC)

        def loss(params):
            outputs = model.apply(params, batch["inputs"], None, key, True)
            return classification_metrics(outputs, batch)["loss"]

        return jax.make_jaxpr(jax.value_and_grad(loss))(model.init(key))

    mixed = loss_and_grads("bfloat16")
    dots = dot_operand_dtypes(mixed.jaxpr)
    assert dots and set(dots) == {"bfloat16"}, dots
    assert {str(aval.dtype) for aval in mixed.out_avals} == {"float32"}
    assert "bf16" not in str(loss_and_grads("float32"))


def test_bfloat16_run_with_grad_accum_trains_and_keeps_float32_state(tmp_path, monkeypatch):
    """A tiny run end to end: the config reaches the step (the state it trains holds
    grad_accum 2, params and optimizer state in float32) and the loss stays finite and falls."""
    seen = []
    compiled_step = mesh.train_step

    def recording_train_step(parallel):
        step = compiled_step(parallel)

        def recorded(state, batch):
            new_state, metrics = step(state, batch)
            seen.append((new_state.grad_accum,
                         frozenset(str(leaf.dtype) for leaf in jax.tree.leaves(
                             (new_state.params, new_state.opt_state))
                                   if jnp.issubdtype(leaf.dtype, jnp.floating))))
            return new_state, metrics

        return recorded

    monkeypatch.setattr(mesh, "train_step", recording_train_step)
    result = run_experiment(tiny_config(
        tmp_path, "model.dtype=bfloat16", "training.grad_accum=2", "schedule.name=constant",
        "optimizer.learning_rate=0.02"))
    assert result.status == "completed"
    assert set(seen) == {(2, frozenset({"float32"}))} and len(seen) == 12
    with open(os.path.join(result.run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    evals = [line["loss"] for line in lines if line["split"] == "eval"]
    train = [line["loss"] for line in lines if line["split"] == "train"]
    assert all(loss is not None and np.isfinite(loss) for loss in evals + train)
    assert evals[-1] < evals[0], evals
