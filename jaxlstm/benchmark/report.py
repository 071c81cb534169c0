"""Views of a benchmark's results document: jaxlstm against the anchors, jaxlstm's Flax modules
against jaxlstm, time against sequence length (`--steps`), markdown, a bar chart, a log-log plot.

Everything here reads the same dict that is written to results.json, so a report can be rebuilt
from a saved run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxlstm.benchmark.anchors import (
    DEFAULT_FORMS,
    OTHER_FUNCTION_KEYS,
    XLSTM_HEADS,
    XLSTM_KEYS,
    XLSTM_REFERENCES,
    family_of,
)
from jaxlstm.benchmark.sizes import PASS_LABELS, PASSES

Results = dict[str, Any]
SUBJECT = "jaxlstm"
MODULES = ("jaxlstm_linen", "jaxlstm_nnx")
"""Rows that run jaxlstm's own core through its Flax modules: compared with the `jaxlstm` row
(what the module layer costs), never counted as anchors."""


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if abs(value) >= 10 ** (digits - 1) else f"{value:.{digits}g}"


def _row(rows: list[dict], impl: str, size: str, pass_name: str) -> dict | None:
    return next(
        (r for r in rows if (r["impl"], r["size"], r["pass"]) == (impl, size, pass_name)), None
    )


def _fastest_anchor(rows: list[dict], size: str, pass_name: str) -> dict | None:
    anchors = [r for r in rows if r["size"] == size and r["pass"] == pass_name
               and r["impl"] != SUBJECT and r["impl"] not in MODULES
               and r["impl"] not in OTHER_FUNCTION_KEYS]  # another function: not an anchor
    return min(anchors, key=lambda r: r["median_ms"], default=None)


def compare(rows: list[dict], jax_backend: str) -> list[dict]:
    """jaxlstm against the fastest anchor and against torch, for each size and pass it ran.

    The torch reference is torch on the device jax runs on (`torch_cuda` on a GPU), so the ratio
    compares like with like; the fastest anchor is the fastest row of any kind.
    """
    torch_key = "torch_cuda" if jax_backend == "gpu" else "torch"
    comparisons = []
    for subject in (r for r in rows if r["impl"] == SUBJECT):
        fastest = _fastest_anchor(rows, subject["size"], subject["pass"])
        torch = _row(rows, torch_key, subject["size"], subject["pass"])
        ms = subject["median_ms"]
        comparisons.append({
            "size": subject["size"],
            "pass": subject["pass"],
            "jaxlstm_ms": ms,
            "jaxlstm_gflops": subject["gflops"],
            "jaxlstm_pct_of_peak": subject["pct_of_peak"],
            "jaxlstm_compile_ms": subject["compile_ms"],
            "fastest_anchor": fastest["label"] if fastest else None,
            "fastest_anchor_ms": fastest["median_ms"] if fastest else None,
            "vs_fastest_anchor": ms / fastest["median_ms"] if fastest else None,
            "torch": torch["label"] if torch else None,
            "torch_ms": torch["median_ms"] if torch else None,
            "vs_torch": ms / torch["median_ms"] if torch else None,
        })
    return comparisons


def compare_modules(rows: list[dict]) -> list[dict]:
    """Each of jaxlstm's module rows against the `jaxlstm` row of the same run, size and pass.

    `vs_jaxlstm` is the ratio of the medians, `min_vs_jaxlstm` of the fastest calls (less
    sensitive to a busy machine); 1 means the module adds nothing.
    """
    comparisons = []
    for row in (r for r in rows if r["impl"] in MODULES):
        subject = _row(rows, SUBJECT, row["size"], row["pass"])
        if subject is None:
            continue
        comparisons.append({
            "size": row["size"],
            "pass": row["pass"],
            "impl": row["impl"],
            "label": row["label"],
            "ms": row["median_ms"],
            "iqr_ms": row["iqr_ms"],
            "compile_ms": row["compile_ms"],
            "jaxlstm_ms": subject["median_ms"],
            "jaxlstm_iqr_ms": subject["iqr_ms"],
            "jaxlstm_compile_ms": subject["compile_ms"],
            "vs_jaxlstm": row["median_ms"] / subject["median_ms"],
            "min_vs_jaxlstm": row["min_ms"] / subject["min_ms"],
        })
    # By size (in measurement order), then pass, then module: a size's ratios side by side.
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    return sorted(comparisons, key=lambda c: (sizes.index(c["size"]), PASSES.index(c["pass"]),
                                              MODULES.index(c["impl"])))


def compare_xlstm(rows: list[dict]) -> list[dict]:
    """Each jaxlstm xLSTM row against its reference row (`XLSTM_REFERENCES`) and the LSTM
    (`jaxlstm` row) of the same run, size and pass: `vs_reference` and `vs_lstm` are its median
    over theirs (below 1: faster); None for a row that did not run."""
    comparisons = []
    for row in (r for r in rows if r["impl"] in XLSTM_REFERENCES):
        reference = _row(rows, XLSTM_REFERENCES[row["impl"]], row["size"], row["pass"])
        lstm = _row(rows, SUBJECT, row["size"], row["pass"])
        if reference is None and lstm is None:
            continue
        comparisons.append({
            "size": row["size"], "pass": row["pass"], "impl": row["impl"],
            "label": row["label"], "ms": row["median_ms"],
            "reference": None if reference is None else reference["label"],
            "reference_ms": None if reference is None else reference["median_ms"],
            "vs_reference": None if reference is None else row["median_ms"]
            / reference["median_ms"],
            "lstm_ms": None if lstm is None else lstm["median_ms"],
            "vs_lstm": None if lstm is None else row["median_ms"] / lstm["median_ms"],
        })
    return comparisons


def compare_default_forms(rows: list[dict]) -> list[dict]:
    """Each plain-call row (`DEFAULT_FORMS`: the function without `mode`) against the fastest
    of its forms measured in the same run, size and pass: `vs_fastest` is the plain call's
    median over that form's (1: the default is the fastest form)."""
    comparisons = []
    for row in (r for r in rows if r["impl"] in DEFAULT_FORMS):
        forms = [r for form in DEFAULT_FORMS[row["impl"]]
                 if (r := _row(rows, form, row["size"], row["pass"])) is not None]
        if not forms:
            continue
        fastest = min(forms, key=lambda r: r["median_ms"])
        comparisons.append({
            "size": row["size"], "pass": row["pass"], "impl": row["impl"],
            "label": row["label"], "ms": row["median_ms"], "fastest": fastest["label"],
            "fastest_ms": fastest["median_ms"], "vs_fastest": row["median_ms"]
            / fastest["median_ms"],
        })
    return comparisons


