"""Yearly sunspot numbers (309 values, 1700-2008, shipped inside statsmodels): next-year
forecasting from a window of the previous `window` years.

The held-out set is the last 20% of years (62 targets, 1947-2008); each of their windows may reach
back into training years, as a forecaster's would. Training windows and targets lie wholly in
the earlier years. Values are scaled by the training years' mean and standard deviation; the
loss is the MSE in scaled units and the task's metric, "rmse", is in sunspot numbers.

Two baselines, reported as metrics on every batch and by `baseline()`: persistence (next year
equals this year, "rmse_persistence") and 11-year seasonal naive (next year equals the year 11
years before it, one solar cycle, "rmse_seasonal"). `baseline()` gives the better one's RMSE
as "rmse".

The held-out set is returned as one batch whatever the batch size, so that its RMSE is exact
(a mean of per-batch RMSEs would not be).

Needs statsmodels (`pip install 'jaxlstm[tasks]'`); the data ship inside it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.tasks._data import (
    Extra,
    check_batch_size,
    concat_outputs,
    epoch_indices,
    new_figure,
    require,
    save_figure,
)
from jaxlstm.tasks.base import Batch, TaskSpec, check_split

CYCLE = 11  # years, the seasonal-naive lag
TEST_FRACTION = 0.2
NEEDS = Extra("statsmodels.datasets.sunspots", "statsmodels")  # the data ship inside it


@functools.lru_cache(maxsize=1)
def load_sunspots() -> tuple[np.ndarray, np.ndarray]:
    """Years (309,) int32 and yearly sunspot numbers (309,) float32."""
    sunspots = require(NEEDS, "sunspots")
    data = sunspots.load_pandas().data
    years = np.asarray(data["YEAR"], np.float64).astype(np.int32)
    values = np.asarray(data["SUNACTIVITY"], np.float32)
    years.flags.writeable = False
    values.flags.writeable = False
    return years, values


def windows(values: np.ndarray, targets: np.ndarray, window: int) -> np.ndarray:
    """The `window` values before each target index: (len(targets), window)."""
    return np.stack([values[t - window:t] for t in targets])


@dataclasses.dataclass(eq=False)
class SunspotsTask:
    """Forecast next year's sunspot number from the last `window` years (`window` >= 11).

    Compared and hashed by identity, so its bound `metrics` can be static data under jit.
    """

    needs = NEEDS  # `jaxlstm configs` marks the configs of this task (`needs_extra`)

    window: int = 20

    def __post_init__(self) -> None:
        if self.window < CYCLE:
            raise ValueError(
                f"task.window must be >= {CYCLE} (the seasonal-naive baseline reads the value "
                f"{CYCLE} years back), got {self.window}."
            )
        years, values = load_sunspots()
        size = len(values)
        self.test_start = size - round(TEST_FRACTION * size)  # first held-out target
        if self.window > self.test_start - 1:
            raise ValueError(f"task.window must be < {self.test_start - 1}, got {self.window}.")
        train_values = values[:self.test_start].astype(np.float64)
        self.mean = float(train_values.mean())
        self.std = float(train_values.std())
        self.years = years
        self.values = values
        train_targets = np.arange(self.window, self.test_start)
        test_targets = np.arange(self.test_start, size)
        self.test_years = years[test_targets]
        self._train = self._arrays(train_targets)
        self._eval = self._arrays(test_targets)
        self.spec = TaskSpec(name="sunspots", input_size=1, output_size=1, readout="last",
                             kind="regression", metric="rmse")

    def _arrays(self, targets: np.ndarray) -> Batch:
        scaled = ((self.values - self.mean) / self.std).astype(np.float32)
        return {"inputs": windows(scaled, targets, self.window)[..., None],
                "targets": scaled[targets].reshape(-1, 1, 1)}

    @property
    def train_size(self) -> int:
        return len(self._train["targets"])

    def scale(self, values: Any) -> Any:
        return (values - self.mean) / self.std

    def unscale(self, values: Any) -> Any:
        """From model units back to sunspot numbers."""
        return values * self.std + self.mean

    def train_batch(self, seed: int, step: int, batch_size: int,
                    rows: slice | None = None) -> Batch:
        """Batch `step` of a per-epoch permutation of the training windows."""
        batch_size = check_batch_size(batch_size, self.train_size, "sunspots")
        indices = epoch_indices(seed, step, batch_size, self.train_size)
        indices = indices if rows is None else indices[rows]
        return {k: v[indices] for k, v in self._train.items()}

    def eval_batches(self, batch_size: int, split: str = "valid") -> list[Batch]:
        """The held-out years as one batch, whatever `batch_size` (so the RMSE is exact)."""
        check_split(split, self.spec.name)
        del batch_size
        return [dict(self._eval)]

    def baseline(self, split: str = "valid") -> dict[str, float]:
        """Persistence and 11-year seasonal naive on the held-out years, in sunspot numbers;
        "rmse" and "loss" are the better one's."""
        check_split(split, self.spec.name)
        targets = np.arange(self.test_start, len(self.values))
        truth = self.values[targets].astype(np.float64)
        persistence = float(np.sqrt(np.mean((self.values[targets - 1] - truth) ** 2)))
        seasonal = float(np.sqrt(np.mean((self.values[targets - CYCLE] - truth) ** 2)))
        best = min(persistence, seasonal)
        return {"loss": (best / self.std) ** 2, "rmse": best, "rmse_persistence": persistence,
                "rmse_seasonal": seasonal}

    def metrics(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Loss: MSE in scaled units. "rmse": the model's RMSE in sunspot numbers, beside the
        persistence and seasonal-naive RMSEs on the same batch."""
        targets = batch["targets"][:, -1, 0]
        inputs = batch["inputs"][:, :, 0]
        mse = jnp.mean(jnp.square(outputs[:, -1, 0] - targets))

        def rmse(forecast: jax.Array) -> jax.Array:
            return jnp.sqrt(jnp.mean(jnp.square(forecast - targets))) * self.std

        return {"loss": mse, "rmse": jnp.sqrt(mse) * self.std,
                "rmse_persistence": rmse(inputs[:, -1]),
                "rmse_seasonal": rmse(inputs[:, -CYCLE])}

    def plot(self, path: str | os.PathLike, outputs: Any, batches: Sequence[Batch]) -> Any:
        """The model's forecasts against the truth over the held-out years, with persistence."""
        outputs, batch = concat_outputs(outputs, batches)
        forecast = self.unscale(outputs[:, -1, 0])
        truth = self.unscale(batch["targets"][:, -1, 0])
        persistence = self.unscale(batch["inputs"][:, -1, 0])
        years = self.test_years[:len(truth)]
        context = slice(max(0, self.test_start - 30), self.test_start)
        rmse = float(np.sqrt(np.mean((forecast - truth) ** 2)))
        rmse_p = float(np.sqrt(np.mean((persistence - truth) ** 2)))
        figure = new_figure(10.0, 4.2)
        ax = figure.subplots()
        ax.plot(self.years[context], self.values[context], color="0.6", lw=1.2,
                label="training years")
        ax.plot(years, truth, color="black", lw=1.6, marker="o", ms=3, label="truth")
        ax.plot(years, persistence, color="tab:gray", lw=1, ls="--",
                label=f"persistence (RMSE {rmse_p:.1f})")
        ax.plot(years, forecast, color="tab:red", lw=1.6, marker="o", ms=3,
                label=f"LSTM forecast (RMSE {rmse:.1f})")
        ax.axvline(self.years[self.test_start] - 0.5, color="0.4", lw=0.8, ls=":")
        ax.set_xlabel("year")
        ax.set_ylabel("yearly sunspot number")
        ax.set_title(f"Sunspots: next-year forecasts over the held-out years "
                     f"(window {self.window})", fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
        return save_figure(figure, path)
