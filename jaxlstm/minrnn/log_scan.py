"""The linear recurrence h_t = a_t * h_{t-1} + b_t over time, step by step or in parallel.

Both min cells (`jaxlstm.minrnn.min_gates`) reduce to this recurrence once their gates are
computed from the inputs, so one loop serves both: the cell turns pre-activations into
coefficients (a_t, b_t) or (log a_t, log b_t), and this module turns coefficients into states.

All arrays here are time-major: coefficients (T, batch..., H), states (batch..., H), with any
number of batch dimensions. `reverse=True` runs from step T-1 down to step 0 and leaves each
h_t at its own position t.

Sequential (`linear_recurrence`): a `jax.lax.scan` of `recurrence_step`, T dependent steps.

Parallel (`log_linear_recurrence`): the map h -> a h + b composes associatively,

        (a_1, b_1) then (a_2, b_2)  =  (a_1 a_2, a_2 b_1 + b_2),

so `jax.lax.associative_scan` computes every prefix in O(log T) sequential depth. With
a_t, b_t > 0 (true of both min cells) it runs on logarithms, where products are sums and sums
are `logaddexp`, which neither overflows nor underflows over long sequences:

        (la_1, lb_1) o (la_2, lb_2) = (la_1 + la_2, logaddexp(lb_1 + la_2, lb_2)).

The prefix of step t is (A_t, B_t) = (sum_{s<=t} log a_s, log of the state reached from h = 0),
so h_t = exp(A_t) * h_0 + exp(B_t). The initial state enters linearly and may be negative or
zero (no log h_0 is taken).

Segment resets (packed sequences): at a step that starts a segment the recurrence reads h_0
instead of h_{t-1}, h_t = a_t h_0 + b_t. Step by step that is the coefficients (0, b_t + a_t h_0)
(`reset_coefficients`). In log space b_t + a_t h_0 may be negative, so the parallel scan
instead carries a flag with each element: an interval containing a reset is the constant map
h -> exp(A) h_0 + exp(B), with (A, B) taken from its last reset on, and composing anything
before it changes nothing:

        (la_1, lb_1, r_1) o (la_2, lb_2, r_2) = (la_2, lb_2, True)                  if r_2
                                              = (la_1 + la_2, logaddexp(lb_1 + la_2, lb_2), r_1)
                                                                                   otherwise,

and h_t = exp(A_t) * h_0 + exp(B_t) as before: one scan, and no log-weight is subtracted from
a sum it was added to, so the other entries keep their precision.

Gradients are JAX's autodiff of both loops. Measured on the shared 2-core CPU of
/work/shared/PERFORMANCE.md (noisy: load 4-7 from other jobs; minLSTM, B=8, I=H=64, float32,
median ms, "f+b" = gradient of sum(hs) w.r.t. params and xs; XLA temp memory of the f+b
program):

    T       parallel fwd / f+b     sequential fwd / f+b    temp MB f+b (par / seq)
    1024      86 /  227               3.5 /   29              69 /  30
    4096     287 /  579                46 /  140             275 / 120
    16384   2491 / 5092               384 / 1099            1100 / 480

On a CPU the sequential scan wins by 2-25x: a step is one fused multiply-add per unit and
memory-bound, while the parallel scan does ~2x the combines, each with an exp and a log1p,
over O(log T) strided passes. The parallel form is for accelerators, where its O(log T) depth
matters (not measured here: no GPU). Autodiff's backward costs about one more forward in
either mode; a hand-written VJP (a reverse associative scan for
delta_t = dL/dh_t + a_{t+1} delta_{t+1}) would do the same amount of work, so it was not added.

A later run with `jaxlstm.lstm` beside them (load 4; ms forward / f+b):

    T       parallel         sequential       jaxlstm.lstm (same I, H)
    256       14 /   24       1.1 /   4.2       1.4 /   5.7
    1024      67 /  131       2.9 /  19         5.5 /  30
    4096     359 /  600        52 / 171          23 / 129
    16384   1173 / 2174       184 / 542         104 / 454

A two-level chunked scan (C in-chunk steps for all chunks at once, then T/C carries) was
tried and removed: 1.2-2.5x slower than sequential at every T here. The sequential recurrence
alone (a, b given) takes ~0.5-0.9 us a step, bound by memory bandwidth, not by the loop; most
of a min cell's time on a CPU is the (T, B, 3H) pre-activations and coefficients written out
and read back, which is also why `jaxlstm.lstm`, computing its gates step by step while they
are in cache, beats minLSTM at T >= 4096 here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

LOG_ZERO = -1e30
"""log b_t at padded steps: a finite stand-in for log 0 = -inf, so that `logaddexp` and its
gradient stay finite (exp(LOG_ZERO) is exactly 0 in float32)."""


def recurrence_step(a_t: Array, b_t: Array, h_prev: Array) -> Array:
    """h_t = a_t * h_{t-1} + b_t: one step of the recurrence. All shapes (..., H)."""
    return a_t * h_prev + b_t


def mask_coefficients(a: Array, b: Array, valid: Array | None) -> tuple[Array, Array]:
    """(a_t, b_t) = (1, 0) where `valid` is False: a padded step leaves the state unchanged.

    Args:
        a, b: coefficients, (T, batch..., H).
        valid: bool (T, batch..., 1), or None (no padding).
    """
    if valid is None:
        return a, b
    return jnp.where(valid, a, 1.0), jnp.where(valid, b, 0.0)


def mask_log_coefficients(log_a: Array, log_b: Array,
                          valid: Array | None) -> tuple[Array, Array]:
    """(log a_t, log b_t) = (0, LOG_ZERO) where `valid` is False: the log-space `mask_coefficients`.

    The `where` selects, so the padded steps' own values get a zero gradient.
    """
    if valid is None:
        return log_a, log_b
    return jnp.where(valid, log_a, 0.0), jnp.where(valid, log_b, LOG_ZERO)


def reset_steps(resets: Array, valid: Array | None, reverse: bool) -> Array:
    """Where the recurrence reads h_0 instead of h_{t-1}, as it runs, from segment starts.

    `resets[t]` marks the first step of a segment in the sequence's own time order. Run
    forwards, the state is h_0 before each such step; run backwards, before the last step of
    each segment, i.e. before step t where resets[t + 1] (t < T - 1). Resets at padded steps
    (not `valid`) are dropped, so that the state held past a sequence's end stays held.

    Args:
        resets: bool (T, batch..., 1).
        valid: bool (T, batch..., 1), or None (no padding).
        reverse: whether the recurrence runs from step T-1 down to 0.

    Returns:
        bool (T, batch..., 1).
    """
    starts = resets if valid is None else resets & valid
    if reverse:
        starts = jnp.concatenate([starts[1:], jnp.zeros_like(starts[:1])])
    return starts


def reset_coefficients(a: Array, b: Array, h0: Array,
                       starts: Array | None) -> tuple[Array, Array]:
    """(a_t, b_t) = (0, b_t + a_t h_0) where `starts`: the step continues from h_0, not h_{t-1}.

    Args:
        a, b: coefficients, (T, batch..., H).
        h0: initial state, (batch..., H).
        starts: bool (T, batch..., 1) from `reset_steps`, or None (no resets).
    """
    if starts is None:
        return a, b
    return jnp.where(starts, 0.0, a), jnp.where(starts, b + a * h0[None], b)


def linear_recurrence(a: Array, b: Array, h0: Array, *,
                      reverse: bool = False) -> tuple[Array, Array]:
    """h_t = a_t * h_{t-1} + b_t by `jax.lax.scan`, one step after another.

    Args:
        a, b: coefficients, (T, batch..., H).
        h0: initial state, (batch..., H).
        reverse: run from step T-1 down to 0.

    Returns:
        `(hs, h_last)`: every state (T, batch..., H) at its own position, and the state after
        the last step run (h_{T-1}, or h_0 if `reverse`; `h0` if T = 0).
    """

    def step(h_prev: Array, coefficients: tuple[Array, Array]) -> tuple[Array, Array]:
        h_t = recurrence_step(*coefficients, h_prev)
        return h_t, h_t

    h_last, hs = jax.lax.scan(step, h0, (a, b), reverse=reverse)
    return hs, h_last


def _compose_log(earlier: tuple[Array, Array],
                 later: tuple[Array, Array]) -> tuple[Array, Array]:
    (log_a1, log_b1), (log_a2, log_b2) = earlier, later
    return log_a1 + log_a2, jnp.logaddexp(log_b1 + log_a2, log_b2)


def _compose_log_with_resets(earlier: tuple[Array, Array, Array],
                             later: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
    log_a, log_b = _compose_log(earlier[:2], later[:2])
    log_a2, log_b2, reset2 = later
    return (jnp.where(reset2, log_a2, log_a), jnp.where(reset2, log_b2, log_b),
            earlier[2] | reset2)


def log_linear_recurrence(log_a: Array, log_b: Array, h0: Array, *,
                          reverse: bool = False,
                          starts: Array | None = None) -> tuple[Array, Array]:
    """h_t = a_t * h_{t-1} + b_t from (log a, log b) by a parallel `jax.lax.associative_scan`.

        (A_t, B_t) = prefix of (log a_s, log b_s) under (la_1 + la_2, logaddexp(lb_1 + la_2, lb_2))
        h_t        = exp(A_t) * h_0 + exp(B_t)

    Args:
        log_a: log a_t, (T, batch..., H).
        log_b: log b_t, (T, batch..., H); b_t > 0 (LOG_ZERO stands for b_t = 0).
        h0: initial state, (batch..., H), any real values.
        reverse: run from step T-1 down to 0.
        starts: bool (T, batch..., 1) from `reset_steps`: steps that read h_0 instead of
            h_{t-1} (segment resets, see the module docstring); None for none.

    Returns:
        `(hs, h_last)` as `linear_recurrence`.
    """
    if log_a.shape[0] == 0:
        return jnp.zeros(log_b.shape, h0.dtype), h0
    if starts is None:
        cum_log_a, log_h = jax.lax.associative_scan(_compose_log, (log_a, log_b), axis=0,
                                                    reverse=reverse)
    else:
        cum_log_a, log_h, _ = jax.lax.associative_scan(
            _compose_log_with_resets, (log_a, log_b, starts), axis=0, reverse=reverse)
    hs = jnp.exp(cum_log_a) * h0[None] + jnp.exp(log_h)
    return hs, hs[0] if reverse else hs[-1]
