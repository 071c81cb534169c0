"""jaxlstm.flax.linen: LSTMCell and LSTM against the functional API and Flax's own cells.

The LSTM module runs `jaxlstm.lstm_stack` on its params, so for the same weights its outputs,
final states and gradients equal the functional stack's. The cell is a drop-in for Flax's
`OptimizedLSTMCell` inside `nn.RNN` and `nn.Bidirectional`.

Compilation dominates the run time, so the calls are jitted once per configuration, params come
from `jaxlstm.init_lstm_stack` rather than a full `init` where the values do not matter
(`jax.eval_shape(model.init, ...)` checks the module's own tree), and most models use
`unroll=1`, which compiles faster than the chunks chosen by default (tested once).
"""

import functools

import chex
import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.linen.recurrent import flip_sequences
from flax.traverse_util import flatten_dict

import jaxlstm
from jaxlstm import Directions, LSTMState
from jaxlstm.flax import to_lstm_params, to_module_params
from jaxlstm.flax.linen import LSTM, LSTMCell
from jaxlstm.interop import from_flax_linen, to_flax_linen

BATCH, STEPS, INPUT, HIDDEN, PROJ = 3, 5, 4, 6, 3
TOL = {"atol": 1e-6, "rtol": 1e-6}
FLAX_TOL = {"atol": 2e-6, "rtol": 2e-5}  # Flax's cells sum the gate products in another order
GRAD_TOL = {"atol": 1e-5, "rtol": 1e-5}
LENGTHS = jnp.array([STEPS, 2, 0])
# Flax's nn.RNN returns the carry after the whole padded sequence for a length of 0 (its index
# of the last valid step wraps to -1), so comparisons of its carry use lengths of at least 1.
POSITIVE_LENGTHS = jnp.array([STEPS, 2, 1])
STATIC = ("return_carry", "return_gates", "deterministic", "mutable", "merge", "residual",
          "time_major", "unroll", "dropout_rate", "recurrent_dropout", "zoneout_h", "zoneout_c")


@functools.partial(jax.jit, static_argnums=0, static_argnames=STATIC)
def apply(module, variables, xs, **kwargs):
    return module.apply(variables, xs, **kwargs)


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


def init_stack(cell="lstm", proj_size=None, num_layers=2, bidirectional=True, seed=2):
    """Random stack params, laid out as jaxlstm.init_lstm_stack's."""
    return randomise(jax.eval_shape(functools.partial(
        jaxlstm.init_lstm_stack, input_size=INPUT, hidden_size=HIDDEN, num_layers=num_layers,
        bidirectional=bidirectional, cell=cell, proj_size=proj_size), jax.random.key(0)), seed)


def init_layer(cell="lstm", proj_size=None, seed=2):
    """Random layer params, laid out as jaxlstm.init_lstm's."""
    return randomise(jax.eval_shape(functools.partial(
        jaxlstm.init_lstm, input_size=INPUT, hidden_size=HIDDEN, cell=cell,
        proj_size=proj_size), jax.random.key(0)), seed)


def random_stack_state(num_layers, proj_size=None, seed=5):
    """A nonzero initial state for a bidirectional stack."""
    def state(n):
        return LSTMState(h=normal((BATCH, proj_size or HIDDEN), (seed, n, 0)),
                         c=normal((BATCH, HIDDEN), (seed, n, 1)))

    return tuple(Directions(state(2 * n), state(2 * n + 1)) for n in range(num_layers))


def zeros_like(tree):
    return jax.tree.map(lambda x: jnp.asarray(np.zeros(x.shape, x.dtype)), tree)


def shapes(tree):
    """{path: shape} of a nested dict's arrays (empty sub-dicts dropped)."""
    return {path: leaf.shape for path, leaf in flatten_dict(tree).items()}


