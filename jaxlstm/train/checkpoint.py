"""Checkpoints with orbax: the train state's arrays every N steps and at the end, last K kept.

A checkpoint holds the step, params, optimizer state and PRNG key. Data order needs nothing
more: every task's batch is a pure function of (seed, step). Saves are waited for, so a step
whose checkpoint was reported saved is on disk, and a later failure cannot touch it.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxlstm.train.step import TrainState


def _arrays(state: TrainState) -> dict[str, Any]:
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state,
            "rng": state.rng}


class Checkpoints:
    """An orbax `CheckpointManager` over `<run_dir>/checkpoints`, keeping the last `keep`."""

    def __init__(self, directory: str | os.PathLike, keep: int):
        self.directory = os.path.abspath(os.fspath(directory))
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, state: TrainState) -> int:
        step = int(state.step)
        if step not in self._manager.all_steps():
            self._manager.save(step, args=ocp.args.StandardSave(_arrays(state)))
            self._manager.wait_until_finished()
        return step

    def restore(self, state: TrainState, step: int | None = None) -> TrainState:
        """`state` with the arrays of checkpoint `step` (default: the latest)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _arrays(state))
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return state.replace(**restored)

    def close(self) -> None:
        self._manager.close()
