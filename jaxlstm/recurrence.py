"""The time loop behind `jaxlstm.lstm`: the affine map and the elementwise step over a sequence.

Everything here works on one layout: time-major inputs xs (T, N, I) with one flat batch axis N,
and states (N, H). `jaxlstm.lstm` checks arguments and converts layouts; this module is about
doing the same computation fast.

Two things make it fast on XLA, and both follow from keeping the affine map apart from the
elementwise part of a step:

* **Chunks.** The scan runs over chunks of K steps. Each chunk computes the input projections of
  its K steps as one (K*N, I) @ (I, 4H) matmul, then runs its steps in a static loop where only
  h_{t-1} @ W_h remains. Projecting all T steps up front is slower on XLA:CPU (slicing one step
  out of a large buffer defeats the step's fusions), and per-step projection wastes the matmul.
* **Backward.** Autodiff through scan differentiates every matmul inside the loop. The custom
  VJP here runs a reverse loop that carries only the recurrent gradients (dh, dc) and differen-
  tiates just the elementwise step with `jax.vjp`; the one matmul left in the loop is
  dz_t @ W_h^T. (W_h may be dense or block-diagonal per head, given as its blocks: see
  `recurrent_product`.) The weight and input gradients are then large matmuls over a segment of steps
  at a time (a few hundred rows of steps x batch, where XLA:CPU's matmuls run fastest):

      dW_x += X^T dZ,   dW_h += H_prev^T dZ,   db += sum(dZ),   dX = dZ W_x^T

  With `remat_chunk`, the forward keeps only each segment's start state and the backward
  recomputes the segment before differentiating it.

Cell variants (`jaxlstm.variants`), the projection, recurrent dropout and zoneout all live in
the elementwise step, so every one of them gets the same fast backward. So does any family
whose step is elementwise after the two matmuls, whatever its state carries besides h.
Of a state the loop reads only h (the input to W_h) and, if the state has one, c (zoneout,
the gate record); the rest is a pytree it masks, carries and differentiates like them. The
step's own weights (peepholes, layer-norm gains, W_u, the projection W_p) get their gradients
inside the reverse loop from the same `jax.vjp`, accumulated in its carry; those are vectors
or one (H, H)-sized product per step. A variant whose pre-activations are not the plain sum
z_x + z_h + b (layer norm) hands the loop separate gradients for z_x and z_h.

The forward pass of the custom VJP is the same code as the plain forward: one code path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm import gates
from jaxlstm.cell import LSTMState
from jaxlstm.params import LSTMParams
from jaxlstm.validation import is_known
from jaxlstm.variants import VARIANTS, CellVariant

Array = jax.Array


class LoopOptions(NamedTuple):
    """Static options of the time loop (hashable, so they can be `nondiff_argnums`).

    `zoneout` holds the evaluation-time zoneout rates (h, c), applied as their expectation;
    training-time zoneout comes as per-step keep masks instead.
    """

    reverse: bool
    chunk: int
    return_gates: bool
    remat_chunk: int | None = None
    backward_chunk: int = 1
    grad_segment: int = 2**31 - 1
    cell: CellVariant = VARIANTS["lstm"]
    zoneout: tuple[float, float] = (0.0, 0.0)


class StepWeights(NamedTuple):
    """The weights the elementwise step uses: the variant's (with b, for a variant that is not
    additive) and the projection W_p (None without one)."""

    cell: Any
    w_p: Array | None


class LoopMasks(NamedTuple):
    """What the loop masks with, each None when unused.

    Attributes:
        lengths: int (N,), valid steps per sequence; later steps hold the state and output 0.
        rec_mask: recurrent dropout mask (N, R) on h_{t-1}, one per sequence.
        keep_h, keep_c: zoneout keep masks per step, (T, N, R) and (T, N, H).
        resets: bool (T, N), True where the state is reset to the loop's initial state
            before the step (in the loop's own order: a reversed loop's caller marks the last
            step of each segment); see `reset_before_steps`.
    """

    lengths: Array | None = None
    rec_mask: Array | None = None
    keep_h: Array | None = None
    keep_c: Array | None = None
    resets: Array | None = None


class StepInputs(NamedTuple):
    """Per-step inputs besides x_t: the time index, zoneout keep masks and the reset flag
    (each or None)."""

    t: Array
    keep_h: Array | None = None
    keep_c: Array | None = None
    reset: Array | None = None


def reset_before_steps(resets: Array, reverse: bool, lengths: Array | None) -> Array:
    """The loop's reset flags (T, N) from `resets` (T, N), True at the first step of each
    segment in time order: a forward loop resets before those steps; a reversed one reads
    each segment last step first, so it resets before a step whose successor starts a
    segment. Flags at padded steps (t >= length) are dropped, so the final state stays the
    state after the last valid step."""
    if reverse:
        resets = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])])
    if lengths is not None:
        resets = resets & (jnp.arange(resets.shape[0])[:, None] < lengths[None])
    return resets


def loop_resets(resets: Array | None, reverse: bool, lengths: Array | None) -> Array | None:
    """`reset_before_steps` for checked `resets` (batch..., T) with the batch flattened to the
    loop's N: (T, N), or None."""
    if resets is None:
        return None
    num_steps = resets.shape[-1]
    flat = jnp.moveaxis(resets.reshape((-1, num_steps)), 1, 0)
    return reset_before_steps(flat, bool(reverse), lengths)


