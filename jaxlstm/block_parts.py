"""Pieces shared by the residual blocks of the cell families (the block kinds of
`jaxlstm.blocks`): the pre-norm residual sub-layer every block is built from (`residual`),
the papers' feed-forwards, the causal convolution, the initialisers of the reference
implementations, the variable-length helpers, and the stack around the blocks, over a whole
sequence (`run_block_stack`) and one step at a time (`step_block_stack`).

Every block is causal and zero at padded steps; `valid_steps` and `zero_padding` are how each
one keeps that promise for right-padded batches with `seq_lengths`.

Decoding. A block carries across time its cell's state and its convolution's last K - 1
inputs (`conv_state`); a block run over a sequence can return both, and a block's step takes
and returns them, so a prompt read in the fast form continues one step at a time:

    outputs[:, :P], state = stack(params, xs[:, :P], return_state=True)
    y_t, state = stack_step(params, xs[:, t], state)           # t = P, P + 1, ...

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


def residual(x: Array, weight: Array, sublayer: Callable[[Array], Any]) -> Any:
    """One pre-norm residual sub-layer, what every block is built from:

        x <- x + sublayer(LN(x))

    with the reference's LayerNorm (`residual_layer_norm`: scale 1 + weight, no bias). A
    sublayer that returns `(y, state)` (a cell's final state) gives `(x + y, state)`."""
    out = sublayer(residual_layer_norm(x, weight))
    if isinstance(out, tuple):
        y, state = out
        return x + y, state
    return x + out


def gelu_feed_forward(a: Array, w_1: Array, b_1: Array, w_2: Array, b_2: Array) -> Array:
    """The minRNN blocks' feed-forward: GELU(a W_1 + b_1) W_2 + b_2 (exact GELU); a (..., D),
    W_1 (D, P), W_2 (P, D)."""
    hidden = a @ w_1
    hidden = jax.nn.gelu(hidden + per_feature(b_1, hidden), approximate=False)
    out = hidden @ w_2
    return out + per_feature(b_2, out)


def gated_gelu_feed_forward(a: Array, w_up: Array, w_down: Array) -> Array:
    """The sLSTM block's gated feed-forward: (GELU(g) * u) W_down with g, u = split(a W_up)
    (exact GELU); a (..., D), W_up (D, 2P): the gate half, then the linear half; W_down
    (P, D)."""
    inner = w_down.shape[0]
    up = a @ w_up
    return (jax.nn.gelu(up[..., :inner], approximate=False) * up[..., inner:]) @ w_down


def causal_conv1d(xs: Array, kernel: Array, bias: Array, state: Array | None = None) -> Array:
    """Depthwise causal convolution over time (the xLSTM reference's `CausalConv1d`).

        y_t = sum_{j=0}^{K-1} kernel[j] * x_{t-K+1+j} + bias

    where x_s for s < 0 is zero, or, given `state`, the inputs before the sequence:
    x_{-K+1..-1} = state (what `conv_state` returns after an earlier part of the sequence).

    Args:
        xs: (..., T, F).
        kernel: (K, F), K >= 1; kernel[K-1] weighs the current step.
        bias: (F,).
        state: (..., K-1, F), or None for zeros.

    Returns:
        (..., T, F). y_t depends on x_{t-K+1..t} only.
    """
    size = kernel.shape[0]
    steps = xs.shape[-2]
    padded = _with_history(xs, size - 1, state)
    out = per_feature(bias, xs)
    for j in range(size):
        out = out + padded[..., j:j + steps, :] * per_feature(kernel[j], xs)
    return out


def _with_history(xs: Array, keep: int, state: Array | None) -> Array:
    """(..., keep + T, F): the `keep` inputs before xs (zeros, or `state`), then xs."""
    if state is None:
        widths = [(0, 0)] * xs.ndim
        widths[-2] = (keep, 0)
        return jnp.pad(xs, widths)
    return jnp.concatenate([state.astype(xs.dtype), xs], axis=-2)


def conv_state(xs: Array, size: int, lengths: Array | None = None,
               state: Array | None = None) -> Array:
    """What a causal convolution of kernel size K carries to the next step: its last K - 1
    inputs.

    Args:
        xs: the convolution's input, (batch..., T, F).
        size: K (0, a convolution turned off, carries nothing, as K = 1).
        lengths: valid steps per sequence, an integer array of the batch shape (checked by
            the caller, e.g. with `sequence_lengths`); None: all T.
        state: the inputs before xs, (batch..., K-1, F), as `causal_conv1d` takes it; None for
            zeros.

    Returns:
        (batch..., max(K-1, 0), F): x_{L-K+1..L-1} for each sequence's length L, with the
        steps before xs taken from `state` (zeros without it). Lengths outside [0, T] act as
        clamped.
    """
    keep = max(size - 1, 0)
    padded = _with_history(xs, keep, state)
    steps = xs.shape[-2]
    if lengths is None:
        return padded[..., steps:, :]
    lengths = jnp.clip(lengths, 0, steps)
    # x_{L-K+1+j} sits at L + j in `padded` (the history shifts it by K - 1).
    index = lengths[..., None] + jnp.arange(keep).reshape((1,) * lengths.ndim + (keep,))
    index = jnp.broadcast_to(index[..., None], index.shape + padded.shape[-1:])
    return jnp.take_along_axis(padded, index, axis=-2)


def causal_conv1d_step(x_t: Array, kernel: Array, bias: Array,
                       state: Array) -> tuple[Array, Array]:
    """One step of `causal_conv1d`: x_t (..., F) and the last K - 1 inputs (..., K-1, F) ->
    (y_t (..., F), the new last K - 1 inputs)."""
    xs = x_t[..., None, :]
    return (causal_conv1d(xs, kernel, bias, state)[..., 0, :],
            conv_state(xs, kernel.shape[0], state=state))


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


def sequence_lengths(xs: Array, seq_lengths: Any) -> Array | None:
    """`seq_lengths` checked against `xs` (batch..., T, F), or None without it."""
    if seq_lengths is None:
        return None
    return check_seq_lengths(seq_lengths, xs.shape[:-2], xs.shape[-2])


def valid_steps(xs: Array, seq_lengths: Any) -> Array | None:
    """(batch..., T) bool mask of valid steps of `xs` (batch..., T, F), or None without
    `seq_lengths`."""
    lengths = sequence_lengths(xs, seq_lengths)
    if lengths is None:
        return None
    steps = xs.shape[-2]
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


def check_block_step_input(x_t: Any, dim: int, name: str = "x_t") -> Array:
    """`x_t` as a floating array of shape (batch..., dim), or a ValueError naming `name`."""
    x_t = check_floating(x_t, name)
    if x_t.ndim < 1 or x_t.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (batch..., {dim}) (one time step), got "
                         f"{tuple(x_t.shape)}.")
    return x_t


