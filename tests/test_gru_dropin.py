"""`jaxlstm.flax.GRUCell` as a drop-in for `flax.linen.GRUCell`, against Flax's cell itself:
the same params (names, shapes, numbers from the same seed, initialisers), the same steps
(dtypes, activations, complex and integer inputs) and the same sequences in Flax's `nn.RNN` /
`nn.Bidirectional`; `to_gru_params` hands the params to `jaxlstm.gru`.

Flax's own test files are not in its wheel. With `JAXLSTM_FLAX_TESTS` naming the `tests/` folder
of flax's sdist (`pip download flax==<version> --no-binary :all: --no-deps`, then untar), the last
test also runs Flax's own recurrent tests with its cells swapped for this one.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import unittest

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm.flax import GRUCell, from_gru_params, to_gru_params

BATCH, STEPS, INPUT, HIDDEN = 2, 5, 3, 4
TOL = {"atol": 1e-6, "rtol": 1e-6}


def inputs(shape=(BATCH, STEPS, INPUT), seed=0, dtype=jnp.float32):
    """NumPy draws (eager jax.random compiles a program per shape), as `dtype`."""
    rng = np.random.default_rng(seed)
    draw = rng.standard_normal(shape)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        draw = draw + 1j * rng.standard_normal(shape)
    return jnp.asarray(draw, dtype)


def perturbed(variables):
    """Off the initialisation (zero biases would hide a bias read from the wrong place)."""
    rng = np.random.default_rng(9)
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a) + 0.3 * rng.standard_normal(
        a.shape).astype(np.float32)), variables)


def test_same_params_and_numbers_as_flax_in_rnn_and_in_jaxlstm_gru():
    xs, lengths = inputs(), jnp.array([STEPS, 2])
    ours = nn.RNN(GRUCell(HIDDEN), return_carry=True)
    theirs = nn.RNN(nn.GRUCell(HIDDEN), return_carry=True)
    # Names, shapes and numbers from the same seed: the same tree, bit for bit. (Each jitted
    # program here runs what would compile operation by operation eagerly.)
    variables, our_variables = jax.jit(lambda key, xs: (theirs.init(key, xs),
                                                        ours.init(key, xs)))(
        jax.random.key(7), xs)
    chex.assert_trees_all_equal(our_variables, variables)
    variables = perturbed(variables)
    options = ({}, {"seq_lengths": lengths}, {"seq_lengths": lengths, "reverse": True,
                                              "keep_order": True})

    @jax.jit
    def runs(variables, xs):
        # The same weights run whole sequences in jaxlstm.gru (its fused loop).
        return ([(ours.apply(variables, xs, **o), theirs.apply(variables, xs, **o))
                 for o in options],
                jaxlstm.gru(to_gru_params(variables["params"]["cell"]), xs,
                            seq_lengths=lengths))

    pairs, (hs, h) = runs(variables, xs)
    for got, want in pairs:
        chex.assert_trees_all_close(got, want, **TOL)
    carry, ys = pairs[1][1]   # Flax's, with lengths
    chex.assert_trees_all_close(hs[1, :2], ys[1, :2], **TOL)   # Flax keeps computing past a
    chex.assert_trees_all_close(h, carry, **TOL)             # length; jaxlstm writes zeros
    # And back exactly.
    params = to_gru_params(variables["params"]["cell"])
    chex.assert_trees_all_equal(from_gru_params(params), variables["params"]["cell"])


def test_initialisers_dtypes_activations_and_inputs_as_flax():
    x = inputs((BATCH, INPUT))

    def both(cell_options, x=x, carry_dtype=jnp.float32):
        carry = inputs((BATCH, HIDDEN), seed=3, dtype=carry_dtype)
        results = []
        for cell in (nn.GRUCell(HIDDEN, **cell_options), GRUCell(HIDDEN, **cell_options)):
            variables = cell.init(jax.random.key(4), carry, x)
            results.append((variables, cell.apply(variables, carry, x)))
        return results

    options = {"kernel_init": nn.initializers.normal(0.5), "bias_init": nn.initializers.uniform(),
               "recurrent_kernel_init": nn.initializers.lecun_normal(), "gate_fn": jnp.tanh,
               "activation_fn": jax.nn.relu}
    (want_vars, want), (got_vars, got) = both(options)
    chex.assert_trees_all_equal(got_vars, want_vars)
    assert float(jnp.abs(want_vars["params"]["hn"]["bias"]).min()) > 0  # bias_init ran
    chex.assert_trees_all_close(got, want, **TOL)
    # bfloat16 params and computation; the carry's dtype as Flax leaves it. (Flax's default
    # orthogonal init has no bfloat16 QR on a CPU, in either cell.)
    (_, want), (_, got) = both({"param_dtype": jnp.bfloat16, "dtype": jnp.bfloat16,
                                "recurrent_kernel_init": nn.initializers.lecun_normal()})
    assert jax.tree.map(lambda a: a.dtype, got) == jax.tree.map(lambda a: a.dtype, want)
    chex.assert_trees_all_close(got, want, atol=1e-2)
    # Integer inputs promote to the params' float; complex inputs make a complex carry.
    for special in (jnp.arange(BATCH * INPUT).reshape(BATCH, INPUT),
                    inputs((BATCH, INPUT), dtype=jnp.complex64)):
        (_, want), (_, got) = both({}, x=special)
        assert jax.tree.map(lambda a: a.dtype, got) == jax.tree.map(lambda a: a.dtype, want)
        chex.assert_trees_all_close(got, want, atol=1e-5, rtol=1e-5)
    cell = GRUCell(HIDDEN, carry_init=nn.initializers.ones)
    np.testing.assert_array_equal(cell.initialize_carry(jax.random.key(0), (7, 2, INPUT)),
                                  np.ones((7, 2, HIDDEN)))
    assert cell.num_feature_axes == 1


def test_bidirectional_two_batch_dims_time_major_and_unroll_as_flax():
    xs = inputs((2, BATCH, STEPS, INPUT))
    lengths = jnp.array([[STEPS, 1], [3, 4]])

    def bidirectional(cell):
        return nn.Bidirectional(nn.RNN(cell(HIDDEN), unroll=2), nn.RNN(cell(HIDDEN)),
                                return_carry=True)

    theirs = bidirectional(nn.GRUCell)
    time_major = jnp.moveaxis(xs, 2, 0)
    theirs_tm = nn.RNN(nn.GRUCell(HIDDEN), time_major=True)
    # Random variables in the shapes Flax's init gives (traced, not compiled: the init's
    # random draws compile slowly; test_same_params_... compares the inits themselves).
    rng = np.random.default_rng(0)
    variables, variables_tm = jax.tree.map(
        lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype),
        jax.eval_shape(lambda: (theirs.init(jax.random.key(0), xs, seq_lengths=lengths),
                                theirs_tm.init(jax.random.key(1), time_major))))

    # Each side in one jitted program (eagerly every operation compiles on its own).

    def runs(bidirectional_rnn, time_major_rnn):
        return jax.jit(lambda v, v_tm: (
            bidirectional_rnn.apply(v, xs, seq_lengths=lengths),
            time_major_rnn.apply(v_tm, time_major)))(variables, variables_tm)

    chex.assert_trees_all_close(
        runs(bidirectional(GRUCell), nn.RNN(GRUCell(HIDDEN), time_major=True)),
        runs(theirs, theirs_tm), **TOL)


def test_to_gru_params_names_what_it_expected():
    with pytest.raises(ValueError, match=r"cell_params must be a Flax GRUCell's params: ir, iz, "
                                         r"in .* got \{ii: \{kernel: \(3, 4\)\}\}"):
        to_gru_params({"ii": {"kernel": jnp.zeros((3, 4))}})


FLAX_TESTS = os.environ.get("JAXLSTM_FLAX_TESTS")
LSTM_CARRY_TESTS = {"test_numerical_equivalence_with_mask", "test_return_carry"}
"""linen_recurrent_test's tests that read the LSTM's (c, h) carry: they fail for any GRU cell,
Flax's own included."""


