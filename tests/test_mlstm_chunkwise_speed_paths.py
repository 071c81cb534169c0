"""The chunkwise mLSTM's hand-written backward and its default chunk size
(`jaxlstm.xlstm.mlstm_chunkwise`)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxlstm.xlstm import mlstm_chunkwise
from jaxlstm.xlstm.mlstm import init_mlstm, mlstm
from jaxlstm.xlstm.mlstm_state import MLSTMState

GRAD_TOL = {"atol": 1e-4, "rtol": 1e-3}


def core_inputs(n=2, heads=2, steps=12, d=4, key=0):
    """q, k (scaled), v, i~, log f (N, heads, T, ...) and a non-zero state."""
    keys = jax.random.split(jax.random.key(key), 8)
    q, k, v = (jax.random.normal(a, (n, heads, steps, d)) for a in keys[:3])
    i_pre = 2.0 * jax.random.normal(keys[3], (n, heads, steps))
    log_f = jax.nn.log_sigmoid(jax.random.normal(keys[4], (n, heads, steps)) + 1.0)
    state = MLSTMState(jax.random.normal(keys[5], (n, heads, d, d)),
                       jax.random.normal(keys[6], (n, heads, d)),
                       jax.random.normal(keys[7], (n, heads)))
    return (q, k * d ** -0.5, v, i_pre, log_f), state


def weighted_loss(outputs, key=1):
    """A scalar that weights every output (hs, final C, n and m) differently."""
    leaves = jax.tree.leaves(outputs)
    keys = jax.random.split(jax.random.key(key), len(leaves))
    return sum(jnp.sum(a * jax.random.normal(k, a.shape)) for a, k in zip(leaves, keys))


def autodiff_chunks(*args):
    """`_chunks` without its custom backward: JAX differentiates its forward."""
    return mlstm_chunkwise._chunks_forward(*args)[0]


class CustomBackwardTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("no_resets", None, 4),
        # a start at step 0, in a chunk's middle, at a chunk's last step, two in one chunk
        ("resets", (0, 2, 7, 9, 10), 4),
        ("one_chunk", (5,), 12),
    )
    def test_matches_autodiff_of_the_same_forward(self, start_steps, chunk):
        inputs, state = core_inputs()
        starts = None
        if start_steps is not None:
            starts = jnp.zeros((2, 1, 12), bool).at[0, 0, jnp.array(start_steps)].set(True)
            starts = starts.at[1, 0, 3].set(True)

        def loss(inputs, state):
            return weighted_loss(mlstm_chunkwise.chunkwise(*inputs, state, chunk, starts))

        custom = jax.jit(jax.grad(loss, argnums=(0, 1)))(inputs, state)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(mlstm_chunkwise, "_chunks", autodiff_chunks)
            plain = jax.jit(jax.grad(loss, argnums=(0, 1)))(inputs, state)
        chex.assert_trees_all_close(custom, plain, **GRAD_TOL)
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(custom))
        assert float(jnp.abs(custom[1].m).max()) > 1e-4   # the stabiliser's path is live

    @parameterized.parameters(False, True)
    def test_mlstm_gradients_match_the_recurrent_form(self, reverse):
        """Through `mlstm`: T=13 not a multiple of the chunk (padding), resets, lengths,
        a non-zero initial state; gradients w.r.t. params, inputs and state."""
        keys = jax.random.split(jax.random.key(3), 4)
        params = init_mlstm(keys[0], 3, 8, num_heads=2)
        params = params._replace(w_i=jax.random.normal(keys[1], params.w_i.shape),
                                 w_f=jax.random.normal(keys[2], params.w_f.shape))
        xs = jax.random.normal(keys[3], (2, 13, 3))
        _, state = core_inputs(n=2, heads=2, d=4)
        resets = jnp.zeros((2, 13), bool).at[0, 5].set(True).at[1, 3].set(True).at[1, 8].set(True)
        lengths = jnp.array([13, 10])

        def loss(mode):
            def value(params, xs, state):
                return weighted_loss(mlstm(params, xs, mode=mode, chunk_size=4,
                                           initial_state=state, seq_lengths=lengths,
                                           resets=resets, reverse=reverse))
            return jax.jit(jax.grad(value, argnums=(0, 1, 2)))(params, xs, state)

        chex.assert_trees_all_close(loss("chunkwise"), loss("recurrent"), **GRAD_TOL)

    def test_forward_mode_is_not_defined(self):
        """The documented cost of the custom VJP: no jax.jvp through the chunkwise form."""
        inputs, state = core_inputs()
        with pytest.raises(TypeError, match="custom_vjp"):
            jax.jvp(lambda q: mlstm_chunkwise.chunkwise(q, *inputs[1:], state, 4)[0],
                    (inputs[0],), (inputs[0],))


class DefaultChunkSizeTest(parameterized.TestCase):
    def test_a_chunk_of_at_most_t_that_pads_little(self):
        for steps in range(1, 4097):
            chunk = mlstm_chunkwise.default_chunk_size(steps, "cpu")
            assert 1 <= chunk <= steps
            padded = -(-steps // chunk) * chunk
            assert padded - steps < chunk
            if steps >= 50:
                assert padded <= 1.07 * steps, (steps, chunk)

    def test_the_measured_choices_on_cpu(self):
        chunks = {t: mlstm_chunkwise.default_chunk_size(t, "cpu")
                  for t in (50, 64, 100, 200, 1000, 4096)}
        assert chunks == {50: 50, 64: 32, 100: 50, 200: 40, 1000: 40, 4096: 41}
        assert mlstm_chunkwise.default_chunk_size(20, "cpu") == 20      # the parallel form
        assert mlstm_chunkwise.default_chunk_size(100, "gpu") == 50     # L0 = 64 elsewhere

    def test_a_symbolic_length_gets_the_fixed_chunk(self):
        steps, = jax.export.symbolic_shape("T")
        assert mlstm_chunkwise.default_chunk_size(steps, "cpu") == 40
        assert mlstm_chunkwise.default_chunk_size(steps, "tpu") == 64
