"""Decoding: a stack one time step at a time, and generation that reads a prompt in the
stack's fast form (its families' `apply`) and then steps.

For any unidirectional stack (`init_lstm_stack`, any families per layer), reading a sequence
in two parts gives the outputs and state of reading it whole:

    outputs[:, :P], state = lstm_stack(params, xs[:, :P])        # prefill: the fast form
    y_t, state = stack_step(params, xs[:, t], state)            # then t = P, P + 1, ...

so `generate` prefills once and then feeds each step's choice back in, one `family.step` per
layer and step (the decoding half of the family protocol, `jaxlstm.family`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxlstm import family as families
from jaxlstm.stack import Directions, StackParams, StackState, lstm_stack
from jaxlstm.validation import check_floating, check_positive_int

Array = jax.Array


def _check_unidirectional(params: Any) -> None:
    if not isinstance(params, (tuple, list)) or not params or not all(
            isinstance(layer, Directions) for layer in params):
        raise TypeError("params must be a non-empty tuple of Directions(forward, backward), as "
                        f"returned by init_lstm_stack, got {type(params).__name__}.")
    if any(layer.backward is not None for layer in params):
        raise ValueError("params must be a unidirectional stack to decode step by step (a "
                         "backward direction reads the future), got a bidirectional one.")


def initial_stack_state(params: StackParams, batch_shape: tuple[int, ...],
                        dtype: Any = jnp.float32) -> StackState:
    """Each layer's family's `initial_state` (zeros), as `lstm_stack` starts from."""
    return tuple(Directions(*(None if p is None else
                              families.of(p).initial_state(p, tuple(batch_shape), dtype)
                              for p in layer)) for layer in params)


def stack_step(params: StackParams, x_t: Array, state: StackState, *,
               residual: bool = False) -> tuple[Array, StackState]:
    """One time step of a unidirectional stack: each layer's `family.step` in turn.

    Args:
        params: a unidirectional stack, any family per layer.
        x_t: this step's input, (batch..., I).
        state: the stack's state (`lstm_stack`'s final state, `initial_stack_state`, or this
            function's).
        residual: as `lstm_stack`'s: a layer after the first whose input and output widths are
            equal adds its input to its output.

    Returns:
        (y_t (batch..., F), the new state): y_t equals `lstm_stack`'s output at this step.
    """
    _check_unidirectional(params)
    x_t = check_floating(x_t, "x_t")
    if not isinstance(state, (tuple, list)) or len(state) != len(params):
        raise ValueError(f"state must be a tuple of {len(params)} Directions (one per layer), "
                         f"got {type(state).__name__}.")
    new_state = []
    x = x_t
    for n, (layer, layer_state) in enumerate(zip(params, state)):
        y, s = families.of(layer.forward, f"params[{n}].forward").step(
            layer.forward, x, layer_state.forward)
        if residual and n > 0 and y.shape[-1] == x.shape[-1]:
            y = y + x
        new_state.append(Directions(s))
        x = y
    return x, tuple(new_state)


def generate(params: StackParams, prompt: Array, length: int,
             choose: Callable[[Array, Array], tuple[Array, Any]], *, key: Array,
             residual: bool = False, **stack_options: Any) -> tuple[Any, StackState]:
    """Reads `prompt`, then `length` times chooses the next input from the last output and
    feeds it back.

    The prompt is read by `lstm_stack` (each family's fast form, `**stack_options` such as
    `mode` passed on); each later step is `stack_step`, inside one `lax.scan`.

    Args:
        params: a unidirectional stack, any family per layer.
        prompt: (batch..., P, I), P >= 1.
        length: how many steps to generate, >= 1.
        choose: `(key_t, y_t) -> (x_next, choice)`: from the stack's output y_t
            (batch..., F), the next input (batch..., I) and what to record (any pytree, e.g.
            the sampled token ids).
        key: PRNG key, split into one key per step for `choose`.
        residual: as `lstm_stack`'s.
        **stack_options: passed to `lstm_stack` for the prompt.

    Returns:
        (the choices, each leaf (batch..., length, ...), the state after reading the prompt and
        every chosen input).

    Example:
        >>> def choose(key, y):                           # sample a token from a linear head
        ...     token = jax.random.categorical(key, y @ w_out)
        ...     return jax.nn.one_hot(token, vocab), token
        >>> tokens, state = generate(params, one_hot_prompt, 100, choose, key=key)
    """
    _check_unidirectional(params)
    return generate_from(
        lambda prompt: lstm_stack(params, prompt, residual=residual, **stack_options),
        lambda x_t, state: stack_step(params, x_t, state, residual=residual),
        prompt, length, choose, key=key)


def generate_from(prefill: Callable[[Array], tuple[Array, Any]],
                  step: Callable[[Array, Any], tuple[Array, Any]], prompt: Array, length: int,
                  choose: Callable[[Array, Array], tuple[Array, Any]], *,
                  key: Array) -> tuple[Any, Any]:
    """`generate` for any model that reads a sequence in two parts: `prefill(prompt) ->
    (outputs (batch..., P, F), state)` and `step(x_t, state) -> (y_t, state)` (a cell stack's
    `lstm_stack` / `stack_step`, a block stack's with `return_state=True` / its `..._step`).
    """
    length = check_positive_int(length, "length")
    prompt = check_floating(prompt, "prompt")
    if prompt.ndim < 2 or prompt.shape[-2] < 1:
        raise ValueError(f"prompt must be (batch..., P, I) with P >= 1, got shape "
                         f"{prompt.shape}.")
    outputs, state = prefill(prompt)
    y = outputs[..., -1, :]

    def body(carry, key_t):
        y, state = carry
        x, choice = choose(key_t, y)
        new_y, new_state = step(x.astype(prompt.dtype), state)
        # The scan's carry keeps the prefill's dtypes (a step may promote, e.g. bf16 inputs).
        new_state = jax.tree.map(lambda a, b: a.astype(b.dtype), new_state, state)
        return (new_y.astype(y.dtype), new_state), choice

    (_, state), choices = jax.lax.scan(body, (y, state), jax.random.split(key, length))
    batch_rank = prompt.ndim - 2
    choices = jax.tree.map(lambda c: jnp.moveaxis(c, 0, batch_rank), choices)
    return choices, state
