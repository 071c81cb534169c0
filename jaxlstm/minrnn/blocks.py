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

Decoding, as for the xLSTM stack: `min_block` / `min_block_stack` return the state they end in
with `return_state=True` (each sequence's after its last valid step) and start from one with
`initial_state`; `min_block_step` / `min_block_stack_step` advance one time step, the cell with
its family's `step`. A block's state is `MinRNNBlockState(conv, cell)`: the convolution's last
K - 1 inputs and the min-RNN's h; the stack's is a tuple of them, one per block
(`initial_min_block_stack_state` for zeros):

    outputs[:, :P], state = min_block_stack(params, xs[:, :P], return_state=True)
    y_t, state = min_block_stack_step(params, xs[:, t], state)     # t = P, P + 1, ...

Core module: jax, numpy and chex only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

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
    gelu_feed_forward,
    init_causal_conv,
    residual,
    residual_layer_norm,
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
)
from jaxlstm.family import Family
from jaxlstm.minrnn.min_gru import MinGRUParams, min_gru
from jaxlstm.minrnn.min_lstm import MinLSTMParams, min_lstm
from jaxlstm.validation import check_positive_int

Array = jax.Array

CELLS = ("min_lstm", "min_gru")
"""The cells a block can hold ("l" and "g" blocks, `BLOCK_KINDS`)."""



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


class MinRNNBlockState(NamedTuple):
    """What a min-RNN block carries from one time step to the next (D = dim, E = hidden,
    K = conv kernel).

    Attributes:
        conv: the causal conv's last K - 1 inputs LN(x), (batch..., max(K-1, 0), D); empty
            without a conv (K = 0) or with K = 1.
        cell: the min-RNN's h, (batch..., E) (its family's state).
    """

    conv: Array
    cell: Array


MinRNNStackState = tuple[MinRNNBlockState, ...]
"""A stack's state: one `MinRNNBlockState` per block, in order."""


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
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}.")
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


def _cell_family(cell: Any) -> Family:
    """The family of a block's cell, which must be a minLSTM's or a minGRU's."""
    if not isinstance(cell, (MinLSTMParams, MinGRUParams)):
        raise TypeError(f"params.cell must be MinLSTMParams or MinGRUParams, got "
                        f"{type(cell).__name__}.")
    return families.of(cell, "params.cell")


def _run_cell(cell: MinLSTMParams | MinGRUParams, xs: Array, seq_lengths: Any,
              mode: str | None, initial_state: Array | None) -> tuple[Array, Array]:
    _cell_family(cell)  # refuses other cells
    run = min_lstm if isinstance(cell, MinLSTMParams) else min_gru
    return run(cell, xs, seq_lengths=seq_lengths, mode=mode, initial_state=initial_state)


def min_block(
    params: MinRNNBlockParams,
    xs: Array,
    *,
    seq_lengths: Array | None = None,
    mode: str | None = None,
    initial_state: MinRNNBlockState | None = None,
    return_state: bool = False,
) -> Array | tuple[Array, MinRNNBlockState]:
    """One block: xs + W_out minRNN(conv(LN(xs))), then + FFN(LN2(.)) (module docstring).

    Args:
        params: `MinRNNBlockParams` (`init_min_block`).
        xs: (batch..., T, D).
        seq_lengths: integer array of the batch shape, valid steps per sequence.
        mode: the min-RNN's form, "parallel" (associative scan) or "sequential"; None: the
            fastest on the backend (`jaxlstm.family.form`: sequential on a CPU).
        initial_state: `MinRNNBlockState` to start from (a state this function or
            `min_block_step` returned); None: zeros (`initial_min_block_state`).
        return_state: also return the state after each sequence's last valid step.

    Returns:
        (batch..., T, D); exactly zero at padded steps. With `return_state`,
        `(outputs, MinRNNBlockState)`.
    """
    if not isinstance(params, MinRNNBlockParams):
        raise TypeError(f"params must be MinRNNBlockParams, got {type(params).__name__}.")
    xs = check_block_xs(xs, params.norm.shape[0])
    if initial_state is not None:
        check_block_state(initial_state,
                          lambda: initial_min_block_state(params, xs.shape[:-2], xs.dtype),
                          "initial_state", batch_of(xs, "xs"))
    valid = valid_steps(xs, seq_lengths)
    conv_before = None if initial_state is None else initial_state.conv
    a = conv_in = residual_layer_norm(xs, params.norm)
    if params.conv_w.shape[0]:
        # Padding is zeroed before the cell so that a padded step's conv bias cannot leak
        # into the scan (the cell also freezes its state there).
        a = zero_padding(causal_conv1d(a, params.conv_w, params.conv_b, conv_before), valid)
    h, cell = _run_cell(params.cell, a, seq_lengths, mode,
                        None if initial_state is None else initial_state.cell)
    out = zero_padding(_after_cell(params, xs, h), valid)
    if not return_state:
        return out
    lengths = sequence_lengths(xs, seq_lengths)
    return out, MinRNNBlockState(
        conv_state(conv_in, params.conv_w.shape[0], lengths, conv_before), cell)


