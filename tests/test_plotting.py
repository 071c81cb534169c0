"""plot_gates draws one readable panel per gate and saves a PNG."""

import sys

import jax
import numpy as np
import pytest

import jaxlstm

pytest.importorskip("matplotlib")
from jaxlstm.plotting import plot_gates  # noqa: E402


def test_plot_gates_saves_a_labelled_png(tmp_path):
    params = jaxlstm.init_lstm(jax.random.key(0), 2, 6)
    xs = jax.random.normal(jax.random.key(1), (3, 20, 2))
    _, _, gates = jaxlstm.lstm(params, xs, return_gates=True)
    path = tmp_path / "gates.png"
    figure = plot_gates(gates, sequence=1, path=path, title="test")
    assert path.stat().st_size > 10_000
    panels = [ax for ax in figure.axes if ax.get_ylabel() == "unit"]
    assert [ax.get_title(loc="left").split()[0] for ax in panels] == [
        "input", "forget", "candidate", "output", "cell"]
    assert panels[-1].get_xlabel() == "time step t"
    assert len(figure.axes) == 10  # five panels, five colour bars
    # The image drawn is the requested sequence's, units along y and time along x.
    np.testing.assert_allclose(panels[1].images[0].get_array(), np.asarray(gates.f[1]).T,
                               rtol=1e-6)


def test_bad_sequence_index():
    params = jaxlstm.init_lstm(jax.random.key(0), 2, 4)
    _, _, gates = jaxlstm.lstm(params, np.ones((2, 5, 2), np.float32), return_gates=True)
    with pytest.raises(ValueError, match=r"sequence must be in \[0, 2\), got 5"):
        plot_gates(gates, sequence=5)


def test_retained_readout_gates_get_their_own_panels():
    params = jaxlstm.init_lstm(jax.random.key(0), 2, 6, cell="retained_readout")
    _, _, gates = jaxlstm.lstm(params, np.ones((5, 2), np.float32), return_gates=True)
    figure = plot_gates(gates)
    panels = [ax for ax in figure.axes if ax.get_ylabel() == "unit"]
    assert [ax.get_title(loc="left").split()[0] for ax in panels] == [
        "input", "forget", "candidate", "use", "use", "cell"]
    np.testing.assert_allclose(panels[3].images[0].get_array(), np.asarray(gates.u).T,
                               rtol=1e-6)


def test_not_a_gate_record():
    with pytest.raises(TypeError, match="gates must be LSTMGates"):
        plot_gates({"i": np.ones((3, 2))})


def test_without_matplotlib_the_error_says_what_to_install(monkeypatch):
    # A None entry in sys.modules makes that import fail, as if matplotlib were not installed.
    names = {m for m in sys.modules if m.split(".")[0] == "matplotlib"} | {"matplotlib"}
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install matplotlib \(or pip install "
                                          r"'jaxlstm\[plot\]'\)"):
        plot_gates(None)
