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


def differences(recorded: list[dict[str, Any]], current: list[dict[str, Any]]) -> list[str]:
    """One phrase per file that differs between two `fingerprints` lists, matched by path
    ("<path>: size 10 -> 12 bytes"); empty when the data is as recorded."""
    now = {entry["path"]: entry for entry in current}
    problems = []
    for entry in recorded:
        path, new = entry["path"], now.pop(entry["path"], None)
        if new is None:
            problems.append(f"{path}: no longer part of the data")
        elif new["size"] != entry["size"]:
            problems.append(f"{path}: size {entry['size']:,} -> {new['size']:,} bytes")
        elif new["sha256"] != entry["sha256"]:
            problems.append(f"{path}: same size, different content (sha256 "
                            f"{entry['sha256'][:12]}... -> {new['sha256'][:12]}...)")
    problems += [f"{path}: not part of the data before" for path in sorted(now)]
    return problems
