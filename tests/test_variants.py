"""Cell variants, the LSTMP projection, recurrent dropout and zoneout against independent refs.

The references (`tests/reference_variants.py`) are written from the equations alone: a float64
NumPy loop over every sequence and step for the forward, and the same loop in jnp for gradients.

Every call of `jaxlstm.lstm` with a new configuration compiles (about a second on a small CPU),
so the cases below are chosen to cover each variant in both directions, with and without a
projection, in as few compilations as possible, rather than as a full product.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import Directions
from tests.reference_variants import (
    CELLS,
    gate_names,
    jax_variant_lstm,
    numpy_variant_lstm,
)

BATCH, STEPS, INPUT, HIDDEN, PROJ = 3, 6, 4, 5, 3
LENGTHS = (STEPS, 0, 3)
FWD_TOL = {"atol": 2e-6, "rtol": 2e-5}
GRAD_TOL = {"atol": 1e-5, "rtol": 1e-5}
CELL_TYPES = {
    "lstm": type(None),
    "peephole": jaxlstm.PeepholeWeights,
    "cifg": jaxlstm.CoupledGates,
    "layer_norm": jaxlstm.LayerNormWeights,
    "retained_readout": jaxlstm.RetainedReadoutWeights,
}
VARIANTS = [(cell, proj) for cell in CELLS for proj in (None, PROJ)]


def variant_id(cell, proj):
    return f"{cell}-proj{proj}" if proj else cell


def perturb(tree, key, scale=0.5):
    """Adds scale * N(0, 1) to every leaf, so no weight keeps its (special) initial value."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves)) if leaves else []
    leaves = [a + scale * jax.random.normal(k, a.shape, a.dtype)
              for a, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(treedef, leaves)


@functools.cache
def make(cell, proj, seed=0):
    """Params with random bias and cell weights, inputs (N, T, I) and a random initial state."""
    keys = jax.random.split(jax.random.key(seed), 6)
    params = jaxlstm.init_lstm(keys[0], INPUT, HIDDEN, cell=cell, proj_size=proj)
    params = params._replace(
        b=jax.random.normal(keys[1], params.b.shape), cell=perturb(params.cell, keys[2])
    )
    xs = jax.random.normal(keys[3], (BATCH, STEPS, INPUT))
    state = jaxlstm.LSTMState(
        h=jax.random.normal(keys[4], (BATCH, proj or HIDDEN)),
        c=jax.random.normal(keys[5], (BATCH, HIDDEN)),
    )
    return params, xs, state


def gates_dict(gates):
    return gates._asdict()


def assert_matches_numpy(out, want, tol=FWD_TOL):
    """`out` = jaxlstm's (hs, final[, gates]); `want` = numpy_variant_lstm's."""
    want_hs, (want_h, want_c), want_gates = want
    np.testing.assert_allclose(out[0], want_hs, **tol)
    np.testing.assert_allclose(out[1].h, want_h, **tol)
    np.testing.assert_allclose(out[1].c, want_c, **tol)
    if len(out) > 2:
        got = gates_dict(out[2])
        assert tuple(got) == tuple(want_gates)
        for name, value in got.items():
            np.testing.assert_allclose(value, want_gates[name], err_msg=name, **tol)


def loss_weights(cell, proj, seed=1):
    keys = jax.random.split(jax.random.key(seed), 4)
    names = gate_names(cell)
    gate_weights = jax.random.normal(keys[3], (len(names), BATCH, STEPS, HIDDEN))
    return {
        "hs": jax.random.normal(keys[0], (BATCH, STEPS, proj or HIDDEN)),
        "h": jax.random.normal(keys[1], (BATCH, proj or HIDDEN)),
        "c": jax.random.normal(keys[2], (BATCH, HIDDEN)),
        "gates": dict(zip(names, gate_weights, strict=True)),
    }


def weighted_loss(hs, h, c, gates, w):
    total = jnp.sum(hs * w["hs"]) + jnp.sum(h * w["h"]) + jnp.sum(c * w["c"])
    return total + sum(jnp.sum(gates[k] * w["gates"][k]) for k in w["gates"])


def lstm_grads(params, xs, state, w, **kwargs):
    """(grads wrt params, xs and state; jaxlstm's outputs (hs, final, gates)), in one jit."""

    def loss(p, x, s):
        out = jaxlstm.lstm(p, x, initial_state=s, return_gates=True, **kwargs)
        return weighted_loss(out[0], out[1].h, out[1].c, gates_dict(out[2]), w), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        params, xs, state)
    return grads, out