def dtypes(tree):
    return {leaf.dtype for leaf in jax.tree.leaves(tree)}


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
    unroll = 1
    xs = inputs()
    params = init_stack(cell, proj_size)
    model = LSTM(HIDDEN, num_layers=2, bidirectional=True, cell=cell, proj_size=proj_size,
                 unroll=unroll)
    module_params = to_module_params(params)
    assert shapes(jax.eval_shape(model.init, jax.random.key(0), xs)["params"]) == shapes(
        module_params)
    # The default initial state (zeros) in the first case, a random one in the others.
    initial = None if cell == "lstm" else random_stack_state(2, proj_size)

    def module_loss(p, xs):
        carry, outputs = model.apply({"params": p}, xs, seq_lengths=LENGTHS,
                                     initial_carry=initial, return_carry=True)
        return stack_loss(outputs, carry), (outputs, carry)

    def functional_loss(p, xs):
        outputs, finals = jaxlstm.lstm_stack(p, xs, seq_lengths=LENGTHS, initial_state=initial,
                                             unroll=unroll)
        return stack_loss(outputs, finals), (outputs, finals)

    (_, (outputs, carry)), grads = jax.jit(
        jax.value_and_grad(module_loss, argnums=(0, 1), has_aux=True))(module_params, xs)
    (_, (want_outputs, want_finals)), want_grads = jax.jit(
        jax.value_and_grad(functional_loss, argnums=(0, 1), has_aux=True))(params, xs)

    np.testing.assert_allclose(outputs, want_outputs, **TOL)
    chex.assert_trees_all_close(carry, want_finals, **TOL)  # same pytree: Directions, LSTMState
    chex.assert_trees_all_close(grads[0], to_module_params(want_grads[0]), **TOL)
    np.testing.assert_allclose(grads[1], want_grads[1], **TOL)
    # Padded steps are exactly zero; a length of 0 leaves the initial state.
    np.testing.assert_array_equal(outputs[1, 2:], 0.0)
    np.testing.assert_array_equal(outputs[2], 0.0)
    want_initial = row(initial if initial is not None else zeros_like(want_finals), 2)
    chex.assert_trees_all_equal(row(carry, 2), want_initial)


@pytest.mark.parametrize("options", [
    {"num_layers": 2, "residual": True, "time_major": True},
    {"num_layers": 1, "merge": "none", "unroll": None},  # the default: chunks chosen by size
])
def test_lstm_options_match_lstm_stack(options):
    xs = inputs()
    options = {"unroll": 1, **options}
    num_layers = options["num_layers"]
    params = init_stack(num_layers=num_layers)
    model = LSTM(HIDDEN, bidirectional=True, **options)
    functional = {k: v for k, v in options.items() if k != "num_layers"}
    xs_in = jnp.asarray(np.swapaxes(xs, 0, 1)) if options.get("time_major") else xs
    carry, outputs = apply(model, {"params": to_module_params(params)}, xs_in, return_carry=True)
    want_outputs, want_finals = stack(params, xs_in, **functional)
    chex.assert_trees_all_close(outputs, want_outputs, **TOL)
    chex.assert_trees_all_close(carry, want_finals, **TOL)
    assert len(carry) == num_layers


def test_return_gates_and_sow_gates():
    xs = inputs()
    params = init_stack("peephole", bidirectional=False)
    model = LSTM(HIDDEN, num_layers=2, cell="peephole", sow_gates=True, unroll=1)
    variables = {"params": to_module_params(params)}
    (carry, outputs, gates), state = apply(
        model, variables, xs, seq_lengths=LENGTHS, return_carry=True, return_gates=True,
        mutable=("intermediates",))
    want = stack(params, xs, seq_lengths=LENGTHS, return_gates=True, unroll=1)
    chex.assert_trees_all_close((outputs, carry, gates), want, **TOL)
    np.testing.assert_array_equal(gates[1].forward.f[2], 0.0)  # padded steps: zero gates
    assert len(gates) == 2 and gates[0].backward is None
    chex.assert_trees_all_close(state["intermediates"]["gates"], (gates,), **TOL)

    outputs_only, gates_only = jax.eval_shape(
        functools.partial(model.apply, return_gates=True), variables, xs)
    assert outputs_only.shape == outputs.shape
    assert jax.tree.structure(gates_only) == jax.tree.structure(gates)

    quiet = LSTM(HIDDEN, num_layers=2, cell="peephole", unroll=1)
    _, state = jax.eval_shape(functools.partial(quiet.apply, mutable=["intermediates"]),
                              variables, xs)
    assert not flatten_dict(dict(state))


# --- dropout, recurrent dropout, zoneout -------------------------------------------------------


