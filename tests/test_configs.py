"""Every config in configs/ loads against the schema and trains at a tiny size."""

import importlib.util
import json
import os
import pathlib

import pytest

from jaxlstm.train.config import load_config
from jaxlstm.train.run import run_experiment

CONFIGS = sorted((pathlib.Path(__file__).parent.parent / "configs").glob("*.yaml"))
NEEDS = {"digits": "sklearn", "sunspots": "statsmodels"}
# Options that shrink a task to seconds; the rest keep the config's values.
SMALL_OPTIONS = {"adding": {"seq_len": 8}, "copy": {"seq_len": 4}, "text": {"seq_len": 12},
                 "parity": {"eval_max_len": 48, "eval_size": 8},
                 "cycle_navigation": {"eval_max_len": 48, "eval_size": 8},
                 "mqar": {"num_pairs": 2, "num_queries": 2, "eval_size": 8},
                 "selective_copy": {"seq_len": 12, "num_tokens": 2, "eval_size": 8}}


def test_there_are_configs():
    assert any(c.stem == "quickstart" for c in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_trains_at_a_tiny_size(path, tmp_path):
    config = load_config(path)
    module = NEEDS.get(config.task.name)
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (the tasks extra)")
    overrides = [f"task.options.{k}={v}" for k, v in
                 SMALL_OPTIONS.get(config.task.name, {}).items()]
    config = load_config(path, [*overrides, f"runs_root={tmp_path}", "training.steps=3",
                                "training.batch_size=4", "training.eval_every=3",
                                "model.hidden_size=8", "model.remat_chunk=null",
                                "logging.progress=false", "logging.plots=false",
                                "logging.tensorboard=false", "checkpointing.every=3"])
    result = run_experiment(config)
    assert result.status == "completed"
    summary = json.loads((pathlib.Path(result.run_dir) / "summary.json").read_text())
    metric = summary["metric"]
    assert metric in summary["final"] and metric in summary["baseline"]
    assert os.path.isdir(os.path.join(result.run_dir, "checkpoints", "3"))