def reference_grads(cell, params, xs, state, w, **kwargs):
    def loss(p, x, s):
        hs, (h, c), gates = jax_variant_lstm(p, x, s, cell=cell, **kwargs)
        return weighted_loss(hs, h, c, gates, w)

    return jax.grad(loss, argnums=(0, 1, 2))(params, xs, state)


def regularised(rates, **kwargs):
    return {"recurrent_dropout": rates[0], "zoneout_h": rates[1], "zoneout_c": rates[2],
            **kwargs}


def drawn_masks(key, proj, rates):
    """The masks `jaxlstm.lstm` draws for `make(cell, proj)`'s batch, as reference kwargs."""
    masks = jaxlstm.draw_recurrent_masks(key, STEPS, (BATCH,), HIDDEN, proj or HIDDEN, *rates)
    return {"recurrent_mask": masks.recurrent, "keep_h": masks.keep_h, "keep_c": masks.keep_c}


class TestInit:
    @pytest.mark.parametrize("cell,proj", VARIANTS, ids=[variant_id(*v) for v in VARIANTS])
    def test_shapes_and_initial_values(self, cell, proj):
        params = jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN, cell=cell, proj_size=proj)
        gates = 3 if cell == "cifg" else 4
        assert params.w_x.shape == (INPUT, gates * HIDDEN)
        assert params.w_h.shape == (proj or HIDDEN, gates * HIDDEN)
        assert params.b.shape == (gates * HIDDEN,)
        assert type(params.cell) is CELL_TYPES[cell]
        forget_block = 0 if cell == "cifg" else 1
        b = np.asarray(params.b).reshape(gates, HIDDEN)
        np.testing.assert_array_equal(b[forget_block], 1.0)
        np.testing.assert_array_equal(np.delete(b, forget_block, axis=0), 0.0)
        if proj is None:
            assert params.w_p is None
        else:
            assert params.w_p.shape == (HIDDEN, PROJ)
            assert np.std(np.asarray(params.w_p)) > 0.1
        if cell == "peephole":
            for w in params.cell:
                assert w.shape == (HIDDEN,)
                np.testing.assert_array_equal(w, 0.0)
        elif cell == "cifg":
            assert jax.tree.leaves(params.cell) == []
        elif cell == "layer_norm":
            assert params.cell.gain_x.shape == params.cell.gain_h.shape == (4 * HIDDEN,)
            assert params.cell.gain_c.shape == params.cell.bias_c.shape == (HIDDEN,)
            for gain in params.cell[:3]:
                np.testing.assert_array_equal(gain, 1.0)
            np.testing.assert_array_equal(params.cell.bias_c, 0.0)
        elif cell == "retained_readout":
            assert params.cell.w_u.shape == (HIDDEN, HIDDEN)
            assert params.cell.b_u.shape == (HIDDEN,)
            assert np.std(np.asarray(params.cell.w_u)) > 0.1
            np.testing.assert_array_equal(params.cell.b_u, 0.0)

    def test_dtype_applies_to_every_leaf(self):
        params = jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN, cell="layer_norm",
                                   proj_size=PROJ, dtype=jnp.bfloat16)
        assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(params))

    def test_standard_cell_by_name_is_the_default(self):
        chex.assert_trees_all_equal(
            jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN, cell="lstm"),
            jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN),
        )

    @pytest.mark.parametrize("cell,proj", [("cifg", PROJ), ("layer_norm", None)])
    def test_stack_layers_read_projected_outputs(self, cell, proj):
        params = jaxlstm.init_lstm_stack(jax.random.key(0), INPUT, HIDDEN, num_layers=2,
                                         bidirectional=True, cell=cell, proj_size=proj)
        gates = 3 if cell == "cifg" else 4
        for n, layer in enumerate(params):
            for p in layer:
                assert type(p.cell) is CELL_TYPES[cell]
                assert p.w_x.shape == ((INPUT if n == 0 else 2 * (proj or HIDDEN)), gates * HIDDEN)
                assert p.w_h.shape == (proj or HIDDEN, gates * HIDDEN)
                assert (p.w_p is None) == (proj is None)