def _reset(state: Any, reset: Array | None, reset_state: Any) -> Any:
    """The state a step starts from: `reset_state` where the step is flagged, else `state`."""
    if reset is None:
        return state
    return jax.tree.map(lambda s, s0: jnp.where(reset[:, None], s0, s), state, reset_state)


Step = Callable[[StepWeights, Any, LSTMState, StepInputs], tuple[LSTMState, Any]]


# Steps per scan iteration, chosen by the work in one step (batch rows N times hidden size H).
# Measured on a 2-core AVX-512 CPU (see README, Performance): when a step is tiny, the fixed
# cost of a scan iteration dominates and several steps per iteration win (S1 forward: 1.22 ms
# at 1, 0.99 at 4); when steps are larger the runtime is flat while compile time grows with
# every unrolled step (S2 forward+backward compiles in 0.51 s at 1, 0.59 at 4), so they stay 1-2.
_SMALL_STEP, _MEDIUM_STEP = 1024, 8192
# The backward computes weight gradients per segment of about this many rows (steps x batch):
# at S3 (N=64) 8-step segments took 136-156 ms against 167 ms for one matmul over all steps.
_GRAD_SEGMENT_ROWS = 512


def _divisor_near(num_steps: int, target: int) -> int:
    """A divisor of T in (target / 2, target] if there is one, else `target` (capped at T).

    Chunks that divide T avoid a shorter last chunk, which costs a copy of every stacked
    output and compiles the chunk's body a second time.
    """
    target = max(1, min(target, num_steps))
    for size in range(target, target // 2, -1):
        if num_steps % size == 0:
            return size
    return target


def auto_chunks(num_steps: int, batch_size: int, hidden_size: int) -> tuple[int, int, int]:
    """(forward chunk, backward chunk, gradient segment) in steps, for a problem of this size.

    Under `jax.export` with symbolic dimensions, a size may be unknown when the program is
    built: an unknown T gets one step per iteration (a chunk must divide T); an unknown batch
    is taken at its smallest, one row, the batch of streaming inference that exported models
    serve (the choice only moves speed, never results).
    """
    if not is_known(num_steps):
        return 1, 1, 1
    if not is_known(batch_size):
        batch_size = 1
    work = batch_size * hidden_size
    if work <= _SMALL_STEP:
        forward, backward = 4, 2
    elif work <= _MEDIUM_STEP:
        forward, backward = 2, 1
    else:
        forward, backward = 1, 1
    segment = _GRAD_SEGMENT_ROWS // max(1, batch_size)
    return (
        _divisor_near(num_steps, forward),
        _divisor_near(num_steps, backward),
        _divisor_near(num_steps, max(1, segment)),
    )


def _zoneout(new: Array, old: Array, keep: Array | None, rate: float) -> Array:
    """k * old + (1 - k) * new: k the training mask if given, else the rate (its expectation)."""
    if keep is not None:
        return jnp.where(keep, old, new)
    if rate:
        return rate * old + (1.0 - rate) * new
    return new


def masked_lstm_step(lengths: Array | None, options: LoopOptions) -> Step:
    """The elementwise part of one step, with projection, zoneout and variable-length masking.

    Returns `step(weights, z, state, inputs) -> (new_state, out)`. `z` is the step's
    pre-activation: z_x + z_h + b (N, G*H) for an additive variant, else the pair (z_x, z_h).
    `out` is h_t (and the gates if `options.return_gates`). At padded steps (t >= length) the
    state holds and `out` is zero. In a reversed loop this also reads each sequence's valid
    prefix backwards: its padded steps come first and leave the initial state untouched.
    """
    variant = options.cell
    rate_h, rate_c = options.zoneout

    def step(weights: StepWeights, z: Any, state: LSTMState,
             inputs: StepInputs) -> tuple[LSTMState, Any]:
        new_state, step_gates = variant.pointwise(weights.cell, z, state)
        h_t = new_state.h
        if weights.w_p is not None:
            h_t = h_t @ weights.w_p  # LSTMP: the projected h is the output and is fed back
        new_state = new_state._replace(h=_zoneout(h_t, state.h, inputs.keep_h, rate_h))
        if "c" in new_state._fields:  # a state may be h alone, without a cell state
            new_state = new_state._replace(
                c=_zoneout(new_state.c, state.c, inputs.keep_c, rate_c))
        if options.return_gates:
            out = (new_state.h, step_gates._replace(c=new_state.c))
        else:
            out = new_state.h
        if lengths is not None:
            valid = (inputs.t < lengths)[:, None]
            new_state = jax.tree.map(lambda n, o: jnp.where(valid, n, o), new_state, state)
            out = jax.tree.map(lambda a: jnp.where(valid, a, jnp.zeros_like(a)), out)
        return new_state, out

    return step


def _stack(items: list[Any]) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *items)


