"""The file tasks (arrays, text_file, table) and converted shards, without training: what they
read, how they split, what a batch is, and every kind of bad data as one line.

Training on them (and resuming) is in tests/test_train_files.py.
"""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from jaxlstm.tasks.base import SplitUnavailable
from jaxlstm.tasks.files import ArraysTask, DataError, TableTask, TextFileTask, shards
from jaxlstm.tasks.files.fingerprint import differences, fingerprints


def write_arrays(path, n=200, steps=6, features=2, *, lengths=True, classes=3, seed=0,
                 **extra):
    """An .npz of n sequences whose class is the sign pattern of their features' sums."""
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(n, steps, features)).astype(np.float32)
    arrays = {"inputs": inputs}
    if lengths:
        arrays["lengths"] = rng.integers(2, steps + 1, size=n)
        for i, length in enumerate(arrays["lengths"]):
            inputs[i, length:] = 0.0
    arrays["targets"] = (np.abs(inputs[:, :, 0].sum(axis=1)) * 2).astype(np.int64) % classes
    arrays.update(extra)
    np.savez(path, **arrays)
    return str(path)


def write_series(path, rows=120, groups=("a", "b"), fmt="csv", time=True):
    t = np.arange(rows)
    columns = {"station": np.repeat(groups, rows).tolist(),
               "temp": np.concatenate([np.sin(t / 6 + k) for k in range(len(groups))]),
               "hum": np.concatenate([np.cos(t / 9 + k) for k in range(len(groups))])}
    if time:  # each series in reverse time order in the file: the task must sort
        columns["day"] = np.concatenate([t[::-1]] * len(groups))
        columns["temp"] = np.concatenate([c[::-1] for c in np.split(columns["temp"],
                                                                    len(groups))])
        columns["hum"] = np.concatenate([c[::-1] for c in np.split(columns["hum"],
                                                                   len(groups))])
    table = pa.table(columns)
    (pa_csv.write_csv if fmt == "csv" else pq.write_table)(table, str(path))
    return str(path)


