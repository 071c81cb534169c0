"""Checkpoints with orbax: the train state's arrays every N steps and at the end, last K kept.

A checkpoint holds the step, params, optimizer state and PRNG key, plus an `integrity` record:
a CRC-32 of every array's bytes, and the data loader's position (`loader`, Grain's iterator
state: the next step's batch), which a resume checks against the step: every task's batch is
a pure function of (seed, step), so the two must agree. Saves are waited for, so a step whose checkpoint was reported saved
is on disk, and a later failure cannot touch it.

What can go wrong on disk, and what happens:
- a kill during a write leaves orbax's temporary folder (`<step>.orbax-checkpoint-tmp-*`) or a
  step folder without orbax's metadata: neither is a checkpoint;
- flipped bytes in a data file can restore without any error from orbax (compressed chunks do
  not always fail to decode), which is why the CRCs are kept and checked;
- a non-finite state is never saved (`NonFiniteState`), so the newest checkpoint is a good one.

`restore_newest_good` restores the newest checkpoint that restores cleanly, and only then moves
the unusable newer ones aside (into `<run_dir>/unusable_checkpoints/`, nothing is deleted), so a
resume that finds nothing usable changes nothing.

The runner keeps a second `Checkpoints` over `<run_dir>/best_checkpoint/` (the best validation
state), with `keep=None` and its own pruning (`keep_newest`, `move_aside_newer`): see
`jaxlstm.train.run` for why its retention follows the regular checkpoints.

Several processes: every process calls `save` and the restores (orbax coordinates them and
process 0 writes), and restores target the layout of the state passed in (its arrays'
shardings), so a checkpoint written on 4 devices resumes on 1, or on 2 hosts, and vice versa.
The state is replicated, so each process checks the CRCs on its own copy; only process 0
moves folders.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import shutil
import sys
import zlib
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxlstm.train.distributed import is_primary, sync
from jaxlstm.train.step import TrainState, tree_is_finite

_ORBAX_METADATA = "_CHECKPOINT_METADATA"  # written last, when a step's folder is complete
_TMP_MARK = ".orbax-checkpoint-tmp"


class _Manager(ocp.CheckpointManager):
    """orbax's manager without its preemption check. The runner stops on SIGTERM itself, at
    the same step on every process (`jaxlstm.train.interrupts`), with JAX's preemption service
    off (`jaxlstm.train.distributed.start`); with that service off, orbax 0.12 treats every
    step as "no preemption", but orbax before it raised on a multi-process save
    ("Preemption sync manager has not been initialized"), and the `onnx` extra's jax2onnx
    installs orbax 0.11.36. This answers as orbax 0.12 does, on any version."""

    def reached_preemption(self, step: int) -> bool:
        return False


class NonFiniteState(ValueError):
    """A state holding NaN or inf: it is not saved."""


class NoUsableCheckpoint(RuntimeError):
    """Checkpoints exist but none restores cleanly."""


@dataclasses.dataclass
class Skipped:
    """A checkpoint that was passed over, and why."""

    name: str
    reason: str


def state_arrays(state: TrainState) -> dict[str, Any]:
    """The arrays of the train state: what a checkpoint holds."""
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state,
            "rng": state.rng}


def host_copy(tree: Any) -> Any:
    """`tree`'s replicated arrays as NumPy arrays, from this process's own copy (a global
    array spanning other processes cannot be fetched whole, but each holds all of it)."""

    def fetch(leaf: Any) -> np.ndarray:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if not leaf.is_fully_replicated:
                raise ValueError(f"host_copy: expected replicated arrays, got {leaf.sharding}")
            leaf = leaf.addressable_data(0)
        return np.asarray(jax.device_get(leaf))

    return jax.tree.map(fetch, tree)


def _checksums(tree: Any) -> dict[str, int]:
    leaves = jax.tree_util.tree_leaves_with_path(host_copy(tree))
    return {jax.tree_util.keystr(path): zlib.crc32(np.ascontiguousarray(leaf).tobytes())
            for path, leaf in leaves}


def _abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings: what a restore fills, laid out like `tree`."""
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(
        np.shape(leaf), leaf.dtype, sharding=getattr(leaf, "sharding", None)), tree)


_jit_all_finite = jax.jit(tree_is_finite)


def all_finite(tree: Any) -> bool:
    """Whether every floating-point array in `tree` is free of NaN and inf."""
    return bool(_jit_all_finite(tree))


@contextlib.contextmanager
def _absl_warnings_silenced(level: int = logging.ERROR) -> Iterator[None]:
    # orbax warns (through absl logging) that a read-only manager is read-only and keeps
    # everything; on a command's stderr that is noise next to its one line.
    logger = logging.getLogger("absl")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


class _NotAboutFailedSaves(logging.Filter):
    """Drops log records about a save that failed (orbax's threads go on reporting it, some
    at exit): those mentioning its folder, and those whose exception is the same failure
    (the `errno` raised, e.g. ENOSPC, as an asyncio future's unretrieved exception)."""

    def __init__(self) -> None:
        super().__init__()
        self.folders: set[str] = set()
        self.errnos: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        text = record.getMessage() + (str(exc) if exc is not None else "")
        if any(folder in text for folder in self.folders):
            return False
        return not (isinstance(exc, OSError) and exc.errno in self.errnos)


