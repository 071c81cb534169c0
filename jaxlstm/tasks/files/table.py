"""`task.name: table`: forecasting time series from a CSV or Parquet file.

    path       a .csv (or .tsv) or .parquet file, read with pyarrow
    features   the columns the model reads at each step
    targets    the columns it forecasts (they may also be features)
    window     steps of history per example
    horizon    steps ahead: the model forecasts every target at t+1 .. t+horizon from the
               window ending at t (output size len(targets) * horizon)
    group      optional: a column naming the series, for many series in one file; windows
               never cross from one series into another
    time       optional: a column to sort by (within each series); without it the rows'
               order is time

Splits are by time, so nothing from the future leaks into training: without `time`, each
series' rows are cut by position (the first 1 - valid_fraction - test_fraction train, then
valid, then test); with `time`, at two cut times, the time values at those fractions of all
rows, so every series is cut at the same moment. An example belongs to the split that holds
all of its forecast steps; its window may reach back into earlier splits, as a forecaster's
history would. Columns are normalised with the training rows' mean and standard deviation
(saved in the run folder as `normalisation.json`); the loss and the metric ("mse") are in
normalised units.

Baseline: persistence, the last value of each target repeated over the horizon, on the same
windows ("mse", and "mse_persistence" beside the model's on every batch).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.tasks.base import Batch, TaskSpec
from jaxlstm.tasks.files import examples as ex
from jaxlstm.tasks.files.errors import DataError
from jaxlstm.tasks.files.examples import Examples, Window, WindowExamples
from jaxlstm.tasks.files.splits import check_fractions, existing_file, source_paths
from jaxlstm.tasks.files.task import FileTask, Loaded, SplitOptions, display_path

NORMALISATION_FILE = "normalisation.json"
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}


@dataclasses.dataclass(eq=False)
class TableFormat:
    """Windows of normalised columns -> inputs (W, F), forecasts (1, horizon * targets).

    Attributes:
        features, targets: column names.
        window, horizon: as in the module docstring.
        mean, std: per column (features and targets), from the training rows.
    """

    features: list[str]
    targets: list[str]
    window: int
    horizon: int
    mean: dict[str, float]
    std: dict[str, float]

    task = "table"

    @property
    def output_size(self) -> int:
        return len(self.targets) * self.horizon

    def spec(self) -> TaskSpec:
        return TaskSpec(name="table", input_size=len(self.features),
                        output_size=self.output_size, readout="last", kind="regression",
                        metric="mse")

    def collate(self, examples: ex.Example) -> Batch:
        targets = np.asarray(examples["targets"], np.float32)  # (B, horizon, targets)
        return {"inputs": np.asarray(examples["inputs"], np.float32),
                "targets": targets.reshape(len(targets), 1, self.output_size),
                "last": np.asarray(examples["last"], np.float32).reshape(len(targets), -1)}

    def persistence(self, last: Any) -> Any:
        """The persistence forecast (B, 1, horizon * targets) from the last values (B, targets)."""
        tile = jnp.tile if isinstance(last, jax.Array) else np.tile
        return tile(last, (1, self.horizon))[:, None, :]

    def metrics(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """MSE in normalised units, the model's and persistence's on the same windows."""
        targets = batch["targets"]
        mse = jnp.mean(jnp.square(outputs.astype(jnp.float32) - targets))
        persistence = jnp.mean(jnp.square(self.persistence(batch["last"]) - targets))
        return {"loss": mse, "mse": mse, "mse_persistence": persistence}

    def baseline_fit(self, train: Examples) -> dict[str, Any]:
        return {}

    def baseline(self, fit: dict[str, Any], split: Examples) -> dict[str, float]:
        total, count = 0.0, 0
        for chunk in ex.chunks(split):
            batch = self.collate(chunk)
            error = (self.persistence(batch["last"]) - batch["targets"]) ** 2
            total += float(np.sum(error, dtype=np.float64))
            count += error.size
        mse = total / max(count, 1)
        return {"loss": mse, "mse": mse, "mse_persistence": mse}

    def state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TableFormat:
        return cls(**state)

    def artifacts(self) -> dict[str, str]:
        columns = {name: {"mean": self.mean[name], "std": self.std[name]}
                   for name in dict.fromkeys([*self.features, *self.targets])}
        return {NORMALISATION_FILE: json.dumps(
            {"fitted_on": "training rows", "columns": columns, "features": self.features,
             "targets": self.targets}, indent=2) + "\n"}

    def describe(self) -> str:
        return (f"features {self.features} -> targets {self.targets}, window {self.window}, "
                f"horizon {self.horizon}")


@dataclasses.dataclass(eq=False)
class TableTask(SplitOptions, FileTask):
    """Time-series forecasting from a CSV or Parquet file (see the module docstring)."""

    features: list[str] = dataclasses.field(default_factory=list)
    targets: list[str] = dataclasses.field(default_factory=list)
    window: int = 32
    horizon: int = 1
    group: str | None = None
    time: str | None = None

    name = "table"
    FORMAT = TableFormat  # what `shards.load` rebuilds from a converted dataset

    def __post_init__(self) -> None:
        for key in ("features", "targets"):
            names = getattr(self, key)
            if not names and not _converted(self.path):
                raise ValueError(f"task.{key}: expected a non-empty list of column names, got "
                                 f"{names!r}.")
            if len(set(names)) != len(names):
                raise ValueError(f"task.{key}: a column is named twice in {names!r}.")
        for key in ("window", "horizon"):
            if getattr(self, key) < 1:
                raise ValueError(f"task.{key}: expected a positive int, got "
                                 f"{getattr(self, key)!r}.")
        check_fractions(self.valid_fraction, self.test_fraction)
        self._load()

    def _read(self) -> Loaded:
        paths = source_paths("table", self.path, self.train_path, self.valid_path,
                             self.test_path)
        tables = {split: read_table(path, self._columns()) for split, path in paths.items()}
        if "all" in paths:
            series = _series(paths["all"], tables["all"], self.group, self.time)
            cuts = _cut_positions(paths["all"], series, tables["all"], self)
        else:
            series, cuts, offset = [], [], 0
            for split in ("train", "valid", "test"):
                if split not in tables:
                    continue
                for start, stop in _series(paths[split], tables[split], self.group, self.time):
                    series.append((offset + start, offset + stop))
                    cuts.append({s: (offset + start, offset + stop) if s == split else
                                 (offset + start, offset + start) for s in
                                 ("train", "valid", "test")})
                offset += len(tables[split]["__order__"])
        columns = self._concatenated(tables, paths)
        train_rows = np.concatenate([np.arange(*cut["train"]) for cut in cuts])
        mean = {c: float(np.mean(columns[c][train_rows])) for c in columns}
        std = {c: float(np.std(columns[c][train_rows])) or 1.0 for c in columns}
        fmt = TableFormat(list(self.features), list(self.targets), self.window, self.horizon,
                          mean, std)
        normalised = {c: ((columns[c] - mean[c]) / std[c]).astype(np.float32) for c in columns}
        features = np.stack([normalised[c] for c in self.features], axis=-1)
        targets = np.stack([normalised[c] for c in self.targets], axis=-1)
        windows = {"inputs": Window(features, -(self.window - 1), self.window),
                   "targets": Window(targets, 1, self.horizon),
                   "last": Window(targets, 0, 1)}
        ends = _window_ends(series, cuts, self.window, self.horizon)
        where = paths.get("all", paths.get("train"))
        for split in ("train", "valid"):
            if not len(ends[split]):
                raise DataError(where, f"no window of {self.window} steps with a forecast of "
                                       f"{self.horizon} fits in the {split} split of any "
                                       f"series; expected longer series, a smaller window, "
                                       f"or a larger {split}_fraction.")
        sources = {split: WindowExamples(windows, e) for split, e in ends.items() if len(e)}
        if "all" in paths and self.test_fraction > 0 and "test" not in sources:
            raise DataError(where, "no window fits in the test split of any series; expected "
                                   "longer series or a larger test_fraction.")
        files = sorted({os.path.abspath(p) for p in paths.values()})
        groups = f"{len(series)} series" + (f" (group {self.group!r})" if self.group else "")
        how = f"split by {'time ' + repr(self.time) if self.time else 'row order'}"
        return Loaded(sources, fmt, files,
                      f"{display_path(where)}, {len(columns[self.features[0]]):,} rows, "
                      f"{groups}, {how}")

    def _columns(self) -> list[str]:
        """Every column to read, each once."""
        return list(dict.fromkeys([*self.features, *self.targets,
                                   *([self.group] if self.group else []),
                                   *([self.time] if self.time else [])]))

    def _concatenated(self, tables: dict[str, dict[str, np.ndarray]], paths: dict[str, str]
                      ) -> dict[str, np.ndarray]:
        """Feature and target columns in series order, float64, every split's file after the
        other's (train, valid, test)."""
        names = list(dict.fromkeys([*self.features, *self.targets]))
        parts = [tables[s] for s in ("all", "train", "valid", "test") if s in tables]
        return {c: np.concatenate([t[c][t["__order__"]] for t in parts]) for c in names}