def scan_in_chunks(
    chunk_fn: Callable[[Any, Any], tuple[Any, Any]],
    carry: Any,
    xs: Any,
    chunk_xs: Any = None,
    *,
    chunk: int,
    reverse: bool,
) -> tuple[Any, Any, Any]:
    """`lax.scan` over chunks of `chunk` steps along the leading (time) axis of `xs`.

    `chunk_fn(carry, (xs_chunk, chunk_x)) -> (carry, (ys_chunk, chunk_y))` handles one chunk of
    k <= chunk steps: `xs_chunk` and `ys_chunk` have a leading axis of k steps in time order
    (whatever the direction); `chunk_x` and `chunk_y` belong to the chunk as a whole. When T is
    not a multiple of `chunk`, the last T % chunk steps form one extra, shorter chunk, run after
    the scan (or before it when `reverse`, since it holds the last steps in time).

    Args:
        chunk_fn: the chunk body.
        carry: the initial carry.
        xs: per-step inputs, leading axis T.
        chunk_xs: per-chunk inputs, leading axis ceil(T / chunk), in time order; or None.
        chunk: steps per chunk.
        reverse: run the chunks (and, inside `chunk_fn`, the steps) last to first.

    Returns:
        `(carry, ys, chunk_ys)`: `ys` has leading axis T, `chunk_ys` leading axis
        ceil(T / chunk), both in time order.
    """
    num_steps = jax.tree.leaves(xs)[0].shape[0]
    num_chunks, tail = divmod(num_steps, chunk)
    split = num_chunks * chunk

    def scan_main(c: Any) -> tuple[Any, Any, Any]:
        if chunk == 1:  # whole axes, no slice: also what a T only known at run time needs
            main_xs = (jax.tree.map(lambda a: jax.lax.expand_dims(a, (1,)), xs), chunk_xs)
        else:
            main_xs = (
                jax.tree.map(lambda a: a[:split].reshape((num_chunks, chunk) + a.shape[1:]),
                             xs),
                jax.tree.map(lambda a: a[:num_chunks], chunk_xs),
            )
        c, (ys, chunk_ys) = jax.lax.scan(chunk_fn, c, main_xs, reverse=reverse)
        return c, jax.tree.map(lambda a: a.reshape((split,) + a.shape[2:]) if chunk != 1
                               else jax.lax.squeeze(a, (1,)), ys), chunk_ys

    if not tail:
        return scan_main(carry)

    def run_tail(c: Any) -> tuple[Any, Any, Any]:
        tail_xs = jax.tree.map(lambda a: a[split:], xs)
        c, (ys, chunk_y) = chunk_fn(c, (tail_xs, jax.tree.map(lambda a: a[num_chunks], chunk_xs)))
        return c, ys, jax.tree.map(lambda a: a[None], chunk_y)

    if not num_chunks:
        return run_tail(carry)
    if reverse:
        carry, ys_tail, chunk_ys_tail = run_tail(carry)
        carry, ys_main, chunk_ys_main = scan_main(carry)
    else:
        carry, ys_main, chunk_ys_main = scan_main(carry)
        carry, ys_tail, chunk_ys_tail = run_tail(carry)

    def join(main: Any, tail: Any) -> Any:
        return jax.tree.map(lambda m, t: jnp.concatenate([m, t]), main, tail)

    return carry, join(ys_main, ys_tail), join(chunk_ys_main, chunk_ys_tail)