_FAILED_SAVES = _NotAboutFailedSaves()


def _quiet_about(folder: str, error: OSError) -> None:
    """From now on, orbax's and asyncio's log lines about this failed save are dropped: the
    OSError raised says it once, in one line."""
    if not _FAILED_SAVES.folders:
        logging.getLogger("absl").addFilter(_FAILED_SAVES)
        logging.getLogger("asyncio").addFilter(_FAILED_SAVES)
    _FAILED_SAVES.folders.add(folder)
    if error.errno is not None:
        _FAILED_SAVES.errnos.add(error.errno)


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


@contextlib.contextmanager
def _write_errors_as_os_errors(directory: str) -> Iterator[None]:
    """Failed writes as `OSError`: tensorstore, under orbax, reports a full disk as
    `ValueError("RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']")`,
    and the runner stops cleanly (status "write_failed") on an `OSError`, not on any error
    of any library. Other errors go through unchanged."""
    try:
        yield
    except ValueError as err:  # (XLA's out-of-memory RESOURCE_EXHAUSTED is a RuntimeError)
        text = str(err)
        code = _OS_ERROR_CODE.search(text)
        if code is None and "No space left on device" not in text:
            raise
        number = int(code.group(1)) if code else errno.ENOSPC
        raise OSError(number, os.strerror(number), directory) from err


def _folder_bytes(folder: str) -> int:
    """What the files under `folder` take on disk (their allocated blocks)."""
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(parent, name)).st_blocks * 512
    return total


