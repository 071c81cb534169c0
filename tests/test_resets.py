"""Segment resets (packed documents, continuous batching): for the mLSTM in its three forms and
minLSTM / minGRU in both, a call with `resets` equals running each segment alone from the
initial state (outputs at every step, the final state of the last segment run, gradients
w.r.t. params, inputs and initial state), forwards and reversed, with and without lengths;
the protocol's `apply` passes `resets` on; bad `resets` are refused by name. (The LSTM's time
loop, for the LSTM, sLSTM and GRU: tests/test_lstm_resets.py.)"""

import functools
from functools import partial
from itertools import pairwise
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import family as families
from jaxlstm.xlstm.mlstm import MLSTMState, mlstm_qkv

STEPS, INPUT, HIDDEN = 11, 3, 8
CHUNK = 4  # chunks of 4 over 11 steps: starts inside chunks, on their first steps, and a
#            padded last chunk
RESETS = np.zeros((6, STEPS), bool)
RESETS[0, [3, 4, 9]] = True        # a segment of one step in the middle
RESETS[1, [0, 1, 8, 10]] = True    # resets[0] (changes nothing), one-step segments at both ends
RESETS[2, [4, 6, 8]] = True        # starts on chunk boundaries; with lengths, one at the length
RESETS[3, [2, 5]] = True           # with lengths: a sequence of length 0
RESETS[4, :] = True                # every step its own segment
# row 5: no reset at all, one segment
LENGTHS = np.array([11, 9, 6, 0, 11, 7])
OPTIONS = {"mlstm": {"num_heads": 2}, "min_lstm": {}, "min_gru": {}}
APPLY_OPTIONS = {"mlstm": {"chunk_size": CHUNK}, "min_lstm": {}, "min_gru": {}}
PUBLIC = {"mlstm": jaxlstm.mlstm, "min_lstm": jaxlstm.min_lstm, "min_gru": jaxlstm.min_gru}
REFERENCE_MODE = {"mlstm": "recurrent", "min_lstm": "sequential", "min_gru": "sequential"}
CASES = [(name, mode) for name in PUBLIC for mode in families.get(name).modes]
TOL = {"mlstm": {"atol": 1e-4, "rtol": 1e-4}, "min_lstm": {"atol": 2e-5, "rtol": 2e-5},
       "min_gru": {"atol": 2e-5, "rtol": 2e-5}}
GRAD_TOL = {"atol": 2e-4, "rtol": 2e-3}


def noise(shapes, rng, scale=0.5):
    """Random arrays in `shapes` (a tree of shapes and dtypes), drawn by NumPy: eager random
    draws would compile a program per shape."""
    return jax.tree.map(lambda a: jnp.asarray(scale * rng.standard_normal(a.shape), a.dtype),
                        shapes)


def init_noise(init, rng):
    """Params of `init`'s structure, every leaf random (off the initialisation); only the
    shapes come from `init` (traced, not compiled)."""
    return noise(jax.eval_shape(init, jax.random.key(0)), rng)


@functools.cache
def make(name):
    """Params with every leaf random, inputs, and a random (non-zero) initial state."""
    family = families.get(name)
    rng = np.random.default_rng(1)
    params = init_noise(lambda key: family.init(key, INPUT, HIDDEN, **OPTIONS[name]), rng)
    xs = noise(jax.ShapeDtypeStruct((len(RESETS), STEPS, INPUT), jnp.float32), rng, 1.0)
    state = noise(jax.eval_shape(lambda p: family.initial_state(p, (len(RESETS),), jnp.float32),
                                 params), rng, 1.0)
    return params, xs, state


@partial(jax.jit, static_argnames=("name", "mode", "reverse"))
def packed(name, params, xs, state, resets, lengths, *, mode, reverse):
    """The call under test: all segments of a row in one sequence, separated by `resets`."""
    return PUBLIC[name](params, xs, initial_state=state, seq_lengths=lengths, reverse=reverse,
                        mode=mode, resets=resets, **APPLY_OPTIONS[name])