def reference_of(impl: str) -> str | None:
    """The row a row is compared with in the sequence-length sweep: an xLSTM row's reference
    (`XLSTM_REFERENCES`), `jaxlstm` for any other LSTM row, None for jaxlstm and the references."""
    if impl in XLSTM_REFERENCES:
        return XLSTM_REFERENCES[impl]
    return None if impl == SUBJECT or impl in XLSTM_KEYS else SUBJECT


def fit_slope(steps: Sequence[int], ms: Sequence[float]) -> float | None:
    """The exponent of the power law time ~ T^slope through the points: the least-squares slope
    of log(ms) against log(T). 1 means linear in T, 2 quadratic; None with fewer than two T.

    >>> round(fit_slope([1024, 2048, 4096], [10.0, 20.0, 40.0]), 6)
    1.0
    """
    if len(set(steps)) < 2:
        return None
    xs, ys = [math.log(t) for t in steps], [math.log(m) for m in ms]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    return (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
            / sum((x - mean_x) ** 2 for x in xs))


def scaling_series(rows: list[dict], grid: list[dict]) -> list[dict]:
    """Each row's median time against T, per base size and pass, with its fitted slope and its
    ratio to its reference row (`reference_of`) at each T where both ran.

    Args:
        rows: the result rows; a swept row's size is a `grid` point's name.
        grid: the sweep's points, `{"size": "S2", "steps": 1024, "name": "S2@T=1024"}`, T
            ascending within a size.
    """
    labels = {r["impl"]: r["label"] for r in rows}  # in measurement order
    series = []
    for size in dict.fromkeys(p["size"] for p in grid):
        points = [p for p in grid if p["size"] == size]
        for pass_name in PASSES:
            for impl, label in labels.items():
                measured = [(p, row) for p in points
                            if (row := _row(rows, impl, p["name"], pass_name))]
                if not measured:
                    continue
                steps = [p["steps"] for p, _ in measured]
                ms = [row["median_ms"] for _, row in measured]
                reference = reference_of(impl)
                others = [_row(rows, reference, p["name"], pass_name) if reference else None
                          for p, _ in measured]
                ratios = [m / o["median_ms"] if o else None
                          for m, o in zip(ms, others, strict=True)]
                compared = any(r is not None for r in ratios)
                series.append({
                    "size": size, "pass": pass_name, "impl": impl, "label": label,
                    "steps": steps, "median_ms": ms, "slope": fit_slope(steps, ms),
                    "reference": labels[reference] if compared else None,
                    "vs_reference": ratios if compared else None,
                })
    return series


