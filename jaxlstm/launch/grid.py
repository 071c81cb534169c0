"""Sweep grids: which `key=value` overrides are swept, and the points they expand to.

    optimizer.learning_rate=1e-3,3e-3 model.hidden_size=64,128 training.steps=500

is a grid of 2 x 2 = 4 points, each with `training.steps=500`. The rule for commas:

- an override is split on its first `=` into a key and a value, and the value is split on
  *top-level* commas only: commas inside brackets or braces (`[1,2]`, `{a: 1, b: 2}`) and
  inside quotes (`'a,b'`, `"a,b"`) belong to one YAML value and never split it;
- two or more values make the key swept; an override without a top-level comma is the same
  for every point;
- a literal comma in a string value is written quoted: `name_suffix="'a,b'"` in the shell.

Points come in a fixed order, the cartesian product with the first swept key varying slowest
(`itertools.product` over the keys in command-line order), so a grid expands the same way
every time. Each point has a readable name made of its swept `key=value` pairs, which is also
its run folder's name, made safe for file systems.

Values are compared as typed here (`1e-3,1e-3` is refused at once) and, once every point's
config is loaded, as parsed (`check_distinct`): `1e-3,0.001` or `1,01` would otherwise be two
identical runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from collections.abc import Hashable, Sequence

# Keys that decide where a run goes, not what it is: a sweep sets them itself.
NOT_SWEPT = ("name", "runs_root", "run_dir", "resume", "allow_data_change")

_OPENING, _CLOSING = "[{(", "]})"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
MAX_NAME = 200  # bytes; file systems allow 255 per path component


class GridError(ValueError):
    """A sweep that cannot be expanded (an empty or repeated value, a key that cannot be
    swept): one line."""


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of a sweep: its name (and run folder's name) and the overrides that make it."""

    name: str
    overrides: tuple[str, ...]  # the swept `key=value` pairs, in the grid's key order


@dataclasses.dataclass(frozen=True)
class Grid:
    """The expansion of a command line's overrides."""

    constant: tuple[str, ...]  # overrides every point gets, as typed
    swept: dict[str, tuple[str, ...]]  # swept key -> its values, in command-line order
    points: tuple[Point, ...]  # the cartesian product, first swept key slowest

    @property
    def is_sweep(self) -> bool:
        return bool(self.swept)


def split_values(value: str) -> list[str]:
    """`value` split on its top-level commas (outside brackets, braces and quotes).

    >>> split_values("1e-3,3e-3")
    ['1e-3', '3e-3']
    >>> split_values("[1,2],[3,4]")
    ['[1,2]', '[3,4]']
    >>> split_values("'a,b'")
    ["'a,b'"]
    """
    parts, current, depth, quote = [], [], 0, ""
    chars = iter(value)
    for char in chars:
        if quote:
            current.append(char)
            if char == "\\" and quote == '"':  # YAML's escapes exist only in double quotes
                current.append(next(chars, ""))
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char in _OPENING:
            depth += 1
            current.append(char)
        elif char in _CLOSING:
            depth = max(depth - 1, 0)
            current.append(char)
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def point_name(pairs: tuple[str, ...]) -> str:
    """A file-system-safe folder name for a point: its `key=value` pairs joined by commas,
    every other character replaced by `_`, and, past `MAX_NAME` bytes, cut with a hash of
    the whole appended so that names stay distinct."""
    name = _UNSAFE.sub("_", ",".join(pairs)) or "point"
    if name.startswith("."):  # no hidden folders
        name = "_" + name[1:]
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(",".join(pairs).encode()).hexdigest()[:10]
        name = f"{name[:MAX_NAME - 11]}-{digest}"
    return name


def expand_grid(overrides: list[str] | tuple[str, ...]) -> Grid:
    """The grid of `overrides` (see the module docstring).

    Raises:
        GridError: an empty value in a sweep (`a=1,,2`, `a=1,`), a value repeated in one key,
            a key swept twice or both swept and fixed, or a swept key of `NOT_SWEPT`.
    """
    constant: list[str] = []
    swept: dict[str, tuple[str, ...]] = {}
    fixed_keys: set[str] = set()
    for override in overrides:
        key, sep, value = override.partition("=")
        values = split_values(value) if sep else [value]
        if len(values) == 1:
            constant.append(override)
            fixed_keys.add(key.strip())
            continue
        key = key.strip()
        if key in NOT_SWEPT:
            raise GridError(f"{override}: {key} cannot be swept; a sweep chooses each point's "
                            "folder itself.")
        if any(not v.strip() for v in values):
            raise GridError(f"{override}: an empty value in a sweep; separate values with "
                            "single commas, and quote a value that contains a comma.")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise GridError(f"{override}: the value {repeated[0]!r} is given twice.")
        if key in swept:
            raise GridError(f"{key} is swept twice; give all its values in one override, "
                            f"{key}=A,B,C.")
        swept[key] = tuple(values)
    both = sorted(fixed_keys & set(swept))
    if both:
        raise GridError(f"{both[0]} is both swept and fixed; give it once.")
    combos = itertools.product(*([f"{k}={v}" for v in vs] for k, vs in swept.items()))
    points, used = [], set()
    for pairs in combos:
        name = base = point_name(pairs)
        n = 2
        while name in used:  # two values that differ only in unsafe characters
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        points.append(Point(name, pairs))
    return Grid(tuple(constant), swept, tuple(points))


def check_distinct(grid: Grid, resolved: Sequence[Hashable]) -> None:
    """GridError when two points are one experiment: `resolved[i]` is point i's resolved
    config (its YAML), and two equal ones differ only in values written two ways that parse
    the same (`1e-3,0.001`; `1,01`). Names the key and both spellings.
    """
    seen: dict[Hashable, Point] = {}
    for point, config in zip(grid.points, resolved, strict=True):
        other = seen.setdefault(config, point)
        if other is point:
            continue
        for first, second in zip(other.overrides, point.overrides, strict=True):
            if first != second:
                key, _, value = first.partition("=")
                raise GridError(f"{key}={','.join(grid.swept[key])}: {value!r} and "
                                f"{second.partition('=')[2]!r} are the same value once "
                                "parsed; give it once.")
