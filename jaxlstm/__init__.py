"""jaxlstm: LSTMs in JAX as pure functions over named pytrees.

The gate functions live in `jaxlstm.gates`; one step is `lstm_cell`; a sequence is `lstm`.

The public names below are loaded on first use (PEP 562), so `import jaxlstm` is instant and
imports no jax until a name is touched: the `jaxlstm` command can then answer `--help` at once
and turn a Ctrl-C during start-up into one line instead of a traceback from inside jax's
import. `from jaxlstm import lstm`, `jaxlstm.lstm` and `jaxlstm.gates.forget_gate` all work as
with eager imports.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "LSTMGates": "cell", "LSTMState": "cell", "lstm_pointwise": "cell",
    "LSTMParams": "params", "init_lstm": "params",
    "RecurrentMasks": "regularisation", "draw_recurrent_masks": "regularisation",
    "dropout": "regularisation",
    "lstm": "scan",
    "Directions": "stack", "init_lstm_stack": "stack", "lstm_stack": "stack",
    "generate": "decode", "initial_stack_state": "decode", "stack_step": "decode",
    "BlockStackParams": "blocks", "block_stack": "blocks", "block_stack_step": "blocks",
    "init_block_stack": "blocks", "initial_block_stack_state": "blocks",
    "lstm_cell": "step",
    "truncated_lstm": "tbptt",
    "MLSTMParams": "xlstm.mlstm", "MLSTMState": "xlstm.mlstm", "init_mlstm": "xlstm.mlstm",
    "mlstm": "xlstm.mlstm", "mlstm_cell": "xlstm.mlstm",
    "SLSTMParams": "xlstm.slstm", "SLSTMState": "xlstm.slstm", "init_slstm": "xlstm.slstm",
    "slstm": "xlstm.slstm", "slstm_cell": "xlstm.slstm",
    "MinGRUParams": "minrnn.min_gru", "init_min_gru": "minrnn.min_gru",
    "min_gru": "minrnn.min_gru", "min_gru_cell": "minrnn.min_gru",
    "MinLSTMParams": "minrnn.min_lstm", "init_min_lstm": "minrnn.min_lstm",
    "min_lstm": "minrnn.min_lstm", "min_lstm_cell": "minrnn.min_lstm",
    "GRUParams": "gru_family.params", "init_gru": "gru_family.params",
    "gru": "gru_family.scan", "gru_cell": "gru_family.cell",
    "CoupledGates": "variants", "LayerNormWeights": "variants", "PeepholeWeights": "variants",
    "RetainedReadoutGates": "variants", "RetainedReadoutWeights": "variants",
}
_PUBLIC_MODULES = ("gates", "interop", "variants")
# Every submodule, so `jaxlstm.scan` or `jaxlstm.train` resolve as attributes too.
_SUBMODULES = frozenset({*_PUBLIC_MODULES, "benchmark", "blocks", "block_parts", "cell", "cli",
                         "decode", "family", "flax",
                         "gru_family", "launch", "lstm_family",
                         "minrnn", "params", "plotting", "recurrence", "regularisation", "scan",
                         "stack", "step", "tasks", "tbptt", "train", "validation", "xlstm"})

__all__ = sorted([*_EXPORTS, *_PUBLIC_MODULES])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