def _scaling_tables(results: Results) -> list[str]:
    """One table per base size and pass: rows are implementations, columns T, cells median ms
    (and the ratio to the row's reference), then the fitted slope."""
    scaling, described = results["scaling"], {s["name"]: s for s in results["sizes"]}
    lines = []
    for size in dict.fromkeys(p["size"] for p in scaling["grid"]):
        points = [p for p in scaling["grid"] if p["size"] == size]
        first = described[points[0]["name"]]
        for pass_name in PASSES:
            series = [s for s in scaling["series"]
                      if (s["size"], s["pass"]) == (size, pass_name)]
            if not series:
                continue
            lines += [(f"### {size} (B={first['batch']}, I={first['input_size']}, "
                       f"H={first['hidden_size']}), {PASS_LABELS[pass_name]}"), "",
                      "| impl | " + " | ".join(f"T={p['steps']}" for p in points)
                      + " | slope | (ratio) reference |",
                      "|---" * (len(points) + 3) + "|"]
            for s in series:
                cells = []
                for p in points:
                    if p["steps"] not in s["steps"]:
                        cells.append("skipped" if any(
                            (k["size"], k["impl"], k["steps"]) == (size, s["impl"], p["steps"])
                            and k["pass"] in (pass_name, None) for k in scaling["skipped"])
                            else "")
                        continue
                    i = s["steps"].index(p["steps"])
                    ratio = s["vs_reference"][i] if s["vs_reference"] else None
                    cells.append(_fmt(s["median_ms"][i])
                                 + (f" ({ratio:.2f})" if ratio is not None else ""))
                slope = f"{s['slope']:.2f}" if s["slope"] is not None else ""
                lines.append(f"| {s['label']} | " + " | ".join(cells)
                             + f" | {slope} | {s['reference'] or ''} |")
            lines.append("")
    return lines


def _xlstm_table(comparisons: list[dict]) -> list[str]:
    lines = [("| size | pass | jaxlstm | ms | reference | ms | jaxlstm / reference "
              "| LSTM ms | / LSTM |"),
             "|---" * 9 + "|"]
    for c in comparisons:
        lines.append(
            f"| {c['size']} | {PASS_LABELS[c['pass']]} | {c['label']} | {_fmt(c['ms'])} "
            f"| {c['reference'] or '(not run)'} | {_fmt(c['reference_ms'])} "
            f"| {_fmt(c['vs_reference'])} | {_fmt(c.get('lstm_ms'))} | {_fmt(c.get('vs_lstm'))} |"
        )
    return lines


def _default_forms_table(comparisons: list[dict]) -> list[str]:
    lines = ["| size | pass | plain call | ms | fastest form | ms | plain / fastest |",
             "|---" * 7 + "|"]
    for c in comparisons:
        lines.append(
            f"| {c['size']} | {PASS_LABELS[c['pass']]} | {c['label']} | {_fmt(c['ms'])} "
            f"| {c['fastest']} | {_fmt(c['fastest_ms'])} | {c['vs_fastest']:.3f} |"
        )
    return lines


