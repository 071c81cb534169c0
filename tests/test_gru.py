"""The GRU (`jaxlstm.gru`, `jaxlstm.gru_cell`, `init_gru`, family "gru"): against a plain NumPy
loop of its equations, its fused backward against JAX's autodiff of the same loop, under jit /
vmap / grad / checkpoint, in stacks, against PyTorch's nn.GRU (skipped without torch), and its
refusals of bad input.

Compiling is what these tests spend their time on: the shapes are small and shared, and the
jitted functions are built once per module.
"""

import ast
import functools
import pathlib
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import family as families
from jaxlstm import interop

BATCH, STEPS, INPUT, HIDDEN = 3, 5, 3, 4
TOL = {"atol": 1e-5, "rtol": 1e-5}     # float32 against a float64 NumPy loop
GRAD_TOL = {"atol": 2e-5, "rtol": 2e-5}
LENGTHS = np.array([STEPS, 2, 0])       # full, partial and empty rows
TORCH_TOL = {"atol": 2e-6, "rtol": 2e-5}  # the LSTM's parity tests'
TORCH_LENGTHS = np.array([STEPS, 2, 4])  # torch's packed sequences refuse a length of 0
NEEDS_TORCH = ("needs torch, the `reference` extra: pip install torch==2.13.0 (the CPU wheel), "
               "then pip install -e '.[test,reference]'")


