"""`jaxlstm data convert SRC DEST` and `jaxlstm data info PATH`: a user's data files, checked,
described, and converted into ArrayRecord shards for streaming.

    jaxlstm data info sensors.csv --task table features=[temp,hum] targets=[temp] window=48
    jaxlstm data convert corpus.txt shards/corpus seq_len=200
    jaxlstm train my_config.yaml task.options.path=shards/corpus

SRC's task is read from its name (`.npz` or a folder of `.npy` files: arrays; `.csv`, `.tsv`,
`.parquet`: table; anything else: text_file) unless `--task` names it; `key=value` arguments
are that task's options, as in a config's `task.options` (values are YAML: `[a, b]` is a list).
The shards hold the split examples, so a config that reads them needs only `path` (see
`jaxlstm.tasks.files.shards`).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import yaml

from jaxlstm.cli.exits import DONE, UsageError, command
from jaxlstm.cli.parser import OneLineParser

USAGE = "convert SRC DEST | info PATH [--task NAME] [option=value ...]"
SUMMARY = "check, describe and convert your data files (ArrayRecord shards for streaming)"

_OPTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SUFFIX_TASKS = {".npz": "arrays", ".npy": "arrays", ".csv": "table", ".tsv": "table",
                ".parquet": "table", ".pq": "table"}


def infer_task(path: str) -> str:
    """The file task for `path`: a converted folder's own, else by its suffix (a folder of
    .npy files is arrays, anything unknown is text)."""
    from jaxlstm.tasks.files import shards

    if shards.is_converted(path):
        return shards.read_metadata(path)["task"]
    if os.path.isdir(path):
        return "arrays"
    return SUFFIX_TASKS.get(os.path.splitext(path)[1].lower(), "text_file")


def parse_options(items: list[str]) -> dict[str, Any]:
    """`key=value` arguments as a dict, each value parsed as YAML (UsageError otherwise)."""
    options = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            options[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError as err:
            first = " ".join(str(err).split("\n")[0].split())
            raise UsageError(f"option {key}: {value!r} is not valid YAML ({first}).") from None
    return options


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog="jaxlstm data", usage=f"jaxlstm data {USAGE}",
        description="info: read a data file (or a converted folder) as a task would, check "
                    "it, and print what it holds and its baselines. convert: write it as "
                    "ArrayRecord shards that a run streams (task.options.path: DEST).",
        epilog="Exit codes: 0 done, 2 bad input or bad data (one line on stderr), 130 Ctrl-C.")
    parser.add_argument("action", choices=("convert", "info"))
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="info: the data; convert: SRC and DEST (a new folder)")
    parser.add_argument("--task", choices=("arrays", "text_file", "table"),
                        help="the file task (default: from SRC's name)")
    return parser


def _build(path: str, task_name: str, options: dict[str, Any]) -> Any:
    from jaxlstm.tasks import make_task

    if "path" in options:
        raise UsageError("give the data as SRC/PATH, not as a path= option.")
    try:
        return make_task(task_name, path=path, **options)
    except (TypeError, ValueError) as err:
        from jaxlstm.tasks.files import DataError

        if isinstance(err, DataError):
            raise
        raise UsageError(str(err)) from None


@command("jaxlstm data")
def main(argv: list[str]) -> int:
    """Runs `jaxlstm data` on `argv`; returns 0, or 2 after one line for bad input or data."""
    # key=value arguments are options, everything else the parser's (paths and flags).
    is_option = [bool(_OPTION.match(a)) for a in argv]
    args = _parser().parse_args([a for a, o in zip(argv, is_option, strict=True) if not o])
    options = parse_options([a for a, o in zip(argv, is_option, strict=True) if o])
    expected = 2 if args.action == "convert" else 1
    if len(args.paths) != expected:
        raise UsageError(f"{args.action} takes {'SRC and DEST' if expected == 2 else 'PATH'}, "
                         f"got {len(args.paths)} path(s): {args.paths}.")
    source = args.paths[0]
    if args.action == "convert":
        from jaxlstm.tasks.files import shards

        shards.check_destination(args.paths[1])  # before reading a large source
    task_name = args.task or infer_task(source)
    task = _build(source, task_name, options)
    print(task.describe(), file=sys.stderr)
    if args.action == "info":
        from jaxlstm.tasks.base import SPLITS

        for split in SPLITS:
            if split in task.splits:
                baseline = task.baseline(split)
                shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(baseline.items()))
                print(f"baseline on {split}: {shown}")
        return DONE
    from jaxlstm.tasks.files import shards

    metadata = shards.convert(task, args.paths[1], options, say=shards.print_line)
    examples = sum(info["examples"] for info in metadata["splits"].values())
    print(f"wrote {examples:,} examples to {args.paths[1]}; train on them with "
          f"task.name: {task_name} and task.options.path: {args.paths[1]}")
    return DONE
