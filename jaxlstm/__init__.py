"""jaxlstm: LSTMs in JAX as pure functions over named pytrees.

The gate functions live in `jaxlstm.gates`; one step is `lstm_cell`; a sequence is `lstm`.
"""

from jaxlstm import gates, interop
from jaxlstm.cell import LSTMGates, LSTMState, lstm_cell, lstm_pointwise
from jaxlstm.params import LSTMParams, init_lstm
from jaxlstm.scan import lstm
from jaxlstm.stack import Directions, dropout, init_lstm_stack, lstm_stack
from jaxlstm.tbptt import truncated_lstm

__version__ = "0.1.0"

__all__ = [
    "Directions",
    "dropout",
    "init_lstm_stack",
    "lstm_stack",
    "truncated_lstm",
    "LSTMGates",
    "LSTMParams",
    "LSTMState",
    "gates",
    "interop",
    "init_lstm",
    "lstm",
    "lstm_cell",
    "lstm_pointwise",
]
