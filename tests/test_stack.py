"""lstm_stack: layers, directions, merge modes, dropout and residual connections."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import Directions
from jaxlstm.xlstm.slstm import SLSTMParams, SLSTMState, slstm

BATCH, STEPS, INPUT, HIDDEN = 3, 6, 4, 5
TOL = {"atol": 1e-5, "rtol": 1e-5}


def setup(num_layers=2, bidirectional=True, input_size=INPUT):
    params = jaxlstm.init_lstm_stack(jax.random.key(0), input_size, HIDDEN,
                                     num_layers=num_layers, bidirectional=bidirectional)
    xs = jax.random.normal(jax.random.key(1), (BATCH, STEPS, input_size))
    return params, xs


def manual_stack(params, xs, seq_lengths=None):
    """The stack written out with jaxlstm.lstm, layer by layer."""
    layer_input, finals = xs, []
    for layer in params:
        hs_f, s_f = jaxlstm.lstm(layer.forward, layer_input, seq_lengths=seq_lengths)
        outs, states = [hs_f], [s_f]
        if layer.backward is not None:
            hs_b, s_b = jaxlstm.lstm(layer.backward, layer_input, seq_lengths=seq_lengths,
                                     reverse=True)
            outs.append(hs_b)
            states.append(s_b)
        finals.append(Directions(*states))
        layer_input = jnp.concatenate(outs, axis=-1)
    return layer_input, tuple(finals)


def test_init_shapes_chain_layers():
    params, _ = setup(num_layers=3)
    assert len(params) == 3
    assert params[0].forward.w_x.shape == (INPUT, 4 * HIDDEN)
    assert params[1].backward.w_x.shape == (2 * HIDDEN, 4 * HIDDEN)
    assert not np.allclose(params[0].forward.w_x, params[0].backward.w_x)
    uni, _ = setup(bidirectional=False)
    assert uni[1].backward is None and uni[1].forward.w_x.shape == (HIDDEN, 4 * HIDDEN)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_matches_layer_by_layer_composition(bidirectional, with_lengths):
    params, xs = setup(num_layers=3, bidirectional=bidirectional)
    lengths = jnp.array([STEPS, 2, 0]) if with_lengths else None
    outputs, finals = jax.jit(lambda p, x: jaxlstm.lstm_stack(p, x, seq_lengths=lengths))(
        params, xs)
    want_outputs, want_finals = manual_stack(params, xs, lengths)
    np.testing.assert_allclose(outputs, want_outputs, **TOL)
    chex.assert_trees_all_close(finals, want_finals, **TOL)
    if with_lengths:
        np.testing.assert_array_equal(outputs[1, 2:], 0.0)
        np.testing.assert_array_equal(outputs[2], 0.0)


def test_single_layer_equals_lstm():
    params, xs = setup(num_layers=1, bidirectional=False)
    outputs, (final,) = jaxlstm.lstm_stack(params, xs)
    hs, state = jaxlstm.lstm(params[0].forward, xs)
    np.testing.assert_allclose(outputs, hs, **TOL)
    chex.assert_trees_all_close(final.forward, state, **TOL)


def test_merge_modes():
    params, xs = setup()
    concat, _ = jaxlstm.lstm_stack(params, xs)
    summed, _ = jaxlstm.lstm_stack(params, xs, merge="sum")
    separate, _ = jaxlstm.lstm_stack(params, xs, merge="none")
    assert concat.shape == (BATCH, STEPS, 2 * HIDDEN) and summed.shape == (BATCH, STEPS, HIDDEN)
    np.testing.assert_allclose(summed, concat[..., :HIDDEN] + concat[..., HIDDEN:], **TOL)
    np.testing.assert_allclose(separate.forward, concat[..., :HIDDEN], **TOL)
    np.testing.assert_allclose(separate.backward, concat[..., HIDDEN:], **TOL)


def test_initial_state_and_gates_per_layer_and_direction():
    params, xs = setup()
    zeros = jaxlstm.LSTMState(h=jnp.zeros((BATCH, HIDDEN)), c=jnp.zeros((BATCH, HIDDEN)))
    ones = jax.tree.map(jnp.ones_like, zeros)
    state = (Directions(ones, zeros), Directions(zeros, ones))
    outputs, finals, gates = jaxlstm.lstm_stack(params, xs, initial_state=state,
                                                return_gates=True)
    hs_b1, s_b1, g_b1 = jaxlstm.lstm(params[1].backward, _layer0_output(params, xs, state),
                                     initial_state=ones, reverse=True, return_gates=True)
    chex.assert_trees_all_close(finals[1].backward, s_b1, **TOL)
    chex.assert_trees_all_close(gates[1].backward, g_b1, **TOL)
    np.testing.assert_allclose(outputs[..., HIDDEN:], hs_b1, **TOL)


def _layer0_output(params, xs, state):
    fwd, _ = jaxlstm.lstm(params[0].forward, xs, initial_state=state[0].forward)
    bwd, _ = jaxlstm.lstm(params[0].backward, xs, initial_state=state[0].backward, reverse=True)
    return jnp.concatenate([fwd, bwd], axis=-1)


def test_residual_adds_the_layer_input_where_widths_match():
    params, xs = setup(num_layers=3, bidirectional=False)
    outputs, _ = jaxlstm.lstm_stack(params, xs, residual=True)
    h0, _ = jaxlstm.lstm(params[0].forward, xs)                  # INPUT != HIDDEN: no residual
    h1 = jaxlstm.lstm(params[1].forward, h0)[0] + h0
    h2 = jaxlstm.lstm(params[2].forward, h1)[0] + h1
    np.testing.assert_allclose(outputs, h2, **TOL)




def test_dropout_is_off_when_deterministic():
    params, xs = setup()
    plain, _ = jaxlstm.lstm_stack(params, xs)
    same, _ = jaxlstm.lstm_stack(params, xs, dropout_rate=0.5, input_dropout=0.3,
                                 output_dropout=0.2, key=jax.random.key(3))
    np.testing.assert_array_equal(plain, same)


def test_dropout_depends_on_the_key_and_keeps_the_expectation():
    params, xs = setup()
    run = jax.jit(lambda k: jaxlstm.lstm_stack(params, xs, output_dropout=0.5, key=k,
                                               deterministic=False)[0])
    a, b = run(jax.random.key(1)), run(jax.random.key(2))
    assert not np.allclose(a, b)
    plain, _ = jaxlstm.lstm_stack(params, xs)
    dropped = np.asarray(a) == 0.0
    assert 0.3 < dropped.mean() < 0.7
    np.testing.assert_allclose(np.asarray(a)[~dropped], 2 * np.asarray(plain)[~dropped], **TOL)
    # Averaged over many keys, inverted dropout leaves the output unchanged.
    keys = jax.random.split(jax.random.key(0), 400)
    mean = jnp.mean(jax.vmap(run)(keys), axis=0)
    np.testing.assert_allclose(mean, plain, atol=0.05)


def test_inter_layer_and_input_dropout_change_the_output():
    params, xs = setup()
    plain, _ = jaxlstm.lstm_stack(params, xs)
    for kwargs in ({"dropout_rate": 0.5}, {"input_dropout": 0.5}):
        out, _ = jaxlstm.lstm_stack(params, xs, key=jax.random.key(0), deterministic=False,
                                    **kwargs)
        assert not np.allclose(out, plain)


def test_gradients_flow_through_every_layer():
    params, xs = setup()
    grads = jax.jit(jax.grad(lambda p: jnp.sum(jaxlstm.lstm_stack(p, xs)[0] ** 2)))(params)
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(leaf)) and np.any(leaf != 0)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda p, x: jaxlstm.lstm_stack(p[0], x), TypeError, "params must be a non-empty tuple"),
        (lambda p, x: jaxlstm.lstm_stack(p, x[..., :3]), ValueError,
         "params\\[0\\] reads 4 features but xs has 3"),
        (lambda p, x: jaxlstm.lstm_stack((p[0], Directions(p[1].forward)), x), ValueError,
         "params\\[1\\] has 1 directions but params\\[0\\] has 2"),
        (lambda p, x: jaxlstm.lstm_stack((p[1],), x), ValueError,
         "params\\[0\\] reads 10 features but xs has 4"),
        (lambda p, x: jaxlstm.lstm_stack(p, x, merge="avg"), ValueError,
         "merge must be one of \\['concat', 'sum', 'none'\\], got 'avg'"),
        (lambda p, x: jaxlstm.lstm_stack(p, x, dropout_rate=1.0), ValueError,
         "dropout_rate must be in \\[0, 1\\), got 1.0"),
        (lambda p, x: jaxlstm.lstm_stack(p, x, dropout_rate=0.1, deterministic=False),
         ValueError, "key is required when deterministic=False"),
        (lambda p, x: jaxlstm.lstm_stack(p, x, initial_state=()), ValueError,
         "initial_state must be a tuple of 2 Directions"),
        (lambda p, x: jaxlstm.init_lstm_stack(jax.random.key(0), 3, 4, num_layers=0),
         ValueError, "num_layers must be a positive int, got 0"),
    ],
)
def test_bad_input(call, error, match):
    params, xs = setup()
    with pytest.raises(error, match=match):
        call(params, xs)


def test_slstm_layers_stack_like_lstm_layers():
    params = jaxlstm.init_lstm_stack(jax.random.key(0), INPUT, 4, num_layers=2,
                                     bidirectional=True, cell="slstm", num_heads=2)
    assert isinstance(params[1].backward, SLSTMParams) and params[1].forward.w_x.shape == (8, 16)
    forget = np.asarray(params[1].forward.b).reshape(4, 2, 2)[1, 0]
    np.testing.assert_allclose(forget, [5.0, -7.0])  # the last block's power law
    xs = jax.random.normal(jax.random.key(1), (BATCH, STEPS, INPUT))
    lengths = jnp.array([6, 3, 0])
    out, finals = jaxlstm.lstm_stack(params, xs, seq_lengths=lengths)
    layer_input = xs
    for n, layer in enumerate(params):
        hs_f, s_f = slstm(layer.forward, layer_input, seq_lengths=lengths)
        hs_b, s_b = slstm(layer.backward, layer_input, seq_lengths=lengths, reverse=True)
        layer_input = jnp.concatenate([hs_f, hs_b], axis=-1)
        assert isinstance(finals[n].backward, SLSTMState)
        chex.assert_trees_all_close(finals[n], Directions(s_f, s_b), **TOL)
    chex.assert_trees_all_close(out, layer_input, **TOL)
    with pytest.raises(ValueError, match=r"params\[0\]: zoneout_h applies to LSTM and GRU layers, "
                                         "not to sLSTM"):
        jaxlstm.lstm_stack(params, xs, zoneout_h=0.1)
    with pytest.raises(ValueError, match="proj_size apply to LSTM layers"):
        jaxlstm.init_lstm_stack(jax.random.key(0), INPUT, 4, cell="slstm", proj_size=2)


def test_layers_of_different_families_stack():
    """cell per layer: an mLSTM layer over an sLSTM layer over a projected LSTM, bidirectional
    with lengths, equals each family's public function composed by hand; family options
    reach only the layers whose family declares them."""
    cells = ("lstm", "slstm", "mlstm")
    params = jaxlstm.init_lstm_stack(jax.random.key(0), INPUT, 4, num_layers=3,
                                     bidirectional=True, cell=cells, num_heads=2, proj_size=3)
    assert [type(layer.backward).__name__ for layer in params] == [
        "LSTMParams", "SLSTMParams", "MLSTMParams"]
    assert params[1].forward.w_x.shape == (6, 16)               # reads 2 * proj_size
    xs = jax.random.normal(jax.random.key(1), (BATCH, STEPS, INPUT))
    lengths = jnp.array([6, 3, 0])
    run = jax.jit(lambda p, x: jaxlstm.lstm_stack(p, x, seq_lengths=lengths))
    out, finals = run(params, xs)
    functions = (jaxlstm.lstm, slstm, jaxlstm.mlstm)
    layer_input = xs
    for n, (layer, function) in enumerate(zip(params, functions)):
        hs_f, s_f = function(layer.forward, layer_input, seq_lengths=lengths)
        hs_b, s_b = function(layer.backward, layer_input, seq_lengths=lengths, reverse=True)
        layer_input = jnp.concatenate([hs_f, hs_b], axis=-1)
        chex.assert_trees_all_close(finals[n], Directions(s_f, s_b), **TOL)
    chex.assert_trees_all_close(out, layer_input, **TOL)
    # An option goes to the layers whose family takes it (mode and chunk_size to the mLSTM
    # layer); one that no layer takes is refused by name.
    chex.assert_trees_all_close(jaxlstm.lstm_stack(params, xs, mode="recurrent", chunk_size=2,
                                                   seq_lengths=lengths)[0], out, **TOL)
    with pytest.raises(ValueError, match=r"params\[2\]: mode must be one of \['chunkwise', "
                                         r"'parallel', 'recurrent'\] for mLSTM"):
        jaxlstm.lstm_stack(params, xs, mode="sequential")
    with pytest.raises(ValueError, match=r"params\[0\]: tile is an option of no registered "
                                         "family"):
        jaxlstm.lstm_stack(params, xs, tile=2)
    with pytest.raises(ValueError, match=r"params\[0\]: chunk_size applies to mLSTM layers, "
                                         "not to LSTM"):
        jaxlstm.lstm_stack(params[:1], xs, chunk_size=2)
    with pytest.raises(ValueError, match=r"cell must be a name or 3 names \(num_layers\), got 2"):
        jaxlstm.init_lstm_stack(jax.random.key(0), INPUT, 4, num_layers=3, cell=cells[:2])
    with pytest.raises(ValueError, match=r"cell must be one of \['lstm', 'peephole', .*'min_gru'"
                                         r".*got 'elman'"):
        jaxlstm.init_lstm_stack(jax.random.key(0), INPUT, 4, cell="elman")
