"""Each gate function against its equation, on numbers worked out by hand.

sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4, sigmoid(0) = 1/2, tanh(ln 3) = 8/10.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import gates

LN3 = math.log(3.0)


def close(actual, expected, atol=1e-6):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=0, atol=atol)


def test_sigmoid_gates_on_hand_numbers():
    z = jnp.array([0.0, LN3, -LN3])
    for gate in (gates.input_gate, gates.forget_gate, gates.output_gate):
        close(gate(z), [0.5, 0.75, 0.25])


def test_candidate_is_tanh():
    close(gates.candidate(jnp.array([0.0, LN3, -LN3])), [0.0, 0.8, -0.8])


def test_cell_update():
    # c_t = f * c_{t-1} + i * g = 0.25 * 2 + 0.5 * 0.8
    close(gates.cell_update(jnp.array(0.25), jnp.array(2.0), jnp.array(0.5), jnp.array(0.8)), 0.9)


def test_hidden_update():
    # h_t = o * tanh(c_t) = 0.75 * tanh(ln 3) = 0.75 * 0.8
    close(gates.hidden_update(jnp.array(0.75), jnp.array(LN3)), 0.6)


def test_forget_gate_near_one_keeps_the_cell():
    """The convention: f = 1 keeps c_{t-1} (seed 002 states it backwards)."""
    c_prev = jnp.array([3.0, -2.0])
    keep = gates.cell_update(gates.forget_gate(jnp.full(2, 30.0)), c_prev,
                             gates.input_gate(jnp.full(2, -30.0)), jnp.ones(2))
    erase = gates.cell_update(gates.forget_gate(jnp.full(2, -30.0)), c_prev,
                              gates.input_gate(jnp.full(2, -30.0)), jnp.ones(2))
    close(keep, c_prev)
    close(erase, [0.0, 0.0])


def test_affine_map_on_hand_numbers():
    x = jnp.array([1.0, 2.0])
    w_x = jnp.array([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, -1.0]])
    b = jnp.array([0.5, 0.0, 0.0, 1.0])
    close(gates.input_projection(x, w_x, b), [1.5, 2.0, 2.0, -1.0])
    # With a batch axis the bias broadcasts over it.
    close(gates.input_projection(jnp.stack([x, -x]), w_x, b),
          [[1.5, 2.0, 2.0, -1.0], [-0.5, -2.0, -2.0, 3.0]])
    h = jnp.array([2.0])
    w_h = jnp.array([[1.0, -1.0, 0.5, 0.0]])
    close(gates.recurrent_projection(h, w_h), [2.0, -2.0, 1.0, 0.0])


def test_split_gates_order_is_i_f_g_o():
    z = jnp.arange(8.0)
    split = gates.split_gates(z)
    close(split.i, [0, 1])
    close(split.f, [2, 3])
    close(split.g, [4, 5])
    close(split.o, [6, 7])


def test_pointwise_step_on_hand_numbers():
    # z_i = 0 -> i = 1/2; z_f = -ln3 -> f = 1/4; z_g = ln3 -> g = 0.8; z_o = ln3 -> o = 3/4.
    z = jnp.array([0.0, -LN3, LN3, LN3])
    state, acts = jaxlstm.lstm_pointwise(z, jnp.array([2.0]))
    close(acts.i, [0.5])
    close(acts.f, [0.25])
    close(acts.g, [0.8])
    close(acts.o, [0.75])
    close(state.c, [0.9])
    close(state.h, [0.75 * math.tanh(0.9)])
    close(acts.c, state.c)


@pytest.mark.parametrize("name", ["input_gate", "forget_gate", "candidate", "output_gate",
                                  "cell_update", "hidden_update", "input_projection",
                                  "recurrent_projection"])
def test_every_gate_function_documents_its_equation(name):
    doc = getattr(gates, name).__doc__
    assert "=" in doc.split("\n")[0], f"{name}'s first docstring line should be its equation"
