"""The sLSTM (Beck et al. 2024): params, state, init, one step and the sequence.

The sLSTM keeps the LSTM's affine map, z = x_t @ W_x + h_{t-1} @ R + b with gate order
i, f, z, o, and replaces the elementwise step (`jaxlstm.xlstm.slstm_gates`): exponential input
gates, a normaliser n and a stabiliser m. Its recurrent weights R are block-diagonal, one
(head_dim, 4 * head_dim) block per head, so each head mixes only its own units.

The sequence runs on the LSTM's time loop (`jaxlstm.recurrence`): the sLSTM is one more cell
whose elementwise step the loop composes, so it gets the chunked input projection, the custom
VJP whose reverse loop carries only the recurrent gradients, and `remat_chunk`. The loop takes
R as its per-head blocks (`jaxlstm.recurrence.recurrent_product`): h_{t-1} @ R, the reverse
loop's dz @ R^T and dR = H_prev^T dZ are products batched over the heads, 1/num_heads of the
FLOPs of the dense (H, 4H) embedding (`recurrent_kernel`), and dR comes back in r's shape.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm import gates
from jaxlstm.family import Family, checked_apply
from jaxlstm.params import Initializer, LSTMParams
from jaxlstm.recurrence import (
    LoopMasks,
    LoopOptions,
    loop_resets,
    lstm_loop,
    lstm_loop_autodiff,
    recurrent_product,
)
from jaxlstm.scan import from_loop_layout, loop_sizes
from jaxlstm.validation import (
    check_features,
    check_floating,
    check_positive_int,
    check_resets,
    check_seq_lengths,
    check_size,
    shape_str,
)
from jaxlstm.variants import CellVariant
from jaxlstm.xlstm import slstm_gates

Array = jax.Array

BIAS_INITS = ("powerlaw_blockdependent", "small_init", "standard", "zeros")
RECURRENT_INITS = ("zeros", "standard")


class SLSTMParams(NamedTuple):
    """Weights of one sLSTM layer; gate order i, f, z, o.

    Attributes:
        w_x: input kernel, (input_size, 4 * hidden_size); gate blocks along the last axis,
            each block's H units ordered head by head.
        r: recurrent kernel per head, (num_heads, head_dim, 4, head_dim): r[k, d, g, e] is the
            weight from unit d of head k's h_{t-1} to unit e of head k's gate g. This is the
            reference's `recurrent_kernel` layout (xlstm `sLSTMCell`).
        b: bias, (4 * hidden_size,), in the layout of w_x's columns.
    """

    w_x: Array
    r: Array
    b: Array

    @property
    def input_size(self) -> int:
        return self.w_x.shape[-2]

    @property
    def hidden_size(self) -> int:
        return self.r.shape[0] * self.r.shape[1]

    @property
    def num_heads(self) -> int:
        return self.r.shape[0]


class SLSTMState(NamedTuple):
    """The sLSTM's recurrent state, each (..., H).

    Attributes:
        h: hidden state h_t, the step's output.
        c: cell state c_t (scaled by exp(-m_t)).
        n: normaliser n_t (scaled by exp(-m_t)); 0 in the zero state.
        m: stabiliser m_t, the log of the scale; carries no gradient.
    """

    h: Array
    c: Array
    n: Array
    m: Array


class SLSTMGates(NamedTuple):
    """Per-step activations, for looking inside a trained model. Each has shape (..., H).

    Attributes:
        i: stabilised input gate i'_t = exp(i~ - m_t).
        f: stabilised forget gate f'_t = exp(m_{t-1} + logsigmoid(f~) - m_t).
        z: cell input tanh(z~).
        o: output gate sigmoid(o~).
        c, n, m: the state after the step.
    """

    i: Array
    f: Array
    z: Array
    o: Array
    c: Array
    n: Array
    m: Array


def slstm_pointwise(z: Array, state: SLSTMState) -> tuple[SLSTMState, SLSTMGates]:
    """The elementwise part of an sLSTM step: from the pre-activations z to the new state.

        m_t = max(i~, m_{t-1} + logsigmoid(f~))        (i~ where n_{t-1} = 0)
        i', f' = exp(i~ - m_t), exp(m_{t-1} + logsigmoid(f~) - m_t)   (f' <= 1 where n_{t-1} = 0)
        c_t = f' c_{t-1} + i' tanh(z~),  n_t = f' n_{t-1} + i',  h_t = sigmoid(o~) c_t / n_t

    Args:
        z: fused pre-activations x_t @ W_x + h_{t-1} @ R + b, shape (..., 4H).
        state: the previous `SLSTMState`.

    Returns:
        The new `SLSTMState` and the step's `SLSTMGates`.
    """
    i_tilde, f_tilde, z_tilde, o_tilde = gates.split_gates(z)
    m_t = slstm_gates.stabiliser(i_tilde, f_tilde, state.m, state.n)
    i_t = slstm_gates.exp_input_gate(i_tilde, m_t)
    f_t = slstm_gates.exp_forget_gate(f_tilde, state.m, m_t, state.n)
    z_t = slstm_gates.cell_input(z_tilde)
    o_t = slstm_gates.output_gate(o_tilde)
    c_t = slstm_gates.cell_update(f_t, state.c, i_t, z_t)
    n_t = slstm_gates.normaliser_update(f_t, state.n, i_t)
    h_t = slstm_gates.hidden_update(o_t, c_t, n_t)
    return (SLSTMState(h=h_t, c=c_t, n=n_t, m=m_t),
            SLSTMGates(i=i_t, f=f_t, z=z_t, o=o_t, c=c_t, n=n_t, m=m_t))


SLSTM_CELL = CellVariant(
    "slstm", None, 4, 1, True,  # not an `LSTMParams.cell` variant: no weights of its own
    lambda weights, z, state: slstm_pointwise(z, state),
    init_weights=lambda key, h: None,
    weight_shapes=lambda h: {},
)
"""The sLSTM as a cell of the LSTM's time loop (`jaxlstm.recurrence`): additive
pre-activations z = z_x + z_h + b and `slstm_pointwise` as its elementwise step."""


def recurrent_kernel(r: Array) -> Array:
    """The dense (H, 4H) matrix of the block-diagonal recurrent map: h @ it = h @ R.

    Entry [k * head_dim + d, g * H + k * head_dim + e] is r[k, d, g, e]; entries that connect
    different heads are zero. For interop and inspection: `slstm` and `slstm_cell` multiply by
    the blocks themselves (`jaxlstm.recurrence.recurrent_product`), which takes 1/num_heads of
    this matrix's FLOPs. Autodiff of this embedding returns only the blocks' gradient.

    Args:
        r: (num_heads, head_dim, 4, head_dim).

    Returns:
        (H, 4H), in the layout of `SLSTMParams.w_x`'s columns.
    """
    num_heads, head_dim, num_gates, _ = r.shape
    eye = jnp.eye(num_heads, dtype=r.dtype)
    dense = jnp.einsum("kdge,kl->kdgle", r, eye)
    hidden = num_heads * head_dim
    return dense.reshape(hidden, num_gates * hidden)


def _small_init(key: Array, shape: tuple[int, ...], dtype: jnp.dtype) -> Array:
    """N(0, 2 / (5 * fan_in)): the reference layer's "small init" of its input projections."""
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / (5.0 * shape[0]))