def _run_flax_suite(path: pathlib.Path, case_names: tuple[str, ...]) -> unittest.TestResult:
    spec = importlib.util.spec_from_file_location(f"flax_suite_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(getattr(module, name))
                               for name in case_names)
    result = unittest.TestResult()
    suite.run(result)
    return result


def _failed(result: unittest.TestResult) -> set[str]:
    return {test.id().split(".")[-1] for test, _ in result.failures + result.errors}


@pytest.mark.skipif(not FLAX_TESTS, reason="set JAXLSTM_FLAX_TESTS to the tests/ folder of "
                                           "flax's sdist to run Flax's own recurrent tests")
def test_flax_own_recurrent_tests_pass_with_the_cell_swapped(monkeypatch):
    """linen_test.py's RecurrentTest (its GRUCell cases: param names and shapes, complex
    inputs) with nn.GRUCell swapped for this cell; and linen_recurrent_test.py (written for
    nn.LSTMCell) with that swapped for this cell, where all pass but the two that read an
    LSTM's (c, h) carry, as with Flax's own GRUCell."""
    tests = pathlib.Path(FLAX_TESTS) / "linen"
    monkeypatch.setattr(nn, "GRUCell", GRUCell)
    result = _run_flax_suite(tests / "linen_test.py", ("RecurrentTest",))
    assert result.testsRun >= 9 and result.wasSuccessful(), result.failures + result.errors
    monkeypatch.setattr(nn, "LSTMCell", GRUCell)
    result = _run_flax_suite(tests / "linen_recurrent_test.py", ("RNNTest", "BidirectionalTest"))
    assert result.testsRun >= 20 and _failed(result) == LSTM_CARRY_TESTS