@pytest.mark.parametrize("rates", [
    {"dropout": 0.5},
    {"recurrent_dropout": 0.4},
    {"zoneout_h": 0.3, "zoneout_c": 0.2},
])
def test_dropout_draws_from_the_dropout_rng(rates):
    xs = inputs()
    params = init_stack(bidirectional=False)
    model = LSTM(HIDDEN, num_layers=2, unroll=1, **rates)
    variables = {"params": to_module_params(params)}
    a, b, a_again = (apply(model, variables, xs, deterministic=False,
                           rngs={"dropout": jax.random.key(seed)}) for seed in (1, 2, 1))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, a_again)
    # Deterministic: no masks (zoneout uses its expectation), as the functional stack.
    functional = {("dropout_rate" if k == "dropout" else k): v for k, v in rates.items()}
    want, _ = stack(params, xs, deterministic=True, unroll=1, **functional)
    evaluation = apply(model, variables, xs)
    np.testing.assert_allclose(evaluation, want, **TOL)
    assert not np.allclose(a, evaluation)


def test_optax_steps_reduce_the_loss():
    xs = inputs()
    target = jnp.asarray(0.5 * np.tanh(np.cumsum(xs, axis=-2))[..., :1])
    model = LSTM(HIDDEN, recurrent_dropout=0.1, unroll=1)
    readout = normal((HIDDEN, 1), 7, scale=HIDDEN**-0.5)
    params = to_module_params(init_stack(num_layers=1, bidirectional=False))
    optimizer = optax.adam(0.05)

    def loss(params, key):
        deterministic = key is None
        rngs = None if deterministic else {"dropout": key}
        outputs = model.apply({"params": params}, xs, deterministic=deterministic, rngs=rngs)
        return jnp.mean((outputs @ readout - target) ** 2)

    @jax.jit
    def step(params, opt_state, key):
        value, grads = jax.value_and_grad(loss)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    evaluate = jax.jit(functools.partial(loss, key=None))
    opt_state = optimizer.init(params)
    before = evaluate(params)
    for n in range(8):
        params, opt_state, _ = step(params, opt_state, jax.random.key(n))
    assert evaluate(params) < 0.8 * before


# --- LSTMCell against jaxlstm.lstm and Flax's OptimizedLSTMCell --------------------------------


@pytest.mark.parametrize("cell, proj_size, reverse", [("lstm", None, False),
                                                      ("retained_readout", PROJ, True)])
def test_cell_in_rnn_matches_lstm(cell, proj_size, reverse):
    xs = inputs()
    rnn = nn.RNN(LSTMCell(HIDDEN, cell=cell, proj_size=proj_size), return_carry=True,
                 reverse=reverse, keep_order=True)
    params = init_layer(cell, proj_size)
    variables = {"params": {"cell": to_module_params(params)}}
    assert shapes(jax.eval_shape(rnn.init, jax.random.key(0), xs)) == shapes(variables)
    c0, h0 = randomise(rnn.cell.initialize_carry(jax.random.key(0), (BATCH, INPUT)), seed=4)
    assert c0.shape == (BATCH, HIDDEN) and h0.shape == (BATCH, proj_size or HIDDEN)

    def flax_loss(variables, xs):
        carry, outputs = rnn.apply(variables, xs, initial_carry=(c0, h0),
                                   seq_lengths=POSITIVE_LENGTHS)
        return cell_loss(carry, outputs, POSITIVE_LENGTHS), (carry, outputs)

    def our_loss(params, xs):
        outputs, final = jaxlstm.lstm(params, xs, initial_state=LSTMState(h=h0, c=c0),
                                      seq_lengths=POSITIVE_LENGTHS, reverse=reverse, unroll=1)
        return cell_loss((final.c, final.h), outputs, POSITIVE_LENGTHS), (
            (final.c, final.h), outputs)

    (_, (carry, outputs)), grads = jax.jit(
        jax.value_and_grad(flax_loss, argnums=(0, 1), has_aux=True))(variables, xs)
    (_, (want_carry, want_outputs)), want_grads = jax.jit(
        jax.value_and_grad(our_loss, argnums=(0, 1), has_aux=True))(params, xs)
    valid = valid_mask(POSITIVE_LENGTHS)
    np.testing.assert_allclose(np.asarray(outputs)[valid], np.asarray(want_outputs)[valid],
                               **TOL)
    chex.assert_trees_all_close(carry, want_carry, **TOL)
    chex.assert_trees_all_close(to_lstm_params(grads[0]["params"]["cell"]), want_grads[0],
                                **GRAD_TOL)
    np.testing.assert_allclose(grads[1], want_grads[1], **GRAD_TOL)