def _converted(path: str | None) -> bool:
    from jaxlstm.tasks.files import shards

    return bool(path) and shards.is_converted(path)


def read_table(path: str, columns: list[str]) -> dict[str, np.ndarray]:
    """`columns` of a CSV or Parquet file as NumPy arrays (numeric ones as float64), checked:
    DataError naming the file and the column (and row) for a missing column, a non-numeric
    one, or a missing, NaN or infinite value."""
    import pyarrow as pa

    full = existing_file(path, "a .csv or .parquet file")
    kind = SUFFIXES.get(os.path.splitext(full)[1].lower())
    if kind is None:
        raise DataError(path, f"unknown table format; expected a file ending in "
                              f"{', '.join(SUFFIXES)}.")
    try:
        table = _read_arrow(full, kind)
    except (pa.ArrowException, OSError) as err:
        first = " ".join(str(err).split("\n")[0].split())[:200]
        raise DataError(path, f"cannot be read as {kind.upper()}: {first}.") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(path, f"no column {missing[0]!r}; its columns are "
                              f"{table.column_names}.")
    if table.num_rows == 0:
        raise DataError(path, "has a header but no rows; expected at least one row of data.")
    out: dict[str, np.ndarray] = {}
    for name in columns:
        column = table.column(name)
        if column.null_count:
            row = int(np.flatnonzero(np.asarray(column.is_null()))[0])
            raise DataError(path, f"column {name!r} has a missing value at row {row} (data "
                                  f"row {row + 1}); expected a value in every row.")
        out[name] = column.to_numpy()
    out["__order__"] = np.arange(table.num_rows)
    return out


