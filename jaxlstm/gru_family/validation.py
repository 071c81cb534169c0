"""Argument checks for the GRU, in Python before XLA runs: each error names the argument, what
was expected and what came (as `jaxlstm.validation` for the LSTM)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from jaxlstm.gru_family.gates import NUM_GATES
from jaxlstm.validation import check_features, check_floating, shape_str

Array = jax.Array


class GRUSizes(NamedTuple):
    """What `check_gru_params` learns from a layer's params."""

    input_size: int
    hidden_size: int


def check_gru_params(params: Any, name: str = "params") -> GRUSizes:
    """Checks a `GRUParams`-like pytree (fields, float dtypes, shapes that agree); returns its
    sizes. TypeError for a missing field or a non-float array, ValueError for a shape."""
    for field in ("w_x", "w_h", "b", "b_hn"):
        if not hasattr(params, field):
            raise TypeError(f"{name} must be GRUParams(w_x, w_h, b, b_hn), got "
                            f"{type(params).__name__} without a '{field}' field.")
    w_x = check_floating(params.w_x, f"{name}.w_x")
    w_h = check_floating(params.w_h, f"{name}.w_h")
    b = check_floating(params.b, f"{name}.b")
    b_hn = check_floating(params.b_hn, f"{name}.b_hn")
    if w_h.ndim != 2 or not w_h.shape[0] or w_h.shape[1] != NUM_GATES * w_h.shape[0]:
        raise ValueError(f"{name}.w_h must have shape (hidden_size, 3 * hidden_size), gate "
                         f"blocks r, z, n, got {shape_str(w_h.shape)}.")
    hidden_size = w_h.shape[0]
    width = NUM_GATES * hidden_size
    if w_x.ndim != 2 or w_x.shape[1] != width:
        raise ValueError(f"{name}.w_x must have shape (input_size, {width}) to match {name}.w_h "
                         f"{shape_str(w_h.shape)}, got {shape_str(w_x.shape)}.")
    if b.shape != (width,):
        raise ValueError(f"{name}.b must have shape ({width},) to match {name}.w_h "
                         f"{shape_str(w_h.shape)}, got {shape_str(b.shape)}.")
    if b_hn.shape != (hidden_size,):
        raise ValueError(f"{name}.b_hn must have shape ({hidden_size},) (hidden_size "
                         f"{hidden_size}), got {shape_str(b_hn.shape)}.")
    return GRUSizes(w_x.shape[0], hidden_size)


def check_hidden(h: Any, batch_shape: tuple[int, ...], hidden_size: int, name: str) -> Array:
    """Checks a GRU state, an array (batch..., H); returns it as an array."""
    h = check_floating(h, name)
    expected = tuple(batch_shape) + (hidden_size,)
    if h.shape != expected:
        raise ValueError(f"{name} must have shape {shape_str(expected)} (batch shape "
                         f"{shape_str(tuple(batch_shape))}, hidden_size {hidden_size}), "
                         f"got {shape_str(h.shape)}.")
    return h


def check_step_input(x_t: Any, input_size: int) -> Array:
    """Checks one step's input x_t (..., I); returns it as an array."""
    x_t = check_floating(x_t, "x_t")
    if x_t.ndim < 1:
        raise ValueError(f"x_t must have shape (..., {input_size}), got a scalar.")
    check_features(x_t, input_size, "x_t")
    return x_t
