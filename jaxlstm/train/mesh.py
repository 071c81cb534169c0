"""Data parallelism on a device mesh: where the state and the batches live.

    mesh       Mesh(all devices, ("data",))      one axis over every device of every process
    state      NamedSharding(mesh, P())          replicated: each device holds all of it
    batch      NamedSharding(mesh, P("data"))    split on the batch axis, rows in order

XLA's partitioner does the rest: each device runs the step on its rows, and the gradients are
averaged by the all-reduce it inserts where the loss averages over the batch, so the step is
the single-device step up to the order of that sum. This is what big_vision, maxtext and the
Flax examples do.

Each process builds only its own rows of a global batch (`local_rows`), and
`jax.make_array_from_process_local_data` assembles the global array from them. Tasks draw a
whole batch from (seed, step) and hand each process its rows, so the data, and therefore the
run, does not depend on how many processes or devices there are.

`Mesh(devices, ("data",))` has Auto axes; `jax.make_mesh` would default to Explicit axes in
jax 0.10, which changes how sharding shows up in types.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlstm.train.config import ConfigError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """The mesh over every device, and how states and batches are laid out on it."""

    mesh: Mesh

    @classmethod
    def over_all_devices(cls) -> DataParallel:
        return cls(Mesh(np.array(jax.devices()), ("data",)))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def batch_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec("data"))

    @property
    def device_count(self) -> int:
        return self.mesh.size

    def check_batch_size(self, batch_size: int, key: str = "training.batch_size", *,
                         grad_accum: int = 1) -> None:
        """ConfigError unless `batch_size` splits evenly over the devices and, with gradient
        accumulation over `grad_accum` micro-batches, each micro-batch does too: then every
        device holds B / (K x devices) rows of each micro-batch, all from its own rows
        (`step._accumulated_grads`), and splitting the batch moves nothing between devices."""
        if batch_size % self.device_count:
            raise ConfigError(
                f"{key}: expected a multiple of the number of devices ({self.device_count}: "
                f"{jax.process_count()} process(es) x {jax.local_device_count()} device(s)), "
                f"got {batch_size}.")
        if batch_size % (grad_accum * self.device_count):
            raise ConfigError(
                f"{key}: expected a multiple of training.grad_accum x the number of devices "
                f"({grad_accum} x {self.device_count} = {grad_accum * self.device_count}), so "
                f"that each micro-batch splits over the devices, got {batch_size}.")

    def local_rows(self, batch_size: int) -> slice:
        """The rows of a global batch of `batch_size` that this process's devices hold."""
        indices = self.batch_sharding.addressable_devices_indices_map((batch_size,))
        starts = [index[0].start or 0 for index in indices.values()]
        stops = [batch_size if index[0].stop is None else index[0].stop
                 for index in indices.values()]
        rows = slice(min(starts), max(stops))
        if rows.stop - rows.start != batch_size // jax.process_count():
            raise ValueError(f"this process's devices hold rows {rows.start}:{rows.stop} of "
                             f"{batch_size}, not one contiguous block per process.")
        return rows

    def global_batch(self, local: Batch, batch_size: int) -> Batch | dict[str, jax.Array]:
        """The global batch of `batch_size` rows from this process's rows `local`.

        In one process the NumPy batch is returned as it is: the jitted step's `in_shardings`
        split it over the devices on the way in, a few percent faster per step than
        assembling the array first."""
        if jax.process_count() == 1:
            return local
        return self._assemble(local, batch_size)

    def _assemble(self, local: Batch, batch_size: int) -> dict[str, jax.Array]:
        sharding = self.batch_sharding
        return {key: jax.make_array_from_process_local_data(
                    sharding, value, (batch_size, *np.shape(value)[1:]))
                for key, value in local.items()}

    def eval_batch(self, batch: Batch) -> dict[str, jax.Array]:
        """A held-out batch (every process holds all of it): split over the devices when its
        rows divide evenly, else replicated (a last partial batch, a small held-out set):
        either way the metrics are the whole batch's."""
        rows = len(next(iter(batch.values())))
        if rows % self.device_count == 0:
            local = self.local_rows(rows)
            return self._assemble({k: v[local] for k, v in batch.items()}, rows)
        return {key: jax.make_array_from_process_local_data(self.replicated, value)
                for key, value in batch.items()}

    def describe(self) -> dict[str, Any]:
        """Where a run ran, for `summary.json`."""
        return {"processes": jax.process_count(), "devices": self.device_count,
                "local_devices": jax.local_device_count(),
                "mesh": dict(self.mesh.shape), "platform": jax.devices()[0].platform,
                "device": jax.devices()[0].device_kind}


# Cached per mesh (a DataParallel is equal to another over the same devices), so every run on
# the same devices reuses one compiled step.
@functools.cache
def train_step(parallel: DataParallel) -> Any:
    """`step.train_step` jitted for the mesh: state replicated and donated, batch split."""
    from jaxlstm.train import step

    return jax.jit(step.train_step, in_shardings=(parallel.replicated, parallel.batch_sharding),
                   out_shardings=(parallel.replicated, parallel.replicated), donate_argnums=0)


@functools.cache
def eval_step(parallel: DataParallel) -> Any:
    """`step.eval_step` jitted for the mesh: metrics of the whole batch, replicated. Held-out
    batches may be replicated (see `eval_batch`), so their layout comes with them."""
    from jaxlstm.train import step

    return jax.jit(step.eval_step, out_shardings=parallel.replicated)


def init_state(parallel: DataParallel, create: Any) -> Any:
    """`create()` (a function building the train state) run once, laid out replicated on the
    mesh: every process computes the same values from the same seed."""
    return jax.jit(create, out_shardings=parallel.replicated)()