def _read_arrow(full: str, kind: str) -> Any:
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(full)
    import pyarrow.csv as csv

    options = csv.ParseOptions(delimiter="\t" if kind == "tsv" else ",")
    return csv.read_csv(full, parse_options=options)


def _numeric_column(path: str, name: str, values: np.ndarray) -> np.ndarray:
    if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.number):
        raise DataError(path, f"column {name!r} is not numeric (dtype {values.dtype}); "
                              "features and targets must be numbers.")
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise DataError(path, f"column {name!r} holds {values[row]} at row {row} (data row "
                              f"{row + 1}); expected finite numbers.")
    return values


def _series(path: str, table: dict[str, np.ndarray], group: str | None, time: str | None
            ) -> list[tuple[int, int]]:
    """Sorts the table's rows (in `table["__order__"]`) by series, then time; returns each
    series' [start, stop) in that order. Checks and converts the value columns in place."""
    keys = [k for k in table if k not in ("__order__", group, time)]
    for name in keys:
        table[name] = _numeric_column(path, name, table[name])
    size = len(table["__order__"])
    if group is None:
        codes = np.zeros(size, np.int64)
    else:
        _, first, codes = np.unique(table[group], return_index=True, return_inverse=True)
        codes = np.argsort(np.argsort(first))[codes]  # series in order of first appearance
    if time is not None:  # ranks: numbers, dates and ISO date strings all sort as such
        table[time] = np.unique(np.asarray(table[time]), return_inverse=True)[1].reshape(-1)
    sort_keys = [codes] if time is None else [table[time], codes]
    order = np.lexsort([np.arange(size), *sort_keys])
    table["__order__"] = order
    if time is not None:
        table["__time__"] = np.asarray(table[time])[order]
    boundaries = np.flatnonzero(np.diff(codes[order])) + 1
    starts = np.concatenate([[0], boundaries])
    stops = np.concatenate([boundaries, [size]])
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _cut_positions(path: str, series: list[tuple[int, int]], table: dict[str, np.ndarray],
                   task: TableTask) -> list[dict[str, tuple[int, int]]]:
    """Each series' train / valid / test rows, as [start, stop) in the sorted order."""
    train_end_fraction = 1.0 - task.valid_fraction - task.test_fraction
    cuts = []
    if task.time is not None:
        times = np.sort(table["__time__"], kind="stable")
        t_valid = times[min(len(times) - 1, round(train_end_fraction * len(times)))]
        t_test = times[min(len(times) - 1, round((1.0 - task.test_fraction) * len(times)))]
    for start, stop in series:
        rows = stop - start
        if rows < task.window + task.horizon:
            name = "the series" if task.group is None else (
                f"series {table[task.group][table['__order__'][start]]!r}")
            raise DataError(path, f"{name} has {rows} rows, fewer than window + horizon = "
                                  f"{task.window + task.horizon}; expected longer series or "
                                  f"a smaller task.window.")
        if task.time is None:
            valid_at = start + round(train_end_fraction * rows)
            test_at = start + round((1.0 - task.test_fraction) * rows)
        else:
            series_times = table["__time__"][start:stop]
            valid_at = start + int(np.searchsorted(series_times, t_valid, side="left"))
            test_at = start + int(np.searchsorted(series_times, t_test, side="left"))
            if task.test_fraction == 0:
                test_at = stop
        cuts.append({"train": (start, valid_at), "valid": (valid_at, test_at),
                     "test": (test_at, stop)})
    return cuts


def _window_ends(series: list[tuple[int, int]], cuts: list[dict[str, tuple[int, int]]],
                 window: int, horizon: int) -> dict[str, np.ndarray]:
    """Per split, the last input row t of each window whose forecast rows t+1 .. t+horizon
    all lie in that split of its series, and whose window starts inside the series."""
    ends: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
    for (start, _), cut in zip(series, cuts, strict=True):
        for split, (first, stop) in cut.items():
            low = max(start + window - 1, first - 1)  # forecast starts at t + 1 >= first
            high = stop - 1 - horizon  # t + horizon <= stop - 1
            if high >= low:
                ends[split].append(np.arange(low, high + 1))
    return {s: np.concatenate(e) if e else np.zeros(0, np.int64) for s, e in ends.items()}