def check_state_like(state: Any, expected: Any, name: str, where: str = "") -> None:
    """Refuses a state whose structure or shapes differ from `expected` (a state, or its
    `jax.eval_shape`): a TypeError for another NamedTuple (or none), a ValueError for another
    shape, each naming the field, e.g. "state[1].cell.C" (`where`, e.g. "batch shape (2,) of
    x_t", is added to shape errors)."""
    if isinstance(expected, tuple) and hasattr(expected, "_fields"):
        if type(state) is not type(expected):
            fields = ", ".join(expected._fields)
            raise TypeError(f"{name} must be {type(expected).__name__}({fields}), got "
                            f"{type(state).__name__}.")
        for field in expected._fields:
            check_state_like(getattr(state, field), getattr(expected, field),
                             f"{name}.{field}", where)
        return
    value = check_floating(state, name)
    if tuple(value.shape) != tuple(expected.shape):
        raise ValueError(f"{name} must have shape {tuple(expected.shape)}"
                         f"{f' ({where})' if where else ''}, got {tuple(value.shape)}.")


def check_block_state(state: Any, initial: Callable[[], Any], name: str, where: str) -> None:
    """`check_state_like` against the zero state `initial()` builds (traced, not run)."""
    check_state_like(state, jax.eval_shape(initial), name, where)


def batch_of(xs: Array, name: str, step: bool = False) -> str:
    """Where a state's batch shape comes from, for its shape errors: "batch shape (2,) of xs"."""
    batch = xs.shape[:-1] if step else xs.shape[:-2]
    return f"batch shape {tuple(batch)} of {name}"


