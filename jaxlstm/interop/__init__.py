"""Weights in and out of other frameworks: PyTorch `nn.LSTM` and Flax's LSTM cells.

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

__all__ = [
    "from_flax_linen",
    "from_flax_model",
    "from_flax_nnx",
    "from_torch",
    "load_torch",
    "to_flax_linen",
    "to_flax_nnx",
    "to_torch",
]
