"""xLSTM's cells as NNX modules: `SLSTM` and `MLSTM` over `jaxlstm.xlstm` (re-exported by
`jaxlstm.flax.nnx`).

    model = MLSTM(3, 64, num_heads=4, rngs=nnx.Rngs(0))
    outputs, state = model(xs, return_state=True)

Weights are `nnx.Param`s named after the fields of `SLSTMParams` / `MLSTMParams`, and
`model.params()` returns them as those NamedTuples (the same arrays).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlstm.flax.params import cast_for_compute
from jaxlstm.xlstm.mlstm import MLSTMParams, init_mlstm, mlstm
from jaxlstm.xlstm.slstm import SLSTMParams, init_slstm, slstm

Array = jax.Array
Dtype = Any


def _result(outputs: Array, state: Any, return_state: bool) -> Any:
    return (outputs, state) if return_state else outputs


class NamedParamsModule(nnx.Module):
    """A cell's params as `nnx.Param`s named after the fields of its core params NamedTuple
    (`params_type`); the base of the xLSTM and minRNN NNX modules."""

    params_type: type

    def __init__(self, params: Any):
        for name, value in params._asdict().items():
            setattr(self, name, nnx.Param(value))

    def params(self) -> Any:
        """The weights as the core's params NamedTuple (the same arrays)."""
        return self.params_type(*(getattr(self, name)[...]
                                  for name in self.params_type._fields))


class SLSTM(NamedParamsModule):
    """An sLSTM layer as an NNX module; arguments as `jaxlstm.flax.linen.SLSTM`'s, plus `in_features` and
    `rngs` (its 'params' stream initialises)."""

    params_type = SLSTMParams

    def __init__(self, in_features: int, hidden_size: int, *, num_heads: int = 4,
                 time_major: bool = False, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs, **init_options: Any):
        super().__init__(init_slstm(rngs.params(), in_features, hidden_size,
                                    num_heads=num_heads, dtype=param_dtype, **init_options))
        self.time_major = time_major
        self.dtype = dtype

    def __call__(self, inputs: Array, *, seq_lengths: Array | None = None,
                 initial_state: Any = None, return_state: bool = False) -> Any:
        params, inputs, initial_state = cast_for_compute(self.dtype,
                                                         (self.params(), inputs, initial_state))
        outputs, state = slstm(params, inputs, initial_state=initial_state,
                               seq_lengths=seq_lengths, time_major=self.time_major)[:2]
        return _result(outputs, state, return_state)


class MLSTM(NamedParamsModule):
    """An mLSTM cell as an NNX module; arguments as `jaxlstm.flax.linen.MLSTM`'s, plus `in_features` and
    `rngs`."""

    params_type = MLSTMParams

    def __init__(self, in_features: int, hidden_size: int, *, num_heads: int = 4,
                 qk_size: int | None = None, mode: str = "chunkwise", chunk_size: int = 64,
                 time_major: bool = False, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        super().__init__(init_mlstm(rngs.params(), in_features, hidden_size,
                                    num_heads=num_heads, qk_size=qk_size, dtype=param_dtype))
        self.mode = mode
        self.chunk_size = chunk_size
        self.time_major = time_major
        self.dtype = dtype

    def __call__(self, inputs: Array, *, seq_lengths: Array | None = None,
                 initial_state: Any = None, return_state: bool = False,
                 mode: str | None = None) -> Any:
        """`mode` overrides the module's for this call (e.g. "recurrent" to generate)."""
        params, inputs = cast_for_compute(self.dtype, (self.params(), inputs))
        outputs, state = mlstm(params, inputs, mode=mode or self.mode,
                               chunk_size=self.chunk_size, initial_state=initial_state,
                               seq_lengths=seq_lengths, time_major=self.time_major)
        return _result(outputs, state, return_state)


__all__ = ["MLSTM", "SLSTM"]
