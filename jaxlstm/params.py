"""LSTM parameters as a named pytree, and their initialisation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.variants import variant_named, variant_of

Array = jax.Array
Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], Array]
"""`init(key, shape, dtype) -> array`, the signature of `jax.nn.initializers`."""


class LSTMParams(NamedTuple):
    """Weights of one LSTM layer; gate blocks along the last axis of w_x, w_h and b.

    The pre-activations are z = x_t @ w_x + h_{t-1} @ w_h + b, gate order i, f, g, o for the
    standard cell. `cell` selects a variant by its type and holds that variant's own weights
    (see `jaxlstm.variants`); `w_p` projects the output (LSTMP): h_t = h~_t @ w_p.

    Attributes:
        w_x: input kernel, shape (input_size, G * hidden_size); G = 4 (3 for CIFG).
        w_h: recurrent kernel, shape (R, G * hidden_size), R = proj_size or hidden_size.
            (Inside the time loop, `jaxlstm.recurrence`, w_h may also be a block-diagonal
            kernel as its per-head blocks, (heads, d, G, d): how the sLSTM hands the loop
            its recurrence, so that h @ R costs 1/heads of the dense product.)
        b: bias, shape (G * hidden_size,). PyTorch's two biases map to b = b_ih + b_hh.
        cell: None for the standard cell, else `PeepholeWeights`, `CoupledGates()`,
            `LayerNormWeights` or `RetainedReadoutWeights`.
        w_p: None, or the output projection (hidden_size, proj_size).
    """

    w_x: Array
    w_h: Array
    b: Array
    cell: Any = None
    w_p: Array | None = None

    @property
    def input_size(self) -> int:
        return self.w_x.shape[-2]

    @property
    def hidden_size(self) -> int:
        """H: the cell state's size."""
        return self.b.shape[-1] // variant_of(self.cell).num_gates

    @property
    def output_size(self) -> int:
        """The size of h_t: proj_size with a projection, else hidden_size."""
        return self.w_h.shape[-2]


def _check_size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}.")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}.")
    return int(value)


def _per_gate(init: Initializer, key: Array, fan_in: int, hidden_size: int,
              num_gates: int) -> Array:
    """Calls `init` once per gate with shape (fan_in, H), concatenates to (fan_in, G*H)."""
    keys = jax.random.split(key, num_gates)
    blocks = [init(k, (fan_in, hidden_size), jnp.float32) for k in keys]
    return jnp.concatenate(blocks, axis=-1)


def init_lstm(
    key: Array,
    input_size: int,
    hidden_size: int,
    *,
    cell: str = "lstm",
    proj_size: int | None = None,
    dtype: jnp.dtype = jnp.float32,
    forget_bias: float = 1.0,
    input_init: Initializer | None = None,
    recurrent_init: Initializer | None = None,
    bias_init: Initializer | None = None,
) -> LSTMParams:
    """Initialises one LSTM layer.

    Each gate's block is initialised on its own: `input_init(key, (input_size, H), float32)`
    for each gate's slice of w_x (default LeCun normal, as Flax) and
    `recurrent_init(key, (H, H), float32)` for each gate's slice of w_h (default orthogonal, so
    every gate's recurrent map starts norm-preserving). Each gate's bias block is
    `bias_init(key, (H,), float32)` (default zeros), and `forget_bias` is added to the forget
    gate's (Gers et al. 2000; Jozefowicz et al. 2015): with f_t near 1 the cell starts out
    remembering, which helps gradients flow early in training.

    A variant's own weights (`cell`) start where the variant equals or is closest to the
    standard cell: peepholes 0, layer-norm gains 1 and shifts 0; the retained-readout W_u is
    LeCun normal and b_u 0. The projection w_p (with `proj_size`) is LeCun normal.

    Initialisation runs in float32 and the result is cast to `dtype`: XLA:CPU has no bfloat16
    QR, so an orthogonal initialiser called in bfloat16 fails there.

    Args:
        key: a PRNG key.
        input_size: I, the number of input features.
        hidden_size: H, the number of hidden units (the cell state's size).
        cell: the variant: "lstm", "peephole", "cifg", "layer_norm" or "retained_readout".
        proj_size: P, to project h_t to P features (LSTMP; PyTorch's `proj_size`), or None.
        dtype: dtype of the returned parameters.
        forget_bias: initial value of the forget gate's bias b_f.
        input_init: initialiser for each gate's (I, H) block of w_x.
        recurrent_init: initialiser for each gate's (H, H) block of w_h.
        bias_init: initialiser for each gate's (H,) block of b (default zeros).

    Returns:
        `LSTMParams` with w_x (I, G*H), w_h (R, G*H), b (G*H,), the variant's weights in `cell`
        and w_p (H, P) or None; G = 4 (3 for "cifg"), R = P or H.

    Example:
        >>> params = jaxlstm.init_lstm(jax.random.key(0), input_size=3, hidden_size=8)
        >>> params.w_h.shape
        (8, 32)
    """
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    if proj_size is not None:
        proj_size = _check_size("proj_size", proj_size)
    variant = variant_named(cell)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype, got {jnp.dtype(dtype).name}.")
    input_init = input_init or jax.nn.initializers.lecun_normal()
    recurrent_init = recurrent_init or jax.nn.initializers.orthogonal()

    key_x, key_h = jax.random.split(key)  # as before variants existed: same standard init
    key_cell, key_p = jax.random.split(jax.random.fold_in(key, 1))
    num_gates = variant.num_gates
    w_x = _per_gate(input_init, key_x, input_size, hidden_size, num_gates)
    w_h = _per_gate(recurrent_init, key_h, proj_size or hidden_size, hidden_size, num_gates)
    if bias_init is None:
        b = jnp.zeros((num_gates, hidden_size), jnp.float32)
    else:  # its own key, so the kernels are the same with and without a bias_init
        keys = jax.random.split(jax.random.fold_in(key, 2), num_gates)
        b = jnp.stack([bias_init(k, (hidden_size,), jnp.float32) for k in keys])
    b = b.at[variant.forget_index].add(forget_bias).reshape(-1)
    cell_weights = variant.init_weights(key_cell, hidden_size)
    w_p = None
    if proj_size is not None:
        w_p = jax.nn.initializers.lecun_normal()(key_p, (hidden_size, proj_size), jnp.float32)
    return jax.tree.map(
        lambda a: a.astype(dtype),
        LSTMParams(w_x=w_x, w_h=w_h, b=b, cell=cell_weights, w_p=w_p),
    )
