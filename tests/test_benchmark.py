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
import pytest

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
    # At least the quick budget's 3 calls, or 2 where a call starved by another process ran
    # into its max_s (Budget.done): the suite's own load can do that to the torch row.
    assert all(r["median_ms"] > 0 and r["min_ms"] > 0 and r["repeats"] >= 2 for r in rows)
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
    assert set(XLSTM_KEYS) <= {i.key for i in impls if not i.default}
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


def test_steps_and_sweep_limits_are_validated_as_the_other_options():
    import argparse

    from jaxlstm.benchmark.harness import add_arguments

    parser = argparse.ArgumentParser()
    parser.error = lambda message: (_ for _ in ()).throw(ValueError(message))
    add_arguments(parser)
    args = parser.parse_args(["--steps", "4096, 1024,2048,1024", "--max-steps", "slstm=512"])
    assert args.steps == [1024, 2048, 4096] and args.max_steps == {"slstm": 512}
    assert parser.parse_args([]).steps is None  # no sweep unless asked
    for bad in ("0,1024", "1024,x", "", "1.5"):
        with pytest.raises(ValueError, match="--steps: expected positive integers"):
            parser.parse_args(["--steps", bad])
    with pytest.raises(ValueError, match="--max-call-s: expected a positive number"):
        parser.parse_args(["--max-call-s", "nan"])
    with pytest.raises(ValueError, match="--max-steps: expected IMPL=T"):
        parser.parse_args(["--max-steps", "nope=64"])


def test_slope_is_the_log_log_least_squares_fit():
    from jaxlstm.benchmark.report import fit_slope

    steps = [1024, 2048, 4096, 8192]
    assert abs(fit_slope(steps, [3.0 * t for t in steps]) - 1.0) < 1e-12
    assert abs(fit_slope(steps, [1e-3 * t**2 for t in steps]) - 2.0) < 1e-12
    # Noise around T^1.5 (x1.1, /1.1, x1.1, /1.1): the fit is 1.5 less a little, not the
    # slope of any two points.
    noisy = [t**1.5 * f for t, f in zip(steps, (1.1, 1 / 1.1, 1.1, 1 / 1.1), strict=True)]
    assert 1.4 < fit_slope(steps, noisy) < 1.5
    assert fit_slope([1024], [5.0]) is None


def test_sweep_skips_a_pass_predicted_over_the_call_cap():
    from jaxlstm.benchmark.harness import predicted_call_s

    assert predicted_call_s([], 8192) == 0.0
    assert predicted_call_s([(1024, 1000.0)], 4096) == 4.0  # at least linear
    assert abs(predicted_call_s([(1024, 1000.0), (2048, 4000.0)], 4096) - 16.0) < 1e-9


