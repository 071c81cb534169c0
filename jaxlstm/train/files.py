"""Durable writes: a file is replaced whole or not at all, and every JSON value is valid."""

from __future__ import annotations

import math
import os
import secrets
from typing import Any


def _create_beside(path: str) -> tuple[int, str]:
    """Creates a new, uniquely named file beside `path` and opens it for writing: (fd, its
    path). Created with mode 0o666, so the kernel applies the umask as it does for `open()`;
    `tempfile.mkstemp` would create it 0o600 and hide config.yaml and summary.json from
    collaborators on a shared file system."""
    directory, name = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # another writer's: draw another name
            continue


def write_atomically(path: str, text: str) -> None:
    """Replaces `path` with `text` in one rename: readers see the old file or the new one.
    The file gets the mode `open()` would give it (0o666 less the umask)."""
    fd, tmp = _create_beside(path)
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
