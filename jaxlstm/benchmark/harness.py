"""Benchmark: jaxlstm's forward and forward+backward against Flax, Equinox and PyTorch LSTMs.

All rows run in one process, one after another, at the sizes of the README's Performance
tables (S1-S4). Each pass is compiled first (compile time measured apart), warmed up, then timed
as the median of many calls. Writes results.json, results.md and results.png to the run folder
and prints the markdown. The rows jaxlstm_linen and jaxlstm_nnx time jaxlstm's own Flax
modules and are reported as ratios to the jaxlstm row ("vs_jaxlstm"), not as anchors.

    jaxlstm bench                        # S1-S4, a few minutes on 2 cores
    jaxlstm bench --quick                # smoke test, seconds
    jaxlstm bench --sizes S1,S3 --only jaxlstm,torch --repeats 20
    jaxlstm bench --only jaxlstm,jaxlstm_linen,jaxlstm_nnx   # module overhead
    jaxlstm bench --jaxlstm-kwargs '{"unroll": 2}'
    jaxlstm bench --memory               # also: T=10000 training step memory
    jaxlstm bench --sizes S2 --only slstm,xlstm_slstm_vanilla   # an xLSTM cell vs its reference
    jaxlstm bench --sizes S2 --steps 1024,2048,4096,8192 --only mlstm_chunkwise,mlstm_kernels_chunkwise

`--steps` sweeps the sequence length: each size runs at each T with its B, I and H kept (as
`S2@T=1024`), and the report adds time against T per size and pass, with the fitted log-log
slope (time ~ T^slope), and results_scaling.png. A row's pass stops at the T where one call
would take longer than `--max-call-s`, and a row stops above its `--max-steps`.

The xLSTM and minRNN rows (`anchors.OTHER_FUNCTION_KEYS`) run only when `--only` names them;
the minRNN rows are compared with the `jaxlstm` row in the sweep. The xLSTM rows are reported
against their reference rows ("vs_reference"), never as LSTM anchors.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from jaxlstm.benchmark import report
from jaxlstm.benchmark.anchors import (
    IMPL_KEYS,
    OTHER_FUNCTION_KEYS,
    Impl,
    implementations,
    unsupported_lstm_kwargs,
)
from jaxlstm.benchmark.memory import CONFIGS, MemoryProblem, run_memory_experiment
from jaxlstm.benchmark.sizes import PASSES, QUICK_SIZES, SIZES, Size
from jaxlstm.benchmark.timing import Budget, matmul_gflops, time_call

PEAK_MATMUL_SIZES = (1024, 2048)
QUICK_BUDGET = Budget(min_repeats=3, target_s=0.05, max_repeats=20, max_s=2.0, warmup=1)
PRECISION = "float32 (no TF32, no bf16 passes)"
MAX_CALL_S = 10.0
"""`--max-call-s`: a sweep measures a call about 3 times (warm-up and two timed calls) once it
takes over `Budget.max_s / 2`, so a measurement costs up to about 30 s plus compile time."""
SWEEP_MAX_STEPS = {"mlstm_parallel": 2048}
"""The longest T each row runs at in a `--steps` sweep, unless `--max-steps` says otherwise.
mlstm_parallel holds (B, heads, T, T) matrices: at S2, XLA's memory analysis gives it 4 GiB of
temporaries forward and 10 GiB f+b at T = 2048, 16 and 41 GiB at T = 4096, 64 and 161 GiB at
T = 8192 (a process over the machine's memory is killed, and the sweep with it)."""


def _names(valid: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of names, each one of `valid`."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in valid]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown name(s) {unknown or [text]}; valid names are {', '.join(valid)}"
            )
        return names

    return parse


def _lstm_kwargs(text: str) -> dict[str, Any]:
    kwargs = json.loads(text)
    if not isinstance(kwargs, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text}")
    unsupported = unsupported_lstm_kwargs(kwargs)
    if unsupported:
        raise argparse.ArgumentTypeError(f"jaxlstm.lstm does not accept {', '.join(unsupported)}")
    return kwargs


def _positive_ints(text: str) -> list[int]:
    """An argparse type: comma-separated positive integers, returned ascending, each once."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers, comma-separated (e.g. 1024,2048), got {text!r}")
    return sorted(set(values))


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _max_steps(text: str) -> dict[str, int]:
    """An argparse type: `IMPL=T,IMPL=T`, each IMPL a row name and T a positive integer."""
    limits = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        impl, _, steps = item.partition("=")
        if impl.strip() not in IMPL_KEYS or not steps.strip().isdigit() or int(steps) < 1:
            raise argparse.ArgumentTypeError(
                f"expected IMPL=T (T a positive integer, IMPL one of {', '.join(IMPL_KEYS)}), "
                f"got {item!r}")
        limits[impl.strip()] = int(steps)
    return limits


def _memory_configs(text: str) -> tuple[dict[str, Any], ...]:
    configs = json.loads(text)
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise argparse.ArgumentTypeError(f"expected a JSON list of objects, got {text}")
    return tuple(configs)


def _at_least_three(text: str) -> int:
    if int(text) < 3:
        raise argparse.ArgumentTypeError(f"needs at least 3 (median and quartiles), got {text}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (see the module docstring for examples), added to `parser`.

    The parser is the caller's (`jaxlstm bench`), which decides how bad input is reported.
    """
    parser.add_argument("--sizes", type=_names(tuple(SIZES)),
                        help="comma-separated, default all: " + ",".join(SIZES))
    parser.add_argument("--only", type=_names(IMPL_KEYS),
                        help=("rows to run, comma-separated, default all but the xLSTM and minRNN rows ("
                              + ",".join(OTHER_FUNCTION_KEYS) + "): " + ",".join(IMPL_KEYS)))
    parser.add_argument("--quick", action="store_true",
                        help="a tiny size and few repetitions, for smoke tests")
    parser.add_argument("--repeats", type=_at_least_three,
                        help="minimum timed calls per measurement (default 10, --quick 3)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/benchmark/<time>)")
    parser.add_argument("--json", type=Path, help="also write results.json to this path")
    parser.add_argument("--jaxlstm-kwargs", type=_lstm_kwargs, default={},
                        help="JSON object of keyword arguments for jaxlstm.lstm")
    parser.add_argument("--memory", action="store_true",
                        help="also run the long-sequence training-step memory experiment")
    parser.add_argument("--memory-steps", type=int, default=MemoryProblem().steps,
                        help="sequence length T for --memory")
    parser.add_argument("--memory-configs", type=_memory_configs, default=None,
                        help=("JSON list of configurations for --memory: keyword arguments "
                              "of jaxlstm.lstm, or {\"cell\": \"min_lstm\", ...} for a min "
                              "cell (default: plain backprop and remat_chunk 100)"))
    parser.add_argument("--streaming", action="store_true",
                        help=("also time one streaming step of an exported model at batch 1 "
                              "and 32: jitted JAX and ONNX Runtime (jaxlstm[onnx])"))
    parser.add_argument("--steps", type=_positive_ints,
                        help=("sequence lengths, comma-separated: run each size at each T (its B, "
                              "I, H kept) and report time against T"))
    parser.add_argument("--max-call-s", type=_positive_float, default=MAX_CALL_S,
                        help=("with --steps: skip a row's pass at a T where one call would take "
                              "longer, predicted from the T before (default %(default)g)"))
    parser.add_argument("--max-steps", type=_max_steps, default={},
                        help=("with --steps: IMPL=T,... the longest T for a row (default "
                              + ",".join(f"{k}={v}" for k, v in SWEEP_MAX_STEPS.items()) + ")"))


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, cores, jax's devices and the versions of everything timed."""
    devices = jax.devices()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "jax_devices": f"{len(devices)}x {devices[0].device_kind}",
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in
                     ("jax", "jaxlib", "flax", "equinox", "torch", "numpy")},
    }


