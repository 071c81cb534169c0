"""Trained models served outside jaxlstm: StableHLO for XLA runtimes, ONNX for the rest.

    from jaxlstm.export import export_run, load
    exported = export_run("runs/quickstart/<time>", format="stablehlo", what="step")
    step = load(exported.out)                 # needs neither jaxlstm's config nor the run
    y_t, *state = step(x_t, *state)

or `jaxlstm export RUN [--format stablehlo|onnx] [--what sequence|step] [--out PATH]`.

A layer above `jaxlstm.train` (it reads run folders and checkpoints); `import jaxlstm` does not
load it. The pieces: `functions` (the sequence and step functions of a trained model, with
their signatures), `stablehlo` and `onnx` (the two formats), `run` (a folder per export,
written whole or not at all), `loaded` (calling an export back).
"""

from jaxlstm.export.functions import Signature, model_function
from jaxlstm.export.loaded import Loaded, load
from jaxlstm.export.run import FORMATS, Exported, export_model, export_run

__all__ = ["FORMATS", "Exported", "Loaded", "Signature", "export_model", "export_run", "load",
           "model_function"]