def test_scaling_tables_and_plot_from_a_results_document(tmp_path):
    from jaxlstm.benchmark import report
    from jaxlstm.benchmark.sizes import SIZES

    steps = [1024, 2048, 4096]
    sizes = [SIZES["S2"].at_steps(t) for t in steps]
    grid = [{"size": "S2", "steps": s.steps, "name": s.name} for s in sizes]
    ms = {"mlstm_chunkwise": lambda t: t / 100, "mlstm_kernels_chunkwise": lambda t: t**2 / 1e5,
          "jaxlstm": lambda t: t / 10, "torch": lambda t: t / 20}
    rows = [{"impl": impl, "label": impl.replace("_", " "), "size": s.name, "pass": p,
             "median_ms": f(s.steps), "repeats": 10}
            for s in sizes for impl, f in ms.items() for p in ("forward", "fwd_bwd")
            if not (impl == "torch" and s.steps == 4096)]
    skipped = [{"size": "S2", "impl": "torch", "pass": None, "steps": 4096, "reason": "too long"}]
    series = report.scaling_series(rows, grid)
    by_impl = {s["impl"]: s for s in series if s["pass"] == "fwd_bwd"}
    assert abs(by_impl["mlstm_chunkwise"]["slope"] - 1.0) < 1e-9
    assert abs(by_impl["mlstm_kernels_chunkwise"]["slope"] - 2.0) < 1e-9
    # Ratios to the reference: the xLSTM pairing, and jaxlstm for another LSTM row.
    assert by_impl["mlstm_chunkwise"]["vs_reference"] == pytest.approx([1e3 / t for t in steps])
    assert by_impl["torch"]["vs_reference"] == [0.5, 0.5]
    assert by_impl["torch"]["steps"] == [1024, 2048]
    assert by_impl["jaxlstm"]["vs_reference"] is None
    assert by_impl["mlstm_kernels_chunkwise"]["vs_reference"] is None

    results = {"sizes": [{"name": s.name, "batch": s.batch, "steps": s.steps,
                          "input_size": s.input_size, "hidden_size": s.hidden_size}
                         for s in sizes],
               "machine": {"cpu": "test cpu", "cores": 2, "jax_devices": "1x cpu"},
               "scaling": {"grid": grid, "series": series, "skipped": skipped}}
    text = "\n".join(report._scaling_tables(results))
    assert "### S2 (B=32, I=32, H=128), f+b" in text
    assert "| impl | T=1024 | T=2048 | T=4096 | slope | (ratio) reference |" in text
    assert "| mlstm chunkwise | 10.2 (0.98) | 20.5 (0.49) | 41 (0.24) | 1.00 " in text
    assert "| torch | 51.2 (0.50) | 102 (0.50) | skipped | 1.00 | jaxlstm |" in text
    assert report.plot_scaling(results, tmp_path / "scaling.png") == bool(
        importlib.util.find_spec("matplotlib"))



def test_sweep_runs_each_size_at_each_t_and_stops_at_the_caps():
    from jaxlstm.benchmark.anchors import Impl, Prepared
    from jaxlstm.benchmark.harness import sweep

    def sleeps(size, pass_name):  # a call that takes T * 10 us
        return Prepared(lambda: time.sleep(size.steps * 1e-5), None)

    impls = [Impl("linear", "linear", sleeps, lambda: None, sizes=("Q",)),
             Impl("short", "short", sleeps, lambda: None),
             Impl("elsewhere", "elsewhere", sleeps, lambda: None, sizes=("S1",))]
    budget = Budget(min_repeats=3, target_s=0.0, max_repeats=3, warmup=0)
    # T = 10**6 would take 10 s a call, over the 1 s cap; "short" stops above T = 1.
    rows, grid, skipped = sweep(impls, list(QUICK_SIZES), [1, 2, 10**6], budget, 1.0,
                                max_call_s=1.0, max_steps={"short": 1})

    assert [p["name"] for p in grid] == ["Q@T=1", "Q@T=2", "Q@T=1000000"]
    assert [(r["impl"], r["size"]) for r in rows if r["pass"] == "forward"] == [
        ("linear", "Q@T=1"), ("short", "Q@T=1"), ("linear", "Q@T=2")]
    assert {(k["impl"], k["steps"], k["pass"]) for k in skipped} == {
        ("short", 2, None), ("short", 10**6, None),
        ("linear", 10**6, "forward"), ("linear", 10**6, "fwd_bwd")}
    assert all("--max-call-s" in k["reason"] for k in skipped if k["impl"] == "linear")


def test_streaming_rows_time_the_exported_step_in_jax_and_onnx_runtime():
    from jaxlstm.benchmark.harness import QUICK_BUDGET
    from jaxlstm.benchmark.streaming import BATCHES, run_streaming_experiment

    result = run_streaming_experiment(QUICK_BUDGET)
    assert [row["batch"] for row in result["rows"]] == list(BATCHES)
    assert all(row["jax_ms"] > 0 for row in result["rows"])
    if all(importlib.util.find_spec(m) for m in ("jax2onnx", "onnxruntime")):
        assert result["skipped"] is None
        assert all(row["onnxruntime_ms"] > 0 and row["onnxruntime_vs_jax"] > 0
                   for row in result["rows"])
    else:
        assert "jax2onnx" in result["skipped"] or "onnxruntime" in result["skipped"]