def _at(tree: Any, j: int) -> Any:
    return jax.tree.map(lambda a: a[j], tree)


def _recurrent_input(h: Array, rec_mask: Array | None) -> Array:
    """r_t = h_{t-1} * m: the variational dropout mask (one per sequence) on the recurrence."""
    return h if rec_mask is None else h * rec_mask


# A recurrent weight w_h is either dense, (R, G*H), or block-diagonal per head and given as its
# blocks, (heads, d, G, d) with H = R = heads * d (the sLSTM's R): block k maps unit d of head
# k's r_{t-1} to unit e of head k's gate g, i.e. column g * H + k * d + e of the dense
# embedding. The blocks cost 1/heads of the dense product's FLOPs. The three places the loop
# touches w_h (the forward's r_{t-1} @ W_h, the reverse loop's dz_h @ W_h^T, dW_h after it) go
# through the three functions below, which run a dense w_h exactly as before.
#
# The per-head products are one dot_general batched over the heads, with the activations as
# its first operand and the head axis moved back after it, z keeping the gate-major layout
# (..., G, heads, d) that the elementwise steps split. Measured on the 2-core CPU (a scan of
# T steps doing only the product and a tanh, min of 45 calls, ms, S2 = (N 32, H 128, T 100),
# S3 = (64, 256, 200), 4 heads):
#   forward   dense 2.01 / 40.4, this 0.96 / 12.9, jnp.einsum "nkd,kdge->ngke" 1.37 / 22.5
#             (it puts the weight first and transposes a (heads, d, N) result), head-major z
#             without the transpose 1.78 / 21.6 (the consumer then reads strided gates), one
#             dot per head + stack 1.25 / 24.5;
#   reverse   dense 3.29 / 47.6, this 2.19 / 28.8, jnp.einsum "ngke,kdge->nkd" 2.28 / 50.9,
#             one dot per head on pre-transposed blocks 2.20 / 24.3;
#   dW_h over a gradient segment (16 / 8 steps): dense 0.36 / 1.12, this 0.21 / 0.59, the
#   dense product's diagonal blocks 0.36 / 0.84.


def _per_head(w_h: Array) -> bool:
    return w_h.ndim == 4


def recurrent_product(r: Array, w_h: Array) -> Array:
    """z_h = r_{t-1} @ W_h for a dense or a per-head block-diagonal W_h.

        dense:     z_h = r @ W_h
        per head:  z_h[..., g, k, e] = sum_d r[..., k, d] W_h[k, d, g, e]

    Args:
        r: the recurrent input h_{t-1} (times the dropout mask), (..., R).
        w_h: (R, G*H), or per-head blocks (heads, d, G, d) with R = H = heads * d.

    Returns:
        z_h, (..., G*H), gate-major: gate g's H units are columns g*H to (g+1)*H.
    """
    if not _per_head(w_h):
        return gates.recurrent_projection(r, w_h)
    heads, d, num_gates, _ = w_h.shape
    batch = r.shape[:-1]
    r_heads = r.reshape(batch + (heads, d))
    ndim = r_heads.ndim
    z = jax.lax.dot_general(r_heads, w_h, (((ndim - 1,), (1,)), ((ndim - 2,), (0,))))
    # (heads, ..., G, d) -> (..., G, heads, d)
    return jnp.moveaxis(z, 0, -2).reshape(batch + (num_gates * heads * d,))


