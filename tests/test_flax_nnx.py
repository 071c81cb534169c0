"""jaxlstm.flax.nnx: LSTMCell and LSTM against the functional API and Flax's NNX cells.

The LSTM module runs `jaxlstm.lstm_stack` on its params, so for the same weights its outputs,
final states and gradients equal the functional stack's. The cell is a drop-in for Flax's
`nnx.OptimizedLSTMCell` inside `nnx.RNN` and `nnx.Bidirectional`.

Compilation dominates the run time, so calls are jitted once per configuration, test data comes
from NumPy, and most modules are built abstractly (`nnx.eval_shape`) and given random params
rather than running their initialisers eagerly (every eager op compiles on first use); the tests
of initialisation itself, dropout and training build them for real. Models use `unroll=1`,
which compiles faster than the chunks chosen by default (tested in test_flax_linen.py).
"""

import functools

import chex
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.nnx.nn.recurrent import flip_sequences
from flax.traverse_util import flatten_dict

import jaxlstm
from jaxlstm import Directions, LSTMState
from jaxlstm.flax import to_lstm_params, to_module_params
from jaxlstm.flax.nnx import LSTM, LSTMCell
from jaxlstm.interop import from_flax_nnx, to_flax_nnx

BATCH, STEPS, INPUT, HIDDEN, PROJ = 3, 5, 4, 6, 3
TOL = {"atol": 1e-6, "rtol": 1e-6}
FLAX_TOL = {"atol": 2e-6, "rtol": 2e-5}  # Flax's cells sum the gate products in another order
GRAD_TOL = {"atol": 1e-5, "rtol": 1e-5}
LENGTHS = jnp.array([STEPS, 2, 0])
# Flax's nnx.RNN returns the carry after the whole padded sequence for a length of 0 (its index
# of the last valid step wraps to -1), so comparisons of its carry use lengths of at least 1.
POSITIVE_LENGTHS = jnp.array([STEPS, 2, 1])
STATIC = ("return_carry", "return_gates", "deterministic", "merge", "residual", "time_major",
          "unroll", "dropout_rate", "recurrent_dropout", "zoneout_h", "zoneout_c")


@functools.partial(nnx.jit, static_argnames=STATIC)
def call(model, xs, **kwargs):
    return model(xs, **kwargs)


@functools.partial(jax.jit, static_argnames=STATIC)
def stack(params, xs, **kwargs):
    return jaxlstm.lstm_stack(params, xs, **kwargs)


def normal(shape, seed, scale=1.0, dtype=np.float32):
    """Test data from NumPy: eager jax.random ops would each compile on first use."""
    values = scale * np.random.default_rng(seed).standard_normal(shape)
    return jnp.asarray(np.asarray(values, dtype=dtype))


def inputs(shape=(BATCH, STEPS, INPUT), seed=1):
    return normal(shape, seed)


def randomise(tree, seed=2):
    """Every leaf (array or ShapeDtypeStruct) replaced by noise, so no initial value (zero
    bias, unit gain) hides a mix-up."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef.unflatten([normal(x.shape, (seed, n), 0.5, x.dtype)
                              for n, x in enumerate(leaves)])


def build(factory, seed=2):
    """The module `factory()` makes, built abstractly and given random params (for modules
    whose only state is their params)."""
    graphdef, params, rest = nnx.split(nnx.eval_shape(factory), nnx.Param, ...)
    assert not jax.tree.leaves(rest)
    return nnx.merge(graphdef, randomise(params, seed))


def init_stack(cell="lstm", proj_size=None, num_layers=2, bidirectional=True, seed=2):
    """Random stack params, laid out as jaxlstm.init_lstm_stack's."""
    return randomise(jax.eval_shape(functools.partial(
        jaxlstm.init_lstm_stack, input_size=INPUT, hidden_size=HIDDEN, num_layers=num_layers,
        bidirectional=bidirectional, cell=cell, proj_size=proj_size), jax.random.key(0)), seed)


def random_stack_state(num_layers, proj_size=None, seed=5):
    """A nonzero initial state for a bidirectional stack."""
    def state(n):
        return LSTMState(h=normal((BATCH, proj_size or HIDDEN), (seed, n, 0)),
                         c=normal((BATCH, HIDDEN), (seed, n, 1)))

    return tuple(Directions(state(2 * n), state(2 * n + 1)) for n in range(num_layers))