# Gradient cases: (cell, proj, reverse, unroll, remat_chunk, regularisation, autodiff).
# Each variant runs in both directions (the forward test runs the direction its gradient case
# does not), with and without a projection; unroll=2 runs the chunked loops (forward chunks
# and backward chunks of 2 steps); `autodiff` also checks fused_backward=False; regularisation
# is None, ("eval", rates) or ("train", rates) with rates (recurrent_dropout, zoneout_h,
# zoneout_c).
GRAD_CASES = [
    ("lstm", None, False, 2, None, None, False),
    ("lstm", PROJ, True, 1, 4, ("train", (0.4, 0.0, 0.0)), False),
    ("peephole", None, True, 1, None, ("eval", (0.3, 0.3, 0.6)), False),
    ("peephole", PROJ, False, 1, 2, ("train", (0.3, 0.3, 0.5)), True),
    ("cifg", None, False, 1, 4, None, False),
    ("cifg", PROJ, True, 2, None, ("train", (0.0, 0.4, 0.0)), False),
    ("layer_norm", None, True, 2, 2, ("train", (0.25, 0.0, 0.4)), False),
    ("layer_norm", PROJ, False, 1, None, ("eval", (0.5, 0.2, 0.4)), True),
    ("retained_readout", None, False, 1, None, None, False),
    ("retained_readout", PROJ, True, 2, 4, ("train", (0.25, 0.35, 0.45)), False),
]


def grad_case_id(case):
    cell, proj, reverse, unroll, remat, reg, autodiff = case
    reg_id = f"-{reg[0]}{reg[1]}" if reg else ""
    return (f"{variant_id(cell, proj)}-rev{reverse}-unroll{unroll}-remat{remat}{reg_id}"
            f"-autodiff{autodiff}")


class TestForward:
    @pytest.mark.parametrize("cell,proj", VARIANTS, ids=[variant_id(*v) for v in VARIANTS])
    def test_matches_numpy_reference(self, cell, proj):
        reverse = not next(case[2] for case in GRAD_CASES if case[:2] == (cell, proj))
        params, xs, state = make(cell, proj)
        # Two cases keep the automatic chunking (3 steps per scan iteration here); the others
        # compile faster with one step per iteration (the gradient cases also run chunks of 2).
        unroll = None if cell in ("layer_norm", "retained_readout") and proj is None else 1
        out = jax.jit(lambda p, x, s: jaxlstm.lstm(
            p, x, initial_state=s, seq_lengths=jnp.array(LENGTHS), reverse=reverse,
            return_gates=True, unroll=unroll))(params, xs, state)
        want = numpy_variant_lstm(params, xs, cell=cell, initial_state=state,
                                  seq_lengths=LENGTHS, reverse=reverse)
        assert out[0].shape == (BATCH, STEPS, proj or HIDDEN)
        expected_type = jaxlstm.RetainedReadoutGates if cell == "retained_readout" else (
            jaxlstm.LSTMGates)
        assert type(out[2]) is expected_type
        assert_matches_numpy(out, want)
        # Padded steps: outputs and gates exactly zero; a length of 0 keeps the initial state.
        np.testing.assert_array_equal(out[0][1], 0.0)
        np.testing.assert_array_equal(out[0][2, 3:], 0.0)
        for field in out[2]:
            np.testing.assert_array_equal(field[2, 3:], 0.0)
        np.testing.assert_array_equal(out[1].h[1], state.h[1])
        np.testing.assert_array_equal(out[1].c[1], state.c[1])

    def test_eager_without_gates_equals_jit_with_gates(self):
        params, xs, state = make("retained_readout", PROJ)
        plain = jaxlstm.lstm(params, xs, initial_state=state, seq_lengths=jnp.array(LENGTHS))
        with_gates = jax.jit(lambda p, x, s: jaxlstm.lstm(
            p, x, initial_state=s, seq_lengths=jnp.array(LENGTHS), return_gates=True))(
            params, xs, state)
        chex.assert_trees_all_close(with_gates[:2], plain, atol=1e-6, rtol=1e-6)

    def test_zero_initial_state_and_no_lengths(self):
        params, xs, _ = make("peephole", PROJ)
        out = jax.jit(lambda p, x: jaxlstm.lstm(p, x, unroll=1))(params, xs)
        assert_matches_numpy(out, numpy_variant_lstm(params, xs, cell="peephole"))

    def test_lstm_cell_is_one_step(self):
        for cell, proj in [("lstm", PROJ), ("peephole", None), ("cifg", PROJ),
                           ("layer_norm", None), ("retained_readout", PROJ)]:
            params, xs, state = make(cell, proj)
            new_state, h = jax.jit(jaxlstm.lstm_cell)(params, state, xs[:, 0])
            want_hs, (want_h, want_c), _ = numpy_variant_lstm(params, xs[:, :1], cell=cell,
                                                              initial_state=state)
            np.testing.assert_allclose(h, want_hs[:, 0], err_msg=cell, **FWD_TOL)
            np.testing.assert_allclose(new_state.h, want_h, err_msg=cell, **FWD_TOL)
            np.testing.assert_allclose(new_state.c, want_c, err_msg=cell, **FWD_TOL)

    def test_zero_peepholes_equal_the_standard_cell(self):
        params = jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN, cell="peephole")
        xs = make("lstm", None)[1]
        run = jax.jit(lambda p: jaxlstm.lstm(p, xs, unroll=1)[0])
        np.testing.assert_allclose(run(params), run(params._replace(cell=None)),
                                   atol=1e-6, rtol=1e-6)


