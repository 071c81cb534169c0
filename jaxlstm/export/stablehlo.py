"""StableHLO: `jax.export`'s serialised program, for XLA on CPU, cuda and tpu.

The exported file is `Exported.serialize()`'s bytes: the StableHLO module with the trained
params as constants, its symbolic shapes ("batch", "time") and its platforms. Any JAX (and the
XLA runtimes that read jax.export's format) calls it without jaxlstm or the run's config:

    exported = jax.export.deserialize(open("model.stablehlo", "rb").read())
    outputs = exported.call(inputs, lengths)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax import export

from jaxlstm.export.functions import Signature

FILE = "model.stablehlo"
PLATFORMS = ("cpu", "cuda", "tpu")


def input_specs(signature: Signature, *, symbols: dict[str, Any] | None = None
                ) -> list[jax.ShapeDtypeStruct]:
    """The signature's inputs as `jax.ShapeDtypeStruct`s, named dimensions symbolic (one
    shared symbol per name)."""
    names = sorted({d for t in signature.inputs for d in t.shape if isinstance(d, str)})
    if symbols is None:
        symbols = dict(zip(names, export.symbolic_shape(", ".join(names)), strict=True)) \
            if names else {}
    return [jax.ShapeDtypeStruct(tuple(symbols.get(d, d) if isinstance(d, str) else d
                                       for d in t.shape), np.dtype(t.dtype))
            for t in signature.inputs]


def export_function(function: Callable[..., Any], signature: Signature,
                    platforms: tuple[str, ...] = PLATFORMS) -> bytes:
    """`function` lowered for `platforms` with the signature's symbolic shapes, serialised."""
    exported = export.export(jax.jit(function), platforms=platforms)(*input_specs(signature))
    return bytes(exported.serialize())


def load(data: bytes) -> Callable[..., Any]:
    """The exported program's `call`: its inputs in the signature's order, arrays or numpy."""
    return jax.jit(export.deserialize(bytearray(data)).call)
