"""Argument checks that run in Python, on shapes and dtypes, before XLA sees anything.

Each error names the argument, what was expected and what came. Shapes and dtypes are static
under `jit`, so these checks work there too; values are checked only where they are concrete.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.gates import NUM_GATES


def _shape_str(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _as_array(value: Any, name: str) -> jax.Array:
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        try:
            value = jnp.asarray(value)
        except TypeError as err:
            raise TypeError(f"{name} must be an array, got {type(value).__name__}.") from err
    return value


def check_positive_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    """Returns `value` if it is a positive int (or None, if allowed); else ValueError."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        expected = "None or a positive int" if allow_none else "a positive int"
        raise ValueError(f"{name} must be {expected}, got {value!r}.")
    return int(value)


def check_floating(value: Any, name: str) -> jax.Array:
    """Returns `value` as an array; raises TypeError unless its dtype is floating."""
    value = _as_array(value, name)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a floating dtype (float32, bfloat16, float16, float64), "
            f"got {jnp.dtype(value.dtype).name}."
        )
    return value


def check_params(params: Any, name: str = "params") -> tuple[int, int]:
    """Checks an `LSTMParams`-like pytree; returns (input_size, hidden_size)."""
    for field in ("w_x", "w_h", "b"):
        if not hasattr(params, field):
            raise TypeError(
                f"{name} must be LSTMParams(w_x, w_h, b), got {type(params).__name__} "
                f"without a '{field}' field."
            )
    w_x = check_floating(params.w_x, f"{name}.w_x")
    w_h = check_floating(params.w_h, f"{name}.w_h")
    b = check_floating(params.b, f"{name}.b")
    if w_h.ndim != 2 or w_h.shape[1] != NUM_GATES * w_h.shape[0]:
        raise ValueError(
            f"{name}.w_h must have shape (hidden_size, 4 * hidden_size), "
            f"got {_shape_str(w_h.shape)}."
        )
    hidden_size = w_h.shape[0]
    if w_x.ndim != 2 or w_x.shape[1] != NUM_GATES * hidden_size:
        raise ValueError(
            f"{name}.w_x must have shape (input_size, {NUM_GATES * hidden_size}) to match "
            f"{name}.w_h {_shape_str(w_h.shape)}, got {_shape_str(w_x.shape)}."
        )
    if b.shape != (NUM_GATES * hidden_size,):
        raise ValueError(
            f"{name}.b must have shape ({NUM_GATES * hidden_size},) to match "
            f"{name}.w_h {_shape_str(w_h.shape)}, got {_shape_str(b.shape)}."
        )
    return w_x.shape[0], hidden_size


def check_features(x: jax.Array, input_size: int, name: str) -> None:
    """Raises ValueError unless the last axis of `x` has `input_size` features."""
    if x.shape[-1] != input_size:
        raise ValueError(
            f"{name} must have {input_size} features on its last axis (params.w_x is "
            f"({input_size}, ...)), got shape {_shape_str(x.shape)}."
        )


def check_state(state: Any, batch_shape: tuple[int, ...], hidden_size: int, name: str) -> None:
    """Checks an `LSTMState`-like pytree against the batch shape and hidden size."""
    expected = tuple(batch_shape) + (hidden_size,)
    for field in ("h", "c"):
        if not hasattr(state, field):
            raise TypeError(
                f"{name} must be LSTMState(h, c), got {type(state).__name__} "
                f"without a '{field}' field."
            )
        value = check_floating(getattr(state, field), f"{name}.{field}")
        if value.shape != expected:
            raise ValueError(
                f"{name}.{field} must have shape {_shape_str(expected)} (batch shape "
                f"{_shape_str(tuple(batch_shape))}, hidden_size {hidden_size}), "
                f"got {_shape_str(value.shape)}."
            )


def check_seq_lengths(
    seq_lengths: Any, batch_shape: tuple[int, ...], num_steps: int
) -> jax.Array:
    """Checks `seq_lengths` (integer array of the batch shape, values in [0, T]).

    Values are checked only when concrete: under `jit` they cannot be, and the sequence code
    clamps them to [0, T] instead (see `jaxlstm.lstm`).
    """
    seq_lengths = _as_array(seq_lengths, "seq_lengths")
    if seq_lengths.dtype == jnp.bool_ or not jnp.issubdtype(seq_lengths.dtype, jnp.integer):
        raise TypeError(
            f"seq_lengths must have an integer dtype, got {jnp.dtype(seq_lengths.dtype).name}."
        )
    if seq_lengths.shape != tuple(batch_shape):
        raise ValueError(
            f"seq_lengths must have the batch shape of xs {_shape_str(tuple(batch_shape))}, "
            f"got {_shape_str(seq_lengths.shape)}."
        )
    try:
        values = np.asarray(seq_lengths)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return seq_lengths
    if values.size and (values.min() < 0 or values.max() > num_steps):
        raise ValueError(
            f"seq_lengths must lie in [0, {num_steps}] (the number of steps in xs), "
            f"got values from {values.min()} to {values.max()}."
        )
    return seq_lengths
