"""What a data file was: its size and content hash, so that a resume can tell whether the data
under a run changed (a run folder's `data.json`)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

CHUNK = 8 * 2**20


def sha256(path: str) -> str:
    """The file's SHA-256, read in chunks (bounded memory for any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprints(paths: list[str]) -> list[dict[str, Any]]:
    """[{"path", "size", "sha256"}] of each file, in the order given."""
    return [{"path": os.path.abspath(p), "size": os.path.getsize(p), "sha256": sha256(p)}
            for p in paths]


def changed(recorded: list[dict[str, Any]]) -> list[str]:
    """One phrase per recorded file that is gone or differs now ("<path>: size 10 -> 12"),
    empty when the data is as recorded."""
    problems = []
    for entry in recorded:
        path = entry["path"]
        if not os.path.isfile(path):
            problems.append(f"{path}: no longer there")
            continue
        size = os.path.getsize(path)
        if size != entry["size"]:
            problems.append(f"{path}: size {entry['size']:,} -> {size:,} bytes")
        elif sha256(path) != entry["sha256"]:
            problems.append(f"{path}: same size, different content (sha256 "
                            f"{entry['sha256'][:12]}... -> another)")
    return problems
