"""`jaxlstm.flax.nnx.GRUCell` as a drop-in for `flax.nnx.GRUCell`, against Flax's cell itself:
the same params from the same `nnx.Rngs` (names, shapes, numbers, initialisers, metadata), the
same steps (activations, dtypes, integer and complex inputs), the same sequences, carries and
gradients in `nnx.RNN` / `nnx.Bidirectional`; `gru_params()` hands the weights to `jaxlstm.gru`
(the same numbers and gradients from its fused loop).

Compilation is what these tests spend: cells are built inside one jitted program per case (each
eager initialiser op would compile on its own), data comes from NumPy, and each comparison's
calls of both cells share one jitted program.

With `JAXLSTM_FLAX_TESTS` naming the `tests/` folder of flax's sdist (see test_gru_dropin.py),
the last test runs Flax's own NNX tests of `nnx.GRUCell` with this cell swapped in.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
import unittest

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxlstm
from jaxlstm.flax.nnx import GRUCell

FlaxGRUCell = nnx.GRUCell
BATCH, STEPS, INPUT, HIDDEN = 2, 5, 3, 4
TOL = {"atol": 1e-6, "rtol": 1e-6}
GRAD_TOL = {"atol": 1e-5, "rtol": 1e-5}  # jaxlstm.gru's fused backward sums in another order
LENGTHS = np.array([STEPS, 2])  # at least 1: Flax's carry for a length of 0 wraps to the last


def normal(shape, seed, dtype=np.float32):
    """NumPy draws (eager jax.random compiles a program per shape), as `dtype`."""
    rng = np.random.default_rng(seed)
    draw = rng.standard_normal(shape)
    if np.issubdtype(dtype, np.complexfloating):
        draw = draw + 1j * rng.standard_normal(shape)
    return jnp.asarray(draw.astype(dtype))


def pairs(*seeds):
    """Per seed, Flax's cell and ours from the same `nnx.Rngs(seed)`; all built in one jitted
    program."""
    return nnx.jit(lambda: [tuple(cell(INPUT, HIDDEN, rngs=nnx.Rngs(seed))
                                  for cell in (FlaxGRUCell, GRUCell)) for seed in seeds])()


def perturbed(state, seed=9):
    """Off the initialisation (a zero bias would hide a bias read from the wrong place)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: a + jnp.asarray(
        0.3 * rng.standard_normal(a.shape).astype(np.float32)), state)


def test_same_params_sequences_carries_and_gradients_as_flax_and_jaxlstm_gru():
    [(theirs, ours)] = pairs(0)
    state = nnx.state(theirs, nnx.Param)
    # The same tree (dense_i.kernel (I, 3H), dense_i.bias (3H,), dense_h.kernel (H, 3H)) and
    # the same numbers, bit for bit.
    chex.assert_trees_all_equal(nnx.state(ours, nnx.Param), state)
    assert nnx.state(ours, nnx.Param)["dense_h"]["kernel"].shape == (HIDDEN, 3 * HIDDEN)
    state = perturbed(state)
    graphdefs = nnx.graphdef(theirs), nnx.graphdef(ours)
    xs, h0 = normal((BATCH, STEPS, INPUT), 0), normal((BATCH, HIDDEN), 1)
    valid = jnp.asarray(np.arange(STEPS)[None, :, None] < LENGTHS[:, None, None], jnp.float32)
    weights = normal((BATCH, STEPS, HIDDEN), 2) * valid   # padded steps (Flax computes them) out

    def in_rnn(graphdef, state, **options):
        rnn = nnx.RNN(nnx.merge(graphdef, state), return_carry=True)
        return rnn(xs, initial_carry=h0, **options)

    def loss(graphdef, state):
        carry, ys = in_rnn(graphdef, state, seq_lengths=LENGTHS)
        return jnp.sum(ys * weights) + jnp.sum(carry)

    def gru_loss(params):
        hs, h = jaxlstm.gru(params, xs, initial_state=h0, seq_lengths=LENGTHS)
        return jnp.sum(hs * weights) + jnp.sum(h)

    options = ({}, {"seq_lengths": LENGTHS},
               {"seq_lengths": LENGTHS, "reverse": True, "keep_order": True})

    @jax.jit
    def runs(state):
        per_cell = [([in_rnn(g, state, **o) for o in options],
                     jax.grad(functools.partial(loss, g))(state)) for g in graphdefs]
        params = nnx.merge(graphdefs[1], state).gru_params()
        return per_cell, jaxlstm.gru(params, xs, initial_state=h0), jax.grad(gru_loss)(params)

    ((want, want_grads), (got, got_grads)), (hs, h), gru_grads = runs(state)
    chex.assert_trees_all_close(got, want, **TOL)
    chex.assert_trees_all_close(got_grads, want_grads, **TOL)
    # The same weights run whole sequences in jaxlstm.gru, gradients from its fused backward.
    chex.assert_trees_all_close((h, hs), want[0], **TOL)
    chex.assert_trees_all_close(
        (gru_grads.w_x, gru_grads.w_h, gru_grads.b),
        (want_grads["dense_i"]["kernel"][...], want_grads["dense_h"]["kernel"][...],
         want_grads["dense_i"]["bias"][...]), **GRAD_TOL)


