"""The benchmark tasks at tiny sizes: batches, determinism, held-out splits, baselines, metrics."""

import atexit
import dataclasses
import math
import os
import shutil
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.tasks import TASKS, make_task, task_options
from jaxlstm.tasks.base import batch_weight

# Each task at a tiny size; digits and sunspots need the optional `tasks` extra.
TINY = {
    "adding": {"seq_len": 10, "eval_size": 20},
    "copy": {"seq_len": 5, "eval_size": 20},
    "digits": {"mode": "rows"},
    "sunspots": {"window": 12},
    "text": {"seq_len": 16},
    "choreography": {"eval_per_class": 3, "num_joints": 3},
    "parity": {"eval_max_len": 48, "eval_size": 20},
    "cycle_navigation": {"eval_max_len": 48, "eval_size": 20},
    "mqar": {"num_pairs": 3, "num_queries": 2, "eval_size": 20},
    "selective_copy": {"seq_len": 12, "num_tokens": 3, "vocab_size": 4, "eval_size": 20},
}
NEEDS = {"digits": "sklearn", "sunspots": "statsmodels"}


def _tiny_files():
    """Small data files for the file tasks, so they run the same checks as the others."""
    from tests.test_task_files import write_arrays, write_series

    folder = tempfile.mkdtemp(prefix="jaxlstm-test-tasks-")
    atexit.register(shutil.rmtree, folder, True)
    text = os.path.join(folder, "t.txt")
    with open(text, "w") as f:
        f.write("a quick brown fox jumps over the lazy dog; " * 12)
    return {
        "arrays": {"path": write_arrays(os.path.join(folder, "a.npz"), n=60)},
        "text_file": {"path": text, "seq_len": 8},
        "table": {"path": write_series(os.path.join(folder, "s.csv"), rows=60),
                  "features": ["temp", "hum"], "targets": ["temp"], "window": 6,
                  "group": "station", "time": "day"},
    }


TINY.update(_tiny_files())


def build(name, **options):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    return make_task(name, **{**TINY[name], **options})


def batch_structure(task, batch):
    spec = task.spec
    size = batch["inputs"].shape[0]
    assert batch["inputs"].dtype == np.float32
    assert batch["inputs"].ndim == 3 and batch["inputs"].shape[2] == spec.input_size
    steps = batch["inputs"].shape[1]
    out_steps = steps if spec.readout == "every" else 1
    if spec.kind == "classification":
        assert batch["targets"].dtype == np.int32
        assert batch["targets"].shape == (size, out_steps)
        assert batch["targets"].min() >= 0 and batch["targets"].max() < spec.output_size
    else:
        assert batch["targets"].dtype == np.float32
        assert batch["targets"].shape == (size, out_steps, spec.output_size)
    assert np.all(np.isfinite(batch["inputs"]))


def random_outputs(task, batch, seed=0):
    spec = task.spec
    out_steps = batch["targets"].shape[1]
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(batch["inputs"].shape[0], out_steps, spec.output_size)),
                       jnp.float32)


# --- The registry ---------------------------------------------------------------------------


def test_registry_names_every_task():
    assert set(TASKS) == {"adding", "copy", "digits", "sunspots", "text", "choreography",
                          "parity", "cycle_navigation", "mqar", "selective_copy",
                          "arrays", "text_file", "table"}
    for name, cls in TASKS.items():
        assert dataclasses.is_dataclass(cls)
        assert set(task_options(name)) == {f.name for f in dataclasses.fields(cls)}


def test_make_task_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match=r"task\.name.*'copyy'"):
        make_task("copyy")
    with pytest.raises(TypeError, match=r"task\.seq_length: unknown option"):
        make_task("copy", seq_length=10)
    with pytest.raises(TypeError, match=r"task\.seq_len must be int"):
        make_task("copy", seq_len="10")
    with pytest.raises(TypeError, match=r"task\.seq_len must be int"):
        make_task("text", seq_len=True)
    with pytest.raises(TypeError, match=r"task\.noise must be float"):
        make_task("choreography", noise="loud")
    with pytest.raises(ValueError, match=r"task\.seq_len must be >= 1"):
        make_task("copy", seq_len=0)
    with pytest.raises(ValueError, match=r"task\.eval_per_class"):
        make_task("choreography", eval_per_class=0)
    assert make_task("choreography", noise=0, eval_per_class=1).noise == 0.0  # int for float