def recurrent_input_grad(d_zh: Array, w_h: Array, w_h_t: Array | None) -> Array:
    """dr_{t-1} = dz_h @ W_h^T, the recurrent input's gradient in the reverse loop.

        dense:     dr = dz_h @ W_h^T      (`w_h_t`, W_h^T transposed once outside the loop)
        per head:  dr[..., k, d] = sum_{g, e} dz_h[..., g, k, e] W_h[k, d, g, e]

    Args:
        d_zh: (..., G*H), gate-major.
        w_h: the recurrent weight, dense or per-head blocks (see `recurrent_product`).
        w_h_t: W_h^T for a dense w_h; unused for blocks.

    Returns:
        (..., R).
    """
    if not _per_head(w_h):
        return d_zh @ w_h_t
    heads, d, num_gates, _ = w_h.shape
    batch = d_zh.shape[:-1]
    dz = d_zh.reshape(batch + (num_gates, heads, d))
    ndim = dz.ndim
    dr = jax.lax.dot_general(dz, w_h, (((ndim - 3, ndim - 1), (2, 3)), ((ndim - 2,), (0,))))
    return jnp.moveaxis(dr, 0, -2).reshape(batch + (heads * d,))


def recurrent_weight_grad(prev_r: Array, d_zh: Array, w_h: Array, acc: Any) -> Array:
    """dW_h = R_prev^T dZ_h over a segment's steps, in w_h's own shape.

        dense:     dW_h = sum_{t, n} r[t, n]^T dz_h[t, n]                       (R, G*H)
        per head:  dW_h[k, d, g, e] = sum_{t, n} r[t, n, k, d] dz_h[t, n, g, k, e]
                   (only the blocks: the zeros between heads get no gradient)

    Args:
        prev_r: the recurrent inputs h_{t-1} * m, (T, N, R).
        d_zh: (T, N, G*H), gate-major.
        w_h: the recurrent weight, dense or per-head blocks (see `recurrent_product`).
        acc: the accumulation dtype.

    Returns:
        (R, G*H), or (heads, d, G, d) for blocks.
    """
    if not _per_head(w_h):
        return jnp.einsum("tnh,tng->hg", prev_r, d_zh, preferred_element_type=acc)
    heads, d, num_gates, _ = w_h.shape
    r_heads = prev_r.reshape(prev_r.shape[:-1] + (heads, d))
    dz = d_zh.reshape(d_zh.shape[:-1] + (num_gates, heads, d))
    return jax.lax.dot_general(r_heads, dz, (((0, 1), (0, 1)), ((2,), (3,))),
                               preferred_element_type=acc)


def _forward(params: LSTMParams, xs, per_step, state0, masks: LoopMasks,
             options: LoopOptions, keep_residuals: bool, reset_state: Any = None):
    """Runs the loop over xs (T, N, I) with per-step `StepInputs` (leading axis T).

    Returns `(final_state, outs, residuals)`; residuals (for the backward pass) are the
    pre-activations z of every step (an additive variant's as its G gate blocks, (T, N, H)
    each) and the states each step starts from (after a reset), or None. A step flagged in `per_step.reset` starts from `reset_state` (default `state0`).
    """
    reset_state = state0 if reset_state is None else reset_state
    step = masked_lstm_step(masks.lengths, options)
    weights = step_weights(params, options)
    additive = options.cell.additive

    def chunk_fn(state, inputs):
        (x_chunk, in_chunk), _ = inputs
        # All k input projections: one matmul. Additive cells take the bias here as well.
        zx = (gates.input_projection(x_chunk, params.w_x, params.b) if additive
              else x_chunk @ params.w_x)
        k = x_chunk.shape[0]
        outs, residuals = [None] * k, [None] * k
        for j in reversed(range(k)) if options.reverse else range(k):
            state = _reset(state, None if in_chunk.reset is None else in_chunk.reset[j],
                           reset_state)
            r = _recurrent_input(state.h, masks.rec_mask)
            zh = recurrent_product(r, params.w_h)
            z = zx[j] + zh if additive else (zx[j], zh)
            # Kept per gate block: in the reverse loop, a fusion that reads two gates of one
            # row sliced out of the stored (T, N, G*H) z (the sLSTM's stabiliser needs i~ and
            # f~ together) compiled to slow, unvectorised code on XLA:CPU (exp(i~ - m - f~):
            # 19 us against 2.7 from two separate slices). Per-gate residuals took the sLSTM's
            # S2 forward+backward from 1.8x to 1.3x the LSTM's, the LSTM's unchanged.
            residuals[j] = (_gate_blocks(z, options.cell.num_gates) if additive else z, state)
            state, outs[j] = step(weights, z, state, _at(in_chunk, j))
        return state, ((_stack(outs), _stack(residuals) if keep_residuals else None), None)

    final_state, (outs, residuals), _ = scan_in_chunks(
        chunk_fn, state0, (xs, per_step), chunk=options.chunk, reverse=options.reverse
    )
    return final_state, outs, residuals