def test_bidirectional_two_batch_dims_and_time_major_as_flax():
    (theirs_f, ours_f), (theirs_b, ours_b) = pairs(1, 2)
    state_f, state_b = (perturbed(nnx.state(c, nnx.Param), seed) for c, seed in
                        ((theirs_f, 3), (theirs_b, 4)))
    xs = normal((2, BATCH, STEPS, INPUT), 5)
    lengths = np.array([[STEPS, 1], [3, 4]])

    def runs(forward, backward):
        return jax.jit(lambda state_f, state_b: (
            nnx.Bidirectional(nnx.RNN(nnx.merge(nnx.graphdef(forward), state_f)),
                              nnx.RNN(nnx.merge(nnx.graphdef(backward), state_b)),
                              return_carry=True)(xs, seq_lengths=lengths),
            nnx.RNN(nnx.merge(nnx.graphdef(forward), state_f), time_major=True)(
                jnp.moveaxis(xs, 2, 0))))(state_f, state_b)

    chex.assert_trees_all_close(runs(ours_f, ours_b), runs(theirs_f, theirs_b), **TOL)


def test_custom_initialisers_gate_and_activation_functions_as_flax():
    options = {"kernel_init": nnx.initializers.normal(0.5), "bias_init": nnx.initializers.uniform(),
               "recurrent_kernel_init": nnx.initializers.lecun_normal(),
               "gate_fn": jnp.tanh, "activation_fn": jax.nn.relu}
    x, h = normal((BATCH, INPUT), 0), normal((BATCH, HIDDEN), 1)

    @jax.jit
    def steps():
        theirs, ours = (cell(INPUT, HIDDEN, rngs=nnx.Rngs(0), **options)
                        for cell in (FlaxGRUCell, GRUCell))
        default_functions = GRUCell(INPUT, HIDDEN, rngs=nnx.Rngs(0), **{
            k: v for k, v in options.items() if k.endswith("init")})
        return ([nnx.state(c, nnx.Param) for c in (theirs, ours, default_functions)],
                [c(h, x) for c in (theirs, ours, default_functions)])

    (want_state, got_state, default_state), (want, got, with_defaults) = steps()
    chex.assert_trees_all_equal(got_state, want_state)
    chex.assert_trees_all_equal(default_state, want_state)
    assert float(jnp.abs(want_state["dense_i"]["bias"]).min()) > 0  # bias_init ran
    chex.assert_trees_all_close(got, want, **TOL)
    assert float(jnp.abs(got[0] - with_defaults[0]).max()) > 0.1  # the functions were used


F32, BF16 = jnp.float32, jnp.bfloat16
DTYPE_CASES = (  # dtype, param_dtype, input dtype, carry dtype
    (BF16, BF16, F32, F32),             # bfloat16 computation; the new carry promotes with the old
    (None, BF16, F32, F32),             # bfloat16 params meet float32 inputs: float32
    (BF16, F32, F32, BF16),             # bfloat16 computation, bfloat16 carry
    (None, F32, jnp.int32, F32),        # integer inputs promote to the params' float
    (None, F32, jnp.complex64, F32),    # complex inputs make a complex carry
)


@functools.cache
def dtype_steps():
    """Per case of DTYPE_CASES, both cells' (params, step, initial carry), Flax's first: one
    jitted program for all of them (one compilation instead of one per case)."""
    # Flax's default orthogonal init has no bfloat16 QR on a CPU, in either cell.
    init = {"recurrent_kernel_init": nnx.initializers.lecun_normal()}

    def case(dtype, param_dtype, input_dtype, carry_dtype):
        if jnp.issubdtype(input_dtype, jnp.integer):
            x = jnp.arange(BATCH * INPUT, dtype=input_dtype).reshape(BATCH, INPUT)
        else:
            x = normal((BATCH, INPUT), 0, dtype=input_dtype)
        h = normal((BATCH, HIDDEN), 1).astype(carry_dtype)
        cells = [cell(INPUT, HIDDEN, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0),
                      **init) for cell in (FlaxGRUCell, GRUCell)]
        return [(nnx.state(c, nnx.Param), c(h, x), c.initialize_carry((BATCH, INPUT),
                                                                       nnx.Rngs(1)))
                for c in cells]

    return jax.jit(lambda: [case(*dtypes) for dtypes in DTYPE_CASES])()


