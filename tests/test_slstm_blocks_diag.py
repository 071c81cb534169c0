"""The sLSTM's per-head block-diagonal recurrence against its dense (H, 4H) embedding.

`slstm` and `slstm_cell` multiply by the blocks r (heads, d, 4, d) directly
(`jaxlstm.recurrence.recurrent_product`, and in the fused backward `recurrent_input_grad`,
`recurrent_weight_grad`). The reference here is a plain Python loop over `slstm_pointwise` with
the dense matrix `recurrent_kernel(r)`, differentiated by autodiff.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.recurrence import (
    recurrent_input_grad,
    recurrent_product,
    recurrent_weight_grad,
)
from jaxlstm.xlstm.slstm import (
    SLSTMState,
    init_slstm,
    recurrent_kernel,
    slstm,
    slstm_cell,
    slstm_pointwise,
)

INPUT, HIDDEN, BATCH, STEPS = 3, 8, 2, 6
TOL = {"atol": 1e-5, "rtol": 1e-5}
GRAD_TOL = {"atol": 1e-5, "rtol": 1e-4}


def make(num_heads, key=0):
    """Random params (every weight, the recurrence made to matter), inputs, a reachable state
    (n > 0) and loss weights for every output and final-state field."""
    keys = jax.random.split(jax.random.key(key), 6)
    params = init_slstm(keys[0], INPUT, HIDDEN, num_heads=num_heads, recurrent_init="standard",
                        bias_init="standard")
    params = params._replace(r=params.r * 4.0, b=params.b * 2.0)
    xs = 2.0 * jax.random.normal(keys[1], (BATCH, STEPS, INPUT))
    h, c, m = jax.random.normal(keys[2], (3, BATCH, HIDDEN))
    state = SLSTMState(h=h, c=c, n=jnp.exp(m) + 0.5, m=m)
    w_hs = jax.random.normal(keys[3], (BATCH, STEPS, HIDDEN))
    w_final = jax.random.normal(keys[4], (3, BATCH, HIDDEN))
    return params, xs, state, (w_hs, w_final)


def dense_loop(params, xs, state0, resets=None):
    """The reference: a Python loop over the steps with the dense embedding of r."""
    w_h = recurrent_kernel(params.r)
    state, hs = state0, []
    for t in range(xs.shape[1]):
        if resets is not None:
            flag = resets[:, t][:, None]
            state = SLSTMState(*(jnp.where(flag, s0, s) for s, s0 in zip(state, state0)))
        z = xs[:, t] @ params.w_x + params.b[None] + state.h @ w_h
        state, _ = slstm_pointwise(z, state)
        hs.append(state.h)
    return jnp.stack(hs, axis=1), state


def loss(run, weights):
    """A weighted sum of every output and of the final h, c, n (m carries no gradient)."""
    w_hs, w_final = weights

    def f(params, xs, state0):
        hs, final = run(params, xs, state0)
        return jnp.sum(hs * w_hs) + sum(jnp.sum(a * w) for a, w in zip(final[:3], w_final))

    return f


def assert_trees_close(actual, expected, **tol):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.shape == e.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), **tol)


@pytest.mark.parametrize(
    "num_heads, fused_backward, remat_chunk, with_resets",
    [
        (1, True, None, False),
        (2, True, None, False),
        (4, True, None, False),
        (4, False, None, False),
        (2, True, 4, True),
        (4, True, 4, True),
        (4, False, 4, True),
    ],
)
def test_forward_and_gradients_match_the_dense_embedding(num_heads, fused_backward,
                                                         remat_chunk, with_resets):
    params, xs, state0, weights = make(num_heads)
    resets = None
    if with_resets:
        resets = jnp.zeros((BATCH, STEPS), bool).at[0, 2].set(True).at[1, 3].set(True)

    def blocks(p, x, s):
        return slstm(p, x, initial_state=s, remat_chunk=remat_chunk, resets=resets,
                     fused_backward=fused_backward)

    def dense(p, x, s):
        return dense_loop(p, x, s, resets)

    assert_trees_close(jax.jit(blocks)(params, xs, state0), dense(params, xs, state0), **TOL)
    argnums = (0, 1, 2)
    grads = jax.jit(jax.grad(loss(blocks, weights), argnums))(params, xs, state0)
    expected = jax.jit(jax.grad(loss(dense, weights), argnums))(params, xs, state0)
    assert grads[0].r.shape == params.r.shape
    assert_trees_close(grads, expected, **GRAD_TOL)
    # The recurrence matters here: a zero dR (or one lost to a wrong layout) would not pass.
    assert float(jnp.max(jnp.abs(grads[0].r))) > 1e-2


@pytest.mark.parametrize("num_heads", [1, 2, 4])
def test_cell_matches_the_dense_embedding(num_heads):
    params, xs, state0, _ = make(num_heads)
    new_state, h = slstm_cell(params, state0, xs[:, 0])
    z = xs[:, 0] @ params.w_x + params.b[None] + state0.h @ recurrent_kernel(params.r)
    expected, _ = slstm_pointwise(z, state0)
    assert_trees_close((new_state, h), (expected, expected.h), **TOL)
    # No batch axis at all: the product takes any leading shape.
    single, _ = slstm_cell(params, SLSTMState(*(a[0] for a in state0)), xs[0, 0])
    assert_trees_close(single, SLSTMState(*(a[0] for a in expected)), **TOL)


@pytest.mark.parametrize("num_heads", [2, 4])
def test_loop_products_match_the_dense_matrix(num_heads):
    """The three block products against the dense ones: dR is dW_h's diagonal blocks."""
    params, _, _, _ = make(num_heads)
    r, w_h = params.r, recurrent_kernel(params.r)
    keys = jax.random.split(jax.random.key(3), 2)
    h = jax.random.normal(keys[0], (STEPS, BATCH, HIDDEN))
    dz = jax.random.normal(keys[1], (STEPS, BATCH, 4 * HIDDEN))
    np.testing.assert_allclose(recurrent_product(h, r), h @ w_h, **TOL)
    np.testing.assert_allclose(recurrent_input_grad(dz, r, None), dz @ w_h.T, **TOL)
    d_blocks = recurrent_weight_grad(h, dz, r, jnp.float32)
    assert d_blocks.shape == r.shape
    _, vjp = jax.vjp(recurrent_kernel, r)
    (expected,) = vjp(jnp.einsum("tnh,tng->hg", h, dz))
    np.testing.assert_allclose(d_blocks, expected, **TOL)