def _after_cell(params: MinRNNBlockParams, x: Array, h: Array) -> Array:
    """x + h @ W_out, then + the feed-forward, at any number of steps."""
    x = x + h @ params.w_out
    return residual(x, params.ffn_norm, lambda a: gelu_feed_forward(
        a, params.ffn_w1, params.ffn_b1, params.ffn_w2, params.ffn_b2))


def initial_min_block_state(params: MinRNNBlockParams, batch_shape: tuple[int, ...],
                            dtype: Any = jnp.float32) -> MinRNNBlockState:
    """The state a block starts from: zero conv inputs and its cell family's `initial_state`,
    shaped and typed as `min_block`'s final state for inputs of `dtype` (promoted with the
    params')."""
    if not isinstance(params, MinRNNBlockParams):
        raise TypeError(f"params must be MinRNNBlockParams, got {type(params).__name__}.")
    batch_shape = tuple(batch_shape)
    dtype = jnp.result_type(dtype, *jax.tree.leaves(params))
    dim = params.norm.shape[0]
    conv = jnp.zeros(batch_shape + (max(params.conv_w.shape[0] - 1, 0), dim), dtype)
    return MinRNNBlockState(conv, _cell_family(params.cell).initial_state(
        params.cell, batch_shape, dtype))


def min_block_step(params: MinRNNBlockParams, x_t: Array,
                   state: MinRNNBlockState) -> tuple[Array, MinRNNBlockState]:
    """One time step of a block: `min_block` at step t, given the state after step t - 1;
    the cell steps with its family's `step`.

    Args:
        params: `MinRNNBlockParams`.
        x_t: (batch..., D).
        state: `MinRNNBlockState` with the batch shape of `x_t` (`min_block(...,
            return_state=True)`'s, `initial_min_block_state`, or this function's).

    Returns:
        (y_t (batch..., D), the state after this step).
    """
    if not isinstance(params, MinRNNBlockParams):
        raise TypeError(f"params must be MinRNNBlockParams, got {type(params).__name__}.")
    x_t = check_block_step_input(x_t, params.norm.shape[0])
    check_block_state(state,
                      lambda: initial_min_block_state(params, x_t.shape[:-1], x_t.dtype),
                      "state", batch_of(x_t, "x_t", step=True))
    a = residual_layer_norm(x_t, params.norm)
    conv_after = state.conv
    if params.conv_w.shape[0]:
        a, conv_after = causal_conv1d_step(a, params.conv_w, params.conv_b, state.conv)
    h, cell = _cell_family(params.cell).step(params.cell, a, state.cell)
    return _after_cell(params, x_t, h), MinRNNBlockState(conv_after, cell)


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
    kinds = list(blocks) if isinstance(blocks, (str, Sequence)) else []
    if not kinds or any(kind not in BLOCK_KINDS for kind in kinds):
        raise ValueError(f"blocks must be a non-empty sequence of 'l' (minLSTM) and 'g' "
                         f"(minGRU), got {blocks!r}.")
    return MinRNNStackParams(*init_block_stack(
        key, input_size, dim, kinds, dtype=dtype, expansion=expansion,
        conv_kernel=conv_kernel, ffn_factor=ffn_factor))


