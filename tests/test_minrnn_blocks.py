"""minRNN residual blocks and their stack: one block against a float64 NumPy forward written
from the module docstring's equations, parallel == sequential, causality, variable length,
gradients and a tiny fit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.minrnn.blocks import (
    MinRNNStackParams,
    init_min_block,
    init_min_block_stack,
    min_block,
    min_block_stack,
)

DIM, STEPS = 8, 7
stack = jax.jit(min_block_stack, static_argnames="mode")
block = jax.jit(min_block, static_argnames="mode")


def _np_layer_norm(x, weight):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (1.0 + weight) * (x - mean) / np.sqrt(var + 1e-5)


def _np_g(x):
    return np.where(x >= 0, x + 0.5, 1.0 / (1.0 + np.exp(-x)))


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_block(p, xs, cell):
    """One block in float64 NumPy, step by step, from the equations alone."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    xs = np.asarray(xs, np.float64)
    a = _np_layer_norm(xs, p.norm)
    size = p.conv_w.shape[0]
    padded = np.concatenate([np.zeros(xs.shape[:-2] + (size - 1, xs.shape[-1])), a], axis=-2)
    c = p.conv_b + sum(padded[..., j:j + xs.shape[-2], :] * p.conv_w[j] for j in range(size))
    hidden = p.w_out.shape[0]
    h = np.zeros(xs.shape[:-2] + (hidden,))
    outs = []
    for t in range(xs.shape[-2]):
        z = c[..., t, :] @ p.cell.w_x + p.cell.b
        if cell == "min_gru":
            gate, cand = z[..., :hidden], z[..., hidden:]
            u = _np_sigmoid(gate)
            h = (1 - u) * h + u * _np_g(cand)
        else:
            f, i = _np_sigmoid(z[..., :hidden]), _np_sigmoid(z[..., hidden:2 * hidden])
            h = f / (f + i) * h + i / (f + i) * _np_g(z[..., 2 * hidden:])
        outs.append(h)
    x = xs + np.stack(outs, axis=-2) @ p.w_out
    pre = _np_layer_norm(x, p.ffn_norm) @ p.ffn_w1 + p.ffn_b1
    gelu = 0.5 * pre * (1.0 + np.vectorize(math.erf)(pre / math.sqrt(2.0)))
    return x + gelu @ p.ffn_w2 + p.ffn_b2


def _perturbed(params, key, scale=0.3):
    """Every weight moved off its init (zero norms and biases would hide mistakes)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [leaf + scale * jax.random.normal(k, leaf.shape)
                                     for leaf, k in zip(leaves, keys)])


@pytest.mark.parametrize("cell", ["min_lstm", "min_gru"])
def test_block_matches_numpy_equations(cell):
    params = _perturbed(init_min_block(jax.random.key(0), DIM, cell=cell, expansion=1.5),
                        jax.random.key(1))
    xs = jax.random.normal(jax.random.key(2), (2, STEPS, DIM))
    expected = _np_block(params, xs, cell)
    for mode in ("parallel", "sequential"):
        np.testing.assert_allclose(block(params, xs, mode=mode), expected, atol=2e-5, rtol=2e-5)


def test_stack_modes_causality_and_variable_length():
    params = _perturbed(init_min_block_stack(jax.random.key(3), 3, DIM, "lg"),
                        jax.random.key(4), 0.1)
    xs = jax.random.normal(jax.random.key(5), (3, STEPS, 3))
    out = stack(params, xs)
    assert out.shape == (3, STEPS, DIM)
    np.testing.assert_allclose(stack(params, xs, mode="sequential"), out, atol=1e-5)
    later_changed = xs.at[:, 4:].set(7.0)
    np.testing.assert_array_equal(stack(params, later_changed)[:, :4], out[:, :4])
    lengths = jnp.array([STEPS, 4, 0])
    padded = stack(params, xs, seq_lengths=lengths)
    np.testing.assert_allclose(padded[0], out[0], atol=1e-6)
    np.testing.assert_allclose(padded[1, :4], stack(params, xs[1:2, :4])[0], atol=1e-6)
    np.testing.assert_array_equal(padded[1, 4:], 0.0)
    np.testing.assert_array_equal(padded[2], 0.0)


def test_stack_fits_a_tiny_problem_and_has_gradients_everywhere():
    params = init_min_block_stack(jax.random.key(6), 2, DIM, "ll", conv_kernel=2)
    xs = jax.random.normal(jax.random.key(7), (4, 5, 2))
    target = jnp.cumsum(xs[..., :1], axis=-2)  # a running sum: needs the recurrence

    def loss(p):
        out = min_block_stack(p, xs)
        return jnp.mean((out[..., :1] - target) ** 2)

    grad_fn = jax.jit(jax.value_and_grad(loss))
    first, grads = grad_fn(params)
    assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads))
    for _ in range(40):
        value, grads = grad_fn(params)
        params = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
    assert float(value) < 0.5 * float(first)


def test_bad_input_is_named():
    params = init_min_block_stack(jax.random.key(8), 3, DIM, "l")
    with pytest.raises(ValueError, match="blocks must be"):
        init_min_block_stack(jax.random.key(8), 3, DIM, "lm")
    with pytest.raises(ValueError, match="xs must have shape"):
        min_block_stack(params, jnp.ones((2, 5, 4)))
    with pytest.raises(TypeError, match="MinRNNStackParams"):
        min_block_stack(params.blocks, jnp.ones((2, 5, 3)))
    with pytest.raises(ValueError, match="cell must be"):
        init_min_block(jax.random.key(8), DIM, cell="lstm")
    assert isinstance(params, MinRNNStackParams)
