"""What minGRU and minLSTM share: params checks, init, one step and the sequence driver.

A min cell is fully described by its number of gate blocks and its two coefficient functions
(`jaxlstm.minrnn.min_gates`): pre-activations -> (a_t, b_t) and -> (log a_t, log b_t). The
driver below validates the arguments, computes the pre-activations of all steps as one matmul,
turns them into coefficients and runs the recurrence of `jaxlstm.minrnn.log_scan`:

        gates -> coefficients -> linear recurrence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm.family import Family, checked_apply, form
from jaxlstm.minrnn import log_scan
from jaxlstm.minrnn.min_gates import input_projection
from jaxlstm.validation import (
    check_features,
    check_floating,
    check_resets,
    check_seq_lengths,
    check_size,
    is_known,
    shape_str,
)

Array = jax.Array
Coefficients = Callable[[Array], tuple[Array, Array]]

MODES = ("parallel", "sequential")


class MinCell(NamedTuple):
    """A min cell, for the shared code: its params type, gate blocks and coefficients."""

    name: str
    params_type: type
    gate_names: str  # the blocks of w_x, for messages, e.g. "f, i, h~"
    coefficients: Coefficients
    log_coefficients: Coefficients

    @property
    def num_gates(self) -> int:
        return len(self.gate_names.split(", "))


class MinSizes(NamedTuple):
    """What `check_min_params` learns from a layer's params."""

    input_size: int
    hidden_size: int


def check_min_params(params: Any, cell: MinCell, name: str = "params") -> MinSizes:
    """Checks a `MinLSTMParams`/`MinGRUParams`-like pytree for `cell`; returns its sizes."""
    type_name = cell.params_type.__name__
    for field in ("w_x", "b"):
        if not hasattr(params, field):
            raise TypeError(
                f"{name} must be {type_name}(w_x, b), got {type(params).__name__} "
                f"without a '{field}' field."
            )
    w_x = check_floating(params.w_x, f"{name}.w_x")
    b = check_floating(params.b, f"{name}.b")
    g = cell.num_gates
    if w_x.ndim != 2 or not w_x.shape[1] or w_x.shape[1] % g:
        raise ValueError(
            f"{name}.w_x must have shape (input_size, {g} * hidden_size) for {cell.name} "
            f"(blocks {cell.gate_names}), got {shape_str(w_x.shape)}."
        )
    if b.shape != (w_x.shape[1],):
        raise ValueError(
            f"{name}.b must have shape ({w_x.shape[1]},) to match {name}.w_x "
            f"{shape_str(w_x.shape)}, got {shape_str(b.shape)}."
        )
    return MinSizes(w_x.shape[0], w_x.shape[1] // g)


def init_min_params(key: Array, input_size: int, hidden_size: int, cell: MinCell,
                    dtype: jnp.dtype) -> Any:
    """w_x and b uniform in [-1/sqrt(I), 1/sqrt(I)] (PyTorch's `nn.Linear`), cast to `dtype`."""
    input_size = check_size(input_size, "input_size")
    hidden_size = check_size(hidden_size, "hidden_size")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype, got {jnp.dtype(dtype).name}.")
    width = cell.num_gates * hidden_size
    bound = 1.0 / math.sqrt(input_size)
    key_w, key_b = jax.random.split(key)
    w_x = jax.random.uniform(key_w, (input_size, width), jnp.float32, -bound, bound)
    b = jax.random.uniform(key_b, (width,), jnp.float32, -bound, bound)
    return cell.params_type(w_x=w_x.astype(dtype), b=b.astype(dtype))


def _check_h(h: Any, batch_shape: tuple[int, ...], hidden_size: int, name: str) -> Array:
    h = check_floating(h, name)
    expected = tuple(batch_shape) + (hidden_size,)
    if h.shape != expected:
        raise ValueError(
            f"{name} must have shape {shape_str(expected)} (batch shape "
            f"{shape_str(tuple(batch_shape))}, hidden_size {hidden_size}), "
            f"got {shape_str(h.shape)}."
        )
    return h


def _dtypes(x: Array, params: Any) -> tuple[jnp.dtype, jnp.dtype]:
    """(computation dtype, recurrence dtype): the promoted dtype of the inputs and params, as
    `jaxlstm.lstm`, and at least float32 for the gates and the recurrence."""
    dtype = jnp.result_type(x.dtype, *jax.tree.leaves(params))
    return dtype, jnp.promote_types(dtype, jnp.float32)


def min_step(params: Any, h: Array, x_t: Array, cell: MinCell) -> Array:
    """One step h_t = a_t * h_{t-1} + b_t, (a_t, b_t) from x_t by `cell.coefficients`."""
    input_size, hidden_size = check_min_params(params, cell)
    x_t = check_floating(x_t, "x_t")
    if x_t.ndim < 1:
        raise ValueError(f"x_t must have shape (..., {input_size}), got a scalar.")
    check_features(x_t, input_size, "x_t")
    h = _check_h(h, x_t.shape[:-1], hidden_size, "h")
    dtype, work = _dtypes(x_t, params)
    z = input_projection(x_t.astype(dtype), params.w_x.astype(dtype), params.b.astype(dtype))
    a_t, b_t = cell.coefficients(z.astype(work))
    return log_scan.recurrence_step(a_t, b_t, h.astype(work)).astype(dtype)


def min_layer(
    params: Any,
    xs: Array,
    cell: MinCell,
    *,
    initial_state: Array | None,
    seq_lengths: Array | None,
    reverse: bool,
    time_major: bool,
    mode: str | None,
    resets: Array | None = None,
) -> tuple[Array, Array]:
    """A min cell over a sequence; the arguments and results of `jaxlstm.min_lstm`."""
    input_size, hidden_size = check_min_params(params, cell)
    xs = check_floating(xs, "xs")
    if xs.ndim < 2:
        layout = "(T, batch..., I)" if time_major else "(batch..., T, I)"
        raise ValueError(
            f"xs must have rank >= 2, {layout} with I={input_size}, got shape {xs.shape}."
        )
    check_features(xs, input_size, "xs")
    mode = form(cell.name, mode)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}.")

    xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
    num_steps, batch_shape = xs_tm.shape[0], xs_tm.shape[1:-1]
    dtype, work = _dtypes(xs, params)
    if initial_state is None:
        h0 = jnp.zeros(batch_shape + (hidden_size,), work)
    else:
        h0 = _check_h(initial_state, batch_shape, hidden_size, "initial_state").astype(work)
    valid = None
    if seq_lengths is not None:
        lengths = check_seq_lengths(seq_lengths, batch_shape, num_steps)
        t = jnp.arange(num_steps).reshape((num_steps,) + (1,) * len(batch_shape))
        valid = (t < lengths[None])[..., None]  # (T, batch..., 1)
    starts = None
    if resets is not None:
        resets = jnp.moveaxis(check_resets(resets, batch_shape, num_steps), -1, 0)[..., None]
        starts = log_scan.reset_steps(resets, valid, bool(reverse))

    z = input_projection(xs_tm.astype(dtype), params.w_x.astype(dtype),
                         params.b.astype(dtype)).astype(work)
    # jax.lax.associative_scan needs a known T: under jax.export with a symbolic length (an
    # exported model's any length) the parallel form runs as the sequential one, its equal.
    if mode == "parallel" and is_known(num_steps):
        log_a, log_b = log_scan.mask_log_coefficients(*cell.log_coefficients(z), valid)
        hs, h_last = log_scan.log_linear_recurrence(log_a, log_b, h0, reverse=bool(reverse),
                                                    starts=starts)
    else:
        a, b = log_scan.mask_coefficients(*cell.coefficients(z), valid)
        a, b = log_scan.reset_coefficients(a, b, h0, starts)
        hs, h_last = log_scan.linear_recurrence(a, b, h0, reverse=bool(reverse))
    if valid is not None:
        hs = jnp.where(valid, hs, 0.0)
    hs = hs.astype(dtype)
    return (hs if time_major else jnp.moveaxis(hs, 0, -2)), h_last.astype(dtype)


