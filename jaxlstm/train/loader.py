"""Training batches computed ahead in background threads, and the loader's position.

    batches = TrainBatches(task, seed=0, batch_size=64, rows=rows, steps=1500, start=step)
    batch = next(batches)        # task.train_batch(seed, step, 64, rows), then step + 1
    batches.state()              # {"next_index": step}: saved with every checkpoint
    batches.close()

Grain does the work: `MapDataset.range(steps).map(batch_of_step)` is the run's sequence of
batches, and `to_iter_dataset(ReadOptions(num_threads, prefetch_buffer_size))` computes the
next `prefetch` of them in `threads` background threads while the devices train on the current
one, so reading files (or generating a built-in task's data) overlaps training. The iterator's
state is Grain's own (`get_state` / `set_state`): the index of the next batch to hand out,
which is the next step. Batches are pure functions of (seed, step), so that index is all the
position there is; it is still saved with each checkpoint and checked when a run resumes, so a
loader out of step with the model is an error instead of a silent shift of the data.

`prefetch=0` computes each batch in the training thread when it is asked for (the same
batches, nothing ahead).
"""

from __future__ import annotations

from typing import Any

import numpy as np

Batch = dict[str, np.ndarray]


class LoaderStateMismatch(ValueError):
    """A checkpoint's loader position does not match its step."""


class TrainBatches:
    """The training batches of steps [start, steps), in order, computed ahead.

    Args:
        task: any task (`jaxlstm.tasks.base.Task`).
        seed, batch_size, rows: as `task.train_batch` takes them (rows: this process's).
        steps: the run's total steps (the sequence's length).
        start: the first step to hand out (a resumed run's step).
        threads: background threads computing batches.
        prefetch: batches computed ahead (0: none, each is computed when asked for).
    """

    def __init__(self, task: Any, *, seed: int, batch_size: int, rows: slice | None,
                 steps: int, start: int = 0, threads: int = 1, prefetch: int = 2):
        import grain

        def batch_of_step(step: int) -> Batch:
            return task.train_batch(seed, int(step), batch_size, rows=rows)

        options = grain.ReadOptions(num_threads=threads if prefetch else 0,
                                    prefetch_buffer_size=prefetch)
        dataset = grain.MapDataset.range(steps).map(batch_of_step)
        self._iterator = dataset.to_iter_dataset(options).__iter__()
        self.set_state({"next_index": int(start)})

    def __iter__(self) -> TrainBatches:
        return self

    def __next__(self) -> Batch:
        return next(self._iterator)

    def state(self) -> dict[str, int]:
        """Grain's iterator state: {"next_index": the next step to hand out}."""
        return {"next_index": int(self._iterator.get_state()["next_index"])}

    def set_state(self, state: dict[str, Any]) -> None:
        """Moves to a saved position (a checkpoint's), dropping what was computed ahead."""
        self._iterator.set_state({"next_index": int(state["next_index"])})

    def restore(self, state: dict[str, Any] | None, step: int) -> None:
        """Moves to checkpoint `step`'s saved position (None: a checkpoint from before the
        loader saved one, so the step's own), which must be that step.

        Raises:
            LoaderStateMismatch: the saved position is not `step`.
        """
        if state is not None and int(state.get("next_index", -1)) != step:
            raise LoaderStateMismatch(f"the checkpoint of step {step} holds loader position "
                                      f"{state.get('next_index')!r}, expected {step}")
        self.set_state({"next_index": step})

    def close(self) -> None:
        """Stops the background threads."""
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()
