"""What the benchmark times: jaxlstm, its Flax modules, and the anchors it is compared against.

Every implementation computes the same thing at a `Size`: the outputs (B, T, H) of one LSTM layer
for a batch-major input (forward), or the gradient of sum(outputs) w.r.t. all its parameters and
the input (fwd_bwd). `Impl.prepare(size, pass_name)` builds parameters and input, compiles (JAX),
and returns a zero-argument call that returns only once its result is ready.

JAX anchors are an `apply(params, xs) -> hs` function; one code path (`_prepare_jax`) jits and
differentiates all of them, so they differ only in the model they call. Optional packages are
imported inside their builders, so a missing one skips its rows instead of breaking the import.

`jaxlstm_linen` and `jaxlstm_nnx` run jaxlstm's own core through its full-sequence Flax modules
(`jaxlstm.flax.linen.LSTM`, `jaxlstm.flax.nnx.LSTM`) on the `jaxlstm` row's very arrays, each
timed the way its Flax anchor is: they measure what the module layer costs, not an alternative.
`jaxlstm_linen_cell` and `jaxlstm_nnx_cell` drop jaxlstm's cells into the Flax anchors' own
`nn.RNN` / `nnx.RNN` (the drop-in use), again on the same arrays.

The xLSTM rows (`XLSTM_KEYS`) time another function, one xLSTM cell with `XLSTM_HEADS` heads at
the same (B, T, I, H): jaxlstm's sLSTM (`slstm`), its mLSTM as the plain call (`mlstm`: the
backend's default form and chunk size) and in each form (`mlstm_chunkwise`, `mlstm_parallel`,
`mlstm_recurrent`, each at the call's own chunk size, as a user gets it), and their
references in torch on the CPU:
`xlstm_slstm_vanilla` (NX-AI's `sLSTMCell`, vanilla backend, after a dense nn.Linear(I, 4H) for
the input projection, which is what jaxlstm's W_x computes; the reference's `sLSTMLayer` has
per-head projections and needs I = H) and `mlstm_kernels_chunkwise` (mlstm_kernels' native
torch chunkwise kernel with its custom backward, after nn.Linear q, k, v and gate projections).
The reference's chunk is the largest divisor of T up to 64, since mlstm_kernels' kernel needs
T divisible by it. The report also sets each xLSTM row against the LSTM (`jaxlstm`) at the same
size when both ran. These rows run only when `--only` names them
(`Impl.default` is False): they are not anchors of the LSTM, and the default run is unchanged.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

import jaxlstm
from jaxlstm import family as families
from jaxlstm.benchmark.sizes import Size

Apply = Callable[[Any, jax.Array], jax.Array]
"""`apply(params, xs) -> hs`: (B, T, I) -> (B, T, H), differentiable in params and xs."""


@dataclass(frozen=True)
class Prepared:
    """A ready-to-time pass: `call()` runs it to completion; compile time where there is one."""

    call: Callable[[], object]
    compile_s: float | None


@dataclass(frozen=True)
class Impl:
    """One row of the benchmark.

    Attributes:
        key: the name `--only` selects it by.
        label: the row's name in tables and plots.
        prepare: `prepare(size, pass_name) -> Prepared`.
        unavailable: the reason it cannot run here (missing package, no GPU), or None.
        sizes: the size names it runs at; None for all.
        default: whether it runs without `--only`; False for rows of another function (the
            xLSTM cells), which are also not counted as LSTM anchors and get no LSTM FLOP rate.
    """

    key: str
    label: str
    prepare: Callable[[Size, str], Prepared]
    unavailable: Callable[[], str | None]
    sizes: tuple[str, ...] | None = None
    default: bool = True

    def runs_at(self, size: Size) -> bool:
        """Whether this row is measured at `size`."""
        return self.sizes is None or size.name in self.sizes


def unsupported_lstm_kwargs(kwargs: dict[str, Any]) -> list[str]:
    """The keys of `kwargs` that `jaxlstm.lstm` does not accept, from its signature."""
    parameters = inspect.signature(jaxlstm.lstm).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return []
    return sorted(set(kwargs) - set(parameters))


def _inputs(size: Size) -> jax.Array:
    return jax.random.normal(jax.random.key(1), (size.batch, size.steps, size.input_size))


def _prepare_jax(apply: Apply, params: Any, size: Size, pass_name: str) -> Prepared:
    """Compiles one pass of `apply` ahead of time (timed apart) and returns the compiled call."""
    xs = _inputs(size)
    expected = (size.batch, size.steps, size.hidden_size)
    got = jax.eval_shape(apply, params, xs).shape
    if got != expected:
        raise ValueError(f"apply must return outputs of shape {expected}, got {got}.")
    if pass_name == "forward":
        fn = apply
    else:
        fn = jax.grad(lambda p, x: jnp.sum(apply(p, x)), argnums=(0, 1))
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(params, xs).compile()
    compile_s = time.perf_counter() - start
    return Prepared(lambda: jax.block_until_ready(compiled(params, xs)), compile_s)


def _jax_impl(key: str, label: str, setup: Callable[[Size], tuple[Apply, Any]],
              needs: str | None = None, backend: str | None = None,
              refuses: Callable[[], str | None] | None = None, default: bool = True) -> Impl:
    """A JAX row from `setup(size) -> (apply, params)`; `needs` a package, or a jax `backend`.

    `refuses()`, checked once the package is there, gives any other reason the row cannot run.
    """

    def prepare(size: Size, pass_name: str) -> Prepared:
        apply, params = setup(size)
        return _prepare_jax(apply, params, size, pass_name)

    def unavailable() -> str | None:
        if needs is not None and importlib.util.find_spec(needs) is None:
            return f"{needs} is not installed"
        if backend is not None and jax.default_backend() != backend:
            return f"needs jax on {backend}, jax runs on {jax.default_backend()}"
        return refuses() if refuses is not None else None

    return Impl(key, label, prepare, unavailable, default=default)


def _jaxlstm_setup(kwargs: dict[str, Any]) -> Callable[[Size], tuple[Apply, Any]]:
    def setup(size: Size) -> tuple[Apply, Any]:
        return (lambda p, xs: jaxlstm.lstm(p, xs, **kwargs)[0]), _jaxlstm_params(size)

    return setup


def _jaxlstm_params(size: Size) -> jaxlstm.LSTMParams:
    """The `jaxlstm` row's parameters; the module rows load the same arrays."""
    return jaxlstm.init_lstm(jax.random.key(0), size.input_size, size.hidden_size)


