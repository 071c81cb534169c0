"""The fast backward (custom VJP) and remat against autodiff of a plain Python loop."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import jaxlstm
from tests.reference import differentiable_loop_lstm

BATCH, STEPS, INPUT, HIDDEN = 4, 7, 3, 5
LENGTHS = (STEPS, 0, 3, 1)


def problem(dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(0), 6)
    params = jaxlstm.init_lstm(keys[0], INPUT, HIDDEN)
    params = params._replace(b=jax.random.normal(keys[1], params.b.shape))
    xs = jax.random.normal(keys[2], (BATCH, STEPS, INPUT))
    h0, c0 = jax.random.normal(keys[3], (2, BATCH, HIDDEN))
    # Random cotangents for every output, so each path of the backward is exercised.
    w_hs, w_gates = jax.random.normal(keys[4], (2, BATCH, STEPS, HIDDEN))
    w_final = jax.random.normal(keys[5], (2, BATCH, HIDDEN))
    cast = lambda tree: jax.tree.map(lambda a: a.astype(dtype), tree)
    return cast(params), cast(xs), cast(jaxlstm.LSTMState(h=h0, c=c0)), (w_hs, w_gates, w_final)


def loss_of(hs, final, gates, weights):
    w_hs, w_gates, w_final = weights
    total = jnp.sum(hs * w_hs) + jnp.sum(final.h * w_final[0]) + jnp.sum(final.c * w_final[1])
    if gates is not None:
        total += sum(jnp.sum(g * w_gates) for g in gates)
    return total


@functools.cache
def float32_reference_grads(lengths, reverse, return_gates):
    """Reference gradients for `problem()`, computed once per combination."""
    params, xs, state, weights = problem()
    return reference_grads(params, xs, state, lengths, reverse, return_gates, weights)


def reference_grads(params, xs, state, lengths, reverse, return_gates, weights):
    def loss(params, xs, state):
        hs, final, gates = differentiable_loop_lstm(params, xs, state, lengths, reverse)
        return loss_of(hs, final, gates if return_gates else None, weights)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, xs, state)


def lstm_grads(params, xs, state, lengths, reverse, return_gates, weights, **kwargs):
    def loss(params, xs, state):
        out = jaxlstm.lstm(params, xs, initial_state=state, reverse=reverse,
                           seq_lengths=None if lengths is None else jnp.array(lengths),
                           return_gates=return_gates, **kwargs)
        return loss_of(out[0], out[1], out[2] if return_gates else None, weights)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, xs, state)


class FusedBackwardTest(parameterized.TestCase):
    @parameterized.product(
        reverse=[False, True],
        with_lengths=[False, True],
        return_gates=[True],
        loop=[{"unroll": 1}, {"unroll": 3}, {"unroll": 2, "remat_chunk": 4},
              {"fused_backward": False, "remat_chunk": 2}],
    )
    def test_float32_against_loop_autodiff(self, reverse, with_lengths, return_gates, loop):
        self.check_against_loop(reverse, with_lengths, return_gates, loop)

    @parameterized.product(
        reverse=[False, True], return_gates=[False], loop=[{"unroll": 3, "remat_chunk": 3}]
    )
    def test_float32_without_gates(self, reverse, return_gates, loop):
        self.check_against_loop(reverse, True, return_gates, loop)

    def check_against_loop(self, reverse, with_lengths, return_gates, loop):
        params, xs, state, weights = problem()
        lengths = LENGTHS if with_lengths else None
        want = float32_reference_grads(lengths or (STEPS,) * BATCH, reverse, return_gates)
        got = lstm_grads(params, xs, state, lengths, reverse, return_gates, weights, **loop)
        chex.assert_trees_all_close(got, want, atol=1e-5, rtol=1e-5)

    @parameterized.product(reverse=[False, True], remat_chunk=[None, 3])
    def test_bfloat16_close_to_float32(self, reverse, remat_chunk):
        """bfloat16 gradients stay close to the float32 ones (weight grads sum in float32)."""
        want = float32_reference_grads(LENGTHS, reverse, True)
        params, xs, state, weights = problem(jnp.bfloat16)
        got = lstm_grads(params, xs, state, LENGTHS, reverse, True, weights,
                         remat_chunk=remat_chunk)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert g.dtype == jnp.bfloat16
            scale = float(jnp.max(jnp.abs(w))) + 1e-3
            np.testing.assert_allclose(np.asarray(g, np.float32), w, atol=0.03 * scale)

    def test_fused_equals_autodiff_of_the_same_scan(self):
        params, xs, state, weights = problem()
        args = (params, xs, state, LENGTHS, True, True, weights)
        chex.assert_trees_all_close(
            lstm_grads(*args), lstm_grads(*args, fused_backward=False), atol=1e-5, rtol=1e-5
        )

    def test_remat_forward_is_unchanged(self):
        params, xs, state, _ = problem()
        plain = jaxlstm.lstm(params, xs, initial_state=state)
        remat = jaxlstm.lstm(params, xs, initial_state=state, remat_chunk=3)
        chex.assert_trees_all_close(remat, plain, atol=0, rtol=0)

    def test_vmap_of_grad_over_params(self):
        params, xs, _, _ = problem()
        stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
        loss = lambda p: jnp.sum(jaxlstm.lstm(p, xs)[0] ** 2)
        grads = jax.jit(jax.vmap(jax.grad(loss)))(stacked)
        grad = jax.jit(jax.grad(loss))
        for n in range(2):
            one = jax.tree.map(lambda a, n=n: a[n], stacked)
            one_grads = jax.tree.map(lambda a, n=n: a[n], grads)
            chex.assert_trees_all_close(one_grads, grad(one), atol=1e-5, rtol=1e-5)

    def test_forward_mode_needs_the_autodiff_backward(self):
        params, xs, _, _ = problem()
        tangent = jax.tree.map(jnp.ones_like, params)
        run = lambda fused: lambda p: jaxlstm.lstm(p, xs, fused_backward=fused)[0]
        _, jvp_out = jax.jvp(run(False), (params,), (tangent,))
        eps = 1e-3
        shifted = jax.tree.map(lambda p, t: p + eps * t, params, tangent)
        finite = (run(False)(shifted) - run(False)(params)) / eps
        np.testing.assert_allclose(jvp_out, finite, atol=2e-2)
        with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
            jax.jvp(run(True), (params,), (tangent,))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_remat_chunk(bad):
    params, xs, _, _ = problem()
    with pytest.raises(ValueError, match="remat_chunk must be None or a positive int"):
        jaxlstm.lstm(params, xs, remat_chunk=bad)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("segment", [1, 3])
def test_weight_gradients_in_several_segments(reverse, segment):
    """The backward sums weight gradients over segments (several here, with a shorter last)."""
    from jaxlstm.recurrence import LoopMasks, LoopOptions, lstm_loop

    params, xs, state, weights = problem()
    lengths = jnp.array(LENGTHS)
    options = LoopOptions(reverse=reverse, chunk=2, return_gates=False, grad_segment=segment)

    def loss(params, xs, state):
        final, hs = lstm_loop(params, jnp.swapaxes(xs, 0, 1), state, LoopMasks(lengths),
                              options)
        return loss_of(jnp.swapaxes(hs, 0, 1), final, None, weights)

    got = jax.grad(loss, argnums=(0, 1, 2))(params, xs, state)
    chex.assert_trees_all_close(got, float32_reference_grads(LENGTHS, reverse, False),
                                atol=1e-5, rtol=1e-5)
