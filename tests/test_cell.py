"""lstm_cell against the equations written out in NumPy, for 0, 1 and 2 batch dimensions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

import jaxlstm
from tests.reference import numpy_cell

INPUT, HIDDEN = 3, 5


class LstmCellTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("no_batch", ()), ("one_batch_dim", (4,)), ("two_batch_dims", (2, 3))
    )
    def test_matches_numpy_equations(self, batch_shape):
        keys = jax.random.split(jax.random.key(0), 4)
        params = jaxlstm.init_lstm(keys[0], INPUT, HIDDEN)
        params = params._replace(b=jax.random.normal(keys[3], params.b.shape))
        x = jax.random.normal(keys[1], batch_shape + (INPUT,))
        h, c = jax.random.normal(keys[2], (2,) + batch_shape + (HIDDEN,))

        state, h_t = self.variant(jaxlstm.lstm_cell)(params, jaxlstm.LSTMState(h=h, c=c), x)

        want_h, want_c = numpy_cell(params.w_x, params.w_h, params.b, h, c, x)
        assert state.h.shape == batch_shape + (HIDDEN,)
        np.testing.assert_allclose(state.h, want_h, atol=1e-6, rtol=1e-5)
        np.testing.assert_allclose(state.c, want_c, atol=1e-6, rtol=1e-5)
        np.testing.assert_array_equal(h_t, state.h)

    def test_state_is_a_named_pytree(self):
        state = jaxlstm.LSTMState(h=jnp.ones(2), c=jnp.zeros(2))
        doubled = jax.tree.map(lambda a: 2 * a, state)
        assert isinstance(doubled, jaxlstm.LSTMState)
        np.testing.assert_array_equal(doubled.h, [2, 2])
