"""Training on files: speed against the same data in memory, and memory on a large dataset.

    python -m jaxlstm.benchmark.data speed     # quickstart model: .npz in memory vs shards
    python -m jaxlstm.benchmark.data memory    # peak RSS training on ~1 GB of shards

**speed**: the quickstart's problem (the adding problem, T=50) written as N sequences to an
`.npz` file (`task.name: arrays`, held in memory) and converted to ArrayRecord shards
(`task.options.path: <folder>`, read from disk while training); the quickstart's model and
optimizer train on each, alternately, `--repeats` times in this one process (the train step
compiles once). Steps/s is the median of `speed.jsonl`'s windows without the first (which holds
the compile). A third row trains on the shards with `training.prefetch=0` (each batch read in
the training thread), to show what the background threads hide. Ratios are to the in-memory
median of the same run.

**memory**: writes a dataset of about `--gb` GB (a folder of `.npy` files, written in chunks,
then converted, each in its own process), and trains the quickstart-sized model on the shards
in a fresh process, reporting its peak resident memory (VmHWM; Linux); the same run on a
dataset of 1,000 sequences gives the process's own size, so the difference is what the data
costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any

import numpy as np

QUICKSTART_MODEL = """\
model:
  hidden_size: 64
optimizer:
  name: adam
  learning_rate: 0.005
  clip_norm: 1.0
schedule:
  name: warmup_cosine
  warmup_steps: 100
  final_fraction: 0.05
"""


def write_adding(path: str, sequences: int, seq_len: int = 50) -> str:
    """The adding problem's data (as the built-in task draws it) in an .npz file."""
    from jaxlstm.tasks.adding import adding_batch

    batch = adding_batch(np.random.default_rng(0), sequences, seq_len)
    np.savez(path, inputs=batch["inputs"], targets=batch["targets"][:, 0, :])
    return path


def _config(root: str, name: str, path: str, steps: int, extra: str = "") -> str:
    file = os.path.join(root, f"{name}.yaml")
    with open(file, "w") as f:
        f.write(f"task:\n  name: arrays\n  options: {{path: {path}}}\n{QUICKSTART_MODEL}"
                f"training:\n  steps: {steps}\n  batch_size: 64\n  eval_every: {steps}\n"
                f"  eval_batch_size: 1024\n{extra}"
                f"logging:\n  log_every: 25\n  progress: false\n  tensorboard: false\n"
                f"  plots: false\ncheckpointing:\n  every: {steps}\n  keep_best: false\n"
                f"runs_root: {os.path.join(root, 'runs')}\n")
    return file