class TestGradients:
    @pytest.mark.parametrize(
        "cell,proj,reverse,unroll,remat_chunk,reg,autodiff", GRAD_CASES,
        ids=[grad_case_id(case) for case in GRAD_CASES])
    def test_match_reference_autodiff(self, cell, proj, reverse, unroll, remat_chunk, reg,
                                      autodiff):
        params, xs, state = make(cell, proj)
        w = loss_weights(cell, proj)
        options, reference_options = {}, {}
        if reg is not None:
            mode, rates = reg
            if mode == "eval":
                options = regularised(rates)
                reference_options = {"zoneout": rates[1:]}
            else:
                # RBG keys compile faster than threefry; one case keeps the default.
                key = jax.random.key(42, impl="threefry2x32" if cell == "lstm" else "rbg")
                options = regularised(rates, key=key, deterministic=False)
                reference_options = drawn_masks(key, proj, rates)
        want = reference_grads(cell, params, xs, state, w, seq_lengths=LENGTHS, reverse=reverse,
                               **reference_options)
        for fused in (True, False) if autodiff else (True,):
            got, out = lstm_grads(params, xs, state, w, seq_lengths=jnp.array(LENGTHS),
                                  reverse=reverse, unroll=unroll, remat_chunk=remat_chunk,
                                  fused_backward=fused, **options)
            chex.assert_trees_all_close(got, want, **GRAD_TOL)
        want_out = numpy_variant_lstm(params, xs, cell=cell, initial_state=state,
                                      seq_lengths=LENGTHS, reverse=reverse, **reference_options)
        assert_matches_numpy(out, want_out)
        if reg is not None and reg[0] == "train":
            # The masks made a difference (the test is not trivially the evaluation one).
            plain = numpy_variant_lstm(params, xs, cell=cell, initial_state=state,
                                       seq_lengths=LENGTHS, reverse=reverse)
            assert not np.allclose(out[0], plain[0], atol=1e-3)
        # Nothing flows into the padded inputs of sequence 1 (length 0) and 2 (length 3).
        np.testing.assert_array_equal(got[1][1], 0.0)
        np.testing.assert_array_equal(got[1][2, 3:], 0.0)
        assert all(np.any(g != 0) for g in jax.tree.leaves(got[0]))

    def test_vmap_of_grad_over_params(self):
        params, xs, state = make("peephole", PROJ)
        stacked = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params)

        def loss(p):
            return jnp.sum(jnp.sin(jaxlstm.lstm(p, xs, initial_state=state, unroll=1)[0]))

        def reference_loss(p):
            hs = jax_variant_lstm(p, xs, state, cell="peephole", seq_lengths=(STEPS,) * BATCH)[0]
            return jnp.sum(jnp.sin(hs))

        grads = jax.jit(jax.vmap(jax.grad(loss)))(stacked)
        for n in range(2):
            one = jax.tree.map(lambda a, n=n: a[n], stacked)
            chex.assert_trees_all_close(jax.tree.map(lambda a, n=n: a[n], grads),
                                        jax.grad(reference_loss)(one), **GRAD_TOL)


