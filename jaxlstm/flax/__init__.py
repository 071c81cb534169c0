"""Flax wrappers: `jaxlstm.flax.linen` and `jaxlstm.flax.nnx` modules over the functional core.

The only part of jaxlstm that imports flax; `import jaxlstm` does not load it. Both module
families store params under `LSTMParams`' field names, and `to_lstm_params` /
`to_module_params` convert between a module's params and the functional API's in one call.

The cells are drop-ins for Flax's `LSTMCell` / `OptimizedLSTMCell` (`jaxlstm.flax.dropin` says
what that takes); `from_flax_model` loads a Flax-trained model's LSTM params into the jaxlstm
modules that replace its cells, and `to_flax_carry` / `from_flax_carry` translate the `LSTM`
modules' carry to and from Flax's `(c, h)`.

`GRUCell` is a drop-in for linen's `nn.GRUCell` (Flax's param names, computed by jaxlstm's GRU
gate functions; `jaxlstm.flax.gru_dropin`), and `to_gru_params` / `from_gru_params` convert its
params to and from `GRUParams` for `jaxlstm.gru`; `jaxlstm.flax.nnx.GRUCell` is the same for
`nnx.GRUCell` (`jaxlstm.flax.gru_dropin_nnx`). They load with flax on first use, so
`import jaxlstm.flax` itself still imports no flax.
"""

from __future__ import annotations

import importlib
from typing import Any

from jaxlstm.flax.carry import from_flax_carry, to_flax_carry
from jaxlstm.flax.params import to_lstm_params, to_module_params
from jaxlstm.interop.flax_params import from_flax_model

_LAZY = {"GRUCell": "gru_dropin", "from_gru_params": "gru_dropin", "to_gru_params": "gru_dropin"}

__all__ = ["GRUCell", "from_flax_carry", "from_flax_model", "from_gru_params", "to_flax_carry",
           "to_gru_params", "to_lstm_params", "to_module_params"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
