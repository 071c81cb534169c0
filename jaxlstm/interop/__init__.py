"""Weights in and out of other frameworks: PyTorch `nn.LSTM` and `nn.GRU`, Flax's LSTM cells,
and NX-AI's `xlstm` sLSTM layer and mLSTM cell (in only: `from_xlstm`).

Nothing here imports torch or flax at import time.
"""

from jaxlstm.interop.flax_params import (
    from_flax_linen,
    from_flax_model,
    from_flax_nnx,
    to_flax_linen,
    to_flax_nnx,
)
from jaxlstm.interop.pytorch import from_torch, load_torch, to_torch
from jaxlstm.interop.xlstm import from_xlstm

__all__ = [
    "from_flax_linen",
    "from_flax_model",
    "from_flax_nnx",
    "from_torch",
    "from_xlstm",
    "load_torch",
    "to_flax_linen",
    "to_flax_nnx",
    "to_torch",
]
