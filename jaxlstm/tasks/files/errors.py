"""The one error a user's data file can cause: `DataError`."""

from __future__ import annotations


class DataError(ValueError):
    """Bad data in a user's file, as one line: the file (and the row or column where it
    applies), what was expected and what came. The runner raises it before any run folder is
    made; the command prints it as one line and exits with code 2."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}")
