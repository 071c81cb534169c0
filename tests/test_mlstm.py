"""The mLSTM: its three forms against each other, a NumPy loop of the step, and the reference
kernels of NX-AI/xlstm and mlstm_kernels (torch, float32)."""

import math
from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxlstm.xlstm.mlstm import (
    MLSTMState,
    init_mlstm,
    mlstm,
    mlstm_cell,
    mlstm_qkv,
    zero_mlstm_state,
)

NEEDS_REFERENCE = ("needs torch and NX-AI's xlstm / mlstm_kernels, the `reference` "
                   "extra: pip install torch==2.13.0 (the CPU wheel), then pip install "
                   "-e '.[test,reference]'")

INPUT, HIDDEN, HEADS = 3, 8, 2
D = HIDDEN // HEADS
MODES = ("recurrent", "parallel", "chunkwise")
TOL = {"atol": 1e-4, "rtol": 1e-4}
GRAD_TOL = {"atol": 2e-4, "rtol": 2e-3}

# One compile per shape and mode: eager calls would compile every primitive on its own.
run = jax.jit(mlstm, static_argnames=("mode", "chunk_size", "reverse", "time_major"))


def make(batch_shape=(2,), steps=70, key=0, input_size=INPUT, hidden=HIDDEN, heads=HEADS):
    """Params with gates that depend on x (the reference initialises their kernels to zero),
    and inputs."""
    keys = jax.random.split(jax.random.key(key), 4)
    params = init_mlstm(keys[0], input_size, hidden, num_heads=heads)
    params = params._replace(w_i=jax.random.normal(keys[1], params.w_i.shape),
                             w_f=jax.random.normal(keys[2], params.w_f.shape))
    xs = jax.random.normal(keys[3], batch_shape + (steps, input_size))
    return params, xs


def random_state(batch_shape, key=7, heads=HEADS, d=D):
    k_c, k_n, k_m = jax.random.split(jax.random.key(key), 3)
    return MLSTMState(C=jax.random.normal(k_c, batch_shape + (heads, d, d)),
                      n=jax.random.normal(k_n, batch_shape + (heads, d)),
                      m=jax.random.normal(k_m, batch_shape + (heads,)))


def assert_close(actual, expected, **tol):
    chex.assert_trees_all_close(actual, expected, **(tol or TOL))


def numpy_mlstm(params, xs, state=None):
    """The stabilised step written out in float64 NumPy, one step at a time (batch-major)."""
    p = {k: np.asarray(v, np.float64) for k, v in params._asdict().items()}
    xs = np.asarray(xs, np.float64)
    *batch, steps, _ = xs.shape
    heads = p["b_i"].shape[0]
    d_k, d_v = p["w_q"].shape[1] // heads, p["w_v"].shape[1] // heads
    if state is None:
        c, n, m = (np.zeros(tuple(batch) + s) for s in ((heads, d_k, d_v), (heads, d_k), (heads,)))
    else:
        c, n, m = (np.asarray(a, np.float64) for a in state)
    hs = [np.zeros(tuple(batch) + (0, heads * d_v))]
    for t in range(steps):
        x = xs[..., t, :]
        q = (x @ p["w_q"]).reshape(tuple(batch) + (heads, d_k))
        k = (x @ p["w_k"]).reshape(tuple(batch) + (heads, d_k)) / math.sqrt(d_k)
        v = (x @ p["w_v"]).reshape(tuple(batch) + (heads, d_v))
        i = x @ p["w_i"] + p["b_i"]
        log_f = -np.logaddexp(0.0, -(x @ p["w_f"] + p["b_f"]))
        m_new = np.maximum(log_f + m, i)
        f_act, i_act = np.exp(log_f + m - m_new), np.exp(i - m_new)
        c = f_act[..., None, None] * c + i_act[..., None, None] * k[..., :, None] * v[..., None, :]
        n = f_act[..., None] * n + i_act[..., None] * k
        m = m_new
        num = np.einsum("...k,...kv->...v", q, c)
        den = np.maximum(np.abs(np.einsum("...k,...k->...", q, n)), np.exp(-m)) + 1e-6
        hs.append((num / den[..., None]).reshape(tuple(batch) + (1, heads * d_v)))
    return np.concatenate(hs, axis=-2), (c, n, m)


def loss_fn(mode, chunk_size=16, **kwargs):
    """A scalar of the outputs and the final state (with the outputs as aux), for gradients
    w.r.t. params, inputs and state."""
    def loss(params, xs, state):
        hs, final = mlstm(params, xs, mode=mode, chunk_size=chunk_size, initial_state=state,
                          **kwargs)
        weights = jnp.cos(jnp.arange(hs.shape[-1], dtype=hs.dtype))
        value = (jnp.sum(hs * jnp.reshape(weights, (1,) * (hs.ndim - 1) + weights.shape))
                 + jnp.sum(jnp.sin(final.C)) + jnp.sum(final.n))
        return value, (hs, final)
    return loss


