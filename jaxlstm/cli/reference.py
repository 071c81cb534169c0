"""The reference printed by `jaxlstm --help` and `jaxlstm train --help`: keys, configs, codes.

The config keys are generated from the dataclasses of `jaxlstm.train.config`: each section's
docstring, and each key's type, default and `# comment` in that file (the comment block just
above the key and the comment after it). A key added there appears here without an edit. Where
the code decides a default by a rule (`model.mode: null`), the note adds the rule as the code
states it (`GENERATED_NOTES`), so that the text cannot drift from what runs.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from typing import Any

import yaml
from omegaconf import MISSING

from jaxlstm.cli import shipped
from jaxlstm.cli.exits import EXIT_CODES
from jaxlstm.train.config import ExperimentConfig, default_mode_rule

EXAMPLES = (
    "jaxlstm train quickstart model.hidden_size=128 training.steps=2000",
    "jaxlstm train quickstart --resume            # continue its newest run",
    "jaxlstm train my_experiment.yaml optimizer.name=adamw optimizer.kwargs.b2=0.99",
)


GENERATED_NOTES = {"model.mode": default_mode_rule}
"""Notes the code writes: appended to the key's comment, from the same rule the code runs."""

NOTE_WIDTH = 100  # a key's line wraps its note past this column


def _field_comments(cls: type) -> dict[str, str]:
    """Each field's comment in `cls`'s source: the `#` lines right above its `name: type =
    default` line (no blank line between) and the `# comment` after it, joined."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (e.g. only .pyc installed): no notes
        return {}
    first_name: dict[int, str] = {}
    above: list[str] = []  # the block of comment lines just read
    above_ends = 0  # the line number of its last line
    comments: dict[str, list[str]] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        row = token.start[0]
        if token.type == tokenize.NAME and row not in first_name:
            first_name[row] = token.string
            if above and above_ends == row - 1:
                comments[token.string] = above
            above = []
        elif token.type == tokenize.COMMENT:
            comment = token.string.lstrip("#").strip()
            if row in first_name:  # after code on its line
                comments.setdefault(first_name[row], []).append(comment)
            else:
                above = [*above, comment] if above_ends == row - 1 else [comment]
                above_ends = row
    return {name: " ".join(lines) for name, lines in comments.items()}


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, str):  # under `from __future__ import annotations`
        return annotation
    return getattr(annotation, "__name__", None) or str(annotation)


def _default(field: dataclasses.Field) -> str:
    """The default as it would be written in YAML, or "(required)"."""
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "(required)"
    if value == MISSING:
        return "(required)"
    return yaml.safe_dump(value, default_flow_style=True).splitlines()[0]


def _doc(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(f"{cls.__name__}("):  # dataclasses' generated signature, no docstring
        return ""
    return " ".join(doc.split())


def config_keys() -> list[tuple[str, str, list[tuple[str, str, str, str]]]]:
    """Every config key, by section: (section, its description, [(key, type, default, note)]).

    Sections come in `ExperimentConfig`'s field order; the keys outside any section are last,
    under the section name "" with `ExperimentConfig`'s own description.
    """
    hints = typing.get_type_hints(ExperimentConfig)
    sections, top = [], []
    top_notes = _field_comments(ExperimentConfig)
    for field in dataclasses.fields(ExperimentConfig):
        section = hints[field.name]
        if dataclasses.is_dataclass(section):
            notes = _field_comments(section)
            keys = [(f"{field.name}.{f.name}", _type_name(f.type), _default(f),
                     _note(f"{field.name}.{f.name}", notes.get(f.name, "")))
                    for f in dataclasses.fields(section)]
            sections.append((field.name, _doc(section), keys))
        else:
            top.append((field.name, _type_name(field.type), _default(field),
                        top_notes.get(field.name, "")))
    return [*sections, ("", _doc(ExperimentConfig), top)]


def _note(key: str, comment: str) -> str:
    """The key's comment, with the rule the code states for it (`GENERATED_NOTES`)."""
    generated = GENERATED_NOTES[key]() if key in GENERATED_NOTES else ""
    return " ".join(part for part in (comment, generated) if part)


def _key_lines(entry: str, note: str) -> list[str]:
    """`entry  # note`, the note wrapped at `NOTE_WIDTH` under its first line's `#`."""
    indent = " " * (len(entry) + 2)
    wrapped = textwrap.wrap(note, max(NOTE_WIDTH - len(indent) - 2, 40))
    return [f"{entry}  # {wrapped[0]}", *(f"{indent}# {line}" for line in wrapped[1:])]


def config_reference() -> str:
    """The config keys as text: one line per key, `key: type = default  # note`."""
    lines = ["config keys (set them in the YAML file, or override with key=value):"]
    for section, description, keys in config_keys():
        header = section or "(top level)"
        lines.append(f"  {header}: {description}" if description else f"  {header}:")
        entries = [(f"{key}: {type_} = {default}", note) for key, type_, default, note in keys]
        width = max((len(entry) for entry, _ in entries), default=0)
        for entry, note in entries:
            lines += _key_lines(f"    {entry:<{width}}", note) if note else [f"    {entry}"]
    return "\n".join(lines)


def train_reference() -> str:
    """The config keys, the shipped configs, examples and the exit codes."""
    return "\n\n".join([
        config_reference(),
        f"shipped configs (in {shipped.CONFIGS_DIR}):\n"
        + "\n".join(f"  {line}" for line in shipped.listing()),
        "examples:\n" + "\n".join(f"  {example}" for example in EXAMPLES),
        "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}"
                                   for code, meaning in EXIT_CODES.items()),
    ])
