"""A trained run's model, exported into one folder: the program file and `export.json`.

    out/
      model.stablehlo | model.onnx   the program, trained params inside
      export.json                    its inputs, outputs and state, in order, and its source

The folder appears whole or not at all: it is written under a temporary name beside `out` and
renamed into place, so a crash or a full disk mid-export leaves no half-written export, and an
export that replaces an older one (a folder holding an `export.json`) swaps it only once the
new one is complete. The run folder is only read.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import tempfile
from typing import Any

from jaxlstm.export import onnx as onnx_format
from jaxlstm.export import stablehlo
from jaxlstm.export.functions import WHAT, model_function

FORMATS = ("stablehlo", "onnx")
DESCRIPTION = "export.json"


@dataclasses.dataclass(frozen=True)
class Exported:
    """Where an export went and what it holds (`export.json`'s content)."""

    out: str
    description: dict[str, Any]


def default_out(run_dir: str, format: str, what: str) -> str:
    """`<run_dir>/export/<format>-<what>`: beside the checkpoints it was made from."""
    return os.path.join(run_dir, "export", f"{format}-{what}")


def check_request(format: str, what: str, checkpoint: str | None) -> None:
    """Raises ValueError naming the argument that is none of its choices."""
    from jaxlstm.train.sample import CHECKPOINTS

    for name, value, choices in (("format", format, FORMATS), ("what", what, WHAT),
                                 ("checkpoint", checkpoint, (None, *CHECKPOINTS))):
        if value not in choices:
            shown = ", ".join(c for c in choices if c is not None)
            raise ValueError(f"{name} must be one of {shown}, got {value!r}.")


def export_model(params: Any, model: Any, out: str | os.PathLike, *,
                 format: str = "stablehlo", what: str = "sequence",
                 source: dict[str, Any] | None = None) -> Exported:
    """Exports `model` (a `jaxlstm.train.model.Model`) with `params` into the folder `out`.

    Args:
        params: the model's params (any API's).
        model: the model they are of.
        out: the folder to write; an existing export there is replaced, anything else
            refused.
        format: "stablehlo" (jax.export, for cpu, cuda and tpu) or "onnx" (jax2onnx).
        what: "sequence" (inputs, lengths -> outputs) or "step" (x_t, *state -> y_t, *state).
        source: what the model came from, recorded in `export.json`.

    Raises:
        ValueError: a bad format or what, a bidirectional model for "step", or an `out`
            that cannot take an export (`check_out`).
        ModuleNotFoundError: "onnx" without jax2onnx.
        NotImplementedError: the converter cannot express one of the model's operations.
        OSError: `out` cannot be written.
    """
    check_request(format, what, None)
    out = os.path.abspath(os.fspath(out))
    check_out(out)
    function, signature = model_function(params, model, what)
    _trace_once(function, signature)
    if format == "stablehlo":
        data, file, extra = (stablehlo.export_function(function, signature), stablehlo.FILE,
                             {"platforms": list(stablehlo.PLATFORMS)})
    else:
        data, file, extra = (onnx_format.export_function(function, signature),
                             onnx_format.FILE, {"opset": onnx_format.OPSET})
    description = {"format": format, "file": file, **extra, **signature.to_json(),
                   "model": {"readout": model.spec.readout, "task": model.spec.name},
                   "source": source or {},
                   "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    _write_folder(out, {file: data,
                        DESCRIPTION: (json.dumps(description, indent=2) + "\n").encode()})
    return Exported(out, description)


def export_run(run_dir: str | os.PathLike, *, format: str = "stablehlo",
               what: str = "sequence", out: str | os.PathLike | None = None,
               checkpoint: str | None = None, mode: str | None = None) -> Exported:
    """Exports a run folder's trained model (see `export_model`).

    Args:
        run_dir: a run folder (its `config.yaml` and checkpoints).
        format, what: as `export_model`'s.
        out: the folder to write; default `<run_dir>/export/<format>-<what>`.
        checkpoint: "best" (the best validation state, `best_checkpoint/`) or "latest" (the
            newest regular checkpoint); default: best where the run kept one, else latest.
        mode: the form the model's families run in, instead of the run's `model.mode` (the
            forms are equal to float tolerance; a converter may express one and not another).

    Raises:
        FileNotFoundError: `run_dir` is not a run folder, or has no such checkpoint.
        ConfigError (a ValueError): the run's config does not load, or `mode` is not one of
            its families' forms.
        ValueError, ModuleNotFoundError, NotImplementedError, OSError: as `export_model`.
    """
    from jaxlstm.train.config import load_config
    from jaxlstm.train.model import Model
    from jaxlstm.train.sample import restore_checkpoint, run_task

    check_request(format, what, checkpoint)
    run_dir = os.fspath(run_dir)
    config_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{run_dir}: not a run folder (it has no config.yaml).")
    config = load_config(config_path, [] if mode is None else [f"model.mode={mode}"])
    task = run_task(config, run_dir)
    out = os.fspath(out) if out is not None else default_out(run_dir, format, what)
    check_out(os.path.abspath(out))  # before the checkpoint is read
    if checkpoint is None:
        best = os.path.join(run_dir, "best_checkpoint")
        checkpoint = "best" if os.path.isdir(best) and any(
            name.isdigit() for name in os.listdir(best)) else "latest"
    params, step = restore_checkpoint(run_dir, config, task, which=checkpoint)
    source = {"run_dir": os.path.abspath(run_dir), "checkpoint": checkpoint, "step": step,
              "mode": config.model.mode}
    return export_model(params, Model(config.model, task.spec), out, format=format,
                        what=what, source=source)


def _trace_once(function: Any, signature: Any) -> None:
    """Traces `function` at a small concrete size, so that the model's own errors (a mode its
    families do not have, say) are raised as themselves, not as a converter's failure."""
    import jax
    import numpy as np

    sizes = {"batch": 1, "time": 2}
    jax.eval_shape(function, *(jax.ShapeDtypeStruct(tuple(sizes.get(d, d) for d in t.shape),
                                                    np.dtype(t.dtype))
                               for t in signature.inputs))


def check_out(out: str) -> None:
    """Raises ValueError unless the folder `out` can take an export: it does not exist, or
    holds an earlier export (which is replaced, never anything else), and the nearest folder
    above it that exists is writable."""
    if os.path.lexists(out) and not (os.path.isdir(out) and
                                     os.path.isfile(os.path.join(out, DESCRIPTION))):
        raise ValueError(f"{out} exists and is not an export (no {DESCRIPTION} in it); "
                         "choose another --out.")
    parent = os.path.dirname(out)
    while not os.path.isdir(parent):  # the nearest folder that exists must take a new one
        if os.path.lexists(parent):
            raise ValueError(f"{out}: {parent} is not a folder.")
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{out}: {parent} is not writable.")


def _write_folder(out: str, files: dict[str, bytes]) -> None:
    """Writes `files` into a new folder and renames it to `out` (replacing an older export)."""
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    try:
        for name, data in files.items():
            with open(os.path.join(staging, name), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        old = None
        if os.path.isdir(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.replace(out, os.path.join(old, "export"))
        try:
            os.replace(staging, out)
        except BaseException:
            if old is not None:  # the older export back where it was
                os.replace(os.path.join(old, "export"), out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
