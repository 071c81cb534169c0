"""jaxlstm.minrnn (minGRU, minLSTM): parallel against sequential, both against a float64 NumPy
loop written from the paper's equations, the one-step function, stacks and validation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm.minrnn import log_scan

INPUT, HIDDEN, STEPS = 3, 5, 6
LENGTHS = np.array([0, STEPS, 3, 1])  # empty, full and partial sequences
TOL = {"atol": 2e-5, "rtol": 2e-5}
GRAD_TOL = {"atol": 1e-4, "rtol": 1e-4}
CELLS = {"min_lstm": (jaxlstm.init_min_lstm, jaxlstm.min_lstm, jaxlstm.min_lstm_cell),
         "min_gru": (jaxlstm.init_min_gru, jaxlstm.min_gru, jaxlstm.min_gru_cell)}


def make(cell, batch_shape=(4,), steps=STEPS, key=0):
    """Params scaled up (so gates saturate both ways and g takes both branches), inputs, and a
    random initial state with negative entries."""
    keys = jax.random.split(jax.random.key(key), 3)
    params = CELLS[cell][0](keys[0], INPUT, HIDDEN)
    params = jax.tree.map(lambda a: 3.0 * a, params)
    xs = jax.random.normal(keys[1], batch_shape + (steps, INPUT))
    h0 = 2.0 * jax.random.normal(keys[2], batch_shape + (HIDDEN,))
    return params, xs, h0


# One jitted entry point per behaviour, shared by the tests (compiling is what costs time).
@functools.partial(jax.jit, static_argnames=("cell", "mode", "reverse", "time_major"))
def run(cell, params, xs, h0, lengths, *, mode, reverse=False, time_major=False):
    return CELLS[cell][1](params, xs, initial_state=h0, seq_lengths=lengths, reverse=reverse,
                          time_major=time_major, mode=mode)


def _loss(cell, params, xs, h0, lengths, mode, reverse):
    hs, h = run(cell, params, xs, h0, lengths, mode=mode, reverse=reverse)
    return jnp.sum(jnp.sin(3.0 * hs)) + jnp.sum(jnp.cos(h))


grads = jax.jit(jax.grad(_loss, argnums=(1, 2, 3)), static_argnames=("cell", "mode", "reverse"))


def numpy_loop(cell, params, xs, h0, lengths=None, reverse=False):
    """float64 loop over each sequence's valid steps, from the paper's equations only."""
    w, bias = (np.asarray(a, np.float64) for a in params)
    xs, h0 = np.asarray(xs, np.float64), np.asarray(h0, np.float64)
    batch_shape, steps = xs.shape[:-2], xs.shape[-2]
    xs, h0 = xs.reshape((-1, steps, INPUT)), h0.reshape((-1, HIDDEN))
    lengths = (np.full(len(xs), steps) if lengths is None
               else np.asarray(lengths).reshape(len(xs)))

    def sigmoid(v):
        return 1.0 / (1.0 + np.exp(-v))

    def g(v):
        return np.where(v >= 0, v + 0.5, sigmoid(v))

    hs, finals = np.zeros(xs.shape[:2] + (HIDDEN,)), np.zeros(h0.shape)
    for n in range(len(xs)):
        h = h0[n]
        order = range(lengths[n])
        for t in reversed(order) if reverse else order:
            pre = xs[n, t] @ w + bias
            if cell == "min_gru":
                z = sigmoid(pre[:HIDDEN])
                h = (1 - z) * h + z * g(pre[HIDDEN:])
            else:
                f, i = sigmoid(pre[:HIDDEN]), sigmoid(pre[HIDDEN:2 * HIDDEN])
                h = f / (f + i) * h + i / (f + i) * g(pre[2 * HIDDEN:])
            hs[n, t] = h
        finals[n] = h
    return (hs.reshape(batch_shape + (steps, HIDDEN)), finals.reshape(batch_shape + (HIDDEN,)))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mode", ["parallel", "sequential"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_matches_numpy_loop(cell, mode, reverse):
    params, xs, h0 = make(cell)
    hs, h = run(cell, params, xs, h0, jnp.asarray(LENGTHS), mode=mode, reverse=reverse)
    want_hs, want_h = numpy_loop(cell, params, xs, h0, LENGTHS, reverse)
    np.testing.assert_allclose(hs, want_hs, **TOL)
    np.testing.assert_allclose(h, want_h, **TOL)
    assert not np.any(np.asarray(hs)[0]), "a length-0 sequence outputs zeros"
    np.testing.assert_array_equal(h[0], h0[0])  # and keeps its initial state


@pytest.mark.parametrize("cell, reverse", [("min_lstm", True), ("min_gru", False)])
def test_parallel_gradients_match_sequential(cell, reverse):
    params, xs, h0 = make(cell)
    lengths = jnp.asarray(LENGTHS)
    got = grads(cell, params, xs, h0, lengths, "parallel", reverse)
    want = grads(cell, params, xs, h0, lengths, "sequential", reverse)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, w, **GRAD_TOL)
    # Padded steps get no gradient; the initial state of a length-0 sequence passes through.
    d_xs, d_h0 = got[1], got[2]
    assert not np.any(np.asarray(d_xs)[2, 3:]) and not np.any(np.asarray(d_xs)[0])
    np.testing.assert_allclose(d_h0[0], -np.sin(np.asarray(h0[0])), **GRAD_TOL)


@pytest.mark.parametrize("cell, mode", [("min_lstm", "sequential"), ("min_gru", "parallel")])
def test_time_major_and_two_batch_dims(cell, mode):
    params, xs, h0 = make(cell, batch_shape=(2, 2))
    lengths = jnp.asarray(LENGTHS.reshape(2, 2))
    want_hs, want_h = numpy_loop(cell, params, xs, h0, lengths, reverse=True)
    xs_tm = jnp.moveaxis(xs, -2, 0)
    hs, h = run(cell, params, xs_tm, h0, lengths, mode=mode, reverse=True, time_major=True)
    assert hs.shape == (STEPS, 2, 2, HIDDEN)
    np.testing.assert_allclose(jnp.moveaxis(hs, 0, -2), want_hs, **TOL)
    np.testing.assert_allclose(h, want_h, **TOL)


@functools.partial(jax.jit, static_argnames=("cell",))
def defaults_and_steps(cell, params, xs):
    """The sequence with every default; the step function looped; T = 1 without batch dims."""
    _, sequence, step = CELLS[cell]
    hs, _ = sequence(params, xs)
    state, stepped = jnp.zeros(xs.shape[:1] + (HIDDEN,)), []
    for t in range(xs.shape[1]):
        state = step(params, state, xs[:, t])
        stepped.append(state)
    first = jax.vmap(lambda x: sequence(params, x)[0])(xs[:, :1])  # vmap adds the batch dim
    return hs, jnp.stack(stepped, axis=1), first[:, 0]


@pytest.mark.parametrize("cell", list(CELLS))
def test_step_function_loop_and_defaults(cell):
    params, xs, _ = make(cell)
    hs, stepped, first = defaults_and_steps(cell, params, xs)
    want_hs, _ = numpy_loop(cell, params, xs, jnp.zeros((4, HIDDEN)))
    np.testing.assert_allclose(hs, want_hs, **TOL)
    np.testing.assert_allclose(stepped, want_hs, **TOL)
    np.testing.assert_allclose(first, want_hs[:, 0], **TOL)


@pytest.mark.parametrize("cell", ["min_lstm"])  # the recurrence code is shared
def test_long_sequence_is_finite_and_modes_agree(cell):
    params, xs, h0 = make(cell, batch_shape=(1,), steps=4096, key=1)
    parallel = run(cell, params, xs, h0, None, mode="parallel")
    sequential = run(cell, params, xs, h0, None, mode="sequential")
    assert np.all(np.isfinite(parallel[0]))
    for p, s in zip(parallel, sequential):
        np.testing.assert_allclose(p, s, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cell", list(CELLS))
def test_bfloat16_scans_in_float32(cell):
    params, xs, h0 = make(cell)
    # Values for which x @ W + b is exact in bfloat16, so that the only bfloat16 rounding left
    # is the final cast (relative 2^-9); gates or a scan in bfloat16 would be off by 5-15%.
    params = jax.tree.map(lambda a: jnp.round(8 * a) / 8, params)
    xs, h0 = jnp.sign(xs), jnp.round(4 * h0) / 4
    as_bf16 = functools.partial(jax.tree.map, lambda a: a.astype(jnp.bfloat16))
    got_hs, got_h = run(cell, as_bf16(params), as_bf16(xs), as_bf16(h0), jnp.asarray(LENGTHS),
                        mode="parallel")
    assert got_hs.dtype == got_h.dtype == jnp.bfloat16
    want = numpy_loop(cell, params, xs, h0, LENGTHS)
    for got, w in zip((got_hs, got_h), want):
        np.testing.assert_allclose(np.asarray(got, np.float32), w, atol=1e-6, rtol=1e-2)


def test_log_linear_recurrence_at_padding_has_finite_gradients():
    # All steps padded: exp(LOG_ZERO) = 0 and the gradients of the masked values are zero.
    log_a, log_b = jnp.zeros((2, 3, 1)), jnp.zeros((2, 3, 1))
    valid = jnp.zeros((2, 3, 1), bool)

    def loss(log_a, log_b, h0):
        hs, _ = log_scan.log_linear_recurrence(
            *log_scan.mask_log_coefficients(log_a, log_b, valid), h0)
        return jnp.sum(hs)

    d = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(log_a, log_b, -jnp.ones((3, 1)))
    np.testing.assert_array_equal(d[0], 0.0)
    np.testing.assert_array_equal(d[1], 0.0)
    np.testing.assert_array_equal(d[2], 2.0)


@functools.partial(jax.jit, static_argnames=("residual", "mode"))
def run_stack(params, xs, lengths, residual, mode="parallel"):
    return jaxlstm.lstm_stack(params, xs, seq_lengths=lengths, residual=residual, mode=mode)


@pytest.mark.parametrize("cell", ["min_gru"])  # min_lstm's layers: test_stack_refuses_...
def test_stack_matches_layers_by_hand(cell):
    params = jaxlstm.init_lstm_stack(jax.random.key(3), INPUT, HIDDEN, num_layers=2,
                                     bidirectional=True, cell=cell)
    _, xs, _ = make(cell)
    lengths = jnp.asarray(LENGTHS)
    out, states = run_stack(params, xs, lengths, True)
    layer_input, want_states = xs, []
    for n, layer in enumerate(params):
        fwd, h_f = run(cell, layer.forward, layer_input, None, lengths, mode="parallel")
        bwd, h_b = run(cell, layer.backward, layer_input, None, lengths, mode="parallel",
                       reverse=True)
        layer_output = jnp.concatenate([fwd, bwd], axis=-1)
        layer_input = layer_output + layer_input if n else layer_output  # residual
        want_states.append((h_f, h_b))
    assert out.shape == (4, STEPS, 2 * HIDDEN)
    np.testing.assert_allclose(out, layer_input, **TOL)
    for got, want in zip(states, want_states):
        np.testing.assert_allclose(got.forward, want[0], **TOL)
        np.testing.assert_allclose(got.backward, want[1], **TOL)


def test_stack_refuses_lstm_options():
    key, xs = jax.random.key(0), jnp.zeros((2, 3, INPUT))
    with pytest.raises(ValueError, match="proj_size apply to LSTM layers, not to cell='min_gru'"):
        jaxlstm.init_lstm_stack(key, INPUT, HIDDEN, cell="min_gru", proj_size=2)
    params = jaxlstm.init_lstm_stack(key, INPUT, HIDDEN, cell="min_lstm")
    assert isinstance(params[0].forward, jaxlstm.MinLSTMParams)
    for options, takers in (({"zoneout_h": 0.1}, "LSTM and GRU"),
                            ({"return_gates": True}, "LSTM and sLSTM"),
                            ({"unroll": 2}, "LSTM, sLSTM and GRU")):
        with pytest.raises(ValueError, match=f"params\\[0\\]: {next(iter(options))} applies to "
                                             f"{takers} layers, not to minLSTM"):
            jaxlstm.lstm_stack(params, xs, **options)
    lstm_params = jaxlstm.init_lstm_stack(key, INPUT, HIDDEN)
    with pytest.raises(ValueError, match="mode applies to families with several forms "
                                         r"\(mLSTM, minLSTM and minGRU\), not to LSTM"):
        jaxlstm.lstm_stack(lstm_params, xs, mode="parallel")
    _, xs, _ = make("min_lstm")
    lengths = jnp.asarray(LENGTHS)
    stacked, states = run_stack(params, xs, lengths, False, mode="sequential")
    want, want_h = run("min_lstm", params[0].forward, xs, None, lengths, mode="parallel")
    np.testing.assert_allclose(stacked, want, **TOL)
    np.testing.assert_allclose(states[0].forward, want_h, **TOL)


def _bad_calls():
    params, xs, h0 = make("min_lstm")
    gru, _, _ = make("min_gru")
    f = jaxlstm.min_lstm
    return [
        (lambda: f(params, xs, mode="scan"), ValueError,
         r"mode must be one of \['parallel', 'sequential'\], got 'scan'"),
        (lambda: f(gru, xs), ValueError,
         (r"params.w_x must have shape \(input_size, 3 \* hidden_size\) for min_lstm "
         r"\(blocks f, i, h~\), got \(3, 10\)")),
        (lambda: f(params._replace(b=params.b[:-1]), xs), ValueError,
         r"params.b must have shape \(15,\) to match params.w_x \(3, 15\), got \(14,\)"),
        (lambda: f((params.w_x,), xs), TypeError, "params must be MinLSTMParams"),
        (lambda: f(params, xs[..., :2]), ValueError, "xs must have 3 features"),
        (lambda: f(params, xs[0, 0]), ValueError, "xs must have rank >= 2"),
        (lambda: f(params, xs.astype(jnp.int32)), TypeError, "xs must have a floating dtype"),
        (lambda: f(params, xs, initial_state=h0[:2]), ValueError,
         (r"initial_state must have shape \(4, 5\) \(batch shape \(4,\), hidden_size 5\), "
         r"got \(2, 5\)")),
        (lambda: f(params, xs, seq_lengths=jnp.ones(4)), TypeError,
         "seq_lengths must have an integer dtype"),
        (lambda: f(params, xs, seq_lengths=jnp.full(4, 7)), ValueError,
         r"seq_lengths must lie in \[0, 6\]"),
        (lambda: jaxlstm.min_gru_cell(gru, jnp.zeros((2, 4)), xs[:2, 0]), ValueError,
         r"h must have shape \(2, 5\)"),
        (lambda: jaxlstm.init_min_gru(jax.random.key(0), 3, 0), ValueError,
         "hidden_size must be a positive int, got 0"),
        (lambda: jaxlstm.init_min_lstm(jax.random.key(0), 3, 4, dtype=jnp.int32), TypeError,
         "dtype must be a floating dtype"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_validation_names_the_argument(index):
    call, error, match = _bad_calls()[index]
    with pytest.raises(error, match=match):
        call()


def test_params_properties_and_init():
    params = jaxlstm.init_min_lstm(jax.random.key(0), 4, 6, dtype=jnp.bfloat16)
    assert (params.input_size, params.hidden_size, params.w_x.dtype) == (4, 6, jnp.bfloat16)
    gru = jaxlstm.init_min_gru(jax.random.key(0), 4, 6)
    assert gru.w_x.shape == (4, 12) and gru.b.shape == (12,) and gru.hidden_size == 6
    assert float(jnp.max(jnp.abs(gru.w_x))) <= 0.5  # U(-1/sqrt(I), 1/sqrt(I))
