"""The family protocol (`jaxlstm.family`): for every registered family and every one of its
modes (and an LSTM with a projection and a variant, an mLSTM with d_k != d_v), `apply` over a
sequence equals `step` in a Python loop from `initial_state`, forwards and reversed, from the
empty state and from a state left by a prefix, with variable lengths both ways; time-major
input; `initial_state` typed as `apply`'s final state; the registry and the generated
refusals."""

import inspect
from functools import partial

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

_steps = {}


def make(name, options=None, dtype=jnp.float32):
    """The family, params with every leaf moved off its initialisation (the references start
    some gates at zero, which would hide a gate read from the wrong place), and inputs."""
    family = families.get(name)
    params = family.init(jax.random.key(0), INPUT, HIDDEN, **(options or {}))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [a + 0.3 * jax.random.normal(k, a.shape, a.dtype)
                                       for a, k in zip(leaves, keys)])
    xs = jax.random.normal(jax.random.key(2), (2, STEPS, INPUT))
    return family, *jax.tree.map(lambda a: a.astype(dtype), (params, xs))


def apply(family, params, xs, mode, reverse=False, time_major=False, **kwargs):
    run = jax.jit(partial(family.apply, mode=mode, reverse=reverse, time_major=time_major))
    return run(params, xs, **kwargs)


def loop(family, params, xs, state, reverse=False, lengths=None):
    """`family.step` over time, one sequence at a time when lengths are given (its valid
    prefix only, zeros after it)."""
    step = _steps.setdefault(family.name, jax.jit(family.step))
    if lengths is not None:
        rows = [loop(family, params, xs[b:b + 1, :n], jax.tree.map(lambda a: a[b:b + 1], state),
                     reverse) for b, n in enumerate(lengths)]
        outputs = jnp.concatenate([jnp.pad(o, ((0, 0), (0, xs.shape[1] - o.shape[1]), (0, 0)))
                                   for o, _ in rows])
        return outputs, jax.tree.map(lambda *a: jnp.concatenate(a), *[s for _, s in rows])
    outputs = [None] * xs.shape[1]
    for t in (reversed(range(xs.shape[1])) if reverse else range(xs.shape[1])):
        outputs[t], state = step(params, xs[:, t], state)
    return jnp.stack(outputs, axis=1), state


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name,mode,options", CASES, ids=IDS)
def test_apply_is_step_in_a_loop(name, mode, options, reverse):
    family, params, xs = make(name, options)
    empty = family.initial_state(params, (2,), jnp.float32)
    outputs, final = apply(family, params, xs, mode, reverse)
    want_outputs, want_final = loop(family, params, xs, empty, reverse)
    chex.assert_trees_all_close((outputs, final), (want_outputs, want_final), **TOL)
    # Given explicitly, the initial state is the default one.
    chex.assert_trees_all_close(apply(family, params, xs, mode, reverse, initial_state=empty),
                                (outputs, final), **TOL)


@pytest.mark.parametrize("name,mode,options", CASES, ids=IDS)
def test_a_state_left_by_a_prefix_continues_and_lengths_stop_each_sequence(name, mode, options):
    family, params, xs = make(name, options)
    _, state = apply(family, params, xs[:, :2], mode)
    chex.assert_trees_all_close(apply(family, params, xs[:, 2:], mode, initial_state=state),
                                loop(family, params, xs[:, 2:], state), **TOL)
    lengths, empty = (STEPS, 2), family.initial_state(params, (2,), jnp.float32)
    for reverse in (False, True):  # reversed: each valid prefix backwards, padding in place
        outputs, final = apply(family, params, xs, mode, reverse,
                               seq_lengths=jnp.array(lengths))
        want = loop(family, params, xs, empty, reverse, lengths=lengths)
        chex.assert_trees_all_close((outputs, final), want, **TOL)
        assert not np.any(np.asarray(outputs[1, 2:]))


@pytest.mark.parametrize("name", list(PUBLIC))
def test_time_major_none_options_and_the_initial_states_types(name):
    family, params, xs = make(name)
    outputs, final = apply(family, params, xs, None)
    chex.assert_trees_all_close(
        apply(family, params, jnp.moveaxis(xs, 1, 0), None, time_major=True),
        (jnp.moveaxis(outputs, 1, 0), final), **TOL)
    # None is "not given" for every option, whichever family takes it.
    nones = dict.fromkeys(["key", "zoneout_h", "unroll", "chunk_size", "fused_backward"])
    chex.assert_trees_all_close(family.apply(params, xs, **nones), (outputs, final), **TOL)
    for dtype in (jnp.float32, jnp.bfloat16):  # initial_state is typed as apply's final state
        family, params, xs = make(name, dtype=dtype)
        _, final = jax.eval_shape(partial(family.apply, params), xs)
        empty = family.initial_state(params, (2,), xs.dtype)
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
    with pytest.raises(ValueError, match=r"^zoneout_h applies to LSTM layers, not to mLSTM "
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
