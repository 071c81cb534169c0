"""minLSTM and minGRU (`jaxlstm.minrnn`) as NNX modules: `MinLSTM` and `MinGRU` (re-exported by
`jaxlstm.flax.nnx`).

    model = MinLSTM(3, 64, rngs=nnx.Rngs(0))
    outputs, h = model(xs, seq_lengths=lengths, return_state=True)

Weights are `nnx.Param`s named after the fields of `MinLSTMParams` / `MinGRUParams` (`w_x`,
`b`), initialised by `jaxlstm.init_min_lstm` / `init_min_gru` with `rngs.params()`;
`model.params()` returns them as that NamedTuple (the same arrays), and
`nnx.update(model, params._asdict())` loads functional params.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlstm.flax.params import cast_for_compute
from jaxlstm.flax.xlstm_nnx import NamedParamsModule
from jaxlstm.minrnn.layer import MODES
from jaxlstm.minrnn.min_gru import MinGRUParams, init_min_gru, min_gru
from jaxlstm.minrnn.min_lstm import MinLSTMParams, init_min_lstm, min_lstm

Array = jax.Array
Dtype = Any


class _MinRNN(NamedParamsModule):
    """A min cell over whole sequences; subclasses name the core's init and run."""

    def __init__(self, in_features: int, hidden_size: int, *, mode: str = "parallel",
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 rngs: nnx.Rngs):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}.")
        init_cell = type(self).core[0]
        super().__init__(init_cell(rngs.params(), in_features, hidden_size, dtype=param_dtype))
        self.mode = mode
        self.dtype = dtype

    def __call__(self, xs: Array, *, initial_state: Array | None = None,
                 seq_lengths: Array | None = None, reverse: bool = False,
                 time_major: bool = False, return_state: bool = False) -> Any:
        """Runs the cell over `xs`; arguments and results as
        `jaxlstm.flax.linen.MinLSTM.__call__`: the outputs, or `(outputs, final_h)` with
        `return_state`."""
        run = type(self).core[1]
        params, xs, initial_state = cast_for_compute(self.dtype,
                                                     (self.params(), xs, initial_state))
        outputs, final_h = run(params, xs, initial_state=initial_state,
                               seq_lengths=seq_lengths, reverse=reverse,
                               time_major=time_major, mode=self.mode)
        return (outputs, final_h) if return_state else outputs


class MinLSTM(_MinRNN):
    """A minLSTM layer (`jaxlstm.min_lstm`) as an NNX module.

    Args:
        in_features: I.
        hidden_size: H.
        mode: "parallel" (default) or "sequential", as `jaxlstm.flax.linen.MinLSTM`'s.
        dtype: computation dtype; None keeps the promoted dtype of the params and inputs.
        param_dtype: dtype the params are stored in.
        rngs: `nnx.Rngs`; one key of its 'params' stream initialises (`init_min_lstm`).

    Params: `w_x` (I, 3H), `b` (3H,), blocks f, i, h~ (`MinLSTMParams`).
    """

    params_type = MinLSTMParams
    core = (init_min_lstm, min_lstm)


class MinGRU(_MinRNN):
    """A minGRU layer (`jaxlstm.min_gru`) as an NNX module; arguments as `MinLSTM`'s.

    Params: `w_x` (I, 2H), `b` (2H,), blocks z, h~ (`MinGRUParams`).
    """

    params_type = MinGRUParams
    core = (init_min_gru, min_gru)


__all__ = ["MinGRU", "MinLSTM"]
