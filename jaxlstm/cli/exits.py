"""The exit codes of every command, and the wrapper that turns failures into them.

Every command is a `main(argv) -> int` wrapped by `command`, so bad input, a config error and
Ctrl-C end the same way everywhere: one line on stderr, a documented exit code, no traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence

from jaxlstm.tasks.files.errors import DataError
from jaxlstm.train.config import ConfigError
from jaxlstm.train.interrupts import Interrupted, describe
from jaxlstm.train.run_folder import RunFolderError

DONE = 0  # completed, or stopped early by training.patience
STOPPED = 1  # a non-finite value, a failed write, a dead peer: the folder is resumable
BAD_INPUT = 2
INTERRUPTED = 130  # 128 + SIGINT, what shells report for a process stopped by Ctrl-C
BROKEN_PIPE = 141  # 128 + SIGPIPE: the output's reader went away

EXIT_CODES = {
    DONE: "done (training: completed, or stopped early by training.patience)",
    STOPPED: ("stopped on a non-finite loss, gradient or update, a failed write (a full "
              "disk), or another process of the run that died; the last good checkpoint is "
              "kept, resume once the cause is fixed"),
    BAD_INPUT: "bad config, command-line input or data file (one line on stderr)",
    INTERRUPTED: ("interrupted by Ctrl-C or SIGTERM: nothing written, or a run folder saying "
                  "interrupted (a checkpoint saved) that --resume completes"),
}


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit code 2."""


class EarlyExit(Exception):
    """The command is done before running, e.g. after printing its --help."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


Main = Callable[[list[str]], int]

# Whether a command in this process was stopped by a signal before writing anything
# (`Interrupted`): the process then ends without Python's shutdown (see `command`).
_stopped_midway = False
# Whether a command runs as this process's own command line (the `jaxlstm` console script,
# `python -m jaxlstm.cli`), not called from Python: it then exits once it returns.
_owns_process = False


def owns_process() -> bool:
    """Whether the running command is this process's own command line (see `command`)."""
    return _owns_process


def command(prog: str) -> Callable[[Main], Callable[[Sequence[str] | None], int]]:
    """Wraps a command's `main(argv) -> int` into one that never raises for expected failures.

    The wrapped `main(argv=None)` reads `sys.argv[1:]` when `argv` is None, and returns
    `BAD_INPUT` after one line for a `UsageError` or `ConfigError`, and `INTERRUPTED` after one
    line for a Ctrl-C that the command did not handle itself (during start-up: imports, config
    loading, before training's own handler is installed).
    """

    def wrap(main: Main) -> Callable[[Sequence[str] | None], int]:
        @functools.wraps(main)
        def wrapped(argv: Sequence[str] | None = None) -> int:
            global _owns_process
            _owns_process = _owns_process or argv is None
            code = _run(main, argv)
            if argv is None and _stopped_midway:  # this process's own command line
                # A signal stopped the run while XLA compiled or jax started up, before
                # anything was written: Python's shutdown can then crash in their threads
                # (seen: SIGSEGV after the line). Nothing is left to clean up: leave now.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            return code

        return wrapped

    def _run(main: Main, argv: Sequence[str] | None) -> int:
        global _stopped_midway
        try:
            return main(list(sys.argv[1:] if argv is None else argv))
        except EarlyExit as done:
            return done.status
        except UsageError as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return BAD_INPUT
        except RunFolderError as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return BAD_INPUT
        except ConfigError as err:
            print(f"config error: {err}", file=sys.stderr)
            return BAD_INPUT
        except DataError as err:
            print(f"data error: {err}", file=sys.stderr)
            return BAD_INPUT
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM where a command takes it
            _stopped_midway = _stopped_midway or isinstance(err, Interrupted)
            print(f"{prog}: interrupted by {describe(getattr(err, 'signal_name', 'SIGINT'))}.",
                  file=sys.stderr)
            return INTERRUPTED
        except BrokenPipeError:
            # The reader left (`jaxlstm --help | head`): stop quietly. stdout goes to
            # devnull so that flushing it at exit does not raise again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return BROKEN_PIPE

    return wrap
