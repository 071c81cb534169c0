"""jaxlstm: LSTMs in JAX as pure functions over named pytrees.

The gate functions live in `jaxlstm.gates`; one step is `lstm_cell`; a sequence is `lstm`.
"""

from jaxlstm import gates
from jaxlstm.cell import LSTMGates, LSTMState, lstm_cell, lstm_pointwise
from jaxlstm.params import LSTMParams, init_lstm
from jaxlstm.scan import lstm

__version__ = "0.1.0"

__all__ = [
    "LSTMGates",
    "LSTMParams",
    "LSTMState",
    "gates",
    "init_lstm",
    "lstm",
    "lstm_cell",
    "lstm_pointwise",
]
