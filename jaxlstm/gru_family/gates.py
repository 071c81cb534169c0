"""The GRU equations (Cho et al. 2014, in PyTorch's `nn.GRU` form), one pure function each.

A GRU step reads an input x_t and the previous hidden state h_{t-1} and returns h_t. With H
hidden units and gate order r, z, n:

        r_t = sigmoid(x_t W_ir + b_ir + h_{t-1} W_hr + b_hr)           reset gate
        z_t = sigmoid(x_t W_iz + b_iz + h_{t-1} W_hz + b_hz)           update gate
        n_t = tanh(x_t W_in + b_in + r_t * (h_{t-1} W_hn + b_hn))      candidate
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}                          hidden update

The reset gate multiplies the recurrent term *after* its matmul, bias b_hn included, as
PyTorch, cuDNN and Flax's `GRUCell` do (Cho et al.'s paper resets h_{t-1} before W_hn; that is
a different cell). Because b_hn sits inside r_t * (...), it cannot be folded into b_in, while
the r and z gates' two biases only ever appear summed: jaxlstm keeps b = (b_ir + b_hr,
b_iz + b_hz, b_in) (3H,) and b_hn (H,) apart.

z_t near 1 keeps the old state, near 0 takes the candidate: z_t plays the LSTM's forget gate
and 1 - z_t its input gate, coupled (as in CIFG).

The affine maps stay apart from the elementwise part, as in the LSTM (`jaxlstm.gates`):

        z_x = x_t @ W_x    (..., 3H), W_x = [W_ir | W_iz | W_in]    input projection
        z_h = h_{t-1} @ W_h  (..., 3H), W_h = [W_hr | W_hz | W_hn]  recurrent projection

so a sequence computes the input projections of many steps in one matmul and differentiates
the elementwise part (`gru_pointwise`) on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Activation = Callable[[Array], Array]

NUM_GATES = 3
"""Gate blocks in W_x, W_h and b, in order r, z, n."""


class GRUPreactivations(NamedTuple):
    """One side's (input or recurrent) 3H-wide projection split into its gate blocks, each
    of shape (..., H)."""

    r: Array
    z: Array
    n: Array


def split_gates(projection: Array) -> GRUPreactivations:
    """Splits a (..., 3H) projection into its r, z and n blocks, each (..., H)."""
    return GRUPreactivations(*jnp.split(projection, NUM_GATES, axis=-1))


def reset_gate(x_r: Array, h_r: Array, gate_fn: Activation = jax.nn.sigmoid) -> Array:
    """r_t = sigmoid(x_t W_ir + b_ir + h_{t-1} W_hr + b_hr): how much of the recurrent term
    the candidate sees.

    Args:
        x_r: the input side, x_t W_ir plus both r biases, shape (..., H).
        h_r: the recurrent side, h_{t-1} W_hr, shape (..., H).
        gate_fn: the gate's squashing function (Flax's `GRUCell` lets it be changed).

    Returns:
        r_t in (0, 1), shape (..., H).
    """
    return gate_fn(x_r + h_r)


def update_gate(x_z: Array, h_z: Array, gate_fn: Activation = jax.nn.sigmoid) -> Array:
    """z_t = sigmoid(x_t W_iz + b_iz + h_{t-1} W_hz + b_hz): how much of h_{t-1} to keep.

    1 keeps the old state, 0 replaces it by the candidate.

    Args:
        x_z: the input side, x_t W_iz plus both z biases, shape (..., H).
        h_z: the recurrent side, h_{t-1} W_hz, shape (..., H).
        gate_fn: the gate's squashing function.

    Returns:
        z_t in (0, 1), shape (..., H).
    """
    return gate_fn(x_z + h_z)


def candidate(x_n: Array, h_n: Array, r_t: Array, activation_fn: Activation = jnp.tanh) -> Array:
    """n_t = tanh(x_t W_in + b_in + r_t * (h_{t-1} W_hn + b_hn)): the new content.

    The reset gate scales the recurrent term after its matmul and bias (PyTorch's form).

    Args:
        x_n: x_t W_in + b_in, shape (..., H).
        h_n: h_{t-1} W_hn + b_hn, shape (..., H).
        r_t: the reset gate, shape (..., H).
        activation_fn: the squashing function (Flax's `GRUCell` lets it be changed).

    Returns:
        n_t in (-1, 1), shape (..., H).
    """
    return activation_fn(x_n + r_t * h_n)


def hidden_update(z_t: Array, n_t: Array, h_prev: Array) -> Array:
    """h_t = (1 - z_t) * n_t + z_t * h_{t-1}: keep part of the old state, take the rest from
    the candidate. All arguments and the result have shape (..., H)."""
    return (1.0 - z_t) * n_t + z_t * h_prev


def gru_pointwise(z_x: Array, z_h: Array, h_prev: Array, b: Array, b_hn: Array, *,
                  gate_fn: Activation = jax.nn.sigmoid,
                  activation_fn: Activation = jnp.tanh) -> Array:
    """The elementwise part of a step: from the two projections to h_t.

        x_r, x_z, x_n = split(z_x + b)          b = (b_ir + b_hr, b_iz + b_hz, b_in)
        h_r, h_z, h_n = split(z_h);  h_n += b_hn
        r = sigmoid(x_r + h_r),  z = sigmoid(x_z + h_z),  n = tanh(x_n + r * h_n)
        h_t = (1 - z) * n + z * h_{t-1}

    Everything here is elementwise; the matmuls happen before, in the projections.

    Args:
        z_x: x_t @ W_x, shape (..., 3H), without bias.
        z_h: h_{t-1} @ W_h, shape (..., 3H), without bias.
        h_prev: h_{t-1}, shape (..., H).
        b: the r, z and input-side n biases, shape (3H,).
        b_hn: the recurrent-side n bias, shape (H,).
        gate_fn, activation_fn: sigmoid and tanh unless a caller (Flax's `GRUCell`
            signature) asks for others.

    Returns:
        h_t, shape (..., H).
    """
    x_r, x_z, x_n = split_gates(z_x + _broadcast_units(b, z_x))
    h_r, h_z, h_n = split_gates(z_h)
    r_t = reset_gate(x_r, h_r, gate_fn)
    z_t = update_gate(x_z, h_z, gate_fn)
    n_t = candidate(x_n, h_n + _broadcast_units(b_hn, h_n), r_t, activation_fn)
    return hidden_update(z_t, n_t, h_prev)


def _broadcast_units(w: Array, like: Array) -> Array:
    """A per-unit vector (D,) shaped to broadcast against `like` (..., D) explicitly (the
    library runs under jax_numpy_rank_promotion="raise")."""
    return jnp.reshape(w, (1,) * (like.ndim - 1) + w.shape)
