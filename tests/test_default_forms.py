"""Without `mode`, every function with equivalent forms runs the form one shared rule picks
for the backend (`jaxlstm.family.Family.default_mode`, through `jaxlstm.family.form`): the
sequence functions, the block stacks, the layer stack and the Flax modules. Checked by
tracing: the plain call's jaxpr must equal the call with the rule's form spelled out, and
differ from another form's (so the check can fail). Tracing only, nothing is compiled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import jaxlstm
from jaxlstm import family as families
from jaxlstm.minrnn.blocks import init_min_block_stack, min_block_stack
from jaxlstm.xlstm.blocks import init_xlstm_stack, xlstm_stack
from jaxlstm.xlstm.mlstm import init_mlstm, mlstm
from jaxlstm.xlstm.mlstm_chunkwise import default_chunk_size

BACKENDS = ("cpu", "gpu", "tpu")
XS = jnp.ones((2, 12, 3))


def _jaxpr(fn) -> str:
    return str(jax.make_jaxpr(fn)())


def _on(backend: str, monkeypatch) -> None:
    monkeypatch.setattr(jax, "default_backend", lambda: backend)


def _other(name: str, form: str) -> str:
    return [m for m in families.get(name).modes if m != form][-1]  # mlstm: recurrent


def _sequence_calls():
    """(family name, call(mode=...)) for each sequence function with forms."""
    min_lstm_params = jaxlstm.init_min_lstm(jax.random.key(0), 3, 4)
    min_gru_params = jaxlstm.init_min_gru(jax.random.key(0), 3, 4)
    mlstm_params = init_mlstm(jax.random.key(0), 3, 4, num_heads=2)
    return [
        ("min_lstm", lambda **kw: jaxlstm.min_lstm(min_lstm_params, XS, **kw)),
        ("min_gru", lambda **kw: jaxlstm.min_gru(min_gru_params, XS, **kw)),
        ("mlstm", lambda **kw: mlstm(mlstm_params, XS, **kw)),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sequence_functions_run_the_rules_form(backend, monkeypatch):
    _on(backend, monkeypatch)
    for name, call in _sequence_calls():
        form = families.get(name).default_mode(backend)
        plain = _jaxpr(call)
        assert plain == _jaxpr(lambda call=call, form=form: call(mode=form)), (name, backend)
        other = _other(name, form)
        assert plain != _jaxpr(lambda call=call, other=other: call(mode=other)), (name, other)


def test_the_rule_on_a_cpu_is_the_fast_form():
    """What the docstrings promise on this machine's backend (measured: see the families'
    `backend_modes`)."""
    assert families.get("min_lstm").default_mode("cpu") == "sequential"
    assert families.get("min_gru").default_mode("cpu") == "sequential"
    assert families.get("mlstm").default_mode("cpu") == "chunkwise"
    assert families.get("min_lstm").default_mode("gpu") == "parallel"
    assert families.form("min_gru", "parallel") == "parallel"  # a given mode is kept


def test_mlstm_default_chunk_is_the_rules_chunk():
    params = init_mlstm(jax.random.key(0), 3, 4, num_heads=2)
    for steps in (12, 100):
        xs = jnp.ones((2, steps, 3))
        chunk = default_chunk_size(steps, jax.default_backend())
        plain = _jaxpr(lambda xs=xs: mlstm(params, xs, mode="chunkwise"))
        assert plain == _jaxpr(lambda xs=xs, c=chunk: mlstm(params, xs, mode="chunkwise",
                                                            chunk_size=c)), steps
        other = 7 if chunk != 7 else 5
        assert plain != _jaxpr(lambda xs=xs, other=other: mlstm(params, xs, mode="chunkwise",
                                                                chunk_size=other)), steps


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_stacks_and_blocks_pass_the_rule_on(backend, monkeypatch):
    _on(backend, monkeypatch)
    min_stack = init_min_block_stack(jax.random.key(0), 3, 8, blocks="g")
    xlstm = init_xlstm_stack(jax.random.key(0), 3, 8, blocks="m", num_heads=2)
    layers = jaxlstm.init_lstm_stack(jax.random.key(0), 3, 4, num_layers=1, cell="min_lstm")
    calls = [
        ("min_gru", lambda **kw: min_block_stack(min_stack, XS, **kw)),
        ("mlstm", lambda **kw: xlstm_stack(xlstm, XS, **kw)),
        ("min_lstm", lambda **kw: jaxlstm.lstm_stack(layers, XS, **kw)[0]),
    ]
    for name, call in calls:
        form = families.get(name).default_mode(backend)
        plain = _jaxpr(call)
        assert plain == _jaxpr(lambda call=call, form=form: call(mode=form)), (name, backend)
        other = _other(name, form)
        assert plain != _jaxpr(lambda call=call, other=other: call(mode=other)), (name, other)


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_flax_modules_run_the_rules_form(backend, monkeypatch):
    pytest.importorskip("flax")
    from flax import nnx

    from jaxlstm.flax import linen as jl
    from jaxlstm.flax import nnx as jn

    _on(backend, monkeypatch)
    for name, linen_cls, nnx_cls, init in (("min_lstm", jl.MinLSTM, jn.MinLSTM, {}),
                                           ("mlstm", jl.MLSTM, jn.MLSTM, {"num_heads": 2})):
        form = families.get(name).default_mode(backend)
        other = _other(name, form)
        variables = linen_cls(4, **init).init(jax.random.key(0), XS)

        def linen_call(m, cls=linen_cls, init=init, variables=variables):
            return lambda: cls(4, **init, **m).apply(variables, XS)

        plain, spelled, differs = (_jaxpr(linen_call(m))
                                   for m in ({}, {"mode": form}, {"mode": other}))
        assert plain == spelled != differs, (name, "linen", backend)
        module = nnx_cls(3, 4, **init, rngs=nnx.Rngs(0))

        def nnx_call(mode, module=module):
            return lambda: module(XS, mode=mode)

        plain = _jaxpr(nnx_call(None))
        assert plain == _jaxpr(nnx_call(form)), (name, "nnx", backend)
        assert plain != _jaxpr(nnx_call(other)), (name, "nnx", backend)


def _bench_row(impl: str, ms: float, size: str = "S2", pass_name: str = "fwd_bwd") -> dict:
    return {"impl": impl, "label": f"label {impl}", "size": size, "pass": pass_name,
            "median_ms": ms}


def test_the_report_sets_plain_calls_against_their_fastest_form():
    from jaxlstm.benchmark import report

    rows = [_bench_row("mlstm", 12.0), _bench_row("mlstm_chunkwise", 10.0),
            _bench_row("mlstm_recurrent", 8.0), _bench_row("mlstm_parallel", 30.0),
            _bench_row("min_gru", 5.0, size="S3"), _bench_row("min_gru_sequential", 4.0,
                                                               size="S2")]
    (mlstm,) = report.compare_default_forms(rows)  # min_gru: no form at its size
    assert (mlstm["impl"], mlstm["fastest"], mlstm["vs_fastest"]) == (
        "mlstm", "label mlstm_recurrent", 1.5)
    assert "| S2 | f+b | label mlstm | 12 | label mlstm_recurrent | 8 | 1.500 |" in (
        report._default_forms_table([mlstm]))


def test_the_report_sets_xlstm_rows_beside_the_lstm_with_or_without_their_reference():
    from jaxlstm.benchmark import report

    rows = [_bench_row("jaxlstm", 10.0), _bench_row("slstm", 13.0),
            _bench_row("mlstm", 6.0), _bench_row("mlstm_kernels_chunkwise", 12.0),
            _bench_row("slstm", 7.0, size="S3")]   # S3: neither the LSTM nor a reference ran
    by_impl = {c["impl"]: c for c in report.compare_xlstm(rows)}
    assert set(by_impl) == {"slstm", "mlstm"}
    assert by_impl["slstm"]["vs_lstm"] == 1.3 and by_impl["slstm"]["vs_reference"] is None
    assert by_impl["mlstm"]["vs_reference"] == 0.5 and by_impl["mlstm"]["vs_lstm"] == 0.6
    assert "(not run)" in report._xlstm_table([by_impl["slstm"]])[-1]
