"""An export folder called back from Python: StableHLO through `jax.export`, ONNX through
ONNX Runtime. Only the folder is read: no run, no config, no jaxlstm model code."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxlstm.export.run import DESCRIPTION


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A loaded export: call it with the inputs `description["inputs"]` lists, in order;
    it returns the outputs `description["outputs"]` lists (one array, or a tuple)."""

    description: dict[str, Any]
    call: Callable[..., Any]

    def __call__(self, *inputs: Any) -> Any:
        return self.call(*inputs)

    def initial_state(self, batch_size: int) -> list[np.ndarray]:
        """A step export's state at a stream's start, for `batch_size` streams."""
        return [np.full((batch_size, *leaf["shape"][1:]), leaf["initial"], leaf["dtype"])
                for leaf in self.description["state"]]


def load(folder: str | os.PathLike) -> Loaded:
    """The export in `folder` (written by `export_run` or `jaxlstm export`), ready to call.

    Raises:
        FileNotFoundError: `folder` holds no export.
        ModuleNotFoundError: an ONNX export without onnxruntime installed.
    """
    folder = os.fspath(folder)
    path = os.path.join(folder, DESCRIPTION)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder}: not an export (it has no {DESCRIPTION}).")
    with open(path) as f:
        description = json.load(f)
    with open(os.path.join(folder, description["file"]), "rb") as f:
        data = f.read()
    if description["format"] == "stablehlo":
        from jaxlstm.export.stablehlo import load as load_stablehlo

        return Loaded(description, load_stablehlo(data))
    try:
        import onnxruntime
    except ModuleNotFoundError:
        raise ModuleNotFoundError("running an ONNX export needs onnxruntime: pip install "
                                  "onnxruntime") from None
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [t["name"] for t in description["inputs"]]

    def run(*inputs: Any) -> Any:
        feeds = {name: np.asarray(x, dtype=t["dtype"])
                 for name, x, t in zip(names, inputs, description["inputs"], strict=True)}
        outputs = session.run(None, feeds)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    return Loaded(description, run)
