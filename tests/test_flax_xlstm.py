"""The Flax modules of xLSTM's cells compute the functional API on the same arrays."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlstm.flax import linen as jl
from jaxlstm.flax import nnx as jn
from jaxlstm.xlstm.mlstm import MLSTMParams, mlstm
from jaxlstm.xlstm.slstm import SLSTMParams, slstm

BATCH, STEPS, INPUT, HIDDEN = 2, 7, 3, 8
TOL = {"rtol": 1e-6, "atol": 1e-6}
# Every call jitted: one compile per program instead of op-by-op dispatch (and a re-traced
# scan) per eager call.
slstm = jax.jit(slstm)
mlstm = jax.jit(mlstm, static_argnames=("mode", "chunk_size"))


def inputs():
    return jax.random.normal(jax.random.key(0), (BATCH, STEPS, INPUT))


def test_linen_slstm_and_mlstm_are_the_functional_cells():
    xs, lengths = inputs(), jnp.array([7, 4])
    model = jl.SLSTM(HIDDEN, num_heads=2)
    variables = jax.jit(model.init)(jax.random.key(1), xs)
    params = SLSTMParams(**variables["params"]["cell"])
    outputs, state = jax.jit(model.apply, static_argnames="return_state")(
        variables, xs, seq_lengths=lengths, return_state=True)
    want, want_state = slstm(params, xs, seq_lengths=lengths)[:2]
    np.testing.assert_allclose(outputs, want, **TOL)
    assert jax.tree.structure(state) == jax.tree.structure(want_state)
    model = jl.MLSTM(HIDDEN, num_heads=2, chunk_size=4)
    variables = jax.jit(model.init)(jax.random.key(1), xs)
    params = MLSTMParams(**variables["params"]["cell"])
    apply = jax.jit(model.apply, static_argnames="return_state")
    outputs, state = apply(variables, xs, return_state=True)
    want, _ = mlstm(params, xs, chunk_size=4)
    np.testing.assert_allclose(outputs, want, **TOL)
    # The state carries into the next call, in any mode.
    more = apply(variables, xs, initial_state=state)
    want_more, _ = mlstm(params, xs, initial_state=state, mode="recurrent")
    np.testing.assert_allclose(more, want_more, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["SLSTM", "MLSTM"])
def test_nnx_modules_are_the_functional_cells_and_train(cell):
    xs = inputs()
    model = getattr(jn, cell)(INPUT, HIDDEN, num_heads=2, rngs=nnx.Rngs(0))
    function = slstm if cell == "SLSTM" else mlstm
    call = nnx.jit(lambda m, x, **kw: m(x, **kw), static_argnames="mode")
    outputs = call(model, xs)
    np.testing.assert_allclose(outputs, function(model.params(), xs)[0], **TOL)
    grads = nnx.jit(nnx.grad(lambda m: jnp.mean(m(xs) ** 2)))(model)
    assert set(nnx.to_pure_dict(grads)) == set(model.params()._fields)
    if cell == "MLSTM":
        np.testing.assert_allclose(call(model, xs, mode="recurrent"), outputs, rtol=1e-4,
                                   atol=1e-5)