class FormsAgreeTest(parameterized.TestCase):
    def test_forward_state_and_gradients(self):
        kwargs = {"seq_lengths": jnp.array([70, 23])}        # one full, one padded sequence
        params, xs = make()
        state = random_state((2,))
        results = {}
        for mode in MODES:
            grad = jax.jit(jax.grad(loss_fn(mode, **kwargs), argnums=(0, 1, 2), has_aux=True))
            grads, outputs = grad(params, xs, state)
            results[mode] = outputs, grads
        for mode in ("parallel", "chunkwise"):
            assert_close(results[mode][0], results["recurrent"][0])
            assert_close(results[mode][1], results["recurrent"][1], **GRAD_TOL)
        grads = jax.tree.leaves(results["chunkwise"][1])
        assert all(np.all(np.isfinite(g)) for g in grads)
        assert float(jnp.abs(results["chunkwise"][1][0].w_f).max()) > 1e-3  # gates learn

    def test_state_carries_across_calls_and_modes(self):
        params, xs = make()
        full, full_state = run(params, xs, mode="recurrent")
        first, state = run(params, xs[:, :37], chunk_size=16)           # chunkwise prompt
        second, end = run(params, xs[:, 37:], mode="recurrent", initial_state=state)
        assert_close(jnp.concatenate([first, second], axis=1), full)
        assert_close(end, full_state)
        third, end2 = run(params, xs[:, 37:], mode="parallel", initial_state=state)
        assert_close(third, second)
        assert_close(end2, end)

    @parameterized.parameters(1, 63, 64, 65)
    def test_chunkwise_any_length(self, steps):
        params, xs = make(steps=steps)
        state = random_state((2,))
        hs, final = run(params, xs, initial_state=state)                   # chunk 64
        want_hs, want_final = numpy_mlstm(params, xs, state)
        np.testing.assert_allclose(hs, want_hs, **TOL)
        for got, want in zip(final, want_final):
            np.testing.assert_allclose(got, want, **TOL)

    def test_chunkwise_long_sequence(self):
        params, xs = make(batch_shape=(1,), steps=1000, input_size=2, hidden=4, heads=2, key=3)
        hs, final = run(params, xs, chunk_size=64)
        want_hs, want_final = numpy_mlstm(params, xs)
        np.testing.assert_allclose(hs, want_hs, atol=2e-4, rtol=2e-4)
        for got, want in zip(final, want_final):
            np.testing.assert_allclose(got, want, atol=2e-4, rtol=2e-4)


class AgainstNumpyLoopTest(parameterized.TestCase):
    @parameterized.parameters(("recurrent", (), True), ("parallel", (3,), False),
                              ("chunkwise", (2, 3), True), ("chunkwise", (), False))
    def test_matches_numpy_loop(self, mode, batch_shape, with_state):
        params, xs = make(batch_shape, steps=9)
        state = random_state(batch_shape) if with_state else None
        hs, final = run(params, xs, mode=mode, chunk_size=4, initial_state=state)
        want_hs, want_final = numpy_mlstm(params, xs, state)
        assert hs.shape == batch_shape + (9, HIDDEN)
        np.testing.assert_allclose(hs, want_hs, **TOL)
        for got, want in zip(final, want_final):
            np.testing.assert_allclose(got, want, **TOL)

    def test_time_major_is_the_transposed_batch_major(self):
        params, xs = make((2, 3), steps=9)
        hs, final = run(params, jnp.moveaxis(xs, -2, 0), time_major=True, chunk_size=4)
        want_hs, want_final = numpy_mlstm(params, xs)
        np.testing.assert_allclose(jnp.moveaxis(hs, 0, -2), want_hs, **TOL)
        np.testing.assert_allclose(final.C, want_final[0], **TOL)

    @parameterized.parameters(("recurrent", True), ("parallel", False), ("chunkwise", False),
                              ("chunkwise", True))
    def test_seq_lengths_match_separate_runs(self, mode, reverse):
        params, xs = make((3,), steps=20)
        lengths = np.array([20, 7, 0])
        state = random_state((3,))
        hs, final = run(params, xs, mode=mode, chunk_size=8, seq_lengths=lengths,
                        initial_state=state, reverse=reverse)
        for b, length in enumerate(lengths):
            one = jax.tree.map(lambda a, b=b: a[b:b + 1], state)
            prefix = xs[b:b + 1, :length]
            if reverse:
                prefix = prefix[:, ::-1]
            want_hs, want_final = numpy_mlstm(params, prefix, one)
            if reverse:
                want_hs = want_hs[:, ::-1]
            np.testing.assert_allclose(hs[b, :length], want_hs[0], **TOL)
            np.testing.assert_array_equal(hs[b, length:], 0.0)
            for got, want in zip(final, want_final):
                np.testing.assert_allclose(got[b], want[0], **TOL)