def zeros_like(tree):
    return jax.tree.map(lambda x: jnp.asarray(np.zeros(x.shape, x.dtype)), tree)


def flat(tree):
    """{path: leaf} of a nested dict or an nnx.State (empty sub-dicts dropped)."""
    if isinstance(tree, nnx.State):
        tree = nnx.to_pure_dict(tree)
    return flatten_dict(tree)


def shapes(tree):
    return {path: leaf.shape for path, leaf in flat(tree).items()}


def param_dtypes(module):
    return {leaf.dtype for leaf in jax.tree.leaves(nnx.state(module, nnx.Param))}


def valid_mask(lengths):
    return np.arange(STEPS) < np.asarray(lengths)[:, None]


def row(tree, n):
    return jax.tree.map(lambda a: np.asarray(a)[n], tree)


def stack_loss(outputs, finals):
    """Depends on every output and every final h and c, nonlinearly."""
    states = [s for layer in finals for s in layer if s is not None]
    return jnp.sum(jnp.sin(3.0 * outputs)) + sum(
        jnp.sum(s.h**2) + jnp.sum(jnp.cos(s.c)) for s in states
    )


def cell_loss(carry, outputs, lengths):
    c, h = carry
    mask = jnp.asarray(valid_mask(lengths))[..., None]
    return jnp.sum(jnp.where(mask, jnp.sin(3.0 * outputs), 0.0)) + jnp.sum(h**2) + jnp.sum(
        jnp.cos(c))


# --- LSTM against jaxlstm.lstm_stack -----------------------------------------------------------


@pytest.mark.parametrize("cell, proj_size", [("lstm", None), ("peephole", PROJ), ("cifg", None)])
def test_lstm_matches_lstm_stack(cell, proj_size):
    xs = inputs()
    params = init_stack(cell, proj_size)
    model = build(lambda: LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, cell=cell,
                               proj_size=proj_size, unroll=1, rngs=nnx.Rngs(0)), seed=9)
    assert shapes(nnx.state(model, nnx.Param)) == shapes(to_module_params(params))
    model.load_lstm_params(params)
    chex.assert_trees_all_equal(model.lstm_params(), params)
    # The default initial state (zeros) in the first case, a random one in the others.
    initial = None if cell == "lstm" else random_stack_state(2, proj_size)

    @nnx.jit
    def module_value_and_grad(model, xs):
        def loss(model, xs):
            carry, outputs = model(xs, seq_lengths=LENGTHS, initial_carry=initial,
                                   return_carry=True)
            return stack_loss(outputs, carry), (outputs, carry)

        return nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True)(model, xs)

    def functional_loss(p, xs):
        outputs, finals = jaxlstm.lstm_stack(p, xs, seq_lengths=LENGTHS, initial_state=initial,
                                             unroll=1)
        return stack_loss(outputs, finals), (outputs, finals)

    (_, (outputs, carry)), grads = module_value_and_grad(model, xs)
    (_, (want_outputs, want_finals)), want_grads = jax.jit(
        jax.value_and_grad(functional_loss, argnums=(0, 1), has_aux=True))(params, xs)

    np.testing.assert_allclose(outputs, want_outputs, **TOL)
    chex.assert_trees_all_close(carry, want_finals, **TOL)  # same pytree: Directions, LSTMState
    chex.assert_trees_all_close(flat(grads[0]), flat(to_module_params(want_grads[0])), **TOL)
    np.testing.assert_allclose(grads[1], want_grads[1], **TOL)
    # Padded steps are exactly zero; a length of 0 leaves the initial state.
    np.testing.assert_array_equal(outputs[1, 2:], 0.0)
    np.testing.assert_array_equal(outputs[2], 0.0)
    want_initial = row(initial if initial is not None else zeros_like(want_finals), 2)
    chex.assert_trees_all_equal(row(carry, 2), want_initial)


def test_layers_are_attributes():
    model = nnx.eval_shape(lambda: LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True,
                                        cell="peephole", proj_size=PROJ, rngs=nnx.Rngs(0)))
    assert isinstance(model.layer_1.backward.w_x, nnx.Param)
    assert model.layer_1.backward.w_x.get_value().shape == (2 * PROJ, 4 * HIDDEN)
    assert model.layer_0.forward.w_h.get_value().shape == (PROJ, 4 * HIDDEN)
    assert model.layer_0.forward.w_p.get_value().shape == (HIDDEN, PROJ)
    assert isinstance(model.layer_0.forward.cell.w_ci, nnx.Param)
    plain = nnx.eval_shape(lambda: LSTM(INPUT, HIDDEN, rngs=nnx.Rngs(0)))
    assert plain.layer_0.forward.cell is None and plain.layer_0.forward.w_p is None
    assert set(flat(nnx.state(plain, nnx.Param))) == {
        ("layer_0", "forward", name) for name in ("w_x", "w_h", "b")}


