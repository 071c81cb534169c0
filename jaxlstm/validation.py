"""Argument checks that run in Python, on shapes and dtypes, before XLA sees anything.

Each error names the argument, what was expected and what came. Shapes and dtypes are static
under `jit`, so these checks work there too; values are checked only where they are concrete.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.variants import CellVariant, variant_of


def shape_str(shape: tuple[int, ...]) -> str:
    """A shape as Python writes a tuple, for error messages: (3,), (2, 5)."""
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


def check_size(value: Any, name: str) -> int:
    """Returns `value` as an int if it is a positive int: TypeError for another type,
    ValueError for zero or less (a size given as 2.5 and one given as 0 are different
    mistakes)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}.")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}.")
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


class LayerSizes(NamedTuple):
    """What `check_params` learns from a layer's params."""

    input_size: int
    hidden_size: int
    output_size: int  # proj_size with a projection, else hidden_size
    variant: CellVariant


def check_params(params: Any, name: str = "params") -> LayerSizes:
    """Checks an `LSTMParams`-like pytree, its variant weights and projection."""
    for field in ("w_x", "w_h", "b"):
        if not hasattr(params, field):
            raise TypeError(
                f"{name} must be LSTMParams(w_x, w_h, b, cell, w_p), got "
                f"{type(params).__name__} without a '{field}' field."
            )
    variant = variant_of(getattr(params, "cell", None), f"{name}.cell")
    num_gates = variant.num_gates
    w_x = check_floating(params.w_x, f"{name}.w_x")
    w_h = check_floating(params.w_h, f"{name}.w_h")
    b = check_floating(params.b, f"{name}.b")
    cell = f" for cell {variant.name!r}" if variant.name != "lstm" else ""
    w_p = getattr(params, "w_p", None)
    recurrent = "proj_size" if w_p is not None else "hidden_size"
    expected_w_h = f"({recurrent}, {num_gates} * hidden_size){cell}"
    if w_h.ndim != 2 or not w_h.shape[1] or w_h.shape[1] % num_gates:
        raise ValueError(
            f"{name}.w_h must have shape {expected_w_h}, got {shape_str(w_h.shape)}."
        )
    hidden_size = w_h.shape[1] // num_gates
    gates_width = w_h.shape[1]
    output_size = hidden_size
    if w_p is not None:
        w_p = check_floating(w_p, f"{name}.w_p")
        if w_p.ndim != 2 or w_p.shape[0] != hidden_size:
            raise ValueError(
                f"{name}.w_p must have shape (hidden_size, proj_size) with hidden_size "
                f"{hidden_size} (from {name}.w_h {shape_str(w_h.shape)}), "
                f"got {shape_str(w_p.shape)}."
            )
        output_size = w_p.shape[1]
    if w_h.shape[0] != output_size:
        raise ValueError(
            f"{name}.w_h must have shape {expected_w_h}, got {shape_str(w_h.shape)}."
        )
    if w_x.ndim != 2 or w_x.shape[1] != gates_width:
        raise ValueError(
            f"{name}.w_x must have shape (input_size, {gates_width}) to match "
            f"{name}.w_h {shape_str(w_h.shape)}, got {shape_str(w_x.shape)}."
        )
    if b.shape != (gates_width,):
        raise ValueError(
            f"{name}.b must have shape ({gates_width},) to match {name}.w_h "
            f"{shape_str(w_h.shape)}, got {shape_str(b.shape)}."
        )
    for field, shape in variant.weight_shapes(hidden_size).items():
        value = check_floating(getattr(params.cell, field), f"{name}.cell.{field}")
        if value.shape != shape:
            raise ValueError(
                f"{name}.cell.{field} must have shape {shape_str(shape)} (hidden_size "
                f"{hidden_size}), got {shape_str(value.shape)}."
            )
    return LayerSizes(w_x.shape[0], hidden_size, output_size, variant)


def check_features(x: jax.Array, input_size: int, name: str) -> None:
    """Raises ValueError unless the last axis of `x` has `input_size` features."""
    if x.shape[-1] != input_size:
        raise ValueError(
            f"{name} must have {input_size} features on its last axis (params.w_x is "
            f"({input_size}, ...)), got shape {shape_str(x.shape)}."
        )


def check_state(state: Any, batch_shape: tuple[int, ...], hidden_size: int, name: str,
                output_size: int | None = None) -> None:
    """Checks an `LSTMState`-like pytree against the batch shape and sizes (h: output_size,
    which defaults to hidden_size; c: hidden_size)."""
    sizes = {"h": output_size or hidden_size, "c": hidden_size}
    for field in ("h", "c"):
        if not hasattr(state, field):
            raise TypeError(
                f"{name} must be LSTMState(h, c), got {type(state).__name__} "
                f"without a '{field}' field."
            )
        expected = tuple(batch_shape) + (sizes[field],)
        value = check_floating(getattr(state, field), f"{name}.{field}")
        if value.shape != expected:
            size_name = "proj_size" if sizes[field] != hidden_size else "hidden_size"
            raise ValueError(
                f"{name}.{field} must have shape {shape_str(expected)} (batch shape "
                f"{shape_str(tuple(batch_shape))}, {size_name} {sizes[field]}), "
                f"got {shape_str(value.shape)}."
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
            f"seq_lengths must have the batch shape of xs {shape_str(tuple(batch_shape))}, "
            f"got {shape_str(seq_lengths.shape)}."
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


def check_resets(resets: Any, batch_shape: tuple[int, ...], num_steps: int) -> jax.Array:
    """Checks `resets`: a boolean array (batch..., T), True at the first step of each segment.
    """
    resets = _as_array(resets, "resets")
    if resets.dtype != jnp.bool_:
        raise TypeError(f"resets must be a boolean array, got dtype "
                        f"{jnp.dtype(resets.dtype).name}.")
    expected = tuple(batch_shape) + (num_steps,)
    if resets.shape != expected:
        raise ValueError(f"resets must have shape (batch..., T) = {shape_str(expected)}, got "
                         f"{shape_str(resets.shape)}.")
    return resets


def check_rate(value: Any, name: str) -> float:
    """Returns a probability in [0, 1) as a float; else ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__}.")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}.")
    return float(value)


def is_known(size: Any) -> bool:
    """Whether an array dimension is a number when the program is built, not a symbol that
    `jax.export` (or a converter such as jax2onnx) leaves to run time."""
    return isinstance(size, int)
