"""Streaming inference: ms per time step of an exported step function, in ONNX Runtime and in
jitted JAX, at batch 1 (one stream) and 32, as ratios from one run.

The model is the runner's (`jaxlstm.train.model.Model`), one LSTM layer and a linear head;
its step is `jaxlstm.export`'s step function: (x_t, h, c) -> (y_t, h, c), the state fed back in
as a server would. JAX's side is that function jitted, called with device arrays; ONNX
Runtime's is the same function converted by jax2onnx (`jaxlstm[onnx]`), called with numpy
arrays on one session (its default threads).

    jaxlstm bench --only jaxlstm --sizes S1 --streaming
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxlstm.benchmark.timing import Budget, time_call

BATCHES = (1, 32)
INPUT_SIZE, HIDDEN_SIZE, OUTPUT_SIZE = 8, 128, 8


def _model() -> tuple[Any, Any]:
    from jaxlstm.tasks.base import TaskSpec
    from jaxlstm.train.config import ModelConfig
    from jaxlstm.train.model import Model

    spec = TaskSpec(name="stream", input_size=INPUT_SIZE, output_size=OUTPUT_SIZE,
                    readout="every", kind="regression", metric="mse")
    model = Model(ModelConfig(hidden_size=HIDDEN_SIZE), spec)
    return model, model.init(jax.random.key(0))


def run_streaming_experiment(budget: Budget) -> dict[str, Any]:
    """ms per step at each of `BATCHES` in jitted JAX and (where jax2onnx and onnxruntime are
    installed) ONNX Runtime, and their ratio."""
    from jaxlstm.export import onnx as onnx_format
    from jaxlstm.export.functions import model_function

    model, params = _model()
    step, signature = model_function(params, model, "step")
    jitted = jax.jit(step)
    session, skipped = None, None
    try:
        import onnxruntime

        session = onnxruntime.InferenceSession(onnx_format.export_function(step, signature),
                                               providers=["CPUExecutionProvider"])
    except ModuleNotFoundError as err:
        skipped = f"ONNX Runtime row: {err}"
    names = [t.name for t in signature.inputs]
    rows = []
    for batch in BATCHES:
        rng = np.random.default_rng(batch)
        inputs = [rng.standard_normal((batch, *t.shape[1:])).astype(t.dtype)
                  for t in signature.inputs]
        on_device = [jax.device_put(a) for a in inputs]
        row: dict[str, Any] = {"batch": batch}
        row["jax_ms"] = time_call(
            lambda on_device=on_device: jax.block_until_ready(jitted(*on_device)),
            budget).median_ms
        if session is not None:
            feeds = dict(zip(names, inputs, strict=True))
            row["onnxruntime_ms"] = time_call(lambda feeds=feeds: session.run(None, feeds),
                                              budget).median_ms
            row["onnxruntime_vs_jax"] = row["onnxruntime_ms"] / row["jax_ms"]
        rows.append(row)
    return {"model": f"LSTM I={INPUT_SIZE} H={HIDDEN_SIZE}, linear head O={OUTPUT_SIZE}",
            "rows": rows, "skipped": skipped}
