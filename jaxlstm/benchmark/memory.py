"""Long sequences: peak memory and wall time of one jaxlstm training step, per configuration.

Each configuration (a dict of keyword arguments for `jaxlstm.lstm`, or, with a "cell" key of
`CELLS`, for that cell's sequence function, e.g. {"cell": "min_lstm", "mode": "parallel"}) runs
in a fresh Python process, because peak RSS only ever grows within a process: the child reports its own
`getrusage(RUSAGE_SELF).ru_maxrss` after one step, and that number belongs to that configuration
alone. The step is `jax.value_and_grad` of sum(outputs) w.r.t. the parameters, jitted.

    python -m jaxlstm.benchmark.memory '{"unroll": 2}' --steps 1000    # one child by hand
    jaxlstm bench --sizes S2 --only jaxlstm --memory --memory-steps 16384 \
        --memory-configs '[{}, {"cell": "min_lstm", "mode": "sequential"}]'
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp

import jaxlstm
from jaxlstm.benchmark.anchors import unsupported_lstm_kwargs

CONFIGS: tuple[dict[str, Any], ...] = ({}, {"remat_chunk": 100})
"""What the experiment compares: plain backprop through the scan, and rematerialised chunks."""

CELLS = {
    "lstm": (jaxlstm.init_lstm, jaxlstm.lstm),
    "min_lstm": (jaxlstm.init_min_lstm, jaxlstm.min_lstm),
    "min_gru": (jaxlstm.init_min_gru, jaxlstm.min_gru),
}
"""The cells a configuration's "cell" key can name: (init, sequence function)."""


def _unsupported(kwargs: dict[str, Any]) -> str | None:
    """Why a configuration cannot run, or None."""
    cell = kwargs.get("cell", "lstm")
    if cell not in CELLS:
        return f"cell {cell!r} is not one of {', '.join(CELLS)}"
    if cell == "lstm":
        unsupported = unsupported_lstm_kwargs({k: v for k, v in kwargs.items() if k != "cell"})
        if unsupported:
            return f"jaxlstm.lstm does not accept {', '.join(unsupported)}"
    return None


@dataclass(frozen=True)
class MemoryProblem:
    """The long-sequence training problem: batch-major (B, T, I) inputs, H hidden units."""

    steps: int = 10_000
    batch: int = 32
    input_size: int = 32
    hidden_size: int = 256
    timed_steps: int = 2  # after the first (compiling) call


def _max_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(kwargs: dict[str, Any], problem: MemoryProblem) -> dict[str, Any]:
    """Runs in the child: one compiled training step, then `timed_steps` more."""
    kwargs = dict(kwargs)
    init, run = CELLS[kwargs.pop("cell", "lstm")]
    params = init(jax.random.key(0), problem.input_size, problem.hidden_size)
    xs = jax.random.normal(
        jax.random.key(1), (problem.batch, problem.steps, problem.input_size)
    )
    # xs is an argument, not a closure: a captured array would be baked into the executable.
    loss = lambda p, x: jnp.sum(run(p, x, **kwargs)[0])
    train_step = jax.jit(jax.value_and_grad(loss))
    baseline_rss_mb = _max_rss_mb()

    start = time.perf_counter()
    jax.block_until_ready(train_step(params, xs))
    first_call_s = time.perf_counter() - start
    times = []
    for _ in range(problem.timed_steps):
        start = time.perf_counter()
        jax.block_until_ready(train_step(params, xs))
        times.append(time.perf_counter() - start)
    # On a GPU the activations live in device memory, which RSS does not see.
    device_stats = jax.devices()[0].memory_stats() or {}
    device_peak = device_stats.get("peak_bytes_in_use")
    return {
        "peak_rss_mb": _max_rss_mb(),
        "baseline_rss_mb": baseline_rss_mb,
        "device_peak_mb": device_peak / 2**20 if device_peak is not None else None,
        "first_call_s": first_call_s,
        "step_s": statistics.median(times),
    }


def _measure_in_child(kwargs: dict[str, Any], problem: MemoryProblem) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "jaxlstm.benchmark.memory", json.dumps(kwargs),
        "--steps", str(problem.steps), "--batch", str(problem.batch),
        "--input-size", str(problem.input_size), "--hidden-size", str(problem.hidden_size),
        "--timed-steps", str(problem.timed_steps),
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        last_lines = "\n".join(result.stderr.strip().splitlines()[-3:])
        return {"error": f"exit status {result.returncode}: {last_lines}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_memory_experiment(
    problem: MemoryProblem, configs: tuple[dict[str, Any], ...] = CONFIGS
) -> list[dict[str, Any]]:
    """Measures every configuration in its own process; one result dict per configuration.

    A configuration whose keys `jaxlstm.lstm` does not accept (or whose "cell" is unknown) is
    skipped, with a note printed and recorded, so the list can name options the library has
    not grown yet.
    """
    results = []
    for kwargs in configs:
        record = {"kwargs": kwargs, **asdict(problem)}
        reason = _unsupported(kwargs)
        if reason:
            record["skipped"] = reason
            print(f"memory {json.dumps(kwargs)}: skipped, {record['skipped']}")
        else:
            record.update(_measure_in_child(kwargs, problem))
            print(f"memory {json.dumps(kwargs)}: {record}")
        results.append(record)
    return results


def main(argv: list[str] | None = None) -> None:
    """The child: measures one configuration and prints its result as one JSON line."""
    defaults = MemoryProblem()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kwargs", type=json.loads,
                        help='keyword arguments for jaxlstm.lstm (or {"cell": ..., ...})')
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--input-size", type=int, default=defaults.input_size)
    parser.add_argument("--hidden-size", type=int, default=defaults.hidden_size)
    parser.add_argument("--timed-steps", type=int, default=defaults.timed_steps)
    args = parser.parse_args(argv)
    problem = MemoryProblem(
        args.steps, args.batch, args.input_size, args.hidden_size, args.timed_steps
    )
    print(json.dumps(_measure(args.kwargs, problem)))


if __name__ == "__main__":
    main()