def min_block_stack(
    params: MinRNNStackParams,
    xs: Array,
    *,
    seq_lengths: Array | None = None,
    mode: str | None = None,
    initial_state: MinRNNStackState | None = None,
    return_state: bool = False,
) -> Array | tuple[Array, MinRNNStackState]:
    """Runs a stack: x = xs @ W_in + b_in; each block in order; the final LayerNorm.

    Args:
        params: `MinRNNStackParams` (`init_min_block_stack`).
        xs: (batch..., T, input_size).
        seq_lengths: integer array of the batch shape, valid steps per sequence.
        mode: "parallel" or "sequential", for every block's min-RNN; None: the fastest on
            the backend (`jaxlstm.family.form`: sequential on a CPU).
        initial_state: one `MinRNNBlockState` per block to start from (this function's with
            `return_state`, `min_block_stack_step`'s or `initial_min_block_stack_state`);
            None: zeros.
        return_state: also return the blocks' states after each sequence's last valid step
            (the prefill of decoding: continue with `min_block_stack_step`).

    Returns:
        (batch..., T, dim); exactly zero at padded steps. With `return_state`,
        `(outputs, state)`, state a tuple of `MinRNNBlockState`.
    """
    if not isinstance(params, MinRNNStackParams):
        raise TypeError(f"params must be MinRNNStackParams, got {type(params).__name__}.")

    return block_stack(params, xs, seq_lengths=seq_lengths, mode=mode,
                       initial_state=initial_state, return_state=return_state)


def initial_min_block_stack_state(params: MinRNNStackParams, batch_shape: tuple[int, ...],
                                  dtype: Any = jnp.float32) -> MinRNNStackState:
    """The state `min_block_stack` starts from when given none: each block's
    `initial_min_block_state`, shaped and typed as the stack's final state for inputs
    (batch_shape..., T, input_size) of `dtype` (promoted with the params')."""
    check_stack_params(params, MinRNNStackParams)
    return initial_block_stack_state(params, batch_shape, dtype)


def min_block_stack_step(params: MinRNNStackParams, x_t: Array,
                         state: MinRNNStackState) -> tuple[Array, MinRNNStackState]:
    """One time step of a stack: `min_block_stack`'s output at step t, given its state after
    step t - 1 (`min_block_step` per block).

    Args:
        params: `MinRNNStackParams`.
        x_t: (batch..., input_size).
        state: one `MinRNNBlockState` per block, with the batch shape of `x_t`:
            `min_block_stack(..., return_state=True)`'s, `initial_min_block_stack_state`, or
            this function's.

    Returns:
        (y_t (batch..., dim), the state after this step).

    Example:
        >>> _, state = min_block_stack(params, prompt, return_state=True)
        >>> y_t, state = jax.jit(min_block_stack_step)(params, x_t, state)
    """
    check_stack_params(params, MinRNNStackParams)
    return block_stack_step(params, x_t, state)


# --- the block kinds (jaxlstm.blocks) -----------------------------------------------------------


def _block_kind(letter: str, label: str, cell: str) -> BlockKind:
    """The block of `cell` ("min_lstm" or "min_gru") behind `jaxlstm.blocks`."""
    cell_type = families.get(cell).params_type

    def init(key: Array, dim: int, *, block_index: int, num_blocks: int, dtype: Any,
             **options: Any) -> MinRNNBlockParams:
        del block_index  # the block's init does not depend on its place
        return init_min_block(key, dim, cell=cell, num_blocks=num_blocks, dtype=dtype,
                              **options)

    def activation_floats(dim: int, steps: int, mode: str | None = None, *,
                          expansion: float = 1.0, **_: Any) -> float:
        """The cell at its width, and 8 vectors of D for the block's projections, norms and
        feed-forward."""
        width = max(1, round(expansion * dim))
        return families.get(cell).activation_floats(width, steps, mode) + 8.0 * dim

    return BlockKind(
        letter=letter, label=label, family=cell,
        owns=lambda params: (isinstance(params, MinRNNBlockParams)
                             and isinstance(params.cell, cell_type)),
        init=init, apply=min_block, step=min_block_step,
        initial_state=initial_min_block_state,
        init_options=frozenset({"expansion", "conv_kernel", "ffn_factor"}),
        activation_floats=activation_floats)


BLOCK_KINDS = {letter: _block_kind(letter, label, cell) for letter, label, cell in
               (("l", "minLSTM", "min_lstm"), ("g", "minGRU", "min_gru"))}
"""This module's block kinds by letter, as `jaxlstm.blocks`' registry reads them."""