class TestTransformations:
    def test_vmap_over_sequences(self):
        params, xs, state = make("cifg", PROJ)
        hs, final = jax.jit(jax.vmap(
            lambda x, s, n: jaxlstm.lstm(params, x, initial_state=s, seq_lengths=n, unroll=1)
        ))(xs, state, jnp.array(LENGTHS))
        want = numpy_variant_lstm(params, xs, cell="cifg", initial_state=state,
                                  seq_lengths=LENGTHS)
        assert_matches_numpy((hs, final), want)

    def test_vmap_over_params(self):
        params, xs, _ = make("layer_norm", PROJ)
        other = make("layer_norm", PROJ, seed=1)[0]
        stacked = jax.tree.map(lambda *a: jnp.stack(a), params, other)
        hs = jax.jit(jax.vmap(lambda p: jaxlstm.lstm(p, xs, unroll=1)[0]))(stacked)
        for n in range(2):
            one = jax.tree.map(lambda a, n=n: a[n], stacked)
            np.testing.assert_allclose(hs[n], numpy_variant_lstm(one, xs, cell="layer_norm")[0],
                                       **FWD_TOL)

    def test_time_major_and_several_batch_dims(self):
        params, xs, state = make("layer_norm", PROJ)
        want = numpy_variant_lstm(params, xs, cell="layer_norm", initial_state=state)
        # (T, 3, 1, I): two batch dimensions, time first.
        xs_tm = jnp.moveaxis(xs, 1, 0)[:, :, None]
        state_2d = jax.tree.map(lambda a: a[:, None], state)
        hs, final = jax.jit(lambda p, x, s: jaxlstm.lstm(p, x, initial_state=s, time_major=True,
                                                         unroll=1))(params, xs_tm, state_2d)
        assert hs.shape == (STEPS, BATCH, 1, PROJ) and final.c.shape == (BATCH, 1, HIDDEN)
        np.testing.assert_allclose(jnp.moveaxis(hs[:, :, 0], 0, 1), want[0], **FWD_TOL)
        np.testing.assert_allclose(final.h[:, 0], want[1][0], **FWD_TOL)
        np.testing.assert_allclose(final.c[:, 0], want[1][1], **FWD_TOL)

    def test_unbatched_sequence(self):
        params, xs, state = make("retained_readout", PROJ)
        hs, final = jax.jit(lambda p, x, s: jaxlstm.lstm(p, x, initial_state=s, unroll=1))(
            params, xs[0], jax.tree.map(lambda a: a[0], state))
        want = numpy_variant_lstm(params, xs[:1], cell="retained_readout",
                                  initial_state=(state.h[:1], state.c[:1]))
        assert hs.shape == (STEPS, PROJ)
        np.testing.assert_allclose(hs, want[0][0], **FWD_TOL)
        np.testing.assert_allclose(final.c, want[1][1][0], **FWD_TOL)

    @pytest.mark.parametrize("cell", ["layer_norm", "retained_readout"])
    def test_bfloat16_close_to_float32(self, cell):
        params, xs, state = make(cell, PROJ)
        want = numpy_variant_lstm(params, xs, cell=cell, initial_state=state,
                                  seq_lengths=LENGTHS)
        low = jax.tree.map(lambda a: a.astype(jnp.bfloat16), (params, xs, state))
        hs, final = jax.jit(lambda p, x, s: jaxlstm.lstm(
            p, x, initial_state=s, seq_lengths=jnp.array(LENGTHS), unroll=1))(*low)
        assert hs.dtype == final.h.dtype == final.c.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(hs, np.float32), want[0], atol=5e-2)
        np.testing.assert_allclose(np.asarray(final.c, np.float32), want[1][1], atol=5e-2)

    def test_bfloat16_gradients_close_to_float32(self):
        cell = "cifg"
        params, xs, state = make(cell, PROJ)
        w = loss_weights(cell, PROJ)
        low = jax.tree.map(lambda a: a.astype(jnp.bfloat16), (params, xs, state))
        got, _ = lstm_grads(*low, w, seq_lengths=jnp.array(LENGTHS), unroll=1)
        want = reference_grads(cell, params, xs, state, w, seq_lengths=LENGTHS)
        for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            assert g.dtype == jnp.bfloat16
            scale = float(jnp.max(jnp.abs(r))) + 1e-3
            np.testing.assert_allclose(np.asarray(g, np.float32), r, atol=0.05 * scale)


