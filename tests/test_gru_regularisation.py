"""The GRU's loop options beside the LSTM's: recurrent dropout, zoneout on h and remat_chunk,
against a float64 NumPy loop with the same masks, and through the fused backward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm.regularisation import draw_recurrent_masks

I, H, T, B = 3, 5, 7, 2
DROP, ZONE = 0.3, 0.4


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def numpy_gru(params, xs, rec_mask, keep_h, zone_rate):
    """The equations step by step in float64: dropout on h_{t-1} before W_h only, zoneout
    after the update (a keep mask, or the rate's expectation without one)."""
    w_x, w_h, b, b_hn = (np.asarray(a, np.float64) for a in params)
    h = np.zeros((xs.shape[0], H))
    hs = []
    for t in range(xs.shape[1]):
        z_x = xs[:, t] @ w_x + b
        z_h = (h * rec_mask) @ w_h
        r = _sigmoid(z_x[:, :H] + z_h[:, :H])
        z = _sigmoid(z_x[:, H:2 * H] + z_h[:, H:2 * H])
        n = np.tanh(z_x[:, 2 * H:] + r * (z_h[:, 2 * H:] + b_hn))
        new = (1.0 - z) * n + z * h
        if keep_h is not None:
            new = np.where(keep_h[t], h, new)
        else:
            new = zone_rate * h + (1.0 - zone_rate) * new
        h = new
        hs.append(h)
    return np.stack(hs, 1), h


@pytest.fixture(scope="module")
def case():
    k_p, k_x = jax.random.split(jax.random.key(0))
    params = jaxlstm.init_gru(k_p, I, H)
    params = params._replace(b=params.b + 0.3, b_hn=params.b_hn - 0.2)  # off their init
    return params, jax.random.normal(k_x, (B, T, I))


def test_training_masks_and_the_evaluation_expectation_match_the_equations(case):
    params, xs = case
    key = jax.random.key(3)
    run = jax.jit(lambda p, x, k, det: jaxlstm.gru(p, x, recurrent_dropout=DROP, zoneout_h=ZONE,
                                                   key=k, deterministic=det),
                  static_argnums=3)
    masks = draw_recurrent_masks(key, T, (B,), H, H, DROP, ZONE, 0.0)
    x64 = np.asarray(xs, np.float64)
    for deterministic, rec_mask, keep_h in ((False, np.asarray(masks.recurrent), np.asarray(
            masks.keep_h)), (True, np.ones((B, H)), None)):
        hs, h = run(params, xs, key, deterministic)
        want_hs, want_h = numpy_gru(params, x64, rec_mask, keep_h, ZONE)
        np.testing.assert_allclose(hs, want_hs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-6)
    assert not np.allclose(masks.recurrent, 1.0) and masks.keep_h.any()  # the masks bite


def test_the_fused_backward_with_masks_and_remat_equals_autodiff(case):
    """Gradients of every param and the input, with dropout, zoneout, lengths, reversed, and
    remat_chunk, against JAX differentiating the scan."""
    params, xs = case
    lengths = jnp.array([T, 4])

    def loss(p, x, fused, remat):
        hs, h = jaxlstm.gru(p, x, seq_lengths=lengths, reverse=True, recurrent_dropout=DROP,
                            zoneout_h=ZONE, key=jax.random.key(5), deterministic=False,
                            fused_backward=fused, remat_chunk=remat)
        return jnp.sum(hs * jnp.cos(hs)) + jnp.sum(h ** 2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=(2, 3))
    want = grad(params, xs, False, None)
    for remat in (None, 3):
        got = grad(params, xs, True, remat)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_bad_rates_and_a_missing_key_are_refused(case):
    params, xs = case
    with pytest.raises(ValueError, match="recurrent_dropout"):
        jaxlstm.gru(params, xs, recurrent_dropout=1.0)
    with pytest.raises(ValueError, match="key is required"):
        jaxlstm.gru(params, xs, zoneout_h=0.1, deterministic=False)
    with pytest.raises(ValueError, match="remat_chunk"):
        jaxlstm.gru(params, xs, remat_chunk=0)
