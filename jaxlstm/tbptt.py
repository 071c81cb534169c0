"""Truncated backpropagation through time: a long sequence in chunks, gradients cut between."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxlstm.cell import LSTMState, zero_state_like
from jaxlstm.params import LSTMParams
from jaxlstm.scan import lstm
from jaxlstm.validation import check_floating, check_params, check_positive_int

Array = jax.Array


def truncated_lstm(
    params: LSTMParams,
    xs: Array,
    *,
    truncation: int,
    initial_state: LSTMState | None = None,
    seq_lengths: Array | None = None,
    time_major: bool = False,
    **lstm_options: Any,
) -> tuple[Array, LSTMState]:
    """`jaxlstm.lstm` run in chunks of `truncation` steps, gradients stopped between chunks.

    The forward pass equals `lstm(params, xs, ...)`: each chunk starts from the state the
    previous one ended with. The backward pass sees that state through `stop_gradient`, so
    gradients flow back at most `truncation` steps (truncated BPTT, Williams & Peng 1990), and
    memory for the backward pass is that of one chunk at a time plus the outputs. For
    streaming, call it (or `lstm`) on successive windows and pass `final_state` along.

    Args:
        params: `LSTMParams`.
        xs: inputs, (batch..., T, I), or (T, batch..., I) if `time_major`.
        truncation: K, steps per chunk; T need not be a multiple of it.
        initial_state: as in `lstm`; also behind a `stop_gradient`.
        seq_lengths: as in `lstm` (packed-sequence semantics), split across the chunks.
        time_major: as in `lstm`.
        **lstm_options: passed to each `lstm` call (`unroll`, `fused_backward`, ...).

    Returns:
        `(hs, final_state)`, as `lstm`.

    Example:
        >>> loss = lambda p: jnp.mean(jaxlstm.truncated_lstm(p, xs, truncation=50)[0] ** 2)
        >>> grads = jax.grad(loss)(params)   # gradients reach back at most 50 steps
    """
    truncation = check_positive_int(truncation, "truncation")
    if "reverse" in lstm_options or "return_gates" in lstm_options:
        raise ValueError("truncated_lstm runs forwards and returns no gates; use lstm for those.")
    sizes = check_params(params)
    xs = check_floating(xs, "xs")
    if xs.ndim < 2:
        raise ValueError(f"xs must have rank >= 2, got shape {xs.shape}.")
    xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
    num_steps = xs_tm.shape[0]
    if initial_state is None:
        initial_state = zero_state_like(xs_tm[0] if num_steps else xs_tm.sum(0),
                                        sizes.hidden_size, sizes.output_size)

    def run_chunk(state: LSTMState, start: int | Array, x_chunk: Array):
        lengths = None
        if seq_lengths is not None:
            lengths = jnp.clip(jnp.asarray(seq_lengths) - start, 0, x_chunk.shape[0])
        hs, state = lstm(params, x_chunk, initial_state=jax.lax.stop_gradient(state),
                         seq_lengths=lengths, time_major=True, **lstm_options)
        return state, hs

    num_chunks, tail = divmod(num_steps, truncation)
    split = num_chunks * truncation
    chunks = xs_tm[:split].reshape((num_chunks, truncation) + xs_tm.shape[1:])
    starts = jnp.arange(num_chunks) * truncation
    state, hs = jax.lax.scan(lambda s, a: run_chunk(s, *a), initial_state, (starts, chunks))
    hs = hs.reshape((split,) + hs.shape[2:])
    if tail:
        state, hs_tail = run_chunk(state, split, xs_tm[split:])
        hs = jnp.concatenate([hs, hs_tail])
    return (hs if time_major else jnp.moveaxis(hs, 0, -2)), state