def measure_peak(budget: Budget) -> dict[str, Any]:
    """XLA float32 matmul GFLOP/s at each of PEAK_MATMUL_SIZES; the best is the peak."""
    per_n = {str(n): matmul_gflops(n, budget) for n in PEAK_MATMUL_SIZES}
    print("measured peak: " + ", ".join(f"N={n} {g:.0f} GFLOP/s" for n, g in per_n.items()))
    return {"matmul_gflops": per_n, "gflops": max(per_n.values())}


def measure(impl: Impl, size: Size, pass_name: str, budget: Budget,
            peak_gflops: float) -> dict[str, Any]:
    """Compiles, warms up and times one implementation's pass at one size: one result row."""
    prepared = impl.prepare(size, pass_name)
    timing = time_call(prepared.call, budget)
    # The LSTM's FLOP count; a row of another function (an xLSTM cell) gets no rate.
    gflops = (size.flops(pass_name) / (timing.median_ms * 1e-3) / 1e9 if impl.default
              else None)
    row = {
        "size": size.name, "impl": impl.key, "label": impl.label, "pass": pass_name,
        **dataclasses.asdict(timing), "iqr_ms": timing.iqr_ms,
        "compile_ms": prepared.compile_s * 1e3 if prepared.compile_s is not None else None,
        "gflops": gflops, "pct_of_peak": 100 * gflops / peak_gflops if gflops else None,
    }
    compiled = f", compile {prepared.compile_s:.2f} s" if prepared.compile_s is not None else ""
    print(f"{size.name} {pass_name:7s} {impl.label:36s} {timing.median_ms:9.3f} ms "
          f"(median of {timing.repeats}{compiled})")
    return row


