"""The LSTM equations, one pure function each.

An LSTM step reads an input x_t and the previous state (h_{t-1}, c_{t-1}) and returns the new
state (h_t, c_t). With H hidden units and gate order i, f, g, o:

        z   = x_t @ W_x + h_{t-1} @ W_h + b      fused affine map, shape (..., 4H)
        i_t = sigmoid(z_i)                       input gate
        f_t = sigmoid(z_f)                       forget gate (1 keeps the old cell, 0 erases it)
        g_t = tanh(z_g)                          candidate cell state C~_t ("input node")
        o_t = sigmoid(z_o)                       output gate
        c_t = f_t * c_{t-1} + i_t * g_t          cell update
        h_t = o_t * tanh(c_t)                    hidden update

The forget-gate convention: f_t near 1 *keeps* c_{t-1}, f_t near 0 erases it. This is the
convention of Gers, Schmidhuber & Cummins (2000) and of every framework (PyTorch, Flax, Keras,
Haiku, Equinox). Some tutorials state it backwards ("a value closer to 1 means forget more");
that reading is wrong for the equations above.

The same pieces under another vocabulary (the Udacity "learn / forget / remember / use" view):

        long-term memory  (LTM)        = cell state c
        short-term memory (STM)        = hidden state h
        event                          = input x_t
        learn gate    (new info kept)  = i_t * g_t            (`input_gate`, `candidate`)
        forget gate   (LTM kept)       = f_t * c_{t-1}        (`forget_gate`)
        remember gate (new LTM)        = their sum = c_t      (`cell_update`)
        use gate      (new STM)        = o_t * tanh(...) = h_t  (`output_gate`, `hidden_update`)

That formulation's use gate squashes W_u (f_t * c_{t-1}) + b_u rather than c_t, which makes it a
different cell; it is implemented as the "retained_readout" variant in `jaxlstm.variants`.

The affine map is kept apart from the elementwise part on purpose: the matrix products are
where the time goes, and keeping them separate lets the sequence code batch them (for example
all input projections of a chunk of steps at once) and differentiate the elementwise part on
its own, without changing the equations.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

NUM_GATES = 4
"""Gates in the fused pre-activation, in order i, f, g, o."""


class GatePreactivations(NamedTuple):
    """The fused pre-activation z split into its four gates, each of shape (..., H)."""

    i: Array
    f: Array
    g: Array
    o: Array


def input_projection(x_t: Array, w_x: Array, b: Array) -> Array:
    """z_x = x_t @ W_x + b: the input half of the affine map.

    It does not depend on the state, so a sequence can compute it for many steps in one matmul.

    Args:
        x_t: inputs, shape (..., I).
        w_x: input kernel, shape (I, 4H), gate order i, f, g, o along the last axis.
        b: bias, shape (4H,).

    Returns:
        Shape (..., 4H).
    """
    z = x_t @ w_x
    # Explicit reshape rather than implicit rank promotion, so the library runs under
    # jax_numpy_rank_promotion="raise".
    return z + jnp.reshape(b, (1,) * (z.ndim - 1) + b.shape)


def recurrent_projection(h_prev: Array, w_h: Array) -> Array:
    """z_h = h_{t-1} @ W_h: the recurrent half of the affine map.

    Args:
        h_prev: previous hidden state, shape (..., H).
        w_h: recurrent kernel, shape (H, 4H), gate order i, f, g, o along the last axis.

    Returns:
        Shape (..., 4H).
    """
    return h_prev @ w_h


def split_gates(z: Array) -> GatePreactivations:
    """Splits the fused pre-activation z of shape (..., 4H) into z_i, z_f, z_g, z_o (..., H)."""
    return GatePreactivations(*jnp.split(z, NUM_GATES, axis=-1))


def input_gate(z_i: Array) -> Array:
    """i_t = sigmoid(W_xi x_t + W_hi h_{t-1} + b_i): how much of the candidate to write.

    Args:
        z_i: the input gate's pre-activation, shape (..., H).

    Returns:
        i_t in (0, 1), shape (..., H).
    """
    return jax.nn.sigmoid(z_i)


def forget_gate(z_f: Array) -> Array:
    """f_t = sigmoid(W_xf x_t + W_hf h_{t-1} + b_f): how much of c_{t-1} to keep.

    1 keeps the old cell state, 0 erases it. A positive initial b_f (the forget bias) makes the
    cell remember by default early in training.

    Args:
        z_f: the forget gate's pre-activation, shape (..., H).

    Returns:
        f_t in (0, 1), shape (..., H).
    """
    return jax.nn.sigmoid(z_f)


def candidate(z_g: Array) -> Array:
    """g_t = C~_t = tanh(W_xg x_t + W_hg h_{t-1} + b_g): the new content the cell may store.

    Also called the candidate cell state or the input node.

    Args:
        z_g: the candidate's pre-activation, shape (..., H).

    Returns:
        g_t in (-1, 1), shape (..., H).
    """
    return jnp.tanh(z_g)


def output_gate(z_o: Array) -> Array:
    """o_t = sigmoid(W_xo x_t + W_ho h_{t-1} + b_o): how much of the cell to expose as h_t.

    Args:
        z_o: the output gate's pre-activation, shape (..., H).

    Returns:
        o_t in (0, 1), shape (..., H).
    """
    return jax.nn.sigmoid(z_o)


def cell_update(f_t: Array, c_prev: Array, i_t: Array, g_t: Array) -> Array:
    """c_t = f_t * c_{t-1} + i_t * g_t: keep part of the old cell, write part of the candidate.

    All arguments and the result have shape (..., H).
    """
    return f_t * c_prev + i_t * g_t


def hidden_update(o_t: Array, c_t: Array) -> Array:
    """h_t = o_t * tanh(c_t): the gated, squashed cell state, the step's output.

    All arguments and the result have shape (..., H).
    """
    return o_t * jnp.tanh(c_t)


def coupled_input_gate(f_t: Array) -> Array:
    """i_t = 1 - f_t: the coupled input and forget gate (CIFG) writes what it forgets.

    Greff et al. (2017) found this removes a gate's parameters at no measurable cost in accuracy.
    All arguments and the result have shape (..., H).
    """
    return 1.0 - f_t


def peephole_gate(z: Array, w_c: Array, c: Array) -> Array:
    """sigmoid(z + w_c * c): a gate that also sees the cell state (Gers & Schmidhuber 2000).

    The peephole weights w_c are diagonal, one per unit, as in the paper.

    Args:
        z: the gate's pre-activation from x_t and h_{t-1}, shape (..., H).
        w_c: peephole weights, shape (H,).
        c: the cell state the gate looks at (c_{t-1} for i and f, c_t for o), shape (..., H).

    Returns:
        The gate's activation in (0, 1), shape (..., H).
    """
    return jax.nn.sigmoid(z + _broadcast_units(w_c, z) * c)


LAYER_NORM_EPSILON = 1e-5
"""Added to the variance in `layer_norm`, as in PyTorch's LayerNorm."""


