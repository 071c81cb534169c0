"""The mLSTM's recurrent state, shared by its forms (`mlstm_recurrent`, `mlstm_chunkwise`)
and the public functions (`jaxlstm.xlstm.mlstm`)."""

from __future__ import annotations

from typing import NamedTuple

import jax

Array = jax.Array


class MLSTMState(NamedTuple):
    """The mLSTM's recurrent state per head, stabilised (the true values times exp(-m)).

    Kept in float32 (or wider) whatever the computation dtype, as the reference kernels do.
    Keys enter C and n scaled by 1/sqrt(d_k), as in NX-AI/xlstm's backends; mlstm_kernels
    scales the query instead, so its C and n are sqrt(d_k) times these.

    Attributes:
        C: matrix memory, (..., heads, d_k, d_v).
        n: normaliser, (..., heads, d_k).
        m: stabiliser, (..., heads).
    """

    C: Array
    n: Array
    m: Array
