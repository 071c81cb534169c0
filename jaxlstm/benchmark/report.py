"""Views of a benchmark's results document: jaxlstm against the anchors, jaxlstm's Flax modules
against jaxlstm, markdown, a bar chart.

Everything here reads the same dict that is written to results.json, so a report can be rebuilt
from a saved run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from jaxlstm.benchmark.anchors import XLSTM_HEADS, XLSTM_KEYS, XLSTM_REFERENCES
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
               and r["impl"] not in XLSTM_KEYS]  # another function: not an LSTM anchor
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
    """Each jaxlstm xLSTM row against its reference row (`XLSTM_REFERENCES`) of the same run,
    size and pass: `vs_reference` is jaxlstm's median over the reference's (below 1: faster)."""
    comparisons = []
    for row in (r for r in rows if r["impl"] in XLSTM_REFERENCES):
        reference = _row(rows, XLSTM_REFERENCES[row["impl"]], row["size"], row["pass"])
        if reference is None:
            continue
        comparisons.append({
            "size": row["size"], "pass": row["pass"], "impl": row["impl"],
            "label": row["label"], "ms": row["median_ms"],
            "reference": reference["label"], "reference_ms": reference["median_ms"],
            "vs_reference": row["median_ms"] / reference["median_ms"],
        })
    return comparisons


def _xlstm_table(comparisons: list[dict]) -> list[str]:
    lines = ["| size | pass | jaxlstm | ms | reference | ms | jaxlstm / reference |",
             "|---" * 7 + "|"]
    for c in comparisons:
        lines.append(
            f"| {c['size']} | {PASS_LABELS[c['pass']]} | {c['label']} | {_fmt(c['ms'])} "
            f"| {c['reference']} | {_fmt(c['reference_ms'])} | {c['vs_reference']:.3f} |"
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
                family = impl in XLSTM_KEYS  # bold: the fastest of the same function
                fastest = min(r["median_ms"] for r in rows
                              if r["size"] == size and r["pass"] == pass_name
                              and (r["impl"] in XLSTM_KEYS) == family)
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
        ("| jaxlstm.lstm kwargs | T | B | I | H | peak RSS MB | peak RSS before step MB "
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
    jaxlstm, memory, skipped rows."""
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
                   "run in torch on the CPU."), ""]
        parts += _xlstm_table(results["vs_reference"]) + [""]
    if results.get("memory"):
        parts += ["## Long sequences: one training step", ""]
        parts += _memory_table(results["memory"]) + [""]
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
    rows = [r for r in results["rows"] if r["impl"] not in XLSTM_KEYS]
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
