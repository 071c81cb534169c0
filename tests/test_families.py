"""The family protocol (`jaxlstm.family`): for every registered family and every one of its
modes (and an LSTM with a projection and a variant, an mLSTM with d_k != d_v), `apply` over a
sequence equals `step` in a Python loop from `initial_state`, forwards and reversed, from the
empty state and from a state left by a prefix, with variable lengths both ways; time-major
input; `initial_state` typed as `apply`'s final state; the registry and the generated
refusals."""

import functools
import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import family as families

INPUT, HIDDEN, STEPS = 3, 8, 5
TOL = {"atol": 2e-5, "rtol": 2e-5}
CASES = [(name, mode, {}) for name in families.names()
         for mode in (families.get(name).modes or (None,))] + [
    ("lstm", None, {"proj_size": 5, "cell": "peephole"}),    # h (R=5) narrower than c (H=8)
    ("mlstm", "chunkwise", {"num_heads": 2, "qk_size": 3}),  # d_k != d_v
]
IDS = [f"{name}-{mode}{'-' + '-'.join(map(str, options.values())) if options else ''}"
       for name, mode, options in CASES]
PUBLIC = {"lstm": (jaxlstm.init_lstm, jaxlstm.lstm), "slstm": (jaxlstm.init_slstm, jaxlstm.slstm),
          "mlstm": (jaxlstm.init_mlstm, jaxlstm.mlstm),
          "min_lstm": (jaxlstm.init_min_lstm, jaxlstm.min_lstm),
          "min_gru": (jaxlstm.init_min_gru, jaxlstm.min_gru),
          "gru": (jaxlstm.init_gru, jaxlstm.gru)}
"""The public functions each family wraps (the test may name families; the library may not)."""


@functools.cache
def _make(name, options=()):
    """The family, params with every leaf random (far off the initialisation: the references
    start some gates at zero, which would hide a gate read from the wrong place), and inputs.
    Only the shapes come from `init` (traced, not compiled); NumPy draws the numbers."""
    family = families.get(name)
    shapes = jax.eval_shape(lambda key: family.init(key, INPUT, HIDDEN, **dict(options)),
                            jax.random.key(0))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype),
                          shapes)
    xs = jnp.asarray(rng.standard_normal((2, STEPS, INPUT)).astype(np.float32))
    return family, params, xs


def make(name, options=None):
    return _make(name, tuple(sorted((options or {}).items())))


@functools.cache
def _step(name):
    return jax.jit(families.get(name).step)


def loop(family, params, xs, state, reverse=False, lengths=None):
    """`family.step` over time, one sequence at a time when lengths are given (its valid
    prefix only, zeros after it). NumPy around one jitted step per family, at batch 2 only
    (a sequence alone runs as a batch of two copies of it)."""
    xs, state = np.asarray(xs), jax.tree.map(np.asarray, state)
    if lengths is not None:
        twice = [[b, b] for b in range(len(lengths))]
        rows = [loop(family, params, xs[b, :n], jax.tree.map(lambda a, b=b: a[b], state),
                     reverse) for b, n in zip(twice, lengths)]
        outputs = np.concatenate([np.pad(o[:1], ((0, 0), (0, xs.shape[1] - o.shape[1]), (0, 0)))
                                  for o, _ in rows])
        return outputs, jax.tree.map(lambda *a: np.concatenate([s[:1] for s in a]),
                                     *[s for _, s in rows])
    outputs = [None] * xs.shape[1]
    for t in (reversed(range(xs.shape[1])) if reverse else range(xs.shape[1])):
        y, state = _step(family.name)(params, xs[:, t], state)
        outputs[t] = np.asarray(y)
    return np.stack(outputs, axis=1), jax.tree.map(np.asarray, state)


LENGTHS = (STEPS, 2)


def applied(name, mode, options):
    return _applied(name, options)[mode]


@functools.cache
def _applied(name, options):
    """Every `apply` call the two tests below compare, for every mode CASES runs with these
    params, in one jitted program (compiling is what this file spends its time on): both
    directions from the default initial
    state; with lengths, both directions, from the empty state given explicitly; the rest of
    the sequences after a prefix, from the state the forward call with lengths left (row 1:
    after its 2 steps; row 0: after all of them)."""
    family, params, xs = make(name, dict(options))
    empty = family.initial_state(params, (2,), jnp.float32)

    def run_mode(params, xs, empty, mode):
        apply = functools.partial(family.apply, params, mode=mode)
        out = {"default": {reverse: apply(xs, reverse=reverse) for reverse in (False, True)}}
        out["lengths"] = {reverse: apply(xs, reverse=reverse, initial_state=empty,
                                         seq_lengths=jnp.array(LENGTHS))
                          for reverse in (False, True)}
        out["prefix_state"] = out["lengths"][False][1]
        out["continued"] = apply(xs[:, 2:], initial_state=out["prefix_state"])
        return out

    modes = [mode for n, mode, o in CASES if n == name and tuple(o.items()) == options]
    out = jax.device_get(jax.jit(lambda *a: [run_mode(*a, mode) for mode in modes])(
        params, xs, empty))
    return {mode: (result, empty) for mode, result in zip(modes, out)}


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name,mode,options", CASES, ids=IDS)
def test_apply_is_step_in_a_loop(name, mode, options, reverse):
    family, params, xs = make(name, options)
    out, empty = applied(name, mode, tuple(options.items()))
    chex.assert_trees_all_close(out["default"][reverse],
                                loop(family, params, xs, empty, reverse), **TOL)


