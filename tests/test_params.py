"""init_lstm: shapes, the initialisers per gate, the forget bias, dtypes, bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm


def test_shapes_and_pytree():
    params = jaxlstm.init_lstm(jax.random.key(0), input_size=3, hidden_size=5)
    assert params.w_x.shape == (3, 20)
    assert params.w_h.shape == (5, 20)
    assert params.b.shape == (20,)
    assert (params.input_size, params.hidden_size) == (3, 5)
    leaves, treedef = jax.tree.flatten(params)
    assert len(leaves) == 3
    assert isinstance(jax.tree.unflatten(treedef, leaves), jaxlstm.LSTMParams)


def test_each_recurrent_gate_block_is_orthogonal():
    hidden = 16
    params = jaxlstm.init_lstm(jax.random.key(1), input_size=4, hidden_size=hidden)
    for block in np.split(np.asarray(params.w_h), 4, axis=-1):
        np.testing.assert_allclose(block.T @ block, np.eye(hidden), atol=1e-5)


def test_forget_bias_sits_on_the_forget_gate_only():
    params = jaxlstm.init_lstm(jax.random.key(0), 2, 3, forget_bias=2.5)
    np.testing.assert_array_equal(
        np.asarray(params.b).reshape(4, 3), [[0] * 3, [2.5] * 3, [0] * 3, [0] * 3]
    )


def test_custom_initialisers_are_called_per_gate():
    calls = []

    def ones(key, shape, dtype):
        calls.append(shape)
        return jnp.ones(shape, dtype)

    params = jaxlstm.init_lstm(
        jax.random.key(0), 3, 2, input_init=ones, recurrent_init=jax.nn.initializers.zeros
    )
    assert calls == [(3, 2)] * 4
    np.testing.assert_array_equal(params.w_x, np.ones((3, 8)))
    np.testing.assert_array_equal(params.w_h, np.zeros((2, 8)))


def test_different_keys_give_different_params():
    a = jaxlstm.init_lstm(jax.random.key(0), 3, 4)
    b = jaxlstm.init_lstm(jax.random.key(1), 3, 4)
    assert not np.allclose(a.w_x, b.w_x)
    assert not np.allclose(a.w_h, b.w_h)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_low_precision_init_works_on_cpu(dtype):
    """Flax's orthogonal init fails in bfloat16 on CPU (no bf16 QR); ours casts after."""
    params = jaxlstm.init_lstm(jax.random.key(0), 3, 8, dtype=dtype)
    reference = jaxlstm.init_lstm(jax.random.key(0), 3, 8)
    for leaf, ref in zip(jax.tree.leaves(params), jax.tree.leaves(reference)):
        assert leaf.dtype == dtype
        np.testing.assert_allclose(np.asarray(leaf, np.float32), ref, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(input_size=0, hidden_size=4), ValueError, "input_size must be a positive int, got 0"),
        (dict(input_size=3, hidden_size=-1), ValueError, "hidden_size must be a positive int"),
        (dict(input_size=3.0, hidden_size=4), TypeError, "input_size must be a positive int, got float"),
        (dict(input_size=3, hidden_size=True), TypeError, "hidden_size must be a positive int, got bool"),
        (dict(input_size=3, hidden_size=4, dtype=jnp.int32), TypeError, "dtype must be a floating dtype, got int32"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        jaxlstm.init_lstm(jax.random.key(0), **kwargs)