@pytest.mark.parametrize("index", range(len(DTYPE_CASES)), ids=lambda i: "-".join(
    "None" if d is None else jnp.dtype(d).name for d in DTYPE_CASES[i]))
def test_dtype_and_param_dtype_as_flax(index):
    (want_state, want, want_h0), (got_state, got, got_h0) = dtype_steps()[index]
    chex.assert_trees_all_equal(got_state, want_state)
    chex.assert_trees_all_equal(got_h0, want_h0)   # zeros in param_dtype
    assert jax.tree.map(lambda a: a.dtype, got) == jax.tree.map(lambda a: a.dtype, want)
    atol = 1e-2 if BF16 in DTYPE_CASES[index][:2] else 1e-5
    chex.assert_trees_all_close(got, want, atol=atol, rtol=atol)


def abstract(cell=GRUCell, **options):
    """A cell with abstract params (no initialiser runs), for what needs only shapes."""
    return nnx.eval_shape(lambda: cell(INPUT, HIDDEN, rngs=nnx.Rngs(0), **options))


def abstract_step(cell, h, x):
    return nnx.eval_shape(lambda cell, h, x: cell(h, x), cell, h, x)


def test_promote_dtype_metadata_and_graphdef_as_flax():
    calls = {}

    def recording(name):
        def promote(args, *, dtype=None):
            calls.setdefault(name, []).append((tuple(a is None for a in args), dtype))
            return tuple(None if a is None else jnp.asarray(a, jnp.float32) for a in args)
        return promote

    metadata = {"kernel_metadata": {"tag": "in"}, "recurrent_kernel_metadata": {"tag": "rec"},
                "bias_metadata": {"tag": "b"}}
    x, h = normal((BATCH, INPUT), 0), normal((BATCH, HIDDEN), 1)
    for name, cell in (("flax", FlaxGRUCell), ("ours", GRUCell)):
        made = abstract(cell, promote_dtype=recording(name), **metadata)
        abstract_step(made, h, x)
        assert [p.get_metadata()["tag"] for p in (
            made.dense_i.kernel, made.dense_h.kernel, made.dense_i.bias)] == ["in", "rec", "b"]
    # The input side with its bias, then the recurrent side without one, as Flax's Linears.
    assert calls["ours"] == calls["flax"] == [((False, False, False), None),
                                              ((False, False, True), None)]
    # Initialisers are not part of the graph (Flax's TestLayersSameGraph): one graphdef.
    zeros, ones = (abstract(kernel_init=init, recurrent_kernel_init=init, bias_init=init)
                   for init in (nnx.initializers.zeros, nnx.initializers.ones))
    assert nnx.graphdef(zeros) == nnx.graphdef(ones)
    assert zeros.num_feature_axes == 1


def test_keep_rngs_and_carry_init_as_flax():
    normal_init = nnx.initializers.normal()

    @jax.jit
    def carries():
        # Flax's warnings; then each cell's carries from the same streams with the same keys.
        kept = [cell(INPUT, HIDDEN, keep_rngs=True, carry_init=normal_init,
                     rngs=nnx.Rngs(0, carry=4)) for cell in (FlaxGRUCell, GRUCell)]
        return [[c.initialize_carry((7, 2, INPUT)),
                 c.initialize_carry((7, 2, INPUT)),     # the kept stream moved on
                 c.initialize_carry((BATCH, INPUT), nnx.Rngs(carry=5)),
                 c.initialize_carry((BATCH, INPUT), nnx.Rngs(carry=5), nnx.initializers.ones)]
                for c in kept]

    with pytest.warns(UserWarning) as record:
        want, got = carries()
    messages = [str(w.message) for w in record]
    for text in ("keep_rngs argument is deprecated", "carry_init is provided in __init__"):
        assert sum(m.startswith(text) for m in messages) == 2, messages
    chex.assert_trees_all_equal(got, want)
    assert got[0].shape == (7, 2, HIDDEN) and float(jnp.abs(got[0] - got[1]).max()) > 0
    np.testing.assert_array_equal(got[3], np.ones((BATCH, HIDDEN)))
    # Without rngs: an initialiser that draws needs them, as in Flax; zeros do not (Flax's cell
    # asks for rngs even then).
    plain = abstract()
    with pytest.raises(ValueError, match="RNGs must be provided"):
        plain.initialize_carry((BATCH, INPUT), carry_init=normal_init)
    np.testing.assert_array_equal(plain.initialize_carry((BATCH, INPUT)),
                                  np.zeros((BATCH, HIDDEN)))