def test_cell_keep_order_and_return_carry():
    xs = inputs()
    cell = LSTMCell(HIDDEN)
    params = init_layer()
    variables = {"params": {"cell": to_module_params(params)}}

    @jax.jit
    def run(variables, xs):
        kept = nn.RNN(cell, reverse=True, keep_order=True).apply(
            variables, xs, seq_lengths=POSITIVE_LENGTHS)
        flipped = nn.RNN(cell, reverse=True).apply(variables, xs, seq_lengths=POSITIVE_LENGTHS)
        want, _ = jaxlstm.lstm(params, xs, seq_lengths=POSITIVE_LENGTHS, reverse=True, unroll=1)
        return kept, flipped, want

    kept, flipped, want = run(variables, xs)
    assert isinstance(kept, jax.Array) and kept.shape == (BATCH, STEPS, HIDDEN)
    valid = valid_mask(POSITIVE_LENGTHS)
    back = flip_sequences(flipped, POSITIVE_LENGTHS, num_batch_dims=1, time_major=False)
    np.testing.assert_allclose(np.asarray(back)[valid], np.asarray(kept)[valid], **TOL)
    np.testing.assert_allclose(np.asarray(kept)[valid], np.asarray(want)[valid], **TOL)


def test_cell_step_matches_lstm_cell_and_optimized_cell():
    x = inputs((BATCH, INPUT))
    ours = LSTMCell(HIDDEN)
    carry = randomise(ours.initialize_carry(jax.random.key(0), x.shape), seed=4)
    variables = {"params": randomise(jax.eval_shape(ours.init, jax.random.key(0), carry, x)[
        "params"])}
    (c, h), out = ours.apply(variables, carry, x)
    np.testing.assert_array_equal(out, h)
    params = to_lstm_params(variables["params"])
    state, want_h = jaxlstm.lstm_cell(params, LSTMState(h=carry[1], c=carry[0]), x)
    chex.assert_trees_all_close((c, h), (state.c, want_h), **TOL)
    (c_flax, h_flax), _ = nn.OptimizedLSTMCell(HIDDEN).apply(
        {"params": to_flax_linen(params)}, carry, x)
    chex.assert_trees_all_close((c, h), (c_flax, h_flax), **FLAX_TOL)


def test_cell_is_a_drop_in_for_optimized_lstm_cell():
    # Inside nn.RNN both cells run over the padding alike, so with mapped weights every output
    # and carry matches Flax's, including its carry for a length of 0.
    xs = inputs()
    flax_rnn = nn.RNN(nn.OptimizedLSTMCell(HIDDEN), return_carry=True)
    flax_vars = {"params": randomise(jax.eval_shape(flax_rnn.init, jax.random.key(0), xs)[
        "params"])}
    our_rnn = nn.RNN(LSTMCell(HIDDEN), return_carry=True)
    our_vars = {"params": {"cell": to_module_params(from_flax_linen(flax_vars))}}

    def value_and_grad(rnn, variables):
        def loss(variables, xs):
            carry, outputs = rnn.apply(variables, xs, seq_lengths=LENGTHS)
            return cell_loss(carry, outputs, LENGTHS) + jnp.sum(outputs**2), (carry, outputs)

        return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(variables, xs)

    ours, flax_ = jax.jit(lambda a, b: (value_and_grad(our_rnn, a), value_and_grad(flax_rnn, b)))(
        our_vars, flax_vars)
    (_, got), (grads, dxs) = ours
    (_, want), (flax_grads, flax_dxs) = flax_
    chex.assert_trees_all_close(got, want, **FLAX_TOL)
    chex.assert_trees_all_close(to_flax_linen(to_lstm_params(grads["params"]["cell"])),
                                flax_grads["params"]["cell"], **GRAD_TOL)
    np.testing.assert_allclose(dxs, flax_dxs, **GRAD_TOL)


def test_cells_in_bidirectional_match_one_bidirectional_layer():
    xs = inputs()
    bi = nn.Bidirectional(nn.RNN(LSTMCell(HIDDEN, cell="peephole")),
                          nn.RNN(LSTMCell(HIDDEN, cell="peephole")), return_carry=True)
    (layer,) = init_stack("peephole", num_layers=1)
    variables = {"params": {"forward_rnn": {"cell": to_module_params(layer.forward)},
                            "backward_rnn": {"cell": to_module_params(layer.backward)}}}
    assert shapes(jax.eval_shape(bi.init, jax.random.key(0), xs)) == shapes(variables)

    @jax.jit
    def run(variables, xs):
        return bi.apply(variables, xs, seq_lengths=LENGTHS), jaxlstm.lstm_stack(
            (layer,), xs, seq_lengths=LENGTHS, unroll=1)

    ((carry_f, carry_b), outputs), (want, (finals,)) = run(variables, xs)
    valid = valid_mask(LENGTHS)
    np.testing.assert_allclose(np.asarray(outputs)[valid], np.asarray(want)[valid], **TOL)
    rows = np.asarray(LENGTHS) > 0  # Flax's carry for a length of 0 is not the initial state
    for (c, h), state in ((carry_f, finals.forward), (carry_b, finals.backward)):
        np.testing.assert_allclose(np.asarray(c)[rows], np.asarray(state.c)[rows], **TOL)
        np.testing.assert_allclose(np.asarray(h)[rows], np.asarray(state.h)[rows], **TOL)


