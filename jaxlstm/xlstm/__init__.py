"""xLSTM's two cells (Beck et al. 2024), in the shape of the LSTM's modules.

* sLSTM (`jaxlstm.xlstm.slstm`): scalar memory with exponential gates, a normaliser n and a
  stabiliser m, block-diagonal (per-head) recurrence; composed by the LSTM's time loop.
* mLSTM (`jaxlstm.xlstm.mlstm`): a matrix memory per head with scalar exponential gates, in
  three interchangeable forms (recurrent, parallel, chunkwise).
* blocks (`jaxlstm.xlstm.blocks`): the paper's residual mLSTM and sLSTM blocks and a stack of
  them (`init_xlstm_stack`, `xlstm_stack`), matching NX-AI's mLSTMLayer and sLSTMBlock.

Core modules: jax, numpy and chex only, like `jaxlstm/*.py`.
"""
