"""The families' linen layers under their own names, `SLSTM`, `MLSTM`, `MinLSTM` and `MinGRU`
(re-exported by `jaxlstm.flax.linen`): configurations of `jaxlstm.flax.layer.FamilyLayer`, each
declaring its family, its attributes and which of them are options of the family's `init` or
`apply`. Any other family runs as `jaxlstm.flax.linen.Layer(hidden_size, family=name)`.

    model = MinLSTM(hidden_size=64)                   # mode=None: the backend's fastest form
    variables = model.init(key, xs)                   # the input size is read from xs
    outputs, h = model.apply(variables, xs, seq_lengths=lengths, return_state=True)

The params are stored under one `cell` entry with the field names of the family's params, so
`MinLSTMParams(**variables["params"]["cell"])` hands the same arrays to `jaxlstm.min_lstm`, and
`{"params": {"cell": params._asdict()}}` makes variables of functional params. They initialise
as the family's `init` with the module's 'params' key. The state in and out is the family's
(`SLSTMState`, `MLSTMState`, h itself for the min cells). Calls take `FamilyLayer.__call__`'s
arguments.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax.numpy as jnp

from jaxlstm.flax.layer import FamilyLayer

Dtype = Any


class SLSTM(FamilyLayer):
    """An sLSTM layer (`jaxlstm.slstm`) as a linen module.

    Attributes:
        hidden_size: H, divisible by `num_heads`.
        num_heads: heads of the block-diagonal recurrence.
        time_major: inputs are (T, batch..., I) rather than (batch..., T, I).
        dtype: computation dtype; None keeps the params' and inputs'.
        param_dtype: dtype the params are stored in.
        init_options: further keyword arguments of `init_slstm` (its reference defaults
            otherwise: zero recurrent weights, power-law forget bias).
    """

    family: ClassVar[str] = "slstm"
    init_fields: ClassVar[tuple[str, ...]] = ("num_heads",)

    hidden_size: int
    num_heads: int = 4
    time_major: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    init_options: Any = None


class MLSTM(FamilyLayer):
    """An mLSTM cell (`jaxlstm.mlstm`) as a linen module.

    Attributes:
        hidden_size: heads * d_v.
        num_heads: heads, each with its own matrix memory.
        qk_size: d_k per head (default d_v).
        mode: "chunkwise", "parallel" or "recurrent": the same function; None (the
            default): the backend's fastest (`jaxlstm.family.form`, as `jaxlstm.mlstm`).
        chunk_size: for "chunkwise"; None (the default): chosen from T, as `jaxlstm.mlstm`.
        time_major, dtype, param_dtype: as `SLSTM`'s.
    """

    family: ClassVar[str] = "mlstm"
    init_fields: ClassVar[tuple[str, ...]] = ("num_heads", "qk_size")
    apply_fields: ClassVar[tuple[str, ...]] = ("mode", "chunk_size")

    hidden_size: int
    num_heads: int = 4
    qk_size: int | None = None
    mode: str | None = None
    chunk_size: int | None = None
    time_major: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32


class _MinRNN(FamilyLayer):
    """The attributes the min cells share; time-major is an argument of the call."""

    apply_fields: ClassVar[tuple[str, ...]] = ("mode",)

    hidden_size: int
    mode: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32


class MinLSTM(_MinRNN):
    """A minLSTM layer (`jaxlstm.min_lstm`) as a linen module.

        h_t = f'_t * h_{t-1} + i'_t * g(h~_t),   (f~, i~, h~) = x_t W_x + b,
        f'_t, i'_t = sigmoid(f~), sigmoid(i~) normalised to sum to one.

    Attributes:
        hidden_size: H.
        mode: "parallel" (`jax.lax.associative_scan` in log space) or "sequential"
            (`jax.lax.scan`): the same function; None (the default): the backend's fastest
            (`jaxlstm.family.form`: sequential on a CPU, parallel on accelerators).
        dtype: computation dtype; None keeps the promoted dtype of the params and inputs.
        param_dtype: dtype the params are stored in.

    Params: {"cell": {"w_x": (I, 3H), "b": (3H,)}}, blocks f, i, h~ (`MinLSTMParams`).
    """

    family: ClassVar[str] = "min_lstm"


class MinGRU(_MinRNN):
    """A minGRU layer (`jaxlstm.min_gru`) as a linen module.

        h_t = (1 - z_t) * h_{t-1} + z_t * g(h~_t),   (k, h~) = x_t W_x + b,   z_t = sigmoid(k).

    Attributes: as `MinLSTM`'s.

    Params: {"cell": {"w_x": (I, 2H), "b": (2H,)}}, blocks z, h~ (`MinGRUParams`).
    """

    family: ClassVar[str] = "min_gru"


__all__ = ["MLSTM", "SLSTM", "MinGRU", "MinLSTM"]
