"""The functional API runs data-parallel as it is: batch-sharded in, single-device answers out.

Data parallelism needs nothing of the library's own if every step it takes is per sequence:
jit a function with the batch split over a mesh axis (`NamedSharding(mesh, P("data"))`) and
the params replicated (`P()`), and the SPMD partitioner runs each device's rows locally,
adding a collective only where the gradient sums over the batch. Anything in the scan, the
masking of variable-length batches, the per-sequence reversal, the fused custom VJP or its
rematerialising variant that mixed rows (an index over the batch, a reshape across it) would
make the partitioner gather the batch onto every device or pass rows between them. The result
would still be right, so only the compiled program shows it. Each case here is
`jax.value_and_grad` of a scalar loss over the outputs and the final state, jitted on two CPU
devices, and the tests check that

  - the forward outputs, final state, loss and parameter gradients equal the single-device ones,
  - the compiled program has no all-gather (nor any other collective that moves batch rows:
    all-to-all, collective-permute), so each device only ever holds its own rows,
  - every parameter's gradient is all-reduced across the batch shards: that is the
    data-parallel reduction, without which each device would hold a half-batch gradient,
  - the outputs come back sharded on the batch axis and the gradients replicated, as the
    partitioner chose (out_shardings are left unset, so this is not true by construction).

Tolerances (float32): the forward pass does the same arithmetic per row on either layout
(measured: bit-identical), and allows 1e-6 relative plus 1e-6 absolute for values near zero.
The loss and the gradients sum over the batch in another order (per device, then across
devices; with segments in the backward pass, one all-reduce per segment): measured within
1.3e-7 of each gradient's largest entry and 1e-7 relative on the loss, they allow 1e-5
relative plus 1e-6 of the gradient's largest entry (its scale, so entries near zero are not
held to a relative bound). A real fault (a dropped shard, a missing gradient reduction, rows
mixed up) changes the first digits.

Two devices come from `tests/conftest.py` (`--xla_force_host_platform_device_count=2`).
"""

import re
from collections import Counter
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxlstm
from jaxlstm import Directions

BATCH, STEPS, INPUT, HIDDEN = 4, 8, 3, 8
REMAT_CHUNK = 3  # does not divide STEPS, so the rematerialised backward has a shorter tail
FORWARD_TOL = {"rtol": 1e-6, "atol": 1e-6}
GRAD_RTOL, GRAD_ATOL_OF_SCALE = 1e-5, 1e-6
# Collectives that move batch rows between devices; a data-parallel program needs none of them.
ROW_MOVING_COLLECTIVES = ("all-gather", "all-to-all", "collective-permute")

pytestmark = pytest.mark.skipif(
    jax.device_count() < 2,
    reason="needs 2 devices (XLA_FLAGS=--xla_force_host_platform_device_count=2, set by "
           "tests/conftest.py before jax starts)")


def layer(rng: np.random.Generator, input_size: int) -> jaxlstm.LSTMParams:
    """LeCun-scaled random weights, made in numpy so that making them compiles nothing."""
    def normal(*shape, scale):
        return jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)

    return jaxlstm.LSTMParams(w_x=normal(input_size, 4 * HIDDEN, scale=input_size ** -0.5),
                              w_h=normal(HIDDEN, 4 * HIDDEN, scale=HIDDEN ** -0.5),
                              b=normal(4 * HIDDEN, scale=0.5))


# Each case: (params(rng), model(params, xs, seq_lengths) -> (outputs, final_state)). Between
# them: one layer and a stack, the fused custom VJP plain and rematerialised, forwards and
# backwards over variable-length sequences.
CASES = {
    "lstm_fused_seq_lengths": (
        lambda rng: layer(rng, INPUT),
        lambda p, xs, lengths: jaxlstm.lstm(p, xs, seq_lengths=lengths),
    ),
    "lstm_stack_bidirectional_remat_seq_lengths": (
        lambda rng: (Directions(layer(rng, INPUT), layer(rng, INPUT)),),
        lambda p, xs, lengths: jaxlstm.lstm_stack(p, xs, seq_lengths=lengths,
                                                  remat_chunk=REMAT_CHUNK),
    ),
}


