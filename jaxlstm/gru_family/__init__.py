"""The GRU (Cho et al. 2014) in PyTorch's `nn.GRU` form, in the shape of the LSTM's modules.

(The folder is not called `gru`: `jaxlstm.gru` is the sequence function, as `jaxlstm.lstm`
is, and a subpackage of that name would replace it as an attribute of `jaxlstm` once
imported.)

* gates (`jaxlstm.gru_family.gates`): the equations, one function each, and `gru_pointwise`,
  the elementwise part of a step (the reset gate applies after the recurrent matmul, b_hn
  inside);
* params (`jaxlstm.gru_family.params`): `GRUParams(w_x, w_h, b, b_hn)` and `init_gru`
  (PyTorch's U(-1/sqrt(H), 1/sqrt(H)) by default);
* one step (`jaxlstm.gru_family.cell`): `gru_cell(params, h, x_t) -> h`, and the GRU as a cell
  of the LSTM's time loop;
* the sequence (`jaxlstm.gru_family.scan`): `gru(params, xs, ...) -> (hs, h_last)` on the
  LSTM's time loop, with its chunked input projection and fused backward;
* the family (`jaxlstm.gru_family.family`): `FAMILY`, registered as "gru".

Core modules: jax and numpy only, like `jaxlstm/*.py`.
"""