def _forward_in_segments(params: LSTMParams, xs, per_step, state0, masks: LoopMasks,
                         options: LoopOptions, checkpoint: bool):
    """The forward in segments of `options.remat_chunk` steps, keeping each segment's start.

    Returns `(final_state, outs, starts)`, `starts` the state entering each segment (in time
    order of the segments). With `checkpoint`, each segment is a `jax.checkpoint`, so plain
    autodiff also stores only the segment starts and recomputes the rest.
    """

    def segment_fn(state, inputs):
        (x_seg, in_seg), _ = inputs
        new_state, outs, _ = _forward(params, x_seg, in_seg, state, masks, options, False,
                                      reset_state=state0)
        return new_state, (outs, state)

    if checkpoint:
        segment_fn = jax.checkpoint(segment_fn)
    return scan_in_chunks(
        segment_fn, state0, (xs, per_step), chunk=options.remat_chunk, reverse=options.reverse
    )


def _gate_blocks(z: Array, num_gates: int) -> tuple[Array, ...]:
    """z (..., G*H) as its G gate blocks (..., H), each stored and read back on its own."""
    return tuple(jnp.split(z, num_gates, axis=-1))


def _joined(blocks: tuple[Array, ...]) -> Array:
    """The gate blocks side by side again, (..., G*H)."""
    return jnp.concatenate(blocks, axis=-1)


def _backward(params: LSTMParams, residuals, d_outs, per_step, carry, masks: LoopMasks,
              options: LoopOptions):
    """The reverse loop over one segment.

    Carries the recurrent gradients (d_state), the step weights' gradients and the reset
    state's (d_reset: what flagged steps took from the initial state); returns
    `((d_state0, d_weights, d_reset), dzs)`, dzs the pre-activations' gradients: for an
    additive variant its G gate blocks (T, N, H) each, as the residuals keep z (the caller
    joins them), else a pair (T, N, G*H) for z_x and z_h. Only the elementwise step is
    differentiated (with `jax.vjp`); the one matmul left in the loop is dz_h @ W_h^T.
    """
    step = masked_lstm_step(masks.lengths, options)
    weights = step_weights(params, options)
    additive = options.cell.additive
    w_h_t = None if _per_head(params.w_h) else params.w_h.T

    def chunk_fn(carry, inputs):
        d_state, d_weights, d_reset = carry
        ((z_chunk, prev_chunk), d_out_chunk, in_chunk), _ = inputs
        k = jax.tree.leaves(prev_chunk)[0].shape[0]
        dzs = [None] * k
        for j in range(k) if options.reverse else reversed(range(k)):
            z, prev, d_out, step_in = _at((z_chunk, prev_chunk, d_out_chunk, in_chunk), j)
            _, step_vjp = jax.vjp(
                lambda w, z, s, i=step_in: step(w, _joined(z) if additive else z, s, i),
                weights, z, prev)
            d_w, dzs[j], d_prev = step_vjp((d_state, d_out))
            d_weights = jax.tree.map(lambda acc, g: acc + _accumulate(g), d_weights, d_w)
            d_zh = _joined(dzs[j]) if additive else dzs[j][1]
            d_r = _recurrent_input(recurrent_input_grad(d_zh, params.w_h, w_h_t),
                                   masks.rec_mask)
            d_state = d_prev._replace(h=d_prev.h + d_r)
            if step_in.reset is not None:  # a reset step read the initial state, not h_{t-1}
                keep = step_in.reset[:, None]
                d_reset = jax.tree.map(lambda acc, g: acc + jnp.where(keep, g, 0).astype(
                    acc.dtype), d_reset, d_state)
                d_state = jax.tree.map(lambda g: jnp.where(keep, jnp.zeros_like(g), g),
                                       d_state)
        return (d_state, d_weights, d_reset), (_stack(dzs), None)

    carry, dzs, _ = scan_in_chunks(
        chunk_fn, carry, (residuals, d_outs, per_step),
        chunk=options.backward_chunk, reverse=not options.reverse,
    )
    return carry, dzs


