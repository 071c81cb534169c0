"""minLSTM / minGRU residual blocks, the layer the minRNN paper stacks (Feng et al. 2024,
"Were RNNs All We Needed?", appendix: convolution, normalisation, the min-RNN, normalisation,
feed-forward, with residual connections), as pure functions over named pytrees.

One block, with D = dim, E = the min-RNN's hidden size (`expansion` * D), P = 4 D:

    a   = LN(x)                                        (pre-norm: `residual_layer_norm`)
    c   = causal_conv1d(a)                             (depthwise, kernel 4, with bias)
    h   = minRNN(c)                                    (`min_lstm` or `min_gru`, E units)
    x  <- x + h @ W_out                                (E -> D)
    x  <- x + GELU(LN2(x) @ W_1 + b_1) @ W_2 + b_2      (feed-forward, D -> P -> D)

Stack (`min_block_stack`): x = xs @ W_in + b_in, the blocks in order, then a final LayerNorm,
as `jaxlstm.xlstm.blocks.xlstm_stack` stacks xLSTM blocks (and with the same initialisation:
small init for W_in, W_1 and the min-RNN's gates, Wang init for the projections back into the
residual stream, norms at scale 1). Each block is causal; with `seq_lengths`, outputs past a
sequence's end are exactly zero and each sequence's outputs equal running it alone.

Core module: jax, numpy and chex only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm.block_parts import (
    causal_conv1d,
    check_block_xs,
    init_causal_conv,
    init_stack_ends,
    per_feature,
    residual_layer_norm,
    run_block_stack,
    small_init,
    valid_steps,
    wang_init,
    zero_padding,
)
from jaxlstm.minrnn.min_gru import MinGRUParams, min_gru
from jaxlstm.minrnn.min_lstm import MinLSTMParams, min_lstm
from jaxlstm.validation import check_positive_int

Array = jax.Array

BLOCK_KINDS = {"l": "min_lstm", "g": "min_gru"}
"""The letters of a stack's `blocks` string and the cell each stands for."""


class MinRNNBlockParams(NamedTuple):
    """Weights of one min-RNN block (module docstring), D = dim, E = hidden, P = 4 D.

    Attributes:
        norm: (D,) pre-norm weight (scale 1 + norm).
        conv_w: (K, D) causal depthwise kernel, K = 0 turns the conv off; conv_b: (D,).
        cell: `MinLSTMParams` or `MinGRUParams`, input D, hidden E.
        w_out: (E, D) projection of the min-RNN's output into the residual stream.
        ffn_norm: (D,); ffn_w1: (D, P), ffn_b1: (P,), ffn_w2: (P, D), ffn_b2: (D,).
    """

    norm: Array
    conv_w: Array
    conv_b: Array
    cell: MinLSTMParams | MinGRUParams
    w_out: Array
    ffn_norm: Array
    ffn_w1: Array
    ffn_b1: Array
    ffn_w2: Array
    ffn_b2: Array


class MinRNNStackParams(NamedTuple):
    """A stack: input projection (w_in (I, D), b_in (D,)), the blocks, final norm (D,)."""

    w_in: Array
    b_in: Array
    blocks: tuple[MinRNNBlockParams, ...]
    norm: Array


def init_min_block(
    key: Array,
    dim: int,
    *,
    cell: str = "min_lstm",
    expansion: float = 1.0,
    conv_kernel: int = 4,
    ffn_factor: int = 4,
    num_blocks: int = 1,
    dtype: Any = jnp.float32,
) -> MinRNNBlockParams:
    """Initialises one block (module docstring).

    Args:
        key: PRNG key.
        dim: D, the residual stream's features.
        cell: "min_lstm" or "min_gru".
        expansion: the min-RNN's hidden size is round(expansion * dim).
        conv_kernel: K of the causal conv; 0 turns it off.
        ffn_factor: the feed-forward's hidden size is ffn_factor * dim.
        num_blocks: blocks in the stack (scales the Wang init of the output projections).
        dtype: parameter dtype.

    Example:
        >>> p = init_min_block(jax.random.key(0), 16, cell="min_gru")
        >>> min_block(p, jnp.ones((2, 10, 16))).shape
        (2, 10, 16)
    """
    dim = check_positive_int(dim, "dim")
    if cell not in BLOCK_KINDS.values():
        raise ValueError(f"cell must be one of {', '.join(BLOCK_KINDS.values())}, got {cell!r}.")
    if not isinstance(conv_kernel, int) or conv_kernel < 0:
        raise ValueError(f"conv_kernel must be a non-negative int, got {conv_kernel!r}.")
    hidden = max(1, round(expansion * dim))
    inner = check_positive_int(ffn_factor, "ffn_factor") * dim
    k_conv, k_cell, k_out, k_w1, k_w2 = jax.random.split(key, 5)
    conv_w, conv_b = init_causal_conv(k_conv, conv_kernel, dim)
    gates = 3 if cell == "min_lstm" else 2
    w_x = small_init(k_cell, (dim, gates * hidden), dim)
    cell_params = (MinLSTMParams if cell == "min_lstm" else MinGRUParams)(
        w_x=w_x.astype(dtype), b=jnp.zeros((gates * hidden,), dtype))
    zeros = jnp.zeros((dim,), dtype)
    return MinRNNBlockParams(
        norm=zeros, conv_w=conv_w.astype(dtype), conv_b=conv_b.astype(dtype),
        cell=cell_params,
        w_out=wang_init(k_out, (hidden, dim), hidden, num_blocks).astype(dtype),
        ffn_norm=zeros,
        ffn_w1=small_init(k_w1, (dim, inner), dim).astype(dtype),
        ffn_b1=jnp.zeros((inner,), dtype),
        ffn_w2=wang_init(k_w2, (inner, dim), inner, num_blocks).astype(dtype),
        ffn_b2=zeros,
    )


