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
  dz_t @ W_h^T. The weight and input gradients are then large matmuls over a segment of steps
  at a time (a few hundred rows of steps x batch, where XLA:CPU's matmuls run fastest):

      dW_x += X^T dZ,   dW_h += H_prev^T dZ,   db += sum(dZ),   dX = dZ W_x^T

  With `remat_chunk`, the forward keeps only each segment's start state and the backward
  recomputes the segment before differentiating it.

The forward pass of the custom VJP is the same code as the plain forward: one code path.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm import gates
from jaxlstm.cell import LSTMState, lstm_pointwise

Array = jax.Array
Step = Callable[[Array, LSTMState, Array], tuple[LSTMState, Any]]


class LoopOptions(NamedTuple):
    """Static options of the time loop (hashable, so they can be `nondiff_argnums`)."""

    reverse: bool
    chunk: int
    return_gates: bool
    remat_chunk: int | None = None
    backward_chunk: int = 1
    grad_segment: int = 2**31 - 1


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
    """(forward chunk, backward chunk, gradient segment) in steps, for a problem of this size."""
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


def masked_lstm_step(lengths: Array | None, return_gates: bool) -> Step:
    """The elementwise part of one step, with variable-length masking.

    Returns `step(z, state, t) -> (new_state, out)` where `z` is the step's pre-activation
    (N, 4H), `out` is h_t (and the gates if `return_gates`). At padded steps (t >= length) the
    state holds and `out` is zero. In a reversed loop this also reads each sequence's valid
    prefix backwards: its padded steps come first and leave the initial state untouched.
    """

    def step(z: Array, state: LSTMState, t: Array) -> tuple[LSTMState, Any]:
        new_state, step_gates = lstm_pointwise(z, state.c)
        out = (new_state.h, step_gates) if return_gates else new_state.h
        if lengths is not None:
            valid = (t < lengths)[:, None]
            new_state = LSTMState(*(jnp.where(valid, n, o) for n, o in zip(new_state, state)))
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
        main_xs = (
            jax.tree.map(lambda a: a[:split].reshape((num_chunks, chunk) + a.shape[1:]), xs),
            jax.tree.map(lambda a: a[:num_chunks], chunk_xs),
        )
        c, (ys, chunk_ys) = jax.lax.scan(chunk_fn, c, main_xs, reverse=reverse)
        return c, jax.tree.map(lambda a: a.reshape((split,) + a.shape[2:]), ys), chunk_ys

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


def _forward(w_x, w_h, b, xs, steps, state0, lengths, options: LoopOptions, keep_residuals: bool):
    """Runs the loop over xs (T, N, I) at time indices `steps` (T,).

    Returns `(final_state, outs, residuals)`; residuals (for the backward pass) are the
    pre-activations z (T, N, 4H) and the states before each step, or None.
    """
    step = masked_lstm_step(lengths, options.return_gates)

    def chunk_fn(state, inputs):
        (x_chunk, t_chunk), _ = inputs
        zx = gates.input_projection(x_chunk, w_x, b)  # all k input projections: one matmul
        k = x_chunk.shape[0]
        outs, residuals = [None] * k, [None] * k
        for j in reversed(range(k)) if options.reverse else range(k):
            z = zx[j] + gates.recurrent_projection(state.h, w_h)
            residuals[j] = (z, state)
            state, outs[j] = step(z, state, t_chunk[j])
        return state, ((_stack(outs), _stack(residuals) if keep_residuals else None), None)

    final_state, (outs, residuals), _ = scan_in_chunks(
        chunk_fn, state0, (xs, steps), chunk=options.chunk, reverse=options.reverse
    )
    return final_state, outs, residuals


def _forward_in_segments(w_x, w_h, b, xs, steps, state0, lengths, options: LoopOptions,
                         checkpoint: bool):
    """The forward in segments of `options.remat_chunk` steps, keeping each segment's start.

    Returns `(final_state, outs, starts)`, `starts` the state entering each segment (in time
    order of the segments). With `checkpoint`, each segment is a `jax.checkpoint`, so plain
    autodiff also stores only the segment starts and recomputes the rest.
    """

    def segment_fn(state, inputs):
        (x_seg, t_seg), _ = inputs
        new_state, outs, _ = _forward(w_x, w_h, b, x_seg, t_seg, state, lengths, options, False)
        return new_state, (outs, state)

    if checkpoint:
        segment_fn = jax.checkpoint(segment_fn)
    return scan_in_chunks(
        segment_fn, state0, (xs, steps), chunk=options.remat_chunk, reverse=options.reverse
    )


def _backward(w_h, residuals, d_outs, steps, d_state, lengths, options: LoopOptions):
    """The reverse loop: carries (dh, dc) and returns `(d_state0, dzs)`, dzs (T, N, 4H).

    Only the elementwise step is differentiated (with `jax.vjp`); the one matmul left in the
    loop is the recurrent gradient dz @ W_h^T. `residuals` are `_forward`'s.
    """
    step = masked_lstm_step(lengths, options.return_gates)
    w_h_t = w_h.T

    def chunk_fn(d_state, inputs):
        ((z_chunk, prev_chunk), d_out_chunk, t_chunk), _ = inputs
        k = z_chunk.shape[0]
        dzs = [None] * k
        for j in range(k) if options.reverse else reversed(range(k)):
            prev, d_out = jax.tree.map(lambda a, j=j: a[j], (prev_chunk, d_out_chunk))
            _, step_vjp = jax.vjp(lambda z, s, t=t_chunk[j]: step(z, s, t), z_chunk[j], prev)
            dzs[j], d_prev = step_vjp((d_state, d_out))
            d_state = LSTMState(h=d_prev.h + dzs[j] @ w_h_t, c=d_prev.c)
        return d_state, (jnp.stack(dzs), None)

    d_state0, dzs, _ = scan_in_chunks(
        chunk_fn, d_state, (residuals, d_outs, steps),
        chunk=options.backward_chunk, reverse=not options.reverse,
    )
    return d_state0, dzs


def _accumulate(x: Array) -> Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _weight_grads(xs, prev_h, dzs):
    """dW_x = X^T dZ, dW_h = H_prev^T dZ, db = sum dZ over all steps; at least float32."""
    acc = jnp.promote_types(dzs.dtype, jnp.float32)
    return (
        jnp.einsum("tni,tng->ig", xs, dzs, preferred_element_type=acc),
        jnp.einsum("tnh,tng->hg", prev_h, dzs, preferred_element_type=acc),
        jnp.sum(_accumulate(dzs), axis=(0, 1)),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def lstm_loop(w_x, w_h, b, xs, state0, lengths, options: LoopOptions):
    """The LSTM over a sequence, time-major with one batch axis, with the fast backward.

    Args:
        w_x, w_h, b: `LSTMParams` fields, (I, 4H), (H, 4H), (4H,).
        xs: inputs, (T, N, I).
        state0: initial `LSTMState`, h and c of shape (N, H).
        lengths: int array (N,) of valid steps, or None.
        options: `LoopOptions`.

    Returns:
        `(final_state, outs)`: outs is hs (T, N, H), or `(hs, LSTMGates)` with return_gates.
    """
    return lstm_loop_autodiff(w_x, w_h, b, xs, state0, lengths, options._replace(remat_chunk=None))


def _run_forward(w_x, w_h, b, xs, state0, lengths, options: LoopOptions, *, fused: bool):
    """The forward over all steps; returns `(final_state, outs, saved)`.

    For the fused backward (`fused`), `saved` is what it needs: every step's residuals, or
    with remat each segment's start state. For autodiff nothing is saved by hand, and with
    remat each segment is a `jax.checkpoint` instead.
    """
    steps = jnp.arange(xs.shape[0], dtype=jnp.int32)
    if options.remat_chunk:
        return _forward_in_segments(w_x, w_h, b, xs, steps, state0, lengths, options,
                                    checkpoint=not fused)
    return _forward(w_x, w_h, b, xs, steps, state0, lengths, options, fused)


def _lstm_loop_fwd(w_x, w_h, b, xs, state0, lengths, options):
    final_state, outs, saved = _run_forward(w_x, w_h, b, xs, state0, lengths, options,
                                            fused=True)
    return (final_state, outs), (w_x, w_h, b, xs, lengths, saved)


def _lstm_loop_bwd(options, residuals, cotangents):
    w_x, w_h, b, xs, lengths, saved = residuals
    d_final_state, d_outs = cotangents
    steps = jnp.arange(xs.shape[0], dtype=jnp.int32)
    if options.remat_chunk:
        segment, per_step, per_segment = options.remat_chunk, None, saved
    else:
        segment, per_step, per_segment = options.grad_segment, saved, None

    # Segment by segment, last first: take the segment's residuals (or, with remat, recompute
    # them from its saved start state), run its reverse loop, and add its share of the weight
    # gradients. Segments of a few thousand rows keep every matmul in XLA's efficient range;
    # one matmul over all T * N rows is slower, and storing dZ for all steps costs memory.
    def segment_fn(carry, inputs):
        d_state, grads = carry
        (x_seg, t_seg, d_out_seg, seg_residuals), start = inputs
        if seg_residuals is None:
            _, _, seg_residuals = _forward(
                w_x, w_h, b, x_seg, t_seg, start, lengths, options, True
            )
        d_state, dzs = _backward(w_h, seg_residuals, d_out_seg, t_seg, d_state, lengths,
                                 options)
        grads = jax.tree.map(jnp.add, grads, _weight_grads(x_seg, seg_residuals[1].h, dzs))
        return (d_state, grads), (dzs @ w_x.T, None)

    zero_grads = tuple(jnp.zeros(a.shape, _accumulate(a).dtype) for a in (w_x, w_h, b))
    (d_state0, (d_w_x, d_w_h, d_b)), d_xs, _ = scan_in_chunks(
        segment_fn, (d_final_state, zero_grads), (xs, steps, d_outs, per_step), per_segment,
        chunk=segment, reverse=not options.reverse,
    )
    return (d_w_x.astype(w_x.dtype), d_w_h.astype(w_h.dtype), d_b.astype(b.dtype),
            d_xs, d_state0, None)


lstm_loop.defvjp(_lstm_loop_fwd, _lstm_loop_bwd)


def lstm_loop_autodiff(w_x, w_h, b, xs, state0, lengths, options: LoopOptions):
    """`lstm_loop` without the custom VJP: JAX differentiates the scan itself.

    Slower backward, but it supports forward-mode differentiation (`jax.jvp`, `jax.jacfwd`),
    which a custom VJP does not. With `options.remat_chunk`, segments are `jax.checkpoint`ed.
    """
    final_state, outs, _ = _run_forward(w_x, w_h, b, xs, state0, lengths, options, fused=False)
    return final_state, outs
