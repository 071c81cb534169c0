"""Flax wrappers: `jaxlstm.flax.linen` and `jaxlstm.flax.nnx` modules over the functional core.

The only part of jaxlstm that imports flax; `import jaxlstm` does not load it. Both module
families store params under `LSTMParams`' field names, and `to_lstm_params` /
`to_module_params` convert between a module's params and the functional API's in one call.

The cells are drop-ins for Flax's `LSTMCell` / `OptimizedLSTMCell` (`jaxlstm.flax.dropin` says
what that takes); `from_flax_model` loads a Flax-trained model's LSTM params into the jaxlstm
modules that replace its cells, and `to_flax_carry` / `from_flax_carry` translate the `LSTM`
modules' carry to and from Flax's `(c, h)`.
"""

from jaxlstm.flax.carry import from_flax_carry, to_flax_carry
from jaxlstm.flax.params import to_lstm_params, to_module_params
from jaxlstm.interop.flax_params import from_flax_model

__all__ = ["from_flax_carry", "from_flax_model", "to_flax_carry", "to_lstm_params",
           "to_module_params"]