class Run(NamedTuple):
    mesh: Mesh
    params: Any
    hlo: str  # the sharded program, compiled
    sharded: Any  # (loss, (outputs, final_state), grads) from the sharded program
    single: Any  # the same from the program compiled for one device


def loss_and_grads(model):
    def loss(params, xs, lengths):
        outputs, final = model(params, xs, lengths)
        value = sum(jnp.sum(a ** 2) for a in jax.tree.leaves((outputs, final)))
        return value, (outputs, final)

    def run(params, xs, lengths):
        (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params, xs, lengths)
        return value, aux, grads

    return run


@pytest.fixture(scope="module", params=list(CASES))
def run(request):
    make_params, model = CASES[request.param]
    rng = np.random.default_rng(0)
    params = make_params(rng)
    xs = jnp.asarray(rng.standard_normal((BATCH, STEPS, INPUT)), jnp.float32)
    # One full, one short sequence per device, and an empty one.
    lengths = jnp.array([STEPS, 2, 0, 5], jnp.int32)
    fn = loss_and_grads(model)

    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    replicated, by_batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    compiled = jax.jit(fn, in_shardings=(replicated, by_batch, by_batch)).lower(
        params, xs, lengths).compile()
    sharded = compiled(*jax.device_put((params, xs, lengths), (replicated, by_batch, by_batch)))

    one_device = jax.devices()[0]
    single = jax.jit(fn)(*jax.device_put((params, xs, lengths), one_device))
    return Run(mesh, params, compiled.as_text(), sharded, single)


def collective_result_shapes(hlo: str, op: str) -> list[str]:
    """The result type of every `op` instruction (its -start form too) in the HLO text."""
    return re.findall(rf"= (.*?) {op}(?:-start)?\(", hlo)


def test_sharded_forward_matches_single_device(run):
    _, (outputs, final), _ = run.sharded
    _, (want_outputs, want_final), _ = run.single
    np.testing.assert_allclose(outputs, want_outputs, **FORWARD_TOL)
    for got, want in zip(jax.tree.leaves(final), jax.tree.leaves(want_final), strict=True):
        np.testing.assert_allclose(got, want, **FORWARD_TOL)


def test_sharded_loss_and_gradients_match_single_device(run):
    loss, _, grads = run.sharded
    want_loss, _, want_grads = run.single
    np.testing.assert_allclose(loss, want_loss, rtol=GRAD_RTOL)
    leaves, want_leaves = jax.tree.leaves(grads), jax.tree.leaves(want_grads)
    assert len(leaves) == len(jax.tree.leaves(run.params))
    for got, want in zip(leaves, want_leaves, strict=True):
        scale = float(jnp.max(jnp.abs(want)))
        np.testing.assert_allclose(got, want, rtol=GRAD_RTOL, atol=GRAD_ATOL_OF_SCALE * scale)


def test_compiled_program_never_gathers_the_batch(run):
    found = {op: len(collective_result_shapes(run.hlo, op)) for op in ROW_MOVING_COLLECTIVES}
    assert "all-gather" not in run.hlo and not any(found.values()), (
        f"the data-parallel program moves batch rows between devices: {found}")


def test_parameter_gradients_are_all_reduced_across_the_batch_shards(run):
    # The loss's own all-reduce is a scalar: every parameter needs an all-reduced array of its
    # shape (one per parameter of that shape, at least; the segments of a backward pass may
    # each reduce their share).
    reduced = Counter(re.findall(r"f32\[[\d,]*\]", " ".join(
        collective_result_shapes(run.hlo, "all-reduce"))))
    needed = Counter(f"f32[{','.join(map(str, a.shape))}]" for a in jax.tree.leaves(run.params))
    missing = needed - reduced
    assert not missing, f"gradients not all-reduced: {dict(missing)}; all-reduced: {reduced}"


def test_outputs_stay_sharded_on_the_batch_axis_and_gradients_replicated(run):
    loss, (outputs, final), grads = run.sharded
    by_batch = NamedSharding(run.mesh, P("data"))
    for a in jax.tree.leaves((outputs, final)):
        assert a.sharding.is_equivalent_to(by_batch, a.ndim), a.sharding
    for a in jax.tree.leaves((loss, grads)):
        assert a.sharding.is_fully_replicated, a.sharding
