"""The families' NNX layers under their own names, `SLSTM`, `MLSTM`, `MinLSTM` and `MinGRU`
(re-exported by `jaxlstm.flax.nnx`): configurations of `jaxlstm.flax.layer.NnxFamilyLayer`,
each declaring its family, its arguments (those of the linen module of the same name, plus
`in_features` and `rngs`) and which of them are options of the family's `init` or `apply`.
Any other family runs as `jaxlstm.flax.nnx.Layer(in_features, hidden_size, family=name, ...)`.

    model = MLSTM(3, 64, num_heads=4, rngs=nnx.Rngs(0))
    outputs, state = model(xs, return_state=True)

Weights are `nnx.Param`s named after the fields of the family's params (`w_x`, `b`, ...),
initialised by the family's `init` with `rngs.params()`; `model.params()` returns them as that
NamedTuple (the same arrays), and `nnx.update(model, params._asdict())` loads functional
params. Calls take `FamilyLayer.__call__`'s arguments.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx

from jaxlstm.flax.layer import NnxFamilyLayer

Dtype = Any


class SLSTM(NnxFamilyLayer):
    """An sLSTM layer as an NNX module; arguments as `jaxlstm.flax.linen.SLSTM`'s, plus
    `in_features` and `rngs` (its 'params' stream initialises), and `init_slstm`'s further
    keywords as keywords."""

    family = "slstm"

    def __init__(self, in_features: int, hidden_size: int, *, num_heads: int = 4,
                 time_major: bool = False, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs, **init_options: Any):
        self.time_major, self.dtype = time_major, dtype
        super().__init__(in_features, hidden_size, param_dtype=param_dtype, rngs=rngs,
                         num_heads=num_heads, **init_options)


class MLSTM(NnxFamilyLayer):
    """An mLSTM cell as an NNX module; arguments as `jaxlstm.flax.linen.MLSTM`'s, plus
    `in_features` and `rngs`. A call's `mode` overrides the module's (e.g. "recurrent" to
    generate)."""

    family = "mlstm"
    apply_fields = ("mode", "chunk_size")

    def __init__(self, in_features: int, hidden_size: int, *, num_heads: int = 4,
                 qk_size: int | None = None, mode: str | None = None,
                 chunk_size: int | None = None, time_major: bool = False,
                 dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        self.mode, self.chunk_size = mode, chunk_size
        self.time_major, self.dtype = time_major, dtype
        super().__init__(in_features, hidden_size, param_dtype=param_dtype, rngs=rngs,
                         num_heads=num_heads, qk_size=qk_size)


class _MinRNN(NnxFamilyLayer):
    """The arguments the min cells share; time-major is an argument of the call."""

    apply_fields = ("mode",)

    def __init__(self, in_features: int, hidden_size: int, *, mode: str | None = None,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs):
        self.mode, self.dtype = mode, dtype
        super().__init__(in_features, hidden_size, param_dtype=param_dtype, rngs=rngs)


class MinLSTM(_MinRNN):
    """A minLSTM layer (`jaxlstm.min_lstm`) as an NNX module.

    Args:
        in_features: I.
        hidden_size: H.
        mode: "parallel" or "sequential"; None (the default): the backend's fastest, as
            `jaxlstm.flax.linen.MinLSTM`'s.
        dtype: computation dtype; None keeps the promoted dtype of the params and inputs.
        param_dtype: dtype the params are stored in.
        rngs: `nnx.Rngs`; one key of its 'params' stream initialises (`init_min_lstm`).

    Params: `w_x` (I, 3H), `b` (3H,), blocks f, i, h~ (`MinLSTMParams`).
    """

    family = "min_lstm"


class MinGRU(_MinRNN):
    """A minGRU layer (`jaxlstm.min_gru`) as an NNX module; arguments as `MinLSTM`'s.

    Params: `w_x` (I, 2H), `b` (2H,), blocks z, h~ (`MinGRUParams`).
    """

    family = "min_gru"


__all__ = ["MLSTM", "SLSTM", "MinGRU", "MinLSTM"]
