"""xLSTM blocks as the paper stacks them (Beck et al. 2024): pure functions over
named pytrees, following NX-AI/xlstm's `mLSTMLayer`, `sLSTMLayer`, `xLSTMBlock` and
`xLSTMBlockStack` (structure, default sizes and initialisation).

Every block is a pre-LayerNorm residual block, x <- x + layer(LN(x)), with the reference's
LayerNorm: no bias and a "residual" weight, LN(x) = (1 + w) * normalise(x), w initialised to 0.

mLSTM block (up-projection backbone, `mlstm_block`), with D = dim, E = inner size:

    u, z    = split(LN(x) @ W_up)                      (E each; E = round_up(2 D, 64))
    c       = SiLU(causal_conv1d(u))                   (depthwise, kernel 4, with bias)
    q, k    = headwise(c, W_q), headwise(c, W_k)       (block-diagonal, blocks of 4 features)
    v       = headwise(u, W_v)
    i~, f~  = concat(q, k, v) @ W_i + b_i, ... @ W_f + b_f      (one scalar per mLSTM head)
    h~      = mLSTM(q, k, v, i~, f~)                   (`mlstm_qkv`, heads of E / heads)
    h       = (GroupNorm(h~) + s * c) * SiLU(z)        (per-head LayerNorm; learnable skip s)
    x      <- x + h @ W_down

sLSTM block (post-up-projection backbone, `slstm_block`), hidden size D, 4 heads:

    a       = LN(x);  c = SiLU(causal_conv1d(a))       (kernel 4; 0 turns the conv off)
    i~, f~  = headwise(c, W_i), headwise(c, W_f)       (block-diagonal per sLSTM head)
    z~, o~  = headwise(a, W_z), headwise(a, W_o)
    y       = sLSTM(i~, f~, z~, o~)                    (`slstm`, recurrent R per head, bias b)
    x      <- x + GroupNorm(y)
    g, u    = split(LN2(x) @ W_up)                     (P each; P = round_up(1.3 D, 64))
    x      <- x + (GELU(g) * u) @ W_down               (gated feed-forward)

Stack (`xlstm_stack`): x = xs @ W_in + b_in, the blocks in order, then a final LayerNorm.

The reference rounds the inner sizes up to a multiple of 64 (`UpProjConfigMixin`); so do we
by default (`round_to=64`), so a block with dim 64 has E = 128 and P = 128. Pass
`round_to=1` for the unrounded sizes.

Variable length: `seq_lengths` (batch shape) marks the valid steps of right-padded batches.
Every part is causal (the conv pads on the left; the cells run forward), so padding never
reaches a valid step; outputs past a sequence's end are exactly zero, in each block and in
the stack. Each sequence's outputs equal running it alone.

Decoding: every block and the stack can return the state they end in (`return_state=True`)
and start from one (`initial_state`), and step one time step at a time from it
(`mlstm_block_step`, `slstm_block_step`, `xlstm_stack_step`), so a prompt read in the fast
form (the mLSTM chunkwise, the sLSTM's chunked loop) continues step by step with the outputs
of one call over the whole sequence:

    outputs[:, :P], state = xlstm_stack(params, xs[:, :P], return_state=True)
    y_t, state = xlstm_stack_step(params, xs[:, t], state)     # t = P, P + 1, ...

A block's state is its cell's and its convolution's last K - 1 inputs (`MLSTMBlockState`,
`SLSTMBlockState`); the stack's, a tuple of them, one per block (`initial_xlstm_stack_state`
for the empty one). With `seq_lengths`, each sequence's state is the state after its own last
valid step. The sLSTM block steps its cell with the family's `step`; the mLSTM block, which
feeds its cell queries, keys and values of its own (`mlstm_qkv`), steps it with `mlstm_step`,
the step that `mlstm_qkv`'s recurrent form scans and the family's `step` calls.

`mlstm_block_params_from_torch` converts a reference `mLSTMLayer`'s state_dict (as NumPy
arrays) into `MLSTMBlockParams`, so the block's residual branch reproduces the layer. The
sLSTM block reproduces the reference `sLSTMBlock` too (tests build its params with
`jaxlstm.interop.xlstm.from_xlstm` for the cell's r and b); there is no one-call converter.

Core module: jax, numpy and chex only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm import family as families
from jaxlstm.block_parts import (
    batch_of,
    causal_conv1d,
    causal_conv1d_step,
    check_block_state,
    check_block_step_input,
    check_block_xs,
    check_stack_params,
    conv_state,
    gated_gelu_feed_forward,
    init_causal_conv,
    per_feature,
    residual,
    residual_layer_norm,
    round_up_size,
    sequence_lengths,
    small_init,
    valid_steps,
    wang_init,
    zero_padding,
)
from jaxlstm.blocks import (
    BlockKind,
    block_stack,
    block_stack_step,
    init_block_stack,
    initial_block_stack_state,
    stack_kinds,
)
from jaxlstm.gates import layer_norm
from jaxlstm.validation import check_positive_int
from jaxlstm.xlstm import mlstm_gates
from jaxlstm.xlstm.mlstm import (
    MODES,
    MLSTMState,
    mlstm_qkv,
    mlstm_step,
    zero_mlstm_state,
)
from jaxlstm.xlstm.slstm import SLSTMParams, SLSTMState, init_slstm, slstm

Array = jax.Array

class MLSTMBlockParams(NamedTuple):
    """One mLSTM block (D = dim, E = inner size, K = conv kernel, heads mLSTM heads,
    P = E / qkv block size headwise projection blocks of size S).

    Attributes:
        norm: pre-LayerNorm weight (residual: scale 1 + norm), (D,).
        w_up: up-projection to the mLSTM branch and the gate branch z, (D, 2E).
        conv_w: depthwise causal conv kernel, (K, E); conv_w[K-1] weighs the current step.
        conv_b: conv bias, (E,).
        w_q, w_k, w_v: headwise projections, (P, S, S): block p maps features
            [p S, (p+1) S) of its input to the same features of its output.
        w_i, b_i: input gate, (3E, heads) and (heads,), from concat(q, k, v).
        w_f, b_f: forget gate, (3E, heads) and (heads,).
        outnorm: per-head LayerNorm weight (residual), (E,).
        skip: learnable skip scale, (E,).
        w_down: down-projection, (E, D).
    """

    norm: Array
    w_up: Array
    conv_w: Array
    conv_b: Array
    w_q: Array
    w_k: Array
    w_v: Array
    w_i: Array
    b_i: Array
    w_f: Array
    b_f: Array
    outnorm: Array
    skip: Array
    w_down: Array


class SLSTMBlockParams(NamedTuple):
    """One sLSTM block (D = dim = hidden size, K = conv kernel (0: no conv), heads sLSTM heads
    of d = D / heads, P = feed-forward size).

    Attributes:
        norm: pre-LayerNorm weight (residual), (D,).
        conv_w: depthwise causal conv kernel, (K, D); (0, D) for no conv.
        conv_b: conv bias, (D,) (unused without conv).
        w_i, w_f, w_z, w_o: headwise input projections of the four gates, (heads, d, d).
        r: recurrent kernel per head, (heads, d, 4, d) (`SLSTMParams.r`).
        b: gate bias, (4D,), gate order i, f, z, o (`SLSTMParams.b`).
        group_norm: per-head LayerNorm weight (residual), (D,).
        ffn_norm: the feed-forward's pre-LayerNorm weight (residual), (D,).
        ffn_up: (D, 2P): the GELU-gate half, then the linear half.
        ffn_down: (P, D).
    """

    norm: Array
    conv_w: Array
    conv_b: Array
    w_i: Array
    w_f: Array
    w_z: Array
    w_o: Array
    r: Array
    b: Array
    group_norm: Array
    ffn_norm: Array
    ffn_up: Array
    ffn_down: Array


class XLSTMStackParams(NamedTuple):
    """A stack: input projection, blocks, final LayerNorm.

    Attributes:
        w_in: input projection, (input_size, dim).
        b_in: its bias, (dim,).
        blocks: tuple of `MLSTMBlockParams` / `SLSTMBlockParams`, in order.
        norm: final LayerNorm weight (residual), (dim,).
    """

    w_in: Array
    b_in: Array
    blocks: tuple
    norm: Array


class MLSTMBlockState(NamedTuple):
    """What an mLSTM block carries from one time step to the next (E = inner size, K = conv
    kernel, heads of d = E / heads).

    Attributes:
        conv: the causal conv's last K - 1 inputs u (zeros before the sequence),
            (batch..., K-1, E), in the computation dtype.
        cell: the mLSTM memory, `MLSTMState` with C (batch..., heads, d, d), n (batch...,
            heads, d), m (batch..., heads), in at least float32.
    """

    conv: Array
    cell: MLSTMState


class SLSTMBlockState(NamedTuple):
    """What an sLSTM block carries from one time step to the next (D = dim, K = conv kernel).

    Attributes:
        conv: the causal conv's last K - 1 inputs LN(x), (batch..., max(K-1, 0), D); empty
            without a conv (K = 0) or with K = 1.
        cell: the sLSTM's `SLSTMState` (h, c, n, m), each (batch..., D).
    """

    conv: Array
    cell: SLSTMState


XLSTMStackState = tuple[MLSTMBlockState | SLSTMBlockState, ...]
"""A stack's state: one `MLSTMBlockState` / `SLSTMBlockState` per block, in order."""


