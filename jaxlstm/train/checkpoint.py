"""Checkpoints with orbax: the train state's arrays every N steps and at the end, last K kept.

A checkpoint holds the step, params, optimizer state and PRNG key, plus an `integrity` record:
a CRC-32 of every array's bytes. Data order needs nothing more: every task's batch is a pure
function of (seed, step). Saves are waited for, so a step whose checkpoint was reported saved
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

Several processes: every process calls `save` and the restores (orbax coordinates them and
process 0 writes), and restores target the layout of the state passed in (its arrays'
shardings), so a checkpoint written on 4 devices resumes on 1, or on 2 hosts, and vice versa.
The state is replicated, so each process checks the CRCs on its own copy; only process 0
moves folders.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import zlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxlstm.train.distributed import is_primary, sync
from jaxlstm.train.step import TrainState, tree_is_finite

_ORBAX_METADATA = "_CHECKPOINT_METADATA"  # written last, when a step's folder is complete
_TMP_MARK = ".orbax-checkpoint-tmp"


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


class Checkpoints:
    """An orbax `CheckpointManager` over `<run_dir>/checkpoints`, keeping the last `keep`."""

    def __init__(self, directory: str | os.PathLike, keep: int, *, read_only: bool = False):
        self.directory = os.path.abspath(os.fspath(directory))
        self.aside = os.path.join(os.path.dirname(self.directory), "unusable_checkpoints")
        self._saved_here: set[int] = set()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                                 read_only=read_only),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

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

    def save(self, state: TrainState) -> int:
        """Saves `state` under its step (once); NonFiniteState if it holds NaN or inf."""
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
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(arrays), integrity=ocp.args.JsonSave(integrity)))
        self._manager.wait_until_finished()
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

    def _move_aside(self, name: str) -> None:
        if not is_primary():
            return
        os.makedirs(self.aside, exist_ok=True)
        target, n = os.path.join(self.aside, name), 1
        while os.path.exists(target):
            target, n = os.path.join(self.aside, f"{name}.{n}"), n + 1
        shutil.move(os.path.join(self.directory, name), target)

    def close(self) -> None:
        self._manager.close()


def report_skipped(skipped: list[Skipped], restored_step: int | None) -> None:
    """One line per checkpoint passed over, on stderr."""
    start = f"step {restored_step}" if restored_step is not None else "step 0"
    for item in skipped:
        print(f"skipped checkpoint {item.name}: {item.reason}; moved to "
              f"unusable_checkpoints/, resuming from {start}.", file=sys.stderr)