def test_return_gates_and_options():
    xs_tm = jnp.asarray(np.swapaxes(inputs(), 0, 1))
    options = {"residual": True, "merge": "sum", "time_major": True, "unroll": 1}
    model = build(lambda: LSTM(INPUT, HIDDEN, num_layers=3, bidirectional=True,
                               cell="layer_norm", **options, rngs=nnx.Rngs(0)))
    lengths = jnp.array([STEPS, 3, 0])
    carry, outputs, gates = call(model, xs_tm, seq_lengths=lengths, return_carry=True,
                                 return_gates=True)
    want = stack(model.lstm_params(), xs_tm, seq_lengths=lengths, return_gates=True, **options)
    chex.assert_trees_all_close((outputs, carry, gates), want, **TOL)
    assert outputs.shape == (STEPS, BATCH, HIDDEN) and len(carry) == len(gates) == 3
    np.testing.assert_array_equal(outputs[3:, 1], 0.0)
    np.testing.assert_array_equal(gates[2].backward.o[3:, 1], 0.0)
    outputs_only, gates_only = nnx.eval_shape(
        lambda model, xs: model(xs, seq_lengths=lengths, return_gates=True), model, xs_tm)
    assert outputs_only.shape == outputs.shape
    assert jax.tree.structure(gates_only) == jax.tree.structure(gates)


# --- dropout, recurrent dropout, zoneout -------------------------------------------------------


@pytest.mark.parametrize("rates", [
    {"dropout": 0.5},
    {"recurrent_dropout": 0.4},
    {"zoneout_h": 0.3, "zoneout_c": 0.2},
])
def test_dropout_rngs_and_deterministic(rates):
    xs = inputs()
    functional = {("dropout_rate" if k == "dropout" else k): v for k, v in rates.items()}
    model = LSTM(INPUT, HIDDEN, num_layers=2, **rates, unroll=1, rngs=nnx.Rngs(0, dropout=1))
    # Deterministic: no masks (zoneout uses its expectation), as the functional stack.
    want, _ = stack(model.lstm_params(), xs, deterministic=True, unroll=1, **functional)
    np.testing.assert_allclose(call(model, xs, deterministic=True), want, **TOL)

    a, b = call(model, xs), call(model, xs)  # the dropout stream advances between calls
    assert not np.allclose(a, b) and not np.allclose(a, want)
    given = [call(model, xs, rngs=nnx.Rngs(dropout=seed)) for seed in (5, 5, 6)]
    np.testing.assert_array_equal(given[0], given[1])
    assert not np.allclose(given[0], given[2])

    if "dropout" in rates:  # the attribute sets the default; the argument overrides it
        evaluating = LSTM(INPUT, HIDDEN, num_layers=2, **rates, unroll=1, deterministic=True,
                          rngs=nnx.Rngs(0, dropout=1))
        np.testing.assert_allclose(call(evaluating, xs), want, **TOL)
        assert not np.allclose(call(evaluating, xs, deterministic=False), want)


def test_optax_steps_reduce_the_loss():
    xs = inputs()
    target = jnp.asarray(0.5 * np.tanh(np.cumsum(xs, axis=-2))[..., :1])
    readout = normal((HIDDEN, 1), 7, scale=HIDDEN**-0.5)
    model = LSTM(INPUT, HIDDEN, recurrent_dropout=0.1, unroll=1, rngs=nnx.Rngs(0, dropout=1))
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)

    def loss(model, deterministic=None):
        return jnp.mean((model(xs, deterministic=deterministic) @ readout - target) ** 2)

    @nnx.jit
    def step(model, optimizer):
        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    evaluate = nnx.jit(functools.partial(loss, deterministic=True))
    before = evaluate(model)
    for _ in range(8):
        step(model, optimizer)
    assert evaluate(model) < 0.8 * before


# --- transforms --------------------------------------------------------------------------------


