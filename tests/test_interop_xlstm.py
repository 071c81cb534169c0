"""jaxlstm.interop.from_xlstm against NX-AI's xlstm package (torch, float32 on CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.interop import from_xlstm
from jaxlstm.interop.xlstm import head_norm
from jaxlstm.xlstm.blocks import MLSTMBlockParams
from jaxlstm.xlstm.mlstm import MLSTMParams, mlstm
from jaxlstm.xlstm.slstm import SLSTMParams, SLSTMState, slstm

NEEDS_XLSTM = ("needs torch and NX-AI's xlstm, the `reference` extra: pip install "
               "torch==2.13.0 (the CPU wheel), then pip install -e '.[test,reference]'")
torch = pytest.importorskip("torch", reason=NEEDS_XLSTM)
pytest.importorskip("xlstm", reason=NEEDS_XLSTM)
from xlstm.blocks.mlstm.cell import mLSTMCell, mLSTMCellConfig
from xlstm.blocks.mlstm.layer import mLSTMLayer, mLSTMLayerConfig
from xlstm.blocks.slstm.cell import sLSTMCell_cuda, sLSTMCellConfig
from xlstm.blocks.slstm.layer import sLSTMLayer, sLSTMLayerConfig

HIDDEN, HEADS, BATCH, STEPS = 8, 2, 3, 7
TOL = {"atol": 1e-5, "rtol": 1e-5}  # float32, both sides
NORM_TOL = {"atol": 2e-4, "rtol": 1e-4}  # the norm divides by a small per-head deviation


def slstm_layer(conv1d_kernel_size=0, group_norm_weight=True):
    torch.manual_seed(0)
    layer = sLSTMLayer(sLSTMLayerConfig(
        embedding_dim=HIDDEN, num_heads=HEADS, conv1d_kernel_size=conv1d_kernel_size,
        backend="vanilla", dtype="float32", recurrent_weight_init="standard",
        bias_init="standard", group_norm_weight=group_norm_weight))
    with torch.no_grad():  # a recurrence strong enough to matter, a norm weight that is not 0
        layer.slstm_cell._recurrent_kernel_.mul_(4.0)
        layer.slstm_cell._bias_.mul_(4.0)
        if group_norm_weight:
            layer.group_norm.weight.normal_()
    return layer.eval()


def run_slstm_layer(layer, xs):
    """The layer's output (B, T, H), and its cell's y (B, T, H) and final state (4, B, H)."""
    captured = {}
    hook = layer.slstm_cell.register_forward_hook(
        lambda module, inputs, output: captured.update(cell=output))  # None: no change
    with torch.no_grad():
        out = layer(torch.tensor(np.asarray(xs)))
    hook.remove()
    y, state = captured["cell"]  # y: (B, heads, T, head_dim)
    return (out.numpy(), y.permute(0, 2, 1, 3).reshape(out.shape).numpy(), state.numpy())


def test_slstm_layer_reproduces_the_cell_and_with_the_norm_the_layer():
    layer = slstm_layer()
    xs = 2.0 * jax.random.normal(jax.random.key(1), (BATCH, STEPS, HIDDEN))
    want_out, want_cell, want_state = run_slstm_layer(layer, xs)

    params, scale = from_xlstm(layer, num_heads=HEADS, return_norm=True)
    assert isinstance(params, SLSTMParams) and params.num_heads == HEADS
    hs, final = jax.jit(slstm)(params, xs)
    np.testing.assert_allclose(hs, want_cell, **TOL)
    for got, want in zip(final, SLSTMState(*want_state), strict=True):
        np.testing.assert_allclose(got, want, **TOL)
    np.testing.assert_allclose(head_norm(hs, scale, HEADS), want_out, **NORM_TOL)

    # The same weights from the state_dict of a larger model, keys under a prefix.
    state_dict = {"blocks.0.xlstm." + k: v for k, v in layer.state_dict().items()}
    state_dict["blocks.1.other.weight"] = torch.zeros(3)
    again, again_scale = from_xlstm(state_dict, prefix="blocks.0.xlstm.", return_norm=True)
    for got, want in zip((*again, again_scale), (*params, scale), strict=True):
        np.testing.assert_array_equal(got, want)


def test_slstm_cuda_layout_and_bare_cell_and_no_norm_weight():
    layer = slstm_layer(group_norm_weight=False)
    params, scale = from_xlstm(layer, return_norm=True)
    np.testing.assert_array_equal(scale, np.ones(HIDDEN))
    # The cuda backend stores R and b in another layout: convert the vanilla weights to it
    # with the reference's own code (no CUDA needed to build the state_dict).
    config = sLSTMCellConfig(hidden_size=HIDDEN, num_heads=HEADS, backend="cuda")
    cuda = sLSTMCell_cuda(config, skip_backend_init=True)
    cell = layer.slstm_cell
    state_dict = dict(layer.state_dict())
    state_dict["slstm_cell._recurrent_kernel_"] = cuda._recurrent_kernel_ext2int(
        cell._recurrent_kernel_int2ext(cell._recurrent_kernel_))
    state_dict["slstm_cell._bias_"] = cuda._bias_ext2int(cell._bias_int2ext(cell._bias_))
    for got, want in zip(from_xlstm(state_dict), params, strict=True):
        np.testing.assert_array_equal(got, want)

    # A bare cell reads the 4H pre-activations: W_x is the identity.
    xs = jax.random.normal(jax.random.key(2), (BATCH, STEPS, 4 * HIDDEN))
    bare = from_xlstm(cell)
    np.testing.assert_array_equal(bare.w_x, np.eye(4 * HIDDEN))
    with torch.no_grad():
        y, _ = cell(torch.tensor(np.asarray(xs)))
    want = y.permute(0, 2, 1, 3).reshape(BATCH, STEPS, HIDDEN).numpy()
    np.testing.assert_allclose(slstm(bare, xs)[0], want, **TOL)


def test_mlstm_cell_reproduces_the_memory_and_with_the_norm_the_cell():
    torch.manual_seed(0)
    cell = mLSTMCell(mLSTMCellConfig(context_length=STEPS, embedding_dim=HIDDEN,
                                     num_heads=HEADS))
    with torch.no_grad():  # gates that depend on the input (the reference zeroes their weights)
        for p in (cell.igate.weight, cell.fgate.weight, cell.outnorm.weight):
            p.normal_()
    q, k, v = (jax.random.normal(key, (BATCH, STEPS, HIDDEN))
               for key in jax.random.split(jax.random.key(3), 3))
    captured = {}
    hook = cell.outnorm.register_forward_hook(
        lambda module, inputs, output: captured.update(memory=inputs[0]))  # None: no change
    with torch.no_grad():
        want_out = cell(*(torch.tensor(np.asarray(a)) for a in (q, k, v))).numpy()
    hook.remove()
    want_memory = captured["memory"].permute(0, 2, 1, 3).reshape(want_out.shape).numpy()

    params, scale = from_xlstm(cell, num_heads=HEADS, return_norm=True)
    assert isinstance(params, MLSTMParams) and params.w_q.shape == (3 * HIDDEN, HIDDEN)
    xs = jnp.concatenate([q, k, v], axis=-1)
    for mode in ("parallel", "chunkwise", "recurrent"):
        hs, _ = jax.jit(mlstm, static_argnames=("mode", "chunk_size"))(params, xs, mode=mode,
                                                                      chunk_size=4)
        np.testing.assert_allclose(hs, want_memory, atol=1e-5, rtol=1e-4, err_msg=mode)
        np.testing.assert_allclose(head_norm(hs, scale, HEADS), want_out, **NORM_TOL)
    for got, want in zip(from_xlstm(cell.state_dict()), params, strict=True):
        np.testing.assert_array_equal(got, want)


def test_unsupported_modules_and_bad_inputs_raise_clear_errors():
    layer = slstm_layer(conv1d_kernel_size=4)
    with pytest.raises(ValueError, match=r"causal conv1d .* \(conv1d_kernel_size = 4\)"):
        from_xlstm(layer)
    with pytest.raises(ValueError, match="only layers with conv1d_kernel_size=0 convert"):
        from_xlstm(layer.state_dict())
    mlstm_layer = mLSTMLayer(mLSTMLayerConfig(embedding_dim=8, num_heads=2, context_length=4))
    # The layer converts to the block's params (tests/test_xlstm_blocks.py checks the numbers);
    # its cell alone converts too.
    assert isinstance(from_xlstm(mlstm_layer), MLSTMBlockParams)
    assert isinstance(from_xlstm(mlstm_layer.state_dict(), prefix="mlstm_cell."), MLSTMParams)
    with pytest.raises(TypeError, match="must be an xlstm sLSTMLayer, sLSTMCell, mLSTMLayer"):
        from_xlstm(torch.nn.LSTM(2, 3))
    good = slstm_layer()
    with pytest.raises(ValueError, match="num_heads=4, but the weights have 2 heads"):
        from_xlstm(good, num_heads=4)
    with pytest.raises(ValueError, match="No weights found under prefix 'encoder.'"):
        from_xlstm(good.state_dict(), prefix="encoder.")
    with pytest.raises(ValueError, match="Not an xlstm sLSTMLayer, sLSTMCell or mLSTMCell"):
        from_xlstm({"weight": np.zeros(3)})
    with pytest.raises(ValueError, match="Missing weight 'zgate.weight'"):
        from_xlstm({k: v for k, v in good.state_dict().items() if k != "zgate.weight"})
    with pytest.raises(ValueError, match="return_norm needs an sLSTMLayer"):
        from_xlstm(good.slstm_cell, return_norm=True)
