"""The run folder's pictures: loss curves, the task's own picture and one sequence's gates.

matplotlib is optional: without it `draw_all` draws nothing and says so in the summary.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import jax
import numpy as np

from jaxlstm import family as families
from jaxlstm.tasks.base import baseline_of
from jaxlstm.train.logs import read_metrics
from jaxlstm.train.model import stack_and_head
from jaxlstm.train.step import TrainState, jit_predict


def loss_curves(path: str, records: list[dict[str, Any]], metric: str,
                baseline: dict[str, float] | None = None) -> None:
    """Training loss and the held-out loss and metric against the step, with the baseline's
    values as dashed lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    ax_loss, ax_metric = figure.subplots(1, 2)
    for split, style in (("train", "-"), ("eval", "o-")):
        rows = [r for r in records if r["split"] == split]
        if rows:
            ax_loss.plot([r["step"] for r in rows], [r["loss"] for r in rows], style,
                         label=split, markersize=3)
            if metric in rows[0]:
                ax_metric.plot([r["step"] for r in rows], [r[metric] for r in rows], style,
                               label=split, markersize=3)
    for ax, key in ((ax_loss, "loss"), (ax_metric, metric)):
        if baseline and key in baseline:
            ax.axhline(baseline[key], color="grey", linestyle="--", label="baseline")
    ax_loss.set(xlabel="step", ylabel="loss", title="loss", yscale="log")
    ax_metric.set(xlabel="step", ylabel=metric, title=metric)
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend()
    figure.savefig(path, dpi=110)


def draw_all(run_dir: str, state: TrainState, task: Any, eval_batches: list[dict[str, Any]]
             ) -> list[str]:
    """Draws every picture the run has; returns the files written (empty without matplotlib).

    `eval_batches` are held-out batches to draw the task's picture and the gates from (for a
    streamed split, its first few)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plots skipped: matplotlib is not installed (pip install matplotlib).",
              file=sys.stderr)
        return []
    from jaxlstm.plotting import plot_gates

    written = []
    path = os.path.join(run_dir, "loss.png")
    loss_curves(path, read_metrics(os.path.join(run_dir, "metrics.jsonl")), task.spec.metric,
                baseline_of(task, "valid"))
    written.append(path)
    if hasattr(task, "plot"):
        outputs = [np.asarray(jit_predict(state, b)) for b in eval_batches]
        path = os.path.join(run_dir, f"{task.spec.name}.png")
        task.plot(path, outputs, eval_batches)
        written.append(path)
    if isinstance(state.params, dict) and "blocks" in state.params:
        return written  # a block model has no cell stack
    try:
        layer = stack_and_head(state.params)[0][0].forward  # the first layer, forwards
    except ValueError:  # a linen / nnx Recurrent stack: no LSTM layer to picture
        return written
    family = families.find(layer)
    if family is None or family.apply_with_gates is None:  # a family whose gates stay inside
        return written
    batch = eval_batches[0]
    inputs = batch["inputs"][:1]
    lengths = batch.get("lengths")
    _, _, gates = family.apply_with_gates(layer, inputs,
                                          seq_lengths=None if lengths is None else lengths[:1])
    path = os.path.join(run_dir, "gates.png")
    plot_gates(jax.device_get(gates), sequence=0, path=path,
               title=f"{task.spec.name}: first layer's gates on one held-out sequence")
    written.append(path)
    return written