class Plan(NamedTuple):
    """Each segment of each row as a row of its own (left-aligned, right-padded), and where
    the outputs and final states come back from."""

    row: np.ndarray          # (R,): the batch row a segment comes from
    length: np.ndarray       # (R,): its steps
    in_time: np.ndarray      # (R, T): the step of xs each of its steps reads
    in_valid: np.ndarray     # (R, T)
    out_segment: np.ndarray  # (B, T): the segment each output step belongs to
    out_offset: np.ndarray   # (B, T): its position there
    out_valid: np.ndarray    # (B, T)
    final_segment: np.ndarray  # (B,): the segment whose final state is the row's
    has_steps: np.ndarray    # (B,): False for a length-0 row (its final state: the initial)


def plan(lengths, reverse):
    """Splits each row's valid steps at its resets. Always as many segments as without
    lengths (dummy segments of length 0 fill up), so that every plan shares one program."""
    batch, steps = RESETS.shape
    lengths = np.full(batch, steps) if lengths is None else lengths
    segments = []  # (row, start, length)
    out = np.zeros((3, batch, steps), np.int32)
    final, has_steps = np.zeros(batch, np.int32), lengths > 0
    for b, length in enumerate(lengths):
        cuts = [0] + [t for t in range(1, length) if RESETS[b, t]] + [length]
        mine = []
        for start, stop in pairwise(cuts):
            if stop > start:
                mine.append(len(segments))
                segments.append((b, start, stop - start))
                out[0, b, start:stop] = mine[-1]
                out[1, b, start:stop] = np.arange(stop - start)
                out[2, b, start:stop] = 1
        final[b] = (mine[0] if reverse else mine[-1]) if mine else 0
    total = int(np.sum(RESETS[:, 1:])) + batch
    segments += [(0, 0, 0)] * (total - len(segments))
    row, start, length = (np.array(a, np.int32) for a in zip(*segments))
    time = np.arange(steps)
    return Plan(row, length, np.minimum(start[:, None] + time, steps - 1),
                time < length[:, None], out[0], out[1], out[2].astype(bool), final, has_steps)


@partial(jax.jit, static_argnames=("name", "reverse"))
def by_segments(name, params, xs, state, plan, *, reverse):
    """The reference: every segment run alone from the row's initial state (all of them as
    one batch of right-padded sequences), outputs and final states gathered back."""
    segment_xs = jnp.where(plan.in_valid[..., None], xs[plan.row[:, None], plan.in_time], 0.0)
    segment_state = jax.tree.map(lambda a: a[plan.row], state)
    hs, finals = PUBLIC[name](params, segment_xs, initial_state=segment_state,
                              seq_lengths=plan.length, reverse=reverse,
                              mode=REFERENCE_MODE[name])
    outputs = jnp.where(plan.out_valid[..., None], hs[plan.out_segment, plan.out_offset], 0.0)

    def last(segment_final, initial):
        keep = plan.has_steps.reshape(plan.has_steps.shape + (1,) * (initial.ndim - 1))
        return jnp.where(keep, segment_final[plan.final_segment], initial)

    return outputs, jax.tree.map(last, finals, state)


def as_plan(lengths, reverse):
    return Plan(*(jnp.asarray(a) for a in plan(lengths, reverse)))


LENGTH_CASES = {"all": None, "lengths": LENGTHS}


