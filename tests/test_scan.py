"""jaxlstm.lstm against a plain Python loop over lstm_cell, and its transformations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

import jaxlstm
from tests.reference import loop_lstm

INPUT, HIDDEN, STEPS = 3, 4, 6
TOL = dict(atol=1e-5, rtol=1e-5)


def make(batch_shape, key=0, steps=STEPS, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(key), 3)
    params = jaxlstm.init_lstm(keys[0], INPUT, HIDDEN, dtype=dtype)
    params = params._replace(b=jax.random.normal(keys[2], params.b.shape, dtype))
    xs = jax.random.normal(keys[1], batch_shape + (steps, INPUT), dtype)
    return params, xs


def random_state(batch_shape, key=7):
    h, c = jax.random.normal(jax.random.key(key), (2,) + batch_shape + (HIDDEN,))
    return jaxlstm.LSTMState(h=h, c=c)


def assert_state_close(actual, expected, **tol):
    np.testing.assert_allclose(actual.h, expected.h, **(tol or TOL))
    np.testing.assert_allclose(actual.c, expected.c, **(tol or TOL))


class AgainstLoopTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(
        batch_shape=[(), (3,), (2, 3)], reverse=[False, True], with_state=[False, True]
    )
    def test_matches_python_loop(self, batch_shape, reverse, with_state):
        params, xs = make(batch_shape)
        state = random_state(batch_shape) if with_state else None
        run = self.variant(lambda p, x, s: jaxlstm.lstm(p, x, initial_state=s, reverse=reverse))
        hs, final = run(params, xs, state)
        want_hs, want_final = loop_lstm(params, xs, initial_state=state, reverse=reverse)
        assert hs.shape == batch_shape + (STEPS, HIDDEN)
        np.testing.assert_allclose(hs, want_hs, **TOL)
        assert_state_close(final, want_final)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("one_batch_dim", (3,)), ("two_batch_dims", (2, 3)))
    def test_time_major_is_the_transposed_batch_major(self, batch_shape):
        params, xs = make(batch_shape)
        xs_tm = jnp.moveaxis(xs, -2, 0)
        hs_tm, final_tm = self.variant(lambda p, x: jaxlstm.lstm(p, x, time_major=True))(
            params, xs_tm
        )
        want_hs, want_final = loop_lstm(params, xs)
        assert hs_tm.shape == (STEPS,) + batch_shape + (HIDDEN,)
        np.testing.assert_allclose(jnp.moveaxis(hs_tm, 0, -2), want_hs, **TOL)
        assert_state_close(final_tm, want_final)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(reverse=[False, True], batch_shape=[(6,), (2, 3)])
    def test_seq_lengths_match_loop_over_valid_prefix(self, reverse, batch_shape):
        # Edge cases in one batch: 0, 1, T and values between.
        lengths = jnp.array([0, 1, STEPS, 3, 2, STEPS - 1]).reshape(batch_shape)
        params, xs = make(batch_shape)
        state = random_state(batch_shape)
        run = self.variant(
            lambda p, x, s, n: jaxlstm.lstm(p, x, initial_state=s, seq_lengths=n, reverse=reverse)
        )
        hs, final = run(params, xs, state, lengths)
        want_hs, want_final = loop_lstm(
            params, xs, initial_state=state, seq_lengths=lengths, reverse=reverse
        )
        np.testing.assert_allclose(hs, want_hs, **TOL)
        assert_state_close(final, want_final)
        # Exactly zero past each length; a length of 0 returns the initial state.
        valid = np.arange(STEPS) < np.asarray(lengths)[..., None]
        assert np.all(np.asarray(hs)[~valid] == 0.0)
        flat_final = jax.tree.map(lambda a: a.reshape(6, HIDDEN), final)
        flat_state = jax.tree.map(lambda a: a.reshape(6, HIDDEN), state)
        np.testing.assert_array_equal(flat_final.h[0], flat_state.h[0])
        np.testing.assert_array_equal(flat_final.c[0], flat_state.c[0])

    def test_seq_lengths_for_an_unbatched_sequence(self):
        params, xs = make(())
        hs, final = jaxlstm.lstm(params, xs, seq_lengths=jnp.array(4))
        want_hs, want_final = loop_lstm(params, xs[:4])
        np.testing.assert_allclose(hs[:4], want_hs, **TOL)
        np.testing.assert_array_equal(hs[4:], 0.0)
        assert_state_close(final, want_final)

    def test_full_lengths_equal_no_lengths(self):
        params, xs = make((3,))
        hs, final = jaxlstm.lstm(params, xs, seq_lengths=jnp.full((3,), STEPS))
        want_hs, want_final = jaxlstm.lstm(params, xs)
        np.testing.assert_allclose(hs, want_hs, atol=1e-6, rtol=1e-6)
        assert_state_close(final, want_final, atol=1e-6, rtol=1e-6)

    def test_lengths_out_of_range_are_clamped_under_jit(self):
        params, xs = make((3,))
        run = jax.jit(lambda n: jaxlstm.lstm(params, xs, seq_lengths=n))
        hs, final = run(jnp.array([-2, STEPS + 5, 3]))
        want_hs, want_final = run(jnp.array([0, STEPS, 3]))
        np.testing.assert_array_equal(hs, want_hs)
        assert_state_close(final, want_final, atol=0, rtol=0)

    @parameterized.parameters(1, 2, 5, True)
    def test_unroll_does_not_change_the_result(self, unroll):
        params, xs = make((3,))
        hs, final = jaxlstm.lstm(params, xs, unroll=unroll)
        want_hs, want_final = jaxlstm.lstm(params, xs)
        np.testing.assert_allclose(hs, want_hs, **TOL)
        assert_state_close(final, want_final)

    def test_zero_steps_returns_the_initial_state(self):
        params, _ = make((3,))
        state = random_state((3,))
        hs, final = jaxlstm.lstm(params, jnp.zeros((3, 0, INPUT)), initial_state=state)
        assert hs.shape == (3, 0, HIDDEN)
        assert_state_close(final, state, atol=0, rtol=0)


class GatesTest(parameterized.TestCase):
    @parameterized.product(reverse=[False, True], time_major=[False, True])
    def test_return_gates_recomputes_the_states(self, reverse, time_major):
        params, xs = make((2,))
        lengths = jnp.array([STEPS, 4])
        if time_major:
            xs = jnp.moveaxis(xs, 1, 0)
        hs, final, acts = jaxlstm.lstm(
            params, xs, seq_lengths=lengths, reverse=reverse, time_major=time_major,
            return_gates=True,
        )
        plain_hs, plain_final = jaxlstm.lstm(
            params, xs, seq_lengths=lengths, reverse=reverse, time_major=time_major
        )
        np.testing.assert_array_equal(hs, plain_hs)
        assert_state_close(final, plain_final, atol=0, rtol=0)
        assert isinstance(acts, jaxlstm.LSTMGates)
        for field in acts:
            assert field.shape == hs.shape
        # The gates reproduce the outputs: h_t = o_t * tanh(c_t).
        np.testing.assert_allclose(acts.o * jnp.tanh(acts.c), hs, **TOL)
        # Each step's c_t = f_t * c_{t-1} + i_t * g_t, c_{-1} = 0, in the direction of reading.
        if time_major:
            acts = jax.tree.map(lambda a: jnp.moveaxis(a, 0, 1), acts)
        seq = acts.c[0] if not reverse else acts.c[0][::-1]
        f, i, g = (a[0] if not reverse else a[0][::-1] for a in (acts.f, acts.i, acts.g))
        c_prev = jnp.concatenate([jnp.zeros((1, HIDDEN)), seq[:-1]])
        np.testing.assert_allclose(seq, f * c_prev + i * g, **TOL)
        # Padded steps have zero gates.
        np.testing.assert_array_equal(acts.f[1, 4:], 0.0)

    def test_gate_ranges(self):
        params, xs = make((2,))
        _, _, acts = jaxlstm.lstm(params, xs, return_gates=True)
        for sig in (acts.i, acts.f, acts.o):
            assert np.all((np.asarray(sig) > 0) & (np.asarray(sig) < 1))
        assert np.all(np.abs(np.asarray(acts.g)) < 1)


class TransformationsTest(parameterized.TestCase):
    def test_gradients_against_finite_differences(self):
        from jax.test_util import check_grads

        with jax.enable_x64(True):
            params, xs = make((2,), dtype=jnp.float64)
            state = jax.tree.map(lambda a: a.astype(jnp.float64), random_state((2,)))
            lengths = jnp.array([STEPS, 3])

            def loss(p, x, s):
                hs, final = jaxlstm.lstm(p, x, initial_state=s, seq_lengths=lengths)
                return jnp.sum(hs**2) + jnp.sum(final.c)

            # Jitted, so the many evaluations at perturbed arguments share one compilation.
            check_grads(jax.jit(loss), (params, xs, state), order=2, modes=["rev"], atol=1e-5,
                        rtol=1e-5)

    def test_gradients_equal_loop_gradients(self):
        params, xs = make((3,))

        def loss(fn):
            return lambda p, x: jnp.sum(jnp.sin(fn(p, x)[0])) + jnp.sum(fn(p, x)[1].c ** 2)

        grads = jax.jit(jax.grad(loss(jaxlstm.lstm), argnums=(0, 1)))(params, xs)

        def loop(p, x):
            state = jaxlstm.LSTMState(h=jnp.zeros((3, HIDDEN)), c=jnp.zeros((3, HIDDEN)))
            hs = []
            for t in range(STEPS):
                state, h = jaxlstm.lstm_cell(p, state, x[:, t])
                hs.append(h)
            return jnp.stack(hs, axis=1), state

        want = jax.jit(jax.grad(loss(loop), argnums=(0, 1)))(params, xs)
        chex.assert_trees_all_close(grads, want, atol=1e-5, rtol=1e-5)

    def test_jax_checkpoint(self):
        params, xs = make((3,))

        def loss(p, x):
            return jnp.sum(jaxlstm.lstm(p, x)[0] ** 2)

        grads = jax.grad(jax.checkpoint(loss))(params, xs)
        chex.assert_trees_all_close(grads, jax.grad(loss)(params, xs), atol=1e-6, rtol=1e-6)

    def test_vmap_over_params(self):
        keys = jax.random.split(jax.random.key(3), 4)
        stacked = jax.vmap(lambda k: jaxlstm.init_lstm(k, INPUT, HIDDEN))(keys)
        _, xs = make((2,))
        hs = jax.vmap(lambda p: jaxlstm.lstm(p, xs)[0])(stacked)
        assert hs.shape == (4, 2, STEPS, HIDDEN)
        for n in range(4):
            one = jax.tree.map(lambda a, n=n: a[n], stacked)
            np.testing.assert_allclose(hs[n], jaxlstm.lstm(one, xs)[0], **TOL)

    def test_vmap_over_inputs_and_lengths(self):
        params, xs = make((3,))
        lengths = jnp.array([STEPS, 2, 0])
        hs = jax.vmap(lambda x, n: jaxlstm.lstm(params, x, seq_lengths=n)[0])(xs, lengths)
        np.testing.assert_allclose(hs, jaxlstm.lstm(params, xs, seq_lengths=lengths)[0], **TOL)


class DtypeTest(parameterized.TestCase):
    @parameterized.parameters(jnp.bfloat16, jnp.float16)
    def test_low_precision_close_to_float32(self, dtype):
        params, xs = make((2,))
        low = jax.tree.map(lambda a: a.astype(dtype), (params, xs))
        hs, final = jax.jit(jaxlstm.lstm)(*low)
        assert hs.dtype == dtype and final.h.dtype == dtype and final.c.dtype == dtype
        want, _ = jaxlstm.lstm(params, xs)
        np.testing.assert_allclose(np.asarray(hs, np.float32), want, atol=5e-2)

    def test_mixed_dtypes_compute_in_the_promoted_dtype(self):
        params, xs = make((2,))
        hs, final = jaxlstm.lstm(params, xs.astype(jnp.bfloat16))
        assert hs.dtype == jnp.float32 and final.c.dtype == jnp.float32
        state = jax.tree.map(lambda a: a.astype(jnp.float32), random_state((2,)))
        low_params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
        hs, final = jaxlstm.lstm(low_params, xs.astype(jnp.bfloat16), initial_state=state)
        assert hs.dtype == jnp.bfloat16 and final.h.dtype == jnp.bfloat16


class ShardingTest(parameterized.TestCase):
    """The default initial state is built from the input, so it carries the input's sharding."""

    def setUp(self):
        super().setUp()
        if jax.device_count() < 2:
            self.skipTest("needs 2 devices (XLA_FLAGS=--xla_force_host_platform_device_count=2)")

    def test_shard_map_over_batch(self):
        from jax.sharding import AxisType
        from jax.sharding import PartitionSpec as P

        mesh = jax.make_mesh((2,), ("batch",), axis_types=(AxisType.Auto,))
        params, xs = make((4,))

        @jax.jit
        def run(p, x):
            return jax.shard_map(
                lambda p, x: jaxlstm.lstm(p, x)[0], mesh=mesh,
                in_specs=(P(), P("batch")), out_specs=P("batch"),
            )(p, x)

        np.testing.assert_allclose(run(params, xs), jaxlstm.lstm(params, xs)[0], **TOL)

    def test_explicit_mesh_sharded_batch(self):
        from jax.sharding import AxisType, NamedSharding
        from jax.sharding import PartitionSpec as P

        mesh = jax.make_mesh((2,), ("batch",), axis_types=(AxisType.Explicit,))
        params, xs = make((4,))
        with jax.set_mesh(mesh):
            sharded = jax.device_put(xs, NamedSharding(mesh, P("batch")))
            hs, final = jax.jit(lambda p, x: jaxlstm.lstm(p, x))(params, sharded)
            assert hs.sharding.spec[0] == "batch"
        np.testing.assert_allclose(hs, jaxlstm.lstm(params, xs)[0], **TOL)