def check_stack_state(params: Any, state: Any, batch_shape: tuple[int, ...], dtype: Any,
                      initial_block_state: Callable[[int, Any, tuple[int, ...], Any], Any],
                      name: str, where: str) -> None:
    """Refuses a stack state that is not one block state per block, shaped as
    `initial_block_state(index, block, batch_shape, dtype)`; errors name `name[index]...`
    (and add `where` to shape errors)."""
    blocks = len(params.blocks)
    if not isinstance(state, (tuple, list)) or len(state) != blocks:
        got = (f"{len(state)} entries" if isinstance(state, (tuple, list))
               else type(state).__name__)
        raise ValueError(f"{name} must be a tuple of {blocks} block states (one per block of "
                         f"params.blocks, as the stack's return_state=True returns it), got "
                         f"{got}.")
    for index, (block, block_state) in enumerate(zip(params.blocks, state)):
        check_block_state(
            block_state, lambda i=index, b=block: initial_block_state(i, b, batch_shape, dtype),
            f"{name}[{index}]", where)


def check_stack_params(params: Any, kind: type) -> None:
    """Refuses params that are not a `kind` stack, pointing stacks of cells to their decoder."""
    if not isinstance(params, kind):
        raise TypeError(f"params must be {kind.__name__}, got {type(params).__name__} (a stack "
                        f"of cells, as init_lstm_stack returns, steps with "
                        f"jaxlstm.decode.stack_step).")


def run_block_stack(params: Any, xs: Any, seq_lengths: Any,
                    run_block: Callable[..., Any], *, initial_state: Any = None,
                    return_state: bool = False,
                    initial_block_state: Callable[..., Any] | None = None) -> Any:
    """A block stack: x = xs @ W_in + b_in; each block in order (`run_block`); the final
    LayerNorm; exactly zero at padded steps.

    Args:
        params: a stack's params with fields w_in (I, D), b_in (D,), blocks, norm (D,).
        xs: (batch..., T, I).
        seq_lengths: integer array of the batch shape, or None.
        run_block: one block of the stack's family on x (batch..., T, D):
            `run_block(index, block, x, block_state, return_state)` -> x, or
            `(x, the block's final state)` with `return_state`; block_state (where the block
            starts from) is None for zeros.
        initial_state: one state per block, or None for zeros.
        return_state: also return the tuple of the blocks' final states.
        initial_block_state: (index, block, batch_shape, dtype) -> a block's zero state, what
            `initial_state` is checked against (needed with it).

    Returns:
        (batch..., T, D), or `(outputs, states)` with `return_state`.
    """
    xs = check_block_xs(xs, params.w_in.shape[0])
    valid = valid_steps(xs, seq_lengths)
    x = xs @ params.w_in
    x = x + per_feature(params.b_in, x)
    if initial_state is not None:
        check_stack_state(params, initial_state, xs.shape[:-2], x.dtype, initial_block_state,
                          "initial_state", batch_of(xs, "xs"))
    states = []
    for index, block in enumerate(params.blocks):
        block_state = None if initial_state is None else initial_state[index]
        result = run_block(index, block, x, block_state, return_state)
        if return_state:
            x, block_state = result
            states.append(block_state)
        else:
            x = result
    out = zero_padding(residual_layer_norm(x, params.norm), valid)
    return (out, tuple(states)) if return_state else out


def step_block_stack(params: Any, x_t: Any, state: Any,
                     step_block: Callable[[int, Any, Array, Any], tuple[Array, Any]],
                     initial_block_state: Callable[..., Any]) -> tuple[Array, tuple]:
    """One time step of a block stack (`run_block_stack` at one step): x = x_t @ W_in + b_in;
    x, block_state = step_block(index, block, x, block_state) for each block; the final
    LayerNorm.

    Args:
        params: a stack's params (w_in, b_in, blocks, norm).
        x_t: (batch..., I).
        state: one state per block, as `run_block_stack(..., return_state=True)` returns it.
        step_block: one block's step on x (batch..., D) and its state.
        initial_block_state: (index, block, batch_shape, dtype) -> a block's zero state: the
            shapes `state` is checked against.

    Returns:
        (y_t (batch..., D), the new state).
    """
    x_t = check_block_step_input(x_t, params.w_in.shape[0])
    x = x_t @ params.w_in
    x = x + per_feature(params.b_in, x)
    check_stack_state(params, state, x_t.shape[:-1], x.dtype, initial_block_state, "state",
                      batch_of(x_t, "x_t", step=True))
    new_state = []
    for index, (block, block_state) in enumerate(zip(params.blocks, state)):
        x, block_state = step_block(index, block, x, block_state)
        new_state.append(block_state)
    return residual_layer_norm(x, params.norm), tuple(new_state)
