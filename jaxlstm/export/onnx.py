"""ONNX: the model converted by jax2onnx, run by ONNX Runtime or any ONNX backend.

jax2onnx (the `onnx` extra) maps each JAX primitive to ONNX operators and `lax.scan` to an
ONNX `Loop` whose trip count is the input's length, so the time loop stays one loop over a
symbolic T instead of being unrolled. The trained params are the graph's initializers; the
symbolic dimensions keep their names ("batch", "time").

    import onnxruntime
    session = onnxruntime.InferenceSession("model.onnx")
    (outputs,) = session.run(None, {"inputs": xs, "lengths": lengths})
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxlstm.export.functions import Signature

FILE = "model.onnx"
OPSET = 21
INSTALL = "pip install 'jaxlstm[onnx]'"


def available() -> bool:
    """Whether the converter is installed."""
    return importlib.util.find_spec("jax2onnx") is not None


def export_function(function: Callable[..., Any], signature: Signature) -> bytes:
    """`function` converted to an ONNX model (its serialised `ModelProto`).

    Raises:
        ModuleNotFoundError: jax2onnx is not installed.
        NotImplementedError: the converter has no ONNX form for one of the model's operations.
    """
    if not available():
        raise ModuleNotFoundError(f"ONNX export needs jax2onnx: {INSTALL}")
    # jax2onnx logs a traceback for each of its plugins whose library (equinox, dm-pix) is
    # absent; none of them is needed here.
    logging.getLogger("jax2onnx.plugins.plugin_system").setLevel(logging.ERROR)
    from jax2onnx import to_onnx

    inputs = [jax.ShapeDtypeStruct(t.shape, np.dtype(t.dtype)) for t in signature.inputs]
    try:
        model = to_onnx(function, inputs, model_name=f"jaxlstm_{signature.what}", opset=OPSET,
                        input_names=[t.name for t in signature.inputs],
                        output_names=[t.name for t in signature.outputs])
    except Exception as err:
        reason = " ".join(str(err).split("\n")[0].split())[:200] or type(err).__name__
        raise NotImplementedError(f"jax2onnx {_version()} cannot convert this model's "
                                  f"{signature.what} function: {reason}") from err
    return model.SerializeToString()


def _version() -> str:
    from importlib.metadata import version

    return version("jax2onnx")