def test_cell_carry_shapes_and_batch_axes():
    cell = LSTMCell(HIDDEN, proj_size=PROJ)
    assert cell.num_feature_axes == 1
    c, h = cell.initialize_carry(jax.random.key(0), (2, BATCH, INPUT))
    assert c.shape == (2, BATCH, HIDDEN) and h.shape == (2, BATCH, PROJ)
    np.testing.assert_array_equal(c, 0.0)
    c, h = LSTMCell(HIDDEN, carry_init=nn.initializers.ones).initialize_carry(
        jax.random.key(0), (BATCH, INPUT))
    np.testing.assert_array_equal(c, 1.0)
    np.testing.assert_array_equal(h, 1.0)
    # Two batch axes: nn.RNN finds the time axis from num_feature_axes.
    xs = inputs((2, BATCH, STEPS, INPUT))
    rnn = nn.RNN(cell, return_carry=True)
    params = init_layer(proj_size=PROJ)

    @jax.jit
    def run(params, xs):
        return (rnn.apply({"params": {"cell": to_module_params(params)}}, xs),
                jaxlstm.lstm(params, xs, unroll=1))

    ((c, h), outputs), (want, final) = run(params, xs)
    np.testing.assert_allclose(outputs, want, **TOL)
    chex.assert_trees_all_close((c, h), (final.c, final.h), **TOL)


# --- dtypes ------------------------------------------------------------------------------------


def test_bfloat16_params_initialise_on_cpu():
    xs = inputs()
    model = LSTM(HIDDEN, param_dtype=jnp.bfloat16, unroll=1)
    variables = jax.jit(model.init)(jax.random.key(0), xs)  # a bf16 orthogonal init fails on CPU
    assert dtypes(variables) == {jnp.dtype(jnp.bfloat16)}
    assert not np.allclose(np.asarray(variables["params"]["layer_0"]["forward"]["w_h"]), 0.0)
    # float32 inputs and bfloat16 params compute in float32, as jaxlstm promotes them.
    assert jax.eval_shape(model.apply, variables, xs).dtype == jnp.float32

    cell = LSTMCell(HIDDEN, cell="peephole", param_dtype=jnp.bfloat16)
    x = inputs((BATCH, INPUT))
    carry = cell.initialize_carry(jax.random.key(0), x.shape)
    assert dtypes(cell.init(jax.random.key(0), carry, x)) == {jnp.dtype(jnp.bfloat16)}


def test_dtype_sets_the_computation_dtype():
    xs = inputs()
    params = init_stack(proj_size=PROJ, bidirectional=False)
    model = LSTM(HIDDEN, num_layers=2, proj_size=PROJ, dtype=jnp.bfloat16, unroll=1)
    assert dtypes(jax.eval_shape(model.init, jax.random.key(0), xs)) == {jnp.dtype(jnp.float32)}
    carry, outputs = apply(model, {"params": to_module_params(params)}, xs, return_carry=True)
    assert outputs.dtype == jnp.bfloat16
    assert dtypes(carry) == {jnp.dtype(jnp.bfloat16)}
    full, _ = stack(params, xs, unroll=1)
    np.testing.assert_allclose(outputs.astype(jnp.float32), full, atol=5e-2)