def predicted_call_s(history: list[tuple[int, float]], steps: int) -> float:
    """Seconds one call at `steps` will take, from `(T, median_ms)` at shorter T: the last time,
    grown as T^slope with the slope through the last two points, and at least linearly."""
    if not history:
        return 0.0
    (last_steps, last_ms), slope = history[-1], 1.0
    if len(history) >= 2:
        slope = max(slope, report.fit_slope(*zip(*history[-2:], strict=True)) or slope)
    return last_ms * 1e-3 * (steps / last_steps) ** slope


def sweep(impls: list[Impl], sizes: list[Size], steps: list[int], budget: Budget,
          peak_gflops: float, max_call_s: float,
          max_steps: dict[str, int]) -> tuple[list[dict], list[dict], list[dict]]:
    """Times every row's passes at each size at each T of `steps` (ascending), the rows of one T
    back to back (under the same load, for their ratios).

    A row's pass is skipped at a T where `predicted_call_s` exceeds `max_call_s`, and a row
    above its `max_steps`. Returns the result rows, the grid of points (`{"size", "steps",
    "name"}`) and the skipped ones (`{"size", "impl", "pass", "steps", "reason"}`, pass None
    for both).
    """
    rows, grid, skipped = [], [], []
    for size in sizes:
        history: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for t in steps:
            point = size.at_steps(t)
            grid.append({"size": size.name, "steps": t, "name": point.name})
            for impl in (i for i in impls if i.runs_at(size)):
                if t > max_steps.get(impl.key, t):
                    skipped.append({"size": size.name, "impl": impl.key, "pass": None, "steps": t,
                                    "reason": f"above its --max-steps {max_steps[impl.key]}"})
                    continue
                for pass_name in PASSES:
                    measured = history.setdefault((impl.key, pass_name), [])
                    predicted = predicted_call_s(measured, t)
                    if predicted > max_call_s:
                        skipped.append({
                            "size": size.name, "impl": impl.key, "pass": pass_name, "steps": t,
                            "reason": (f"one call would take about {predicted:.0f} s, over "
                                       f"--max-call-s {max_call_s:g}")})
                        continue
                    row = measure(impl, point, pass_name, budget, peak_gflops)
                    rows.append(row)
                    measured.append((t, row["median_ms"]))
    return rows, grid, skipped


def available(impls: list[Impl]) -> tuple[list[Impl], list[dict[str, str]]]:
    """The rows that can run here, and a note for each that cannot."""
    runnable, skipped = [], []
    for impl in impls:
        reason = impl.unavailable()
        if reason is None:
            runnable.append(impl)
        else:
            print(f"skipping {impl.key}: {reason}")
            skipped.append({"impl": impl.key, "reason": reason})
    return runnable, skipped


def _budget(args: argparse.Namespace) -> Budget:
    budget = QUICK_BUDGET if args.quick else Budget()
    if args.repeats is None:
        return budget
    return dataclasses.replace(
        budget, min_repeats=args.repeats, max_repeats=max(budget.max_repeats, args.repeats)
    )