def test_make_task_option_errors_of_the_optional_tasks():
    pytest.importorskip("sklearn")
    pytest.importorskip("statsmodels")
    with pytest.raises(ValueError, match=r"task\.mode must be one of"):
        make_task("digits", mode="columns")
    with pytest.raises(ValueError, match=r"task\.test_fraction"):
        make_task("digits", test_fraction=1.5)
    with pytest.raises(ValueError, match=r"task\.window must be >= 11"):
        make_task("sunspots", window=5)


def test_missing_optional_dependency_says_how_to_install(monkeypatch):
    from jaxlstm.tasks import digits, sunspots

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    monkeypatch.setitem(sys.modules, "statsmodels.datasets.sunspots", None)
    with pytest.raises(ImportError, match=r"pip install 'jaxlstm\[tasks\]'"):
        digits.load_digits_arrays.__wrapped__()
    with pytest.raises(ImportError, match=r"pip install 'jaxlstm\[tasks\]'"):
        sunspots.load_sunspots.__wrapped__()


# --- Every task -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TASKS))
def test_batches_have_the_documented_layout(name):
    task = build(name)
    assert task.spec.name == name
    assert task.spec.readout in ("last", "every")
    assert task.spec.kind in ("regression", "classification")
    batch_structure(task, task.train_batch(0, 0, 4))
    batches = task.eval_batches(8)
    for batch in batches:
        batch_structure(task, batch)
    total = sum(batch_weight(b) for b in batches)
    assert total == sum(b["mask"].sum() if "mask" in b else
                        b["targets"].shape[0] * b["targets"].shape[1] for b in batches)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_train_batches_are_pure_functions_of_seed_and_step(name):
    task = build(name)
    first = task.train_batch(3, 5, 4)
    again = build(name).train_batch(3, 5, 4)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    for other in (task.train_batch(3, 6, 4), task.train_batch(4, 5, 4)):
        assert not np.array_equal(first["inputs"], other["inputs"])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_process_rows_are_rows_of_the_same_global_batch(name):
    # Data parallelism builds each process's rows separately: together they must be the
    # batch one process would build, or a run on 2 hosts would train on other data.
    task = build(name)
    whole = task.train_batch(3, 5, 8)
    halves = [task.train_batch(3, 5, 8, rows=slice(a, a + 4)) for a in (0, 4)]
    for key in whole:
        assert halves[0][key].shape[0] == 4
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])
    assert not np.array_equal(halves[0]["inputs"], halves[1]["inputs"])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_held_out_set_is_fixed(name):
    one = build(name).eval_batches(8)
    two = build(name).eval_batches(8)
    assert len(one) == len(two)
    for a, b in zip(one, two):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_metrics_and_baseline_share_names(name):
    task = build(name)
    batch = task.eval_batches(8)[0]
    metrics = jax.jit(task.metrics)(random_outputs(task, batch), batch)
    assert "loss" in metrics and task.spec.metric in metrics
    assert all(np.isfinite(float(v)) for v in metrics.values())
    baseline = task.baseline()
    assert set(metrics) <= set(baseline)
    assert all(isinstance(v, float) and math.isfinite(v) for v in baseline.values())
    hash(task.metrics)  # static data in a jitted train state


@pytest.mark.parametrize("name", sorted(n for n, t in TASKS.items() if hasattr(t, "plot")))
def test_task_plot_writes_a_png(name, tmp_path):
    pytest.importorskip("matplotlib")
    task = build(name)
    batches = task.eval_batches(16)[:2]
    outputs = [np.asarray(random_outputs(task, b, n)) for n, b in enumerate(batches)]
    path = tmp_path / f"{name}.png"
    task.plot(path, outputs, batches)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- adding ---------------------------------------------------------------------------------


def test_adding_baseline_is_a_sixth():
    assert make_task("adding", seq_len=10).baseline()["mse"] == pytest.approx(1 / 6, abs=0.02)


# --- copy -----------------------------------------------------------------------------------