# --- shared pieces (the rest are in jaxlstm.block_parts) ----------------------------------------


def group_norm(h: Array, weight: Array) -> Array:
    """Per-head LayerNorm (the reference's `MultiHeadLayerNorm`).

    Args:
        h: (..., heads, d).
        weight: residual weight, (heads * d,).

    Returns:
        (..., heads * d): each head normalised over its d features, scaled by 1 + weight.
    """
    heads, d = h.shape[-2:]
    normed = layer_norm(h, jnp.ones((d,), h.dtype))
    flat = normed.reshape(h.shape[:-2] + (heads * d,))
    return flat * per_feature(1.0 + weight, flat)


def headwise(xs: Array, w: Array) -> Array:
    """Block-diagonal linear map (the reference's `LinearHeadwiseExpand`, expand factor 1).

    Args:
        xs: (..., P * S_in).
        w: (P, S_in, S_out): block p maps features [p S_in, (p+1) S_in) of xs.

    Returns:
        (..., P * S_out).
    """
    blocks, size_in, size_out = w.shape
    split = xs.reshape(xs.shape[:-1] + (blocks, size_in))
    out = jnp.einsum("...pi,pio->...po", split, w)
    return out.reshape(xs.shape[:-1] + (blocks * size_out,))


def headwise_dense(w: Array) -> Array:
    """The dense (P S_in, P S_out) matrix of `headwise`'s block-diagonal map; autodiff of the
    embedding returns only the blocks' gradient."""
    blocks, size_in, size_out = w.shape
    dense = jnp.einsum("pio,pq->piqo", w, jnp.eye(blocks, dtype=w.dtype))
    return dense.reshape(blocks * size_in, blocks * size_out)


