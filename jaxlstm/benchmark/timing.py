"""Timing: warm-up, then the median of many timed calls; and the measured matmul peak."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Budget:
    """How long to time one call.

    `warmup` untimed calls, then timed calls until `target_s` has passed, but at least
    `min_repeats` and at most `max_repeats` of them: a slow call costs about `min_repeats` times
    its own time, a fast one about `target_s`, and fast calls get the most samples.

    `max_s` bounds a call so slow that this would take longer (a thread pool starved by another
    process can be 1000x slower): warm-up stops once it has taken `max_s / 2`, and timing once
    the whole measurement has taken `max_s` and two calls are timed.
    """

    min_repeats: int = 10
    target_s: float = 1.0
    max_repeats: int = 300
    max_s: float = 15.0
    warmup: int = 2

    def done(self, calls: int, elapsed_s: float) -> bool:
        """Whether `calls` timed calls are enough, `elapsed_s` into the measurement."""
        return (
            calls >= self.max_repeats
            or (calls >= self.min_repeats and elapsed_s >= self.target_s)
            or (calls >= 2 and elapsed_s >= self.max_s)  # two: quartiles need two
        )


@dataclass(frozen=True)
class Timing:
    """Statistics of the timed calls, in milliseconds."""

    median_ms: float
    min_ms: float
    q1_ms: float
    q3_ms: float
    repeats: int

    @property
    def iqr_ms(self) -> float:
        """Interquartile range: the spread of the middle half of the calls."""
        return self.q3_ms - self.q1_ms


def time_call(call: Callable[[], object], budget: Budget) -> Timing:
    """Times `call`, which must return only once its work is done (block_until_ready)."""
    began = time.perf_counter()
    for _ in range(budget.warmup):
        call()
        if time.perf_counter() - began >= budget.max_s / 2:
            break
    # A garbage collection inside a 1 ms call would be timed as the call's.
    gc.collect()
    gc.disable()
    try:
        times: list[float] = []
        while not budget.done(len(times), time.perf_counter() - began):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    finally:
        gc.enable()
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return Timing(median * 1e3, min(times) * 1e3, q1 * 1e3, q3 * 1e3, len(times))


def matmul_gflops(n: int, budget: Budget) -> float:
    """GFLOP/s of XLA's float32 (n, n) @ (n, n) on the default device, from the median call."""
    a, b = jax.random.normal(jax.random.key(0), (2, n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul).lower(a, b).compile()
    timing = time_call(lambda: matmul(a, b).block_until_ready(), budget)
    return 2 * n**3 / (timing.median_ms * 1e-3) / 1e9
