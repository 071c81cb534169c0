"""What makes the linen and NNX cells drop-ins for Flax's: its step semantics and its init.

Flax's `LSTMCell` / `OptimizedLSTMCell` step, as both `jaxlstm.flax` cells compute it:

    x, W_x       = promote_dtype(x, W_x, dtype)         ints promote to the params' float
    h, W_h, b    = promote_dtype(h, W_h, b, dtype)
    z            = x @ W_x + h @ W_h + b                (..., 4H), gate order i, f, g, o
    i, f, o      = gate_fn(z_i), gate_fn(z_f), gate_fn(z_o)        default sigmoid
    g            = activation_fn(z_g)                              default tanh
    c'           = f * c + i * g                        in the carry's dtype
    h'           = o * activation_fn(c')                the step's output *is* h'

With the default sigmoid and tanh this is `jaxlstm.lstm_cell` (any cell variant, any
projection): the same gate functions the time loops use. Other `gate_fn` / `activation_fn`
(which Flax accepts and jaxlstm's fused loops do not) compose `jaxlstm.gates`' affine map with
the given functions: the standard cell only.

Flax's initialisation (`flax_compatible`): each gate's kernel and bias is its own
`kernel_init` / `recurrent_kernel_init` / `bias_init` call with the key Flax would use for it,
so the same seed gives the same numbers as Flax's cell, and the forget bias is 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from jaxlstm import gates
from jaxlstm.cell import LSTMState
from jaxlstm.gates import NUM_GATES
from jaxlstm.params import Initializer, LSTMParams
from jaxlstm.step import lstm_cell

Array = jax.Array
PromoteDtype = Callable[..., tuple[Any, ...]]

FLAX_CELLS = ("LSTMCell", "OptimizedLSTMCell")
"""The Flax cells whose initialisation `flax_compatible` reproduces."""

ORTHOGONAL = jax.nn.initializers.orthogonal()
"""The default recurrent kernel initialiser (Flax's)."""

LECUN_NORMAL = jax.nn.initializers.lecun_normal()
"""The default input kernel initialiser (Flax's)."""

ZEROS = jax.nn.initializers.zeros
"""The default bias initialiser (Flax's)."""


def flax_cell_name(flax_compatible: Any, default: str = "LSTMCell") -> str | None:
    """None for jaxlstm's initialisation, else the Flax cell to initialise as (`default` for
    True: the Flax cell of the class's own name)."""
    if flax_compatible is False or flax_compatible is None:
        return None
    if flax_compatible is True:
        return default
    if flax_compatible in FLAX_CELLS:
        return flax_compatible
    raise ValueError(
        f"flax_compatible must be False, True, 'LSTMCell' or 'OptimizedLSTMCell', got "
        f"{flax_compatible!r}."
    )


def check_flax_init(flax_cell: str | None, cell: str, proj_size: int | None) -> None:
    """Flax's cells are the standard LSTM without a projection: nothing else inits like them."""
    if flax_cell is None:
        return
    if cell != "lstm" or proj_size is not None:
        raise ValueError(
            f"flax_compatible initialises as Flax's {flax_cell}, the standard cell without a "
            f"projection; got cell={cell!r}, proj_size={proj_size!r}."
        )


def default_forget_bias(forget_bias: float | None, flax_cell: str | None) -> float:
    """jaxlstm's default forget bias is 1.0 (Gers et al. 2000); Flax's is 0."""
    if forget_bias is not None:
        return float(forget_bias)
    return 0.0 if flax_cell is not None else 1.0


def _call_init(init: Initializer, key: Array, shape: tuple[int, ...], dtype: Any) -> Array:
    """`init(key, shape, dtype)` as Flax calls it; the default orthogonal runs in float32 and
    is cast (XLA:CPU has no bfloat16 QR; NNX's `LSTMCell` does the same)."""
    if init is ORTHOGONAL and jnp.dtype(dtype) not in (jnp.float32, jnp.float64):
        return init(key, shape, jnp.float32).astype(dtype)
    return init(key, shape, dtype)


def flax_init(
    keys: Iterator[Array],
    input_size: int,
    hidden_size: int,
    *,
    fused: bool,
    kernel_init: Initializer,
    recurrent_kernel_init: Initializer,
    bias_init: Initializer,
    param_dtype: Any,
    forget_bias: float = 0.0,
) -> LSTMParams:
    """Params initialised exactly as a Flax LSTM cell initialises its own.

    Args:
        keys: the keys in the order Flax's cell draws them. Per gate (`fused=False`: linen's
            two cells, NNX's `LSTMCell`): the input kernels i, f, g, o, then the recurrent
            kernel and bias of i, f, g, o in turn. Fused (NNX's `OptimizedLSTMCell`): the
            (I, 4H) input kernel, the (H, 4H) recurrent kernel, the (4H,) bias.
        input_size, hidden_size: I and H.
        fused: whether each of W_x, W_h and b is one initialiser call over all four gates.
        kernel_init, recurrent_kernel_init, bias_init, param_dtype: as Flax's cell takes them.
        forget_bias: added to the forget gate's bias (Flax: none).

    Returns:
        `LSTMParams` (w_x (I, 4H), w_h (H, 4H), b (4H,)) in `param_dtype`.
    """
    wide = NUM_GATES * hidden_size
    if fused:
        w_x = _call_init(kernel_init, next(keys), (input_size, wide), param_dtype)
        w_h = _call_init(recurrent_kernel_init, next(keys), (hidden_size, wide), param_dtype)
        b = _call_init(bias_init, next(keys), (wide,), param_dtype)
    else:
        w_x = jnp.concatenate([
            _call_init(kernel_init, next(keys), (input_size, hidden_size), param_dtype)
            for _ in range(NUM_GATES)
        ], axis=-1)
        blocks = [
            (_call_init(recurrent_kernel_init, next(keys), (hidden_size, hidden_size),
                        param_dtype),
             _call_init(bias_init, next(keys), (hidden_size,), param_dtype))
            for _ in range(NUM_GATES)
        ]
        w_h = jnp.concatenate([kernel for kernel, _ in blocks], axis=-1)
        b = jnp.concatenate([bias for _, bias in blocks], axis=-1)
    if forget_bias:
        b = b.at[hidden_size:2 * hidden_size].add(forget_bias)
    return LSTMParams(w_x=w_x, w_h=w_h, b=b)


def step(
    params: LSTMParams,
    carry: tuple[Array, Array],
    inputs: Array,
    *,
    dtype: Any,
    gate_fn: Callable[[Array], Array],
    activation_fn: Callable[[Array], Array],
    promote_dtype: PromoteDtype,
) -> tuple[tuple[Array, Array], Array]:
    """One Flax-semantics step: `((c, h), x) -> ((c', h'), h')` (see the module docstring).

    The new carry keeps the dtypes of the carry passed in, so it threads through a scan
    whatever `dtype` computes the gates; the output is the new h itself.
    """
    c, h = carry
    inputs, w_x = promote_dtype((inputs, params.w_x), dtype=dtype)
    h_in, w_h, b = promote_dtype((h, params.w_h, params.b), dtype=dtype)
    compute = jnp.result_type(inputs, h_in)
    extras = jax.tree.map(lambda a: a.astype(compute), (params.cell, params.w_p))
    params = LSTMParams(w_x, w_h, b, *extras)
    if gate_fn is jax.nn.sigmoid and activation_fn is jnp.tanh:
        state, _ = lstm_cell(params, LSTMState(h=h_in, c=c), inputs)
        new_c, new_h = state.c, state.h
    else:
        if params.cell is not None or params.w_p is not None:
            raise ValueError(
                "gate_fn and activation_fn other than sigmoid and tanh work with the standard "
                "cell without a projection only (cell='lstm', proj_size=None)."
            )
        z = gates.input_projection(inputs, w_x, b) + gates.recurrent_projection(h_in, w_h)
        z_i, z_f, z_g, z_o = gates.split_gates(z)
        new_c = gates.cell_update(gate_fn(z_f), c, gate_fn(z_i), activation_fn(z_g))
        new_h = gate_fn(z_o) * activation_fn(new_c)
    new_c, new_h = new_c.astype(c.dtype), new_h.astype(h.dtype)
    return (new_c, new_h), new_h