def _run_cell(cell: MinLSTMParams | MinGRUParams, xs: Array, seq_lengths: Any,
              mode: str) -> Array:
    if isinstance(cell, MinLSTMParams):
        return min_lstm(cell, xs, seq_lengths=seq_lengths, mode=mode)[0]
    if isinstance(cell, MinGRUParams):
        return min_gru(cell, xs, seq_lengths=seq_lengths, mode=mode)[0]
    raise TypeError(f"params.cell must be MinLSTMParams or MinGRUParams, got "
                    f"{type(cell).__name__}.")


def min_block(
    params: MinRNNBlockParams,
    xs: Array,
    *,
    seq_lengths: Array | None = None,
    mode: str = "parallel",
) -> Array:
    """One block: xs + W_out minRNN(conv(LN(xs))), then + FFN(LN2(.)) (module docstring).

    Args:
        params: `MinRNNBlockParams` (`init_min_block`).
        xs: (batch..., T, D).
        seq_lengths: integer array of the batch shape, valid steps per sequence.
        mode: the min-RNN's form, "parallel" (associative scan) or "sequential".

    Returns:
        (batch..., T, D); exactly zero at padded steps.
    """
    if not isinstance(params, MinRNNBlockParams):
        raise TypeError(f"params must be MinRNNBlockParams, got {type(params).__name__}.")
    xs = check_block_xs(xs, params.norm.shape[0])
    valid = valid_steps(xs, seq_lengths)
    a = residual_layer_norm(xs, params.norm)
    if params.conv_w.shape[0]:
        # Padding is zeroed before the cell so that a padded step's conv bias cannot leak
        # into the scan (the cell also freezes its state there).
        a = zero_padding(causal_conv1d(a, params.conv_w, params.conv_b), valid)
    h = _run_cell(params.cell, a, seq_lengths, mode)
    xs = xs + h @ params.w_out
    hidden = residual_layer_norm(xs, params.ffn_norm) @ params.ffn_w1
    hidden = jax.nn.gelu(hidden + per_feature(params.ffn_b1, hidden), approximate=False)
    out = hidden @ params.ffn_w2
    return zero_padding(xs + out + per_feature(params.ffn_b2, out), valid)


def init_min_block_stack(
    key: Array,
    input_size: int,
    dim: int,
    blocks: Sequence[str] = "lll",
    *,
    expansion: float = 1.0,
    conv_kernel: int = 4,
    ffn_factor: int = 4,
    dtype: Any = jnp.float32,
) -> MinRNNStackParams:
    """Initialises a stack of minLSTM ("l") and minGRU ("g") blocks behind an input
    projection, e.g. `blocks="lll"` for the paper's three-layer minLSTM.

    Args:
        key: PRNG key.
        input_size: features of the stack's input.
        dim: D, the residual stream's features.
        blocks: a sequence of "l" / "g".
        expansion, conv_kernel, ffn_factor, dtype: as in `init_min_block`.

    Example:
        >>> p = init_min_block_stack(jax.random.key(0), input_size=3, dim=16, blocks="gg")
        >>> min_block_stack(p, jnp.ones((2, 10, 3))).shape
        (2, 10, 16)
    """
    input_size = check_positive_int(input_size, "input_size")
    dim = check_positive_int(dim, "dim")
    kinds = list(blocks)
    if not kinds or any(kind not in BLOCK_KINDS for kind in kinds):
        raise ValueError(f"blocks must be a non-empty sequence of 'l' (minLSTM) and 'g' "
                         f"(minGRU), got {blocks!r}.")
    key_in, *block_keys = jax.random.split(key, len(kinds) + 1)
    built = tuple(
        init_min_block(block_key, dim, cell=BLOCK_KINDS[kind], expansion=expansion,
                       conv_kernel=conv_kernel, ffn_factor=ffn_factor, num_blocks=len(kinds),
                       dtype=dtype)
        for kind, block_key in zip(kinds, block_keys)
    )
    return MinRNNStackParams(blocks=built, **init_stack_ends(key_in, input_size, dim, dtype))


def min_block_stack(
    params: MinRNNStackParams,
    xs: Array,
    *,
    seq_lengths: Array | None = None,
    mode: str = "parallel",
) -> Array:
    """Runs a stack: x = xs @ W_in + b_in; each block in order; the final LayerNorm.

    Args:
        params: `MinRNNStackParams` (`init_min_block_stack`).
        xs: (batch..., T, input_size).
        seq_lengths: integer array of the batch shape, valid steps per sequence.
        mode: "parallel" or "sequential", for every block's min-RNN.

    Returns:
        (batch..., T, dim); exactly zero at padded steps.
    """
    if not isinstance(params, MinRNNStackParams):
        raise TypeError(f"params must be MinRNNStackParams, got {type(params).__name__}.")
    return run_block_stack(
        params, xs, seq_lengths,
        lambda _, block, x: min_block(block, x, seq_lengths=seq_lengths, mode=mode))
