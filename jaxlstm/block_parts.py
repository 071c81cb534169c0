"""Pieces shared by the residual blocks of the cell families (`jaxlstm.xlstm.blocks`,
`jaxlstm.minrnn.blocks`): the pre-norm, the causal convolution, the initialisers of the
reference implementations, and the variable-length helpers.

Every block is causal and zero at padded steps; `valid_steps` and `zero_padding` are how each
one keeps that promise for right-padded batches with `seq_lengths`.

Core module: jax, numpy and chex only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxlstm.gates import layer_norm
from jaxlstm.validation import check_floating, check_seq_lengths

Array = jax.Array


def round_up_size(size: float, multiple: int) -> int:
    """ceil(size / multiple) * multiple: the xLSTM reference's `UpProjConfigMixin` rounding."""
    return int(math.ceil(size / multiple) * multiple)


def per_feature(w: Array, like: Array) -> Array:
    """(D,) -> broadcastable against (..., D) explicitly (rank promotion raises in tests)."""
    return jnp.reshape(w, (1,) * (like.ndim - 1) + w.shape)


def residual_layer_norm(x: Array, weight: Array) -> Array:
    """The xLSTM reference's LayerNorm: (1 + weight) * (x - mean) / sqrt(var + 1e-5), no bias;
    weight initialised to 0 makes it a plain normalisation at the start."""
    return layer_norm(x, 1.0 + weight)


def causal_conv1d(xs: Array, kernel: Array, bias: Array) -> Array:
    """Depthwise causal convolution over time (the xLSTM reference's `CausalConv1d`).

        y_t = sum_{j=0}^{K-1} kernel[j] * x_{t-K+1+j} + bias        (x_s = 0 for s < 0)

    Args:
        xs: (..., T, F).
        kernel: (K, F), K >= 1; kernel[K-1] weighs the current step.
        bias: (F,).

    Returns:
        (..., T, F). y_t depends on x_{t-K+1..t} only.
    """
    size = kernel.shape[0]
    steps = xs.shape[-2]
    widths = [(0, 0)] * xs.ndim
    widths[-2] = (size - 1, 0)
    padded = jnp.pad(xs, widths)
    out = per_feature(bias, xs)
    for j in range(size):
        out = out + padded[..., j:j + steps, :] * per_feature(kernel[j], xs)
    return out


def init_causal_conv(key: Array, size: int, features: int) -> tuple[Array, Array]:
    """PyTorch's Conv1d default for a depthwise conv: U(+-1/sqrt(K)) for kernel (K, F) and
    bias (F,); size 0 gives an empty kernel (the conv turned off)."""
    if size == 0:
        return jnp.zeros((0, features), jnp.float32), jnp.zeros((features,), jnp.float32)
    bound = 1.0 / math.sqrt(size)
    k_w, k_b = jax.random.split(key)
    return (jax.random.uniform(k_w, (size, features), jnp.float32, -bound, bound),
            jax.random.uniform(k_b, (features,), jnp.float32, -bound, bound))


def small_init(key: Array, shape: tuple[int, ...], dim: int) -> Array:
    """N(0, 2 / (5 dim)) ("small init", Nguyen & Salazar 2019), the xLSTM reference's default."""
    return math.sqrt(2.0 / (5.0 * dim)) * jax.random.normal(key, shape, jnp.float32)


def wang_init(key: Array, shape: tuple[int, ...], dim: int, num_blocks: int) -> Array:
    """N(0, (2 / (num_blocks sqrt(dim)))^2), the xLSTM reference's init of output projections
    (scaled down with depth so the residual stream's variance stays put)."""
    return (2.0 / num_blocks / math.sqrt(dim)) * jax.random.normal(key, shape, jnp.float32)


def check_block_xs(xs: Any, dim: int, name: str = "xs") -> Array:
    """`xs` as a floating array of shape (batch..., T, dim), or a ValueError naming `name`."""
    xs = check_floating(xs, name)
    if xs.ndim < 2 or xs.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (batch..., T, {dim}), got {tuple(xs.shape)}.")
    return xs


def valid_steps(xs: Array, seq_lengths: Any) -> Array | None:
    """(batch..., T) bool mask of valid steps of `xs` (batch..., T, F), or None without
    `seq_lengths`."""
    if seq_lengths is None:
        return None
    steps = xs.shape[-2]
    lengths = check_seq_lengths(seq_lengths, xs.shape[:-2], steps)
    time = jnp.arange(steps).reshape((1,) * lengths.ndim + (steps,))
    return time < lengths[..., None]


def zero_padding(xs: Array, valid: Array | None) -> Array:
    """`xs` (batch..., T, F) with the steps outside `valid` (batch..., T) set to zero."""
    return xs if valid is None else jnp.where(valid[..., None], xs, 0.0)


def init_stack_ends(key: Array, input_size: int, dim: int, dtype: Any) -> dict[str, Array]:
    """What every block stack has around its blocks: the input projection w_in (I, D), small
    init, and b_in (D,), and the final norm's weight (D,), zero (scale 1)."""
    return {"w_in": small_init(key, (input_size, dim), input_size).astype(dtype),
            "b_in": jnp.zeros((dim,), dtype), "norm": jnp.zeros((dim,), dtype)}


def run_block_stack(params: Any, xs: Any, seq_lengths: Any,
                    run_block: Callable[[int, Any, Array], Array]) -> Array:
    """A block stack: x = xs @ W_in + b_in; x = run_block(index, block, x) for each block in
    order; the final LayerNorm; exactly zero at padded steps.

    Args:
        params: a stack's params with fields w_in (I, D), b_in (D,), blocks, norm (D,).
        xs: (batch..., T, I).
        seq_lengths: integer array of the batch shape, or None.
        run_block: one block of the stack's family on x (batch..., T, D).
    """
    xs = check_block_xs(xs, params.w_in.shape[0])
    valid = valid_steps(xs, seq_lengths)
    x = xs @ params.w_in
    x = x + per_feature(params.b_in, x)
    for index, block in enumerate(params.blocks):
        x = run_block(index, block, x)
    return zero_padding(residual_layer_norm(x, params.norm), valid)
