"""jaxlstm: LSTMs in JAX as pure functions over named pytrees.

The gate functions live in `jaxlstm.gates`; one step is `lstm_cell`; a sequence is `lstm`.
"""

from jaxlstm import gates, interop, variants
from jaxlstm.cell import LSTMGates, LSTMState, lstm_pointwise
from jaxlstm.params import LSTMParams, init_lstm
from jaxlstm.regularisation import RecurrentMasks, draw_recurrent_masks, dropout
from jaxlstm.scan import lstm
from jaxlstm.stack import Directions, init_lstm_stack, lstm_stack
from jaxlstm.step import lstm_cell
from jaxlstm.tbptt import truncated_lstm
from jaxlstm.variants import (
    CoupledGates,
    LayerNormWeights,
    PeepholeWeights,
    RetainedReadoutGates,
    RetainedReadoutWeights,
)

__version__ = "0.1.0"

__all__ = [
    "CoupledGates",
    "Directions",
    "LSTMGates",
    "LSTMParams",
    "LSTMState",
    "LayerNormWeights",
    "PeepholeWeights",
    "RecurrentMasks",
    "RetainedReadoutGates",
    "RetainedReadoutWeights",
    "draw_recurrent_masks",
    "dropout",
    "gates",
    "init_lstm",
    "init_lstm_stack",
    "interop",
    "lstm",
    "lstm_cell",
    "lstm_pointwise",
    "lstm_stack",
    "truncated_lstm",
    "variants",
]