def forget_bias_powerlaw(head_dim: int, block_index: int = 0, num_blocks: int = 1) -> Array:
    """The reference's "powerlaw_blockdependent" forget-gate bias for one head, (head_dim,).

        b_f[d] = 5 - 12 * (d / (head_dim - 1)) ** (0.3 + 1.3 * block_index / (num_blocks - 1))

    From +5 (remember for ~150 steps) down to -7 (forget at once) across each head's units, the
    curve steeper in deeper blocks of a stack (the ratio is 0 for a single block). A head of
    one unit gets +5 (the reference divides by zero there).
    """
    ratio = block_index / (num_blocks - 1) if num_blocks > 1 else 0.0
    position = np.arange(head_dim) / max(head_dim - 1, 1)
    return jnp.asarray(5.0 - 12.0 * position ** (0.3 + 1.3 * ratio), jnp.float32)


def init_slstm(
    key: Array,
    input_size: int,
    hidden_size: int,
    *,
    num_heads: int = 4,
    dtype: jnp.dtype = jnp.float32,
    bias_init: str = "powerlaw_blockdependent",
    recurrent_init: str | Initializer = "zeros",
    input_init: Initializer | None = None,
    block_index: int = 0,
    num_blocks: int = 1,
) -> SLSTMParams:
    """Initialises one sLSTM layer, with the reference's defaults (xlstm `sLSTMCellConfig`).

    * `bias_init`: "powerlaw_blockdependent" (default): the forget gate's bias runs from +5 down
      to -7 across each head's units (`forget_bias_powerlaw`, which uses `block_index` and
      `num_blocks`), the other gates' biases are 0; "small_init": forget bias linearly from 3
      to 6 across each head, others 0; "standard": every bias U(-1/sqrt(H), 1/sqrt(H));
      "zeros".
    * `recurrent_init`: "zeros" (default; the recurrence starts switched off and is learned),
      "standard": U(-1/sqrt(H), 1/sqrt(H)), or an initialiser called with the shape
      (num_heads, head_dim, 4, head_dim).
    * `input_init`: initialiser for w_x, called with (input_size, 4H); default N(0, 2 / (5 I)),
      the reference layer's "small init". (The reference layer's input projections are
      block-diagonal per head; a dense w_x holds them, see `jaxlstm.interop`.)

    Initialisation runs in float32 and the result is cast to `dtype`.

    Args:
        key: a PRNG key.
        input_size: I, the number of input features.
        hidden_size: H, the number of hidden units.
        num_heads: heads of the block-diagonal recurrence; must divide H.
        dtype: dtype of the returned parameters.
        bias_init: one of "powerlaw_blockdependent", "small_init", "standard", "zeros".
        recurrent_init: "zeros", "standard" or an initialiser.
        input_init: initialiser for w_x, or None.
        block_index, num_blocks: this layer's place in a stack, for "powerlaw_blockdependent".

    Returns:
        `SLSTMParams` with w_x (I, 4H), r (num_heads, H / num_heads, 4, H / num_heads), b (4H,).

    Example:
        >>> params = jaxlstm.init_slstm(jax.random.key(0), input_size=3, hidden_size=8)
        >>> params.r.shape
        (4, 2, 4, 2)
    """
    input_size = check_size(input_size, "input_size")
    hidden_size = check_size(hidden_size, "hidden_size")
    num_heads = check_size(num_heads, "num_heads")
    if hidden_size % num_heads:
        raise ValueError(
            f"num_heads must divide hidden_size, got num_heads={num_heads} and "
            f"hidden_size={hidden_size}."
        )
    if bias_init not in BIAS_INITS:
        raise ValueError(f"bias_init must be one of {list(BIAS_INITS)}, got {bias_init!r}.")
    if not callable(recurrent_init) and recurrent_init not in RECURRENT_INITS:
        raise ValueError(
            f"recurrent_init must be one of {list(RECURRENT_INITS)} or an initialiser, "
            f"got {recurrent_init!r}."
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype, got {jnp.dtype(dtype).name}.")
    head_dim = hidden_size // num_heads
    key_x, key_r, key_b = jax.random.split(key, 3)
    bound = 1.0 / math.sqrt(hidden_size)

    w_x = (input_init or _small_init)(key_x, (input_size, 4 * hidden_size), jnp.float32)
    r_shape = (num_heads, head_dim, 4, head_dim)
    if callable(recurrent_init):
        r = recurrent_init(key_r, r_shape, jnp.float32)
    elif recurrent_init == "standard":
        r = jax.random.uniform(key_r, r_shape, jnp.float32, -bound, bound)
    else:
        r = jnp.zeros(r_shape, jnp.float32)

    b = jnp.zeros((4, num_heads, head_dim), jnp.float32)
    if bias_init == "standard":
        b = jax.random.uniform(key_b, b.shape, jnp.float32, -bound, bound)
    elif bias_init == "small_init":
        b = b.at[1].set(jnp.linspace(3.0, 6.0, head_dim, dtype=jnp.float32))
    elif bias_init == "powerlaw_blockdependent":
        b = b.at[1].set(forget_bias_powerlaw(head_dim, block_index, num_blocks))
    return jax.tree.map(lambda a: a.astype(dtype),
                        SLSTMParams(w_x=w_x, r=r, b=b.reshape(-1)))


class SLSTMSizes(NamedTuple):
    """What `check_slstm_params` learns from a layer's params."""

    input_size: int
    hidden_size: int
    num_heads: int


def check_slstm_params(params: Any, name: str = "params") -> SLSTMSizes:
    """Checks an `SLSTMParams`-like pytree; returns its sizes."""
    for field in SLSTMParams._fields:
        if not hasattr(params, field):
            raise TypeError(
                f"{name} must be SLSTMParams(w_x, r, b), got {type(params).__name__} "
                f"without a '{field}' field."
            )
    w_x = check_floating(params.w_x, f"{name}.w_x")
    r = check_floating(params.r, f"{name}.r")
    b = check_floating(params.b, f"{name}.b")
    if r.ndim != 4 or r.shape[2] != 4 or r.shape[1] != r.shape[3] or not r.size:
        raise ValueError(
            f"{name}.r must have shape (num_heads, head_dim, 4, head_dim), "
            f"got {shape_str(r.shape)}."
        )
    num_heads, head_dim = r.shape[0], r.shape[1]
    hidden_size = num_heads * head_dim
    if w_x.ndim != 2 or w_x.shape[1] != 4 * hidden_size:
        raise ValueError(
            f"{name}.w_x must have shape (input_size, {4 * hidden_size}) to match {name}.r "
            f"{shape_str(r.shape)} (hidden_size {hidden_size}), got {shape_str(w_x.shape)}."
        )
    if b.shape != (4 * hidden_size,):
        raise ValueError(
            f"{name}.b must have shape ({4 * hidden_size},) to match {name}.r "
            f"{shape_str(r.shape)} (hidden_size {hidden_size}), got {shape_str(b.shape)}."
        )
    return SLSTMSizes(w_x.shape[0], hidden_size, num_heads)


def _check_state(state: Any, batch_shape: tuple[int, ...], hidden_size: int, name: str) -> None:
    expected = tuple(batch_shape) + (hidden_size,)
    for field in SLSTMState._fields:
        if not hasattr(state, field):
            raise TypeError(
                f"{name} must be SLSTMState(h, c, n, m), got {type(state).__name__} "
                f"without a '{field}' field."
            )
        value = check_floating(getattr(state, field), f"{name}.{field}")
        if value.shape != expected:
            raise ValueError(
                f"{name}.{field} must have shape {shape_str(expected)} (batch shape "
                f"{shape_str(tuple(batch_shape))}, hidden_size {hidden_size}), "
                f"got {shape_str(value.shape)}."
            )


def zero_slstm_state_like(x_t: Array, hidden_size: int) -> SLSTMState:
    """A zero `SLSTMState` for inputs shaped like `x_t` (..., I), built from `x_t` itself (so
    it carries the input's sharding, as `jaxlstm.cell.zero_state_like`)."""
    zero = jnp.broadcast_to(jnp.zeros_like(x_t[..., :1]), x_t.shape[:-1] + (hidden_size,))
    return SLSTMState(h=zero, c=zero, n=zero, m=zero)


def slstm_cell(params: SLSTMParams, state: SLSTMState, x_t: Array) -> tuple[SLSTMState, Array]:
    """One sLSTM step: z = x_t @ W_x + h_{t-1} @ R + b, then `slstm_pointwise`.

    Any number of leading batch dimensions (including none).

    Args:
        params: `SLSTMParams`.
        state: `SLSTMState`, each field (..., H) with the batch shape of `x_t`.
        x_t: the step's input, (..., I).

    Returns:
        `(new_state, h_t)`.

    Example:
        >>> params = jaxlstm.init_slstm(jax.random.key(0), input_size=3, hidden_size=8)
        >>> state = jaxlstm.SLSTMState(*[jnp.zeros((2, 8))] * 4)
        >>> state, h = jaxlstm.slstm_cell(params, state, jnp.ones((2, 3)))
    """
    input_size, hidden_size, _ = check_slstm_params(params)
    x_t = check_floating(x_t, "x_t")
    if x_t.ndim < 1:
        raise ValueError(f"x_t must have shape (..., {input_size}), got a scalar.")
    check_features(x_t, input_size, "x_t")
    _check_state(state, x_t.shape[:-1], hidden_size, "state")
    z = (gates.input_projection(x_t, params.w_x, params.b)
         + recurrent_product(state.h, params.r))  # per head, as in `slstm`
    new_state, _ = slstm_pointwise(z, state)
    return new_state, new_state.h


def slstm(
    params: SLSTMParams,
    xs: Array,
    *,
    initial_state: SLSTMState | None = None,
    seq_lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    return_gates: bool = False,
    unroll: int | bool | None = None,
    remat_chunk: int | None = None,
    fused_backward: bool = True,
    resets: Array | None = None,
) -> tuple[Array, SLSTMState] | tuple[Array, SLSTMState, SLSTMGates]:
    """Runs an sLSTM layer over a sequence, with the conventions of `jaxlstm.lstm`.

    Equivalent to this Python loop over `slstm_cell` (batch-major, no `seq_lengths`)::

        state = initial_state
        for t in (reversed(range(T)) if reverse else range(T)):
            state, hs[..., t, :] = slstm_cell(params, state, xs[..., t, :])
        return hs, state

    It runs on the LSTM's time loop (`jaxlstm.recurrence`), with the chunked input projection
    and the fused backward. Variable length follows PyTorch's packed sequences as in
    `jaxlstm.lstm`: outputs (and gates) at padded steps are exactly zero, `final_state` is the
    state after each sequence's last valid step, and `reverse=True` reads each valid prefix
    backwards. The computation dtype is the promoted dtype of `xs` and `params`.

    Args:
        params: `SLSTMParams`.
        xs: inputs, (batch..., T, I), or (T, batch..., I) if `time_major`; any number of batch
            dimensions, including none.
        initial_state: `SLSTMState`, each field (batch..., H); zeros if None.
        seq_lengths: integer array of the batch shape: valid steps per sequence.
        reverse: run from the last step to the first.
        time_major: whether time is the leading axis of `xs` (and of the outputs).
        return_gates: also return the per-step `SLSTMGates`.
        unroll: steps per scan iteration, as in `jaxlstm.lstm`.
        remat_chunk: store only every `remat_chunk`-th state for the backward pass and
            recompute the rest, as in `jaxlstm.lstm`.
        fused_backward: the fast custom VJP (False: plain autodiff, e.g. for `jax.jvp`).
        resets: bool (batch..., T), True at the first step of each segment: each segment
            runs as if alone, from `initial_state` (as in `jaxlstm.lstm`).

    Returns:
        `(hs, final_state)`, or `(hs, final_state, gates)` if `return_gates`; `hs` has the
        layout of `xs` with H features, and each field of `gates` the shape of `hs`.

    Example:
        >>> params = jaxlstm.init_slstm(jax.random.key(0), input_size=3, hidden_size=8)
        >>> hs, final = jaxlstm.slstm(params, jnp.ones((4, 10, 3)))
        >>> hs.shape, final.n.shape
        ((4, 10, 8), (4, 8))
    """
    input_size, hidden_size, _ = check_slstm_params(params)
    xs = check_floating(xs, "xs")
    if xs.ndim < 2:
        layout = "(T, batch..., I)" if time_major else "(batch..., T, I)"
        raise ValueError(
            f"xs must have rank >= 2, {layout} with I={input_size}, got shape {xs.shape}."
        )
    check_features(xs, input_size, "xs")
    remat_chunk = check_positive_int(remat_chunk, "remat_chunk", allow_none=True)

    xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
    num_steps, batch_shape = xs_tm.shape[0], xs_tm.shape[1:-1]
    dtype = jnp.result_type(xs.dtype, *jax.tree.leaves(params))
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    xs_tm = xs_tm.astype(dtype)
    if initial_state is None:
        template = xs_tm[0] if num_steps else jnp.zeros(batch_shape + (1,), dtype)
        initial_state = zero_slstm_state_like(template, hidden_size)
    else:
        _check_state(initial_state, batch_shape, hidden_size, "initial_state")
        initial_state = SLSTMState(*(jnp.asarray(s).astype(dtype) for s in initial_state))
    if seq_lengths is not None:
        seq_lengths = check_seq_lengths(seq_lengths, batch_shape, num_steps)
    if resets is not None:
        resets = check_resets(resets, batch_shape, num_steps)

    # The loop works on one flat batch axis: (T, N, I) and (N, H).
    batch_size = math.prod(batch_shape)
    chunk, backward_chunk, segment = loop_sizes(unroll, num_steps, batch_size, hidden_size)
    flat_xs = xs_tm.reshape((num_steps, batch_size, input_size))
    flat_state = SLSTMState(*(s.reshape((batch_size, hidden_size)) for s in initial_state))
    flat_lengths = None if seq_lengths is None else seq_lengths.reshape(batch_size)
    options = LoopOptions(
        reverse=bool(reverse),
        chunk=chunk,
        return_gates=bool(return_gates),
        remat_chunk=remat_chunk,
        backward_chunk=backward_chunk,
        grad_segment=segment,
        cell=SLSTM_CELL,
    )
    loop = lstm_loop if fused_backward else lstm_loop_autodiff
    # To the loop, an sLSTM layer is an LSTM layer with a block-diagonal w_h, given as its
    # per-head blocks r (the loop's gradient for it has r's shape), and another cell.
    as_lstm = LSTMParams(w_x=params.w_x, w_h=params.r, b=params.b)
    flat_resets = loop_resets(resets, reverse, flat_lengths)
    final_state, out = loop(as_lstm, flat_xs, flat_state,
                            LoopMasks(lengths=flat_lengths, resets=flat_resets), options)

    final_state, out = from_loop_layout(final_state, out, batch_shape, time_major)
    if return_gates:
        hs, step_gates = out
        return hs, final_state, step_gates
    return out, final_state


def _family_step(params: SLSTMParams, x_t: Array, state: SLSTMState) -> tuple[Array, SLSTMState]:
    """`slstm_cell` in the protocol's order: x_t (..., I) -> (h_t (..., H), new state)."""
    state, h = slstm_cell(params, state, x_t)
    return h, state


def _family_initial_state(params: SLSTMParams, batch_shape: tuple[int, ...],
                          dtype: Any = jnp.float32) -> SLSTMState:
    """Zeros, each field (batch..., H), in `dtype` promoted with the params'."""
    dtype = jnp.result_type(dtype, *jax.tree.leaves(params))
    zero = jnp.zeros(tuple(batch_shape) + (params.hidden_size,), dtype)
    return SLSTMState(h=zero, c=zero, n=zero, m=zero)


def _family_sizes(params: Any, name: str) -> tuple[int, int]:
    """(I, H) of checked sLSTM params."""
    sizes = check_slstm_params(params, name)
    return sizes.input_size, sizes.hidden_size


FAMILY = Family(
    name="slstm", label="sLSTM", params_type=SLSTMParams, init=init_slstm,
    apply=checked_apply("slstm", slstm), step=_family_step, initial_state=_family_initial_state,
    apply_with_gates=checked_apply("slstm", slstm, with_gates=True), sizes=_family_sizes,
    init_options=frozenset({"num_heads", "dtype", "bias_init", "recurrent_init", "input_init",
                            "block_index", "num_blocks"}),
    apply_options=frozenset({"unroll", "remat_chunk", "fused_backward"}),
)
"""The sLSTM behind the family protocol (`jaxlstm.family`)."""
