"""argparse that reports bad input as a `UsageError` (one line) and never calls sys.exit."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from jaxlstm.cli.exits import EarlyExit, UsageError


class OneLineParser(argparse.ArgumentParser):
    """An `ArgumentParser` for `command`-wrapped mains.

    argparse's own `error` prints the usage block and exits; here the message becomes a
    `UsageError`, which `command` prints as one line with a pointer to --help. `exit` (after
    --help) raises `EarlyExit`, so a command called in-process returns its code instead of
    ending the interpreter.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, file=sys.stderr, end="")
        raise EarlyExit(status)