class TestRegularisation:
    def test_deterministic_ignores_the_key(self):
        # Evaluation: recurrent dropout is the identity and zoneout uses its expectation,
        # whether or not a key is given.
        params, xs, state = make("retained_readout", None)
        rates = (0.5, 0.3, 0.6)
        hs, final = jax.jit(lambda k: jaxlstm.lstm(
            params, xs, initial_state=state, seq_lengths=jnp.array(LENGTHS), reverse=True,
            unroll=1, key=k, **regularised(rates)))(jax.random.key(1))
        want = numpy_variant_lstm(params, xs, cell="retained_readout", initial_state=state,
                                  seq_lengths=LENGTHS, reverse=True, zoneout=rates[1:])
        assert_matches_numpy((hs, final), want)

    def test_training_needs_a_key(self):
        params, xs, _ = make("lstm", None)
        for rates in [(0.2, 0.0, 0.0), (0.0, 0.2, 0.0), (0.0, 0.0, 0.2)]:
            with pytest.raises(ValueError, match="key"):
                jaxlstm.lstm(params, xs, deterministic=False, **regularised(rates))
        # No rate set: nothing to draw, no key needed.
        out = jax.jit(lambda p, x: jaxlstm.lstm(p, x, deterministic=False, unroll=1))(params, xs)
        assert_matches_numpy(out, numpy_variant_lstm(params, xs, cell="lstm"))

    def test_keys(self):
        # Different keys differ, the same key repeats, and vmap over keys is a loop over keys.
        params, xs, _ = make("cifg", PROJ)

        def run(k):
            return jaxlstm.lstm(params, xs, key=k, deterministic=False, unroll=1,
                                **regularised((0.3, 0.2, 0.2)))[0]

        # Threefry keys: with RBG keys, vmap draws other bits than a loop (a JAX property).
        keys = jax.random.split(jax.random.key(5), 2)
        one = jax.jit(run)
        a, b, a_again = one(keys[0]), one(keys[1]), one(keys[0])
        np.testing.assert_array_equal(a, a_again)
        assert not np.allclose(a, b, atol=1e-3)
        both = jax.jit(jax.vmap(run))(keys)
        np.testing.assert_allclose(both[0], a, atol=1e-6, rtol=1e-6)
        np.testing.assert_allclose(both[1], b, atol=1e-6, rtol=1e-6)

    def test_mask_shapes_values_and_rates(self):
        p_rec, p_h, p_c = 0.3, 0.2, 0.6
        masks = jaxlstm.draw_recurrent_masks(jax.random.key(0), 8, (20, 25), 60, 50,
                                             p_rec, p_h, p_c)
        assert isinstance(masks, jaxlstm.RecurrentMasks)
        # One recurrent mask per sequence: no time axis, so the same at every step.
        assert masks.recurrent.shape == (20, 25, 50)
        assert masks.keep_h.shape == (8, 20, 25, 50) and masks.keep_h.dtype == jnp.bool_
        assert masks.keep_c.shape == (8, 20, 25, 60) and masks.keep_c.dtype == jnp.bool_
        values = np.unique(np.asarray(masks.recurrent))
        np.testing.assert_allclose(values, [0.0, 1.0 / (1.0 - p_rec)], rtol=1e-6)
        # 25,000 draws: standard error of the fraction about 0.003 (0.001 for the others).
        assert abs(np.mean(np.asarray(masks.recurrent) > 0) - (1 - p_rec)) < 0.015
        assert abs(np.mean(np.asarray(masks.keep_h)) - p_h) < 0.01
        assert abs(np.mean(np.asarray(masks.keep_c)) - p_c) < 0.01
        none = jaxlstm.draw_recurrent_masks(jax.random.key(0), 4, (2,), 5, 5, 0.0, 0.0, 0.0)
        assert none == jaxlstm.RecurrentMasks(None, None, None)

    def test_masks_follow_the_documented_draws(self):
        key = jax.random.key(9)
        masks = jaxlstm.draw_recurrent_masks(key, STEPS, (BATCH,), HIDDEN, PROJ, 0.3, 0.4, 0.5)
        k_rec, k_h, k_c = jax.random.split(key, 3)
        keep = jax.random.bernoulli(k_rec, 0.7, (BATCH, PROJ))
        np.testing.assert_allclose(masks.recurrent, np.where(keep, 1 / 0.7, 0.0), rtol=1e-6)
        np.testing.assert_array_equal(
            masks.keep_h, jax.random.bernoulli(k_h, 0.4, (STEPS, BATCH, PROJ)))
        np.testing.assert_array_equal(
            masks.keep_c, jax.random.bernoulli(k_c, 0.5, (STEPS, BATCH, HIDDEN)))

    def test_zoneout_keeping_every_unit_keeps_the_initial_state(self):
        # Rates must be below 1; just below 1, this key keeps every unit at every step.
        params, xs, state = make("layer_norm", PROJ)
        key, rate = jax.random.key(3), 1.0 - 1e-6
        masks = drawn_masks(key, PROJ, (0.0, rate, rate))
        assert np.all(masks["keep_h"]) and np.all(masks["keep_c"])  # precondition for this key
        hs, final = jax.jit(lambda p, x, s: jaxlstm.lstm(
            p, x, initial_state=s, seq_lengths=jnp.array(LENGTHS), zoneout_h=rate,
            zoneout_c=rate, key=key, deterministic=False, unroll=1))(params, xs, state)
        valid = np.arange(STEPS) < np.array(LENGTHS)[:, None]
        np.testing.assert_allclose(np.asarray(hs)[valid],
                                   np.broadcast_to(state.h[:, None], hs.shape)[valid], atol=1e-7)
        np.testing.assert_array_equal(np.asarray(hs)[~valid], 0.0)
        chex.assert_trees_all_close(final, state, atol=1e-7, rtol=0)

    @pytest.mark.parametrize("name", ["recurrent_dropout", "zoneout_h", "zoneout_c"])
    @pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
    def test_rates_out_of_range(self, name, rate):
        params, xs, _ = make("lstm", None)
        with pytest.raises(ValueError, match=name):
            jaxlstm.lstm(params, xs, key=jax.random.key(0), deterministic=False, **{name: rate})
        with pytest.raises(ValueError, match=name):
            jaxlstm.lstm(params, xs, **{name: rate})