def test_jit_and_split_merge():
    xs = inputs()
    model = build(lambda: LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True,
                               proj_size=PROJ, unroll=1, rngs=nnx.Rngs(0)))
    want, _ = stack(model.lstm_params(), xs, seq_lengths=LENGTHS, unroll=1)
    np.testing.assert_allclose(call(model, xs, seq_lengths=LENGTHS), want, **TOL)

    graphdef, state = nnx.split(model)

    @jax.jit
    def pure(state, xs):
        return nnx.merge(graphdef, state)(xs, seq_lengths=LENGTHS)

    np.testing.assert_allclose(pure(state, xs), want, **TOL)


# --- LSTMCell against jaxlstm.lstm and Flax's OptimizedLSTMCell --------------------------------


@pytest.mark.parametrize("cell, proj_size, reverse", [("lstm", None, False),
                                                      ("layer_norm", PROJ, True)])
def test_cell_in_rnn_matches_lstm(cell, proj_size, reverse):
    xs = inputs()
    ours = build(lambda: LSTMCell(INPUT, HIDDEN, cell=cell, proj_size=proj_size,
                                  rngs=nnx.Rngs(0)))
    rnn = nnx.RNN(ours, return_carry=True, reverse=reverse, keep_order=True)
    c0, h0 = randomise(ours.initialize_carry((BATCH, INPUT)), seed=4)
    assert c0.shape == (BATCH, HIDDEN) and h0.shape == (BATCH, proj_size or HIDDEN)
    params = ours.lstm_params()

    @nnx.jit
    def flax_value_and_grad(rnn, xs):
        def loss(rnn, xs):
            carry, outputs = rnn(xs, initial_carry=(c0, h0), seq_lengths=POSITIVE_LENGTHS)
            return cell_loss(carry, outputs, POSITIVE_LENGTHS), (carry, outputs)

        return nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True)(rnn, xs)

    def our_loss(params, xs):
        outputs, final = jaxlstm.lstm(params, xs, initial_state=LSTMState(h=h0, c=c0),
                                      seq_lengths=POSITIVE_LENGTHS, reverse=reverse, unroll=1)
        return cell_loss((final.c, final.h), outputs, POSITIVE_LENGTHS), (
            (final.c, final.h), outputs)

    (_, (carry, outputs)), grads = flax_value_and_grad(rnn, xs)
    (_, (want_carry, want_outputs)), want_grads = jax.jit(
        jax.value_and_grad(our_loss, argnums=(0, 1), has_aux=True))(params, xs)
    valid = valid_mask(POSITIVE_LENGTHS)
    np.testing.assert_allclose(np.asarray(outputs)[valid], np.asarray(want_outputs)[valid],
                               **TOL)
    chex.assert_trees_all_close(carry, want_carry, **TOL)
    chex.assert_trees_all_close(to_lstm_params(grads[0]["cell"]), want_grads[0], **GRAD_TOL)
    np.testing.assert_allclose(grads[1], want_grads[1], **GRAD_TOL)


def test_cell_keep_order_and_return_carry():
    xs = inputs()
    ours = build(lambda: LSTMCell(INPUT, HIDDEN, rngs=nnx.Rngs(0)))

    @nnx.jit
    def run(ours, xs):
        kept = nnx.RNN(ours, reverse=True, keep_order=True)(xs, seq_lengths=POSITIVE_LENGTHS)
        flipped = nnx.RNN(ours, reverse=True)(xs, seq_lengths=POSITIVE_LENGTHS)
        want, _ = jaxlstm.lstm(ours.lstm_params(), xs, seq_lengths=POSITIVE_LENGTHS,
                               reverse=True, unroll=1)
        return kept, flipped, want

    kept, flipped, want = run(ours, xs)
    assert isinstance(kept, jax.Array) and kept.shape == (BATCH, STEPS, HIDDEN)
    valid = valid_mask(POSITIVE_LENGTHS)
    back = flip_sequences(flipped, POSITIVE_LENGTHS, num_batch_dims=1, time_major=False)
    np.testing.assert_allclose(np.asarray(back)[valid], np.asarray(kept)[valid], **TOL)
    np.testing.assert_allclose(np.asarray(kept)[valid], np.asarray(want)[valid], **TOL)


