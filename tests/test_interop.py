"""jaxlstm.interop: PyTorch nn.LSTM and Flax LSTM cell weights, in and out."""

import pickle

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import interop

BATCH, STEPS, INPUT, HIDDEN = 3, 7, 4, 5
TOL = dict(atol=2e-6, rtol=2e-5)


class TestTorch:
    torch = pytest.importorskip("torch")

    def module(self, **kwargs):
        self.torch.manual_seed(0)
        return self.torch.nn.LSTM(INPUT, HIDDEN, batch_first=True, **kwargs)

    @pytest.mark.parametrize("num_layers", [1, 3])
    @pytest.mark.parametrize("bidirectional", [False, True])
    @pytest.mark.parametrize("packed", [False, True])
    def test_outputs_match_torch(self, num_layers, bidirectional, packed):
        torch = self.torch
        module = self.module(num_layers=num_layers, bidirectional=bidirectional)
        xs = np.random.default_rng(0).standard_normal((BATCH, STEPS, INPUT)).astype(np.float32)
        lengths = np.array([STEPS, 2, 5])
        x_in = torch.from_numpy(xs)
        if packed:
            x_in = torch.nn.utils.rnn.pack_padded_sequence(
                x_in, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False)
        with torch.no_grad():
            out, (h_n, c_n) = module(x_in)
        if packed:
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                            total_length=STEPS)
        params = interop.from_torch(module)
        outputs, finals = jaxlstm.lstm_stack(params, xs,
                                             seq_lengths=lengths if packed else None)
        np.testing.assert_allclose(outputs, out.numpy(), **TOL)
        # torch orders h_n as (layer 0 forward, layer 0 backward, layer 1 forward, ...).
        ours = [s for layer in finals for s in layer if s is not None]
        np.testing.assert_allclose(np.stack([s.h for s in ours]), h_n.numpy(), **TOL)
        np.testing.assert_allclose(np.stack([s.c for s in ours]), c_n.numpy(), **TOL)

    def test_round_trips_are_exact(self):
        module = self.module(num_layers=2, bidirectional=True)
        params = interop.from_torch(module)
        fresh = self.torch.nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True)
        fresh.load_state_dict(interop.to_torch(params))
        chex.assert_trees_all_equal(interop.from_torch(fresh), params)
        exported = interop.to_torch(params)
        np.testing.assert_array_equal(exported["bias_hh_l1_reverse"].numpy(), 0.0)

    def test_single_lstm_params_export(self):
        params = jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN)
        module = self.torch.nn.LSTM(INPUT, HIDDEN)
        module.load_state_dict(interop.to_torch(params))
        chex.assert_trees_all_equal(interop.from_torch(module)[0].forward, params)

    def test_prefix_selects_a_submodule(self):
        torch = self.torch
        model = torch.nn.Sequential()
        model.add_module("encoder", self.module())
        model.add_module("head", torch.nn.Linear(HIDDEN, 2))
        params = interop.from_torch(model.state_dict(), prefix="encoder.")
        chex.assert_trees_all_equal(params, interop.from_torch(model.encoder))

    def test_load_from_file_without_pickled_code(self, tmp_path):
        torch = self.torch
        module = self.module(num_layers=2)
        path = tmp_path / "lstm.pt"
        torch.save(module.state_dict(), path)
        chex.assert_trees_all_equal(interop.load_torch(path), interop.from_torch(module))
        # A pickled object (which could run code when loaded) is refused.
        evil = tmp_path / "evil.pt"
        torch.save({"weight_ih_l0": _Payload()}, evil)
        with pytest.raises(pickle.UnpicklingError):
            interop.load_torch(evil)

    def test_load_safetensors(self, tmp_path):
        safetensors_torch = pytest.importorskip("safetensors.torch")
        module = self.module(bidirectional=True)
        path = tmp_path / "lstm.safetensors"
        safetensors_torch.save_file(module.state_dict(), str(path))
        chex.assert_trees_all_equal(interop.load_torch(path), interop.from_torch(module))

    def test_clear_errors(self):
        torch = self.torch
        with pytest.raises(TypeError, match="must be a torch.nn.LSTM, got GRU"):
            interop.from_torch(torch.nn.GRU(INPUT, HIDDEN))
        with pytest.raises(ValueError, match="proj_size .* not supported"):
            interop.from_torch(torch.nn.LSTM(INPUT, HIDDEN, proj_size=2))
        state = dict(self.module().state_dict())
        state["weight_hh_l0"] = state["weight_hh_l0"][:, :3]
        with pytest.raises(ValueError, match=r"weight_hh must be \(4H, H\)"):
            interop.from_torch(state)
        with pytest.raises(ValueError, match="Unexpected key 'extra'"):
            interop.from_torch({**self.module().state_dict(), "extra": np.zeros(1)})
        with pytest.raises(ValueError, match="No nn.LSTM weights found"):
            interop.from_torch(self.module().state_dict(), prefix="decoder.")


class _Payload:
    """Stands for an arbitrary pickled object in a weights file."""


class TestFlax:
    nn = pytest.importorskip("flax.linen")

    @pytest.mark.parametrize("cell_name", ["LSTMCell", "OptimizedLSTMCell"])
    def test_linen_cells_both_ways(self, cell_name):
        rnn = self.nn.RNN(getattr(self.nn, cell_name)(HIDDEN))
        xs = jax.random.normal(jax.random.key(1), (BATCH, STEPS, INPUT))
        variables = rnn.init(jax.random.key(0), xs)
        variables = jax.tree.map(  # random biases, so a misplaced gate shows
            lambda a: jax.random.normal(jax.random.key(2), a.shape) if a.ndim == 1 else a,
            variables)
        params = interop.from_flax_linen(variables)
        np.testing.assert_allclose(jaxlstm.lstm(params, xs)[0], rnn.apply(variables, xs), **TOL)
        back = {"params": {"cell": interop.to_flax_linen(params)}}
        chex.assert_trees_all_equal(back, variables)

    def test_nnx_both_ways(self):
        from flax import nnx

        cell = nnx.OptimizedLSTMCell(INPUT, HIDDEN, rngs=nnx.Rngs(0))
        params = jaxlstm.init_lstm(jax.random.key(5), INPUT, HIDDEN)
        params = params._replace(b=jax.random.normal(jax.random.key(6), params.b.shape))
        nnx.update(cell, interop.to_flax_nnx(params))
        chex.assert_trees_all_equal(interop.from_flax_nnx(nnx.state(cell, nnx.Param)), params)
        xs = jax.random.normal(jax.random.key(1), (BATCH, STEPS, INPUT))
        zeros = jnp.zeros((BATCH, HIDDEN))
        want = nnx.RNN(cell)(xs, initial_carry=(zeros, zeros))
        np.testing.assert_allclose(jaxlstm.lstm(params, xs)[0], want, **TOL)

    def test_missing_keys_are_named(self):
        with pytest.raises(ValueError, match="has no 'ii/kernel'"):
            interop.from_flax_linen({"ii": {}, "hi": {}})