def noise(init, seed):
    """Params of `init`'s structure, every leaf random, so every bias is nonzero and distinct.
    Only the shapes come from `init` (traced, not compiled: random draws compile slowly);
    NumPy draws the numbers."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype),
                        jax.eval_shape(init, jax.random.key(0)))


@functools.cache
def make_params(key=0):
    return noise(lambda k: jaxlstm.init_gru(k, INPUT, HIDDEN), key + 100)


def inputs(shape=(BATCH, STEPS, INPUT), seed=1):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


_cell = jax.jit(jaxlstm.gru_cell)


def numpy_gru(params, xs, h0, lengths=None, reverse=False):
    """The equations, step by step in float64 NumPy, with packed-sequence lengths: each row's
    valid prefix (backwards if `reverse`), zeros after it, the state after its last step."""
    w_x, w_h, b, b_hn = (np.asarray(a, np.float64) for a in params)
    xs, h = np.asarray(xs, np.float64), np.array(h0, np.float64)
    batch, steps, _ = xs.shape
    hidden = w_h.shape[0]
    lengths = np.full(batch, steps) if lengths is None else lengths
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))
    hs = np.zeros((batch, steps, hidden))
    for row in range(batch):
        order = range(lengths[row])
        for t in (reversed(order) if reverse else order):
            x_r, x_z, x_n = np.split(xs[row, t] @ w_x + b, 3)
            h_r, h_z, h_n = np.split(h[row] @ w_h, 3)
            r = sigmoid(x_r + h_r)
            z = sigmoid(x_z + h_z)
            n = np.tanh(x_n + r * (h_n + b_hn))
            h[row] = (1.0 - z) * n + z * h[row]
            hs[row, t] = h[row]
    return hs, h


@jax.jit
def both_directions(params, xs, h0, lengths):
    """`jaxlstm.gru` forwards and reversed, in one program."""
    return {reverse: jaxlstm.gru(params, xs, initial_state=h0, seq_lengths=lengths,
                                 reverse=reverse) for reverse in (False, True)}


@pytest.mark.parametrize("reverse", [False, True])
def test_matches_the_equations_in_a_numpy_loop(reverse):
    params, xs = make_params(), inputs()
    h0 = inputs((BATCH, HIDDEN), seed=2)
    hs, h = both_directions(params, xs, h0, jnp.asarray(LENGTHS))[reverse]
    want_hs, want_h = numpy_gru(params, xs, h0, LENGTHS, reverse)
    chex.assert_trees_all_close((hs, h), (want_hs, want_h), **TOL)
    # Padded steps are exactly zero; a length of 0 leaves the initial state untouched.
    np.testing.assert_array_equal(np.asarray(hs)[1, 2:], 0.0)
    np.testing.assert_array_equal(np.asarray(hs)[2], 0.0)
    np.testing.assert_array_equal(np.asarray(h)[2], np.asarray(h0)[2])
    # One step by gru_cell, any batch shape (here none).
    one = _cell(params, h0[0], xs[0, 0])
    chex.assert_trees_all_close(one, numpy_gru(params, xs[:1, :1], h0[:1])[1][0], **TOL)


def test_the_reset_gate_scales_the_recurrent_bias():
    """PyTorch's form: b_hn sits inside r * (...), so with r = 0 it has no effect at all,
    while b_in does."""
    params = make_params()
    hidden = HIDDEN
    closed = params._replace(b=params.b.at[:hidden].set(-1e4))     # r = sigmoid(-1e4) = 0
    x, h = inputs((BATCH, INPUT)), inputs((BATCH, HIDDEN), seed=2)
    base = _cell(closed, h, x)
    chex.assert_trees_all_close(_cell(closed._replace(b_hn=closed.b_hn + 5.0), h, x),
                                base, atol=0, rtol=0)
    assert float(jnp.abs(_cell(closed._replace(b=closed.b.at[2 * hidden:].add(5.0)), h, x)
                         - base).max()) > 1e-3


def loss(params, xs, h0, lengths, reverse, fused_backward, unroll=None):
    hs, h = jaxlstm.gru(params, xs, initial_state=h0, seq_lengths=lengths, reverse=reverse,
                        fused_backward=fused_backward, unroll=unroll)
    readout = jnp.cos(jnp.arange(hs.size, dtype=hs.dtype).reshape(hs.shape))
    return jnp.sum(hs * readout) + jnp.sum(jnp.sin(h))


@functools.partial(jax.jit, static_argnums=(4, 5))
def fused_and_autodiff(params, xs, h0, lengths, reverse, unroll, direction, eps):
    """Both backwards' gradients, and the fused form's loss a step ahead and behind along
    `direction`, in one program."""
    grads = {fused: jax.grad(loss, argnums=(0, 1, 2))(params, xs, h0, lengths, reverse, fused,
                                                      unroll)
             for fused in (True, False)}
    ahead, behind = (loss(jax.tree.map(lambda p, d, s=sign: p + s * eps * d, params, direction),
                          xs, h0, lengths, reverse, True, unroll) for sign in (1.0, -1.0))
    return grads[True], grads[False], ahead, behind


@pytest.mark.parametrize("reverse,unroll", [(False, None), (True, 2)])
def test_fused_backward_matches_autodiff(reverse, unroll):
    """The custom VJP (reverse loop carrying dh; dW_x, dW_h as matmuls after it) against JAX
    differentiating the same scan, with lengths, an initial state and (reversed) chunks of 2
    steps over 5 (a shorter last chunk)."""
    params, xs, h0 = make_params(), inputs(), inputs((BATCH, HIDDEN), seed=2)
    # And against a finite difference of the forward, along one direction.
    direction = jax.tree.map(lambda a: np.cos(np.arange(a.size, dtype=np.float32)).reshape(
        a.shape), params)   # NumPy: eager jnp operations compile one program each
    eps = 1e-3
    fused, plain, ahead, behind = fused_and_autodiff(params, xs, h0, jnp.asarray(LENGTHS),
                                                     reverse, unroll, direction, eps)
    chex.assert_trees_all_close(fused, plain, **GRAD_TOL)
    along = sum(np.vdot(g, d) for g, d in zip(jax.tree.leaves(fused[0]),
                                              jax.tree.leaves(direction)))
    np.testing.assert_allclose((ahead - behind) / (2 * eps), along, rtol=2e-2)


@jax.jit
def _layouts(params, two, xs):
    """Every transformation and layout of test_jit_vmap_checkpoint_layouts_and_dtypes, in one
    program (jit is the first of them)."""
    out = {"jit": jaxlstm.gru(params, xs)}
    # vmap over a second params set and over inputs; two batch dims; no batch dim; time-major.
    out["vmap_params"] = jax.vmap(jaxlstm.gru, in_axes=(0, None))(two, xs)[0]
    out["vmap_xs"] = jax.vmap(jaxlstm.gru, in_axes=(None, 0))(params, xs[None])
    out["two_batch"] = jaxlstm.gru(params, jnp.stack([xs, xs]))
    out["no_batch"] = jaxlstm.gru(params, xs[0])
    out["time_major"] = jaxlstm.gru(params, jnp.moveaxis(xs, 1, 0), time_major=True)
    # jax.checkpoint around the layer, gradient through it.
    out["grad_checkpoint"] = jax.grad(
        lambda p: jnp.sum(jax.checkpoint(jaxlstm.gru)(p, xs)[0]))(params)
    out["grad"] = jax.grad(lambda p: jnp.sum(jaxlstm.gru(p, xs)[0]))(params)
    # Dtypes: promoted from xs and params, outputs in it.
    out["bfloat16"] = jaxlstm.gru(jax.tree.map(lambda a: a.astype(jnp.bfloat16), params),
                                  xs.astype(jnp.bfloat16))
    out["mixed"] = jaxlstm.gru(params, xs.astype(jnp.bfloat16))[0]
    # Forward-mode through the autodiff form.
    out["tangent"] = jax.jvp(lambda x: jaxlstm.gru(params, x, fused_backward=False)[0], (xs,),
                             (jnp.ones_like(xs),))[1]
    return out


def test_jit_vmap_checkpoint_layouts_and_dtypes():
    params, xs = make_params(), inputs()
    eager_hs, eager_h = jaxlstm.gru(params, xs)
    two = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, make_params(7))
    out = _layouts(params, two, xs)
    chex.assert_trees_all_close(out["jit"], (eager_hs, eager_h), **TOL)
    chex.assert_trees_all_close(out["vmap_params"][0], eager_hs, **TOL)
    chex.assert_trees_all_close(out["vmap_xs"], (eager_hs[None], eager_h[None]), **TOL)
    hs_2d, h_2d = out["two_batch"]
    chex.assert_trees_all_close((hs_2d[1], h_2d[1]), (eager_hs, eager_h), **TOL)
    chex.assert_trees_all_close(out["no_batch"], (eager_hs[0], eager_h[0]), **TOL)
    tm_hs, tm_h = out["time_major"]
    chex.assert_trees_all_close((jnp.moveaxis(tm_hs, 0, 1), tm_h), (eager_hs, eager_h), **TOL)
    chex.assert_trees_all_close(out["grad_checkpoint"], out["grad"], **GRAD_TOL)
    hs, h = out["bfloat16"]
    assert hs.dtype == h.dtype == jnp.bfloat16
    chex.assert_trees_all_close(hs.astype(jnp.float32), eager_hs, atol=5e-2)
    assert out["mixed"].dtype == jnp.float32
    assert out["tangent"].shape == eager_hs.shape


def test_init_is_pytorchs_by_default_and_takes_initialisers():
    # Both inits in one jitted program (eagerly, each random draw compiles its own).
    params, custom = jax.jit(lambda key: (
        jaxlstm.init_gru(key, 5, 16),
        jaxlstm.init_gru(key, 5, 16, dtype=jnp.bfloat16,
                         recurrent_init=jax.nn.initializers.orthogonal(),
                         bias_init=jax.nn.initializers.ones)))(jax.random.key(0))
    assert jax.tree.map(jnp.shape, params) == jaxlstm.GRUParams((5, 48), (16, 48), (48,), (16,))
    params = jax.tree.map(np.asarray, params)
    bound = 1 / np.sqrt(16)
    for a in (params.w_x, params.w_h, params.b[32:], params.b_hn):
        assert np.abs(a).max() <= bound and np.abs(a).min() > 0
    # r and z biases are a sum of PyTorch's two biases: within 2 / sqrt(H), beyond 1 / sqrt(H).
    assert bound < np.abs(params.b[:32]).max() <= 2 * bound
    assert custom.w_h.dtype == jnp.bfloat16
    block = np.asarray(custom.w_h[:, :16], np.float32)
    chex.assert_trees_all_close(block.T @ block, np.eye(16), atol=2e-2)
    np.testing.assert_array_equal(custom.b, 1.0)
    np.testing.assert_array_equal(custom.b_hn, 1.0)


@jax.jit
def _stacks(params, mixed, xs, lengths):
    """test_family_and_stacks's two stacks' runs and their layers composed by hand, in one
    program."""
    out = {"stack": jaxlstm.lstm_stack(params, xs, seq_lengths=lengths)}
    layer_input, finals = xs, []
    for layer in params:
        hs_f, h_f = jaxlstm.gru(layer.forward, layer_input, seq_lengths=lengths)
        hs_b, h_b = jaxlstm.gru(layer.backward, layer_input, seq_lengths=lengths, reverse=True)
        finals.append(jaxlstm.Directions(h_f, h_b))
        layer_input = jnp.concatenate([hs_f, hs_b], axis=-1)
    out["by_hand"] = (layer_input, tuple(finals))
    # Layers of two families, options to the layers that take them.
    out["mixed"] = jaxlstm.lstm_stack(mixed, xs, unroll=2)[0]
    out["mixed_by_hand"] = jaxlstm.gru(mixed[1].forward,
                                       jaxlstm.lstm(mixed[0].forward, xs)[0])[0]
    return out


def test_family_and_stacks():
    """Registered as "gru": a bidirectional 2-layer stack of GRU layers (and one mixed with an
    LSTM layer) is each layer's `jaxlstm.gru` composed by hand, with lengths. (Decoding a GRU
    stack step by step is in tests/test_decode.py, which runs every registered family.)"""
    gru_family = families.get("gru")
    assert families.of(make_params()) is gru_family and gru_family.label == "GRU"
    xs, lengths = inputs(), jnp.asarray(LENGTHS)
    params = noise(lambda key: jaxlstm.init_lstm_stack(key, INPUT, HIDDEN, cell="gru",
                                                       num_layers=2, bidirectional=True), 1)
    mixed = noise(lambda key: jaxlstm.init_lstm_stack(key, INPUT, HIDDEN, cell=("lstm", "gru"),
                                                      num_layers=2), 2)
    out = _stacks(params, mixed, xs, lengths)
    assert params[1].backward.w_x.shape == (2 * HIDDEN, 3 * HIDDEN)
    chex.assert_trees_all_close(out["stack"], out["by_hand"], **TOL)
    chex.assert_trees_all_close(out["mixed"], out["mixed_by_hand"], **TOL)
    with pytest.raises(ValueError, match=r"params\[0\]: zoneout_c applies to LSTM layers, not "
                                         r"to GRU \(family 'gru'\)"):
        jaxlstm.lstm_stack(params, xs, zoneout_c=0.1)
    with pytest.raises(ValueError, match="proj_size apply to LSTM layers, not to cell='gru'"):
        jaxlstm.init_lstm_stack(jax.random.key(0), INPUT, HIDDEN, cell="gru", proj_size=2)


def test_bad_input_raises_clear_errors():
    params, xs = make_params(), inputs()
    lstm_params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), jax.eval_shape(
        lambda key: jaxlstm.init_lstm(key, INPUT, HIDDEN), jax.random.key(0)))  # no compile
    with pytest.raises(ValueError, match=r"xs must have 3 features on its last axis .*"
                                         r"got shape \(3, 5, 7\)"):
        jaxlstm.gru(params, jnp.zeros((BATCH, STEPS, 7)))
    with pytest.raises(ValueError, match=r"xs must have rank >= 2"):
        jaxlstm.gru(params, jnp.zeros((INPUT,)))
    with pytest.raises(TypeError, match="xs must have a floating dtype .* got int32"):
        jaxlstm.gru(params, jnp.zeros((BATCH, STEPS, INPUT), jnp.int32))
    with pytest.raises(ValueError, match=r"params.w_h must have shape \(hidden_size, "
                                         r"3 \* hidden_size\), gate blocks r, z, n, got \(4, 16\)"):
        jaxlstm.gru(params._replace(w_h=jnp.zeros((HIDDEN, 4 * HIDDEN))), xs)
    with pytest.raises(ValueError, match=r"params.b_hn must have shape \(4,\)"):
        jaxlstm.gru(params._replace(b_hn=jnp.zeros(3 * HIDDEN)), xs)
    with pytest.raises(ValueError, match=r"params.b must have shape \(12,\)"):
        jaxlstm.gru(params._replace(b=jnp.zeros(HIDDEN)), xs)
    with pytest.raises(ValueError, match=r"params.w_x must have shape \(input_size, 12\)"):
        jaxlstm.gru(params._replace(w_x=jnp.zeros((INPUT, HIDDEN))), xs)
    with pytest.raises(TypeError, match=r"params must be GRUParams\(w_x, w_h, b, b_hn\), got "
                                        r"LSTMParams without a 'b_hn' field"):
        jaxlstm.gru(lstm_params, xs)
    with pytest.raises(ValueError, match=r"initial_state must have shape \(3, 4\) \(batch shape "
                                         r"\(3,\), hidden_size 4\), got \(3, 5\)"):
        jaxlstm.gru(params, xs, initial_state=jnp.zeros((BATCH, HIDDEN + 1)))
    with pytest.raises(ValueError, match=r"seq_lengths must lie in \[0, 5\]"):
        jaxlstm.gru(params, xs, seq_lengths=jnp.array([6, 1, 1]))
    with pytest.raises(TypeError, match="seq_lengths must have an integer dtype"):
        jaxlstm.gru(params, xs, seq_lengths=jnp.ones(BATCH))
    with pytest.raises(ValueError, match="unroll must be None, a positive int or a bool"):
        jaxlstm.gru(params, xs, unroll=0)
    with pytest.raises(ValueError, match=r"h must have shape \(3, 4\)"):
        jaxlstm.gru_cell(params, jnp.zeros((2, HIDDEN)), xs[:, 0])
    with pytest.raises(ValueError, match=r"x_t must have shape \(\.\.\., 3\), got a scalar"):
        jaxlstm.gru_cell(params, jnp.zeros(HIDDEN), jnp.float32(1.0))
    with pytest.raises(ValueError, match="hidden_size must be a positive int, got 0"):
        jaxlstm.init_gru(jax.random.key(0), INPUT, 0)
    with pytest.raises(TypeError, match="input_size must be a positive int, got float 2.5"):
        jaxlstm.init_gru(jax.random.key(0), 2.5, HIDDEN)
    with pytest.raises(TypeError, match="dtype must be a floating dtype, got int32"):
        jaxlstm.init_gru(jax.random.key(0), INPUT, HIDDEN, dtype=jnp.int32)
    gru_family = families.get("gru")
    with pytest.raises(ValueError, match=r"^mode applies to families with several forms .*not "
                                         r"to GRU"):
        gru_family.apply(params, xs, mode="parallel")
    with pytest.raises(ValueError, match=r"^return_gates is not part of the family protocol"):
        gru_family.apply(params, xs, return_gates=True)


def test_gru_family_is_core_code():
    """jaxlstm/gru_family/ imports jax, numpy, chex, jaxlstm and the standard library only
    (tests/test_repo.py checks the other core folders the same way)."""
    folder = pathlib.Path(jaxlstm.__file__).parent / "gru_family"
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in {"jax", "numpy", "chex", "jaxlstm"} | sys.stdlib_module_names, (
                    f"{path.name} imports {name}")


class TestTorch:
    """nn.GRU (2 layers, bidirectional, packed variable lengths) through `interop.from_torch`
    and `jaxlstm.lstm_stack`; tolerances atol 2e-6, rtol 2e-5 (the LSTM's parity tests')."""

    @pytest.fixture(autouse=True)
    def _torch(self):
        self.torch = pytest.importorskip("torch", reason=NEEDS_TORCH)

    def module(self, **kwargs):
        self.torch.manual_seed(0)
        return self.torch.nn.GRU(INPUT, HIDDEN, num_layers=2, bidirectional=True,
                                 batch_first=True, **kwargs)

    def torch_run(self, module, x_t, h0):
        torch = self.torch
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x_t, torch.from_numpy(TORCH_LENGTHS), batch_first=True, enforce_sorted=False)
        out, h_n = module(packed, h0)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                        total_length=STEPS)
        return out, h_n

    def setup_case(self):
        rng = np.random.default_rng(0)
        xs = rng.standard_normal((BATCH, STEPS, INPUT)).astype(np.float32)
        h0 = rng.standard_normal((4, BATCH, HIDDEN)).astype(np.float32)
        # torch orders h_0 / h_n as (layer 0 forward, layer 0 backward, layer 1 forward, ...).
        ours_h0 = tuple(jaxlstm.Directions(h0[2 * k], h0[2 * k + 1]) for k in range(2))
        return xs, h0, ours_h0

    def test_packed_bidirectional_two_layers_outputs_states_and_gradients(self):
        torch = self.torch
        module = self.module()
        xs, h0, ours_h0 = self.setup_case()
        rng = np.random.default_rng(1)
        readout = rng.standard_normal((BATCH, STEPS, 2 * HIDDEN)).astype(np.float32)
        state_readout = rng.standard_normal((4, BATCH, HIDDEN)).astype(np.float32)
        x_t = torch.from_numpy(xs).requires_grad_(True)
        out, h_n = self.torch_run(module, x_t, torch.from_numpy(h0))
        torch_loss = ((out * torch.from_numpy(readout)).sum()
                      + (h_n * torch.from_numpy(state_readout)).sum())
        torch_loss.backward()

        params = interop.from_torch(module)
        assert isinstance(params[1].backward, jaxlstm.GRUParams)
        lengths = jnp.asarray(TORCH_LENGTHS)

        def our_loss(params, xs):
            outputs, finals = jaxlstm.lstm_stack(params, xs, seq_lengths=lengths,
                                                 initial_state=ours_h0)
            states = jnp.stack([s for layer in finals for s in layer])
            return (jnp.sum(outputs * readout) + jnp.sum(states * state_readout),
                    (outputs, states))

        (_, (outputs, states)), (g_params, g_xs) = jax.jit(jax.value_and_grad(
            our_loss, argnums=(0, 1), has_aux=True))(params, jnp.asarray(xs))
        np.testing.assert_allclose(outputs, out.detach().numpy(), **TORCH_TOL)
        np.testing.assert_allclose(states, h_n.detach().numpy(), **TORCH_TOL)
        np.testing.assert_array_equal(np.asarray(outputs)[1, 2:], 0.0)

        torch_grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
        for layer, directions in enumerate(g_params):
            for g, suffix in zip(directions, ("", "_reverse")):
                key = f"_l{layer}{suffix}"
                np.testing.assert_allclose(g.w_x.T, torch_grads["weight_ih" + key],
                                           **TORCH_TOL)
                np.testing.assert_allclose(g.w_h.T, torch_grads["weight_hh" + key],
                                           **TORCH_TOL)
                # b = bias_ih + (bias_hh's r, z blocks): each gets b's gradient there.
                np.testing.assert_allclose(g.b, torch_grads["bias_ih" + key], **TORCH_TOL)
                np.testing.assert_allclose(g.b[:2 * HIDDEN],
                                           torch_grads["bias_hh" + key][:2 * HIDDEN],
                                           **TORCH_TOL)
                np.testing.assert_allclose(g.b_hn, torch_grads["bias_hh" + key][2 * HIDDEN:],
                                           **TORCH_TOL)
        np.testing.assert_allclose(g_xs, x_t.grad.numpy(), **TORCH_TOL)

    def test_round_trips_are_exact_and_state_dicts_read(self):
        torch = self.torch
        params = interop.from_torch(self.module())
        fresh = self.module()
        fresh.load_state_dict(interop.to_torch(params))
        chex.assert_trees_all_equal(interop.from_torch(fresh), params)
        exported = interop.to_torch(params)
        np.testing.assert_array_equal(exported["bias_hh_l1_reverse"].numpy()[:2 * HIDDEN], 0.0)
        # jaxlstm's own params (one layer, no stack) export too; a state_dict under a prefix
        # and a module without biases read as a GRU's.
        single = make_params()
        one = torch.nn.GRU(INPUT, HIDDEN)
        one.load_state_dict(interop.to_torch(single))
        chex.assert_trees_all_close(interop.from_torch(one)[0].forward, single, atol=0, rtol=0)
        model = torch.nn.Sequential()
        model.add_module("encoder", self.module())
        chex.assert_trees_all_equal(interop.from_torch(model.state_dict(), prefix="encoder."),
                                    params)
        no_bias = interop.from_torch(torch.nn.GRU(INPUT, HIDDEN, bias=False).state_dict())
        np.testing.assert_array_equal(no_bias[0].forward.b_hn, 0.0)

    def test_clear_errors(self):
        state = dict(self.module().state_dict())
        with pytest.raises(ValueError, match=r"layer 0 \(reverse\): bias_hh must be \(3H,\)"):
            interop.from_torch({**state, "bias_hh_l0_reverse": state["bias_hh_l0"][:-1]})
        with pytest.raises(ValueError, match=r"layer 1: weight_ih reads 4 features, but the "
                                             r"previous layer outputs 8"):
            interop.from_torch({**state, "weight_ih_l1": state["weight_ih_l1"][:, :HIDDEN]})
        lstm = noise(lambda key: jaxlstm.init_lstm(key, 2 * HIDDEN, HIDDEN), 3)
        gru_stack = interop.from_torch(state)
        mixed = (gru_stack[0], gru_stack[1]._replace(backward=lstm))
        with pytest.raises(ValueError, match=r"layer 1 \(backward\) holds LSTM params but layer "
                                             r"0 \(forward\) holds GRU params"):
            interop.to_torch(mixed)