def _sizes(args: argparse.Namespace) -> list[Size]:
    if args.sizes:
        return [SIZES[name] for name in args.sizes]
    return list(QUICK_SIZES if args.quick else SIZES.values())


def write_outputs(results: dict[str, Any], out: Path, extra_json: Path | None) -> None:
    """results.json, results.md and results.png (with matplotlib) in `out`; prints the table."""
    out.mkdir(parents=True, exist_ok=True)
    document = json.dumps(results, indent=2)
    for path in [out / "results.json"] + ([extra_json] if extra_json else []):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(document)
    markdown = report.markdown(results)
    (out / "results.md").write_text(markdown)
    if not report.plot(results, out / "results.png"):
        print("no results.png: matplotlib is not installed, or there are no rows")
    if "scaling" in results and not report.plot_scaling(results, out / "results_scaling.png"):
        print("no results_scaling.png: matplotlib is not installed, or nothing was timed")
    print()
    print(markdown)
    print(f"wrote {out}")


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Runs the benchmark for parsed `args`; returns the results document.

    Args:
        args: the options of `add_arguments`, parsed.
        argv: the arguments they were parsed from, recorded as the command that reproduces
            the run.
    """
    # Strict float32 everywhere: on a GPU, XLA and cuDNN would otherwise use TF32 for float32
    # matmuls, which torch's LSTM does not. XLA:CPU ignores the setting.
    jax.config.update("jax_default_matmul_precision", "highest")
    started = datetime.datetime.now()
    out = args.out or Path("runs/benchmark") / started.strftime("%Y%m%d-%H%M%S")
    sizes, budget = _sizes(args), _budget(args)
    impls, skipped = available(
        [i for i in implementations(args.jaxlstm_kwargs)
         if (i.key in args.only if args.only else i.default)]
    )
    machine = machine_info()
    # Another process on a core starves a thread pool sized to all cores (the machine is
    # shared); the load average says whether this run had the cores to itself.
    load_at_start = os.getloadavg()[0]

    peak = measure_peak(budget)
    if args.steps:
        max_steps = {**SWEEP_MAX_STEPS, **args.max_steps}
        rows, grid, sweep_skipped = sweep(impls, sizes, args.steps, budget, peak["gflops"],
                                          args.max_call_s, max_steps)
        scaling = {"steps": args.steps, "max_call_s": args.max_call_s, "max_steps": max_steps,
                   "grid": grid, "series": report.scaling_series(rows, grid),
                   "skipped": sweep_skipped}
        sizes = [size.at_steps(t) for size in sizes for t in args.steps]
    else:
        rows = [measure(impl, size, pass_name, budget, peak["gflops"])
                for size in sizes for impl in impls if impl.runs_at(size) for pass_name in PASSES]
    machine["load_average_1min"] = {"start": load_at_start, "end": os.getloadavg()[0]}
    results = {
        "date": started.astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["jaxlstm", "bench", *argv]),
        "machine": machine,
        "settings": {"quick": args.quick, "min_repeats": budget.min_repeats,
                     "max_repeats": budget.max_repeats, "target_s": budget.target_s,
                     "max_s": budget.max_s,
                     "jaxlstm_kwargs": args.jaxlstm_kwargs, "precision": PRECISION},
        "sizes": [dataclasses.asdict(size) for size in sizes],
        "peak": peak,
        "rows": rows,
        "comparisons": report.compare(rows, machine["jax_backend"]),
        "vs_jaxlstm": report.compare_modules(rows),
        "vs_reference": report.compare_xlstm(rows),
        "default_forms": report.compare_default_forms(rows),
        "skipped": skipped,
    }
    if args.steps:
        results["scaling"] = scaling
    if args.memory:
        results["memory"] = run_memory_experiment(MemoryProblem(steps=args.memory_steps),
                                                  args.memory_configs or CONFIGS)
    if args.streaming:
        from jaxlstm.benchmark.streaming import run_streaming_experiment

        results["streaming"] = run_streaming_experiment(budget)
    write_outputs(results, out, args.json)
    return results