def test_cell_is_a_drop_in_for_optimized_lstm_cell():
    # Inside nnx.RNN both cells run over the padding alike, so with mapped weights every output
    # and carry matches Flax's, including its carry for a length of 0.
    xs = inputs()
    flax_cell = build(lambda: nnx.OptimizedLSTMCell(INPUT, HIDDEN, rngs=nnx.Rngs(0)))
    ours = build(lambda: LSTMCell(INPUT, HIDDEN, rngs=nnx.Rngs(0)), seed=3)
    ours.load_lstm_params(from_flax_nnx(nnx.state(flax_cell, nnx.Param)))

    # One step; the carry is (c, h).
    carry = randomise(ours.initialize_carry((BATCH, INPUT)), seed=4)
    x = xs[:, 0]
    (c, h), out = ours(carry, x)
    np.testing.assert_array_equal(out, h)
    state, want_h = jaxlstm.lstm_cell(ours.lstm_params(), LSTMState(h=carry[1], c=carry[0]), x)
    chex.assert_trees_all_close((c, h), (state.c, want_h), **TOL)
    chex.assert_trees_all_close((c, h), flax_cell(carry, x)[0], **FLAX_TOL)

    @nnx.jit
    def value_and_grad(ours, flax_cell, xs):
        def run(cell):
            def loss(rnn, xs):
                carry, outputs = rnn(xs, seq_lengths=LENGTHS)
                return cell_loss(carry, outputs, LENGTHS) + jnp.sum(outputs**2), (
                    carry, outputs)

            rnn = nnx.RNN(cell, return_carry=True)
            return nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True)(rnn, xs)

        return run(ours), run(flax_cell)

    ((_, got), (grads, dxs)), ((_, want), (flax_grads, flax_dxs)) = value_and_grad(
        ours, flax_cell, xs)
    chex.assert_trees_all_close(got, want, **FLAX_TOL)
    chex.assert_trees_all_close(to_lstm_params(grads["cell"]), from_flax_nnx(flax_grads["cell"]),
                                **GRAD_TOL)
    np.testing.assert_allclose(dxs, flax_dxs, **GRAD_TOL)

    # And back: our weights into another Flax cell.
    other = build(lambda: nnx.OptimizedLSTMCell(INPUT, HIDDEN, rngs=nnx.Rngs(0)), seed=5)
    nnx.update(other, to_flax_nnx(ours.lstm_params()))
    chex.assert_trees_all_equal(flat(nnx.state(other, nnx.Param)),
                                flat(nnx.state(flax_cell, nnx.Param)))


def test_cells_in_bidirectional_match_one_bidirectional_layer():
    xs = inputs()
    forward = build(lambda: LSTMCell(INPUT, HIDDEN, cell="retained_readout", rngs=nnx.Rngs(0)),
                    seed=2)
    backward = build(lambda: LSTMCell(INPUT, HIDDEN, cell="retained_readout", rngs=nnx.Rngs(0)),
                     seed=3)

    @nnx.jit
    def run(forward, backward, xs):
        bi = nnx.Bidirectional(nnx.RNN(forward), nnx.RNN(backward), return_carry=True)
        layer = Directions(forward.lstm_params(), backward.lstm_params())
        return bi(xs, seq_lengths=LENGTHS), jaxlstm.lstm_stack((layer,), xs, seq_lengths=LENGTHS,
                                                               unroll=1)

    ((carry_f, carry_b), outputs), (want, (finals,)) = run(forward, backward, xs)
    valid = valid_mask(LENGTHS)
    np.testing.assert_allclose(np.asarray(outputs)[valid], np.asarray(want)[valid], **TOL)
    rows = np.asarray(LENGTHS) > 0  # Flax's carry for a length of 0 is not the initial state
    for (c, h), state in ((carry_f, finals.forward), (carry_b, finals.backward)):
        np.testing.assert_allclose(np.asarray(c)[rows], np.asarray(state.c)[rows], **TOL)
        np.testing.assert_allclose(np.asarray(h)[rows], np.asarray(state.h)[rows], **TOL)