def _geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _times_table(results: Results) -> list[str]:
    """Rows are implementations, columns sizes; cells `forward / f+b` ms, the fastest in bold."""
    rows, sizes = results["rows"], [s["name"] for s in results["sizes"]]
    labels = {r["impl"]: r["label"] for r in rows}  # in measurement order, jaxlstm first
    lines = ["| impl | " + " | ".join(sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
    for impl, label in labels.items():
        cells = []
        for size in sizes:
            parts = []
            for pass_name in PASSES:
                row = _row(rows, impl, size, pass_name)
                if row is None:
                    parts.append("")
                    continue
                family = family_of(impl)  # bold: the fastest of the same kind of function
                fastest = min(r["median_ms"] for r in rows
                              if r["size"] == size and r["pass"] == pass_name
                              and family_of(r["impl"]) == family)
                text = _fmt(row["median_ms"])
                parts.append(f"**{text}**" if row["median_ms"] == fastest else text)
            cells.append(" / ".join(parts) if any(parts) else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _comparison_table(results: Results) -> list[str]:
    lines = [
        ("| size | pass | jaxlstm ms | GFLOP/s | % of peak | compile s | fastest anchor | ms "
         "| jaxlstm / fastest | jaxlstm / torch |"),
        "|---" * 10 + "|",
    ]
    for c in results["comparisons"]:
        compile_s = c["jaxlstm_compile_ms"] / 1e3 if c["jaxlstm_compile_ms"] else None
        lines.append(
            f"| {c['size']} | {PASS_LABELS[c['pass']]} | {_fmt(c['jaxlstm_ms'])} "
            f"| {_fmt(c['jaxlstm_gflops'])} | {_fmt(c['jaxlstm_pct_of_peak'], 2)} "
            f"| {_fmt(compile_s, 2)} | {c['fastest_anchor'] or ''} "
            f"| {_fmt(c['fastest_anchor_ms'])} | {_fmt(c['vs_fastest_anchor'])} "
            f"| {_fmt(c['vs_torch'])} |"
        )
    return lines


def _modules_table(comparisons: list[dict]) -> list[str]:
    """The module rows vs jaxlstm, then each module's geometric-mean ratio over the table."""
    lines = [
        ("| size | pass | module | ms (IQR) | jaxlstm ms (IQR) | module / jaxlstm "
         "| min / min | compile s | jaxlstm compile s |"),
        "|---" * 9 + "|",
    ]
    for c in comparisons:
        compile_s, subject_compile_s = (
            ms / 1e3 if ms is not None else None
            for ms in (c["compile_ms"], c["jaxlstm_compile_ms"])
        )
        lines.append(
            f"| {c['size']} | {PASS_LABELS[c['pass']]} | {c['label']} "
            f"| {_fmt(c['ms'])} ({_fmt(c['iqr_ms'], 2)}) "
            f"| {_fmt(c['jaxlstm_ms'])} ({_fmt(c['jaxlstm_iqr_ms'], 2)}) "
            f"| {c['vs_jaxlstm']:.3f} | {c['min_vs_jaxlstm']:.3f} "
            f"| {_fmt(compile_s, 2)} | {_fmt(subject_compile_s, 2)} |"
        )
    lines.append("")
    labels = {c["impl"]: c["label"] for c in comparisons}
    for impl, label in labels.items():
        mine = [c for c in comparisons if c["impl"] == impl]
        lines.append(
            f"- {label} / jaxlstm, geometric mean over {len(mine)} measurements: medians "
            f"{_geometric_mean([c['vs_jaxlstm'] for c in mine]):.3f}, fastest calls "
            f"{_geometric_mean([c['min_vs_jaxlstm'] for c in mine]):.3f}"
        )
    return lines


def _memory_table(memory: list[dict]) -> list[str]:
    lines = [
        ("| configuration (jaxlstm.lstm kwargs, or a cell's) | T | B | I | H | peak RSS MB | peak RSS before step MB "
         "| device peak MB | first call s | step s | note |"),
        "|---" * 11 + "|",
    ]
    for m in memory:
        note = m.get("skipped") or m.get("error") or ""
        lines.append(
            f"| `{json.dumps(m['kwargs'])}` | {m['steps']} | {m['batch']} | {m['input_size']} "
            f"| {m['hidden_size']} | {_fmt(m.get('peak_rss_mb'))} "
            f"| {_fmt(m.get('baseline_rss_mb'))} | {_fmt(m.get('device_peak_mb'))} "
            f"| {_fmt(m.get('first_call_s'))} | {_fmt(m.get('step_s'))} | {note} |"
        )
    return lines


def header(results: Results) -> str:
    """Where and how the run was made, and the measured peak, in one paragraph."""
    m, s, peak = results["machine"], results["settings"], results["peak"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    per_n = ", ".join(f"N={n}: {_fmt(g)}" for n, g in peak["matmul_gflops"].items())
    return (
        f"{results['date']}, {m['cpu']} ({m['cores']} cores; 1-min load average "
        f"{m['load_average_1min']['start']:.2f} at start, {m['load_average_1min']['end']:.2f} at "
        f"end), jax on {m['jax_devices']}; {versions}.\n"
        f"Single-layer LSTM, {s['precision']}. Median of >= {s['min_repeats']} timed calls after "
        f"warm-up (up to {s['max_repeats']} for fast calls); ms, forward / f+b (gradient of "
        f"sum(outputs) w.r.t. the parameters and the input). jaxlstm kwargs: "
        f"`{json.dumps(s['jaxlstm_kwargs'])}`.\n"
        f"Measured peak (XLA fp32 matmul, median): {_fmt(peak['gflops'])} GFLOP/s ({per_n}).\n"
        f"Command: `{results['command']}`"
    )


def markdown(results: Results) -> str:
    """The whole report: header, times, jaxlstm against the anchors, jaxlstm's modules against
    jaxlstm, time against T (with `--steps`), memory, skipped rows."""
    parts = ["# LSTM benchmark", "", header(results), ""]
    if results["rows"]:
        parts += _times_table(results) + [""]
    if results["comparisons"]:
        parts += _comparison_table(results) + [""]
    if results.get("vs_jaxlstm"):
        parts += ["## jaxlstm's Flax modules vs jaxlstm (same run)", "",
                  ("Ratios below 1 mean the module was faster than the functional call; "
                   "both compute the same numbers from the same arrays."), ""]
        parts += _modules_table(results["vs_jaxlstm"]) + [""]
    if results.get("vs_reference"):
        parts += ["## xLSTM cells vs their references (same run)", "",
                  (f"One cell, {XLSTM_HEADS} heads, at each size's (B, T, I, H); the references "
                   "run in torch on the CPU; LSTM: the `jaxlstm` row (one LSTM layer) at the "
                   "same size, when it ran."), ""]
        parts += _xlstm_table(results["vs_reference"]) + [""]
    if results.get("default_forms"):
        parts += ["## Plain calls vs their fastest form (same run)", "",
                  ("Each function called without `mode` (the backend's default form and, for "
                   "the mLSTM, its default chunk size) against the fastest of its forms."), ""]
        parts += _default_forms_table(results["default_forms"]) + [""]
    if results.get("scaling"):
        scaling = results["scaling"]
        parts += ["## Time against sequence length T", "",
                  ("Median ms at each T, B, I and H of the size kept; slope: the least-squares "
                   "fit of log(time) against log(T), time ~ T^slope (1: linear). In brackets: "
                   "the row's time over its reference row's at the same T."), ""]
        parts += _scaling_tables(results)
        skipped = [f"- skipped {k['impl']} at {k['size']} T={k['steps']}"
                   + (f" {PASS_LABELS[k['pass']]}" if k["pass"] else "") + f": {k['reason']}"
                   for k in scaling["skipped"]]
        parts += skipped + [""] if skipped else []
    if results.get("memory"):
        parts += ["## Long sequences: one training step", ""]
        parts += _memory_table(results["memory"]) + [""]
    if results.get("streaming"):
        streaming = results["streaming"]
        parts += ["## Streaming: one exported step", "",
                  (f"{streaming['model']}; median ms per step with the state fed back, and "
                   "ONNX Runtime's time over jitted JAX's (same run)."), "",
                  "| batch | jax.jit ms | ONNX Runtime ms | ONNX Runtime / JAX |",
                  "|---|---|---|---|"]
        parts += [f"| {r['batch']} | {_fmt(r['jax_ms'])} | {_fmt(r.get('onnxruntime_ms'))} "
                  f"| {_fmt(r.get('onnxruntime_vs_jax'))} |" for r in streaming["rows"]]
        parts += [f"- skipped {streaming['skipped']}"] if streaming["skipped"] else []
        parts += [""]
    for skipped in results["skipped"]:
        parts.append(f"- skipped {skipped['impl']}: {skipped['reason']}")
    settings = results["settings"]
    for row in results["rows"]:
        if row["repeats"] < settings["min_repeats"]:
            parts.append(
                f"- {row['label']} at {row['size']} {PASS_LABELS[row['pass']]}: only "
                f"{row['repeats']} timed calls, stopped by the {settings['max_s']:g} s cap"
            )
    return "\n".join(parts).rstrip() + "\n"


def plot(results: Results, path: Path) -> bool:
    """Grouped bars of time relative to the fastest anchor (log scale), one panel per size.

    Returns whether it drew the chart: not without matplotlib, nor without rows.
    """
    # The LSTM rows only: the xLSTM rows compute another function and have no LSTM anchor.
    rows = [r for r in results["rows"] if r["impl"] not in OTHER_FUNCTION_KEYS]
    sizes = results["sizes"]
    try:
        import matplotlib
    except ImportError:
        return False
    if not rows:
        return False
    matplotlib.use("Agg")  # files only; no display on a benchmark machine
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator

    labels = {r["impl"]: r["label"] for r in rows}
    width_in = max(8.0, 4.2 * len(sizes))
    fig, axes = plt.subplots(1, len(sizes), figsize=(width_in, 5.0), squeeze=False, sharey=True)
    bar_width = 0.8 / len(labels)
    colors = plt.get_cmap("tab10").colors
    for ax, size in zip(axes[0], sizes, strict=True):
        for i, impl in enumerate(labels):
            for p, pass_name in enumerate(PASSES):
                row = _row(rows, impl, size["name"], pass_name)
                fastest = _fastest_anchor(rows, size["name"], pass_name)
                if not (row and fastest):
                    continue
                ratio = row["median_ms"] / fastest["median_ms"]
                x = p + (i - (len(labels) - 1) / 2) * bar_width
                ax.bar(x, ratio, bar_width, color=colors[i % len(colors)],
                       edgecolor="black" if impl == SUBJECT else "none")
                if impl == SUBJECT:
                    ax.annotate(f"{ratio:.2f}x", (x, ratio), ha="center", va="bottom",
                                fontsize=8, xytext=(0, 2), textcoords="offset points")
        ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
        # Ratios span orders of magnitude (a starved thread pool can be 1000x slower).
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.set_xticks(range(len(PASSES)), [PASS_LABELS[p] for p in PASSES])
        ax.set_title(
            f"{size['name']}: B={size['batch']} T={size['steps']} "
            f"I={size['input_size']} H={size['hidden_size']}", fontsize=10,
        )
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("time / fastest anchor (log scale, lower is better)")
    # One legend for all panels; a row that runs at some sizes only is in it too.
    handles = [Patch(facecolor=colors[i % len(colors)], label=label,
                     edgecolor="black" if impl == SUBJECT else "none")
               for i, (impl, label) in enumerate(labels.items())]
    columns = max(1, min(len(handles), int(width_in // 3.5)))
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=9, frameon=False)
    m = results["machine"]
    fig.suptitle(
        f"LSTM forward and forward+backward (f+b) time relative to the fastest anchor\n"
        f"{m['cpu']}, {m['cores']} cores, jax on {m['jax_devices']}", fontsize=11,
    )
    legend_rows = -(-len(handles) // columns)
    fig.tight_layout(rect=(0, 0.05 * legend_rows, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_scaling(results: Results, path: Path) -> bool:
    """Time against T on log-log axes, a line per implementation, a panel per size and pass; a
    dotted line of slope 1 (time ~ T) for the eye.

    Returns whether it drew the chart: not without matplotlib, nor without a `scaling` section.
    """
    series = (results.get("scaling") or {}).get("series")
    try:
        import matplotlib
    except ImportError:
        return False
    if not series:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((s["size"], s["pass"]) for s in series))
    sizes = list(dict.fromkeys(size for size, _ in panels))
    passes = [p for p in PASSES if any(p == q for _, q in panels)]
    fig, axes = plt.subplots(len(sizes), len(passes), figsize=(6.0 * len(passes),
                             4.5 * len(sizes)), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    impls = list(dict.fromkeys(s["impl"] for s in series))  # one colour per row in all panels
    for row_axes, size in zip(axes, sizes, strict=True):
        for ax, pass_name in zip(row_axes, passes, strict=True):
            mine = [s for s in series if (s["size"], s["pass"]) == (size, pass_name)]
            for s in mine:
                slope = f", slope {s['slope']:.2f}" if s["slope"] is not None else ""
                ax.plot(s["steps"], s["median_ms"], marker="o",
                        color=colors[impls.index(s["impl"]) % len(colors)],
                        linewidth=2.5 if s["impl"] == SUBJECT else 1.5,
                        label=f"{s['label']}{slope}")
            if mine:
                steps = sorted({t for s in mine for t in s["steps"]})
                start = min(mine, key=lambda s: s["median_ms"][0])
                t0, ms0 = start["steps"][0], start["median_ms"][0]
                ax.plot(steps, [ms0 * t / t0 for t in steps], color="gray", linestyle=":",
                        linewidth=1, label="time ~ T")
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xticks(steps, [str(t) for t in steps])
            ax.set_title(f"{size}, {PASS_LABELS[pass_name]}", fontsize=10)
            ax.set_xlabel("sequence length T")
            ax.set_ylabel("median ms (log scale)")
            ax.grid(which="both", alpha=0.3)
            ax.legend(fontsize=8)
    m = results["machine"]
    fig.suptitle(f"Time against sequence length\n{m['cpu']}, {m['cores']} cores, "
                 f"jax on {m['jax_devices']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
