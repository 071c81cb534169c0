"""`resets` on the LSTM's time loop (`jaxlstm.lstm`, any variant, and `slstm` and `gru`, which
run on the same loop): a batch of packed segments equals running each segment alone from the initial
state, forwards and reversed, with lengths and a non-zero initial state; the fused backward's
gradients equal autodiff's and the segment-by-segment computation's, with and without remat."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm.xlstm.slstm import slstm


class GRUState(NamedTuple):
    h: jax.Array

BATCH, STEPS, INPUT, HIDDEN = 2, 9, 3, 4
TOL = {"atol": 1e-5, "rtol": 1e-5}
RESETS = np.array([[0, 0, 0, 1, 0, 0, 0, 1, 0],
                   [0, 1, 0, 0, 0, 0, 1, 1, 0]], bool)   # a one-step segment too
LENGTHS = np.array([9, 7])                               # row 1's step 7 reset is padding


def segments(b):
    """Row b's segments as (start, end) within its valid length."""
    starts = [0] + [t for t in range(1, LENGTHS[b]) if RESETS[b, t]]
    return list(zip(starts, starts[1:] + [int(LENGTHS[b])]))


def by_segments(run, params, xs, state0, reverse):
    """Each segment alone from its row's initial state; outputs written in place, zeros in
    padding; the final state is the last segment read (the first one when reversed)."""
    rows, finals = [], []
    for b in range(BATCH):
        row = jnp.zeros((STEPS, HIDDEN), xs.dtype)
        start = jax.tree.map(lambda a: a[b:b + 1], state0)
        final = None
        for a, e in segments(b):
            hs, last = run(params, xs[b:b + 1, a:e], initial_state=start, reverse=reverse)
            row = row.at[a:e].set(hs[0])
            if final is None or not reverse:
                final = last if (not reverse or a == 0) else final
        rows.append(row)
        finals.append(final)
    return jnp.stack(rows), jax.tree.map(lambda *a: jnp.concatenate(a), *finals)


def make(family):
    keys = jax.random.split(jax.random.key(0), 4)
    if family == "slstm":
        params = jaxlstm.init_slstm(keys[0], INPUT, HIDDEN, num_heads=2)
        state_type, run = jaxlstm.SLSTMState, slstm
    elif family == "gru":   # state h alone, as a one-field record for the helpers here
        params = jaxlstm.init_gru(keys[0], INPUT, HIDDEN)
        state_type = GRUState

        def run(p, x, initial_state=None, **options):
            hs, h = jaxlstm.gru(p, x, initial_state=initial_state.h, **options)
            return hs, GRUState(h)
    else:
        params = jaxlstm.init_lstm(keys[0], INPUT, HIDDEN, cell=family)
        state_type, run = jaxlstm.LSTMState, jaxlstm.lstm
    leaves, tree = jax.tree.flatten(params)
    params = jax.tree.unflatten(tree, [a + 0.3 * jax.random.normal(k, a.shape) for a, k in
                                       zip(leaves, jax.random.split(keys[1], len(leaves)))])
    xs = jax.random.normal(keys[2], (BATCH, STEPS, INPUT))
    state0 = state_type(*(0.5 * jax.random.normal(k, (BATCH, HIDDEN)) for k in
                          jax.random.split(keys[3], len(state_type._fields))))
    if family == "slstm":   # m is a log-scale stabiliser: keep n > 0 as the cell does
        state0 = state0._replace(n=jnp.abs(state0.n) + 0.5)
    return params, xs, state0, run


def loss(outputs, final):
    return jnp.sum(outputs ** 2) + sum(jnp.sum(jnp.sin(f)) for f in final)


@pytest.mark.parametrize("family, reverse", [   # peephole: the LSTM's path with weights;
    ("peephole", False), ("peephole", True),     # the others ride the same loop
    ("slstm", True), ("gru", False)], ids=str)
def test_packed_segments_equal_each_segment_alone(family, reverse):
    params, xs, state0, run = make(family)

    def packed(p, x, s, fused=True, remat=None):
        return run(p, x, initial_state=s, seq_lengths=jnp.asarray(LENGTHS),
                   resets=jnp.asarray(RESETS), reverse=reverse, fused_backward=fused,
                   **({} if remat is None else {"remat_chunk": remat}))

    want, want_final = by_segments(run, params, xs, state0, reverse)
    got, final = jax.jit(packed)(params, xs, state0)
    np.testing.assert_allclose(got, want, **TOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), final, want_final)

    # The fused backward (with and without remat) against autodiff of the same loop.
    grad = jax.jit(jax.grad(lambda *a, **k: loss(*packed(*a, **k)), argnums=(0, 1, 2)),
                   static_argnames=("fused", "remat"))
    want_grads = grad(params, xs, state0, fused=False)
    if family == "peephole" and reverse:   # and autodiff against the segments, once
        reference = jax.grad(lambda *a: loss(*by_segments(run, *a, reverse)),
                             argnums=(0, 1, 2))(params, xs, state0)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4),
                     want_grads, reference)
    for remat in (None, 2) if family == "peephole" else (None,):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4),
                     grad(params, xs, state0, fused=True, remat=remat), want_grads)


def test_resets_are_checked():
    params, xs, _, _ = make("lstm")
    with pytest.raises(TypeError, match="resets must be a boolean array, got dtype int32"):
        jaxlstm.lstm(params, xs, resets=jnp.zeros((BATCH, STEPS), jnp.int32))
    with pytest.raises(ValueError, match=r"resets must have shape \(batch..., T\) = \(2, 9\), "
                                         r"got \(9, 2\)"):
        jaxlstm.lstm(params, xs, resets=jnp.zeros((STEPS, BATCH), bool))