@functools.cache
def results(name):
    """For every mode of the family, the packed call both ways, with and without lengths; and
    the reference, each segment alone, both ways, with and without lengths; all in one jitted
    program (compiling is what this file spends its time on)."""
    params, xs, state = make(name)
    plans = {(reverse, key): as_plan(lengths, reverse)
             for reverse in (False, True) for key, lengths in LENGTH_CASES.items()}

    @jax.jit
    def run(params, xs, state, plans):
        segments = {case: by_segments(name, params, xs, state, plan, reverse=case[0])
                    for case, plan in plans.items()}
        packed_calls = {
            (mode, reverse, key): packed(name, params, xs, state, jnp.asarray(RESETS),
                                         None if lengths is None else jnp.asarray(lengths),
                                         mode=mode, reverse=reverse)
            for mode in families.get(name).modes for reverse in (False, True)
            for key, lengths in LENGTH_CASES.items()}
        return {"packed": packed_calls, "segments": segments}

    return jax.device_get(run(params, xs, state, plans))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name,mode", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_equals_each_segment_alone(name, mode, reverse):
    for key in LENGTH_CASES:
        got = results(name)["packed"][mode, reverse, key]
        chex.assert_trees_all_close(got, results(name)["segments"][reverse, key], **TOL[name])
    _, _, state = make(name)
    outputs, final = got  # with lengths: padding outputs zero, a length-0 row keeps its state
    assert not np.any(np.asarray(outputs[3])) and not np.any(np.asarray(outputs[2, 6:]))
    chex.assert_trees_all_equal(jax.tree.map(lambda a: a[3], final),
                                jax.tree.map(lambda a: a[3], state))


def _loss(outputs, final):
    weights = jnp.cos(jnp.arange(outputs.shape[-1], dtype=outputs.dtype))
    # The mLSTM's stabiliser m is a bookkeeping value (its forms may break ties differently);
    # C and n carry the memory.
    memory = final[:2] if isinstance(final, MLSTMState) else (final,)
    return (jnp.sum(jnp.sin(2.0 * outputs) * weights.reshape((1, 1) + weights.shape))
            + sum(jnp.sum(jnp.cos(a)) for a in memory))


@partial(jax.jit, static_argnames=("name", "mode", "reverse"))
def both_grads(name, params, xs, state, resets, lengths, plan, *, mode, reverse):
    """The packed call's gradients and the segments' (the reference), in one program."""
    def grads(run):
        return jax.grad(lambda p, x, s: _loss(*run(p, x, s)), argnums=(0, 1, 2))(
            params, xs, state)

    return (grads(lambda p, x, s: packed(name, p, x, s, resets, lengths, mode=mode,
                                         reverse=reverse)),
            grads(lambda p, x, s: by_segments(name, p, x, s, plan, reverse=reverse)))


@pytest.mark.parametrize("name,mode,reverse", [("mlstm", "chunkwise", True),
                                               ("min_lstm", "parallel", False),
                                               ("min_gru", "sequential", True)])
def test_gradients_equal_each_segment_alone(name, mode, reverse):
    params, xs, state = make(name)
    got, want = both_grads(name, params, xs, state, jnp.asarray(RESETS), jnp.asarray(LENGTHS),
                           as_plan(LENGTHS, reverse), mode=mode, reverse=reverse)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(got))
    chex.assert_trees_all_close(got, want, **GRAD_TOL)
    # Row 4 starts every step from the initial state: its gradient gathers from 11 segments.
    assert float(jnp.abs(jax.tree.leaves(got[2])[0][4]).max()) > 1e-3


@pytest.mark.parametrize("name,mode", [("mlstm", "parallel"), ("min_gru", "parallel")])
def test_time_major_two_batch_dims_and_the_protocol(name, mode):
    """resets stay (batch..., T) with time-major inputs; the protocol's apply passes them on."""
    params, xs, state = make(name)
    want = results(name)["packed"][mode, True, "all"]   # test_equals_each_segment_alone's
    two = partial(jax.tree.map, lambda a: a.reshape((2, 3) + a.shape[1:]))
    family = families.get(name)
    run = jax.jit(partial(family.apply, mode=mode, reverse=True, time_major=True,
                          **APPLY_OPTIONS[name]))
    outputs, final = run(params, jnp.moveaxis(two(xs), 2, 0), initial_state=two(state),
                         resets=two(jnp.asarray(RESETS)))
    chex.assert_trees_all_close((jnp.moveaxis(outputs, 0, 2), final), two(want),
                                **TOL[name])