def test_cell_carry_shapes_and_batch_axes():
    ours = build(lambda: LSTMCell(INPUT, HIDDEN, proj_size=PROJ, rngs=nnx.Rngs(0)))
    assert ours.num_feature_axes == 1
    c, h = ours.initialize_carry((2, BATCH, INPUT))
    assert c.shape == (2, BATCH, HIDDEN) and h.shape == (2, BATCH, PROJ)
    np.testing.assert_array_equal(c, 0.0)
    c, h = ours.initialize_carry((BATCH, INPUT), nnx.Rngs(0), carry_init=nnx.initializers.ones)
    np.testing.assert_array_equal(c, 1.0)
    np.testing.assert_array_equal(h, 1.0)
    ones = build(lambda: LSTMCell(INPUT, HIDDEN, carry_init=nnx.initializers.ones,
                                  rngs=nnx.Rngs(0)))
    np.testing.assert_array_equal(ones.initialize_carry((BATCH, INPUT), nnx.Rngs(0))[0], 1.0)
    # As Flax's cells: an initialiser other than zeros needs rngs (zeros do not).
    with pytest.raises(ValueError, match="RNGs must be provided"):
        ones.initialize_carry((BATCH, INPUT))
    # Two batch axes: nnx.RNN finds the time axis from num_feature_axes.
    xs = inputs((2, BATCH, STEPS, INPUT))

    @nnx.jit
    def run(ours, xs):
        return nnx.RNN(ours, return_carry=True)(xs), jaxlstm.lstm(ours.lstm_params(), xs,
                                                                  unroll=1)

    ((c, h), outputs), (want, final) = run(ours, xs)
    np.testing.assert_allclose(outputs, want, **TOL)
    chex.assert_trees_all_close((c, h), (final.c, final.h), **TOL)


# --- dtypes ------------------------------------------------------------------------------------


def test_bfloat16_params_initialise_on_cpu():
    xs = inputs()
    model = LSTM(INPUT, HIDDEN, param_dtype=jnp.bfloat16, unroll=1,
                 rngs=nnx.Rngs(0))  # an orthogonal init in bf16 fails on CPU
    assert param_dtypes(model) == {jnp.dtype(jnp.bfloat16)}
    assert not np.allclose(np.asarray(model.layer_0.forward.w_h.get_value()), 0.0)
    # float32 inputs and bfloat16 params compute in float32, as jaxlstm promotes them.
    assert nnx.eval_shape(lambda model, xs: model(xs), model, xs).dtype == jnp.float32
    cell = LSTMCell(INPUT, HIDDEN, cell="peephole", param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert param_dtypes(cell) == {jnp.dtype(jnp.bfloat16)}


def test_dtype_sets_the_computation_dtype():
    xs = inputs()
    model = build(lambda: LSTM(INPUT, HIDDEN, num_layers=2, proj_size=PROJ, dtype=jnp.bfloat16,
                               unroll=1, rngs=nnx.Rngs(0)))
    assert param_dtypes(model) == {jnp.dtype(jnp.float32)}
    carry, outputs = call(model, xs, return_carry=True)
    assert outputs.dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree.leaves(carry)} == {jnp.dtype(jnp.bfloat16)}
    full, _ = stack(model.lstm_params(), xs, unroll=1)
    np.testing.assert_allclose(outputs.astype(jnp.float32), full, atol=5e-2)


@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.bfloat16])
def test_cell_dtype_in_rnn_output_is_the_carry_as_in_flax(param_dtype):
    # Flax's cells with dtype=bfloat16 run inside nnx.RNN and output the new h itself, in the
    # carry's dtype (param_dtype, from initialize_carry). (nnx.OptimizedLSTMCell cannot
    # initialise bfloat16 params on CPU: XLA:CPU has no bfloat16 QR for its orthogonal init.)
    cells = [nnx.LSTMCell] + [nnx.OptimizedLSTMCell] * (param_dtype == jnp.float32)
    for flax_cell in cells:
        ours = LSTMCell(INPUT, HIDDEN, dtype=jnp.bfloat16, param_dtype=param_dtype,
                        flax_compatible=flax_cell.__name__, rngs=nnx.Rngs(0))
        theirs = flax_cell(INPUT, HIDDEN, dtype=jnp.bfloat16, param_dtype=param_dtype,
                           rngs=nnx.Rngs(0))
        (c, h), ys = nnx.RNN(ours, return_carry=True)(inputs())
        (_, h_flax), ys_flax = nnx.RNN(theirs, return_carry=True)(inputs())
        assert ys.dtype == h.dtype == c.dtype == ys_flax.dtype == h_flax.dtype == param_dtype
        np.testing.assert_array_equal(ys[:, -1], h)
        tolerance = 1e-2 if param_dtype == jnp.float32 else 5e-2
        np.testing.assert_allclose(ys.astype(jnp.float32), ys_flax.astype(jnp.float32),
                                   atol=tolerance)


