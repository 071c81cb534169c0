"""LSTM parameters as a named pytree, and their initialisation."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.gates import NUM_GATES

Array = jax.Array
Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], Array]
"""`init(key, shape, dtype) -> array`, the signature of `jax.nn.initializers`."""


class LSTMParams(NamedTuple):
    """Weights of one LSTM layer; gate order i, f, g, o along the last axis of each.

    The pre-activation of all four gates is z = x_t @ w_x + h_{t-1} @ w_h + b.

    Attributes:
        w_x: input kernel, shape (input_size, 4 * hidden_size).
        w_h: recurrent kernel, shape (hidden_size, 4 * hidden_size).
        b: bias, shape (4 * hidden_size,). PyTorch's two biases map to b = b_ih + b_hh.
    """

    w_x: Array
    w_h: Array
    b: Array

    @property
    def input_size(self) -> int:
        return self.w_x.shape[-2]

    @property
    def hidden_size(self) -> int:
        return self.w_h.shape[-2]


def _check_size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}.")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}.")
    return int(value)


def _per_gate(init: Initializer, key: Array, fan_in: int, hidden_size: int) -> Array:
    """Calls `init` once per gate with shape (fan_in, H), concatenates to (fan_in, 4H)."""
    keys = jax.random.split(key, NUM_GATES)
    blocks = [init(k, (fan_in, hidden_size), jnp.float32) for k in keys]
    return jnp.concatenate(blocks, axis=-1)


def init_lstm(
    key: Array,
    input_size: int,
    hidden_size: int,
    *,
    dtype: jnp.dtype = jnp.float32,
    forget_bias: float = 1.0,
    input_init: Initializer | None = None,
    recurrent_init: Initializer | None = None,
) -> LSTMParams:
    """Initialises one LSTM layer.

    Each gate's block is initialised on its own: `input_init(key, (input_size, H), float32)`
    for each gate's slice of w_x (default LeCun normal, as Flax) and
    `recurrent_init(key, (H, H), float32)` for each gate's slice of w_h (default orthogonal, so
    every gate's recurrent map starts norm-preserving). The bias is zero except the forget gate's,
    which is `forget_bias` (Gers et al. 2000; Jozefowicz et al. 2015): with f_t near 1 the cell
    starts out remembering, which helps gradients flow early in training.

    Initialisation runs in float32 and the result is cast to `dtype`: XLA:CPU has no bfloat16
    QR, so an orthogonal initialiser called in bfloat16 fails there.

    Args:
        key: a PRNG key.
        input_size: I, the number of input features.
        hidden_size: H, the number of hidden units.
        dtype: dtype of the returned parameters.
        forget_bias: initial value of the forget gate's bias b_f.
        input_init: initialiser for each gate's (I, H) block of w_x.
        recurrent_init: initialiser for each gate's (H, H) block of w_h.

    Returns:
        `LSTMParams` with w_x (I, 4H), w_h (H, 4H), b (4H,).

    Example:
        >>> params = jaxlstm.init_lstm(jax.random.key(0), input_size=3, hidden_size=8)
        >>> params.w_h.shape
        (8, 32)
    """
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype, got {jnp.dtype(dtype).name}.")
    input_init = input_init or jax.nn.initializers.lecun_normal()
    recurrent_init = recurrent_init or jax.nn.initializers.orthogonal()

    key_x, key_h = jax.random.split(key)
    w_x = _per_gate(input_init, key_x, input_size, hidden_size)
    w_h = _per_gate(recurrent_init, key_h, hidden_size, hidden_size)
    b = jnp.zeros((NUM_GATES, hidden_size), jnp.float32).at[1].set(forget_bias).reshape(-1)
    return LSTMParams(w_x=w_x.astype(dtype), w_h=w_h.astype(dtype), b=b.astype(dtype))