cell = jax.jit(mlstm_cell)


def step_by_step(params, xs, state):
    """`mlstm_cell` over the time axis (-2) in a Python loop: the decoding path."""
    outputs = []
    for t in range(xs.shape[-2]):
        state, h = cell(params, state, xs[..., t, :])
        outputs.append(h)
    return jnp.stack(outputs, axis=-2), state


class CellTest(parameterized.TestCase):
    """`mlstm_cell`, one step on an input, against the NumPy loop and every form of `mlstm`."""

    @parameterized.parameters(((), True), ((2, 3), False))
    def test_steps_match_the_numpy_loop(self, batch_shape, with_state):
        params, xs = make(batch_shape, steps=6)
        state = random_state(batch_shape) if with_state else zero_mlstm_state(batch_shape,
                                                                              HEADS, D, D)
        hs, final = step_by_step(params, xs, state)
        want_hs, want_final = numpy_mlstm(params, xs, state if with_state else None)
        np.testing.assert_allclose(hs, want_hs, **TOL)
        for got, want in zip(final, want_final):
            np.testing.assert_allclose(got, want, **TOL)

    @parameterized.parameters(*MODES)
    def test_a_prompt_run_in_any_mode_continues_step_by_step(self, mode):
        params, xs = make((2,), steps=12)
        _, whole = run(params, xs, mode=mode, chunk_size=4)
        prompt_hs, state = run(params, xs[:, :8], mode=mode, chunk_size=4)
        hs, final = step_by_step(params, xs[:, 8:], state)
        want_hs, want_final = run(params, xs, mode="recurrent")
        assert_close(jnp.concatenate([prompt_hs, hs], axis=1), want_hs)
        assert_close(final, want_final)
        assert_close(final, whole)

    def test_bfloat16_input_keeps_a_float32_state(self):
        params, xs = make((2,), steps=1)
        params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
        state, h = cell(params, zero_mlstm_state((2,), HEADS, D, D), xs[:, 0].astype(jnp.bfloat16))
        assert h.dtype == jnp.bfloat16 and h.shape == (2, HIDDEN)
        assert all(a.dtype == jnp.float32 for a in state)

    def test_errors_name_the_argument(self):
        params, xs = make((2,), steps=1)
        state = zero_mlstm_state((2,), HEADS, D, D)
        with self.assertRaisesRegex(ValueError, r"x_t must have shape \(\.\.\., 3\)"):
            mlstm_cell(params, state, jnp.ones((2, 4)))
        with self.assertRaisesRegex(ValueError, r"state\.C must have shape \(3, 2, 4, 4\)"):
            mlstm_cell(params, state, jnp.ones((3, INPUT)))
        with self.assertRaisesRegex(TypeError, "state must be MLSTMState"):
            mlstm_cell(params, (state.C, state.n), xs[:, 0])


