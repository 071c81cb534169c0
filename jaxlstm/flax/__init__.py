"""Flax wrappers: `jaxlstm.flax.linen` and `jaxlstm.flax.nnx` modules over the functional core.

The only part of jaxlstm that imports flax; `import jaxlstm` does not load it. Both module
families store params under `LSTMParams`' field names, and `to_lstm_params` /
`to_module_params` convert between a module's params and the functional API's in one call.
"""

from jaxlstm.flax.params import to_lstm_params, to_module_params

__all__ = ["to_lstm_params", "to_module_params"]
