"""The `LSTM` modules' carry in Flax's format and back: code moving from `nn.RNN(cell)` to
`jaxlstm.flax`'s `LSTM` keeps its carries.

    jaxlstm (lstm_stack's):  (Directions(LSTMState(h, c), backward or None), ...)  a layer each
    Flax:                    (c, h)                           nn.RNN of an LSTM cell
                             ((c, h), (c, h))                 nn.Bidirectional (forward, backward)
                             (layer_0's, layer_1's, ...)      more than one layer

One layer's carry is that layer's alone, as `nn.RNN` and `nn.Bidirectional` return it.
"""

from __future__ import annotations

from typing import Any

from jaxlstm.cell import LSTMState
from jaxlstm.stack import Directions

CARRY_FORMATS = ("jaxlstm", "flax")


def check_carry_format(carry_format: Any) -> None:
    if carry_format not in CARRY_FORMATS:
        raise ValueError(f"carry_format must be one of {list(CARRY_FORMATS)}, got "
                         f"{carry_format!r}.")


def to_flax_carry(carry: Any) -> Any:
    """`lstm_stack`'s carry (a tuple of `Directions` of `LSTMState`) in Flax's format."""
    if not isinstance(carry, (tuple, list)) or not all(
        isinstance(layer, Directions) for layer in carry
    ):
        raise TypeError("carry must be a tuple of Directions of LSTMState (one per layer), got "
                        f"{type(carry).__name__}.")
    layers = []
    for layer in carry:
        forward = (layer.forward.c, layer.forward.h)
        if layer.backward is None:
            layers.append(forward)
        else:
            layers.append((forward, (layer.backward.c, layer.backward.h)))
    return layers[0] if len(layers) == 1 else tuple(layers)


def _state(pair: Any, where: str) -> LSTMState:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{where} must be a (c, h) pair, got {type(pair).__name__}.")
    c, h = pair
    return LSTMState(h=h, c=c)


def from_flax_carry(carry: Any, *, num_layers: int = 1, bidirectional: bool = False) -> tuple[
        Directions, ...]:
    """A Flax-format carry (see the module docstring) as `lstm_stack`'s.

    Args:
        carry: `(c, h)`, `((c, h), (c, h))` or a tuple of those, one per layer.
        num_layers, bidirectional: the stack's shape (Flax's format alone cannot tell two
            layers from two directions).
    """
    layers = (carry,) if num_layers == 1 else tuple(carry)
    if len(layers) != num_layers:
        raise ValueError(f"carry must hold {num_layers} layers' carries, got {len(layers)}.")
    stack = []
    for n, layer in enumerate(layers):
        where = f"carry of layer {n}"
        if bidirectional:
            if not isinstance(layer, (tuple, list)) or len(layer) != 2:
                raise ValueError(f"{where} must be ((c, h), (c, h)), forward and backward.")
            stack.append(Directions(_state(layer[0], f"{where}, forward"),
                                    _state(layer[1], f"{where}, backward")))
        else:
            stack.append(Directions(_state(layer, where), None))
    return tuple(stack)
