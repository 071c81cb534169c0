"""GRU parameters as a named pytree, and their initialisation."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm.gru_family.gates import NUM_GATES
from jaxlstm.params import Initializer
from jaxlstm.validation import check_size

Array = jax.Array


class GRUParams(NamedTuple):
    """Weights of one GRU layer; gate blocks r, z, n along the last axis of w_x, w_h and b.

    PyTorch's `nn.GRU` maps as w_x = weight_ih.T, w_h = weight_hh.T,
    b = bias_ih + (bias_hh's r and z blocks, 0 for n), b_hn = bias_hh's n block (the n gate's
    recurrent bias sits inside r_t * (...), so it cannot be summed into b).

    Attributes:
        w_x: input kernel [W_ir | W_iz | W_in], shape (input_size, 3 * hidden_size).
        w_h: recurrent kernel [W_hr | W_hz | W_hn], shape (hidden_size, 3 * hidden_size).
        b: (b_ir + b_hr, b_iz + b_hz, b_in), shape (3 * hidden_size,).
        b_hn: the candidate's recurrent bias, shape (hidden_size,).
    """

    w_x: Array
    w_h: Array
    b: Array
    b_hn: Array

    @property
    def input_size(self) -> int:
        return self.w_x.shape[-2]

    @property
    def hidden_size(self) -> int:
        return self.w_h.shape[-2]


def _per_gate(init: Initializer, key: Array, fan_in: int, hidden_size: int) -> Array:
    """`init` once per gate with shape (fan_in, H), concatenated to (fan_in, 3H)."""
    keys = jax.random.split(key, NUM_GATES)
    return jnp.concatenate([init(k, (fan_in, hidden_size), jnp.float32) for k in keys], axis=-1)


def init_gru(
    key: Array,
    input_size: int,
    hidden_size: int,
    *,
    dtype: jnp.dtype = jnp.float32,
    input_init: Initializer | None = None,
    recurrent_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> GRUParams:
    """Initialises one GRU layer, by default as PyTorch's `nn.GRU` does.

    PyTorch draws every weight and both biases of every gate from U(-1/sqrt(H), 1/sqrt(H)).
    By default so does this, and the r and z blocks of b are the sum of two such draws
    (b_i* + b_h*, as a fresh `nn.GRU` computes them). `input_init(key, (input_size, H),
    float32)` and `recurrent_init(key, (H, H), float32)` replace the default for each gate's
    block of w_x and w_h (e.g. `jax.nn.initializers.orthogonal()` for the recurrent blocks,
    Flax's default); `bias_init(key, (H,), float32)` for each of the four bias blocks (r, z,
    input-side n, recurrent-side n), each drawn once.

    Initialisation runs in float32 and the result is cast to `dtype`.

    Args:
        key: a PRNG key.
        input_size: I, the number of input features.
        hidden_size: H, the number of hidden units.
        dtype: dtype of the returned parameters.
        input_init: initialiser for each gate's (I, H) block of w_x, or None.
        recurrent_init: initialiser for each gate's (H, H) block of w_h, or None.
        bias_init: initialiser for each (H,) bias block, or None.

    Returns:
        `GRUParams` with w_x (I, 3H), w_h (H, 3H), b (3H,), b_hn (H,).

    Example:
        >>> params = jaxlstm.init_gru(jax.random.key(0), input_size=3, hidden_size=8)
        >>> params.w_h.shape, params.b_hn.shape
        ((8, 24), (8,))
    """
    input_size = check_size(input_size, "input_size")
    hidden_size = check_size(hidden_size, "hidden_size")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype, got {jnp.dtype(dtype).name}.")
    bound = 1.0 / math.sqrt(hidden_size)

    def uniform(key: Array, shape: tuple[int, ...], dtype: jnp.dtype) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    key_x, key_h, key_b = jax.random.split(key, 3)
    w_x = _per_gate(input_init or uniform, key_x, input_size, hidden_size)
    w_h = _per_gate(recurrent_init or uniform, key_h, hidden_size, hidden_size)
    if bias_init is None:
        # PyTorch's two bias vectors (6 blocks); r and z enter only as their sum.
        b_ih, b_hh = uniform(key_b, (2, NUM_GATES, hidden_size), jnp.float32)
        b = b_ih.at[:2].add(b_hh[:2]).reshape(-1)
        b_hn = b_hh[2]
    else:
        b_r, b_z, b_in, b_hn = (bias_init(k, (hidden_size,), jnp.float32)
                                for k in jax.random.split(key_b, 4))
        b = jnp.concatenate([b_r, b_z, b_in])
    return jax.tree.map(lambda a: a.astype(dtype), GRUParams(w_x=w_x, w_h=w_h, b=b, b_hn=b_hn))