class AgainstReferenceTest(parameterized.TestCase):
    """The same q, k, v and gate pre-activations through the reference torch kernels."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        rng = np.random.default_rng(0)
        b, heads, steps, d = 2, 2, 32, 4
        cls.qkv = [rng.normal(size=(b, heads, steps, d)).astype(np.float32) for _ in range(3)]
        cls.i_pre = rng.normal(size=(b, heads, steps)).astype(np.float32)
        cls.f_pre = (rng.normal(size=(b, heads, steps)) + 3.0).astype(np.float32)
        cls.out_weights = rng.normal(size=(b, heads, steps, d)).astype(np.float32)
        cls._ours = None

    def setUp(self):
        super().setUp()
        self.torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)

    def ours(self):
        """Per mode: hs (B, NH, S, DH) and gradients of sum(hs * w) w.r.t. q, k, v, i~, f~
        (computed once for the class)."""
        if type(self)._ours is None:
            # The recurrent form is checked against the others and the NumPy loop.
            type(self)._ours = {mode: self.ours_in(mode) for mode in ("parallel", "chunkwise")}
        return type(self)._ours

    def ours_in(self, mode):
        def heads_first(q, k, v, i_pre, f_pre):
            hs, _ = mlstm_qkv(*(jnp.moveaxis(a, 2, 1) for a in (q, k, v, i_pre, f_pre)),
                              mode=mode, chunk_size=8)
            hs = jnp.moveaxis(hs, 1, 2)
            return jnp.sum(hs * self.out_weights), hs

        args = (*self.qkv, self.i_pre, self.f_pre)
        grads, hs = jax.jit(jax.grad(heads_first, argnums=range(5), has_aux=True))(*args)
        return hs, grads

    def theirs(self, fn):
        torch = self.torch
        args = [torch.tensor(a, requires_grad=True)
                for a in (*self.qkv, self.i_pre, self.f_pre)]
        hs = fn(*args)
        (hs * torch.tensor(self.out_weights)).sum().backward()
        return hs.detach().numpy(), [a.grad.numpy() for a in args]

    def check(self, ours, theirs):
        for hs, grads in ours.values():
            np.testing.assert_allclose(hs, theirs[0], atol=1e-4, rtol=1e-4)
            for got, want in zip(grads, theirs[1]):
                np.testing.assert_allclose(got, want, atol=5e-4, rtol=1e-3)

    def test_xlstm_backends(self):
        pytest.importorskip("xlstm", reason=NEEDS_REFERENCE)
        from xlstm.blocks.mlstm.backends import (
            chunkwise_simple,
            parallel_stabilized_simple,
            recurrent_step_stabilized_simple,
        )
        torch = self.torch

        def parallel(q, k, v, i, f):
            return parallel_stabilized_simple(q, k, v, i[..., None], f[..., None])

        def recurrent(q, k, v, i, f):
            b, heads, steps, d = q.shape
            c, n, m = torch.zeros(b, heads, d, d), torch.zeros(b, heads, d, 1), \
                torch.zeros(b, heads, 1, 1)
            hs = []
            for t in range(steps):
                # clone: the reference squeezes its q, k, v in place
                h, (c, n, m) = recurrent_step_stabilized_simple(
                    c, n, m, *(a[:, :, t:t + 1].clone() for a in (q, k, v)),
                    i[:, :, t, None, None], f[:, :, t, None, None])
                hs.append(h[:, :, 0])
            return torch.stack(hs, dim=2)

        ours = self.ours()
        self.check(ours, self.theirs(parallel))
        self.check(ours, self.theirs(recurrent))
        self.check(ours, self.theirs(lambda *a: chunkwise_simple(*a, chunk_size=8)))

    def test_mlstm_kernels_native(self):
        pytest.importorskip("mlstm_kernels", reason=NEEDS_REFERENCE)
        from mlstm_kernels.torch.parallel.native import mlstm_parallel__native_autograd
        from mlstm_kernels.torch.recurrent.native_sequence import (
            mlstm_recurrent_sequence__native_fw,
        )
        ours = self.ours()
        self.check(ours, self.theirs(lambda *a: mlstm_parallel__native_autograd(*a)))
        self.check(ours, self.theirs(lambda *a: mlstm_recurrent_sequence__native_fw(*a)))

    def test_state_in_and_out_matches_mlstm_kernels(self):
        pytest.importorskip("mlstm_kernels", reason=NEEDS_REFERENCE)
        from mlstm_kernels.torch.recurrent.native_sequence import (
            mlstm_recurrent_sequence__native_fw,
        )
        torch = self.torch
        rng = np.random.default_rng(1)
        b, heads, d = 2, 2, 4
        c0 = rng.normal(size=(b, heads, d, d)).astype(np.float32)
        n0 = rng.normal(size=(b, heads, d)).astype(np.float32)
        m0 = rng.normal(size=(b, heads)).astype(np.float32)
        args = [torch.tensor(a) for a in (*self.qkv, self.i_pre, self.f_pre)]
        # mlstm_kernels scales q, not k: its C and n are sqrt(d) times ours.
        hs, (c, n, m) = mlstm_recurrent_sequence__native_fw(
            *args, c_initial=torch.tensor(c0) * 2.0, n_initial=torch.tensor(n0) * 2.0,
            m_initial=torch.tensor(m0)[..., None], return_last_states=True)
        state = MLSTMState(jnp.asarray(c0), jnp.asarray(n0), jnp.asarray(m0))
        for mode in MODES:
            ours, final = jax.jit(partial(mlstm_qkv, mode=mode, chunk_size=8))(
                *(jnp.moveaxis(a, 2, 1) for a in (*self.qkv, self.i_pre, self.f_pre)),
                initial_state=state)
            np.testing.assert_allclose(jnp.moveaxis(ours, 1, 2), hs.numpy(), **TOL)
            np.testing.assert_allclose(final.C * math.sqrt(d), c.numpy(), **TOL)
            np.testing.assert_allclose(final.n * math.sqrt(d), n.numpy(), **TOL)
            np.testing.assert_allclose(final.m, m.numpy()[..., 0], **TOL)


class DtypeAndRangeTest(parameterized.TestCase):
    @parameterized.parameters("recurrent", "chunkwise")
    def test_bfloat16(self, mode):
        params, xs = make(steps=20)
        params16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
        xs16 = xs.astype(jnp.bfloat16)
        # Against float32 on the same (rounded) numbers: only the bfloat16 projections and
        # output differ.
        want, _ = run(jax.tree.map(lambda a: a.astype(jnp.float32), params16),
                      xs16.astype(jnp.float32), mode=mode, chunk_size=8)
        hs, state = run(params16, xs16, mode=mode, chunk_size=8)
        assert hs.dtype == jnp.bfloat16
        assert state.C.dtype == jnp.float32                      # the state keeps its range
        np.testing.assert_allclose(hs.astype(jnp.float32), want, atol=0.1, rtol=0.05)

    @parameterized.parameters("recurrent", "chunkwise")
    def test_long_sequence_with_large_gates_stays_finite(self, mode):
        params, xs = make((1,), steps=10_000, input_size=2, hidden=2, heads=1, key=4)
        # exp(i~) overflows float32 without the stabiliser.
        params = params._replace(b_i=params.b_i + 100.0, w_i=params.w_i * 30.0)
        hs, state = run(params, xs, mode=mode)
        assert np.all(np.isfinite(hs)) and all(np.all(np.isfinite(a)) for a in state)
        assert float(jnp.abs(hs).max()) > 0.0

    def test_float32_params_with_bfloat16_inputs_compute_in_float32(self):
        params, xs = make(steps=5)
        hs, _ = jax.eval_shape(run, params, xs.astype(jnp.bfloat16))  # the dtype: no compile
        assert hs.dtype == jnp.float32


class BadInputTest(parameterized.TestCase):
    def test_errors_name_the_argument(self):
        params, xs = make(steps=5)
        cases = [
            ({"mode": "fast"}, ValueError, r"mode must be one of \['chunkwise', 'parallel'"),
            ({"chunk_size": 0}, ValueError, "chunk_size must be a positive int"),
            ({"initial_state": random_state((3,))}, ValueError,
             r"initial_state.C must have shape \(2, 2, 4, 4\)"),
            ({"initial_state": (1, 2)}, TypeError, "initial_state must be MLSTMState"),
            ({"seq_lengths": jnp.array([1.0, 2.0])}, TypeError,
             "seq_lengths must have an integer dtype"),
            ({"seq_lengths": jnp.array([1, 9])}, ValueError, r"seq_lengths must lie in \[0, 5\]"),
        ]
        for kwargs, error, match in cases:
            with pytest.raises(error, match=match):
                mlstm(params, xs, **kwargs)
        with pytest.raises(ValueError, match="xs must have 3 features"):
            mlstm(params, xs[..., :2])
        with pytest.raises(ValueError, match="xs must have rank >= 2"):
            mlstm(params, xs[0, 0])
        with pytest.raises(TypeError, match="xs must have a floating dtype"):
            mlstm(params, jnp.ones((2, 5, 3), jnp.int32))
        with pytest.raises(ValueError, match=r"params.w_v must have shape \(3, heads \* d\)"):
            mlstm(params._replace(w_v=jnp.ones((3, 7))), xs)
        with pytest.raises(TypeError, match="params must be MLSTMParams"):
            mlstm({"w_q": params.w_q}, xs)
        with pytest.raises(ValueError, match="hidden_size must be divisible by num_heads"):
            init_mlstm(jax.random.key(0), 3, 10, num_heads=4)
        q = jnp.ones((2, 5, 2, 4))
        with pytest.raises(ValueError, match=r"f_pre must have shape \(2, 5, 2\)"):
            mlstm_qkv(q, q, q, jnp.ones((2, 5, 2)), jnp.ones((2, 5)))

    def test_init_follows_the_reference(self):
        params = init_mlstm(jax.random.key(0), 16, 8, num_heads=4)
        np.testing.assert_allclose(params.b_f, [3.0, 4.0, 5.0, 6.0])
        np.testing.assert_array_equal(params.w_i, 0.0)
        np.testing.assert_array_equal(params.w_f, 0.0)
        assert params.w_q.shape == params.w_k.shape == (16, 8)
        assert abs(float(jnp.std(params.w_q)) - math.sqrt(2 / 80)) < 0.05
