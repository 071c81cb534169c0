"""Training on a user's files: each source trains and beats its baseline, streamed shards train
exactly what the same data in memory trains, and the run folder keeps what it needs (the
data's fingerprints, a vocabulary, a normalisation): a resume whose data changed is refused.

Each source is one tiny run (module fixtures, so the runs are shared by the tests). Resuming
after kill -9 on file data, on 1 device, 4 devices and 2 processes, is in
tests/test_distributed.py.
"""

import hashlib
import json
import os

import numpy as np
import pytest

from jaxlstm.tasks.files import ArraysTask, shards
from jaxlstm.train.config import load_config
from jaxlstm.train.run import run_experiment
from jaxlstm.train.run_folder import RunFolderError
from tests.test_task_files import write_series

SETTINGS = """\
model: {{hidden_size: {hidden}}}
optimizer: {{learning_rate: 0.02}}
training: {{steps: {steps}, batch_size: 16, eval_every: {eval_every}, eval_batch_size: 64}}
logging: {{log_every: 10, progress: false, tensorboard: false, plots: false}}
checkpointing: {{every: 50}}
"""


def config_file(folder, name, task, options, *, hidden=16, steps=150, eval_every=50):
    path = folder / f"{name}.yaml"
    path.write_text(f"task:\n  name: {task}\n  options: {json.dumps(options)}\n"
                    + SETTINGS.format(hidden=hidden, steps=steps, eval_every=eval_every)
                    + f"runs_root: {folder / 'runs'}\n")
    return str(path)


def sign_data(path, n=400, steps=8, seed=0):
    """Sequences of variable length whose class is the sign of feature 0's sum."""
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(n, steps, 2)).astype(np.float32)
    lengths = rng.integers(2, steps + 1, n)
    inputs[np.arange(steps) >= lengths[:, None]] = 0.0
    np.savez(path, inputs=inputs, lengths=lengths,
             targets=(inputs[:, :, 0].sum(axis=1) > 0).astype(np.int32))
    return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run per source: arrays (.npz), the same arrays converted to shards, text_file at
    char level, table (CSV, two series)."""
    folder = tmp_path_factory.mktemp("files")
    npz = sign_data(folder / "sign.npz")
    converted = str(folder / "sign-shards")
    shards.convert(ArraysTask(path=npz), converted, {})
    text = folder / "cat.txt"
    text.write_text("the cat sat on the mat; the dog sat on the log. " * 40)
    series = write_series(folder / "sines.csv", rows=150)
    configs = {
        "arrays": config_file(folder, "arrays", "arrays", {"path": npz}),
        "shards": config_file(folder, "shards", "arrays", {"path": converted}),
        "text": config_file(folder, "text", "text_file",
                            {"path": str(text), "level": "char", "seq_len": 16}, hidden=32),
        "table": config_file(folder, "table", "table",
                             {"path": series, "features": ["temp", "hum"],
                              "targets": ["temp"], "window": 12, "horizon": 3,
                              "group": "station", "time": "day"}, steps=200),
    }
    results = {name: run_experiment(load_config(path)) for name, path in configs.items()}
    return folder, configs, results


@pytest.mark.parametrize("name", ["arrays", "text", "table"])
def test_each_source_trains_and_beats_its_baseline(runs, name):
    _, _, results = runs
    summary = results[name].summary
    metric, better = summary["metric"], summary["higher_is_better"]
    for split, baseline in (("final", "baseline"), ("test", "baseline_test")):
        ours, theirs = summary[split][metric], summary[baseline][metric]
        assert (ours > theirs) if better else (ours < theirs), (split, ours, theirs)
    print(f"{name}: {metric} {summary['test'][metric]:.4f} on the test split, baseline "
          f"{summary['baseline_test'][metric]:.4f}")


def test_streamed_shards_train_exactly_what_the_same_data_in_memory_trains(runs):
    _, _, results = runs
    with open(os.path.join(results["arrays"].run_dir, "metrics.jsonl")) as f:
        in_memory = f.read()
    with open(os.path.join(results["shards"].run_dir, "metrics.jsonl")) as f:
        streamed = f.read()
    assert in_memory == streamed and in_memory.count("\n") > 10


def test_the_run_folder_records_the_data_and_the_task_artifacts(runs):
    _, _, results = runs
    with open(os.path.join(results["shards"].run_dir, "data.json")) as f:
        files = json.load(f)["files"]
    assert os.path.basename(files[0]["path"]) == "dataset.json" and len(files) == 4
    with open(files[1]["path"], "rb") as shard:
        assert files[1]["sha256"] == hashlib.sha256(shard.read()).hexdigest()
    with open(os.path.join(results["text"].run_dir, "vocab.json"), encoding="utf-8") as f:
        assert json.load(f)["chars"] == sorted(set("the cat sat on the mat; dog log."))
    with open(os.path.join(results["table"].run_dir, "normalisation.json")) as f:
        assert set(json.load(f)["columns"]) == {"temp", "hum"}


def test_a_text_file_run_samples_from_its_saved_vocabulary(runs, capsys):
    folder, _, results = runs
    from experiments.sample import main

    os.rename(folder / "cat.txt", folder / "moved.txt")  # sampling never reads the data
    try:
        assert main([results["text"].run_dir, "--prompt", "the c", "--length", "20"]) == 0
    finally:
        os.rename(folder / "moved.txt", folder / "cat.txt")
    out = capsys.readouterr().out
    assert out.startswith("the c") and len(out.rstrip("\n")) == 25


def test_a_resume_whose_data_changed_is_refused_unless_allowed(runs, capsys):
    folder, configs, results = runs
    from experiments.train import main

    npz = folder / "sign.npz"
    original = npz.read_bytes()
    sign_data(npz, seed=1)  # same size, other numbers
    try:
        run_dir = results["arrays"].run_dir
        before = {name: os.path.getmtime(os.path.join(run_dir, name))
                  for name in os.listdir(run_dir)}
        assert main([configs["arrays"], "--resume", "training.steps=160"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(npz) in err[0] and "--allow-data-change" in err[0]
        assert "same size, different content" in err[0]
        assert before == {name: os.path.getmtime(os.path.join(run_dir, name))
                          for name in os.listdir(run_dir)}
        resumed = run_experiment(load_config(configs["arrays"], [
            "resume=true", "allow_data_change=true", "training.steps=160"]))
        assert resumed.status == "completed" and resumed.step == 160
        assert "different content" in resumed.summary["resumes"][0]["changed"]["data"][0]
        with pytest.raises(RunFolderError, match="data changed"):  # recorded: the new data
            npz.write_bytes(original)
            run_experiment(load_config(configs["arrays"], ["resume=true",
                                                           "training.steps=170"]))
    finally:
        npz.write_bytes(original)


@pytest.mark.parametrize("case", ["missing", "nan"])
def test_bad_data_stops_the_command_in_one_line_before_any_folder(tmp_path, capsys, case):
    from experiments.train import main

    path = tmp_path / "bad.npz"
    if case == "nan":
        inputs = np.ones((30, 4, 2), np.float32)
        inputs[12, 3, 0] = np.nan
        np.savez(path, inputs=inputs, targets=np.zeros(30, np.int32))
    config = config_file(tmp_path, "bad", "arrays", {"path": str(path)})
    assert main([config]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"data error: {path}: "), err
    assert ("no such file" if case == "missing" else "row 12") in err[0]
    assert not (tmp_path / "runs").exists()