def min_family(name: str, label: str, params_type: type, init: Callable[..., Any],
               run: Callable[..., tuple[Array, Array]],
               cell_step: Callable[[Any, Array, Array], Array], cell: MinCell) -> Family:
    """A min cell as a `jaxlstm.family.Family`: its state is h alone, (batch..., H), and
    `step` returns it twice ((y_t, state) with y_t = h_t)."""

    def step(params: Any, x_t: Array, h: Array) -> tuple[Array, Array]:
        """x_t (..., I), h (..., H) -> (h_t, h_t)."""
        h = cell_step(params, h, x_t)
        return h, h

    def initial_state(params: Any, batch_shape: tuple[int, ...],
                      dtype: Any = jnp.float32) -> Array:
        """h = 0, (batch..., H), in `dtype` promoted with the params'."""
        dtype = jnp.result_type(dtype, *jax.tree.leaves(params))
        return jnp.zeros(tuple(batch_shape) + (params.hidden_size,), dtype)

    def sizes(params: Any, where: str) -> tuple[int, int]:
        """(I, H) of checked params."""
        input_size, hidden_size = check_min_params(params, cell, where)
        return input_size, hidden_size

    return Family(name=name, label=label, params_type=params_type, init=init,
                  apply=checked_apply(name, run), step=step, initial_state=initial_state,
                  init_options=frozenset({"dtype"}), modes=MODES, sizes=sizes,
                  backend_modes=BACKEND_MODES, activation_floats=_activation_floats)


BACKEND_MODES = {"cpu": "sequential"}
"""Where the parallel form (`MODES[0]`) is not the fastest: on a CPU the associative scan's
O(log T) depth does not pay, 6-15x slower per call than the sequential scan there
(`jaxlstm.minrnn.log_scan`)."""


def _activation_floats(width: int, steps: int, mode: str | None = None, **_: Any) -> float:
    """Floats the backward keeps per step and row, roughly: the gates' coefficients and the
    scan (8 vectors of H), about doubled by the parallel scan's levels."""
    return 8.0 * width * (2 if mode in (None, "parallel") else 1)
