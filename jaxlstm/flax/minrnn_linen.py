"""minLSTM and minGRU (`jaxlstm.minrnn`) as linen modules: `MinLSTM` and `MinGRU` (re-exported
by `jaxlstm.flax.linen`).

    model = MinLSTM(hidden_size=64)                   # mode="parallel": one associative scan
    variables = model.init(key, xs)                   # the input size is read from xs
    outputs, h = model.apply(variables, xs, seq_lengths=lengths, return_state=True)

The params are stored under one `cell` entry with the field names of `MinLSTMParams` /
`MinGRUParams`, {"cell": {"w_x": (I, G*H), "b": (G*H,)}}, so
`MinLSTMParams(**variables["params"]["cell"])` hands the same arrays to `jaxlstm.min_lstm`, and
`{"params": {"cell": params._asdict()}}` makes variables of functional params. The cell's
params initialise as `jaxlstm.init_min_lstm` / `init_min_gru` with the module's 'params' key.
The carry in and out is the core's: h itself, (batch..., H).
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlstm.flax.params import cast_for_compute
from jaxlstm.minrnn.min_gru import MinGRUParams, init_min_gru, min_gru
from jaxlstm.minrnn.min_lstm import MinLSTMParams, init_min_lstm, min_lstm

Array = jax.Array
Dtype = Any


class _MinRNN(nn.Module):
    """A min cell over whole sequences; subclasses name the core's params, init and run."""

    # (params type, init function, sequence function) of the core cell.
    core: ClassVar[tuple[type, Any, Any]]

    hidden_size: int
    mode: str = "parallel"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, xs: Array, *, initial_state: Array | None = None,
                 seq_lengths: Array | None = None, reverse: bool = False,
                 time_major: bool = False, return_state: bool = False) -> Any:
        """Runs the cell over `xs`, (batch..., T, I) or (T, batch..., I) if `time_major`.

        Args:
            xs: the inputs; I is read from them when the params are created.
            initial_state: h_0, (batch..., H); zeros if None.
            seq_lengths: integer array of the batch shape: valid steps per sequence (outputs
                at padded steps are zero; the carry is h after the last valid step).
            reverse: run from the last (valid) step to the first.
            time_major: time is the leading axis of `xs` and of the outputs.
            return_state: also return the final h.

        Returns:
            The outputs (batch..., T, H) (time-major if `time_major`), or
            `(outputs, final_h)` with `return_state`, final_h (batch..., H).
        """
        params_type, init_cell, run = self.core
        in_features = xs.shape[-1]

        def init(key: Array) -> dict[str, Array]:
            return init_cell(key, in_features, self.hidden_size,
                             dtype=self.param_dtype)._asdict()

        params = params_type(**self.param("cell", init))
        params, xs, initial_state = cast_for_compute(self.dtype, (params, xs, initial_state))
        outputs, final_h = run(params, xs, initial_state=initial_state,
                               seq_lengths=seq_lengths, reverse=reverse,
                               time_major=time_major, mode=self.mode)
        return (outputs, final_h) if return_state else outputs


class MinLSTM(_MinRNN):
    """A minLSTM layer (`jaxlstm.min_lstm`) as a linen module.

        h_t = f'_t * h_{t-1} + i'_t * g(h~_t),   (f~, i~, h~) = x_t W_x + b,
        f'_t, i'_t = sigmoid(f~), sigmoid(i~) normalised to sum to one.

    Attributes:
        hidden_size: H.
        mode: "parallel" (default, `jax.lax.associative_scan` in log space) or
            "sequential" (`jax.lax.scan`): the same function.
        dtype: computation dtype; None keeps the promoted dtype of the params and inputs.
        param_dtype: dtype the params are stored in.

    Params: {"cell": {"w_x": (I, 3H), "b": (3H,)}}, blocks f, i, h~ (`MinLSTMParams`).
    """

    core = (MinLSTMParams, init_min_lstm, min_lstm)


class MinGRU(_MinRNN):
    """A minGRU layer (`jaxlstm.min_gru`) as a linen module.

        h_t = (1 - z_t) * h_{t-1} + z_t * g(h~_t),   (k, h~) = x_t W_x + b,   z_t = sigmoid(k).

    Attributes: as `MinLSTM`'s.

    Params: {"cell": {"w_x": (I, 2H), "b": (2H,)}}, blocks z, h~ (`MinGRUParams`).
    """

    core = (MinGRUParams, init_min_gru, min_gru)


__all__ = ["MinGRU", "MinLSTM"]
