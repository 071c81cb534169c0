"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): RNNs whose gates read
the input only, so that a whole sequence is one parallel scan.

* gates (`jaxlstm.minrnn.min_gates`): the equations, as coefficients (a_t, b_t) of
  h_t = a_t h_{t-1} + b_t and in log space;
* the recurrence (`jaxlstm.minrnn.log_scan`): `jax.lax.scan` step by step, or
  `jax.lax.associative_scan` in log space, shared by both cells;
* the cells (`jaxlstm.minrnn.min_lstm`, `jaxlstm.minrnn.min_gru`): params, init, one step,
  the sequence (`mode="parallel"` or `"sequential"`).

Core modules: jax and numpy only, like `jaxlstm/*.py`.
"""
