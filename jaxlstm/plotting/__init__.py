"""Pictures of what an LSTM does: gate activations and the cell state over time.

matplotlib (a dependency of jaxlstm) is imported only when a function here is called, so
`import jaxlstm` stays light; without it, the call says what to install. Figures are built
without pyplot, so nothing global changes.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxlstm.cell import LSTMGates

# Every field a gate record (`LSTMGates`, `RetainedReadoutGates`) can have: label, colour map
# and value range (None: symmetric about 0, from the data).
_PANELS = {
    "i": ("input gate i_t", "viridis", (0.0, 1.0)),
    "f": ("forget gate f_t (1 keeps)", "viridis", (0.0, 1.0)),
    "g": ("candidate g_t", "RdBu_r", (-1.0, 1.0)),
    "o": ("output gate o_t", "viridis", (0.0, 1.0)),
    "u": ("use gate's read-out u_t = tanh(W_u (f_t c_{t-1}) + b_u)", "RdBu_r", (-1.0, 1.0)),
    "v": ("use gate v_t", "viridis", (0.0, 1.0)),
    "c": ("cell state c_t", "RdBu_r", None),
}


def _matplotlib() -> tuple[type, type]:
    """matplotlib's Agg canvas and Figure, or an ImportError that says how to install it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("plotting needs matplotlib, which is not installed: "
                          "pip install matplotlib (or pip install 'jaxlstm[plot]').") from err
    return FigureCanvasAgg, Figure


def plot_gates(
    gates: LSTMGates,
    *,
    sequence: int = 0,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    max_units: int = 64,
) -> Any:
    """Heatmaps of each gate and c over time for one sequence; saves a PNG if `path` is given.

    Time runs along x, hidden units along y, one panel per gate with its own colour bar
    (gates on [0, 1], the candidate on [-1, 1], the cell state on a range symmetric about 0).

    Args:
        gates: `LSTMGates` (or a variant's record, e.g. `RetainedReadoutGates`) from
            `jaxlstm.lstm(..., return_gates=True)`, each field (T, H) or (batch, T, H).
        sequence: which sequence of a batch to draw.
        path: where to save the PNG.
        title: the figure's title.
        max_units: draw at most this many units (the first ones), to keep rows readable.

    Returns:
        The matplotlib `Figure`.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).

    Example:
        >>> _, _, gates = jaxlstm.lstm(params, xs, return_gates=True)
        >>> plot_gates(gates, sequence=0, path="gates.png")
    """
    FigureCanvasAgg, Figure = _matplotlib()
    fields = [name for name in getattr(gates, "_fields", ()) if name in _PANELS]
    if not fields:
        raise TypeError(
            f"gates must be LSTMGates or a variant's gate record, got {type(gates).__name__}."
        )
    arrays = {name: np.asarray(getattr(gates, name), np.float32) for name in fields}
    first = arrays[fields[0]]
    ndim = first.ndim
    if ndim == 3:
        if not 0 <= sequence < first.shape[0]:
            raise ValueError(f"sequence must be in [0, {first.shape[0]}), got {sequence}.")
        arrays = {name: a[sequence] for name, a in arrays.items()}
    elif ndim != 2:
        raise ValueError(f"gates must have shape (T, H) or (batch, T, H), got {ndim} dims.")
    num_steps, hidden = arrays[fields[0]].shape
    units = min(hidden, max_units)

    figure = Figure(figsize=(max(6.0, min(16.0, 4 + num_steps / 8)), 2.2 * len(fields)),
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(fields), 1, sharex=True)
    for ax, name in zip(axes, fields):
        label, cmap, limits = _PANELS[name]
        data = arrays[name][:, :units].T  # units along y, time along x
        if limits is None:
            bound = float(np.max(np.abs(data))) or 1.0
            limits = (-bound, bound)
        image = ax.imshow(data, aspect="auto", origin="lower", cmap=cmap, vmin=limits[0],
                          vmax=limits[1], interpolation="nearest",
                          extent=(-0.5, num_steps - 0.5, -0.5, units - 0.5))
        ax.set_ylabel("unit")
        ax.set_title(label, loc="left", fontsize=10)
        figure.colorbar(image, ax=ax, pad=0.01)
    axes[-1].set_xlabel("time step t")
    shown = f" (first {units} of {hidden} units)" if units < hidden else ""
    figure.suptitle((title or "LSTM gates and cell state") + shown)
    if path is not None:
        figure.savefig(os.fspath(path), dpi=110)
    return figure