# --- mLSTM block --------------------------------------------------------------------------------


def init_mlstm_block(
    key: Array,
    dim: int,
    *,
    num_heads: int = 4,
    proj_factor: float = 2.0,
    conv_kernel: int = 4,
    qkv_block_size: int = 4,
    round_to: int = 64,
    num_blocks: int = 1,
    dtype: Any = jnp.float32,
) -> MLSTMBlockParams:
    """Initialises an mLSTM block as the reference's `mLSTMLayer` (+ its block's LayerNorm).

    Inner size E = round_up(proj_factor * dim, round_to). Init: W_up, W_q, W_k, W_v small init
    with the outer dim; W_down Wang init (std 2 / (num_blocks sqrt(dim))); conv PyTorch's
    default; W_i = W_f = 0, b_i ~ N(0, 0.1^2), b_f linspace(3, 6) over heads; norms 0
    (scale 1); skip 1.

    Args:
        key: PRNG key.
        dim: D, the block's input and output features.
        num_heads: mLSTM heads; must divide E.
        proj_factor: E / D before rounding.
        conv_kernel: K >= 1.
        qkv_block_size: S, the headwise block size of q, k, v; must divide E.
        round_to: E is rounded up to a multiple of this (1: no rounding).
        num_blocks: blocks in the stack (for W_down's init).
        dtype: parameter dtype.

    Returns:
        `MLSTMBlockParams`.

    Example:
        >>> p = init_mlstm_block(jax.random.key(0), 16)
        >>> p.w_up.shape, p.w_q.shape
        ((16, 128), (16, 4, 4))
    """
    dim = check_positive_int(dim, "dim")
    num_heads = check_positive_int(num_heads, "num_heads")
    conv_kernel = check_positive_int(conv_kernel, "conv_kernel")
    qkv_block_size = check_positive_int(qkv_block_size, "qkv_block_size")
    inner = round_up_size(proj_factor * dim, check_positive_int(round_to, "round_to"))
    if inner % num_heads or inner % qkv_block_size:
        raise ValueError(f"num_heads ({num_heads}) and qkv_block_size ({qkv_block_size}) must "
                         f"divide the inner size {inner} (dim {dim} * proj_factor "
                         f"{proj_factor}, rounded up to a multiple of {round_to}).")
    keys = jax.random.split(key, 7)
    blocks = inner // qkv_block_size
    qkv_shape = (blocks, qkv_block_size, qkv_block_size)
    conv_w, conv_b = init_causal_conv(keys[5], conv_kernel, inner)
    params = MLSTMBlockParams(
        norm=jnp.zeros((dim,), jnp.float32),
        w_up=small_init(keys[0], (dim, 2 * inner), dim),
        conv_w=conv_w,
        conv_b=conv_b,
        w_q=small_init(keys[1], qkv_shape, dim),
        w_k=small_init(keys[2], qkv_shape, dim),
        w_v=small_init(keys[3], qkv_shape, dim),
        w_i=jnp.zeros((3 * inner, num_heads), jnp.float32),
        b_i=0.1 * jax.random.normal(keys[4], (num_heads,), jnp.float32),
        w_f=jnp.zeros((3 * inner, num_heads), jnp.float32),
        b_f=jnp.linspace(3.0, 6.0, num_heads, dtype=jnp.float32),
        outnorm=jnp.zeros((inner,), jnp.float32),
        skip=jnp.ones((inner,), jnp.float32),
        w_down=wang_init(keys[6], (inner, dim), dim, num_blocks),
    )
    return jax.tree.map(lambda a: a.astype(dtype), params)


def mlstm_layer(
    params: MLSTMBlockParams,
    xs: Array,
    *,
    seq_lengths: Array | None = None,
    mode: str | None = None,
    chunk_size: int | None = None,
    initial_state: MLSTMBlockState | None = None,
    return_state: bool = False,
) -> Array | tuple[Array, MLSTMBlockState]:
    """The mLSTM block's residual branch without its LayerNorm (the reference's `mLSTMLayer`):
    from u, z = split(xs @ W_up) to h @ W_down (see the module docstring).

    Args:
        params: `MLSTMBlockParams` (`norm` is not used here).
        xs: (batch..., T, D).
        seq_lengths, mode, chunk_size, initial_state, return_state: as in `mlstm_block`.

    Returns:
        (batch..., T, D); zero at padded steps. With `return_state`, `(outputs, state)`.
    """
    dim = params.w_up.shape[0]
    xs = check_block_xs(xs, dim)
    if initial_state is not None:
        check_block_state(initial_state,
                          lambda: initial_mlstm_block_state(params, xs.shape[:-2], xs.dtype),
                          "initial_state", batch_of(xs, "xs"))
    valid = valid_steps(xs, seq_lengths)
    conv_before = None if initial_state is None else initial_state.conv
    u, z = _mlstm_branches(params, xs)
    conv = zero_padding(jax.nn.silu(causal_conv1d(u, params.conv_w, params.conv_b,
                                                  conv_before)), valid)
    h_tilde, cell = mlstm_qkv(*_mlstm_cell_inputs(params, u, conv), mode=mode,
                              chunk_size=chunk_size, seq_lengths=seq_lengths,
                              initial_state=None if initial_state is None else initial_state.cell)
    out = zero_padding(_mlstm_output(params, h_tilde, conv, z), valid)
    if not return_state:
        return out
    lengths = sequence_lengths(xs, seq_lengths)
    return out, MLSTMBlockState(conv_state(u, params.conv_w.shape[0], lengths, conv_before), cell)


