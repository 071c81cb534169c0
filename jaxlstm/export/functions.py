"""The functions an exported model computes, with the trained params as constants.

Two shapes of one trained model (`jaxlstm.train.model.Model`, any API, any cell stack or
block stack), both plain functions of arrays, so that any exporter can trace them:

* **sequence**: `outputs = f(inputs, lengths)`, the whole-sequence model as training ran it
  (`Model.apply` in evaluation mode): inputs (B, T, I) float32, lengths (B,) int32, the valid
  steps of each right-padded row; outputs (B, T, O) for a task read out at every step, (B, 1,
  O) for one read out at the last valid step.
* **step**: `(y_t, *state) = f(x_t, *state)`, one time step for streaming (the decoding `step`
  of the layer protocol, `jaxlstm.decode`), with the state as explicit inputs and outputs: x_t
  (B, I); y_t (B, O), the head's output had the sequence ended at this step; the state as a
  flat list of arrays, each (B, ...), in the order `StateLeaf` names them. A stream starts
  from each leaf's `initial` value and feeds each step's state into the next.

B (and T) are symbolic in the exported programs: `Signature` gives them names ("batch",
"time") that the formats keep. The sequence computes in the run's `model.dtype`, as training
evaluated it; the step in float32, as `jaxlstm sample` decodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.train.model import Model, decoder, decoder_initial_state

Array = jax.Array

BATCH, TIME = "batch", "time"
WHAT = ("sequence", "step")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, shape (a dimension is an int or a symbolic name) and
    dtype name."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclasses.dataclass(frozen=True)
class StateLeaf(TensorSpec):
    """One array of the recurrent state, and the value every element starts from."""

    initial: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "initial": self.initial}


@dataclasses.dataclass(frozen=True)
class Signature:
    """What an exported function takes and returns, in order; `state` names the state's part
    of the step's inputs (after x_t) and outputs (after y_t)."""

    what: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    state: tuple[StateLeaf, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs],
                "state": [leaf.to_json() for leaf in self.state]}


def sequence_function(params: Any, model: Model) -> tuple[Callable[..., Array], Signature]:
    """`f(inputs, lengths) -> outputs` for `model` with `params`, and its signature."""
    spec = model.spec
    key = jax.random.PRNGKey(0)  # evaluation mode draws nothing; apply still takes a key

    def sequence(inputs: Array, lengths: Array) -> Array:
        return model.apply(params, inputs, lengths, key, False)

    steps = TIME if spec.readout == "every" else 1
    signature = Signature(
        "sequence",
        (TensorSpec("inputs", (BATCH, TIME, spec.input_size), "float32"),
         TensorSpec("lengths", (BATCH,), "int32")),
        (TensorSpec("outputs", (BATCH, steps, spec.output_size), "float32"),))
    return sequence, signature


def _uniform_value(leaf: np.ndarray, name: str) -> float:
    """The one value every element of an initial-state array holds."""
    values = np.unique(leaf)
    if values.size != 1:
        raise ValueError(f"the initial state's {name} is not one repeated value; a streaming "
                         "export describes it by one.")
    return float(values[0])


def step_function(params: Any, model: Model) -> tuple[Callable[..., tuple[Array, ...]],
                                                      Signature]:
    """`f(x_t, *state) -> (y_t, *state)` for `model` with `params`, and its signature.

    Raises:
        ValueError: for a bidirectional model (its backward direction reads the future).
    """
    spec = model.spec
    try:
        _, step, w, b = decoder(params, model)
    except ValueError:  # a bidirectional stack
        raise ValueError("a step export needs a unidirectional model (a backward direction "
                         "reads the future); this one is bidirectional.") from None
    start = decoder_initial_state(params, (1,), model)
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(start)
    state = []
    for path, leaf in paths_and_leaves:
        name = "state." + jax.tree_util.keystr(path, simple=True, separator=".")
        state.append(StateLeaf(name, (BATCH, *leaf.shape[1:]), str(leaf.dtype),
                               _uniform_value(np.asarray(leaf), name)))

    def step_fn(x_t: Array, *leaves: Array) -> tuple[Array, ...]:
        y, new_state = step(x_t, jax.tree.unflatten(treedef, leaves))
        out = y @ w + jnp.reshape(b, (1, -1))
        return (out.astype(jnp.float32), *jax.tree.leaves(new_state))

    signature = Signature(
        "step",
        (TensorSpec("x", (BATCH, spec.input_size), "float32"),
         *(TensorSpec(leaf.name, leaf.shape, leaf.dtype) for leaf in state)),
        (TensorSpec("y", (BATCH, spec.output_size), "float32"),
         *(TensorSpec(leaf.name + ".next", leaf.shape, leaf.dtype) for leaf in state)),
        tuple(state))
    return step_fn, signature


def model_function(params: Any, model: Model, what: str) -> tuple[Callable[..., Any],
                                                                   Signature]:
    """`sequence_function` or `step_function`, by `what`."""
    if what not in WHAT:
        raise ValueError(f"what must be one of {', '.join(WHAT)}, got {what!r}.")
    return (sequence_function if what == "sequence" else step_function)(params, model)