def same_batch(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


# --- arrays ---------------------------------------------------------------------------------


def test_arrays_infers_kind_readout_and_sizes(tmp_path):
    path = write_arrays(tmp_path / "d.npz")
    task = ArraysTask(path=path)
    spec = task.spec
    assert (spec.kind, spec.readout, spec.input_size, spec.output_size, spec.metric) == (
        "classification", "last", 2, 3, "accuracy")
    line = task.describe()
    assert "\n" not in line and "160 / 20 / 20" in line and "3 classes" in line
    batch = task.train_batch(0, 0, 8)
    assert batch["inputs"].shape == (8, 6, 2) and batch["targets"].shape == (8, 1)
    assert batch["lengths"].dtype == np.int32
    per_step = ArraysTask(path=write_arrays(tmp_path / "s.npz", targets=np.zeros((200, 6),
                                                                                   np.int32) + 1))
    assert per_step.spec.readout == "every" and per_step.spec.output_size == 2
    assert per_step.train_batch(0, 0, 4)["mask"].shape == (4, 6)
    regression = ArraysTask(path=write_arrays(tmp_path / "r.npz", lengths=False,
                                              targets=np.ones((200, 3), np.float32)))
    assert (regression.spec.kind, regression.spec.readout, regression.spec.output_size) == (
        "regression", "last", 3)
    forced = ArraysTask(path=write_arrays(tmp_path / "f.npz", lengths=False,
                                          targets=np.ones((200, 6), np.float32)),
                        readout="every")
    assert forced.train_batch(0, 0, 4)["targets"].shape == (4, 6, 1)


def test_arrays_splits_are_disjoint_reproducible_and_cover_the_file(tmp_path):
    path = write_arrays(tmp_path / "d.npz", n=101)
    first, again = ArraysTask(path=path), ArraysTask(path=path)
    rows = {s: set(first.splits[s].rows.tolist()) for s in ("train", "valid", "test")}
    assert sum(map(len, rows.values())) == 101 == len(set().union(*rows.values()))
    assert [len(r) for r in rows.values()] == [81, 10, 10]
    for split in rows:
        np.testing.assert_array_equal(first.splits[split].rows, again.splits[split].rows)
    other = ArraysTask(path=path, split_seed=1)
    assert set(other.splits["test"].rows.tolist()) != rows["test"]
    without_test = ArraysTask(path=path, test_fraction=0.0)
    with pytest.raises(SplitUnavailable, match="has no 'test' split"):
        without_test.eval_batches(8, split="test")


def test_training_batches_are_a_function_of_seed_and_step_and_rows_are_parts(tmp_path):
    task = ArraysTask(path=write_arrays(tmp_path / "d.npz", n=50))
    same_batch(task.train_batch(3, 7, 16), ArraysTask(path=task.path).train_batch(3, 7, 16))
    whole = task.train_batch(3, 7, 16)
    same_batch({k: v[4:12] for k, v in whole.items()},
               task.train_batch(3, 7, 16, rows=slice(4, 12)))
    assert not np.array_equal(whole["inputs"], task.train_batch(4, 7, 16)["inputs"])
    # An epoch (40 training sequences) visits each once: batches of 8 over 5 steps.
    seen = np.concatenate([task._train_indices(3, range(8 * s, 8 * s + 8)) for s in range(5)])
    assert sorted(seen.tolist()) == list(range(40))


def test_arrays_from_separate_files_and_a_folder_of_npy(tmp_path):
    train = write_arrays(tmp_path / "train.npz", n=40)
    valid = write_arrays(tmp_path / "valid.npz", n=10, seed=1)
    task = ArraysTask(train_path=train, valid_path=valid)
    assert sorted(task.splits) == ["train", "valid"]
    folder = tmp_path / "npy"
    folder.mkdir()
    with np.load(train) as arrays:
        for name in ("inputs", "targets", "lengths"):
            np.save(folder / f"{name}.npy", arrays[name])
    from_folder = ArraysTask(path=str(folder))
    assert isinstance(from_folder.splits["train"].arrays["inputs"], np.memmap)
    assert len(from_folder.data_files()) == 3


# --- text -----------------------------------------------------------------------------------


def test_text_bytes_and_chars_split_by_position(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 30 + "zé", encoding="utf-8")
    task = TextFileTask(path=str(path), seq_len=9)
    assert task.spec.input_size == 256 and task.spec.metric == "bits_per_char"
    train = task.splits["train"]
    assert train.starts[-1] + 10 <= round(0.8 * 303)  # no window crosses into valid
    batch = task.train_batch(0, 0, 4)
    assert batch["inputs"].shape == (4, 9, 256)
    np.testing.assert_array_equal(batch["inputs"].argmax(-1)[:, 1:], batch["targets"][:, :-1])
    chars = TextFileTask(path=str(path), level="char", seq_len=9)
    assert chars.format.chars == list("abcdefghij")  # z and é only in the held-out text
    assert chars.spec.input_size == 11
    assert chars.decode(chars.encode("abzé")) == "ab\ufffd\ufffd"


def test_text_baseline_is_the_unigram_of_the_training_split(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("ab" * 200, encoding="utf-8")
    task = TextFileTask(path=str(path), seq_len=10, test_fraction=0.0)
    baseline = task.baseline()
    # 35 training windows: 175 a and 175 b as targets, add-one smoothed over 256 bytes.
    assert baseline["bits_per_char"] == pytest.approx(np.log2(606 / 176), rel=1e-9)


# --- tables ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_sorts_by_time_splits_by_time_and_normalises_on_training_rows(tmp_path, fmt):
    path = write_series(tmp_path / f"s.{fmt}", fmt=fmt)
    task = TableTask(path=path, features=["temp", "hum"], targets=["temp"], window=10,
                     horizon=2, group="station", time="day")
    assert (task.spec.input_size, task.spec.output_size, task.spec.readout) == (2, 2, "last")
    # Day d of series k (sorted) is row k * 120 + d; training forecasts end before day 96.
    ends = {s: task.splits[s].starts for s in ("train", "valid", "test")}
    assert (ends["train"] % 120 + 2).max() <= 95 and (ends["valid"] % 120 + 1).min() >= 96
    assert (ends["test"] % 120 + 1).min() >= 108
    day = np.arange(96)
    train_temp = np.concatenate([np.sin(day / 6), np.sin(day / 6 + 1)])
    assert task.format.mean["temp"] == pytest.approx(train_temp.mean())
    batch = task.train_batch(0, 0, 4)
    assert batch["inputs"].shape == (4, 10, 2) and batch["targets"].shape == (4, 1, 2)
    example = task.splits["valid"][0]  # inputs end where the forecast starts, in order
    mean, std = task.format.mean["temp"], task.format.std["temp"]
    t = int(ends["valid"][0]) % 120
    series = np.sin(np.arange(120) / 6 + int(ends["valid"][0]) // 120)
    np.testing.assert_allclose(example["inputs"][:, 0] * std + mean, series[t - 9:t + 1],
                               atol=1e-5)
    np.testing.assert_allclose(example["targets"][:, 0] * std + mean, series[t + 1:t + 3],
                               atol=1e-5)
    assert json.loads(task.artifacts()["normalisation.json"])["columns"]["temp"]["mean"] == mean
    persistence = task.baseline()["mse"]
    assert 0 < persistence < 1


def test_table_without_time_or_group_splits_rows_in_order(tmp_path):
    path = write_series(tmp_path / "s.csv", groups=("a",), time=False)
    task = TableTask(path=path, features=["temp"], targets=["temp"], window=5)
    assert task.splits["train"].starts.max() + 1 < task.splits["valid"].starts.min() + 1
    assert "1 series" in task.describe()


# --- converted shards -----------------------------------------------------------------------


def test_converted_shards_give_the_same_batches_held_out_data_and_baselines(tmp_path):
    sources = [
        (ArraysTask, {"path": write_arrays(tmp_path / "d.npz")}),
        (TextFileTask, {"path": str(tmp_path / "t.txt"), "level": "char", "seq_len": 7}),
        (TableTask, {"path": write_series(tmp_path / "s.csv"), "features": ["temp", "hum"],
                     "targets": ["hum"], "window": 6, "group": "station", "time": "day"}),
    ]
    (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog. " * 20)
    for cls, options in sources:
        task = cls(**options)
        dest = tmp_path / f"{cls.name}-shards"
        record = task.splits["train"].layout.record_size
        shards.convert(task, str(dest), options,
                       shard_bytes=record * (len(task.splits["train"]) // 3 + 1))
        assert len([f for f in os.listdir(dest) if f.startswith("train-")]) == 3
        streamed = cls(path=str(dest))
        assert streamed.spec == task.spec
        for step in (0, 3, 11):  # 11 crosses into the next epoch for the small splits
            same_batch(task.train_batch(5, step, 8, rows=slice(2, 6)),
                       streamed.train_batch(5, step, 8, rows=slice(2, 6)))
        for a, b in zip(task.eval_batches(16, "test"), streamed.eval_batches(16, "test"),
                        strict=True):
            same_batch(a, b)
        assert not isinstance(streamed.eval_batches(16), list)  # streamed, not held
        assert streamed.baseline("valid") == task.baseline("valid")
        assert streamed.artifacts() == task.artifacts()
    with pytest.raises(ValueError, match="task.window: .* converted with window=6"):
        TableTask(path=str(tmp_path / "table-shards"), window=7)
    with pytest.raises(ValueError, match="holds a converted 'table' dataset"):
        ArraysTask(path=str(tmp_path / "table-shards"))
    with pytest.raises(DataError, match="already exists"):
        shards.convert(task, str(tmp_path / "table-shards"), {})


def test_fingerprints_tell_every_way_the_data_changed(tmp_path):
    path, other = tmp_path / "d.bin", tmp_path / "e.bin"
    path.write_bytes(b"abc")
    other.write_bytes(b"xyz")
    recorded = fingerprints([str(path)])
    assert recorded[0]["size"] == 3 and differences(recorded, fingerprints([str(path)])) == []
    path.write_bytes(b"abd")
    assert "same size, different content" in differences(recorded, fingerprints([str(path)]))[0]
    path.write_bytes(b"abcd")
    assert "size 3 -> 4 bytes" in differences(recorded, fingerprints([str(path)]))[0]
    assert differences(recorded, fingerprints([str(other)])) == [
        f"{path}: no longer part of the data", f"{other}: not part of the data before"]


# --- bad data: one line naming the file and what was expected --------------------------------


def _bad_cases(tmp_path):
    """(case, task class, options, expected message part)."""
    good = write_arrays(tmp_path / "good.npz")
    nan = np.ones((20, 4, 2), np.float32)
    nan[7, 2, 1] = np.nan
    inf = np.ones((20, 4), np.float32)
    inf[3, 1] = np.inf
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait ".encode("latin-1") * 20)
    ragged = np.empty(3, dtype=object)
    ragged[:] = [np.ones((2, 1)), np.ones((3, 1)), np.ones((1, 1))]
    np.savez(tmp_path / "ragged.npz", inputs=ragged, targets=np.zeros(3, int))
    series = write_series(tmp_path / "s.csv", rows=20)
    return [
        ("missing", ArraysTask, {"path": str(tmp_path / "nope.npz")}, "no such file"),
        ("empty", ArraysTask, {"path": str(tmp_path / "empty.npz")}, "the file is empty"),
        ("nan_inputs", ArraysTask,
         {"path": _savez(tmp_path / "n.npz", inputs=nan, targets=np.zeros(20, int))},
         r"'inputs' holds nan at \[7, 2, 1\] \(row 7\)"),
        ("inf_targets", ArraysTask,
         {"path": _savez(tmp_path / "i.npz", inputs=np.ones((20, 4, 2)), targets=inf)},
         r"'targets' holds inf at \[3, 1\]"),
        ("ragged", ArraysTask, {"path": str(tmp_path / "ragged.npz")},
         "'inputs' holds Python objects.*never unpickled.*lengths"),
        ("labels_out_of_range", ArraysTask, {"path": good, "num_classes": 2},
         r"row \d+ has label 2; expected labels 0 .. 1"),
        ("negative_labels", ArraysTask,
         {"path": _savez(tmp_path / "neg.npz", inputs=np.ones((20, 4, 2)),
                         targets=np.arange(20) - 3)}, "row 0 is -3.*no negatives"),
        ("mismatched_n", ArraysTask,
         {"path": _savez(tmp_path / "mis.npz", inputs=np.ones((20, 4, 2)),
                         targets=np.zeros(19, int))}, "'inputs' has 20 sequences but 'targets' has 19"),
        ("no_column", TableTask, {"path": series, "features": ["temp", "pressure"],
                                  "targets": ["temp"]}, "no column 'pressure'"),
        ("not_utf8", TextFileTask, {"path": str(tmp_path / "latin1.txt"), "level": "char"},
         r"not UTF-8 at byte 3 \(b'\\xe9'\)"),
        ("window_longer_than_series", TableTask,
         {"path": series, "features": ["temp"], "targets": ["temp"], "window": 20,
          "group": "station"}, "series 'a' has 20 rows, fewer than window \\+ horizon = 21"),
        ("empty_split", ArraysTask, {"path": write_arrays(tmp_path / "small.npz", n=4)},
         "valid_fraction 0.1 of 4 sequences leaves the valid split empty"),
    ]


def _savez(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_every_kind_of_bad_data_is_one_line_naming_the_file(tmp_path):
    for case, cls, options, expected in _bad_cases(tmp_path):
        with pytest.raises(DataError) as info:
            cls(**options)
        message = str(info.value)
        assert "\n" not in message, case
        assert message.startswith(os.path.basename(options["path"])) or \
            os.path.basename(options["path"]) in message.split(":")[0], (case, message)
        assert __import__("re").search(expected, message), (case, message)


def test_bad_data_from_the_command_line_is_one_line_and_exit_code_2(tmp_path, capsys):
    from jaxlstm.cli.data import main

    (tmp_path / "empty.csv").write_bytes(b"")
    assert main(["info", str(tmp_path / "empty.csv"), "features=[a]", "targets=[a]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"data error: {tmp_path / 'empty.csv'}: the file is empty; expected a "
                   f".csv or .parquet file."]
    assert main(["info", str(tmp_path / "empty.csv"), "features=[a"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