def _module_class(family: str) -> type:
    """`jaxlstm.flax.linen.LSTM` or `jaxlstm.flax.nnx.LSTM` (imported here: flax is optional)."""
    return importlib.import_module(f"jaxlstm.flax.{family}").LSTM


def _split_module_kwargs(family: str, kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The `--jaxlstm-kwargs` that `family`'s LSTM takes as constructor arguments (`unroll`,
    `remat_chunk`, ...), and the names of those it has no option for."""
    options = set(inspect.signature(_module_class(family).__init__).parameters)
    options -= {"self", "parent", "name", "rngs"}
    taken = {k: v for k, v in kwargs.items() if k in options}
    return taken, sorted(set(kwargs) - set(taken))


def _module_refuses(family: str, kwargs: dict[str, Any]) -> Callable[[], str | None]:
    """Why a module row cannot honour `--jaxlstm-kwargs` (and so would time something else)."""

    def refuses() -> str | None:
        refused = _split_module_kwargs(family, kwargs)[1]
        if refused:
            return (f"jaxlstm.flax.{family}.LSTM has no option {', '.join(refused)} "
                    "(from --jaxlstm-kwargs)")
        return None

    return refuses


def _jaxlstm_linen_setup(kwargs: dict[str, Any]) -> Callable[[Size], tuple[Apply, Any]]:
    def setup(size: Size) -> tuple[Apply, Any]:
        from jaxlstm.flax import to_module_params

        model = _module_class("linen")(size.hidden_size, **_split_module_kwargs("linen", kwargs)[0])
        # The jaxlstm row's arrays in the module's layout ({"layer_0": {"forward": ...}}), so
        # both rows compute the same numbers; differentiated as a whole, as flax_linen's are.
        variables = {"params": to_module_params((jaxlstm.Directions(_jaxlstm_params(size)),))}
        return model.apply, variables

    return setup


def _jaxlstm_nnx_setup(kwargs: dict[str, Any]) -> Callable[[Size], tuple[Apply, Any]]:
    def setup(size: Size) -> tuple[Apply, Any]:
        from flax import nnx

        model = _module_class("nnx")(size.input_size, size.hidden_size, rngs=nnx.Rngs(0),
                                     **_split_module_kwargs("nnx", kwargs)[0])
        model.load_lstm_params((jaxlstm.Directions(_jaxlstm_params(size)),))
        # As the flax_nnx row: nnx.split + plain jax.jit over the state, not nnx.jit.
        graphdef, state = nnx.split(model)

        def apply(state: nnx.State, xs: jax.Array) -> jax.Array:
            return nnx.merge(graphdef, state)(xs)

        return apply, state

    return setup


def _jaxlstm_linen_cell_setup(size: Size) -> tuple[Apply, Any]:
    import flax.linen as nn

    from jaxlstm.flax import linen as jl
    from jaxlstm.flax import to_module_params

    # jaxlstm's cell dropped into the flax_linen row's nn.RNN, on the jaxlstm row's arrays.
    model = nn.RNN(jl.OptimizedLSTMCell(size.hidden_size))
    return model.apply, {"params": {"cell": to_module_params(_jaxlstm_params(size))}}


def _jaxlstm_nnx_cell_setup(size: Size) -> tuple[Apply, Any]:
    from flax import nnx

    from jaxlstm.flax import nnx as jn

    cell = jn.OptimizedLSTMCell(size.input_size, size.hidden_size, rngs=nnx.Rngs(0))
    cell.load_lstm_params(_jaxlstm_params(size))
    graphdef, params = nnx.split(nnx.RNN(cell, rngs=False))  # timed as the flax_nnx row

    def apply(params: nnx.State, xs: jax.Array) -> jax.Array:
        zeros = jnp.zeros((xs.shape[0], size.hidden_size), xs.dtype)
        return nnx.merge(graphdef, params)(xs, initial_carry=(zeros, zeros))

    return apply, params


def _flax_linen_setup(size: Size) -> tuple[Apply, Any]:
    import flax.linen as nn

    model = nn.RNN(nn.OptimizedLSTMCell(size.hidden_size))
    # Parameters do not depend on the sequence length: initialise on one step.
    variables = jax.jit(model.init)(jax.random.key(0), _inputs(size)[:, :1])
    return model.apply, variables


def _flax_nnx_setup(size: Size) -> tuple[Apply, Any]:
    from flax import nnx

    # No rng stream and an explicit zero carry: the RNN would otherwise draw its initial carry
    # from an rng counter it mutates, which plain jax.jit cannot do.
    model = nnx.RNN(
        nnx.OptimizedLSTMCell(size.input_size, size.hidden_size, rngs=nnx.Rngs(0)), rngs=False
    )
    # nnx.split + plain jax.jit: nnx.jit adds ~0.3 ms per call (measured for the README).
    graphdef, params = nnx.split(model)

    def apply(params: nnx.State, xs: jax.Array) -> jax.Array:
        zeros = jnp.zeros((xs.shape[0], size.hidden_size), xs.dtype)
        return nnx.merge(graphdef, params)(xs, initial_carry=(zeros, zeros))

    return apply, params


def _equinox_setup(size: Size) -> tuple[Apply, Any]:
    import equinox as eqx

    cell = eqx.nn.LSTMCell(size.input_size, size.hidden_size, key=jax.random.key(0))

    def apply(cell: eqx.nn.LSTMCell, xs: jax.Array) -> jax.Array:
        def one_sequence(xs_t: jax.Array) -> jax.Array:
            zeros = jnp.zeros(size.hidden_size, xs_t.dtype)

            def step(state, x_t):
                h, c = cell(x_t, state)  # equinox's carry is (h, c)
                return (h, c), h

            return jax.lax.scan(step, (zeros, zeros), xs_t)[1]

        return jax.vmap(one_sequence)(xs)

    return apply, cell


def _jax_cudnn_setup(size: Size) -> tuple[Apply, Any]:
    from jax.experimental import rnn

    weights = rnn.init_lstm_weight(
        jax.random.key(0), size.input_size, size.hidden_size, num_layers=1, bidirectional=False
    )

    def apply(weights: jax.Array, xs: jax.Array) -> jax.Array:
        zeros = jnp.zeros((1, xs.shape[0], size.hidden_size), xs.dtype)  # (layers, B, H)
        lengths = jnp.full((xs.shape[0],), xs.shape[1], jnp.int32)  # cuDNN wants int32
        hs, _, _ = rnn.lstm(
            xs, zeros, zeros, weights, lengths, input_size=size.input_size,
            hidden_size=size.hidden_size, num_layers=1, dropout=0.0, bidirectional=False,
        )
        return hs

    return apply, weights


def _torch_impl(key: str, label: str, device: str, threads: int | None,
                sizes: tuple[str, ...] | None = None) -> Impl:
    """A `torch.nn.LSTM(batch_first=True)` row; `threads` None means all cores."""

    def prepare(size: Size, pass_name: str) -> Prepared:
        import torch

        # Rows are prepared right before they are timed, so the setting holds while they run.
        torch.set_num_threads(threads or os.cpu_count() or 1)
        # float32 means float32: cuDNN's LSTM would otherwise use TF32 tensor cores.
        torch.backends.cudnn.allow_tf32 = False
        torch.manual_seed(0)
        lstm = torch.nn.LSTM(size.input_size, size.hidden_size, batch_first=True).to(device)
        xs = torch.randn(size.batch, size.steps, size.input_size, device=device)
        # Timing reads the wall clock on the host; a GPU must have finished by then.
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        if pass_name == "forward":
            def call() -> None:
                with torch.no_grad():
                    lstm(xs)
                sync()
        else:
            xs.requires_grad_(True)

            def call() -> None:
                # A training step clears the gradients; accumulating would add work.
                lstm.zero_grad(set_to_none=True)
                xs.grad = None
                hs, _ = lstm(xs)
                hs.sum().backward()
                sync()

        return Prepared(call, None)

    def unavailable() -> str | None:
        if importlib.util.find_spec("torch") is None:
            return "torch is not installed"
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return "torch has no CUDA device here"
        return None

    return Impl(key, label, prepare, unavailable, sizes)


XLSTM_HEADS = 4
"""The number of heads of every xLSTM row."""


def xlstm_chunk_size(steps: int) -> int:
    """The chunk of the mlstm_kernels row: the largest divisor of T up to 64."""
    return max(c for c in range(1, min(steps, 64) + 1) if steps % c == 0)


def _slstm_setup(size: Size) -> tuple[Apply, Any]:
    from jaxlstm.xlstm.slstm import init_slstm, slstm

    params = init_slstm(jax.random.key(0), size.input_size, size.hidden_size,
                        num_heads=XLSTM_HEADS, recurrent_init="standard")
    return (lambda p, xs: slstm(p, xs)[0]), params


def _mlstm_setup(mode: str | None) -> Callable[[Size], tuple[Apply, Any]]:
    """`mlstm(params, xs, mode=mode)` at the call's own chunk size, as a user gets it; `mode`
    None is the plain call (the backend's default form)."""
    def setup(size: Size) -> tuple[Apply, Any]:
        from jaxlstm.xlstm.mlstm import init_mlstm, mlstm

        params = init_mlstm(jax.random.key(0), size.input_size, size.hidden_size,
                            num_heads=XLSTM_HEADS)
        return (lambda p, xs: mlstm(p, xs, mode=mode)[0]), params

    return setup


def _torch_xlstm_impl(key: str, label: str, needs: str,
                      build: Callable[[Any, Size], tuple[Any, Callable[[Any], Any]]]) -> Impl:
    """A torch CPU row (all cores) of an xLSTM reference: `build(torch, size)` returns the
    modules holding its parameters and `forward(xs) -> hs` with hs of B * T * H numbers."""

    def prepare(size: Size, pass_name: str) -> Prepared:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(0)
        modules, forward = build(torch, size)
        xs = torch.randn(size.batch, size.steps, size.input_size)
        with torch.no_grad():
            numel = forward(xs).numel()
        if numel != size.batch * size.steps * size.hidden_size:
            raise ValueError(f"{key} returned {numel} numbers, not B * T * H.")
        if pass_name == "forward":
            def call() -> None:
                with torch.no_grad():
                    forward(xs)
        else:
            xs.requires_grad_(True)

            def call() -> None:
                modules.zero_grad(set_to_none=True)
                xs.grad = None
                forward(xs).sum().backward()

        return Prepared(call, None)

    def unavailable() -> str | None:
        for package in ("torch", needs):
            if importlib.util.find_spec(package) is None:
                return f"{package} is not installed"
        return None

    return Impl(key, label, prepare, unavailable, default=False)


def _xlstm_slstm_build(torch: Any, size: Size) -> tuple[Any, Callable[[Any], Any]]:
    from xlstm.blocks.slstm.cell import sLSTMCell, sLSTMCellConfig

    cell = sLSTMCell(sLSTMCellConfig(
        hidden_size=size.hidden_size, num_heads=XLSTM_HEADS, backend="vanilla",
        dtype="float32", recurrent_weight_init="standard"))
    projection = torch.nn.Linear(size.input_size, 4 * size.hidden_size)

    def forward(xs: Any) -> Any:
        return cell(projection(xs))[0]  # (B, heads, T, head_dim)

    return torch.nn.ModuleList([cell, projection]), forward


def _mlstm_kernels_build(torch: Any, size: Size) -> tuple[Any, Callable[[Any], Any]]:
    from mlstm_kernels.torch.chunkwise.native import mlstm_chunkwise__native_custbw

    heads, chunk = XLSTM_HEADS, xlstm_chunk_size(size.steps)
    qkv = torch.nn.Linear(size.input_size, 3 * size.hidden_size, bias=False)
    gates = torch.nn.Linear(size.input_size, 2 * heads)  # i~ and f~, one per head

    def forward(xs: Any) -> Any:
        batch, steps, _ = xs.shape
        q, k, v = (a.view(batch, steps, heads, -1).transpose(1, 2)
                   for a in qkv(xs).chunk(3, dim=-1))  # (B, heads, T, d)
        i_pre, f_pre = gates(xs).transpose(1, 2).chunk(2, dim=1)  # (B, heads, T)
        return mlstm_chunkwise__native_custbw(q, k, v, i_pre, f_pre, chunk_size=chunk)

    return torch.nn.ModuleList([qkv, gates]), forward


def xlstm_implementations() -> list[Impl]:
    """The xLSTM rows (run only when `--only` names them), each jaxlstm row before its
    reference."""
    modes = [_jax_impl("mlstm", "jaxlstm mlstm (default form)", _mlstm_setup(None),
                       default=False)]
    modes += [_jax_impl(f"mlstm_{mode}", f"jaxlstm mlstm ({mode})", _mlstm_setup(mode),
                        default=False) for mode in families.get("mlstm").modes]
    return [
        _jax_impl("slstm", "jaxlstm slstm", _slstm_setup, default=False),
        _torch_xlstm_impl("xlstm_slstm_vanilla", "xlstm sLSTMCell (vanilla, torch)", "xlstm",
                          _xlstm_slstm_build),
        *modes,
        _torch_xlstm_impl("mlstm_kernels_chunkwise", "mlstm_kernels chunkwise (native, torch)",
                          "mlstm_kernels", _mlstm_kernels_build),
    ]


XLSTM_REFERENCES = {
    "slstm": "xlstm_slstm_vanilla",
    "mlstm": "mlstm_kernels_chunkwise",
    "mlstm_chunkwise": "mlstm_kernels_chunkwise",
    "mlstm_parallel": "mlstm_kernels_chunkwise",
    "mlstm_recurrent": "mlstm_kernels_chunkwise",
}
"""Each jaxlstm xLSTM row and the reference row it is compared with."""

XLSTM_KEYS = (*XLSTM_REFERENCES, "xlstm_slstm_vanilla", "mlstm_kernels_chunkwise")


def _min_rnn_setup(cell: str, mode: str | None) -> Callable[[Size], tuple[Apply, Any]]:
    def setup(size: Size) -> tuple[Apply, Any]:
        init, run = {"min_lstm": (jaxlstm.init_min_lstm, jaxlstm.min_lstm),
                     "min_gru": (jaxlstm.init_min_gru, jaxlstm.min_gru)}[cell]
        params = init(jax.random.key(0), size.input_size, size.hidden_size)
        return (lambda p, xs: run(p, xs, mode=mode)[0]), params

    return setup


def min_rnn_implementations() -> list[Impl]:
    """The minLSTM / minGRU rows (run only when `--only` names them), each cell as the plain
    call (`mode` not given: the backend's default form) and in its parallel (associative
    scan) and sequential (`lax.scan`) modes; compared with the `jaxlstm` row."""
    rows = []
    for cell in ("min_lstm", "min_gru"):
        rows.append(_jax_impl(cell, f"jaxlstm {cell} (default form)",
                              _min_rnn_setup(cell, None), default=False))
        rows += [_jax_impl(f"{cell}_{mode}", f"jaxlstm {cell} ({mode})",
                           _min_rnn_setup(cell, mode), default=False)
                 for mode in families.get(cell).modes]
    return rows


DEFAULT_FORMS = {name: tuple(f"{name}_{mode}" for mode in families.get(name).modes)
                 for name in ("mlstm", "min_lstm", "min_gru")}
"""Each plain-call row (the function without `mode`, as a user calls it, named after its
family) and the rows of its forms (`<family>_<mode>`, one per mode the family declares): the
report sets the plain call against the fastest form measured beside it."""


MIN_RNN_KEYS = tuple(impl.key for impl in min_rnn_implementations())

OTHER_FUNCTION_KEYS = (*XLSTM_KEYS, *MIN_RNN_KEYS)
"""The rows that time another function than the LSTM: never LSTM anchors, no LSTM FLOP rate."""


def family_of(impl: str) -> str:
    """"xlstm", "min_rnn" or "lstm": rows of one family compute the same kind of thing."""
    if impl in XLSTM_KEYS:
        return "xlstm"
    return "min_rnn" if impl in MIN_RNN_KEYS else "lstm"


def implementations(jaxlstm_kwargs: dict[str, Any]) -> list[Impl]:
    """All rows, jaxlstm first; `jaxlstm_kwargs` are passed to every `jaxlstm.lstm` call.

    jaxlstm's module rows come right after it, so the three are timed back to back at a size
    (under the same load on a shared machine); they take the options of `jaxlstm_kwargs` that
    the modules have, and are skipped if it holds another.
    """
    return [
        _jax_impl("jaxlstm", "jaxlstm", _jaxlstm_setup(jaxlstm_kwargs)),
        _jax_impl("jaxlstm_linen", "jaxlstm.flax.linen.LSTM", _jaxlstm_linen_setup(jaxlstm_kwargs),
                  "flax", refuses=_module_refuses("linen", jaxlstm_kwargs)),
        _jax_impl("jaxlstm_nnx", "jaxlstm.flax.nnx.LSTM", _jaxlstm_nnx_setup(jaxlstm_kwargs),
                  "flax", refuses=_module_refuses("nnx", jaxlstm_kwargs)),
        _jax_impl("flax_linen", "flax linen RNN(OptimizedLSTMCell)", _flax_linen_setup, "flax"),
        _jax_impl("jaxlstm_linen_cell", "flax linen RNN(jaxlstm OptimizedLSTMCell)",
                  _jaxlstm_linen_cell_setup, "flax"),
        _jax_impl("flax_nnx", "flax nnx RNN(OptimizedLSTMCell)", _flax_nnx_setup, "flax"),
        _jax_impl("jaxlstm_nnx_cell", "flax nnx RNN(jaxlstm OptimizedLSTMCell)",
                  _jaxlstm_nnx_cell_setup, "flax"),
        _jax_impl("equinox", "equinox LSTMCell+scan+vmap", _equinox_setup, "equinox"),
        _torch_impl("torch", "torch nn.LSTM", "cpu", threads=None),
        # Batch 1 is latency-bound: one thread beats two there (measured for the README).
        _torch_impl("torch_1thread", "torch nn.LSTM (1 thread)", "cpu", threads=1, sizes=("S1",)),
        _jax_impl("jax_cudnn", "jax.experimental.rnn (cuDNN)", _jax_cudnn_setup,
                  backend="gpu"),
        _torch_impl("torch_cuda", "torch nn.LSTM (cuda)", "cuda", threads=None),
        *xlstm_implementations(),
        *min_rnn_implementations(),
    ]


IMPL_KEYS = tuple(impl.key for impl in implementations({}))
