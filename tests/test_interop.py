"""jaxlstm.interop: PyTorch nn.LSTM and Flax LSTM cell weights, in and out."""

import pickle

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import interop

BATCH, STEPS, INPUT, HIDDEN, PROJ = 3, 7, 4, 5, 3
TOL = dict(atol=2e-6, rtol=2e-5)
VARIANTS = ["peephole", "cifg", "layer_norm", "retained_readout"]
# torch runs LSTMP with its own (non-oneDNN) kernel on CPU and says so.
NO_ONEDNN_WARNING = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")
NEEDS_TORCH = ("needs torch, the `reference` extra: pip install torch==2.13.0 (the CPU wheel), "
               "then pip install -e '.[test,reference]'")


class TestTorch:
    @pytest.fixture(autouse=True)
    def _torch(self):
        self.torch = pytest.importorskip("torch", reason=NEEDS_TORCH)

    def module(self, **kwargs):
        self.torch.manual_seed(0)
        return self.torch.nn.LSTM(INPUT, HIDDEN, batch_first=True, **kwargs)

    def torch_run(self, module, x_in, lengths):
        """Outputs (padded with zeros), h_n and c_n of `module`, packed when `lengths`."""
        torch = self.torch
        if lengths is not None:
            x_in = torch.nn.utils.rnn.pack_padded_sequence(
                x_in, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False)
        out, (h_n, c_n) = module(x_in)
        if lengths is not None:
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                            total_length=STEPS)
        return out, h_n, c_n

    def check_outputs(self, module, packed):
        xs = np.random.default_rng(0).standard_normal((BATCH, STEPS, INPUT)).astype(np.float32)
        lengths = np.array([STEPS, 2, 5]) if packed else None
        with self.torch.no_grad():
            out, h_n, c_n = self.torch_run(module, self.torch.from_numpy(xs), lengths)
        params = interop.from_torch(module)
        outputs, finals = jaxlstm.lstm_stack(params, xs, seq_lengths=lengths)
        np.testing.assert_allclose(outputs, out.numpy(), **TOL)
        # torch orders h_n as (layer 0 forward, layer 0 backward, layer 1 forward, ...).
        ours = [s for layer in finals for s in layer if s is not None]
        np.testing.assert_allclose(np.stack([s.h for s in ours]), h_n.numpy(), **TOL)
        np.testing.assert_allclose(np.stack([s.c for s in ours]), c_n.numpy(), **TOL)

    @pytest.mark.parametrize("num_layers", [1, 3])
    @pytest.mark.parametrize("bidirectional", [False, True])
    @pytest.mark.parametrize("packed", [False, True])
    def test_outputs_match_torch(self, num_layers, bidirectional, packed):
        self.check_outputs(self.module(num_layers=num_layers, bidirectional=bidirectional),
                           packed)

    @NO_ONEDNN_WARNING
    @pytest.mark.parametrize("num_layers", [1, 2])
    @pytest.mark.parametrize("bidirectional", [False, True])
    @pytest.mark.parametrize("packed", [False, True])
    def test_projection_outputs_match_torch(self, num_layers, bidirectional, packed):
        # LSTMP: h_n and the outputs are PROJ wide, c_n HIDDEN wide.
        module = self.module(num_layers=num_layers, bidirectional=bidirectional,
                             proj_size=PROJ)
        params = interop.from_torch(module)
        directions = 2 if bidirectional else 1
        for layer, layer_params in enumerate(params):
            for p in layer_params[:directions]:
                assert p.w_p.shape == (HIDDEN, PROJ)
                assert p.w_h.shape == (PROJ, 4 * HIDDEN)
                assert p.w_x.shape == (INPUT if layer == 0 else directions * PROJ, 4 * HIDDEN)
        self.check_outputs(module, packed)

    @NO_ONEDNN_WARNING
    def test_projection_gradients_match_torch(self):
        torch = self.torch
        module = self.module(num_layers=2, bidirectional=True, proj_size=PROJ)
        rng = np.random.default_rng(1)
        xs = rng.standard_normal((BATCH, STEPS, INPUT)).astype(np.float32)
        lengths = np.array([STEPS, 2, 5])
        readout = rng.standard_normal((BATCH, STEPS, 2 * PROJ)).astype(np.float32)
        h_readout = rng.standard_normal((4, BATCH, PROJ)).astype(np.float32)
        c_readout = rng.standard_normal((4, BATCH, HIDDEN)).astype(np.float32)

        x_t = torch.from_numpy(xs).requires_grad_(True)
        module.zero_grad()
        out, h_n, c_n = self.torch_run(module, x_t, lengths)
        loss = ((out * torch.from_numpy(readout)).sum() + (h_n * torch.from_numpy(h_readout)).sum()
                + (c_n * torch.from_numpy(c_readout)).sum())
        loss.backward()
        torch_grads = {name: p.grad.numpy() for name, p in module.named_parameters()}

        def our_loss(params, xs):
            outputs, finals = jaxlstm.lstm_stack(params, xs, seq_lengths=lengths)
            ours = [s for layer in finals for s in layer]
            return (jnp.sum(outputs * readout) + jnp.sum(jnp.stack([s.h for s in ours]) * h_readout)
                    + jnp.sum(jnp.stack([s.c for s in ours]) * c_readout))

        grads, x_grad = jax.jit(jax.grad(our_loss, argnums=(0, 1)))(interop.from_torch(module),
                                                                    jnp.asarray(xs))
        for layer, layer_grads in enumerate(grads):
            for g, suffix in zip(layer_grads, ("", "_reverse")):
                key = f"_l{layer}{suffix}"
                np.testing.assert_allclose(g.w_x.T, torch_grads["weight_ih" + key], **TOL)
                np.testing.assert_allclose(g.w_h.T, torch_grads["weight_hh" + key], **TOL)
                np.testing.assert_allclose(g.w_p.T, torch_grads["weight_hr" + key], **TOL)
                # b = bias_ih + bias_hh, so each torch bias gets the gradient of b.
                np.testing.assert_allclose(g.b, torch_grads["bias_ih" + key], **TOL)
                np.testing.assert_allclose(g.b, torch_grads["bias_hh" + key], **TOL)
        np.testing.assert_allclose(x_grad, x_t.grad.numpy(), **TOL)

    def test_round_trips_are_exact(self):
        module = self.module(num_layers=2, bidirectional=True)
        params = interop.from_torch(module)
        fresh = self.torch.nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True)
        fresh.load_state_dict(interop.to_torch(params))
        chex.assert_trees_all_equal(interop.from_torch(fresh), params)
        exported = interop.to_torch(params)
        np.testing.assert_array_equal(exported["bias_hh_l1_reverse"].numpy(), 0.0)

    def test_projection_round_trips_are_exact(self):
        torch = self.torch
        module = self.module(num_layers=2, bidirectional=True, proj_size=PROJ)
        params = interop.from_torch(module)
        fresh = torch.nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=PROJ)
        fresh.load_state_dict(interop.to_torch(params))
        chex.assert_trees_all_equal(interop.from_torch(fresh), params)
        exported = interop.to_torch(params)
        np.testing.assert_array_equal(exported["weight_hr_l1_reverse"].numpy(),
                                      np.asarray(params[1].backward.w_p).T)
        # jaxlstm's own LSTMP params export too.
        params = jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN, proj_size=PROJ)
        fresh = torch.nn.LSTM(INPUT, HIDDEN, proj_size=PROJ)
        fresh.load_state_dict(interop.to_torch(params))
        chex.assert_trees_all_equal(interop.from_torch(fresh)[0].forward, params)

    @pytest.mark.parametrize("cell", VARIANTS)
    def test_variants_do_not_export(self, cell):
        variant = jaxlstm.init_lstm(jax.random.key(0), 2 * HIDDEN, HIDDEN, cell=cell)
        name = type(variant.cell).__name__
        with pytest.raises(ValueError, match=f"layer 0 \\(forward\\): cell variant {name}"):
            interop.to_torch(variant._replace(w_x=variant.w_x[:INPUT]))
        # In a stack, the error names the layer and direction.
        params = jaxlstm.init_lstm_stack(jax.random.key(1), INPUT, HIDDEN, num_layers=2,
                                         bidirectional=True)
        params = (params[0], params[1]._replace(backward=variant))
        with pytest.raises(ValueError, match=f"layer 1 \\(backward\\): cell variant {name}"):
            interop.to_torch(params)

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
        safetensors_torch = pytest.importorskip("safetensors.torch", reason=NEEDS_TORCH)
        module = self.module(bidirectional=True)
        path = tmp_path / "lstm.safetensors"
        safetensors_torch.save_file(module.state_dict(), str(path))
        chex.assert_trees_all_equal(interop.load_torch(path), interop.from_torch(module))

    def test_clear_errors(self):
        torch = self.torch
        with pytest.raises(TypeError, match="must be a torch.nn.LSTM or a torch.nn.GRU, got RNN"):
            interop.from_torch(torch.nn.RNN(INPUT, HIDDEN))
        state = dict(self.module().state_dict())
        state["weight_hh_l0"] = state["weight_hh_l0"][:, :3]
        with pytest.raises(ValueError, match=r"weight_hh must be \(4H, H\)"):
            interop.from_torch(state)
        with pytest.raises(ValueError, match="Unexpected key 'extra'"):
            interop.from_torch({**self.module().state_dict(), "extra": np.zeros(1)})
        with pytest.raises(ValueError, match="No nn.LSTM weights found"):
            interop.from_torch(self.module().state_dict(), prefix="decoder.")
        state = dict(self.module().state_dict())
        state["bias_ih_l0"] = state["bias_ih_l0"][:-1]
        with pytest.raises(ValueError, match=r"layer 0: bias_ih must be \(4H,\)"):
            interop.from_torch(state)

    def test_clear_projection_errors(self):
        state = dict(self.module(num_layers=2, proj_size=PROJ).state_dict())
        bad = {**state, "weight_hh_l0": state["weight_hh_l0"][:, :2]}
        with pytest.raises(ValueError, match=r"layer 0: weight_hh must be \(4H, P\)"):
            interop.from_torch(bad)
        bad = {**state, "weight_hr_l0": state["weight_hr_l0"][:, :2]}
        with pytest.raises(ValueError, match=r"layer 0: with proj_size, weight_hr must be"):
            interop.from_torch(bad)
        # Layer 1 reads PROJ features, not HIDDEN.
        bad = {**state, "weight_ih_l1": self.module(num_layers=2).state_dict()["weight_ih_l1"]}
        with pytest.raises(ValueError, match=f"layer 1: weight_ih reads {HIDDEN} features, but "
                                             f"the previous layer outputs {PROJ}"):
            interop.from_torch(bad)
        # nn.LSTM cannot hold proj_size >= hidden_size.
        params = jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN, proj_size=HIDDEN)
        with pytest.raises(ValueError, match="proj_size < hidden_size"):
            interop.to_torch(params)


class _Payload:
    """Stands for an arbitrary pickled object in a weights file."""


@pytest.mark.parametrize("convert", [interop.to_flax_linen, interop.to_flax_nnx])
def test_flax_converters_refuse_variants_and_projection(convert):
    # Flax's LSTM cells are the standard cell without projection (no flax import needed).
    for cell in VARIANTS:
        params = jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN, cell=cell)
        name = type(params.cell).__name__
        with pytest.raises(ValueError, match=f"only the standard cell, but params.cell is {name}"):
            convert(params)
    params = jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN, proj_size=PROJ)
    with pytest.raises(ValueError, match="no output projection, but params.w_p is set"):
        convert(params)


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