def test_a_stack_passes_resets_to_every_layer():
    """Through the protocol's apply, both directions: a bidirectional stack of an mLSTM and a
    minLSTM layer over two packed documents equals the stack over each alone. One call (one
    compile): rows 0-1 packed, 2-3 the first documents alone, 4-5 the second ones alone,
    each document as its own row with its length."""
    rng = np.random.default_rng(2)
    params = init_noise(lambda key: jaxlstm.init_lstm_stack(
        key, INPUT, HIDDEN, num_layers=2, cell=("mlstm", "min_lstm"), bidirectional=True), rng)
    xs = rng.standard_normal((2, 7, INPUT)).astype(np.float32)
    batch = np.concatenate([xs, xs, np.pad(xs[:, 4:], ((0, 0), (0, 4), (0, 0)))])
    resets = np.zeros((6, 7), bool)
    resets[:2, 4] = True
    out, _ = jax.jit(partial(jaxlstm.lstm_stack, mode="parallel"))(
        params, batch, resets=resets, seq_lengths=np.array([7, 7, 4, 4, 3, 3]))
    alone = jnp.concatenate([out[2:4, :4], out[4:, :3]], axis=1)
    chex.assert_trees_all_close(out[:2], alone, **TOL["mlstm"])


def test_the_protocol_passes_resets_only_when_given_and_refuses_a_function_without_them():
    calls = []

    def without_resets(params, xs, *, initial_state, seq_lengths, reverse, time_major, mode):
        calls.append(mode)
        return xs, initial_state

    apply = families.checked_apply("min_gru", without_resets)
    xs = jnp.zeros((2, 4, INPUT))
    apply(None, xs, mode="parallel", resets=None)  # None is "not given": not passed on
    assert calls == ["parallel"]
    with pytest.raises(ValueError, match=r"^resets is not supported by minGRU yet\.$"):
        apply(None, xs, mode="parallel", resets=jnp.zeros((2, 4), bool))
    assert calls == ["parallel"]


def _bad_calls():
    calls = []
    for name, run in PUBLIC.items():
        params, xs, _ = make(name)
        f = partial(run, params, xs)
        calls += [
            (lambda f=f: f(resets=jnp.asarray(RESETS.T)), ValueError,
             r"resets must have shape \(batch..., T\) = \(6, 11\), got \(11, 6\)"),
            (lambda f=f: f(resets=jnp.asarray(RESETS[:, :-1])), ValueError,
             r"resets must have shape \(batch..., T\) = \(6, 11\), got \(6, 10\)"),
            (lambda f=f: f(resets=jnp.asarray(RESETS, jnp.int32)), TypeError,
             "resets must be a boolean array, got dtype int32"),
            (lambda f=f: f(resets=RESETS.astype(np.float32)), TypeError,
             "resets must be a boolean array, got dtype float32"),
            # time-major xs (T=6 steps of a batch of 11): resets are still (batch..., T)
            (lambda f=f: f(resets=jnp.asarray(RESETS), time_major=True), ValueError,
             r"resets must have shape \(batch..., T\) = \(11, 6\), got \(6, 11\)"),
        ]
    qkv = jnp.zeros((2, 5, 2, 4))
    calls.append((lambda: mlstm_qkv(qkv, qkv, qkv, qkv[..., 0], qkv[..., 0],
                                                  resets=jnp.zeros((5, 2), bool)),
                  ValueError, r"resets must have shape \(batch..., T\) = \(2, 5\)"))
    return calls


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_resets_are_refused_by_name(index):
    call, error, match = _bad_calls()[index]
    with pytest.raises(error, match=match):
        call()
