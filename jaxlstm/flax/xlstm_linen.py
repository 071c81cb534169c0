"""xLSTM's cells as linen modules: `SLSTM` and `MLSTM` over `jaxlstm.xlstm` (re-exported by
`jaxlstm.flax.linen`).

    model = SLSTM(hidden_size=64, num_heads=4)
    outputs = model.apply(variables, xs, seq_lengths=lengths)

The params are stored under one `cell` entry with the field names of `SLSTMParams` /
`MLSTMParams`, so `SLSTMParams(**variables["params"]["cell"])` hands the same arrays to the
functional API. The state in and out is the core's (`SLSTMState`, `MLSTMState`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlstm.flax.params import cast_for_compute
from jaxlstm.xlstm.mlstm import MLSTMParams, init_mlstm, mlstm
from jaxlstm.xlstm.slstm import SLSTMParams, init_slstm, slstm

Array = jax.Array
Dtype = Any


def _result(outputs: Array, state: Any, return_state: bool) -> Any:
    return (outputs, state) if return_state else outputs


class SLSTM(nn.Module):
    """An sLSTM layer (`jaxlstm.xlstm.slstm.slstm`) as a linen module.

    Attributes:
        hidden_size: H, divisible by `num_heads`.
        num_heads: heads of the block-diagonal recurrence.
        time_major: inputs are (T, batch..., I) rather than (batch..., T, I).
        dtype: computation dtype; None keeps the params' and inputs'.
        param_dtype: dtype the params are stored in.
        init_options: further keyword arguments of `init_slstm` (its reference defaults
            otherwise: zero recurrent weights, power-law forget bias).
    """

    hidden_size: int
    num_heads: int = 4
    time_major: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    init_options: Any = None

    @nn.compact
    def __call__(self, inputs: Array, *, seq_lengths: Array | None = None,
                 initial_state: Any = None, return_state: bool = False) -> Any:
        """The outputs (batch..., T, H), and the final `SLSTMState` with `return_state`."""
        in_features = inputs.shape[-1]

        def init(key: Array) -> dict[str, Array]:
            return init_slstm(key, in_features, self.hidden_size, num_heads=self.num_heads,
                              dtype=self.param_dtype, **(self.init_options or {}))._asdict()

        params = SLSTMParams(**self.param("cell", init))
        params, inputs, initial_state = cast_for_compute(self.dtype,
                                                         (params, inputs, initial_state))
        outputs, state = slstm(params, inputs, initial_state=initial_state,
                               seq_lengths=seq_lengths, time_major=self.time_major)[:2]
        return _result(outputs, state, return_state)


class MLSTM(nn.Module):
    """An mLSTM cell (`jaxlstm.xlstm.mlstm.mlstm`) as a linen module.

    Attributes:
        hidden_size: heads * d_v.
        num_heads: heads, each with its own matrix memory.
        qk_size: d_k per head (default d_v).
        mode: "chunkwise" (default), "parallel" or "recurrent": the same function.
        chunk_size: for "chunkwise".
        time_major, dtype, param_dtype: as `SLSTM`'s.
    """

    hidden_size: int
    num_heads: int = 4
    qk_size: int | None = None
    mode: str = "chunkwise"
    chunk_size: int = 64
    time_major: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, inputs: Array, *, seq_lengths: Array | None = None,
                 initial_state: Any = None, return_state: bool = False) -> Any:
        """The outputs (batch..., T, hidden_size), and the final `MLSTMState` with
        `return_state`."""
        in_features = inputs.shape[-1]

        def init(key: Array) -> dict[str, Array]:
            return init_mlstm(key, in_features, self.hidden_size, num_heads=self.num_heads,
                              qk_size=self.qk_size, dtype=self.param_dtype)._asdict()

        params = MLSTMParams(**self.param("cell", init))
        params, inputs = cast_for_compute(self.dtype, (params, inputs))
        outputs, state = mlstm(params, inputs, mode=self.mode, chunk_size=self.chunk_size,
                               initial_state=initial_state, seq_lengths=seq_lengths,
                               time_major=self.time_major)
        return _result(outputs, state, return_state)


__all__ = ["MLSTM", "SLSTM"]
