"""`resets` on the LSTM's time loop (`jaxlstm.lstm`, any variant, and `slstm` and `gru`, which
run on the same loop): a batch of packed segments equals running each segment alone from the initial
state, forwards and reversed, with lengths and a non-zero initial state; the fused backward's
gradients equal autodiff's and the segment-by-segment computation's, with and without remat.

Compiling is what this file spends its time on: each family's cases run in one jitted program,
and the segments alone are the family's `step` in a Python loop (straight-line code, cheaper to
compile than a scan per segment; `step` equals `apply` by tests/test_families.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import family as families
from jaxlstm.xlstm.slstm import slstm

BATCH, STEPS, INPUT, HIDDEN = 2, 9, 3, 4
TOL = {"atol": 1e-5, "rtol": 1e-5}
GRAD_TOL = {"atol": 1e-4, "rtol": 1e-4}
RESETS = np.array([[0, 0, 0, 1, 0, 0, 0, 1, 0],
                   [0, 1, 0, 0, 0, 0, 1, 1, 0]], bool)   # a one-step segment too
LENGTHS = np.array([9, 7])                               # row 1's step 7 reset is padding
DIRECTIONS = {"peephole": (False, True),   # peephole: the LSTM's path with weights;
              "slstm": (True,), "gru": (False,)}   # the others ride the same loop
CASES = [(family, reverse) for family, directions in DIRECTIONS.items() for reverse in directions]


def segments(b):
    """Row b's segments as (start, end) within its valid length."""
    starts = [0] + [t for t in range(1, LENGTHS[b]) if RESETS[b, t]]
    return list(zip(starts, starts[1:] + [int(LENGTHS[b])]))


def by_segments(step, params, xs, state0, reverse):
    """Each segment alone from its row's initial state, `step` by step (backwards when
    reversed); outputs written in place, zeros in padding; the final state is the last segment
    read (the first one when reversed)."""
    rows, finals = [], []
    for b in range(BATCH):
        row = [jnp.zeros((HIDDEN,), xs.dtype)] * STEPS
        final = None
        for a, e in segments(b):
            state = jax.tree.map(lambda s, b=b: s[b:b + 1], state0)
            for t in reversed(range(a, e)) if reverse else range(a, e):
                y, state = step(params, xs[b:b + 1, t], state)
                row[t] = y[0]
            if not reverse or a == 0:
                final = state
        rows.append(jnp.stack(row))
        finals.append(final)
    return jnp.stack(rows), jax.tree.map(lambda *a: jnp.concatenate(a), *finals)


def make(family):
    """Params random in every leaf (NumPy noise in the shapes eval_shape gives: no init or
    random draw to compile), inputs, a non-zero initial state, the public function and the
    family's step."""
    if family == "slstm":
        init, fields, run = (lambda key: jaxlstm.init_slstm(key, INPUT, HIDDEN, num_heads=2),
                             jaxlstm.SLSTMState, slstm)
    elif family == "gru":   # state h alone
        init, fields, run = (lambda key: jaxlstm.init_gru(key, INPUT, HIDDEN), None,
                             jaxlstm.gru)
    else:
        init, fields, run = (lambda key: jaxlstm.init_lstm(key, INPUT, HIDDEN, cell=family),
                             jaxlstm.LSTMState, jaxlstm.lstm)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype),
                          jax.eval_shape(init, jax.random.key(0)))
    xs = jnp.asarray(rng.standard_normal((BATCH, STEPS, INPUT)), jnp.float32)
    state0 = [jnp.asarray(0.5 * rng.standard_normal((BATCH, HIDDEN)), jnp.float32)
              for _ in (fields._fields if fields else "h")]
    state0 = fields(*state0) if fields else state0[0]
    if family == "slstm":   # m is a log-scale stabiliser: keep n > 0 as the cell does
        state0 = state0._replace(n=jnp.abs(state0.n) + 0.5)
    return params, xs, state0, run, families.of(params).step


def loss(outputs, final):
    return jnp.sum(outputs ** 2) + sum(jnp.sum(jnp.sin(f)) for f in jax.tree.leaves(final))


@functools.cache
def computed(family):
    """Everything the test compares for `family`, both of its directions, in one jitted program
    (compiling is what this file spends its time on): the packed call, the segments run alone,
    and the gradients: the fused backward (with and without remat) against autodiff of the
    same loop, and (once) autodiff's against the segments' own gradients."""
    params, xs, state0, run, step = make(family)

    def everything(params, xs, state0):
        out = {}
        for reverse in DIRECTIONS[family]:
            def packed(p, x, s, fused=True, remat=None, reverse=reverse):
                return run(p, x, initial_state=s, seq_lengths=jnp.asarray(LENGTHS),
                           resets=jnp.asarray(RESETS), reverse=reverse, fused_backward=fused,
                           **({} if remat is None else {"remat_chunk": remat}))

            def alone(p, x, s, reverse=reverse):
                return by_segments(step, p, x, s, reverse)

            def grad(f, **options):
                return jax.grad(lambda *a: loss(*f(*a, **options)), argnums=(0, 1, 2))(
                    params, xs, state0)

            out[reverse] = {
                "packed": packed(params, xs, state0), "alone": alone(params, xs, state0),
                "autodiff": grad(packed, fused=False),
                "fused": [grad(packed, fused=True, remat=remat)
                          for remat in ((None, 2) if family == "peephole" else (None,))]}
            if family == "peephole" and reverse:
                out[reverse]["alone_grads"] = grad(alone)
        return out

    return jax.device_get(jax.jit(everything)(params, xs, state0))


def assert_close(a, b, tol):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), a, b)


@pytest.mark.parametrize("family, reverse", CASES, ids=str)
def test_packed_segments_equal_each_segment_alone(family, reverse):
    out = computed(family)[reverse]
    assert_close(out["packed"], out["alone"], TOL)
    # The fused backward (with and without remat) against autodiff of the same loop, and
    # autodiff against the segments alone (once).
    if "alone_grads" in out:
        assert_close(out["autodiff"], out["alone_grads"], GRAD_TOL)
    for fused in out["fused"]:
        assert_close(fused, out["autodiff"], GRAD_TOL)


def test_resets_are_checked():
    params, xs, *_ = make("lstm")
    with pytest.raises(TypeError, match="resets must be a boolean array, got dtype int32"):
        jaxlstm.lstm(params, xs, resets=jnp.zeros((BATCH, STEPS), jnp.int32))
    with pytest.raises(ValueError, match=r"resets must have shape \(batch..., T\) = \(2, 9\), "
                                         r"got \(9, 2\)"):
        jaxlstm.lstm(params, xs, resets=jnp.zeros((STEPS, BATCH), bool))
