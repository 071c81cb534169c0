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

from jaxlstm.block_parts import (
    causal_conv1d,
    check_block_xs,
    init_causal_conv,
    init_stack_ends,
    per_feature,
    residual_layer_norm,
    round_up_size,
    run_block_stack,
    small_init,
    valid_steps,
    wang_init,
    zero_padding,
)
from jaxlstm.gates import layer_norm
from jaxlstm.validation import check_positive_int
from jaxlstm.xlstm.mlstm import MODES, mlstm_qkv
from jaxlstm.xlstm.slstm import SLSTMParams, init_slstm, slstm

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
    mode: str = "chunkwise",
    chunk_size: int = 64,
) -> Array:
    """The mLSTM block's residual branch without its LayerNorm (the reference's `mLSTMLayer`):
    from u, z = split(xs @ W_up) to h @ W_down (see the module docstring).

    Args:
        params: `MLSTMBlockParams` (`norm` is not used here).
        xs: (batch..., T, D).
        seq_lengths, mode, chunk_size: as in `mlstm_block`.

    Returns:
        (batch..., T, D); zero at padded steps.
    """
    dim, inner = params.w_up.shape[0], params.w_down.shape[0]
    xs = check_block_xs(xs, dim)
    valid = valid_steps(xs, seq_lengths)
    heads = params.b_i.shape[0]
    up = xs @ params.w_up
    u, z = up[..., :inner], up[..., inner:]
    conv = zero_padding(jax.nn.silu(causal_conv1d(u, params.conv_w, params.conv_b)), valid)
    q, k = headwise(conv, params.w_q), headwise(conv, params.w_k)
    v = headwise(u, params.w_v)
    qkv = jnp.concatenate([q, k, v], axis=-1)
    i_pre = qkv @ params.w_i + per_feature(params.b_i, qkv[..., :heads])
    f_pre = qkv @ params.w_f + per_feature(params.b_f, qkv[..., :heads])

    def split_heads(a):
        return a.reshape(a.shape[:-1] + (heads, a.shape[-1] // heads))

    h_tilde, _ = mlstm_qkv(split_heads(q), split_heads(k), split_heads(v), i_pre, f_pre,
                           mode=mode, chunk_size=chunk_size, seq_lengths=seq_lengths)
    h = (group_norm(h_tilde, params.outnorm) + per_feature(params.skip, conv) * conv)
    h = h * jax.nn.silu(z)
    return zero_padding(h @ params.w_down, valid)


def mlstm_block(
    params: MLSTMBlockParams,
    xs: Array,
    *,
    seq_lengths: Array | None = None,
    mode: str = "chunkwise",
    chunk_size: int = 64,
) -> Array:
    """An mLSTM block: xs + mlstm_layer(LN(xs)) (equations in the module docstring).

    Args:
        params: `MLSTMBlockParams` (`init_mlstm_block`).
        xs: (batch..., T, D).
        seq_lengths: integer array of the batch shape, valid steps per sequence.
        mode: the mLSTM form, one of "chunkwise", "parallel", "recurrent" (same function).
        chunk_size: steps per chunk in "chunkwise" mode.

    Returns:
        (batch..., T, D); exactly zero at padded steps.

    Example:
        >>> p = init_mlstm_block(jax.random.key(0), 16)
        >>> mlstm_block(p, jnp.ones((2, 10, 16))).shape
        (2, 10, 16)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}.")
    xs = check_block_xs(xs, params.norm.shape[0])
    out = xs + mlstm_layer(params, residual_layer_norm(xs, params.norm),
                           seq_lengths=seq_lengths, mode=mode, chunk_size=chunk_size)
    return zero_padding(out, valid_steps(xs, seq_lengths))


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
) -> Array:
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

    Returns:
        (batch..., T, D); exactly zero at padded steps.

    Example:
        >>> p = init_slstm_block(jax.random.key(0), 16)
        >>> slstm_block(p, jnp.ones((2, 10, 16))).shape
        (2, 10, 16)
    """
    dim = params.norm.shape[0]
    xs = check_block_xs(xs, dim)
    valid = valid_steps(xs, seq_lengths)
    a = residual_layer_norm(xs, params.norm)
    conv = a
    if params.conv_w.shape[0]:
        conv = zero_padding(jax.nn.silu(causal_conv1d(a, params.conv_w, params.conv_b)), valid)
    zeros = jnp.zeros((dim, dim), params.w_i.dtype)
    from_conv = jnp.concatenate([headwise_dense(params.w_i), headwise_dense(params.w_f),
                                 zeros, zeros], axis=1)
    from_norm = jnp.concatenate([zeros, zeros, headwise_dense(params.w_z),
                                 headwise_dense(params.w_o)], axis=1)
    cell = SLSTMParams(w_x=jnp.concatenate([from_conv, from_norm], axis=0), r=params.r,
                       b=params.b)
    y, _ = slstm(cell, jnp.concatenate([conv, a], axis=-1), seq_lengths=seq_lengths)
    heads = params.r.shape[0]
    xs = xs + group_norm(y.reshape(y.shape[:-1] + (heads, dim // heads)), params.group_norm)
    ffn = params.ffn_down.shape[0]
    up = residual_layer_norm(xs, params.ffn_norm) @ params.ffn_up
    hidden = jax.nn.gelu(up[..., :ffn], approximate=False) * up[..., ffn:]
    return zero_padding(xs + hidden @ params.ffn_down, valid)


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
    input_size = check_positive_int(input_size, "input_size")
    dim = check_positive_int(dim, "dim")
    kinds = list(blocks)
    if not kinds or any(kind not in ("m", "s") for kind in kinds):
        raise ValueError(f"blocks must be a non-empty sequence of 'm' and 's', got {blocks!r}.")
    key_in, *block_keys = jax.random.split(key, len(kinds) + 1)
    built = []
    for index, (kind, block_key) in enumerate(zip(kinds, block_keys)):
        if kind == "m":
            built.append(init_mlstm_block(
                block_key, dim, num_heads=num_heads, proj_factor=mlstm_proj_factor,
                conv_kernel=conv_kernel, qkv_block_size=qkv_block_size, round_to=round_to,
                num_blocks=len(kinds), dtype=dtype))
        else:
            built.append(init_slstm_block(
                block_key, dim, num_heads=num_heads, conv_kernel=conv_kernel,
                ffn_proj_factor=ffn_proj_factor, round_to=round_to, block_index=index,
                num_blocks=len(kinds), dtype=dtype))
    return XLSTMStackParams(blocks=tuple(built),
                            **init_stack_ends(key_in, input_size, dim, dtype))


def xlstm_stack(
    params: XLSTMStackParams,
    xs: Array,
    *,
    seq_lengths: Array | None = None,
    mode: str = "chunkwise",
    chunk_size: int = 64,
) -> Array:
    """Runs a stack: x = xs @ W_in + b_in; each block in order; the final LayerNorm.

    Args:
        params: `XLSTMStackParams` (`init_xlstm_stack`).
        xs: (batch..., T, input_size).
        seq_lengths: integer array of the batch shape, valid steps per sequence.
        mode, chunk_size: the mLSTM blocks' form (`mlstm_block`).

    Returns:
        (batch..., T, dim); exactly zero at padded steps.
    """

    def run_block(index: int, block: Any, x: Array) -> Array:
        if isinstance(block, MLSTMBlockParams):
            return mlstm_block(block, x, seq_lengths=seq_lengths, mode=mode,
                               chunk_size=chunk_size)
        if isinstance(block, SLSTMBlockParams):
            return slstm_block(block, x, seq_lengths=seq_lengths)
        raise TypeError(f"params.blocks[{index}] must be MLSTMBlockParams or "
                        f"SLSTMBlockParams, got {type(block).__name__}.")

    return run_block_stack(params, xs, seq_lengths, run_block)