def test_copy_sequences_follow_the_definition():
    task = build("copy")
    batch = task.train_batch(0, 0, 6)
    ids = np.argmax(batch["inputs"], axis=-1)
    targets = batch["targets"]
    assert ids.shape == targets.shape == (6, 5 + 20)
    np.testing.assert_array_equal(batch["inputs"].sum(-1), 1.0)
    assert ids[:, :10].max() < 8
    np.testing.assert_array_equal(ids[:, 10:14], 8)  # T-1 blanks
    np.testing.assert_array_equal(ids[:, 14], 9)  # the delimiter
    np.testing.assert_array_equal(ids[:, 15:], 8)
    np.testing.assert_array_equal(targets[:, :15], 8)  # T+10 blanks
    np.testing.assert_array_equal(targets[:, 15:], ids[:, :10])


def test_copy_baseline_is_the_memoryless_formula():
    for seq_len in (5, 100):
        baseline = make_task("copy", seq_len=seq_len, eval_size=1).baseline()
        assert baseline["cross_entropy"] == pytest.approx(10 * math.log(8) / (seq_len + 20))
        assert baseline["loss"] == baseline["cross_entropy"]
        assert baseline["recall_accuracy"] == 1 / 8


def test_copy_metrics_on_hand_made_outputs():
    task = build("copy")
    batch = task.eval_batches(4)[0]
    targets = batch["targets"]
    perfect = 50.0 * jax.nn.one_hot(targets, 10)
    metrics = task.metrics(perfect, batch)
    assert float(metrics["cross_entropy"]) < 1e-6
    assert float(metrics["accuracy"]) == float(metrics["recall_accuracy"]) == 1.0
    uniform = jnp.zeros(targets.shape + (10,))
    assert float(task.metrics(uniform, batch)["loss"]) == pytest.approx(math.log(10), rel=1e-5)
    # Right on every blank, wrong on every recalled symbol.
    wrong = np.array(perfect)
    wrong[:, -10:] = 50.0 * jax.nn.one_hot(9, 10)
    metrics = task.metrics(jnp.asarray(wrong), batch)
    assert float(metrics["recall_accuracy"]) == 0.0
    assert float(metrics["accuracy"]) == pytest.approx(15 / 25)


# --- digits ---------------------------------------------------------------------------------


def test_digits_split_is_stratified_disjoint_and_fixed():
    task = build("digits")
    train, test = set(task.train_indices), set(task.test_indices)
    assert not train & test and len(train | test) == 1797
    from jaxlstm.tasks.digits import load_digits_arrays

    _, labels = load_digits_arrays()
    counts = np.bincount(labels[task.test_indices], minlength=10)
    np.testing.assert_array_equal(counts, np.round(0.2 * np.bincount(labels)).astype(int))
    eval_inputs = np.concatenate([b["inputs"] for b in task.eval_batches(100)])
    images, _ = load_digits_arrays()
    np.testing.assert_array_equal(eval_inputs, images[task.test_indices])


def test_digits_modes_and_epochs():
    rows = build("digits")
    pixels = build("digits", mode="pixels")
    assert rows.spec.input_size == 8 and pixels.spec.input_size == 1
    a, b = rows.train_batch(0, 0, 8), pixels.train_batch(0, 0, 8)
    assert a["inputs"].shape == (8, 8, 8) and b["inputs"].shape == (8, 64, 1)
    np.testing.assert_array_equal(a["inputs"].reshape(8, 64), b["inputs"].reshape(8, 64))
    # The next epoch is another order.
    size = rows.train_size
    per_epoch = size // 256
    first, second = rows.train_batch(0, 0, 256), rows.train_batch(0, per_epoch, 256)
    assert not np.array_equal(first["targets"], second["targets"])
    with pytest.raises(ValueError, match="batch_size"):
        rows.train_batch(0, 0, size + 1)


def test_digits_epoch_permutation_covers_the_training_split():
    from jaxlstm.tasks._data import epoch_indices

    rows = [epoch_indices(7, s, 10, 35) for s in range(3)]
    assert len(set(np.concatenate(rows))) == 30
    np.testing.assert_array_equal(np.sort(np.concatenate(
        rows + [np.setdiff1d(np.arange(35), np.concatenate(rows))])), np.arange(35))