@pytest.mark.parametrize("name,mode,options", CASES, ids=IDS)
def test_a_state_left_by_a_prefix_continues_and_lengths_stop_each_sequence(name, mode, options):
    family, params, xs = make(name, options)
    out, empty = applied(name, mode, tuple(options.items()))
    chex.assert_trees_all_close(out["continued"],
                                loop(family, params, xs[:, 2:], out["prefix_state"]), **TOL)
    # From the empty state given explicitly (test_apply_is_step_in_a_loop: the default one);
    # reversed: each valid prefix backwards, padding in place.
    for reverse in (False, True):
        outputs, final = out["lengths"][reverse]
        want = loop(family, params, xs, empty, reverse, lengths=LENGTHS)
        chex.assert_trees_all_close((outputs, final), want, **TOL)
        assert not np.any(np.asarray(outputs[1, 2:]))


@pytest.mark.parametrize("name", list(PUBLIC))
def test_time_major_none_options_and_the_initial_states_types(name):
    family, params, xs = make(name)
    # None is "not given" for every option, whichever family takes it (and mode: the
    # family's default). Both calls in one program, against the step loop.
    nones = dict.fromkeys(["key", "zoneout_h", "unroll", "chunk_size", "fused_backward"])

    @jax.jit
    def run(params, xs):
        return (family.apply(params, jnp.moveaxis(xs, 1, 0), time_major=True),
                family.apply(params, xs, **nones))

    time_major, with_nones = run(params, xs)
    outputs, final = loop(family, params, xs, family.initial_state(params, (2,), jnp.float32))
    chex.assert_trees_all_close(time_major, (np.moveaxis(outputs, 1, 0), final), **TOL)
    chex.assert_trees_all_close(with_nones, (outputs, final), **TOL)
    for dtype in (jnp.float32, jnp.bfloat16):  # initial_state is typed as apply's final state
        typed = jax.tree.map(lambda a, d=dtype: jax.ShapeDtypeStruct(a.shape, d), (params, xs))
        _, final = jax.eval_shape(family.apply, *typed)
        empty = jax.eval_shape(lambda p, d=dtype: family.initial_state(p, (2,), d), typed[0])
        assert jax.tree.structure(empty) == jax.tree.structure(final)
        assert ([(a.shape, a.dtype) for a in jax.tree.leaves(empty)]
                == [(a.shape, a.dtype) for a in jax.tree.leaves(final)])


def test_the_registry_finds_each_family_by_name_and_by_params():
    assert families.names() == tuple(PUBLIC)
    for name in families.names():
        family, params, _ = make(name)
        assert family.name == name and families.of(params) is family
    with pytest.raises(ValueError, match=r"name must be one of \['lstm', .*got 'elman'"):
        families.get("elman")
    with pytest.raises(TypeError, match="name must be a str, .* got int"):
        families.get(3)
    with pytest.raises(TypeError, match="params must be the params of a registered family "
                                        r"\(LSTMParams \(lstm\), .* got dict"):
        families.of({"w_x": 1})


@pytest.mark.parametrize("name", list(PUBLIC))
def test_declared_options_are_the_wrapped_functions_keywords(name):
    family = families.get(name)
    init, run = PUBLIC[name]
    protocol = {"params", "xs", "initial_state", "seq_lengths", "reverse", "time_major", "mode",
                "resets"}
    assert family.init_options == set(inspect.signature(init).parameters) - {
        "key", "input_size", "hidden_size"}
    # Every keyword of the public function is declared, but return_gates: the protocol
    # returns (outputs, state), the gates come from `apply_with_gates`.
    assert family.apply_options == set(inspect.signature(run).parameters) - protocol - {
        "return_gates"}


def test_refusals_are_generated_from_the_declarations():
    family, params, xs = make("mlstm")
    with pytest.raises(ValueError, match=r"^zoneout_h applies to LSTM and GRU layers, not to mLSTM "
                                         r"\(family 'mlstm'\)\.$"):
        family.apply(params, xs, zoneout_h=0.1)
    with pytest.raises(ValueError, match=r"^unroll applies to LSTM, sLSTM and GRU layers, not to "
                                         r"mLSTM"):
        family.apply(params, xs, unroll=2)
    with pytest.raises(ValueError, match="^tile is an option of no registered family"):
        family.apply(params, xs, tile=2)
    with pytest.raises(ValueError, match=r"^return_gates is not part of the family protocol"):
        family.apply(params, xs, return_gates=True)
    with pytest.raises(ValueError, match=r"mode must be one of \['chunkwise', 'parallel', "
                                         r"'recurrent'\] for mLSTM, got 'sequential'"):
        family.apply(params, xs, mode="sequential")
    lstm, lstm_params, _ = make("lstm")
    with pytest.raises(ValueError, match="^mode applies to families with several forms "
                                         r"\(mLSTM, minLSTM and minGRU\), not to LSTM"):
        lstm.apply(lstm_params, xs, mode="parallel")
    with pytest.raises(ValueError, match="^chunk_size applies to mLSTM layers, not to minGRU"):
        families.check_options(families.get("min_gru"), {"chunk_size": 16})
    families.check_options(families.get("min_gru"), {"key": None})  # None: not given