class Checkpoints:
    """An orbax `CheckpointManager` over `<run_dir>/checkpoints`, keeping the last `keep` (all
    of them for None: the caller prunes, see `keep_newest`).

    `aside` is where unusable checkpoints are moved (default: `unusable_checkpoints/` beside
    the directory)."""

    def __init__(self, directory: str | os.PathLike, keep: int | None, *,
                 read_only: bool = False, aside: str | os.PathLike | None = None):
        self.directory = os.path.abspath(os.fspath(directory))
        self.aside = (os.path.join(os.path.dirname(self.directory), "unusable_checkpoints")
                      if aside is None else os.path.abspath(os.fspath(aside)))
        self._saved_here: set[int] = set()
        with _absl_warnings_silenced():
            self._manager = _Manager(
                self.directory,
                options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                                     read_only=read_only),
            )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """The steps of the saved checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def _candidates(self) -> tuple[list[int], list[str]]:
        """Step folders, newest first, and the leftovers of interrupted writes."""
        if not os.path.isdir(self.directory):
            return [], []
        steps, leftovers = [], []
        for name in os.listdir(self.directory):
            if name.isdigit():
                steps.append(int(name))
            elif _TMP_MARK in name:
                leftovers.append(name)
        return sorted(steps, reverse=True), leftovers

    def save(self, state: TrainState, loader: dict[str, Any] | None = None) -> int:
        """Saves `state` under its step (once), with the data loader's position `loader`
        when given; NonFiniteState if it holds NaN or inf."""
        step = int(state.step)
        if step in self._saved_here:
            return step
        arrays = state_arrays(state)
        if not all_finite(arrays):
            raise NonFiniteState(f"the state at step {step} holds NaN or inf; not saved.")
        if step in self._manager.all_steps():
            raise FileExistsError(f"checkpoint {step} already exists in {self.directory}; "
                                  "it belongs to another run.")
        integrity = {"step": step, "crc32": _checksums(arrays)}
        items = {"state": ocp.args.StandardSave(arrays),
                 "integrity": ocp.args.JsonSave(integrity)}
        if loader is not None:
            items["loader"] = ocp.args.JsonSave(loader)
        self._check_room(arrays)
        try:
            # orbax logs each of its threads' failures with a traceback; the one OSError
            # raised here says it in one line.
            with _absl_warnings_silenced(logging.CRITICAL), \
                    _write_errors_as_os_errors(self.directory):
                self._manager.save(step, args=ocp.args.Composite(**items))
                self._manager.wait_until_finished()
        except OSError as err:
            _quiet_about(self.directory, err)
            self._discard_unfinished(step)
            raise
        self._saved_here.add(step)
        return step

    def _restore_checked(self, state: TrainState, step: int) -> TrainState:
        folder = os.path.join(self.directory, str(step))
        if not os.path.isfile(os.path.join(folder, _ORBAX_METADATA)):
            raise ValueError("unfinished write (no orbax metadata)")
        abstract = _abstract(state_arrays(state))
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), integrity=ocp.args.JsonRestore()))
        arrays, integrity = restored["state"], restored["integrity"]
        if _checksums(arrays) != integrity.get("crc32"):
            raise ValueError("its arrays do not match their checksums (corrupted data)")
        if int(arrays["step"]) != step:
            raise ValueError(f"it holds step {int(arrays['step'])}")
        if not all_finite(arrays):
            raise ValueError("it holds NaN or inf")
        return state.replace(**arrays)

    def loader_state(self, step: int) -> dict[str, Any] | None:
        """The data loader's position saved with checkpoint `step` (`jaxlstm.train.loader`),
        or None for a checkpoint saved without one."""
        if not os.path.isdir(os.path.join(self.directory, str(step), "loader")):
            return None
        restored = self._manager.restore(step, args=ocp.args.Composite(
            loader=ocp.args.JsonRestore()))
        return dict(restored["loader"])

    def restore(self, state: TrainState, step: int | None = None) -> TrainState:
        """`state` with the arrays of checkpoint `step` (default: the latest), checked."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return self._restore_checked(state, step)

    def restore_newest_good(self, state: TrainState) -> tuple[TrainState | None, list[Skipped]]:
        """The newest checkpoint that restores cleanly, and the newer ones passed over.

        Returns (None, []) when there are no checkpoints. The passed-over ones (and leftovers
        of interrupted writes) are moved to `unusable_checkpoints/` once a good one is found.

        Raises:
            NoUsableCheckpoint: there are checkpoints, but none restores; nothing is moved.
        """
        steps, leftovers = self._candidates()
        skipped: list[Skipped] = []
        for step in steps:
            try:
                restored = self._restore_checked(state, step)
            except Exception as err:  # noqa: BLE001 - orbax and tensorstore raise many types
                reason = " ".join(str(err).split("\n")[0].split())[:160] or type(err).__name__
                skipped.append(Skipped(str(step), reason))
                continue
            for name in [s.name for s in skipped] + leftovers:
                self._move_aside(name)
            sync("checkpoints moved aside")
            skipped += [Skipped(name, "left by an interrupted write") for name in leftovers]
            self._manager.reload()
            return restored, skipped
        if steps:
            reasons = "; ".join(f"{s.name}: {s.reason}" for s in skipped)
            raise NoUsableCheckpoint(f"no checkpoint in {self.directory} restores ({reasons}).")
        for name in leftovers:
            self._move_aside(name)
        sync("checkpoint leftovers moved aside")
        self._manager.reload()
        return None, [Skipped(name, "left by an interrupted write") for name in leftovers]

    def move_aside_newer(self, step: int, reason: str) -> list[Skipped]:
        """Moves the checkpoints newer than `step`, and leftovers of interrupted writes, to
        `aside`; returns them, the newer ones with `reason`."""
        steps, leftovers = self._candidates()
        newer = [str(s) for s in steps if s > step]
        for name in newer + leftovers:
            self._move_aside(name)
        sync("newer checkpoints moved aside")
        self._manager.reload()
        return ([Skipped(name, reason) for name in newer]
                + [Skipped(name, "left by an interrupted write") for name in leftovers])

    def keep_newest(self) -> None:
        """Deletes every checkpoint but the newest (every process calls it; orbax deletes on
        process 0 and waits for the others)."""
        for step in self.all_steps()[:-1]:
            self._manager.delete(step)

    def _move_aside(self, name: str) -> None:
        if not is_primary():
            return
        os.makedirs(self.aside, exist_ok=True)
        target, n = os.path.join(self.aside, name), 1
        while os.path.exists(target):
            target, n = os.path.join(self.aside, f"{name}.{n}"), n + 1
        shutil.move(os.path.join(self.directory, name), target)

    def _check_room(self, arrays: Any) -> None:
        """OSError (ENOSPC) when the file system cannot hold one more checkpoint, judged by
        the newest one on disk (or the arrays' bytes and a margin for orbax's metadata),
        before orbax starts: a save that runs out of room midway fails in many threads at
        once, and tensorstore's writes still in flight then print tracebacks as they end.
        On one process only: a save is a collective, and every process must start it."""
        if jax.process_count() > 1:
            return
        steps = self.all_steps()
        needed = (_folder_bytes(os.path.join(self.directory, str(steps[-1]))) if steps else
                  sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(arrays)) + 96 * 1024)
        free = shutil.disk_usage(self.directory).free
        if free < needed * 1.25:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (a checkpoint needs "
                          f"about {needed // 1024} KiB; {free // 1024} KiB free)",
                          self.directory)

    def _discard_unfinished(self, step: int) -> None:
        """Removes what a failed save of `step` left (`<step>.orbax-checkpoint-tmp...`):
        it can never restore, and on a full disk its space lets the summary say how the
        run ended. Never touches a finished checkpoint."""
        for name in self._candidates()[1]:
            if name.startswith(f"{step}{_TMP_MARK}"):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def close(self) -> None:
        with _absl_warnings_silenced(logging.CRITICAL), \
                _write_errors_as_os_errors(self.directory):
            self._manager.close()


def report_skipped(skipped: list[Skipped], restored_step: int | None) -> None:
    """One line per checkpoint passed over, on stderr."""
    start = f"step {restored_step}" if restored_step is not None else "step 0"
    for item in skipped:
        print(f"skipped checkpoint {item.name}: {item.reason}; moved to "
              f"unusable_checkpoints/, resuming from {start}.", file=sys.stderr)