def test_digits_baseline_and_metrics():
    task = build("digits")
    baseline = task.baseline()
    assert 0.8 < baseline["accuracy"] < 0.95  # nearest class mean over the whole image
    assert baseline["accuracy_majority"] == pytest.approx(0.1, abs=0.02)
    batch = task.eval_batches(10)[0]
    outputs = 10.0 * jax.nn.one_hot(batch["targets"], 10)
    outputs = outputs.at[:3, 0].set(10.0 * jax.nn.one_hot((batch["targets"][:3, 0] + 1) % 10, 10))
    assert float(task.metrics(outputs, batch)["accuracy"]) == pytest.approx(0.7)


# --- sunspots -------------------------------------------------------------------------------


def test_sunspots_split_scaling_and_windows():
    task = build("sunspots")
    assert task.test_years[0] == 1947 and task.test_years[-1] == 2008 and len(task.test_years) == 62
    (held_out,) = task.eval_batches(4)  # one batch whatever the batch size
    assert held_out["inputs"].shape == (62, 12, 1)
    # Training windows and targets lie before 1947; the scaling is the training years'.
    train_values = task.values[:task.test_start]
    assert task.mean == pytest.approx(float(np.mean(train_values)), rel=1e-6)
    assert task.std == pytest.approx(float(np.std(train_values)), rel=1e-6)
    every = task.unscale(np.concatenate([task.train_batch(0, s, 16)["targets"].ravel()
                                         for s in range(task.train_size // 16)]))
    assert set(np.round(every, 3)) <= set(np.round(train_values, 3))
    # The last held-out targets are 2005..2008, each window ending the year before.
    truth = task.unscale(held_out["targets"][-4:, 0, 0])
    np.testing.assert_allclose(truth, [29.8, 15.2, 7.5, 2.9], atol=1e-3)
    np.testing.assert_allclose(task.unscale(held_out["inputs"][-4:, -1, 0]),
                               [40.4, 29.8, 15.2, 7.5], atol=1e-3)


def test_sunspots_baselines_by_hand():
    task = build("sunspots")
    (held_out,) = task.eval_batches(64)
    last4 = {k: v[-4:] for k, v in held_out.items()}
    metrics = task.metrics(jnp.asarray(last4["targets"]), last4)
    # 2005..2008: 29.8, 15.2, 7.5, 2.9; persistence 40.4, 29.8, 15.2, 7.5; 11 years back
    # (1994..1997) 29.9, 17.5, 8.6, 21.5.
    persistence = math.sqrt((10.6**2 + 14.6**2 + 7.7**2 + 4.6**2) / 4)
    seasonal = math.sqrt((0.1**2 + 2.3**2 + 1.1**2 + 18.6**2) / 4)
    assert float(metrics["rmse_persistence"]) == pytest.approx(persistence, rel=1e-4)
    assert float(metrics["rmse_seasonal"]) == pytest.approx(seasonal, rel=1e-4)
    assert float(metrics["rmse"]) == pytest.approx(0.0, abs=1e-4)
    shifted = jnp.asarray(last4["targets"]) + 5.0 / task.std  # 5 sunspots too high
    assert float(task.metrics(shifted, last4)["rmse"]) == pytest.approx(5.0, rel=1e-4)

    baseline = task.baseline()
    values, start = task.values.astype(np.float64), task.test_start
    truth = values[start:]
    assert baseline["rmse_persistence"] == pytest.approx(
        math.sqrt(np.mean((values[start - 1:-1] - truth) ** 2)))
    assert baseline["rmse_seasonal"] == pytest.approx(
        math.sqrt(np.mean((values[start - 11:-11] - truth) ** 2)))
    assert baseline["rmse"] == min(baseline["rmse_persistence"], baseline["rmse_seasonal"])
    full = task.metrics(jnp.zeros_like(held_out["targets"]), held_out)
    assert float(full["rmse_persistence"]) == pytest.approx(baseline["rmse_persistence"],
                                                            rel=1e-4)
    assert float(full["rmse_seasonal"]) == pytest.approx(baseline["rmse_seasonal"], rel=1e-4)


# --- text -----------------------------------------------------------------------------------


def test_text_vocabulary_round_trip():
    task = build("text")
    assert task.vocab_size == task.spec.input_size == task.spec.output_size == 97
    text = 'def f(x):\n\treturn "ok" ~ 1\n'
    ids = task.encode(text)
    assert ids.dtype == np.int32 and ids.max() < 97
    assert task.decode(ids) == text.replace("\t", "\N{REPLACEMENT CHARACTER}")
    assert task.decode(task.encode("café “q”")) == "caf\ufffd \ufffdq\ufffd"
    with pytest.raises(ValueError, match="ids"):
        task.decode([97])


def test_text_batches_come_from_their_own_split():
    task = build("text")
    train_bytes = task.train_ids.astype(np.uint8).tobytes()
    test_bytes = task.test_ids.astype(np.uint8).tobytes()
    for step in (0, 1, 500):
        batch = task.train_batch(0, step, 8)
        ids = np.argmax(batch["inputs"], axis=-1)
        np.testing.assert_array_equal(ids[:, 1:], batch["targets"][:, :-1])
        for row, target in zip(ids, batch["targets"]):
            window = np.concatenate([row, target[-1:]]).astype(np.uint8).tobytes()
            assert window in train_bytes
    held_out = task.eval_batches(10**6)
    assert len(held_out) == 1
    ids = np.argmax(held_out[0]["inputs"], axis=-1)
    assert np.concatenate(ids).astype(np.uint8).tobytes() == test_bytes[:ids.size]
    assert len(task.test_ids) == pytest.approx(0.1 * (len(task.train_ids) + len(task.test_ids)),
                                               abs=1)


def test_text_baseline_and_bits_per_char():
    task = build("text")
    baseline = task.baseline()
    assert baseline["bits_per_char"] == pytest.approx(baseline["cross_entropy"] / math.log(2))
    assert 4.0 < baseline["bits_per_char"] < 5.5  # unigram English
    batch = task.eval_batches(4)[0]
    uniform = jnp.zeros(batch["targets"].shape + (97,))
    assert float(task.metrics(uniform, batch)["bits_per_char"]) == pytest.approx(math.log2(97),
                                                                                 rel=1e-5)


# --- choreography ---------------------------------------------------------------------------


def test_choreography_classes_and_balanced_held_out_batches():
    task = build("choreography")
    assert task.spec.output_size == len(task.class_names) == 8
    for batch in task.eval_batches(12):  # rounded down to 8: every class once per batch
        np.testing.assert_array_equal(np.sort(batch["targets"][:, 0]), np.arange(8))
    (everything,) = task.eval_batches(1000)
    assert everything["inputs"].shape == (24, 64, 3)


def test_choreography_mean_pose_is_order_blind():
    from jaxlstm.tasks.choreography import NUM_CLASSES, ORDERS, phrase

    task = build("choreography", noise=0.0, pose_jitter=0.0)
    # Without noise, equal holds and transitions give exactly the same mean pose in any order.
    class Fixed:  # draws the lowest value of every range: the same timing for every class
        def integers(self, low, high, size=None):
            return np.full(size, low) if size is not None else low

        def normal(self, loc, scale, size):
            return np.zeros(size)

    means = [phrase(Fixed(), label, task.rest, task.poses, 0.0, 0.0).mean(axis=0)
             for label in range(NUM_CLASSES)]
    for label in range(1, len(ORDERS)):
        np.testing.assert_allclose(means[label], means[0], atol=1e-12)
    for label in range(len(ORDERS), NUM_CLASSES):
        assert not np.allclose(means[label], means[0])


def test_choreography_baseline_is_near_chance_on_order_only_classes():
    task = make_task("choreography", eval_per_class=25)
    baseline = task.baseline()
    assert baseline["order_only_accuracy"] < 0.4  # chance: 1/4 among them, 1/8 overall
    assert baseline["accuracy"] < 0.75


def test_choreography_metrics_on_hand_made_outputs():
    task = build("choreography")
    (batch,) = task.eval_batches(8)[:1]
    targets = batch["targets"]
    predicted = np.where(targets < 4, targets, 0)  # order classes right, the rest wrong
    metrics = task.metrics(10.0 * jax.nn.one_hot(predicted, 8), batch)
    assert float(metrics["order_only_accuracy"]) == 1.0
    assert float(metrics["accuracy"]) == 0.5
    predicted = np.where(targets < 4, (targets + 1) % 4, targets)
    metrics = task.metrics(10.0 * jax.nn.one_hot(predicted, 8), batch)
    assert float(metrics["order_only_accuracy"]) == 0.0
    assert float(metrics["accuracy"]) == 0.5


# --- The xLSTM paper's tasks ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["parity", "cycle_navigation"])
def test_formal_languages_follow_the_definition(name):
    task = build(name)
    batch = task.train_batch(3, 1, 64)
    lengths, inputs = batch["lengths"], batch["inputs"]
    assert lengths.min() >= 3 and lengths.max() <= 40 and inputs.shape[1] == 40
    moves = {"parity": [0, 1], "cycle_navigation": [0, 1, -1]}[name]
    modulus = {"parity": 2, "cycle_navigation": 5}[name]
    for row in range(64):
        valid = inputs[row, :lengths[row]]
        assert np.all(valid.sum(axis=1) == 1) and np.all(inputs[row, lengths[row]:] == 0)
        answer = sum(moves[int(token)] for token in valid.argmax(axis=1)) % modulus
        assert batch["targets"][row, 0] == answer
    held_out = task.eval_batches(64)[0]["lengths"]
    assert held_out.min() >= 40 and held_out.max() <= 48  # tested longer than trained
    with pytest.raises(ValueError, match="train_min_len"):
        make_task(name, train_min_len=0)


def test_mqar_queries_ask_for_the_values_shown():
    task = build("mqar", num_pairs=4, num_queries=3)
    batch = task.train_batch(0, 2, 16)
    tokens = batch["inputs"].argmax(axis=2)
    for row in range(16):
        pairs = dict(zip(tokens[row, 0:8:2], tokens[row, 1:8:2]))
        assert len(pairs) == 4 and all(k < 16 <= v for k, v in pairs.items())
        for step in range(8, 11):
            assert batch["mask"][row, step] == 1
            assert batch["targets"][row, step] == pairs[tokens[row, step]]
        assert batch["mask"][row, :8].sum() == 0
    assert task.baseline()["accuracy"] == 1 / 16
    with pytest.raises(ValueError, match="num_queries"):
        make_task("mqar", num_pairs=2, num_queries=3)


# --- selective copying ----------------------------------------------------------------------


def test_selective_copy_markers_ask_for_the_tokens_in_order():
    task = build("selective_copy", seq_len=16, num_tokens=4, vocab_size=5)
    batch = task.train_batch(0, 2, 32)
    tokens = batch["inputs"].argmax(axis=2)
    blank, marker = 5, 6
    assert batch["inputs"].shape == (32, 16, 7) and task.spec.output_size == 5
    for row in range(32):
        context, answers = tokens[row, :12], tokens[row, 12:]
        data = context[context != blank]
        assert len(data) == 4 and data.max() < 5
        assert np.all(answers == marker)
        np.testing.assert_array_equal(batch["targets"][row, 12:], data)
        np.testing.assert_array_equal(batch["mask"][row], [0] * 12 + [1] * 4)
    positions = [tuple(np.flatnonzero(row[:12] != blank)) for row in tokens]
    assert len(set(positions)) > 1  # the positions vary from sequence to sequence
    assert task.baseline()["accuracy"] == 1 / 5
    with pytest.raises(ValueError, match=r"task\.seq_len must be >= 2 \* num_tokens"):
        make_task("selective_copy", seq_len=7, num_tokens=4)


def test_selective_copy_exact_match_needs_every_marker_right():
    task = build("selective_copy")
    batch = task.eval_batches(4)[0]
    outputs = np.eye(4, dtype=np.float32)[batch["targets"]] * 10.0
    outputs[1, -1] = np.roll(outputs[1, -1], 1)  # one wrong answer in sequence 1
    outputs[2, 0] = np.roll(outputs[2, 0], 1)  # a wrong guess off the markers does not count
    metrics = jax.jit(task.metrics)(jnp.asarray(outputs), batch)
    assert float(metrics["exact_match"]) == 0.75
    assert float(metrics["accuracy"]) == pytest.approx(11 / 12)
