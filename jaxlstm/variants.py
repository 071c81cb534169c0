"""Cell variants: the same gate functions composed into other well-known cells.

Every variant keeps the affine map z_x = x_t @ W_x, z_h = r_t @ W_h (r_t = h_{t-1}) apart from an
elementwise step, so the sequence code runs them all with the same chunked forward and the same
hand-written backward. A variant is selected by the type of `LSTMParams.cell`, its own weights:

    cell weights               name                equations (besides the standard ones)
    None                       "lstm"              the standard cell (`jaxlstm.gates`)
    PeepholeWeights            "peephole"          i, f see c_{t-1}; o sees c_t
    CoupledGates()             "cifg"              i_t = 1 - f_t; gate blocks f, g, o (3H)
    LayerNormWeights           "layer_norm"        z = LN(z_x) + LN(z_h) + b; h = o tanh(LN(c_t))
    RetainedReadoutWeights     "retained_readout"  h = tanh(W_u (f c_{t-1}) + b_u) * sigmoid(z_v)

Any variant can also project its output (LSTMP, `LSTMParams.w_p`); that happens in the sequence
code, after the variant's step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm import gates
from jaxlstm.cell import LSTMGates, LSTMState, lstm_pointwise

Array = jax.Array


class PeepholeWeights(NamedTuple):
    """Diagonal peephole weights (Gers & Schmidhuber 2000), each (H,).

        i_t = sigmoid(z_i + w_ci * c_{t-1})
        f_t = sigmoid(z_f + w_cf * c_{t-1})
        c_t = f_t * c_{t-1} + i_t * tanh(z_g)
        o_t = sigmoid(z_o + w_co * c_t)          the output gate sees the *new* cell state
        h_t = o_t * tanh(c_t)
    """

    w_ci: Array
    w_cf: Array
    w_co: Array


class CoupledGates(NamedTuple):
    """Marks the coupled input-forget gate cell (CIFG); it has no weights of its own.

        f_t = sigmoid(z_f),  i_t = 1 - f_t,  g_t = tanh(z_g),  o_t = sigmoid(z_o)
        c_t = f_t * c_{t-1} + (1 - f_t) * g_t,  h_t = o_t * tanh(c_t)

    W_x, W_h and b have three gate blocks, in order f, g, o.
    """


class LayerNormWeights(NamedTuple):
    """Layer-normalised LSTM (Ba et al. 2016).

        z_t = LN(x_t @ W_x) * gain_x + LN(h_{t-1} @ W_h) * gain_h + b     (LN over all 4H)
        i, f, g, o and c_t as in the standard cell (c_t itself is carried un-normalised)
        h_t = o_t * tanh(LN(c_t) * gain_c + bias_c)                        (LN over H)

    Attributes:
        gain_x, gain_h: (4H,). gain_c, bias_c: (H,). The pre-activations' shifts are all in b.
    """

    gain_x: Array
    gain_h: Array
    gain_c: Array
    bias_c: Array


class RetainedReadoutWeights(NamedTuple):
    """Seed 003's learn / forget / remember / use cell: the output reads the retained memory.

        i_t, f_t, g_t, v_t = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_v)
        learn    = i_t * g_t
        retained = f_t * c_{t-1}                      the forget gate's output
        c_t      = learn + retained                   the remember gate
        h_t      = tanh(retained @ W_u + b_u) * v_t   the use gate

    Unlike the standard cell, h_t does not depend on what was just written: the use gate reads
    the part of the old memory that the forget gate kept.

    Attributes:
        w_u: (H, H). b_u: (H,).
    """

    w_u: Array
    b_u: Array


class RetainedReadoutGates(NamedTuple):
    """Per-step activations of the retained-readout cell, each (..., H).

    Attributes:
        i: learn gate's sigmoid. f: forget gate. g: new information tanh(z_g).
        u: tanh(W_u (f * c_{t-1}) + b_u). v: the use gate's sigmoid. c: cell state c_t.
    """

    i: Array
    f: Array
    g: Array
    u: Array
    v: Array
    c: Array


Pointwise = Callable[[Any, Any, Any], tuple[Any, Any]]


@dataclasses.dataclass(frozen=True)
class CellVariant:
    """What the sequence code needs to know about a variant.

    Attributes:
        name: the `cell=` name.
        weights_type: the type of `LSTMParams.cell` (None for the standard cell).
        num_gates: gate blocks in W_x, W_h and b.
        forget_index: the forget gate's block, where `forget_bias` goes.
        additive: whether the pre-activations enter only as z = z_x + z_h + b. Then the step
            receives that sum and the backward needs one gradient for z_x, z_h and b alike.
            Otherwise (layer norm) it receives `(z_x, z_h)` without the bias and gets `b` with
            its weights.
        pointwise: `pointwise(weights, z, state) -> (new_state, gates)`, the elementwise step
            from the previous state (an `LSTMState`, or another cell's state with fields h
            and c) to the new one; `gates` is a record with a field c.
        init_weights: `init_weights(key, hidden_size) -> weights` in float32.
        weight_shapes: `weight_shapes(hidden_size) -> {field: shape}`.
    """

    name: str
    weights_type: type | None
    num_gates: int
    forget_index: int
    additive: bool
    pointwise: Pointwise = dataclasses.field(repr=False)
    init_weights: Callable[[Array, int], Any] = dataclasses.field(repr=False)
    weight_shapes: Callable[[int], dict[str, tuple[int, ...]]] = dataclasses.field(repr=False)


def _standard(weights: None, z: Array, state: LSTMState) -> tuple[LSTMState, LSTMGates]:
    return lstm_pointwise(z, state.c)


def _peephole(weights: PeepholeWeights, z: Array, state: LSTMState):
    c_prev = state.c
    z_i, z_f, z_g, z_o = gates.split_gates(z)
    i_t = gates.peephole_gate(z_i, weights.w_ci, c_prev)
    f_t = gates.peephole_gate(z_f, weights.w_cf, c_prev)
    g_t = gates.candidate(z_g)
    c_t = gates.cell_update(f_t, c_prev, i_t, g_t)
    o_t = gates.peephole_gate(z_o, weights.w_co, c_t)
    h_t = gates.hidden_update(o_t, c_t)
    return LSTMState(h=h_t, c=c_t), LSTMGates(i=i_t, f=f_t, g=g_t, o=o_t, c=c_t)


def _cifg(weights: CoupledGates, z: Array, state: LSTMState):
    c_prev = state.c
    z_f, z_g, z_o = jnp.split(z, 3, axis=-1)
    f_t = gates.forget_gate(z_f)
    i_t = gates.coupled_input_gate(f_t)
    g_t = gates.candidate(z_g)
    o_t = gates.output_gate(z_o)
    c_t = gates.cell_update(f_t, c_prev, i_t, g_t)
    h_t = gates.hidden_update(o_t, c_t)
    return LSTMState(h=h_t, c=c_t), LSTMGates(i=i_t, f=f_t, g=g_t, o=o_t, c=c_t)


def _layer_norm(weights_and_bias: tuple[LayerNormWeights, Array], z: tuple[Array, Array],
                state: LSTMState):
    weights, b = weights_and_bias
    c_prev = state.c
    z_x, z_h = z
    z = gates.layer_norm(z_x, weights.gain_x) + gates.layer_norm(z_h, weights.gain_h, b)
    z_i, z_f, z_g, z_o = gates.split_gates(z)
    i_t = gates.input_gate(z_i)
    f_t = gates.forget_gate(z_f)
    g_t = gates.candidate(z_g)
    o_t = gates.output_gate(z_o)
    c_t = gates.cell_update(f_t, c_prev, i_t, g_t)
    h_t = gates.hidden_update(o_t, gates.layer_norm(c_t, weights.gain_c, weights.bias_c))
    return LSTMState(h=h_t, c=c_t), LSTMGates(i=i_t, f=f_t, g=g_t, o=o_t, c=c_t)


def _retained_readout(weights: RetainedReadoutWeights, z: Array, state: LSTMState):
    c_prev = state.c
    z_i, z_f, z_g, z_v = gates.split_gates(z)
    i_t = gates.input_gate(z_i)
    f_t = gates.forget_gate(z_f)
    g_t = gates.candidate(z_g)
    v_t = jax.nn.sigmoid(z_v)
    retained = gates.retained_memory(f_t, c_prev)
    c_t = i_t * g_t + retained
    u_t = gates.retained_readout(retained, weights.w_u, weights.b_u)
    h_t = u_t * v_t
    return LSTMState(h=h_t, c=c_t), RetainedReadoutGates(i=i_t, f=f_t, g=g_t, u=u_t, v=v_t, c=c_t)


def _ones(n: int) -> Array:
    return jnp.ones((n,), jnp.float32)


def _zeros(n: int) -> Array:
    return jnp.zeros((n,), jnp.float32)


VARIANTS: dict[str, CellVariant] = {
    variant.name: variant
    for variant in (
        CellVariant(
            "lstm", None, 4, 1, True, _standard,
            init_weights=lambda key, h: None,
            weight_shapes=lambda h: {},
        ),
        CellVariant(
            # Zero peepholes start as the standard cell; each unit learns its own weight.
            "peephole", PeepholeWeights, 4, 1, True, _peephole,
            init_weights=lambda key, h: PeepholeWeights(_zeros(h), _zeros(h), _zeros(h)),
            weight_shapes=lambda h: {"w_ci": (h,), "w_cf": (h,), "w_co": (h,)},
        ),
        CellVariant(
            "cifg", CoupledGates, 3, 0, True, _cifg,
            init_weights=lambda key, h: CoupledGates(),
            weight_shapes=lambda h: {},
        ),
        CellVariant(
            "layer_norm", LayerNormWeights, 4, 1, False, _layer_norm,
            init_weights=lambda key, h: LayerNormWeights(_ones(4 * h), _ones(4 * h), _ones(h),
                                                         _zeros(h)),
            weight_shapes=lambda h: {"gain_x": (4 * h,), "gain_h": (4 * h,), "gain_c": (h,),
                                     "bias_c": (h,)},
        ),
        CellVariant(
            "retained_readout", RetainedReadoutWeights, 4, 1, True, _retained_readout,
            init_weights=lambda key, h: RetainedReadoutWeights(
                jax.nn.initializers.lecun_normal()(key, (h, h), jnp.float32), _zeros(h)),
            weight_shapes=lambda h: {"w_u": (h, h), "b_u": (h,)},
        ),
    )
}


def variant_named(name: Any) -> CellVariant:
    """The variant called `name`; ValueError naming `cell` if there is none."""
    if not isinstance(name, str) or name not in VARIANTS:
        raise ValueError(f"cell must be one of {list(VARIANTS)}, got {name!r}.")
    return VARIANTS[name]


def variant_of(cell_weights: Any, name: str = "params.cell") -> CellVariant:
    """The variant whose weights `cell_weights` are (None: the standard cell)."""
    for variant in VARIANTS.values():
        if (variant.weights_type is None and cell_weights is None) or (
            variant.weights_type is not None and type(cell_weights) is variant.weights_type
        ):
            return variant
    known = ", ".join(v.weights_type.__name__ for v in VARIANTS.values() if v.weights_type)
    raise TypeError(
        f"{name} must be None (the standard cell) or one of {known}, "
        f"got {type(cell_weights).__name__}."
    )
