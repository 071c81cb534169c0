"""Durable writes: a file is replaced whole or not at all, and every JSON value is valid."""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any


def write_atomically(path: str, text: str) -> None:
    """Replaces `path` with `text` in one rename: readers see the old file or the new one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (JSON's null), so that the file
    stays valid JSON (a bare `NaN` is rejected by most JSON readers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
