"""Ctrl-C (SIGINT) and SIGTERM over a run's whole life, from its config to its summary.

SLURM sends SIGTERM before it kills a job, a user presses Ctrl-C at any moment: during the
imports, while XLA compiles, in the middle of a step, while the plots are drawn. Whatever the
moment, a run ends in one of two states, never a third:

- **nothing written**: a signal before the run folder is claimed stops the run at once
  (`Interrupted`, a `KeyboardInterrupt`): there is nothing to save and no folder is left;
- **a folder that says `interrupted`**: once the folder is being written a signal is only
  noted (`RunSignals.requested`), and the run stops at its next safe point: after preparing
  the folder, after a training step (saving a checkpoint first), or between the last
  evaluations and files. Its `summary.json` then says `interrupted`, and `--resume` goes on
  from the last checkpoint (the finishing work included).

Once the summary says how the run ended (`RunSignals.over`), a signal changes nothing: the
run is over, and saying `interrupted` then would be false.

Only the main thread can install signal handlers; elsewhere (a run started from a thread)
signals stay the caller's business, as with any Python code.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Self

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A signal arrived before anything was written: the run stopped at once."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name

    def __str__(self) -> str:
        return f"interrupted by {describe(self.signal_name)}"


def describe(signal_name: str) -> str:
    """'Ctrl-C' for SIGINT (what a user pressed), the signal's name otherwise."""
    return "Ctrl-C" if signal_name == "SIGINT" else signal_name


class RunSignals:
    """SIGINT and SIGTERM handlers for one run, in three phases (see the module docstring):
    raising `Interrupted` at once, then noting the signal (`defer`), then ignoring it
    (`over`). A context manager; the previous handlers come back on exit.

        with RunSignals() as signals:
            ...                 # building, compiling: a signal raises Interrupted
            signals.defer()     # about to write the run folder
            ...                 # a signal sets signals.requested; check it at safe points
            signals.over()      # the summary says how the run ended
    """

    def __init__(self, *, ignore_once_over: bool = False) -> None:
        """`ignore_once_over`: on exit, once the run is `over`, leave SIGINT and SIGTERM
        ignored instead of restoring the previous handlers: for a process that only exits
        afterwards (the `jaxlstm` command), so that a signal while Python shuts down does not
        turn a finished run's exit code into a kill."""
        self.ignore_once_over = ignore_once_over
        self.signal_name = ""  # the first signal noted after `defer`
        self._deferred = False
        self._over = False
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a signal asked the run to stop since `defer` (and before `over`)."""
        return bool(self.signal_name)

    def request(self, signal_name: str = "SIGINT") -> None:
        """Notes a stop as a signal would (tests act out a Ctrl-C this way)."""
        if not self.signal_name:
            self.signal_name = signal_name

    def defer(self) -> None:
        """From now on a signal is noted, not raised: the run folder is about to be written,
        and must be left saying `interrupted`, not half-made."""
        self._deferred = True

    def over(self) -> None:
        """From now on a signal is ignored: the summary says how the run ended."""
        self._over = True

    def _handle(self, signum: int, frame: Any) -> None:
        if self._over:
            return
        name = signal.Signals(signum).name
        if not self._deferred:
            raise Interrupted(name)
        self.request(name)

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            if self._over and self.ignore_once_over:
                previous = signal.SIG_IGN
            # None: the handler was not set from Python; the default is the closest.
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()
