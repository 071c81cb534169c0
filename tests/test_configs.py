"""Every config in configs/ loads against the schema and trains at a tiny size."""

import json
import os
import pathlib

import pytest

from jaxlstm.tasks import needs_extra
from jaxlstm.train.config import load_config
from jaxlstm.train.run import run_experiment

CONFIGS = sorted((pathlib.Path(__file__).parent.parent / "configs").glob("*.yaml"))
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
    extra = needs_extra(config.task.name)
    if extra and not extra.installed():
        pytest.skip(f"{extra.package} is not installed: {extra.install}")
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


# --- The help states what the code does ----------------------------------------------------

def _help_note(key: str) -> str:
    """The note `jaxlstm train --help` prints for `key`, its wrapped lines joined."""
    from jaxlstm.cli.reference import config_keys

    notes = {name: note for _, _, keys in config_keys() for name, _, _, note in keys}
    return notes[key]


def _run_mode(model_module, config, backend: str, monkeypatch) -> str:
    """The form the model runs `config` in on `backend`: the mode it passes, or the default
    of the function it calls (a mapping of forms: the form of the config's one kind)."""
    import inspect

    import jaxlstm

    monkeypatch.setattr(model_module.jax, "default_backend", lambda: backend)
    passed = model_module._mode(config).get("mode")
    if isinstance(passed, dict):
        (passed,) = set(passed.values())
    called = getattr(jaxlstm, config.cell) if config.blocks is None else None
    if passed is None and called is None:
        raise AssertionError(f"{config.blocks} blocks run with no mode")
    return passed or inspect.signature(called).parameters["mode"].default


@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
def test_help_states_the_mode_the_model_runs(backend, monkeypatch):
    """`model.mode: null` as --help states it, against what the model passes on each backend,
    for every family with forms, as a cell and as blocks: fails when the rule in the code
    changes and the text does not."""
    from jaxlstm import blocks
    from jaxlstm import family as families
    from jaxlstm.train import model as model_module
    from jaxlstm.train.config import ModelConfig

    note = _help_note("model.mode")
    assert "null:" in note
    clauses = [c.strip() for c in note.split("null:", 1)[1].split(";")]
    checked = 0
    for family in map(families.get, families.names()):
        if not family.modes:
            continue
        letters = [k for k in blocks.letters() if blocks.kind(k).family == family.name]
        clause = next(c for c in clauses if c.split(" ")[0].rstrip(":") == family.name)
        forms = clause.split(":", 1)[1]
        for config in (ModelConfig(cell=family.name),
                       *(ModelConfig(blocks=letter * 3) for letter in letters)):
            runs = _run_mode(model_module, config, backend, monkeypatch)
            if f" on {backend}" in forms:
                stated = forms.split(f" on {backend}")[0].split()[-1]
            elif " elsewhere" in forms:
                stated = forms.split(" elsewhere")[0].split()[-1]
            else:
                stated = forms.split()[0].strip(".,")
            assert stated == runs, (config, backend, clause)
            checked += 1
    assert checked >= 6  # mlstm, min_lstm and min_gru, as cells and as blocks


def test_help_describes_blocks_and_the_min_cells_form():
    blocks = _help_note("model.blocks")
    assert '"msm"' in blocks and '"lll"' in blocks and "hidden_size" in blocks
    from jaxlstm.cli.reference import config_keys

    model_doc = next(doc for section, doc, _ in config_keys() if section == "model")
    assert "parallel scan" not in model_doc  # min cells run in the form model.mode picks
    assert "mode" in model_doc


def test_help_reads_the_comment_block_above_a_key(monkeypatch):
    import dataclasses

    from jaxlstm.cli import reference

    @dataclasses.dataclass
    class Section:
        # Not this one: a blank line follows.

        # How wide: the first line
        # and the second.
        width: int = 3  # after it
        depth: int = 1

    @dataclasses.dataclass
    class Config:
        section: Section = dataclasses.field(default_factory=Section)

    monkeypatch.setattr(reference, "ExperimentConfig", Config)
    keys = {key: note for _, _, entries in reference.config_keys()
            for key, _, _, note in entries}
    assert keys == {"section.width": "How wide: the first line and the second. after it",
                    "section.depth": ""}