def _accumulate(x: Array) -> Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _weight_grads(xs, prev_h, dzs, rec_mask, additive: bool, w_h: Array):
    """dW_x = X^T dZ_x, dW_h = R^T dZ_h (R the recurrent inputs h_{t-1} * m) and, for an
    additive variant, db = sum dZ, over the segment's steps; all in at least float32. dW_h has
    w_h's shape (dense or per-head blocks)."""
    d_zx, d_zh = (dzs, dzs) if additive else dzs
    acc = jnp.promote_types(d_zx.dtype, jnp.float32)
    if rec_mask is not None:
        prev_h = prev_h * rec_mask[None]
    return (
        jnp.einsum("tni,tng->ig", xs, d_zx, preferred_element_type=acc),
        recurrent_weight_grad(prev_h, d_zh, w_h, acc),
        jnp.sum(_accumulate(d_zx), axis=(0, 1)) if additive else None,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def lstm_loop(params: LSTMParams, xs: Array, state0: Any, masks: LoopMasks,
              options: LoopOptions):
    """The LSTM over a sequence, time-major with one batch axis, with the fast backward.

    Args:
        params: `LSTMParams` in the computation dtype: w_x (I, G*H), w_h (R, G*H) or, for a
            family with a block-diagonal recurrent matrix, its per-head blocks
            (heads, d, G, d) with R = H = heads * d (see `recurrent_product`; the gradient
            comes back in the same shape), b (G*H,), the variant's weights `cell` and the
            projection `w_p` (H, R) or None.
        xs: inputs, (T, N, I).
        state0: the initial state, `LSTMState` with h (N, R) and c (N, H), or the state of
            the cell in `options.cell` (a NamedTuple with a field h, a field c unless the cell
            has no cell state, and whatever else it carries).
        masks: `LoopMasks`: lengths, recurrent dropout and zoneout masks, each or None.
        options: `LoopOptions` (with the cell).

    Returns:
        `(final_state, outs)`: outs is hs (T, N, R), or `(hs, gates)` with return_gates.
    """
    return lstm_loop_autodiff(params, xs, state0, masks, options._replace(remat_chunk=None))


def step_weights(params: LSTMParams, options: LoopOptions) -> StepWeights:
    """The step's weights; a variant that is not additive also gets the bias b."""
    cell = params.cell if options.cell.additive else (params.cell, params.b)
    return StepWeights(cell, params.w_p)


def _per_step(xs: Array, masks: LoopMasks) -> StepInputs:
    # The step numbers as an iota of xs's own time axis (jax2onnx gives jnp.arange of a
    # symbolic T a length of its own, which the scan then refuses to pair with xs).
    steps = jax.lax.broadcasted_iota(jnp.int32, xs.shape[:1], 0)
    return StepInputs(steps, masks.keep_h, masks.keep_c, masks.resets)


def _run_forward(params: LSTMParams, xs, state0, masks: LoopMasks, options: LoopOptions, *,
                 fused: bool):
    """The forward over all steps; returns `(final_state, outs, saved)`.

    For the fused backward (`fused`), `saved` is what it needs: every step's residuals, or
    with remat each segment's start state. For autodiff nothing is saved by hand, and with
    remat each segment is a `jax.checkpoint` instead.
    """
    args = (params, xs, _per_step(xs, masks), state0, masks, options)
    if options.remat_chunk:
        return _forward_in_segments(*args, checkpoint=not fused)
    return _forward(*args, fused)


def _lstm_loop_fwd(params, xs, state0, masks, options):
    final_state, outs, saved = _run_forward(params, xs, state0, masks, options, fused=True)
    # With resets, the backward recomputes segments from the initial state too.
    return (final_state, outs), (params, xs, masks, saved,
                                 state0 if masks.resets is not None else None)


def _zeros_accumulator(tree: Any) -> Any:
    return jax.tree.map(lambda a: jnp.zeros(a.shape, _accumulate(a).dtype), tree)


def _lstm_loop_bwd(options, residuals, cotangents):
    params, xs, masks, saved, state0 = residuals
    d_final_state, d_outs = cotangents
    additive = options.cell.additive
    per_step = _per_step(xs, masks)
    if options.remat_chunk:
        segment, per_step_saved, per_segment = options.remat_chunk, None, saved
    else:
        segment, per_step_saved, per_segment = options.grad_segment, saved, None

    # Segment by segment, last first: take the segment's residuals (or, with remat, recompute
    # them from its saved start state), run its reverse loop, and add its share of the weight
    # gradients. Segments of a few thousand rows keep every matmul in XLA's efficient range;
    # one matmul over all T * N rows is slower, and storing dZ for all steps costs memory.
    def segment_fn(carry, inputs):
        d_state, d_weights, grads, d_reset = carry
        (x_seg, in_seg, d_out_seg, seg_residuals), start = inputs
        if seg_residuals is None:
            _, _, seg_residuals = _forward(params, x_seg, in_seg, start, masks, options, True,
                                           reset_state=state0)
        (d_state, d_weights, d_reset), dzs = _backward(
            params, seg_residuals, d_out_seg, in_seg, (d_state, d_weights, d_reset), masks,
            options)
        if additive:
            dzs = _joined(dzs)
        seg_grads = _weight_grads(x_seg, seg_residuals[1].h, dzs, masks.rec_mask, additive,
                                  params.w_h)
        grads = jax.tree.map(jnp.add, grads, seg_grads)
        d_zx = dzs if additive else dzs[0]
        return (d_state, d_weights, grads, d_reset), (d_zx @ params.w_x.T, None)

    zero_grads = _zeros_accumulator((params.w_x, params.w_h, params.b if additive else None))
    d_reset = None if masks.resets is None else _zeros_accumulator(d_final_state)
    carry = (d_final_state, _zeros_accumulator(step_weights(params, options)), zero_grads,
             d_reset)
    (d_state0, d_weights, (d_w_x, d_w_h, d_b), d_reset), d_xs, _ = scan_in_chunks(
        segment_fn, carry, (xs, per_step, d_outs, per_step_saved), per_segment,
        chunk=segment, reverse=not options.reverse,
    )
    if d_reset is not None:
        d_state0 = jax.tree.map(lambda g, r: (g + r).astype(g.dtype), d_state0, d_reset)
    d_cell = d_weights.cell
    if not additive:
        d_cell, d_b = d_cell
    d_params = jax.tree.map(lambda g, p: g.astype(p.dtype),
                            LSTMParams(d_w_x, d_w_h, d_b, d_cell, d_weights.w_p), params)
    rec_mask = masks.rec_mask
    d_masks = LoopMasks(rec_mask=None if rec_mask is None else jnp.zeros_like(rec_mask))
    return d_params, d_xs, d_state0, d_masks


lstm_loop.defvjp(_lstm_loop_fwd, _lstm_loop_bwd)


def lstm_loop_autodiff(params: LSTMParams, xs: Array, state0: Any, masks: LoopMasks,
                       options: LoopOptions):
    """`lstm_loop` without the custom VJP: JAX differentiates the scan itself.

    Slower backward, but it supports forward-mode differentiation (`jax.jvp`, `jax.jacfwd`),
    which a custom VJP does not. With `options.remat_chunk`, segments are `jax.checkpoint`ed.
    """
    final_state, outs, _ = _run_forward(params, xs, state0, masks, options, fused=False)
    return final_state, outs
