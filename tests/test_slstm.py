"""jaxlstm.xlstm.slstm against a Python loop over its step, and against the xlstm reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm import LSTMState
from jaxlstm.xlstm.slstm import (
    SLSTMParams,
    SLSTMState,
    forget_bias_powerlaw,
    init_slstm,
    recurrent_kernel,
    slstm,
    slstm_cell,
)

NEEDS_REFERENCE = ("needs torch and NX-AI's xlstm / mlstm_kernels, the `reference` "
                   "extra: pip install torch==2.13.0 (the CPU wheel), then pip install "
                   "-e '.[test,reference]'")

INPUT, HIDDEN, HEADS, STEPS = 3, 4, 2, 6
TOL = {"atol": 1e-5, "rtol": 1e-5}
GRAD_TOL = {"atol": 1e-5, "rtol": 1e-4}


def make(batch_shape, key=0, steps=STEPS):
    """Params with every weight random (the default init has R = 0), and inputs."""
    keys = jax.random.split(jax.random.key(key), 3)
    params = init_slstm(keys[0], INPUT, HIDDEN, num_heads=HEADS, recurrent_init="standard",
                        bias_init="standard")
    params = params._replace(r=params.r * 4.0, b=params.b * 4.0)  # make the recurrence matter
    xs = 2.0 * jax.random.normal(keys[1], batch_shape + (steps, INPUT))
    return params, xs


def random_state(batch_shape, key=7):
    h, c, m = jax.random.normal(jax.random.key(key), (3,) + batch_shape + (HIDDEN,))
    n = jnp.exp(m) + 0.5  # a reachable state: n > 0
    return SLSTMState(h=h, c=c, n=n, m=m)


def loop_slstm(params, xs, initial_state=None, seq_lengths=None, reverse=False):
    """The plain Python loop: one sequence at a time, over its valid steps only."""
    batch_shape, num_steps = xs.shape[:-2], xs.shape[-2]
    flat_xs = xs.reshape((-1, num_steps, xs.shape[-1]))
    count = flat_xs.shape[0]
    if initial_state is None:
        initial_state = SLSTMState(*[jnp.zeros(batch_shape + (HIDDEN,))] * 4)
    flat_state = [a.reshape((count, HIDDEN)) for a in initial_state]
    lengths = (np.full(count, num_steps) if seq_lengths is None
               else np.asarray(seq_lengths).reshape(count))
    hs, finals = [], []
    for b in range(count):
        state = SLSTMState(*(a[b] for a in flat_state))
        h_seq = [jnp.zeros(HIDDEN)] * num_steps
        steps = range(int(lengths[b]))
        for t in reversed(steps) if reverse else steps:
            state, h_seq[t] = slstm_cell(params, state, flat_xs[b, t])
        hs.append(jnp.stack(h_seq))
        finals.append(state)
    hs = jnp.stack(hs).reshape(batch_shape + (num_steps, HIDDEN))
    final = SLSTMState(*(jnp.stack(f).reshape(batch_shape + (HIDDEN,)) for f in zip(*finals)))
    return hs, final


def assert_trees_close(actual, expected, **tol):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(e, np.float32), **tol)


@pytest.mark.parametrize(
    "batch_shape, reverse, with_state, lengths",
    [
        ((), False, False, None),
        ((3,), True, True, [6, 0, 3]),
        ((2, 2), False, True, [[6, 1], [0, 4]]),
    ],
)
def test_matches_python_loop(batch_shape, reverse, with_state, lengths):
    params, xs = make(batch_shape)
    state = random_state(batch_shape) if with_state else None
    seq_lengths = None if lengths is None else jnp.asarray(lengths)
    hs, final = jax.jit(lambda p, x, s, n: slstm(p, x, initial_state=s, seq_lengths=n,
                                                 reverse=reverse))(params, xs, state,
                                                                   seq_lengths)
    want_hs, want_final = loop_slstm(params, xs, state, seq_lengths, reverse)
    assert hs.shape == batch_shape + (STEPS, HIDDEN)
    assert_trees_close(hs, want_hs, **TOL)
    assert_trees_close(final, want_final, **TOL)
    if lengths is not None:  # padded outputs are exactly zero
        padded = np.arange(STEPS) >= np.asarray(lengths)[..., None]
        assert np.all(np.asarray(hs)[padded] == 0.0)


def test_time_major_two_batch_dims_and_gates():
    params, xs = make((2, 3))
    lengths = jnp.array([[6, 2, 0], [5, 6, 1]])
    hs_tm, final_tm, gates = slstm(params, jnp.moveaxis(xs, -2, 0), time_major=True,
                                   seq_lengths=lengths, return_gates=True)
    want_hs, want_final = loop_slstm(params, xs, seq_lengths=lengths)
    assert hs_tm.shape == (STEPS, 2, 3, HIDDEN)
    assert_trees_close(jnp.moveaxis(hs_tm, 0, -2), want_hs, **TOL)
    assert_trees_close(final_tm, want_final, **TOL)
    assert gates.i.shape == hs_tm.shape
    # h = o * c / n at every valid step; gates are zero at padded ones.
    np.testing.assert_allclose(gates.o * gates.c / jnp.where(gates.n == 0, 1, gates.n), hs_tm,
                               **TOL)
    assert np.all(np.asarray(gates.f)[1:, 0, 2] == 0.0)


@pytest.mark.parametrize(
    "reverse, options",
    [(True, {"fused_backward": False}), (False, {"remat_chunk": 4, "unroll": 2})],
    ids=["reverse_autodiff", "fused_remat_unroll"],
)
def test_gradients_match_python_loop(reverse, options):
    """Gradients w.r.t. params, inputs and the initial state (its m included: the true
    function depends on the initial scale; only the m_t a step computes is a constant).
    The fused backward without remat is checked against the reference below."""
    params, xs = make((3,), steps=7)
    state = random_state((3,))
    lengths = jnp.array([7, 3, 0])
    weights = jax.random.normal(jax.random.key(3), (3, 7, HIDDEN))

    def loss(run):
        def f(p, x, s):
            hs, final = run(p, x, s)
            return jnp.sum(weights * hs) + jnp.sum(final.h * final.c) + jnp.sum(final.n)
        return jax.jit(jax.grad(f, argnums=(0, 1, 2)))

    want = loss(lambda p, x, s: loop_slstm(p, x, s, lengths, reverse))(params, xs, state)
    got = loss(lambda p, x, s: slstm(p, x, initial_state=s, seq_lengths=lengths,
                                     reverse=reverse, **options))(params, xs, state)
    assert_trees_close(got, want, **GRAD_TOL)


def test_the_stabiliser_carries_no_gradient():
    params, xs = make((2,))
    state = random_state((2,))
    d_params, d_state = jax.jit(jax.grad(lambda p, s: jnp.sum(slstm_cell(p, s, xs[:, 0])[0].m),
                                         argnums=(0, 1)))(params, state)
    assert not any(np.any(g) for g in jax.tree.leaves((d_params, d_state)))


def test_recurrent_kernel_is_the_per_head_map():
    r = jax.random.normal(jax.random.key(0), (3, 2, 4, 2))
    h = jax.random.normal(jax.random.key(1), (5, 6))
    per_head = jnp.einsum("bkd,kdge->bgke", h.reshape(5, 3, 2), r).reshape(5, 24)
    np.testing.assert_allclose(h @ recurrent_kernel(r), per_head, **TOL)


def test_init_defaults():
    params = init_slstm(jax.random.key(0), 5, 8, num_heads=2)
    assert params.w_x.shape == (5, 32) and params.r.shape == (2, 4, 4, 4)
    assert not np.any(params.r)  # recurrent weights start at zero, as the reference's
    b = np.asarray(params.b).reshape(4, 2, 4)
    np.testing.assert_allclose(b[1, 0], [5.0, 5 - 12 * (1 / 3) ** 0.3, 5 - 12 * (2 / 3) ** 0.3,
                                         -7.0], rtol=1e-6)
    np.testing.assert_array_equal(b[1, 0], b[1, 1])
    assert not np.any(b[[0, 2, 3]])
    np.testing.assert_allclose(forget_bias_powerlaw(3, 1, 3), [5.0, 5 - 12 * 0.5**0.95, -7.0],
                               rtol=1e-6)
    assert init_slstm(jax.random.key(0), 5, 8, dtype=jnp.bfloat16).w_x.dtype == jnp.bfloat16


def test_bfloat16_follows_float32():
    params, xs = make((2,), steps=20)
    hs32, final32 = slstm(params, xs)
    params16, xs16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), (params, xs))
    hs16, final16 = slstm(params16, xs16)
    assert hs16.dtype == jnp.bfloat16 and final16.m.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(hs16, np.float32), hs32, atol=0.05)
    np.testing.assert_allclose(np.asarray(final16.h, np.float32), final32.h, atol=0.05)
    # float32 params with bfloat16 inputs compute in float32
    assert jax.eval_shape(slstm, params, xs16)[0].dtype == jnp.float32


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_ten_thousand_steps_stay_finite(dtype):
    """Large pre-activations over T = 10,000: exp(i~) alone would overflow; the stabiliser
    keeps every gate in (0, 1], and h = o * c / n stays within [-1, 1]."""
    params = init_slstm(jax.random.key(0), 2, 2, num_heads=1, recurrent_init="standard",
                        dtype=dtype)
    params = params._replace(w_x=params.w_x * 100.0)
    xs = jax.random.normal(jax.random.key(1), (1, 10_000, 2), dtype)
    # Step 0 from the zero state with i~ << 0: f' must not overflow there (inf * 0 = nan).
    xs = xs.at[0, 0].set(-3.0 * jnp.sign(params.w_x[:, 0]))
    assert float(xs[0, 0] @ params.w_x[:, 0]) < -100

    def loss(p):
        hs, final = slstm(p, xs)
        return jnp.sum(hs.astype(jnp.float32)), (hs, final)

    if dtype == jnp.float32:
        grads, (hs, final) = jax.jit(jax.grad(loss, has_aux=True))(params)
    else:  # the forward only, to save a compile
        grads, (hs, final) = (), jax.jit(loss)(params)[1]
    i_tilde = (xs[0] @ params.w_x)[:, :2].astype(jnp.float32)
    assert float(jnp.max(i_tilde)) > 100  # exp(i~) alone would overflow float32
    assert np.all(np.isfinite(np.asarray(hs, np.float32)))
    assert float(jnp.max(jnp.abs(hs.astype(jnp.float32)))) <= 1.0
    assert all(np.all(np.isfinite(np.asarray(a, np.float32)))
               for a in jax.tree.leaves((final, grads)))


def test_bad_inputs_raise_clear_errors():
    params, xs = make((2,))
    with pytest.raises(ValueError, match="num_heads must divide hidden_size"):
        init_slstm(jax.random.key(0), 3, 6, num_heads=4)
    with pytest.raises(ValueError, match="bias_init must be one of"):
        init_slstm(jax.random.key(0), 3, 8, bias_init="powerlaw")
    with pytest.raises(ValueError, match=r"xs must have 3 features .* got shape \(2, 6, 5\)"):
        slstm(params, jnp.ones((2, STEPS, 5)))
    with pytest.raises(ValueError, match="xs must have rank >= 2"):
        slstm(params, jnp.ones((3,)))
    with pytest.raises(TypeError, match="xs must have a floating dtype"):
        slstm(params, jnp.ones((2, STEPS, 3), jnp.int32))
    with pytest.raises(TypeError, match=r"initial_state must be SLSTMState\(h, c, n, m\)"):
        slstm(params, xs, initial_state=LSTMState(jnp.zeros((2, 4)), jnp.zeros((2, 4))))
    with pytest.raises(ValueError, match=r"initial_state.n must have shape \(2, 4\)"):
        bad = random_state((2,))._replace(n=jnp.ones((3, 4)))
        slstm(params, xs, initial_state=bad)
    with pytest.raises(ValueError, match=r"seq_lengths must lie in \[0, 6\]"):
        slstm(params, xs, seq_lengths=jnp.array([7, 1]))
    with pytest.raises(TypeError, match="seq_lengths must have an integer dtype"):
        slstm(params, xs, seq_lengths=jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"params.r must have shape \(num_heads, head_dim, 4"):
        slstm(params._replace(r=jnp.ones((2, 2, 2))), xs)
    with pytest.raises(ValueError, match=r"params.b must have shape \(16,\)"):
        slstm(params._replace(b=jnp.ones(12)), xs)
    with pytest.raises(TypeError, match="params must be SLSTMParams"):
        slstm(LSTMState(params.w_x, params.b), xs)
    with pytest.raises(ValueError, match="remat_chunk must be None or a positive int"):
        slstm(params, xs, remat_chunk=0)


class TestAgainstReference:
    """The xlstm package's sLSTM layer, vanilla (pure PyTorch) backend, float32 on CPU.

    The layer's per-gate input projections are per-head block-diagonal (LinearHeadwiseExpand)
    and its module named `fgate` produces the input gate's pre-activation (and `igate` the
    forget gate's); the cell's output, before the layer's group norm, is the sLSTM's h.
    """

    def make_reference(self, hidden=8, heads=2):
        torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
        layer_module = pytest.importorskip("xlstm.blocks.slstm.layer", reason=NEEDS_REFERENCE)
        torch.manual_seed(0)
        config = layer_module.sLSTMLayerConfig(
            embedding_dim=hidden, num_heads=heads, conv1d_kernel_size=0, backend="vanilla",
            dtype="float32", recurrent_weight_init="standard", bias_init="standard",
        )
        layer = layer_module.sLSTMLayer(config)
        with torch.no_grad():  # a recurrence strong enough to matter
            layer.slstm_cell._recurrent_kernel_.mul_(4.0)
            layer.slstm_cell._bias_.mul_(4.0)
        return torch, layer

    @staticmethod
    def projections(layer):
        """The layer's four projection modules in jaxlstm's gate order i, f, z, o."""
        return (layer.fgate, layer.igate, layer.zgate, layer.ogate)

    def to_params(self, layer):
        cell = layer.slstm_cell
        heads, hidden = cell.config.num_heads, cell.config.hidden_size
        head_dim = hidden // heads
        w_x = np.zeros((hidden, 4, heads, head_dim), np.float32)
        for g, module in enumerate(self.projections(layer)):
            w = module.weight.detach().numpy()  # (heads, out, in) per head
            for k in range(heads):
                w_x[k * head_dim:(k + 1) * head_dim, g, k, :] = w[k].T
        r = cell._recurrent_kernel_int2ext(cell._recurrent_kernel_).detach().numpy()
        b = cell._bias_.detach().numpy()  # gate-major (4, heads, head_dim), as jaxlstm's b
        return SLSTMParams(w_x=jnp.asarray(w_x.reshape(hidden, 4 * hidden)), r=jnp.asarray(r),
                           b=jnp.asarray(b))

    def run_reference(self, torch, layer, xs, weights):
        captured = {}
        hook = layer.slstm_cell.register_forward_hook(
            lambda module, inputs, output: captured.setdefault("out", output))
        x = torch.tensor(np.asarray(xs), requires_grad=True)
        layer(x, return_last_state=True)
        hook.remove()
        y, state = captured["out"]  # y: (B, heads, T, head_dim); state: (4, B, H) = h, c, n, m
        hs = y.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], -1)
        (hs * torch.tensor(np.asarray(weights))).sum().backward()
        return x, hs.detach().numpy(), state.detach().numpy()

    def test_forward_final_state_and_gradients(self):
        torch, layer = self.make_reference()
        params = self.to_params(layer)
        xs = jax.random.normal(jax.random.key(1), (3, 7, 8))
        weights = jax.random.normal(jax.random.key(2), (3, 7, 8))
        x, want_hs, want_state = self.run_reference(torch, layer, xs, weights)

        def loss(p, x):
            hs, final = slstm(p, x)
            return jnp.sum(weights * hs), (hs, final)

        (d_params, d_xs), (hs, final) = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(
            params, xs)
        np.testing.assert_allclose(hs, want_hs, atol=1e-5, rtol=1e-5)
        assert_trees_close(final, SLSTMState(*want_state), atol=1e-5, rtol=1e-5)

        np.testing.assert_allclose(d_xs, x.grad.numpy(), atol=1e-5, rtol=1e-4)
        cell = layer.slstm_cell
        np.testing.assert_allclose(
            d_params.r, cell._recurrent_kernel_int2ext(cell._recurrent_kernel_.grad).numpy(),
            atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(d_params.b, cell._bias_.grad.numpy(), atol=1e-5, rtol=1e-4)
        # The reference's per-head input weights get the diagonal blocks of jaxlstm's dW_x.
        heads, head_dim = 2, 4
        d_w_x = np.asarray(d_params.w_x).reshape(heads, head_dim, 4, heads, head_dim)
        for g, module in enumerate(self.projections(layer)):
            blocks = np.stack([d_w_x[k, :, g, k, :].T for k in range(heads)])
            np.testing.assert_allclose(blocks, module.weight.grad.numpy(), atol=1e-5, rtol=1e-4)

    def test_default_biases_match_the_reference(self):
        torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
        cell_module = pytest.importorskip("xlstm.blocks.slstm.cell", reason=NEEDS_REFERENCE)
        config = cell_module.sLSTMCellConfig(hidden_size=12, num_heads=3, backend="vanilla",
                                             dtype="float32", _block_idx=1, _num_blocks=3)
        torch.manual_seed(0)
        cell = cell_module.sLSTMCell(config)
        params = init_slstm(jax.random.key(0), 4, 12, num_heads=3, block_index=1, num_blocks=3)
        np.testing.assert_allclose(params.b, cell._bias_.detach().numpy(), atol=1e-6)
        np.testing.assert_array_equal(
            params.r, cell._recurrent_kernel_int2ext(cell._recurrent_kernel_).detach().numpy())
