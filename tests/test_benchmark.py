"""The benchmark harness runs end to end and writes its results; nothing about speed.

The end-to-end tests run `jaxlstm bench` (as `python -m jaxlstm.cli bench`) in a subprocess, as
a user would, so the harness gets a fresh jax (no test-wide config) and its command line is what
is tested.
"""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxlstm.benchmark.anchors import implementations
from jaxlstm.benchmark.sizes import QUICK_SIZES
from jaxlstm.benchmark.timing import Budget, time_call

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(out: Path, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "jaxlstm.cli", "bench", "--quick", "--out", str(out), *args],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def test_quick_run_times_jaxlstm_and_anchors_and_writes_reports(tmp_path):
    results = run_benchmark(
        tmp_path, "--only", "jaxlstm,jaxlstm_linen,jaxlstm_nnx,flax_linen,torch,jax_cudnn"
    )

    rows = results["rows"]
    jax_rows = ("jaxlstm", "jaxlstm_linen", "jaxlstm_nnx", "flax_linen")
    for impl in jax_rows:
        measured = {r["pass"] for r in rows if r["impl"] == impl}
        assert measured == {"forward", "fwd_bwd"}, impl
    assert all(r["median_ms"] > 0 and r["min_ms"] > 0 and r["repeats"] >= 3 for r in rows)
    assert all(r["compile_ms"] > 0 for r in rows if r["impl"] in jax_rows)
    # jaxlstm's modules are compared with jaxlstm, size by size, and are never an anchor.
    modules = {(c["impl"], c["pass"]) for c in results["vs_jaxlstm"]}
    assert modules == {(m, p) for m in ("jaxlstm_linen", "jaxlstm_nnx")
                       for p in ("forward", "fwd_bwd")}
    assert all(c["vs_jaxlstm"] > 0 and c["min_vs_jaxlstm"] > 0 for c in results["vs_jaxlstm"])
    assert all(not c["fastest_anchor"].startswith("jaxlstm") for c in results["comparisons"])
    assert {c["pass"] for c in results["comparisons"]} == {"forward", "fwd_bwd"}
    torch_ran = any(r["impl"] == "torch" for r in rows)
    for comparison in results["comparisons"]:
        assert comparison["fastest_anchor"] and comparison["vs_fastest_anchor"] > 0
        assert not torch_ran or comparison["vs_torch"] > 0
    assert results["peak"]["gflops"] > 0
    # On a CPU machine the cuDNN row is skipped with a reason, not dropped silently.
    if results["machine"]["jax_backend"] == "cpu":
        assert "jax_cudnn" in [s["impl"] for s in results["skipped"]]
    report = (tmp_path / "results.md").read_text()
    assert "| jaxlstm |" in report and "fastest anchor" in report
    assert "modules vs jaxlstm" in report and "| jaxlstm.flax.nnx.LSTM |" in report
    assert (tmp_path / "results.png").exists() == bool(importlib.util.find_spec("matplotlib"))


def test_module_rows_compute_what_the_jaxlstm_row_computes():
    from flax import nnx

    from jaxlstm.flax import to_lstm_params

    impls = {impl.key: impl for impl in implementations({})}

    def run(key: str, pass_name: str):
        result = impls[key].prepare(QUICK_SIZES[0], pass_name).call()
        if pass_name == "forward" or key == "jaxlstm":
            return result
        grads, grad_xs = result
        # A module's params (linen variables or an nnx.State) as the jaxlstm row's LSTMParams.
        grads = grads["params"] if key == "jaxlstm_linen" else nnx.to_pure_dict(grads)
        return to_lstm_params(grads)[0].forward, grad_xs

    for pass_name in ("forward", "fwd_bwd"):
        expected = run("jaxlstm", pass_name)
        for key in ("jaxlstm_linen", "jaxlstm_nnx"):
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
                         run(key, pass_name), expected)


def test_module_rows_are_skipped_for_options_the_modules_lack():
    impls = {impl.key: impl for impl in implementations({"fused_backward": False})}
    for key in ("jaxlstm_linen", "jaxlstm_nnx"):
        assert "fused_backward" in impls[key].unavailable()
    assert impls["jaxlstm"].unavailable() is None
    unrolled = {impl.key: impl for impl in implementations({"unroll": 2})}
    assert unrolled["jaxlstm_linen"].unavailable() is None


def test_memory_experiment_measures_plain_and_skips_unknown_kwargs(tmp_path):
    results = run_benchmark(tmp_path, "--only", "jaxlstm", "--memory", "--memory-steps", "200")

    plain, *others = results["memory"]
    assert plain["kwargs"] == {} and plain["steps"] == 200
    assert plain["peak_rss_mb"] > 0 and plain["step_s"] > 0 and plain["first_call_s"] > 0
    for config in others:
        # A configuration runs, or is skipped because jaxlstm.lstm lacks the option; never fails.
        assert "error" not in config, config
        assert "peak_rss_mb" in config or "does not accept" in config["skipped"]
    assert "Long sequences" in (tmp_path / "results.md").read_text()


def test_timing_of_a_very_slow_call_stops_at_the_time_cap():
    calls = []

    def slow_call():
        calls.append(None)
        time.sleep(0.05)

    budget = Budget(min_repeats=10, target_s=0.01, max_s=0.2, warmup=5)
    timing = time_call(slow_call, budget)

    # About 0.1 s of warm-up, then two timed calls: not 5 + 10 calls.
    assert timing.repeats == 2
    assert len(calls) <= 2 + 2
    assert timing.min_ms <= timing.median_ms


def test_xlstm_rows_run_only_when_named_and_compare_with_their_references(tmp_path):
    from jaxlstm.benchmark.anchors import XLSTM_KEYS, xlstm_chunk_size

    impls = implementations({})
    assert {i.key for i in impls if not i.default} == set(XLSTM_KEYS)
    assert (xlstm_chunk_size(100), xlstm_chunk_size(200), xlstm_chunk_size(1024)) == (50, 50, 64)
    results = run_benchmark(
        tmp_path, "--only", "slstm,xlstm_slstm_vanilla,mlstm_chunkwise,mlstm_kernels_chunkwise")
    ran = {r["impl"] for r in results["rows"]}
    skipped = {s["impl"] for s in results["skipped"]}
    assert ran | skipped == {"slstm", "xlstm_slstm_vanilla", "mlstm_chunkwise",
                             "mlstm_kernels_chunkwise"}
    assert {"slstm", "mlstm_chunkwise"} <= ran  # jax only: they always run
    assert all(r["gflops"] is None for r in results["rows"])  # not the LSTM's FLOPs
    assert results["comparisons"] == []  # no LSTM row, and the xLSTM rows are no LSTM anchors
    compared = {(c["impl"], c["pass"]) for c in results["vs_reference"]}
    want = {("slstm", "xlstm_slstm_vanilla"), ("mlstm_chunkwise", "mlstm_kernels_chunkwise")}
    assert compared == {(impl, p) for impl, ref in want if ref in ran
                        for p in ("forward", "fwd_bwd")}
    if compared:
        assert "xLSTM cells vs their references" in (tmp_path / "results.md").read_text()
