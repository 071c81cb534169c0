"""The Flax modules of minLSTM and minGRU, and the generic `Layer` they configure, compute the
functional API on the same arrays."""

import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxlstm
from jaxlstm import family
from jaxlstm.flax import linen as jl
from jaxlstm.flax import nnx as jn

BATCH, STEPS, INPUT, HIDDEN = 2, 5, 3, 4
TOL = {"rtol": 1e-6, "atol": 1e-6}
# name: (params type, init, sequence function, gate blocks)
CELLS = {
    "MinLSTM": (jaxlstm.MinLSTMParams, jaxlstm.init_min_lstm, jaxlstm.min_lstm, 3),
    "MinGRU": (jaxlstm.MinGRUParams, jaxlstm.init_min_gru, jaxlstm.min_gru, 2),
}


class ParamsKey(nn.Module):
    """The key linen's `self.param` hands an initialiser at the root: 'params' stream's first."""

    @nn.compact
    def __call__(self, xs):
        return self.make_rng("params")


def arguments():
    """Inputs, an initial state and lengths that make every argument matter."""
    key_x, key_h = jax.random.split(jax.random.key(0))
    xs = jax.random.normal(key_x, (BATCH, STEPS, INPUT))
    return xs, jax.random.normal(key_h, (BATCH, HIDDEN)), jnp.array([5, 3])


