"""The cells as drop-ins for Flax's: each behaviour Flax code relies on, against Flax itself.

Flax's `LSTMCell` / `OptimizedLSTMCell` (linen and NNX) are the reference: the same weights
must give the same numbers, `flax_compatible` the same weights from the same seed, and a
Flax-trained model's params must load into the model with the cells swapped.
"""

from __future__ import annotations

import dataclasses
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxlstm
from jaxlstm.flax import (
    from_flax_carry,
    from_flax_model,
    to_flax_carry,
    to_lstm_params,
)
from jaxlstm.flax import linen as jl
from jaxlstm.flax import nnx as jn
from jaxlstm.interop import from_flax_linen, to_flax_linen

BATCH, STEPS, INPUT, HIDDEN = 2, 5, 3, 4
TOL = {"rtol": 1e-6, "atol": 1e-6}


def inputs(shape=(BATCH, STEPS, INPUT), seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


def max_difference(a, b):
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(jnp.abs(x - y).max()), a, b)))


# --- 5. flax_compatible: Flax's initialisation, number for number -------------------------------


@pytest.mark.parametrize("flax_cell", [nn.LSTMCell, nn.OptimizedLSTMCell])
def test_linen_flax_compatible_initialises_as_flax_in_rnn(flax_cell):
    xs = inputs()
    theirs = nn.RNN(flax_cell(HIDDEN), return_carry=True)
    ours = nn.RNN(jl.LSTMCell(HIDDEN, flax_compatible=True), return_carry=True)
    flax_variables = theirs.init(jax.random.key(7), xs)
    variables = ours.init(jax.random.key(7), xs)
    want = from_flax_linen(flax_variables)
    got = to_lstm_params(variables["params"]["cell"])
    for name in ("w_x", "w_h", "b"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    assert max_difference(ours.apply(variables, xs), theirs.apply(flax_variables, xs)) < 1e-6


def test_linen_flax_compatible_honours_the_initialisers_as_flax_does():
    x = inputs()[:, 0]
    options = {"kernel_init": nn.initializers.normal(0.3), "bias_init": nn.initializers.uniform(),
                   "recurrent_kernel_init": nn.initializers.lecun_normal()}
    carry = nn.LSTMCell(HIDDEN).initialize_carry(jax.random.key(0), x.shape)
    want = from_flax_linen(nn.LSTMCell(HIDDEN, **options).init(jax.random.key(3), carry, x))
    got = jl.LSTMCell(HIDDEN, flax_compatible="OptimizedLSTMCell", **options).init(
        jax.random.key(3), carry, x)["params"]
    for name in ("w_x", "w_h", "b"):
        np.testing.assert_array_equal(got[name], getattr(want, name))
    assert float(jnp.abs(want.b).min()) > 0  # the bias_init really ran


@pytest.mark.parametrize("flax_cell", [nnx.LSTMCell, nnx.OptimizedLSTMCell])
def test_nnx_flax_compatible_initialises_as_flax(flax_cell):
    options = {"bias_init": nnx.initializers.uniform()}
    theirs = flax_cell(INPUT, HIDDEN, rngs=nnx.Rngs(5), **options)
    # The class of Flax's name initialises as that class with flax_compatible=True.
    ours = getattr(jn, flax_cell.__name__)(INPUT, HIDDEN, flax_compatible=True,
                                           rngs=nnx.Rngs(5), **options)
    want = from_flax_model({"cell": nnx.state(theirs, nnx.Param)})["cell"]
    for name in ("w_x", "w_h", "b"):
        np.testing.assert_array_equal(getattr(ours, name)[...], want[name])
    xs = inputs()
    assert max_difference(nnx.RNN(ours)(xs), nnx.RNN(theirs)(xs)) < 1e-6


def test_forget_bias_defaults():
    # jaxlstm's default starts the forget gate open (1.0), Flax's at 0; both on request.
    x = inputs()[:, 0]
    carry = jl.LSTMCell(HIDDEN).initialize_carry(jax.random.key(0), x.shape)

    def forget_block(**options):
        b = jl.LSTMCell(HIDDEN, **options).init(jax.random.key(0), carry, x)["params"]["b"]
        return np.asarray(b).reshape(4, HIDDEN)

    np.testing.assert_array_equal(forget_block()[1], 1.0)
    np.testing.assert_array_equal(forget_block(flax_compatible=True)[1], 0.0)
    np.testing.assert_array_equal(forget_block(flax_compatible=True, forget_bias=2.0)[1], 2.0)
    blocks = forget_block(bias_init=nn.initializers.ones)
    np.testing.assert_array_equal(blocks[[0, 2, 3]], 1.0)
    np.testing.assert_array_equal(blocks[1], 2.0)  # bias_init's 1, plus forget_bias 1
    assert jn.LSTMCell(INPUT, HIDDEN, rngs=nnx.Rngs(0)).b[...][HIDDEN] == 1.0
    assert jn.LSTMCell(INPUT, HIDDEN, flax_compatible=True, rngs=nnx.Rngs(0)).b[...][HIDDEN] == 0


def test_flax_compatible_bad_values_raise():
    with pytest.raises(ValueError, match="flax_compatible must be"):
        jn.LSTMCell(INPUT, HIDDEN, flax_compatible="GRUCell", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="standard cell without a projection"):
        jn.LSTMCell(INPUT, HIDDEN, flax_compatible=True, cell="peephole", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="standard cell without a projection"):
        jax.eval_shape(nn.RNN(jl.LSTMCell(HIDDEN, proj_size=2, flax_compatible=True)).init,
                       jax.random.key(0), inputs())


# --- 1-4. the step: hidden size from the carry, integer inputs, activations, constructor ----------


def test_linen_hidden_size_comes_from_the_carry():
    # A decoder built with features=15 and fed an encoder's 12-unit carry: Flax sizes the
    # params by the carry, so must we.
    xs = inputs()
    carry = nn.LSTMCell(12).initialize_carry(jax.random.key(1), xs[:, 0].shape)
    carry = jax.tree.map(lambda a: a + 0.5, carry)
    decoder = nn.RNN(jl.LSTMCell(features=15), return_carry=True)
    variables = decoder.init(jax.random.key(0), xs, initial_carry=carry)
    assert variables["params"]["cell"]["w_h"].shape == (12, 48)
    flax_decoder = nn.RNN(nn.LSTMCell(features=15), return_carry=True)
    flax_variables = {"params": {"cell": to_flax_linen(to_lstm_params(
        variables["params"]["cell"]))}}
    assert max_difference(decoder.apply(variables, xs, initial_carry=carry),
                          flax_decoder.apply(flax_variables, xs, initial_carry=carry)) < 1e-6
    with pytest.raises(ValueError, match="same size without proj_size"):
        jl.LSTMCell(4).init(jax.random.key(0), (jnp.zeros((2, 4)), jnp.zeros((2, 5))),
                            xs[:, 0])


def test_integer_inputs_promote_in_the_cells_not_in_the_core():
    tokens = jnp.arange(BATCH * INPUT, dtype=jnp.int32).reshape(BATCH, INPUT) % 3
    cell = jn.LSTMCell(INPUT, HIDDEN, rngs=nnx.Rngs(0))
    carry = cell.initialize_carry(tokens.shape)
    (_, h_int), y_int = cell(carry, tokens)
    (_, h_float), _ = cell(carry, tokens.astype(jnp.float32))
    assert y_int.dtype == jnp.float32
    np.testing.assert_array_equal(h_int, h_float)
    linen_cell = jl.LSTMCell(HIDDEN)
    variables = linen_cell.init(jax.random.key(0), carry, tokens)
    np.testing.assert_array_equal(linen_cell.apply(variables, carry, tokens)[1],
                                  linen_cell.apply(variables, carry, 1.0 * tokens)[1])
    with pytest.raises(TypeError, match="x_t must have a floating dtype"):
        jaxlstm.lstm_cell(cell.lstm_params(), jaxlstm.LSTMState(*carry[::-1]), tokens)


def _linen_fields(cls):
    return {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}


def test_every_flax_constructor_argument_is_accepted():
    for flax_cell in (nn.LSTMCell, nn.OptimizedLSTMCell):
        assert _linen_fields(flax_cell) <= _linen_fields(jl.LSTMCell)
    ours = set(inspect.signature(jn.LSTMCell.__init__).parameters)
    for flax_cell in (nnx.LSTMCell, nnx.OptimizedLSTMCell):
        assert set(inspect.signature(flax_cell.__init__).parameters) <= ours
    # Flax's positional order: features first, then gate_fn, ... (dataclass order).
    names = [f.name for f in dataclasses.fields(jl.LSTMCell) if f.name not in ("parent", "name")]
    flax_names = [f.name for f in dataclasses.fields(nn.LSTMCell)
                  if f.name not in ("parent", "name")]
    assert names[:len(flax_names)] == flax_names


@pytest.mark.parametrize("functions", [(jax.nn.relu, jax.nn.elu), (jax.nn.hard_sigmoid,
                                                                   jnp.tanh)])
def test_other_activations_fall_back_to_a_correct_step(functions):
    gate_fn, activation_fn = functions
    x = inputs()[:, 0]
    theirs = nnx.LSTMCell(INPUT, HIDDEN, gate_fn=gate_fn, activation_fn=activation_fn,
                          rngs=nnx.Rngs(2))
    ours = jn.LSTMCell(INPUT, HIDDEN, gate_fn=gate_fn, activation_fn=activation_fn,
                       flax_compatible=True, rngs=nnx.Rngs(2))
    carry = jax.tree.map(lambda a: a + 0.3, ours.initialize_carry(x.shape))
    assert max_difference(ours(carry, x), theirs(carry, x)) < 1e-6
    linen_theirs = nn.OptimizedLSTMCell(HIDDEN, gate_fn=gate_fn, activation_fn=activation_fn)
    linen_ours = jl.LSTMCell(HIDDEN, gate_fn=gate_fn, activation_fn=activation_fn)
    variables = linen_ours.init(jax.random.key(0), carry, x)
    flax_variables = {"params": to_flax_linen(to_lstm_params(variables["params"]))}
    assert max_difference(linen_ours.apply(variables, carry, x),
                          linen_theirs.apply(flax_variables, carry, x)) < 1e-6
    with pytest.raises(ValueError, match="standard cell without a projection"):
        jn.LSTMCell(INPUT, HIDDEN, gate_fn=gate_fn, activation_fn=activation_fn,
                    cell="peephole", rngs=nnx.Rngs(0))(carry, x)


def test_nnx_promote_dtype_metadata_and_keep_rngs_are_honoured():
    calls = []

    def promote(args, *, dtype=None):
        calls.append(dtype)
        return tuple(None if a is None else jnp.asarray(a, jnp.float32) for a in args)

    cell = jn.LSTMCell(INPUT, HIDDEN, promote_dtype=promote, kernel_metadata={"tag": "in"},
                       recurrent_kernel_metadata={"tag": "rec"}, bias_metadata={"tag": "b"},
                       rngs=nnx.Rngs(0))
    cell(cell.initialize_carry((BATCH, INPUT)), inputs()[:, 0])
    assert calls == [None, None]  # the input side, then the recurrent side, as Flax's
    assert [getattr(cell, n).get_metadata()["tag"] for n in ("w_x", "w_h", "b")] == [
        "in", "rec", "b"]
    with pytest.warns(DeprecationWarning, match="keep_rngs"):
        kept = jn.LSTMCell(INPUT, HIDDEN, keep_rngs=True, carry_init=nnx.initializers.normal(),
                           rngs=nnx.Rngs(0, carry=4))
    c, h = kept.initialize_carry((BATCH, INPUT))
    assert float(jnp.abs(c - h).max()) > 0  # c and h drawn with their own keys, as in Flax


# --- 6. a Flax-trained model's params, anywhere in the tree -------------------------------------


class _Compact(nn.Module):
    """Cells made inside a compact method belong to it (`LSTMCell_0`, ...), not to nn.RNN."""

    cell_type: type

    @nn.compact
    def __call__(self, xs):
        xs = nn.Dense(INPUT, name="embed")(xs)
        ys = nn.RNN(self.cell_type(HIDDEN))(xs)
        zs = nn.Bidirectional(nn.RNN(self.cell_type(HIDDEN)), nn.RNN(self.cell_type(HIDDEN)))(ys)
        return nn.Dense(1, name="head")(zs)


class _Setup(nn.Module):
    """RNNs made in setup own their cells ({'cell': ...}); jaxlstm's LSTM can replace them."""

    cell_type: type | None

    def setup(self):
        self.embed = nn.Dense(INPUT)
        if self.cell_type is None:
            self.encoder = jl.LSTM(HIDDEN)
            self.both = jl.LSTM(HIDDEN, bidirectional=True)
        else:
            self.encoder = nn.RNN(self.cell_type(HIDDEN))
            self.both = nn.Bidirectional(nn.RNN(self.cell_type(HIDDEN)),
                                         nn.RNN(self.cell_type(HIDDEN)))
        self.head = nn.Dense(1)

    def __call__(self, xs):
        return self.head(self.both(self.encoder(self.embed(xs))))


@pytest.mark.parametrize("flax_cell", ["LSTMCell", "OptimizedLSTMCell"])
def test_flax_trained_linen_params_load_into_the_swapped_model(flax_cell):
    xs = inputs()
    # Swapping the class keeps linen's generated names (`OptimizedLSTMCell_0`).
    flax_model, ours = _Compact(getattr(nn, flax_cell)), _Compact(getattr(jl, flax_cell))
    flax_variables = flax_model.init(jax.random.key(0), xs)
    swapped = from_flax_model(flax_variables)
    assert set(swapped["params"][f"{flax_cell}_2"]) == {"w_x", "w_h", "b"}
    np.testing.assert_allclose(ours.apply(swapped, xs), flax_model.apply(flax_variables, xs),
                               **TOL)
    flax_model = _Setup(getattr(nn, flax_cell))
    flax_variables = flax_model.init(jax.random.key(0), xs)
    want = flax_model.apply(flax_variables, xs)
    np.testing.assert_allclose(_Setup(jl.LSTMCell).apply(from_flax_model(flax_variables), xs),
                               want, **TOL)
    as_lstm = from_flax_model(flax_variables, target="lstm")
    assert set(as_lstm["params"]["both"]["layer_0"]) == {"forward", "backward"}
    np.testing.assert_allclose(_Setup(None).apply(as_lstm, xs), want, **TOL)


def test_flax_trained_nnx_params_load_into_the_swapped_model():
    class Model(nnx.Module):
        def __init__(self, make_cell, rngs):
            self.embed = nnx.Linear(INPUT, INPUT, rngs=rngs)
            self.first = nnx.RNN(make_cell(rngs, "OptimizedLSTMCell"))
            self.second = nnx.RNN(make_cell(rngs, "LSTMCell"))

        def __call__(self, xs):
            return self.second(self.first(self.embed(xs)))

    def flax_cell(rngs, name):
        width = INPUT if name == "OptimizedLSTMCell" else HIDDEN
        return getattr(nnx, name)(width, HIDDEN, rngs=rngs)

    def our_cell(rngs, name):
        return jn.LSTMCell(INPUT if name == "OptimizedLSTMCell" else HIDDEN, HIDDEN, rngs=rngs)

    xs = inputs()
    flax_model, ours = Model(flax_cell, nnx.Rngs(0)), Model(our_cell, nnx.Rngs(1))
    nnx.update(ours, from_flax_model(nnx.state(flax_model, nnx.Param)))
    np.testing.assert_allclose(ours(xs), flax_model(xs), **TOL)
    with pytest.raises(ValueError, match="holds no Flax LSTM cell"):
        from_flax_model(nnx.state(ours, nnx.Param))
    with pytest.raises(ValueError, match="target must be"):
        from_flax_model({}, target="gru")


# --- 7. the LSTM modules' carry in Flax's format ------------------------------------------------


def test_lstm_carry_in_flax_format_matches_nn_rnn_and_bidirectional():
    xs = inputs()
    key = jax.random.key(0)
    for bidirectional in (False, True):
        model = jl.LSTM(HIDDEN, bidirectional=bidirectional, carry_format="flax")
        variables = model.init(key, xs)
        carry, outputs = model.apply(variables, xs, return_carry=True)
        layer = variables["params"]["layer_0"]
        rnns = [nn.RNN(jl.LSTMCell(HIDDEN), return_carry=True)
                for _ in range(1 + bidirectional)]
        if bidirectional:
            reference = nn.Bidirectional(*rnns, return_carry=True)
            cells = {"forward_rnn": {"cell": layer["forward"]},
                     "backward_rnn": {"cell": layer["backward"]}}
        else:
            reference, cells = rnns[0], {"cell": layer["forward"]}
        want_carry, want = reference.apply({"params": cells}, xs)
        np.testing.assert_allclose(outputs, want, **TOL)
        assert jax.tree.structure(carry) == jax.tree.structure(want_carry)
        assert max_difference(carry, want_carry) < 1e-6
        # Flax's format goes back in as the initial carry, and round-trips.
        _, resumed = model.apply(variables, xs, initial_carry=carry, return_carry=True)
        stack = from_flax_carry(carry, bidirectional=bidirectional)
        _, expected = jl.LSTM(HIDDEN, bidirectional=bidirectional).apply(
            variables, xs, initial_carry=stack, return_carry=True)
        np.testing.assert_allclose(resumed, expected, **TOL)
        assert max_difference(to_flax_carry(stack), carry) == 0.0


def test_nnx_lstm_carry_format_and_conversion_errors():
    model = jn.LSTM(INPUT, HIDDEN, num_layers=2, carry_format="flax", rngs=nnx.Rngs(0))
    carry, _ = model(inputs(), return_carry=True)
    assert len(carry) == 2 and all(len(layer) == 2 for layer in carry)
    assert carry[1][0].shape == (BATCH, HIDDEN)  # layer 1's c
    stack = from_flax_carry(carry, num_layers=2)
    assert stack[1].backward is None and stack[1].forward.c is carry[1][0]
    with pytest.raises(ValueError, match="carry_format must be one of"):
        jn.LSTM(INPUT, HIDDEN, carry_format="torch", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="must hold 3 layers"):
        from_flax_carry(carry, num_layers=3)
    with pytest.raises(TypeError, match="tuple of Directions"):
        to_flax_carry(carry)
