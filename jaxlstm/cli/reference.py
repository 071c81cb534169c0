"""The reference printed by `jaxlstm --help` and `jaxlstm train --help`: keys, configs, codes.

The config keys are generated from the dataclasses of `jaxlstm.train.config`: each section's
docstring, and each key's type, default and trailing `# comment` in that file. A key added
there appears here without an edit.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
import typing
from typing import Any

import yaml
from omegaconf import MISSING

from jaxlstm.cli import shipped
from jaxlstm.cli.exits import EXIT_CODES
from jaxlstm.train.config import ExperimentConfig

EXAMPLES = (
    "jaxlstm train quickstart model.hidden_size=128 training.steps=2000",
    "jaxlstm train quickstart --resume            # continue its newest run",
    "jaxlstm train my_experiment.yaml optimizer.name=adamw optimizer.kwargs.b2=0.99",
)


def _field_comments(cls: type) -> dict[str, str]:
    """The trailing `# comment` of each `name: type = default` line in `cls`'s source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (e.g. only .pyc installed): no notes
        return {}
    first_name: dict[int, str] = {}
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME:
            first_name.setdefault(token.start[0], token.string)
        elif token.type == tokenize.COMMENT and token.start[0] in first_name:
            comments[first_name[token.start[0]]] = token.string.lstrip("#").strip()
    return comments


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
                     notes.get(f.name, "")) for f in dataclasses.fields(section)]
            sections.append((field.name, _doc(section), keys))
        else:
            top.append((field.name, _type_name(field.type), _default(field),
                        top_notes.get(field.name, "")))
    return [*sections, ("", _doc(ExperimentConfig), top)]


def config_reference() -> str:
    """The config keys as text: one line per key, `key: type = default  # note`."""
    lines = ["config keys (set them in the YAML file, or override with key=value):"]
    for section, description, keys in config_keys():
        header = section or "(top level)"
        lines.append(f"  {header}: {description}" if description else f"  {header}:")
        entries = [(f"{key}: {type_} = {default}", note) for key, type_, default, note in keys]
        width = max((len(entry) for entry, _ in entries), default=0)
        lines += [f"    {entry:<{width}}  # {note}" if note else f"    {entry}"
                  for entry, note in entries]
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
