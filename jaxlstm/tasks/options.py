"""A task's options: the init fields of its dataclass, checked against their annotations.

The same check serves the built-in tasks and a user's own task class (`plugin`), so a config
option is refused with the same one-line message whichever task it is for. The annotations
understood are `int`, `float` (an int is taken), `str`, `bool`, `X | None` (`Optional[X]`,
null in YAML) and `list[str]`, `list[int]`, `list[float]`; any other annotation is passed on
unchecked, for the task's own `__post_init__` to judge.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

import numpy as np

_SCALARS = (bool, int, float, str)


def option_defaults(cls: type) -> dict[str, Any]:
    """The options of task class `cls` and their defaults (`dataclasses.MISSING` for an
    option that has none and must be given)."""
    defaults = {}
    for field in dataclasses.fields(cls):
        if field.init:
            has_factory = field.default_factory is not dataclasses.MISSING
            defaults[field.name] = field.default_factory() if has_factory else field.default
    return defaults


def option_types(cls: type, task: str) -> dict[str, Any]:
    """The resolved annotations of `cls`'s fields.

    Raises:
        TypeError: "task.name: ..." when they cannot be resolved (a forward reference to a
            name the module does not define), so the options cannot be checked.
    """
    try:
        return typing.get_type_hints(cls)
    except Exception as err:  # whatever failed, the options cannot be checked
        raise TypeError(f"task.name: the option types of the {task} task cannot be read, so "
                        f"its options cannot be checked: {type(err).__name__}: "
                        f"{first_line(err)}") from None


def check_options(cls: type, options: Mapping[str, Any], task: str) -> dict[str, Any]:
    """`options` for task class `cls` (named `task` in messages), each checked against its
    field's annotation and converted (an int given for a float becomes a float, a tuple for a
    list a list).

    Raises:
        TypeError: an unknown option ("task.<option>: unknown option ..."), a required one
            missing ("task.<option>: ... required ..."), or a value of the wrong type
            ("task.<option> must be <type> ...").
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = option_types(cls, task)
    checked = {}
    for key, value in options.items():
        if key not in fields:
            raise TypeError(f"task.{key}: unknown option for the {task} task; its options are "
                            f"{sorted(fields)}.")
        checked[key] = check_type(task, key, value, hints.get(key))
    for key, field in fields.items():
        required = (field.default is dataclasses.MISSING
                    and field.default_factory is dataclasses.MISSING)
        if required and key not in checked:
            raise TypeError(f"task.{key}: the {task} task requires this option (set "
                            f"task.options.{key}); its options are {sorted(fields)}.")
    return checked


def check_type(task: str, key: str, value: Any, expected: Any) -> Any:
    """Option `key`'s value, checked against its annotation `expected` and converted.

    Raises:
        TypeError: "task.<key> must be <type> for the <task> task, got <value> (<its type>)."
    """
    ok, converted = _convert(value, expected)
    if not ok:
        raise TypeError(f"task.{key} must be {type_name(expected)} for the {task} task, got "
                        f"{value!r} ({type(value).__name__}).")
    return converted


def type_name(annotation: Any) -> str:
    """An annotation as a config's reader would write it: "int", "int | None", "list[str]"."""
    if annotation in _SCALARS:
        return annotation.__name__
    if annotation is type(None):
        return "None"
    if _is_union(annotation):
        return " | ".join(type_name(arg) for arg in typing.get_args(annotation))
    return str(annotation).replace("typing.", "")


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _convert(value: Any, expected: Any) -> tuple[bool, Any]:
    """(whether `value` fits `expected`, the value converted to it)."""
    is_bool = isinstance(value, (bool, np.bool_))
    if expected is bool:
        return is_bool, bool(value) if is_bool else value
    if expected is int:
        ok = isinstance(value, (int, np.integer)) and not is_bool
        return ok, int(value) if ok else value
    if expected is float:
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not is_bool
        return ok, float(value) if ok else value
    if expected is str:
        return isinstance(value, str), value
    if expected is type(None):
        return value is None, value
    if _is_union(expected):
        for arg in typing.get_args(expected):
            ok, converted = _convert(value, arg)
            if ok:
                return True, converted
        return False, value
    if typing.get_origin(expected) is list:
        (item,) = typing.get_args(expected) or (Any,)
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_convert(v, item) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    return True, value  # an annotation this check does not know: the task judges it