def manual_stack(params, xs, seq_lengths, **kwargs):
    """Two directions per layer, written out with jaxlstm.lstm."""
    layer_input, finals = xs, []
    for layer in params:
        hs_f, s_f = jaxlstm.lstm(layer.forward, layer_input, seq_lengths=seq_lengths, **kwargs)
        hs_b, s_b = jaxlstm.lstm(layer.backward, layer_input, seq_lengths=seq_lengths,
                                 reverse=True, **kwargs)
        finals.append(Directions(s_f, s_b))
        layer_input = jnp.concatenate([hs_f, hs_b], axis=-1)
    return layer_input, tuple(finals)


class TestStack:
    def test_matches_layer_by_layer(self):
        cell, proj = "layer_norm", PROJ
        params = jaxlstm.init_lstm_stack(jax.random.key(0), INPUT, HIDDEN, num_layers=2,
                                         bidirectional=True, cell=cell, proj_size=proj)
        params = perturb(params, jax.random.key(1), 0.3)
        xs = make(cell, proj)[1]
        lengths = jnp.array(LENGTHS)
        options = {"zoneout_h": 0.2, "zoneout_c": 0.4, "recurrent_dropout": 0.3, "unroll": 1}
        outputs, finals = jax.jit(lambda p, x: jaxlstm.lstm_stack(
            p, x, seq_lengths=lengths, **options))(params, xs)
        want_outputs, want_finals = jax.jit(lambda p, x: manual_stack(
            p, x, lengths, **options))(params, xs)
        assert outputs.shape == (BATCH, STEPS, 2 * (proj or HIDDEN))
        assert finals[1].backward.h.shape == (BATCH, proj or HIDDEN)
        assert finals[1].backward.c.shape == (BATCH, HIDDEN)
        np.testing.assert_allclose(outputs, want_outputs, atol=1e-6, rtol=1e-6)
        chex.assert_trees_all_close(finals, want_finals, atol=1e-6, rtol=1e-6)
        # Layer 0's forward direction against the NumPy reference too.
        ref = numpy_variant_lstm(params[0].forward, xs, cell=cell, seq_lengths=LENGTHS,
                                 zoneout=(0.2, 0.4))
        np.testing.assert_allclose(finals[0].forward.h, ref[1][0], **FWD_TOL)
        np.testing.assert_allclose(finals[0].forward.c, ref[1][1], **FWD_TOL)

    def test_training(self):
        params = jaxlstm.init_lstm_stack(jax.random.key(0), INPUT, HIDDEN, num_layers=2,
                                         bidirectional=True, cell="cifg", proj_size=PROJ)
        xs = make("cifg", PROJ)[1]
        options = {"seq_lengths": jnp.array(LENGTHS), "recurrent_dropout": 0.3,
                   "zoneout_h": 0.2, "zoneout_c": 0.3, "dropout_rate": 0.1, "unroll": 1}
        with pytest.raises(ValueError, match="key"):
            jaxlstm.lstm_stack(params, xs, deterministic=False, **options)

        def loss(p, k):
            out, finals = jaxlstm.lstm_stack(p, xs, key=k, deterministic=False, **options)
            return jnp.sum(out ** 2), (out, finals)

        run = jax.jit(jax.value_and_grad(loss, has_aux=True))
        (_, (out_a, finals_a)), grads = run(params, jax.random.key(0))
        (_, (out_b, _)), _ = run(params, jax.random.key(1))
        evaluation, _ = jax.jit(lambda p: jaxlstm.lstm_stack(p, xs, **options))(params)
        assert out_a.shape == (BATCH, STEPS, 2 * PROJ)
        np.testing.assert_array_equal(out_a, run(params, jax.random.key(0))[0][1][0])
        assert not np.allclose(out_a, out_b, atol=1e-3)
        assert not np.allclose(out_a, evaluation, atol=1e-3)
        np.testing.assert_array_equal(out_a[1], 0.0)
        np.testing.assert_array_equal(out_a[2, 3:], 0.0)
        chex.assert_trees_all_equal(finals_a[0].forward.c[1], jnp.zeros(HIDDEN))
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))

    def test_rates_are_checked(self):
        params = jaxlstm.init_lstm_stack(jax.random.key(0), INPUT, HIDDEN, cell="peephole")
        with pytest.raises(ValueError, match="zoneout_c"):
            jaxlstm.lstm_stack(params, make("lstm", None)[1], zoneout_c=1.0)