@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.bfloat16])
def test_cell_dtype_in_rnn_output_is_the_carry_as_in_flax(param_dtype):
    # Flax's cells with dtype=bfloat16 run inside nn.RNN, and their output *is* the new h:
    # the carry's dtype (param_dtype, from initialize_carry), whatever computes the gates.
    xs = inputs()
    for flax_cell in (nn.LSTMCell, nn.OptimizedLSTMCell):
        ours = nn.RNN(LSTMCell(HIDDEN, dtype=jnp.bfloat16, param_dtype=param_dtype),
                      return_carry=True)
        theirs = nn.RNN(flax_cell(HIDDEN, dtype=jnp.bfloat16, param_dtype=param_dtype),
                        return_carry=True)
        variables = {"params": {"cell": to_module_params(init_layer())}}
        variables = jax.tree.map(lambda a: a.astype(param_dtype), variables)
        (c, h), ys = ours.apply(variables, xs)
        flax_variables = {"params": {"cell": to_flax_linen(to_lstm_params(
            variables["params"]["cell"]))}}
        (_, h_flax), ys_flax = theirs.apply(flax_variables, xs)
        assert ys.dtype == h.dtype == c.dtype == ys_flax.dtype == h_flax.dtype == param_dtype
        np.testing.assert_array_equal(ys[:, -1], h)
        tolerance = 1e-2 if param_dtype == jnp.float32 else 5e-2
        np.testing.assert_allclose(ys.astype(jnp.float32), ys_flax.astype(jnp.float32),
                                   atol=tolerance)


# --- params: conversions and serialisation -----------------------------------------------------


@pytest.mark.parametrize("cell, proj_size", [("lstm", None), ("layer_norm", PROJ)])
def test_param_trees_round_trip_without_copies(cell, proj_size):
    layer = init_layer(cell, proj_size)
    tree = to_module_params(layer)
    assert isinstance(tree, dict) and {"w_x", "w_h", "b"} <= set(tree)
    assert ("w_p" in tree) == (proj_size is not None)
    assert ("cell" in tree) == (cell != "lstm")
    back = to_lstm_params(tree)
    assert jax.tree.structure(back) == jax.tree.structure(layer)
    assert all(a is b for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(layer)))

    for bidirectional in (False, True):
        params = init_stack(cell, proj_size, bidirectional=bidirectional)
        tree = to_module_params(params)
        assert set(tree) == {"layer_0", "layer_1"}
        assert set(tree["layer_1"]) == ({"forward", "backward"} if bidirectional
                                        else {"forward"})
        back = to_lstm_params(tree)
        assert jax.tree.structure(back) == jax.tree.structure(params)
        assert all(a is b for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)))

    # And in the module's own layout: the same arrays both ways.
    model = LSTM(HIDDEN, num_layers=2, bidirectional=True, cell=cell, proj_size=proj_size)
    abstract = jax.eval_shape(model.init, jax.random.key(0), inputs())["params"]
    params = zeros_like(abstract)
    again = to_module_params(to_lstm_params(params))
    assert jax.tree.structure(again) == jax.tree.structure(params)
    assert all(a is b for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params)))


def test_flax_serialization_round_trip():
    variables = {"params": to_module_params(init_stack("peephole", PROJ))}
    target = zeros_like(variables)
    restored = flax.serialization.from_bytes(target, flax.serialization.to_bytes(variables))
    chex.assert_trees_all_equal(restored, variables)

    plain = flax.serialization.msgpack_restore(
        flax.serialization.msgpack_serialize(variables["params"]))
    chex.assert_trees_all_equal(jax.tree.map(jnp.asarray, plain), variables["params"])
    chex.assert_trees_all_equal(to_lstm_params(plain), to_lstm_params(variables["params"]))


def test_orbax_round_trip(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    params = to_module_params(init_stack("layer_norm"))
    params["layer_1"]["backward"]["w_x"] = normal((2 * HIDDEN, 4 * HIDDEN), 3,
                                                  dtype=jnp.bfloat16)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "params", params)
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(tmp_path / "params", zeros_like(params))
    chex.assert_trees_all_equal(restored, params)
    assert restored["layer_1"]["backward"]["w_x"].dtype == jnp.bfloat16
    chex.assert_trees_all_equal(to_lstm_params(restored), to_lstm_params(params))


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("attrs, match", [
    ({"cell": "gru"}, "cell"),
    ({"merge": "stack", "bidirectional": True}, "merge"),
    ({"num_layers": 0}, "num_layers"),
    ({"dropout": 1.5}, "dropout"),
])
def test_bad_attributes_raise(attrs, match):
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(LSTM(HIDDEN, **attrs).init, jax.random.key(0), inputs())


def test_bad_cell_name_raises_in_the_cell():
    with pytest.raises(ValueError, match="cell"):
        jax.eval_shape(nn.RNN(LSTMCell(HIDDEN, cell="gru")).init, jax.random.key(0), inputs())
