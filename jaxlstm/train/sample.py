"""Generating sequences from a trained next-symbol model (the text task), one step at a time.

The stack runs one step per call with its states carried, so sampling costs one LSTM step per
character; the prompt is read first, then each sampled symbol is fed back in.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.stack import lstm_stack
from jaxlstm.train.model import stack_and_head

Array = jax.Array


def sample(params: Any, prompt_ids: np.ndarray, length: int, vocab_size: int, *, key: Array,
           temperature: float = 0.8) -> np.ndarray:
    """Reads `prompt_ids`, then samples `length` ids from softmax(logits / temperature).

    Args:
        params: a trained model's params (functional or linen API, unidirectional).
        prompt_ids: int ids (P,), P >= 1.
        length: how many ids to generate.
        vocab_size: the one-hot input size.
        key: PRNG key.
        temperature: softmax temperature; lower is more conservative.

    Returns:
        The generated ids (length,), not including the prompt.
    """
    stack, w, b = stack_and_head(params)
    if any(layer.backward is not None for layer in stack):
        raise ValueError("sampling needs a unidirectional model.")
    prompt = jnp.eye(vocab_size, dtype=jnp.float32)[jnp.asarray(prompt_ids)][None]
    outputs, states = lstm_stack(stack, prompt)

    def logits_of(h: Array) -> Array:
        logits = h @ w
        return (logits + jnp.reshape(b, (1,) * (logits.ndim - 1) + b.shape)) / temperature

    def step(carry, key_t):
        states, logits = carry
        token = jax.random.categorical(key_t, logits)
        x = jax.nn.one_hot(token, vocab_size, dtype=jnp.float32)[:, None]
        out, states = lstm_stack(stack, x, initial_state=states)
        return (states, logits_of(out[:, -1])), token[0]

    carry = (states, logits_of(outputs[:, -1]))
    _, tokens = jax.jit(lambda c, k: jax.lax.scan(step, c, k))(
        carry, jax.random.split(key, length))
    return np.asarray(tokens)