class TestErrors:
    def test_unknown_cell_name(self):
        with pytest.raises(ValueError, match="cell"):
            jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN, cell="gru")
        with pytest.raises(ValueError, match="cell"):
            jaxlstm.init_lstm_stack(jax.random.key(0), INPUT, HIDDEN, cell="peepholes")

    @pytest.mark.parametrize("cell,field,bad", [
        ("peephole", "w_ci", (HIDDEN + 1,)),
        ("peephole", "w_co", (1, HIDDEN)),
        ("layer_norm", "gain_x", (HIDDEN,)),
        ("layer_norm", "bias_c", (4 * HIDDEN,)),
        ("retained_readout", "w_u", (HIDDEN, PROJ)),
        ("retained_readout", "b_u", (HIDDEN - 1,)),
    ])
    def test_cell_weights_of_the_wrong_shape(self, cell, field, bad):
        params = jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN, cell=cell)
        params = params._replace(cell=params.cell._replace(**{field: jnp.zeros(bad)}))
        with pytest.raises(ValueError, match=field):
            jaxlstm.lstm(params, make("lstm", None)[1])

    def test_projection_of_the_wrong_shape(self):
        params = jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN, proj_size=PROJ)
        xs = make("lstm", None)[1]
        with pytest.raises(ValueError, match="w_p"):
            jaxlstm.lstm(params._replace(w_p=jnp.zeros((HIDDEN + 1, PROJ))), xs)
        # w_h must read the projected state: (P, 4H), not (H, 4H).
        with pytest.raises(ValueError, match=r"w_h|w_p"):
            jaxlstm.lstm(params._replace(w_h=jnp.zeros((HIDDEN, 4 * HIDDEN))), xs)

    def test_cifg_needs_three_gate_blocks(self):
        params = jaxlstm.init_lstm(jax.random.key(0), INPUT, HIDDEN)
        with pytest.raises(ValueError):
            jaxlstm.lstm(params._replace(cell=jaxlstm.CoupledGates()), make("lstm", None)[1])

    def test_initial_state_needs_the_projected_size(self):
        params, xs, state = make("lstm", PROJ)
        bad = jaxlstm.LSTMState(h=jnp.zeros((BATCH, HIDDEN)), c=state.c)
        with pytest.raises(ValueError, match="initial_state"):
            jaxlstm.lstm(params, xs, initial_state=bad)
