"""What a residual block kind is, the registry of them, and one stack of any mix of them.

A block kind wraps one recurrent family's layer in the papers' residual block: every block is
pre-norm residual sub-layers, x <- x + sublayer(LN(x)) (`jaxlstm.block_parts.residual`), the
first holding the family's cell between the kind's own projections and causal convolution,
and, where the paper has one, a feed-forward after it. A kind is declared next to its family
(the same folder) as a `BlockKind`, and registered here under one letter of a stack's
`blocks` string:

    params   = kind.init(key, dim, block_index=i, num_blocks=n, dtype=..., **init_options)
    outputs  = kind.apply(params, x, seq_lengths=..., initial_state=..., return_state=...,
                          mode=..., **apply_options)          # (outputs, state) with return_state
    y, state = kind.step(params, x_t, state)
    state    = kind.initial_state(params, batch_shape, dtype)

The stack (`init_block_stack`, `block_stack`, `block_stack_step`, `initial_block_stack_state`)
is written once over that: x = xs @ W_in + b_in, the blocks in order, a final LayerNorm, for
any string of registered letters (`letters()`), e.g. "msl". An option goes to the kinds that
declare it and is refused, naming the kinds that take it, when no block of the stack does;
`mode` goes to the kinds whose family has forms (one form for all of them, or a mapping
{letter: form}). Decoding works as for a stack of cells: read a prompt with
`block_stack(..., return_state=True)` in the fast form, then `block_stack_step`.

Core module: jax, numpy and chex only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm import family as families
from jaxlstm.block_parts import init_stack_ends, run_block_stack, step_block_stack
from jaxlstm.validation import check_positive_int

Array = jax.Array


@dataclass(frozen=True)
class BlockKind:
    """One residual block kind behind the stack (see the module docstring).

    Attributes:
        letter: its letter in a stack's `blocks` string, e.g. "m".
        label: how messages name it, e.g. "mLSTM" (for "mLSTM blocks").
        family: the registry name of the family its cell is (`jaxlstm.family.get`); the
            kind's forms (`mode`) are that family's.
        owns: params -> whether they are this kind's (a kind's params type may be shared
            with another kind's, told apart by the cell inside).
        init: (key, dim, *, block_index, num_blocks, dtype, **init_options) -> params.
        apply: (params, x, *, seq_lengths=None, initial_state=None, return_state=False,
            **apply_options) -> outputs (batch..., T, dim), or (outputs, state).
        step: (params, x_t, state) -> (y_t, state).
        initial_state: (params, batch_shape, dtype) -> the state `apply` starts from.
        init_options: the keyword options `init` takes beyond the stack's.
        apply_options: the keyword options `apply` takes beyond the stack's (`mode` included
            when the family has forms).
        activation_floats: (dim, steps, mode, **init_options) -> the floats, roughly, the
            backward keeps per step and row (the runner's memory estimate).
    """

    letter: str
    label: str
    family: str
    owns: Callable[[Any], bool]
    init: Callable[..., Any]
    apply: Callable[..., Any]
    step: Callable[..., tuple[Array, Any]]
    initial_state: Callable[..., Any]
    init_options: frozenset[str] = frozenset()
    apply_options: frozenset[str] = frozenset()
    activation_floats: Callable[..., float] | None = None

    @property
    def modes(self) -> tuple[str, ...]:
        """The forms its cell can run in (its family's)."""
        return families.get(self.family).modes


_REGISTRY = {
    "m": "jaxlstm.xlstm.blocks",
    "s": "jaxlstm.xlstm.blocks",
    "l": "jaxlstm.minrnn.blocks",
    "g": "jaxlstm.minrnn.blocks",
}
"""Letter -> the module whose `BLOCK_KINDS[letter]` it is; adding a kind is one line here."""


def letters() -> tuple[str, ...]:
    """The registered kinds' letters, in registration order."""
    return tuple(_REGISTRY)


def kind(letter: str) -> BlockKind:
    """The kind registered under `letter`; a ValueError listing the letters otherwise."""
    if not isinstance(letter, str) or letter not in _REGISTRY:
        raise ValueError(f"a block must be one of {describe()}, got {letter!r}.")
    found = importlib.import_module(_REGISTRY[letter]).BLOCK_KINDS[letter]
    if found.letter != letter:  # a registry line pointing at the wrong module
        raise RuntimeError(f"{_REGISTRY[letter]}.BLOCK_KINDS[{letter!r}] is lettered "
                           f"{found.letter!r}.")
    return found


def describe() -> str:
    """The registered letters in words: "'m' (mLSTM), 's' (sLSTM), ..."."""
    return ", ".join(f"{letter!r} ({kind(letter).label})" for letter in _REGISTRY)


def kind_of(block: Any, name: str = "block") -> BlockKind:
    """The kind whose params `block` is; a TypeError naming `name` otherwise."""
    for letter in _REGISTRY:
        found = kind(letter)
        if found.owns(block):
            return found
    raise TypeError(f"{name} must be the params of a registered block kind ({describe()}), "
                    f"got {type(block).__name__}.")


def kinds(blocks: Any, name: str = "blocks") -> tuple[BlockKind, ...]:
    """The kinds a `blocks` string (or sequence of letters) names; a ValueError otherwise."""
    chosen = list(blocks) if isinstance(blocks, (str, Sequence)) else []
    if not chosen or any(not isinstance(b, str) or b not in _REGISTRY for b in chosen):
        raise ValueError(f"{name} must be a non-empty sequence of {describe()}, e.g. 'msm', "
                         f"got {blocks!r}.")
    return tuple(kind(letter) for letter in chosen)


class BlockStackParams(NamedTuple):
    """A stack of blocks of any registered kinds.

    Attributes:
        w_in: input projection, (input_size, dim).
        b_in: its bias, (dim,).
        blocks: one params per block, in order (each a registered kind's).
        norm: final LayerNorm weight (residual: scale 1 + norm), (dim,).
    """

    w_in: Array
    b_in: Array
    blocks: tuple
    norm: Array


def _route(options: Mapping[str, Any], chosen: Sequence[BlockKind],
           kind_options: Callable[[BlockKind], frozenset[str]], what: str
           ) -> list[dict[str, Any]]:
    """The options each block gets (those its kind declares); a ValueError for an option no
    block of the stack declares, naming the kinds that do."""
    given = {key: value for key, value in options.items() if value is not None}
    for option in sorted(given):
        if not any(option in kind_options(k) for k in chosen):
            takers = [kind(letter).label for letter in _REGISTRY
                      if option in kind_options(kind(letter))]
            where = (f"applies to {families.join(takers)} blocks" if takers
                     else "is an option of no registered block kind")
            stack = "".join(k.letter for k in chosen)
            raise ValueError(f"{option} {where}, not to the {what} of blocks {stack!r}.")
    return [{key: value for key, value in given.items() if key in kind_options(k)}
            for k in chosen]


def init_block_stack(key: Array, input_size: int, dim: int, blocks: Any = "msm", *,
                     dtype: Any = jnp.float32, **options: Any) -> BlockStackParams:
    """Initialises a stack of blocks, one per letter of `blocks` (`letters()`), behind an
    input projection.

    Args:
        key: PRNG key; split into one for the stack's ends and one per block, in order.
        input_size: features of the stack's input.
        dim: D, the residual stream's features.
        blocks: a string (or sequence) of registered letters, e.g. "msm" or "lgl".
        dtype: parameter dtype.
        **options: each kind's init options (`BlockKind.init_options`), e.g. num_heads,
            conv_kernel; each goes to the blocks whose kind declares it.

    Returns:
        `BlockStackParams`: W_in small init, b_in = 0, final norm 0 (scale 1); each block as
        its kind initialises it at its place in the stack.

    Example:
        >>> p = init_block_stack(jax.random.key(0), 3, 64, "msl", num_heads=2)
        >>> block_stack(p, jnp.ones((2, 10, 3))).shape
        (2, 10, 64)
    """
    input_size = check_positive_int(input_size, "input_size")
    dim = check_positive_int(dim, "dim")
    chosen = kinds(blocks)
    routed = _route(options, chosen, lambda k: k.init_options, "init")
    key_in, *block_keys = jax.random.split(key, len(chosen) + 1)
    built = tuple(k.init(block_key, dim, block_index=index, num_blocks=len(chosen),
                         dtype=dtype, **given)
                  for index, (k, block_key, given) in enumerate(zip(chosen, block_keys,
                                                                    routed)))
    return BlockStackParams(blocks=built, **init_stack_ends(key_in, input_size, dim, dtype))


def stack_kinds(params: Any) -> tuple[BlockKind, ...]:
    """The kind of each block of a stack's params; a TypeError naming the block otherwise."""
    if not all(hasattr(params, f) for f in BlockStackParams._fields):
        raise TypeError(f"params must be BlockStackParams (fields "
                        f"{', '.join(BlockStackParams._fields)}), got {type(params).__name__}.")
    return tuple(kind_of(block, f"params.blocks[{index}]")
                 for index, block in enumerate(params.blocks))


def _modes(mode: Any, chosen: Sequence[BlockKind]) -> list[dict[str, str]]:
    """The `mode=` each block gets: `mode` (a form every kind with forms has) for each of
    them, or {letter: form} per kind; none for kinds with one form or without a mode."""
    with_forms = [k for k in chosen if k.modes]
    if mode is None:
        return [{} for _ in chosen]
    if not with_forms:
        several = [kind(letter).label for letter in _REGISTRY if kind(letter).modes]
        raise ValueError(f"mode applies to {families.join(several)} blocks, not to the blocks "
                         f"{''.join(k.letter for k in chosen)!r}, got mode={mode!r}.")
    if isinstance(mode, Mapping):
        for letter, form in mode.items():
            match = [k for k in with_forms if k.letter == letter]
            if not match:
                raise ValueError(f"mode[{letter!r}]: the stack has no block {letter!r} with "
                                 f"several forms (it has "
                                 f"{''.join(k.letter for k in with_forms) or 'none'}).")
            if form not in match[0].modes:
                raise ValueError(f"mode[{letter!r}] must be one of {list(match[0].modes)} for "
                                 f"{match[0].label} blocks, got {form!r}.")
        return [{"mode": mode[k.letter]} if k.letter in mode else {} for k in chosen]
    for k in with_forms:
        if mode not in k.modes:
            raise ValueError(f"mode must be one of {list(k.modes)} for {k.label} blocks, got "
                             f"{mode!r} (a mapping {{letter: mode}} sets each kind's).")
    return [{"mode": mode} if k.modes else {} for k in chosen]


def block_stack(params: Any, xs: Array, *, seq_lengths: Array | None = None,
                mode: str | Mapping[str, str] | None = None, initial_state: Any = None,
                return_state: bool = False, **options: Any) -> Any:
    """Runs a stack: x = xs @ W_in + b_in; each block in order; the final LayerNorm.

    Args:
        params: `BlockStackParams` (`init_block_stack`), or any params with its fields.
        xs: (batch..., T, input_size).
        seq_lengths: integer array of the batch shape, valid steps per sequence.
        mode: the form of every block whose cell has forms (`BlockKind.modes`), or a mapping
            {letter: form}; None: each kind's default.
        initial_state: one state per block to start from (this function's with
            `return_state`, `block_stack_step`'s or `initial_block_stack_state`); None: zeros.
        return_state: also return the blocks' states after each sequence's last valid step
            (the prefill of decoding: continue with `block_stack_step`).
        **options: the kinds' apply options (e.g. chunk_size), to the blocks that take them.

    Returns:
        (batch..., T, dim); exactly zero at padded steps. With `return_state`,
        `(outputs, state)`, state a tuple of the blocks' states.
    """
    chosen = stack_kinds(params)
    per_block = [dict(routed, **form) for routed, form in
                 zip(_route(options, chosen, lambda k: k.apply_options, "apply"),
                     _modes(mode, chosen))]

    def run_block(index: int, block: Any, x: Array, state: Any, return_state: bool) -> Any:
        return chosen[index].apply(block, x, seq_lengths=seq_lengths, initial_state=state,
                                   return_state=return_state, **per_block[index])

    return run_block_stack(params, xs, seq_lengths, run_block, initial_state=initial_state,
                           return_state=return_state, initial_block_state=_initial_block_state)


def _initial_block_state(index: int, block: Any, batch_shape: tuple[int, ...],
                         dtype: Any) -> Any:
    return kind_of(block, f"params.blocks[{index}]").initial_state(block, batch_shape, dtype)


def initial_block_stack_state(params: Any, batch_shape: tuple[int, ...],
                              dtype: Any = jnp.float32) -> tuple:
    """The state `block_stack` starts from when given none: each block's kind's
    `initial_state`, shaped and typed as the stack's final state for inputs
    (batch_shape..., T, input_size) of `dtype` (promoted with the params')."""
    stack_kinds(params)
    dtype = jnp.result_type(dtype, params.w_in, params.b_in)  # what the blocks receive
    return tuple(_initial_block_state(index, block, tuple(batch_shape), dtype)
                 for index, block in enumerate(params.blocks))


def block_stack_step(params: Any, x_t: Array, state: tuple) -> tuple[Array, tuple]:
    """One time step of a stack: `block_stack`'s output at step t, given its state after
    step t - 1 (each kind's `step`).

    Args:
        params: `BlockStackParams`.
        x_t: (batch..., input_size).
        state: one state per block, with the batch shape of `x_t`.

    Returns:
        (y_t (batch..., dim), the state after this step).
    """
    chosen = stack_kinds(params)
    return step_block_stack(
        params, x_t, state,
        lambda index, block, x, block_state: chosen[index].step(block, x, block_state),
        _initial_block_state)


def activation_floats(blocks: Any, dim: int, steps: int,
                      mode: str | Mapping[str, str] | None = None, **options: Any) -> float:
    """The floats a stack of `blocks` keeps for the backward per step and row, roughly (the
    runner's memory estimate): each kind's `activation_floats` in its form."""
    chosen = kinds(blocks)
    total = 0.0
    for k, form in zip(chosen, _modes(mode, chosen)):
        total += k.activation_floats(dim, steps, form.get("mode"), **options)
    return total
