"""xLSTM blocks and stack: shapes and sizes, causality, variable length, gradients, jit, a
tiny fit, and the mLSTM block against the reference `mLSTMLayer` (torch, float32)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.xlstm.blocks import (
    MLSTMBlockParams,
    SLSTMBlockParams,
    causal_conv1d,
    init_mlstm_block,
    init_slstm_block,
    init_xlstm_stack,
    mlstm_block,
    mlstm_block_params_from_torch,
    mlstm_layer,
    slstm_block,
    xlstm_stack,
)

NEEDS_REFERENCE = ("needs torch and NX-AI's xlstm / mlstm_kernels, the `reference` "
                   "extra: pip install torch==2.13.0 (the CPU wheel), then pip install "
                   "-e '.[test,reference]'")

INPUT, DIM, STEPS = 3, 16, 9
TOL = {"atol": 1e-5, "rtol": 1e-5}

stack = jax.jit(xlstm_stack, static_argnames=("mode", "chunk_size"))


@functools.cache
def make_stack(blocks="ms", key=0):
    return _build_stack(jax.random.key(key), jax.random.key(key + 1), blocks)


@functools.partial(jax.jit, static_argnums=2)
def _build_stack(init_key, perturb_key, blocks):
    """The stack's init and the perturbation below in one compile (eagerly, each random draw
    of a new shape would compile on its own)."""
    params = init_xlstm_stack(init_key, INPUT, DIM, blocks)
    # The reference starts the mLSTM gates and the sLSTM recurrence at zero; random values
    # make the tests see them.
    keys = iter(jax.random.split(perturb_key, 16))
    built = []
    for block in params.blocks:
        if isinstance(block, MLSTMBlockParams):
            block = block._replace(w_i=0.1 * jax.random.normal(next(keys), block.w_i.shape),
                                   w_f=0.1 * jax.random.normal(next(keys), block.w_f.shape))
        else:
            block = block._replace(r=0.3 * jax.random.normal(next(keys), block.r.shape))
        built.append(block)
    return params._replace(blocks=tuple(built))


def inputs(batch=2, steps=STEPS, key=5):
    return jax.random.normal(jax.random.key(key), (batch, steps, INPUT))


def shapes_of(init, *args, **kwargs):
    return jax.eval_shape(lambda: init(jax.random.key(0), *args, **kwargs))


def test_sizes_follow_the_reference():
    m = shapes_of(init_mlstm_block, 64)
    assert m.w_up.shape == (64, 256) and m.w_down.shape == (128, 64)   # E = 2 * 64
    assert m.w_q.shape == (32, 4, 4) and m.conv_w.shape == (4, 128)
    assert m.w_i.shape == (384, 4) and m.b_f.shape == (4,)
    s = shapes_of(init_slstm_block, 64)
    assert s.ffn_up.shape == (64, 256) and s.ffn_down.shape == (128, 64)  # 1.3 * 64 -> 128
    assert s.w_i.shape == (4, 16, 16) and s.r.shape == (4, 16, 4, 16)
    assert shapes_of(init_slstm_block, 64, round_to=1).ffn_down.shape == (84, 64)
    assert shapes_of(init_slstm_block, 64, conv_kernel=0).conv_w.shape == (0, 64)


def test_shapes():
    params = make_stack("ms")
    assert stack(params, inputs(batch=1), chunk_size=4).shape == (1, STEPS, DIM)
    xs = jax.random.normal(jax.random.key(1), (2, 3, STEPS, DIM))   # two batch axes
    # Shapes only: traced, not compiled (the programs themselves run in the tests below).
    assert jax.eval_shape(mlstm_block, params.blocks[0], xs).shape == xs.shape
    assert jax.eval_shape(slstm_block, params.blocks[1], xs).shape == xs.shape
    no_conv = jax.jit(init_slstm_block, static_argnums=1, static_argnames="conv_kernel")(
        jax.random.key(2), DIM, conv_kernel=0)
    assert jnp.all(jnp.isfinite(jax.jit(slstm_block)(no_conv, xs[0])))


def test_causal():
    # Batch 1 and chunk 4: the program test_seq_lengths_... compiles for a sequence alone.
    params, xs = make_stack("ms"), inputs(batch=1)
    t0 = 4
    changed = xs.at[:, t0 + 1:].add(jax.random.normal(jax.random.key(9), xs[:, t0 + 1:].shape))
    out, out_changed = stack(params, xs, chunk_size=4), stack(params, changed, chunk_size=4)
    chex.assert_trees_all_close(out[:, :t0 + 1], out_changed[:, :t0 + 1], **TOL)
    assert not np.allclose(out[:, t0 + 1:], out_changed[:, t0 + 1:])


def test_seq_lengths_match_running_each_sequence_alone():
    params, xs = make_stack("ms"), inputs(batch=3)
    lengths = jnp.array([STEPS, 4, 0])
    out = stack(params, xs, seq_lengths=lengths, chunk_size=4)
    for b, length in enumerate(lengths.tolist()):
        alone = stack(params, xs[b:b + 1, :length], chunk_size=4)[0] if length else None
        if length:
            chex.assert_trees_all_close(out[b, :length], alone, **TOL)
        np.testing.assert_array_equal(out[b, length:], 0.0)


def test_mlstm_modes_agree():
    # The "ms" stack (its sLSTM block the same in every mode), batch 1: chunkwise with chunk 4
    # is the program the tests above compiled.
    params, xs = make_stack("ms"), inputs(batch=1)
    ref = stack(params, xs, mode="parallel")
    for mode, chunk in (("chunkwise", 4), ("recurrent", 64)):
        chex.assert_trees_all_close(stack(params, xs, mode=mode, chunk_size=chunk), ref,
                                    atol=1e-4, rtol=1e-4)


FIT_BATCH, FIT_STEPS = 4, 6


def fit_data():
    xs = inputs(batch=FIT_BATCH, steps=FIT_STEPS)
    return xs, jnp.cumsum(xs[..., :1], axis=-2) / 3.0          # needs memory across steps


@jax.jit
def loss_and_grads(p, xs, targets, lengths):
    """One compile shared by the gradient and the fitting tests (same shapes)."""
    def loss(p):
        out = xlstm_stack(p["stack"], xs, seq_lengths=lengths) @ p["w_out"]
        return jnp.mean(jnp.square(out - targets))
    return jax.value_and_grad(loss)(p)


def test_gradients_are_finite_under_jit():
    xs, targets = fit_data()
    params = {"stack": make_stack("ms"),
              "w_out": jax.random.normal(jax.random.key(4), (DIM, 1))}
    lengths = jnp.array([FIT_STEPS, 3, FIT_STEPS, 1])          # padded sequences too
    _, grads = loss_and_grads(params, xs, targets, lengths)
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0
    assert float(jnp.sum(jnp.abs(grads["stack"].blocks[1].r))) > 0  # the sLSTM recurrence learns


@jax.jit
def sgd(p, grads):
    return jax.tree.map(lambda w, g: w - 0.1 * g, p, grads)


def test_tiny_stack_fits_a_tiny_batch_with_sgd():
    params = {"stack": make_stack("ms"), "w_out": jnp.zeros((DIM, 1))}
    xs, targets = fit_data()
    full = jnp.array([FIT_STEPS] * FIT_BATCH)  # not weak-typed: the same program as above

    losses = []
    for _ in range(30):
        value, grads = loss_and_grads(params, xs, targets, full)
        params = sgd(params, grads)
        losses.append(float(value))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.05 * losses[0], losses        # 0.56 -> 0.0015 when written


def test_causal_conv1d_matches_a_loop():
    xs = np.asarray(jax.random.normal(jax.random.key(0), (2, 6, 3)))
    kernel = np.asarray(jax.random.normal(jax.random.key(1), (4, 3)))
    bias = np.arange(3.0)
    expected = np.zeros_like(xs) + bias
    for t in range(6):
        for j in range(4):
            s = t - 3 + j
            if s >= 0:
                expected[:, t] += kernel[j] * xs[:, s]
    chex.assert_trees_all_close(causal_conv1d(jnp.asarray(xs), jnp.asarray(kernel),
                                              jnp.asarray(bias)), expected, **TOL)


def test_errors():
    with pytest.raises(ValueError, match="blocks must be a non-empty sequence of 'm' and 's'"):
        init_xlstm_stack(jax.random.key(0), INPUT, DIM, "mx")
    with pytest.raises(ValueError, match=r"xs must have shape \(batch..., T, 3\)"):
        xlstm_stack(make_stack("ms"), jnp.ones((2, 5, 4)))
    with pytest.raises(ValueError, match="mode must be one of"):
        mlstm_block(make_stack("ms").blocks[0], jnp.ones((1, 2, DIM)), mode="x")
    with pytest.raises(ValueError, match="num_heads .5. must divide dim"):
        init_slstm_block(jax.random.key(0), DIM, num_heads=5)


# --- against the reference (NX-AI/xlstm, torch) ---------------------------------------------


def test_mlstm_layer_and_block_match_the_reference():
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    layer_mod = pytest.importorskip("xlstm.blocks.mlstm.layer", reason=NEEDS_REFERENCE)
    ln_mod = pytest.importorskip("xlstm.components.ln", reason=NEEDS_REFERENCE)
    torch.manual_seed(0)
    layer = layer_mod.mLSTMLayer(layer_mod.mLSTMLayerConfig(embedding_dim=DIM,
                                                            context_length=12, num_heads=4))
    norm = ln_mod.LayerNorm(ndim=DIM, weight=True, bias=False)
    with torch.no_grad():  # move the parameters the reference initialises to constants
        for name, p in list(layer.named_parameters()) + list(norm.named_parameters()):
            if "gate.weight" in name or "outnorm" in name or "skip" in name or name == "weight":
                p.add_(0.3 * torch.randn_like(p))
        x = torch.randn(2, 12, DIM)
        y_layer = layer(x).numpy()
        y_block = (x + layer(norm(x))).numpy()
    state_dict = {k: v.numpy() for k, v in layer.state_dict().items()}
    params = mlstm_block_params_from_torch(state_dict, norm=norm.weight.detach().numpy())
    xs = jnp.asarray(x.numpy())
    layer_fn = jax.jit(mlstm_layer, static_argnames=("mode", "chunk_size"))
    for mode in ("parallel", "chunkwise", "recurrent"):
        chex.assert_trees_all_close(layer_fn(params, xs, mode=mode, chunk_size=5), y_layer,
                                    atol=2e-5, rtol=2e-5)
    chex.assert_trees_all_close(jax.jit(mlstm_block)(params, xs), y_block, atol=2e-5,
                                rtol=2e-5)


def test_slstm_block_matches_the_reference():
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    block_mod = pytest.importorskip("xlstm.blocks.slstm.block", reason=NEEDS_REFERENCE)
    layer_mod = pytest.importorskip("xlstm.blocks.slstm.layer", reason=NEEDS_REFERENCE)
    ffn_mod = pytest.importorskip("xlstm.components.feedforward", reason=NEEDS_REFERENCE)
    from jaxlstm.interop.xlstm import from_xlstm

    torch.manual_seed(0)
    heads, d = 4, DIM // 4
    config = block_mod.sLSTMBlockConfig(
        slstm=layer_mod.sLSTMLayerConfig(embedding_dim=DIM, num_heads=heads, backend="vanilla"),
        feedforward=ffn_mod.FeedForwardConfig(), _num_blocks=1, _block_idx=0)
    block = block_mod.sLSTMBlock(config)
    with torch.no_grad():  # move every parameter off its initial constant
        for p in block.parameters():
            p.add_(0.2 * torch.randn_like(p))
        x = torch.randn(2, 7, DIM)
        expected = block(x).numpy()
    sd = {k: v.numpy() for k, v in block.state_dict().items()}
    # The cell's r and b (and the fgate/igate swap) through the library's sLSTM converter,
    # which takes the layer without its conv; the headwise gate blocks from its dense w_x.
    cell = from_xlstm({k[len("xlstm."):]: v for k, v in sd.items()
                       if k.startswith("xlstm.") and "conv1d" not in k})
    w_x = np.asarray(cell.w_x).reshape(DIM, 4, heads, d)
    gates = [jnp.asarray(np.stack([w_x[k * d:(k + 1) * d, g, k] for k in range(heads)]))
             for g in range(4)]
    params = SLSTMBlockParams(
        norm=jnp.asarray(sd["xlstm_norm.weight"]),
        conv_w=jnp.asarray(sd["xlstm.conv1d.conv.weight"][:, 0, :].T),
        conv_b=jnp.asarray(sd["xlstm.conv1d.conv.bias"]),
        w_i=gates[0], w_f=gates[1], w_z=gates[2], w_o=gates[3], r=cell.r, b=cell.b,
        group_norm=jnp.asarray(sd["xlstm.group_norm.weight"]),
        ffn_norm=jnp.asarray(sd["ffn_norm.weight"]),
        ffn_up=jnp.asarray(sd["ffn.proj_up.weight"].T),
        ffn_down=jnp.asarray(sd["ffn.proj_down.weight"].T))
    chex.assert_trees_all_close(jax.jit(slstm_block)(params, jnp.asarray(x.numpy())), expected,
                                atol=2e-5, rtol=2e-5)