def _mlstm_branches(params: MLSTMBlockParams, x: Array) -> tuple[Array, Array]:
    """u, z = split(x @ W_up): the cell's branch and the output gate's."""
    inner = params.w_down.shape[0]
    up = x @ params.w_up
    return up[..., :inner], up[..., inner:]


def _mlstm_cell_inputs(params: MLSTMBlockParams, u: Array,
                       conv: Array) -> tuple[Array, Array, Array, Array, Array]:
    """q, k, v (..., heads, d) and the gate pre-activations i~, f~ (..., heads) from the
    conv's output and u (..., E), at any number of steps."""
    heads = params.b_i.shape[0]
    q, k = headwise(conv, params.w_q), headwise(conv, params.w_k)
    v = headwise(u, params.w_v)
    qkv = jnp.concatenate([q, k, v], axis=-1)
    i_pre = qkv @ params.w_i + per_feature(params.b_i, qkv[..., :heads])
    f_pre = qkv @ params.w_f + per_feature(params.b_f, qkv[..., :heads])

    def split_heads(a):
        return a.reshape(a.shape[:-1] + (heads, a.shape[-1] // heads))

    return split_heads(q), split_heads(k), split_heads(v), i_pre, f_pre


def _mlstm_output(params: MLSTMBlockParams, h_tilde: Array, conv: Array, z: Array) -> Array:
    """(GroupNorm(h~) + skip * conv) * SiLU(z) @ W_down, at any number of steps."""
    h = (group_norm(h_tilde, params.outnorm) + per_feature(params.skip, conv) * conv)
    h = h * jax.nn.silu(z)
    return h @ params.w_down


def _mlstm_qkv_step(state: MLSTMState, q: Array, k: Array, v: Array, i_pre: Array,
                    f_pre: Array) -> tuple[Array, MLSTMState]:
    """One step of `mlstm_qkv` (its recurrent form at one step, with its dtypes): q, k, v
    (..., heads, d), i~, f~ (..., heads) -> (h~ (..., heads, d), the new state)."""
    dtype = jnp.result_type(q, k, v, i_pre, f_pre)
    work = jnp.promote_types(dtype, jnp.float32)
    q, k, v, i_pre, f_pre = (a.astype(work) for a in (q, k, v, i_pre, f_pre))
    state = MLSTMState(*(a.astype(work) for a in state))
    state, h = mlstm_step(state, q, mlstm_gates.scaled_key(k), v, i_pre,
                          mlstm_gates.log_forget_gate(f_pre))
    return h.astype(dtype), state


def mlstm_block(
    params: MLSTMBlockParams,
    xs: Array,
    *,
    seq_lengths: Array | None = None,
    mode: str | None = None,
    chunk_size: int | None = None,
    initial_state: MLSTMBlockState | None = None,
    return_state: bool = False,
) -> Array | tuple[Array, MLSTMBlockState]:
    """An mLSTM block: xs + mlstm_layer(LN(xs)) (equations in the module docstring).

    Args:
        params: `MLSTMBlockParams` (`init_mlstm_block`).
        xs: (batch..., T, D).
        seq_lengths: integer array of the batch shape, valid steps per sequence.
        mode: the mLSTM form, one of "chunkwise", "parallel", "recurrent" (same function);
            None: the fastest on the backend (`jaxlstm.family.form`).
        chunk_size: steps per chunk in "chunkwise" mode; None: chosen from T (`mlstm`).
        initial_state: `MLSTMBlockState` to start from (a state this function or
            `mlstm_block_step` returned); None: the empty one (`initial_mlstm_block_state`).
        return_state: also return the state after each sequence's last valid step.

    Returns:
        (batch..., T, D); exactly zero at padded steps. With `return_state`,
        `(outputs, MLSTMBlockState)`.

    Example:
        >>> p = init_mlstm_block(jax.random.key(0), 16)
        >>> mlstm_block(p, jnp.ones((2, 10, 16))).shape
        (2, 10, 16)
    """
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}.")
    xs = check_block_xs(xs, params.norm.shape[0])
    out = residual(xs, params.norm, lambda a: mlstm_layer(
        params, a, seq_lengths=seq_lengths, mode=mode, chunk_size=chunk_size,
        initial_state=initial_state, return_state=return_state))
    out, state = out if return_state else (out, None)
    out = zero_padding(out, valid_steps(xs, seq_lengths))
    return (out, state) if return_state else out


def initial_mlstm_block_state(params: MLSTMBlockParams, batch_shape: tuple[int, ...],
                              dtype: Any = jnp.float32) -> MLSTMBlockState:
    """The state an mLSTM block starts from: zero conv inputs and the empty memory, shaped
    and typed as `mlstm_block`'s final state for inputs of `dtype` (promoted with the
    params'; the memory at least float32)."""
    batch_shape = tuple(batch_shape)
    dtype = jnp.result_type(dtype, *jax.tree.leaves(params))
    heads, inner = params.b_i.shape[0], params.w_down.shape[0]
    conv = jnp.zeros(batch_shape + (params.conv_w.shape[0] - 1, inner), dtype)
    return MLSTMBlockState(conv, zero_mlstm_state(batch_shape, heads, inner // heads,
                                                  inner // heads,
                                                  jnp.promote_types(dtype, jnp.float32)))


def mlstm_block_step(params: MLSTMBlockParams, x_t: Array,
                     state: MLSTMBlockState) -> tuple[Array, MLSTMBlockState]:
    """One time step of an mLSTM block: `mlstm_block` at step t, given the state after
    step t - 1.

    Args:
        params: `MLSTMBlockParams`.
        x_t: (batch..., D).
        state: `MLSTMBlockState` with the batch shape of `x_t` (`mlstm_block(...,
            return_state=True)`'s, `initial_mlstm_block_state`, or this function's).

    Returns:
        (y_t (batch..., D), the state after this step).
    """
    x_t = check_block_step_input(x_t, params.norm.shape[0])
    check_block_state(state,
                      lambda: initial_mlstm_block_state(params, x_t.shape[:-1], x_t.dtype),
                      "state", batch_of(x_t, "x_t", step=True))
    u, z = _mlstm_branches(params, residual_layer_norm(x_t, params.norm))
    conv, conv_after = causal_conv1d_step(u, params.conv_w, params.conv_b, state.conv)
    conv = jax.nn.silu(conv)
    h_tilde, cell = _mlstm_qkv_step(state.cell, *_mlstm_cell_inputs(params, u, conv))
    return x_t + _mlstm_output(params, h_tilde, conv, z), MLSTMBlockState(conv_after, cell)


def mlstm_block_params_from_torch(state_dict: Mapping[str, Any],
                                  norm: Any | None = None) -> MLSTMBlockParams:
    """`MLSTMBlockParams` from a reference `mLSTMLayer`'s state_dict (NumPy arrays).

    Keys (no biases, the reference's default `bias=False`): proj_up.weight (2E, D),
    conv1d.conv.weight (E, 1, K), conv1d.conv.bias (E,), {q,k,v}_proj.weight (P, S, S) as
    (block, out, in), mlstm_cell.{igate,fgate}.weight (heads, 3E) and .bias (heads,),
    mlstm_cell.outnorm.weight (E,), learnable_skip (E,), proj_down.weight (D, E). Then
    `mlstm_layer(params, x)` equals `layer(x)`; `norm` is the block LayerNorm's weight (the
    reference's `xlstm_norm.weight`), zeros if None.
    """
    sd = {key: np.asarray(value, np.float32) for key, value in state_dict.items()}
    dim = sd["proj_up.weight"].shape[1]
    return MLSTMBlockParams(
        norm=jnp.asarray(np.zeros(dim, np.float32) if norm is None else norm, jnp.float32),
        w_up=jnp.asarray(sd["proj_up.weight"].T),
        conv_w=jnp.asarray(sd["conv1d.conv.weight"][:, 0, :].T),
        conv_b=jnp.asarray(sd["conv1d.conv.bias"]),
        w_q=jnp.asarray(sd["q_proj.weight"].transpose(0, 2, 1)),
        w_k=jnp.asarray(sd["k_proj.weight"].transpose(0, 2, 1)),
        w_v=jnp.asarray(sd["v_proj.weight"].transpose(0, 2, 1)),
        w_i=jnp.asarray(sd["mlstm_cell.igate.weight"].T),
        b_i=jnp.asarray(sd["mlstm_cell.igate.bias"]),
        w_f=jnp.asarray(sd["mlstm_cell.fgate.weight"].T),
        b_f=jnp.asarray(sd["mlstm_cell.fgate.bias"]),
        outnorm=jnp.asarray(sd["mlstm_cell.outnorm.weight"]),
        skip=jnp.asarray(sd["learnable_skip"]),
        w_down=jnp.asarray(sd["proj_down.weight"].T),
    )


# --- sLSTM block --------------------------------------------------------------------------------


def init_slstm_block(
    key: Array,
    dim: int,
    *,
    num_heads: int = 4,
    conv_kernel: int = 4,
    ffn_proj_factor: float = 1.3,
    round_to: int = 64,
    block_index: int = 0,
    num_blocks: int = 1,
    dtype: Any = jnp.float32,
) -> SLSTMBlockParams:
    """Initialises an sLSTM block as the reference's `sLSTMBlock` (layer + gated FFN).

    Feed-forward size P = round_up(ffn_proj_factor * dim, round_to). Init: gate projections
    small init with dim; R = 0 and b with the "powerlaw_blockdependent" forget bias
    (`init_slstm`, using `block_index` / `num_blocks`); conv PyTorch's default; FFN up small
    init, down Wang init; norms 0 (scale 1).

    Args:
        key: PRNG key.
        dim: D, the block's features and the sLSTM's hidden size.
        num_heads: sLSTM heads; must divide D.
        conv_kernel: K of the conv before the i and f gates; 0 for none.
        ffn_proj_factor: P / D before rounding.
        round_to: P is rounded up to a multiple of this (1: no rounding).
        block_index, num_blocks: the block's place in a stack.
        dtype: parameter dtype.

    Returns:
        `SLSTMBlockParams`.

    Example:
        >>> p = init_slstm_block(jax.random.key(0), 16)
        >>> p.w_i.shape, p.ffn_up.shape
        ((4, 4, 4), (16, 128))
    """
    dim = check_positive_int(dim, "dim")
    num_heads = check_positive_int(num_heads, "num_heads")
    if isinstance(conv_kernel, bool) or not isinstance(conv_kernel, int) or conv_kernel < 0:
        raise ValueError(f"conv_kernel must be an int >= 0, got {conv_kernel!r}.")
    if dim % num_heads:
        raise ValueError(f"num_heads ({num_heads}) must divide dim ({dim}).")
    ffn = round_up_size(ffn_proj_factor * dim, check_positive_int(round_to, "round_to"))
    head_dim = dim // num_heads
    keys = jax.random.split(key, 8)
    cell = init_slstm(keys[0], dim, dim, num_heads=num_heads, block_index=block_index,
                      num_blocks=num_blocks)
    conv_w, conv_b = init_causal_conv(keys[1], conv_kernel, dim)
    gate_shape = (num_heads, head_dim, head_dim)
    params = SLSTMBlockParams(
        norm=jnp.zeros((dim,), jnp.float32),
        conv_w=conv_w,
        conv_b=conv_b,
        w_i=small_init(keys[2], gate_shape, dim),
        w_f=small_init(keys[3], gate_shape, dim),
        w_z=small_init(keys[4], gate_shape, dim),
        w_o=small_init(keys[5], gate_shape, dim),
        r=cell.r,
        b=cell.b,
        group_norm=jnp.zeros((dim,), jnp.float32),
        ffn_norm=jnp.zeros((dim,), jnp.float32),
        ffn_up=small_init(keys[6], (dim, 2 * ffn), dim),
        ffn_down=wang_init(keys[7], (ffn, dim), dim, num_blocks),
    )
    return jax.tree.map(lambda a: a.astype(dtype), params)


def slstm_block(
    params: SLSTMBlockParams,
    xs: Array,
    *,
    seq_lengths: Array | None = None,
    initial_state: SLSTMBlockState | None = None,
    return_state: bool = False,
) -> Array | tuple[Array, SLSTMBlockState]:
    """An sLSTM block: xs + GroupNorm(sLSTM(LN(xs))), then xs + FFN(LN2(xs)) (module
    docstring).

    The four headwise gate projections run as one dense (2D, 4D) block-diagonal matmul on
    concat(conv, LN(xs)) inside `slstm`'s time loop (its chunked input projection); the
    gradient flows back to the blocks only. The price is 2 * heads times the headwise FLOPs
    in that projection (8 D^2 instead of 4 D^2 / heads per step), small next to the loop.

    Args:
        params: `SLSTMBlockParams` (`init_slstm_block`).
        xs: (batch..., T, D).
        seq_lengths: integer array of the batch shape, valid steps per sequence.
        initial_state: `SLSTMBlockState` to start from (a state this function or
            `slstm_block_step` returned); None: zeros (`initial_slstm_block_state`).
        return_state: also return the state after each sequence's last valid step.

    Returns:
        (batch..., T, D); exactly zero at padded steps. With `return_state`,
        `(outputs, SLSTMBlockState)`.

    Example:
        >>> p = init_slstm_block(jax.random.key(0), 16)
        >>> slstm_block(p, jnp.ones((2, 10, 16))).shape
        (2, 10, 16)
    """
    dim = params.norm.shape[0]
    xs = check_block_xs(xs, dim)
    if initial_state is not None:
        check_block_state(initial_state,
                          lambda: initial_slstm_block_state(params, xs.shape[:-2], xs.dtype),
                          "initial_state", batch_of(xs, "xs"))
    valid = valid_steps(xs, seq_lengths)
    conv_before = None if initial_state is None else initial_state.conv
    a = residual_layer_norm(xs, params.norm)
    conv = a
    if params.conv_w.shape[0]:
        conv = zero_padding(jax.nn.silu(causal_conv1d(a, params.conv_w, params.conv_b,
                                                      conv_before)), valid)
    y, cell = slstm(_slstm_cell_params(params), jnp.concatenate([conv, a], axis=-1),
                    seq_lengths=seq_lengths,
                    initial_state=None if initial_state is None else initial_state.cell)
    out = zero_padding(_slstm_after_cell(params, xs, y), valid)
    if not return_state:
        return out
    lengths = sequence_lengths(xs, seq_lengths)
    return out, SLSTMBlockState(conv_state(a, params.conv_w.shape[0], lengths, conv_before),
                                cell)


def _slstm_cell_params(params: SLSTMBlockParams) -> SLSTMParams:
    """The block's sLSTM as an sLSTM cell on concat(conv, LN(x)) (2D features): the headwise
    gate maps embedded in one dense block-diagonal w_x (see `slstm_block`)."""
    dim = params.norm.shape[0]
    zeros = jnp.zeros((dim, dim), params.w_i.dtype)
    from_conv = jnp.concatenate([headwise_dense(params.w_i), headwise_dense(params.w_f),
                                 zeros, zeros], axis=1)
    from_norm = jnp.concatenate([zeros, zeros, headwise_dense(params.w_z),
                                 headwise_dense(params.w_o)], axis=1)
    return SLSTMParams(w_x=jnp.concatenate([from_conv, from_norm], axis=0), r=params.r,
                       b=params.b)


def _slstm_after_cell(params: SLSTMBlockParams, x: Array, y: Array) -> Array:
    """x + GroupNorm(y), then + the gated feed-forward, at any number of steps."""
    dim, heads = params.norm.shape[0], params.r.shape[0]
    x = x + group_norm(y.reshape(y.shape[:-1] + (heads, dim // heads)), params.group_norm)
    return residual(x, params.ffn_norm,
                    lambda a: gated_gelu_feed_forward(a, params.ffn_up, params.ffn_down))


def initial_slstm_block_state(params: SLSTMBlockParams, batch_shape: tuple[int, ...],
                              dtype: Any = jnp.float32) -> SLSTMBlockState:
    """The state an sLSTM block starts from: zero conv inputs and the sLSTM family's
    `initial_state`, shaped and typed as `slstm_block`'s final state for inputs of `dtype`
    (promoted with the params')."""
    batch_shape = tuple(batch_shape)
    dtype = jnp.result_type(dtype, *jax.tree.leaves(params))
    dim = params.norm.shape[0]
    conv = jnp.zeros(batch_shape + (max(params.conv_w.shape[0] - 1, 0), dim), dtype)
    cell = jax.eval_shape(_slstm_cell_params, params)  # only its sizes and dtype are read
    return SLSTMBlockState(conv, families.get("slstm").initial_state(cell, batch_shape, dtype))


def slstm_block_step(params: SLSTMBlockParams, x_t: Array,
                     state: SLSTMBlockState) -> tuple[Array, SLSTMBlockState]:
    """One time step of an sLSTM block: `slstm_block` at step t, given the state after
    step t - 1; the cell steps with the sLSTM family's `step`.

    Args:
        params: `SLSTMBlockParams`.
        x_t: (batch..., D).
        state: `SLSTMBlockState` with the batch shape of `x_t` (`slstm_block(...,
            return_state=True)`'s, `initial_slstm_block_state`, or this function's).

    Returns:
        (y_t (batch..., D), the state after this step).
    """
    x_t = check_block_step_input(x_t, params.norm.shape[0])
    check_block_state(state,
                      lambda: initial_slstm_block_state(params, x_t.shape[:-1], x_t.dtype),
                      "state", batch_of(x_t, "x_t", step=True))
    a = residual_layer_norm(x_t, params.norm)
    conv, conv_after = a, state.conv
    if params.conv_w.shape[0]:
        conv, conv_after = causal_conv1d_step(a, params.conv_w, params.conv_b, state.conv)
        conv = jax.nn.silu(conv)
    cell = _slstm_cell_params(params)
    y, cell_state = families.of(cell).step(cell, jnp.concatenate([conv, a], axis=-1),
                                           state.cell)
    return _slstm_after_cell(params, x_t, y), SLSTMBlockState(conv_after, cell_state)


# --- the stack ----------------------------------------------------------------------------------


def init_xlstm_stack(
    key: Array,
    input_size: int,
    dim: int,
    blocks: Sequence[str] = "msm",
    *,
    num_heads: int = 4,
    conv_kernel: int = 4,
    mlstm_proj_factor: float = 2.0,
    qkv_block_size: int = 4,
    ffn_proj_factor: float = 1.3,
    round_to: int = 64,
    dtype: Any = jnp.float32,
) -> XLSTMStackParams:
    """Initialises a stack of mLSTM ("m") and sLSTM ("s") blocks (the reference's
    `xLSTMBlockStack`, with an input projection in front).

    Args:
        key: PRNG key.
        input_size: features of the stack's input.
        dim: D, the residual stream's features.
        blocks: a sequence of "m" / "s", e.g. "msm" or ["m", "s"].
        num_heads: heads of every block's cell.
        conv_kernel, mlstm_proj_factor, qkv_block_size, ffn_proj_factor, round_to: as in
            `init_mlstm_block` / `init_slstm_block`.
        dtype: parameter dtype.

    Returns:
        `XLSTMStackParams`; W_in small init, b_in = 0, final norm 0 (scale 1).

    Example:
        >>> p = init_xlstm_stack(jax.random.key(0), input_size=3, dim=16, blocks="ms")
        >>> xlstm_stack(p, jnp.ones((2, 10, 3))).shape
        (2, 10, 16)
    """
    kinds = list(blocks) if isinstance(blocks, (str, Sequence)) else []
    if not kinds or any(kind not in ("m", "s") for kind in kinds):
        raise ValueError(f"blocks must be a non-empty sequence of 'm' and 's', got {blocks!r}.")
    options = {"num_heads": num_heads, "conv_kernel": conv_kernel, "round_to": round_to}
    if "m" in kinds:
        options.update(proj_factor=mlstm_proj_factor, qkv_block_size=qkv_block_size)
    if "s" in kinds:
        options.update(ffn_proj_factor=ffn_proj_factor)
    return XLSTMStackParams(*init_block_stack(key, input_size, dim, kinds, dtype=dtype,
                                              **options))


def xlstm_stack(
    params: XLSTMStackParams,
    xs: Array,
    *,
    seq_lengths: Array | None = None,
    mode: str | None = None,
    chunk_size: int | None = None,
    initial_state: XLSTMStackState | None = None,
    return_state: bool = False,
) -> Array | tuple[Array, XLSTMStackState]:
    """Runs a stack: x = xs @ W_in + b_in; each block in order; the final LayerNorm.

    Args:
        params: `XLSTMStackParams` (`init_xlstm_stack`).
        xs: (batch..., T, input_size).
        seq_lengths: integer array of the batch shape, valid steps per sequence.
        mode, chunk_size: the mLSTM blocks' form (`mlstm_block`).
        initial_state: one block state per block to start from (this function's with
            `return_state`, `xlstm_stack_step`'s or `initial_xlstm_stack_state`); None: zeros.
        return_state: also return the blocks' states after each sequence's last valid step
            (the prefill of decoding: continue with `xlstm_stack_step`).

    Returns:
        (batch..., T, dim); exactly zero at padded steps. With `return_state`,
        `(outputs, state)`, state a tuple of `MLSTMBlockState` / `SLSTMBlockState`.

    Example:
        >>> outputs, state = xlstm_stack(params, prompt, return_state=True)   # fast form
        >>> y_t, state = xlstm_stack_step(params, x_t, state)                # then steps
    """

    chosen = _xlstm_kinds(params)
    forms = {"mode": mode, "chunk_size": chunk_size} if "m" in chosen else {}
    return block_stack(params, xs, seq_lengths=seq_lengths, initial_state=initial_state,
                       return_state=return_state, **forms)


def _xlstm_kinds(params: XLSTMStackParams) -> str:
    """The letters of the stack's blocks, refusing a block that is not an xLSTM one."""
    chosen = "".join(k.letter for k in stack_kinds(params))
    for index, letter in enumerate(chosen):
        if letter not in ("m", "s"):
            raise TypeError(f"params.blocks[{index}] must be MLSTMBlockParams or "
                            f"SLSTMBlockParams, got {type(params.blocks[index]).__name__}.")
    return chosen


def initial_xlstm_stack_state(params: XLSTMStackParams, batch_shape: tuple[int, ...],
                              dtype: Any = jnp.float32) -> XLSTMStackState:
    """The state `xlstm_stack` starts from when given none: each block's
    (`initial_mlstm_block_state`, `initial_slstm_block_state`), shaped and typed as the
    stack's final state for inputs (batch_shape..., T, input_size) of `dtype` (promoted with
    the params').

    Example:
        >>> state = initial_xlstm_stack_state(params, (2,))
        >>> y_0, state = xlstm_stack_step(params, x_0, state)         # x_0: (2, input_size)
    """
    check_stack_params(params, XLSTMStackParams)
    _xlstm_kinds(params)
    return initial_block_stack_state(params, batch_shape, dtype)


def xlstm_stack_step(params: XLSTMStackParams, x_t: Array,
                     state: XLSTMStackState) -> tuple[Array, XLSTMStackState]:
    """One time step of a stack: `xlstm_stack`'s output at step t, given its state after
    step t - 1 (`mlstm_block_step` / `slstm_block_step` per block).

    Args:
        params: `XLSTMStackParams`.
        x_t: (batch..., input_size).
        state: one block state per block, with the batch shape of `x_t`: `xlstm_stack(...,
            return_state=True)`'s, `initial_xlstm_stack_state`, or this function's.

    Returns:
        (y_t (batch..., dim), the state after this step).

    Example:
        >>> _, state = xlstm_stack(params, prompt, return_state=True)
        >>> y_t, state = jax.jit(xlstm_stack_step)(params, x_t, state)
    """
    check_stack_params(params, XLSTMStackParams)
    _xlstm_kinds(params)
    return block_stack_step(params, x_t, state)


# --- the block kinds (jaxlstm.blocks) -----------------------------------------------------------


def _init_mlstm_kind(key: Array, dim: int, *, block_index: int, num_blocks: int, dtype: Any,
                     **options: Any) -> MLSTMBlockParams:
    del block_index  # the mLSTM block's init does not depend on its place
    return init_mlstm_block(key, dim, num_blocks=num_blocks, dtype=dtype, **options)


def _init_slstm_kind(key: Array, dim: int, *, block_index: int, num_blocks: int, dtype: Any,
                     **options: Any) -> SLSTMBlockParams:
    return init_slstm_block(key, dim, block_index=block_index, num_blocks=num_blocks,
                            dtype=dtype, **options)


_BLOCK_EXTRA = 8.0
"""Vectors of D a block keeps beside its cell, roughly: its projections, norms and
feed-forward."""


def _mlstm_block_floats(dim: int, steps: int, mode: str | None = None, *,
                        proj_factor: float = 2.0, **options: Any) -> float:
    """The mLSTM at the block's inner width (its up-projection), and the block's extras."""
    inner = round(proj_factor * dim)
    return (families.get("mlstm").activation_floats(inner, steps, mode, **options)
            + _BLOCK_EXTRA * dim)


def _slstm_block_floats(dim: int, steps: int, mode: str | None = None, **options: Any) -> float:
    return families.get("slstm").activation_floats(dim, steps, mode) + _BLOCK_EXTRA * dim


MLSTM_BLOCK = BlockKind(
    letter="m", label="mLSTM", family="mlstm",
    owns=lambda params: isinstance(params, MLSTMBlockParams),
    init=_init_mlstm_kind, apply=mlstm_block, step=mlstm_block_step,
    initial_state=initial_mlstm_block_state,
    init_options=frozenset({"num_heads", "proj_factor", "conv_kernel", "qkv_block_size",
                            "round_to"}),
    apply_options=frozenset({"chunk_size"}), activation_floats=_mlstm_block_floats)
"""The mLSTM block behind `jaxlstm.blocks` (letter "m")."""

SLSTM_BLOCK = BlockKind(
    letter="s", label="sLSTM", family="slstm",
    owns=lambda params: isinstance(params, SLSTMBlockParams),
    init=_init_slstm_kind, apply=slstm_block, step=slstm_block_step,
    initial_state=initial_slstm_block_state,
    init_options=frozenset({"num_heads", "conv_kernel", "ffn_proj_factor", "round_to"}),
    activation_floats=_slstm_block_floats)
"""The sLSTM block behind `jaxlstm.blocks` (letter "s")."""

BLOCK_KINDS = {"m": MLSTM_BLOCK, "s": SLSTM_BLOCK}
"""This module's block kinds by letter, as `jaxlstm.blocks`' registry reads them."""
