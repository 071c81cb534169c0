"""Independent references the tests compare against.

`numpy_cell` is the LSTM equations written out in NumPy (float64), sharing no code with
jaxlstm. `loop_lstm` runs `jaxlstm.lstm_cell` in a plain Python loop, one sequence at a time
over its valid prefix, so variable-length handling is checked against the definition rather
than against the masking that `jaxlstm.lstm` uses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxlstm


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_cell(w_x, w_h, b, h, c, x):
    """One LSTM step in float64 NumPy; gate order i, f, g, o."""
    w_x, w_h, b, h, c, x = (np.asarray(a, np.float64) for a in (w_x, w_h, b, h, c, x))
    z = x @ w_x + h @ w_h + b
    z_i, z_f, z_g, z_o = np.split(z, 4, axis=-1)
    c_new = sigmoid(z_f) * c + sigmoid(z_i) * np.tanh(z_g)
    h_new = sigmoid(z_o) * np.tanh(c_new)
    return h_new, c_new


def loop_lstm(params, xs, initial_state=None, seq_lengths=None, reverse=False):
    """Batch-major reference: xs (batch..., T, I) -> (hs (batch..., T, H), final LSTMState)."""
    xs = jnp.asarray(xs)
    *batch_shape, num_steps, _ = xs.shape
    hidden_size = params.w_h.shape[0]
    flat_xs = xs.reshape((-1, num_steps, xs.shape[-1]))
    n = flat_xs.shape[0]
    if initial_state is None:
        h0 = jnp.zeros((n, hidden_size), xs.dtype)
        c0 = jnp.zeros((n, hidden_size), xs.dtype)
    else:
        h0 = jnp.reshape(initial_state.h, (n, hidden_size))
        c0 = jnp.reshape(initial_state.c, (n, hidden_size))
    lengths = (
        np.full(n, num_steps) if seq_lengths is None else np.reshape(np.asarray(seq_lengths), n)
    )
    hs = np.zeros((n, num_steps, hidden_size), np.float64)
    final_h, final_c = [], []
    for row in range(n):
        state = jaxlstm.LSTMState(h=h0[row], c=c0[row])
        order = range(int(lengths[row]))
        for t in reversed(order) if reverse else order:
            state, h_t = jaxlstm.lstm_cell(params, state, flat_xs[row, t])
            hs[row, t] = np.asarray(h_t)
        final_h.append(state.h)
        final_c.append(state.c)
    shape = tuple(batch_shape) + (hidden_size,)
    final = jaxlstm.LSTMState(
        h=jnp.stack(final_h).reshape(shape), c=jnp.stack(final_c).reshape(shape)
    )
    return hs.reshape(tuple(batch_shape) + (num_steps, hidden_size)), final


def differentiable_loop_lstm(params, xs, initial_state, seq_lengths, reverse):
    """Like `loop_lstm` but pure jnp, so JAX can differentiate it: (hs, final, gates).

    xs (N, T, I), one batch axis; `seq_lengths` a tuple of Python ints. Uses the gate functions
    step by step, one sequence at a time over its valid prefix; padded outputs are zero.
    """
    num_steps = xs.shape[1]
    hs, finals, all_gates = [], [], []
    for row, length in enumerate(seq_lengths):
        state = jaxlstm.LSTMState(h=initial_state.h[row], c=initial_state.c[row])
        outs = [None] * num_steps
        order = range(length)
        for t in reversed(order) if reverse else order:
            z = (jaxlstm.gates.input_projection(xs[row, t], params.w_x, params.b)
                 + jaxlstm.gates.recurrent_projection(state.h, params.w_h))
            state, step_gates = jaxlstm.lstm_pointwise(z, state.c)
            outs[t] = (state.h, step_gates)
        zero = (jnp.zeros_like(state.h), jaxlstm.LSTMGates(*([jnp.zeros_like(state.h)] * 5)))
        outs = [zero if o is None else o for o in outs]
        hs.append(jnp.stack([o[0] for o in outs]))
        all_gates.append(jax.tree.map(lambda *a: jnp.stack(a), *[o[1] for o in outs]))
        finals.append(state)
    stack = lambda *a: jnp.stack(a)  # noqa: E731
    return jnp.stack(hs), jax.tree.map(stack, *finals), jax.tree.map(stack, *all_gates)
