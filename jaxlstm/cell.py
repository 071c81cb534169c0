"""The state and gate records of an LSTM, and the standard cell's elementwise step."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm import gates

Array = jax.Array


class LSTMState(NamedTuple):
    """The recurrent state, named so nobody has to remember (h, c) versus (c, h).

    Attributes:
        h: hidden state h_t (the "short-term memory" and the step's output), shape (..., H).
        c: cell state c_t (the "long-term memory"), shape (..., H).
    """

    h: Array
    c: Array


class LSTMGates(NamedTuple):
    """Per-step activations, for looking inside a trained model. Each has shape (..., H).

    Attributes:
        i: input gate i_t = sigmoid(z_i).
        f: forget gate f_t = sigmoid(z_f) (1 keeps the old cell state).
        g: candidate g_t = tanh(z_g).
        o: output gate o_t = sigmoid(z_o).
        c: cell state c_t = f_t * c_{t-1} + i_t * g_t.
    """

    i: Array
    f: Array
    g: Array
    o: Array
    c: Array


def lstm_pointwise(z: Array, c_prev: Array) -> tuple[LSTMState, LSTMGates]:
    """The elementwise part of a step: from the pre-activations z to the new state.

        i, f, g, o = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)
        c_t = f * c_{t-1} + i * g
        h_t = o * tanh(c_t)

    Everything here is elementwise; the matrix products happen before, in the affine map.

    Args:
        z: fused pre-activations x_t @ W_x + h_{t-1} @ W_h + b, shape (..., 4H).
        c_prev: previous cell state c_{t-1}, shape (..., H).

    Returns:
        The new `LSTMState(h_t, c_t)` and the step's `LSTMGates`.
    """
    z_i, z_f, z_g, z_o = gates.split_gates(z)
    i_t = gates.input_gate(z_i)
    f_t = gates.forget_gate(z_f)
    g_t = gates.candidate(z_g)
    o_t = gates.output_gate(z_o)
    c_t = gates.cell_update(f_t, c_prev, i_t, g_t)
    h_t = gates.hidden_update(o_t, c_t)
    return LSTMState(h=h_t, c=c_t), LSTMGates(i=i_t, f=f_t, g=g_t, o=o_t, c=c_t)


def zero_state_like(x_t: Array, hidden_size: int, output_size: int | None = None) -> LSTMState:
    """A zero `LSTMState` for inputs shaped like `x_t` (..., I), built from `x_t` itself.

    h has `output_size` features (proj_size with a projection; default hidden_size), c has
    `hidden_size`. Built with `zeros_like` from the input rather than a bare `jnp.zeros`, so
    the state carries the input's sharding along its batch axes; a bare `jnp.zeros` carry
    breaks `lax.scan` under an explicit mesh or `shard_map`, where the carry's sharding must
    match the body's output.
    """
    zero = jnp.zeros_like(x_t[..., :1])
    batch = x_t.shape[:-1]
    return LSTMState(h=jnp.broadcast_to(zero, batch + (output_size or hidden_size,)),
                     c=jnp.broadcast_to(zero, batch + (hidden_size,)))