def _steps_per_s(run_dir: str) -> float:
    with open(os.path.join(run_dir, "speed.jsonl")) as f:
        rates = [json.loads(line)["steps_per_s"] for line in f if line.strip()]
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def speed(args: argparse.Namespace) -> dict[str, Any]:
    """Steps/s on the same data held in memory and read from shards (see the module doc)."""
    from jaxlstm.tasks.files import ArraysTask, shards
    from jaxlstm.train.config import load_config
    from jaxlstm.train.run import run_experiment

    root = tempfile.mkdtemp(prefix="jaxlstm-data-bench-")
    npz = write_adding(os.path.join(root, "adding.npz"), args.sequences)
    folder = os.path.join(root, "adding-shards")
    shards.convert(ArraysTask(path=npz), folder, {})
    rows = {"memory (.npz)": _config(root, "memory", npz, args.steps),
            "file (shards)": _config(root, "file", folder, args.steps),
            "file (shards), prefetch 0": _config(root, "file_no_prefetch", folder, args.steps,
                                                 "  prefetch: 0\n")}
    rates: dict[str, list[float]] = {name: [] for name in rows}
    for repeat in range(args.repeats):
        for name, config in rows.items():
            result = run_experiment(load_config(config))
            rates[name].append(_steps_per_s(result.run_dir))
            print(f"repeat {repeat + 1}: {name}: {rates[name][-1]:.1f} steps/s", flush=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    anchor = medians["memory (.npz)"]
    print(f"\nquickstart model (H=64, B=64, T=50), {args.sequences:,} sequences, "
          f"{args.steps} steps per run, medians of {args.repeats}:")
    for name, value in medians.items():
        print(f"  {name:28s} {value:7.1f} steps/s   {value / anchor:.3f}x memory")
    return {"steps_per_s": rates, "medians": medians,
            "ratios": {k: v / anchor for k, v in medians.items()}}


def write_large(folder: str, gigabytes: float, seq_len: int = 100, features: int = 16,
                chunk: int = 8192) -> int:
    """A folder of .npy files of about `gigabytes` GB, written chunk by chunk (bounded
    memory): inputs (N, T, I) float32, targets (N,) the sign of the first feature's sum."""
    os.makedirs(folder, exist_ok=True)
    count = int(gigabytes * 2**30 // (seq_len * features * 4))
    inputs = np.lib.format.open_memmap(os.path.join(folder, "inputs.npy"), "w+", np.float32,
                                       (count, seq_len, features))
    targets = np.zeros(count, np.int32)
    rng = np.random.default_rng(0)
    for start in range(0, count, chunk):
        part = rng.standard_normal((min(chunk, count - start), seq_len, features),
                                   dtype=np.float32)
        inputs[start:start + len(part)] = part
        targets[start:start + len(part)] = part[:, :, 0].sum(axis=1) > 0
    inputs.flush()
    del inputs
    np.save(os.path.join(folder, "targets.npy"), targets)
    return count


# The child reports its own peak: VmHWM of its address space. `ru_maxrss` would not do: a
# child made by fork (or vfork) from this large parent starts with the parent's resident pages,
# and Linux carries that high-water mark across exec into the child's ru_maxrss (measured: 1109
# MB by ru_maxrss for a training process whose VmHWM was 648 MB).
_REPORT_PEAK = """\
import atexit, sys
def report():
    with open("/proc/self/status") as f:
        kib = next(line for line in f if line.startswith("VmHWM")).split()[1]
    print(f"peak_rss_kib {kib}", file=sys.stderr)
atexit.register(report)
from jaxlstm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _child_peak_mb(args: list[str]) -> tuple[float, float]:
    """Runs `jaxlstm ARGS...` in a child; returns (its peak RSS in MB, seconds). Linux only
    (/proc); raises on failure."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _REPORT_PEAK, *args], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"jaxlstm {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    kib = next(line for line in result.stderr.splitlines() if line.startswith("peak_rss_kib"))
    return int(kib.split()[1]) / 1024, time.perf_counter() - start


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of training on about `--gb` GB of shards (see the module doc)."""
    root = tempfile.mkdtemp(prefix="jaxlstm-data-memory-")
    results: dict[str, Any] = {}
    for name, size in (("small", 1000 * 100 * 16 * 4 / 2**30), ("large", args.gb)):
        source = os.path.join(root, f"{name}-npy")
        count = write_large(source, size)
        folder = os.path.join(root, f"{name}-shards")
        convert_mb, convert_s = _child_peak_mb(["data", "convert", source, folder])
        data_bytes = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        config = _config(root, name, folder, args.steps)
        train_mb, train_s = _child_peak_mb(["train", config])
        results[name] = {"sequences": count, "shard_bytes": data_bytes,
                         "convert_peak_rss_mb": convert_mb, "convert_s": convert_s,
                         "train_peak_rss_mb": train_mb, "train_s": train_s}
        print(f"{name}: {count:,} sequences, {data_bytes / 2**30:.2f} GiB of shards; convert "
              f"peak RSS {convert_mb:.0f} MB ({convert_s:.0f} s); train {args.steps} steps "
              f"peak RSS {train_mb:.0f} MB ({train_s:.0f} s)", flush=True)
    growth = results["large"]["train_peak_rss_mb"] - results["small"]["train_peak_rss_mb"]
    print(f"training on {results['large']['shard_bytes'] / 2**30:.2f} GiB: peak RSS "
          f"{results['large']['train_peak_rss_mb']:.0f} MB, "
          f"{growth:+.0f} MB against {results['small']['sequences']:,} sequences")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jaxlstm.benchmark.data",
                                     description=textwrap.dedent(__doc__.split("\n\n")[0]))
    parser.add_argument("experiment", choices=("speed", "memory"))
    parser.add_argument("--sequences", type=int, default=20_000, help="speed: dataset size")
    parser.add_argument("--steps", type=int, default=600, help="training steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="speed: runs per row")
    parser.add_argument("--gb", type=float, default=1.0, help="memory: dataset size in GiB")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    results = speed(args) if args.experiment == "speed" else memory(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