def layer_norm(a: Array, gain: Array, bias: Array | None = None) -> Array:
    """LN(a) = gain * (a - mean(a)) / sqrt(var(a) + eps) + bias, over the last axis.

    Ba et al. (2016) normalise each step's summed inputs to a layer over all its units.
    Statistics are computed in at least float32, so bfloat16 inputs normalise accurately.

    Args:
        a: shape (..., D).
        gain: shape (D,).
        bias: shape (D,), or None for no bias.

    Returns:
        Shape (..., D), the dtype of `a`.
    """
    x = a.astype(jnp.promote_types(a.dtype, jnp.float32))
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    normed = ((x - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPSILON)).astype(a.dtype)
    out = normed * _broadcast_units(gain, normed)
    return out if bias is None else out + _broadcast_units(bias, out)


def retained_memory(f_t: Array, c_prev: Array) -> Array:
    """f_t * c_{t-1}: what the forget gate keeps of the long-term memory (seed 003's forget gate).

    All arguments and the result have shape (..., H).
    """
    return f_t * c_prev


def retained_readout(retained: Array, w_u: Array, b_u: Array) -> Array:
    """u_t = tanh(W_u (f_t * c_{t-1}) + b_u): what seed 003's use gate reads.

    The use gate's output is h_t = u_t * v_t with v_t = sigmoid(W_v [h_{t-1}, x_t] + b_v): it
    reads the retained memory through its own affine map instead of the new cell state.

    Args:
        retained: f_t * c_{t-1}, shape (..., H).
        w_u: (H, H).
        b_u: (H,).

    Returns:
        u_t in (-1, 1), shape (..., H).
    """
    u = retained @ w_u
    return jnp.tanh(u + _broadcast_units(b_u, u))


def _broadcast_units(w: Array, like: Array) -> Array:
    """Reshapes a per-unit vector (D,) to broadcast against `like` (..., D) explicitly
    (the library runs under jax_numpy_rank_promotion="raise")."""
    return jnp.reshape(w, (1,) * (like.ndim - 1) + w.shape)
