"""The recurrent mLSTM's custom backward (`mlstm_recurrent.recurrent`) against plain autodiff
of the same scan (`recurrent_autodiff`) and against the chunkwise form's gradient."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.xlstm import mlstm_gates as gates
from jaxlstm.xlstm.mlstm import MLSTMState, init_mlstm, mlstm
from jaxlstm.xlstm.mlstm_recurrent import recurrent, recurrent_autodiff

N, HEADS, STEPS, D_K, D_V = 3, 2, 23, 4, 5
# Both sides compute the same float32 sums in different orders; gradients here are O(1-30).
TOL = {"atol": 2e-5, "rtol": 2e-5}


def make_inputs(key=0):
    """q, k, v, i~, log f (N, heads, T, d) with gates that make the stabiliser move both ways,
    a non-trivial initial state, resets, and a cotangent for hs."""
    keys = jax.random.split(jax.random.key(key), 10)
    q = jax.random.normal(keys[0], (N, HEADS, STEPS, D_K))
    k = gates.scaled_key(jax.random.normal(keys[1], (N, HEADS, STEPS, D_K)))
    v = jax.random.normal(keys[2], (N, HEADS, STEPS, D_V))
    i_pre = 2.0 * jax.random.normal(keys[3], (N, HEADS, STEPS))
    log_f = gates.log_forget_gate(2.0 * jax.random.normal(keys[4], (N, HEADS, STEPS)) + 1.0)
    state = MLSTMState(jax.random.normal(keys[5], (N, HEADS, D_K, D_V)),
                       jax.random.normal(keys[6], (N, HEADS, D_K)),
                       jax.random.normal(keys[7], (N, HEADS)).at[0].set(13.0))
    # A tie in m_0 = max(log f_0 + m_{-1}, i~_0) (sequence 0): autodiff gives each side half
    # of m_0's gradient, and so must the custom backward. That gradient is only eps's (the
    # stabiliser cancels out of the readout otherwise), so make eps count: a large m_{-1} and
    # a tiny query, so that the readout divides by exp(-m_0) + eps with exp(-m_0) ~ eps.
    i_pre = i_pre.at[0, :, 0].set(log_f[0, :, 0] + state.m[0])
    q = q.at[0, :, 0].multiply(1e-7)
    starts = jax.random.bernoulli(keys[8], 0.2, (N, 1, STEPS)).at[:, :, 0].set(False)
    starts = starts.at[1, :, 5].set(True).at[1, :, 6].set(True)     # two resets in a row
    d_hs = jax.random.normal(keys[9], (N, HEADS, STEPS, D_V))
    return (q, k, v, i_pre, log_f, state), starts, d_hs


def loss(fn, args, starts, d_hs):
    """A loss that reads every output: hs and all three fields of the final state."""
    hs, final = fn(*args, starts)
    return (jnp.sum(hs * d_hs) + 0.3 * jnp.sum(final.C) + 0.7 * jnp.sum(final.n)
            + 1.3 * jnp.sum(final.m))


# One compile per function and pattern of arguments, shared by the tests.
grad_custom = jax.jit(jax.grad(lambda *a: loss(recurrent, *a)))
grad_autodiff = jax.jit(jax.grad(lambda *a: loss(recurrent_autodiff, *a)))


def assert_grads_match(custom, reference):
    chex.assert_trees_all_close(custom, reference, **TOL)
    # Not vacuous: every input, the initial state's C, n and m included, gets a gradient.
    for leaf in jax.tree.leaves(reference):
        assert float(jnp.abs(leaf).max()) > 1e-2


def test_forward_is_the_plain_scan():
    args, starts, _ = make_inputs()
    for s in (None, starts):
        chex.assert_trees_all_equal(jax.jit(recurrent)(*args, s),
                                    jax.jit(recurrent_autodiff)(*args, s))


def test_gradient_matches_autodiff_without_resets():
    args, _, d_hs = make_inputs()
    assert_grads_match(grad_custom(args, None, d_hs), grad_autodiff(args, None, d_hs))


def test_gradient_matches_autodiff_with_resets():
    args, starts, d_hs = make_inputs(key=1)
    custom = grad_custom(args, starts, d_hs)
    assert_grads_match(custom, grad_autodiff(args, starts, d_hs))
    # The resets matter: without them the gradient w.r.t. the initial state differs.
    without = grad_custom(args, None, d_hs)
    assert not np.allclose(custom[5].C, without[5].C, atol=1e-3)


def test_gradient_under_vmap():
    """vmap of the custom gradient over a leading axis equals the gradient per example."""
    args, starts, d_hs = make_inputs(key=2)
    stacked = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), args)
    batched = jax.jit(jax.vmap(jax.grad(lambda a: loss(recurrent, a, starts, d_hs))))(stacked)
    for j in range(2):
        one = jax.tree.map(lambda a, j=j: a[j], stacked)
        chex.assert_trees_all_close(jax.tree.map(lambda a, j=j: a[j], batched),
                                    grad_autodiff(one, starts, d_hs), **TOL)


def test_gradient_matches_chunkwise_form():
    """Through the public API: the recurrent form's gradient (custom backward) against the
    chunkwise form's (a different computation of the same function), w.r.t. the params, the
    input and the initial state, with resets and a non-trivial initial state."""
    input_size, hidden = 3, HEADS * D_V
    params = init_mlstm(jax.random.key(3), input_size, hidden, num_heads=HEADS, qk_size=D_K)
    keys = jax.random.split(jax.random.key(4), 6)
    # Gates that depend on x (they are initialised to constants).
    params = params._replace(w_i=jax.random.normal(keys[0], params.w_i.shape),
                             w_f=jax.random.normal(keys[1], params.w_f.shape))
    xs = jax.random.normal(keys[2], (N, STEPS, input_size))
    (_, _, _, _, _, state), _, _ = make_inputs(key=5)
    state = state._replace(C=0.1 * state.C, n=0.1 * state.n)
    resets = jax.random.bernoulli(keys[3], 0.15, (N, STEPS))
    weights = jax.random.normal(keys[4], (N, STEPS, hidden))

    def grad_of(mode):
        def total(p, x, s):
            hs, final = mlstm(p, x, mode=mode, chunk_size=8, initial_state=s, resets=resets)
            return jnp.sum(hs * weights) + jnp.sum(final.C) + jnp.sum(final.m)
        return jax.jit(jax.grad(total, argnums=(0, 1, 2)))(params, xs, state)

    chex.assert_trees_all_close(grad_of("recurrent"), grad_of("chunkwise"),
                                atol=2e-4, rtol=2e-3)
