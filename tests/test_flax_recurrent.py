"""jaxlstm.flax's Recurrent modules (linen and NNX): a stack of any families over the protocol,
against the functional `lstm_stack` on the same arrays. (The runner trains them in
test_train_xlstm; here the module on its own.)"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlstm.decode import initial_stack_state
from jaxlstm.family import of
from jaxlstm.flax import linen
from jaxlstm.flax import nnx as jnnx
from jaxlstm.flax.recurrent import dict_to_params
from jaxlstm.stack import lstm_stack

CELLS = ("lstm", "mlstm")  # a family whose state is float32 under bfloat16, over one that is not
OPTIONS = {"num_heads": 2}


def test_linen_and_nnx_equal_the_functional_stack_and_keep_each_familys_state_dtype():
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    module = linen.Recurrent(8, cell=CELLS, num_layers=2, init_options=OPTIONS)
    variables = module.init(jax.random.key(0), xs)
    nnx_module = jnnx.Recurrent(3, 8, cell=CELLS, num_layers=2, init_options=OPTIONS,
                                rngs=nnx.Rngs(0))
    params = nnx_module.params()
    # Each module's weights, laid out as lstm_stack takes them, give the module's outputs.
    linen_params = dict_to_params(variables["params"], params)
    np.testing.assert_allclose(module.apply(variables, xs), lstm_stack(linen_params, xs)[0],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(nnx_module(xs), lstm_stack(params, xs)[0], rtol=1e-6, atol=1e-6)

    # bfloat16 compute: a given float32 state stays float32 where the family keeps it so (the
    # mLSTM's memory), and is cast to bfloat16 where the family computes in it (the LSTM's).
    zeros = initial_stack_state(params, (2,))
    leaves, tree = jax.tree.flatten(zeros)
    noise = jax.random.split(jax.random.key(2), len(leaves))
    state = jax.tree.unflatten(tree, [a + jax.random.uniform(k, a.shape, a.dtype, 0.1, 1.0)
                                      for a, k in zip(leaves, noise)])
    half = jnnx.Recurrent(3, 8, cell=CELLS, num_layers=2, init_options=OPTIONS,
                          dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    outputs, final = half(xs, initial_state=state, return_state=True)
    assert of(params[1].forward).name == "mlstm"
    assert {a.dtype for a in jax.tree.leaves(final[1])} == {jnp.dtype(jnp.float32)}
    assert {a.dtype for a in jax.tree.leaves(final[0])} == {jnp.dtype(jnp.bfloat16)}
    cast = jax.tree.map(lambda a: a.astype(jnp.bfloat16), (params, xs))
    want = lstm_stack(*cast, initial_state=(
        jax.tree.map(lambda a: a.astype(jnp.bfloat16), state[0]), state[1]))
    np.testing.assert_array_equal(np.asarray(outputs, np.float32),
                                  np.asarray(want[0], np.float32))
    # ... which differs from rounding the mLSTM's state to bfloat16 (so the check can fail).
    rounded = lstm_stack(*cast, initial_state=jax.tree.map(lambda a: a.astype(jnp.bfloat16),
                                                           state))
    assert not np.array_equal(np.asarray(rounded[0], np.float32),
                              np.asarray(want[0], np.float32))