# --- params: conversions and serialisation -----------------------------------------------------


def test_lstm_params_are_the_module_arrays():
    model = build(lambda: LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True,
                               cell="layer_norm", proj_size=PROJ, rngs=nnx.Rngs(0)))
    params = model.lstm_params()
    layer = model.layer_1.backward
    assert params[1].backward.w_x is layer.w_x.get_value()
    assert params[1].backward.w_p is layer.w_p.get_value()
    assert params[1].backward.cell.gain_c is layer.cell.gain_c.get_value()
    assert isinstance(params[1].backward.cell, jaxlstm.LayerNormWeights)
    from_state = to_lstm_params(nnx.state(model, nnx.Param))
    assert jax.tree.structure(from_state) == jax.tree.structure(params)
    assert all(a is b for a, b in zip(jax.tree.leaves(from_state), jax.tree.leaves(params)))
    again = to_lstm_params(to_module_params(params))
    assert all(a is b for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params)))

    cell = build(lambda: LSTMCell(INPUT, HIDDEN, cell="peephole", rngs=nnx.Rngs(0)))
    cell_params = cell.lstm_params()
    assert isinstance(cell_params, jaxlstm.LSTMParams)
    assert cell_params.w_h is cell.w_h.get_value()
    assert cell_params.cell.w_co is cell.cell.w_co.get_value()
    from_state = to_lstm_params(nnx.state(cell, nnx.Param))
    assert all(a is b for a, b in zip(jax.tree.leaves(from_state), jax.tree.leaves(cell_params)))


def test_load_lstm_params():
    xs = inputs()

    def factory():
        return LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, cell="retained_readout",
                    unroll=1, rngs=nnx.Rngs(0))

    source, target = build(factory, seed=2), build(factory, seed=3)
    assert not np.allclose(call(target, xs), call(source, xs))
    target.load_lstm_params(source.lstm_params())
    chex.assert_trees_all_equal(target.lstm_params(), source.lstm_params())
    np.testing.assert_array_equal(call(target, xs), call(source, xs))

    cell = build(lambda: LSTMCell(INPUT, HIDDEN, cell="retained_readout", rngs=nnx.Rngs(0)))
    cell.load_lstm_params(source.lstm_params()[0].backward)
    chex.assert_trees_all_equal(cell.lstm_params(), source.lstm_params()[0].backward)


def test_flax_serialization_round_trip():
    def factory():
        return LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, cell="peephole",
                    proj_size=PROJ, rngs=nnx.Rngs(0))

    model, other = build(factory, seed=2), build(factory, seed=3)
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    state = nnx.state(other, nnx.Param)
    restored = flax.serialization.from_bytes(nnx.to_pure_dict(state),
                                             flax.serialization.to_bytes(pure))
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(other, state)
    chex.assert_trees_all_equal(other.lstm_params(), model.lstm_params())

    plain = flax.serialization.msgpack_restore(flax.serialization.msgpack_serialize(pure))
    chex.assert_trees_all_equal(flat(jax.tree.map(jnp.asarray, plain)), flat(pure))
    chex.assert_trees_all_equal(to_lstm_params(plain), model.lstm_params())


def test_orbax_round_trip(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")

    def factory():
        return LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, cell="layer_norm",
                    rngs=nnx.Rngs(0))

    model, other = build(factory, seed=2), build(factory, seed=3)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "state", nnx.state(model, nnx.Param))
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(tmp_path / "state", nnx.state(other, nnx.Param))
    nnx.update(other, restored)
    chex.assert_trees_all_equal(other.lstm_params(), model.lstm_params())


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("attrs, match", [
    ({"cell": "gru"}, "cell"),
    ({"merge": "stack", "bidirectional": True}, "merge"),
    ({"num_layers": 0}, "num_layers"),
    ({"dropout": 1.5}, "dropout"),
])
def test_bad_attributes_raise(attrs, match):
    with pytest.raises(ValueError, match=match):
        nnx.eval_shape(lambda: LSTM(INPUT, HIDDEN, **attrs, rngs=nnx.Rngs(0))(inputs()))


def test_bad_cell_name_raises_in_the_cell():
    with pytest.raises(ValueError, match="cell"):
        nnx.eval_shape(lambda: LSTMCell(INPUT, HIDDEN, cell="gru", rngs=nnx.Rngs(0)))