def test_gru_params_load_and_errors():
    [(theirs, plain)] = pairs(0)
    rng = np.random.default_rng(0)
    params = jaxlstm.GRUParams(*(jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape in
                                 ((INPUT, 3 * HIDDEN), (HIDDEN, 3 * HIDDEN), (3 * HIDDEN,))),
                               jnp.zeros((HIDDEN,)))
    plain.load_gru_params(params)
    chex.assert_trees_all_equal(plain.gru_params(), params)
    with pytest.raises(ValueError, match=r"params.b_hn must be zero: flax.nnx.GRUCell has no "
                                         r"recurrent bias .* got max \|b_hn\| = 0.5"):
        plain.load_gru_params(params._replace(b_hn=jnp.full((HIDDEN,), -0.5)))
    with pytest.raises(ValueError, match="params are for input_size 5 and hidden_size 4, this "
                                         "cell's in_features 3 and hidden_features 4"):
        plain.load_gru_params(params._replace(w_x=jnp.zeros((5, 3 * HIDDEN))))
    # A wrong feature size: Flax's cell fails in dot_general (TypeError) naming neither side;
    # this one names the argument, what it expected and what came.
    x, h = jnp.zeros((BATCH, INPUT + 2)), jnp.zeros((BATCH, HIDDEN))
    with pytest.raises(TypeError, match="dot_general"):
        abstract_step(theirs, h, x)
    with pytest.raises(ValueError, match=r"inputs must have shape \(\.\.\., 3\) \(in_features "
                                         r"3\), got \(2, 5\)"):
        abstract_step(plain, h, x)
    with pytest.raises(ValueError, match=r"carry must have shape \(\.\.\., 4\) \(hidden_features "
                                         r"4\), got \(2, 3\)"):
        abstract_step(plain, jnp.zeros((BATCH, 3)), jnp.zeros((BATCH, INPUT)))


FLAX_TESTS = os.environ.get("JAXLSTM_FLAX_TESTS")
OURS = f"{GRUCell.__module__}.GRUCell"


def _flax_tests_of_the_swapped_cell(path: pathlib.Path, case_names: tuple[str, ...],
                                    only: str | None = None) -> unittest.TestSuite:
    """The cases' tests that name our cell in their parameters (or the test named `only`),
    loaded after `nnx.GRUCell` was swapped (parameter lists are built at import)."""
    spec = importlib.util.spec_from_file_location(f"flax_suite_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loader = unittest.TestLoader()
    return unittest.TestSuite(
        test for name in case_names for test in loader.loadTestsFromTestCase(getattr(module, name))
        if (only is not None and test.id().endswith(only)) or OURS in test.id())


@pytest.mark.skipif(not FLAX_TESTS, reason="set JAXLSTM_FLAX_TESTS to the tests/ folder of "
                                           "flax's sdist to run Flax's own NNX recurrent tests")
def test_flax_own_nnx_gru_tests_pass_with_the_cell_swapped(monkeypatch):
    """Flax's NNX tests of `nnx.GRUCell` with it swapped for this cell: recurrent_test.py's
    `test_rnn_with_gru_cell` (in nnx.RNN with an initial carry from nnx.Rngs), and
    linear_test.py's GRUCell cases (initialisers leave the graphdef alone; kernel, bias and
    recurrent-kernel metadata land on dense_i.kernel, dense_i.bias, dense_h.kernel)."""
    tests = pathlib.Path(FLAX_TESTS) / "nnx" / "nn"
    monkeypatch.setattr(nnx, "GRUCell", GRUCell)
    suite = unittest.TestSuite([
        _flax_tests_of_the_swapped_cell(tests / "recurrent_test.py", ("TestRNN",),
                                        only="test_rnn_with_gru_cell"),
        _flax_tests_of_the_swapped_cell(tests / "linear_test.py",
                                        ("TestLayersSameGraph", "TestLayersParamsMetadata")),
    ])
    result = unittest.TestResult()
    suite.run(result)
    assert result.testsRun == 3 and result.wasSuccessful(), result.failures + result.errors
