"""The configs shipped inside the package (`jaxlstm/configs/*.yaml`): names, paths, summaries.

`jaxlstm train quickstart` finds `quickstart.yaml` here; `jaxlstm configs` lists them. A
config's summary is its task and the first sentence of its leading comment block; a config
whose task needs an optional package (`jaxlstm.tasks.needs_extra`) says which, and whether it
is installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from jaxlstm.cli.exits import DONE, UsageError, command
from jaxlstm.train.config import ConfigError

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"

USAGE = ""
SUMMARY = "list the shipped configs: name, task, what it shows"

# A sentence ends at a full stop before a word: "et al. 2016" and "T=0.5" do not end one.
_SENTENCE_END = re.compile(r"(?<=\.)\s+(?=[^\d\s])")


def names() -> list[str]:
    """The shipped configs' names, sorted."""
    return sorted(path.stem for path in CONFIGS_DIR.glob("*.yaml"))


def resolve(config: str) -> str:
    """The YAML file for `config`: an existing file as given, else a shipped config's name.

    Raises:
        ConfigError: neither a file nor a shipped name, in one line listing the shipped names.
    """
    if os.path.isfile(config):
        return config
    if config in names():
        return str(CONFIGS_DIR / f"{config}.yaml")
    raise ConfigError(f"{config}: no such config file, and no shipped config of that name; "
                      f"shipped configs: {', '.join(names())}.")


def summary(name: str) -> tuple[str, str]:
    """The task (with its options) and the one-sentence description of shipped config `name`."""
    text = (CONFIGS_DIR / f"{name}.yaml").read_text()
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    description = _SENTENCE_END.split(" ".join(comment), maxsplit=1)[0]
    task = (yaml.safe_load(text) or {}).get("task") or {}
    options = ", ".join(f"{key}={value}" for key, value in (task.get("options") or {}).items())
    return f"{task.get('name', '?')}" + (f" ({options})" if options else ""), description


def extra_note(name: str) -> str:
    """What shipped config `name`'s task needs beyond the install, e.g. "[needs scikit-learn,
    not installed: pip install 'jaxlstm[tasks]']"; "" for most."""
    from jaxlstm.tasks import needs_extra

    task = (yaml.safe_load((CONFIGS_DIR / f"{name}.yaml").read_text()) or {}).get("task") or {}
    extra = needs_extra(str(task.get("name")))
    if extra is None:
        return ""
    if extra.installed():
        return f"[needs {extra.package}, installed]"
    return f"[needs {extra.package}, not installed: {extra.install}]"


def listing() -> list[str]:
    """One line per shipped config: name, task, description (and the optional package its
    task needs), in aligned columns."""
    rows = [(name, *summary(name)) for name in names()]
    name_width = max(len(row[0]) for row in rows)
    task_width = max(len(row[1]) for row in rows)
    return [f"{name:<{name_width}}  {task:<{task_width}}  {description} "
            f"{extra_note(name)}".rstrip() for name, task, description in rows]


@command("jaxlstm configs")
def main(argv: list[str]) -> int:
    """`jaxlstm configs`: prints `listing()` and where the files are."""
    if argv in (["-h"], ["--help"]):
        print("usage: jaxlstm configs\n\nLists the shipped configs: name, task, what it shows.")
        return DONE
    if argv:
        raise UsageError(f"configs takes no arguments, got {' '.join(argv)!r}.")
    print("\n".join(listing()))
    print(f"(in {CONFIGS_DIR}: `jaxlstm train NAME` runs one; copy one to change it)")
    return DONE