@pytest.mark.parametrize("cell", CELLS)
def test_linen_module_is_the_functional_cell(cell):
    params_type, init, function, gates = CELLS[cell]
    xs, h0, lengths = arguments()
    model = getattr(jl, cell)(HIDDEN, mode="sequential")
    variables = model.init(jax.random.key(1), xs)
    assert jax.tree.map(jnp.shape, variables) == {
        "params": {"cell": {"w_x": (INPUT, gates * HIDDEN), "b": (gates * HIDDEN,)}}}
    params = params_type(**variables["params"]["cell"])
    key, _ = ParamsKey().init_with_output(jax.random.key(1), xs)
    np.testing.assert_array_equal(params.w_x, init(key, INPUT, HIDDEN).w_x)
    outputs, final_h = model.apply(variables, xs, initial_state=h0, seq_lengths=lengths,
                                   reverse=True, return_state=True)
    want, want_h = function(params, xs, initial_state=h0, seq_lengths=lengths, reverse=True,
                            mode="sequential")
    np.testing.assert_allclose(outputs, want, **TOL)
    np.testing.assert_allclose(final_h, want_h, **TOL)
    # And back: functional params as variables, time-major, the default (parallel) mode.
    xs_tm = jnp.swapaxes(xs, 0, 1)
    outputs = getattr(jl, cell)(HIDDEN).apply({"params": {"cell": params._asdict()}}, xs_tm,
                                              time_major=True)
    np.testing.assert_allclose(outputs, function(params, xs_tm, time_major=True)[0], **TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_nnx_module_is_the_functional_cell_and_inits_as_it(cell):
    params_type, init, function, _ = CELLS[cell]
    xs, h0, lengths = arguments()
    model = getattr(jn, cell)(INPUT, HIDDEN, rngs=nnx.Rngs(0))
    want_params = init(nnx.Rngs(0).params(), INPUT, HIDDEN)
    assert type(model.params()) is params_type
    np.testing.assert_array_equal(model.w_x[...], want_params.w_x)
    np.testing.assert_array_equal(model.b[...], want_params.b)
    half = getattr(jn, cell)(INPUT, HIDDEN, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert half.params().w_x.dtype == jnp.bfloat16
    np.testing.assert_array_equal(half.params().w_x, want_params.w_x.astype(jnp.bfloat16))
    outputs, final_h = nnx.jit(
        lambda m, xs, h0, lengths: m(xs, initial_state=h0, seq_lengths=lengths,
                                     return_state=True))(model, xs, h0, lengths)
    want, want_h = function(model.params(), xs, initial_state=h0, seq_lengths=lengths)
    np.testing.assert_allclose(outputs, want, **TOL)
    np.testing.assert_allclose(final_h, want_h, **TOL)


def test_nnx_loads_functional_params_and_trains():
    xs, _, _ = arguments()
    model = jn.MinGRU(INPUT, HIDDEN, rngs=nnx.Rngs(0))
    params = jaxlstm.init_min_gru(jax.random.key(7), INPUT, HIDDEN)
    nnx.update(model, params._asdict())
    assert model.params().w_x is params.w_x  # the same arrays, no copy
    grads = nnx.jit(nnx.grad(lambda m: jnp.mean(m(xs) ** 2)))(model)
    want = jax.jit(jax.grad(lambda p: jnp.mean(jaxlstm.min_gru(p, xs)[0] ** 2)))(params)
    np.testing.assert_allclose(grads["w_x"][...], want.w_x, **TOL)
    np.testing.assert_allclose(grads["b"][...], want.b, **TOL)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match=r"mode must be one of \['parallel', 'sequential'\], "
                                         r"got 'scan'"):
        jn.MinLSTM(INPUT, HIDDEN, mode="scan", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="mode must be one of"):
        jl.MinGRU(HIDDEN, mode="scan").init(jax.random.key(0), arguments()[0])


def test_generic_layer_runs_a_family_without_a_class_of_its_own():
    """`Layer` takes any family by name: the GRU, stored and initialised as the named layers
    are, computes `jaxlstm.gru` on the same arrays in both frameworks."""
    xs, h0, lengths = arguments()
    model = jl.Layer(HIDDEN, family="gru")
    variables = model.init(jax.random.key(1), xs)
    params = jaxlstm.GRUParams(**variables["params"]["cell"])
    key, _ = ParamsKey().init_with_output(jax.random.key(1), xs)
    chex.assert_trees_all_equal(params, jaxlstm.init_gru(key, INPUT, HIDDEN))
    outputs, final_h = model.apply(variables, xs, initial_state=h0, seq_lengths=lengths,
                                   reverse=True, return_state=True)
    want, want_h = jaxlstm.gru(params, xs, initial_state=h0, seq_lengths=lengths, reverse=True)
    np.testing.assert_allclose(outputs, want, **TOL)
    np.testing.assert_allclose(final_h, want_h, **TOL)
    module = jn.Layer(INPUT, HIDDEN, family="gru", rngs=nnx.Rngs(0))
    chex.assert_trees_all_equal(module.params(),
                                jaxlstm.init_gru(nnx.Rngs(0).params(), INPUT, HIDDEN))
    np.testing.assert_allclose(module(xs, seq_lengths=lengths),
                               jaxlstm.gru(module.params(), xs, seq_lengths=lengths)[0], **TOL)


@pytest.mark.parametrize("name", family.names())
def test_generic_layer_refuses_options_its_family_does_not_declare(name):
    """The refusals are the protocol's, generated from the declarations: an option another
    family declares names its takers, before any params are made."""
    this = family.get(name)
    for kind, declared in (("init", "init_options"), ("apply", "apply_options")):
        option = next((o for f in map(family.get, family.names())
                       for o in sorted(getattr(f, declared)) if o not in getattr(this, declared)),
                      None)
        if option is None:
            continue
        message = (f"{option} applies to {family.join(family.takers(option, kind))} layers, "
                   f"not to {re.escape(this.label)} \\(family '{name}'\\)")
        with pytest.raises(ValueError, match=message):
            jl.Layer(HIDDEN, family=name, **{f"{kind}_options": {option: 1}}).init(
                jax.random.key(0), arguments()[0])
        with pytest.raises(ValueError, match=message):
            jn.Layer(INPUT, HIDDEN, family=name, **{f"{kind}_options": {option: 1}},
                     rngs=nnx.Rngs(0))
