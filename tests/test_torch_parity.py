"""jaxlstm.lstm against PyTorch nn.LSTM (oneDNN on CPU), weights mapped.

PyTorch keeps weight_ih (4H, I), weight_hh (4H, H) and two biases, gate order i, f, g, o:
w_x = weight_ih.T, w_h = weight_hh.T, b = bias_ih + bias_hh. Its state is (h, c). Variable
length is a packed sequence; its reverse direction reads each sequence's valid prefix backwards.
Skipped when torch is not installed (`pip install torch==2.13.0` for the CPU wheel).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm

torch = pytest.importorskip(
    "torch", reason="needs torch, the `reference` extra: pip install torch==2.13.0 (the CPU "
    "wheel), then pip install -e '.[test,reference]'")

BATCH, STEPS, INPUT, HIDDEN = 4, 9, 5, 6
TOL = dict(atol=2e-6, rtol=2e-5)


def to_np(t):
    return t.detach().numpy()


def direction_params(module, suffix="") -> jaxlstm.LSTMParams:
    weights = {name: jnp.asarray(to_np(p)) for name, p in module.named_parameters()}
    return jaxlstm.LSTMParams(
        w_x=weights[f"weight_ih_l0{suffix}"].T,
        w_h=weights[f"weight_hh_l0{suffix}"].T,
        b=weights[f"bias_ih_l0{suffix}"] + weights[f"bias_hh_l0{suffix}"],
    )


@pytest.fixture
def setup():
    torch.manual_seed(0)
    module = torch.nn.LSTM(INPUT, HIDDEN, batch_first=True, bidirectional=True)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((BATCH, STEPS, INPUT)).astype(np.float32)
    h0, c0 = rng.standard_normal((2, 2, BATCH, HIDDEN)).astype(np.float32)
    return module, xs, h0, c0


def run_ours(params, xs, h0, c0, lengths, reverse):
    return jaxlstm.lstm(
        params, xs, initial_state=jaxlstm.LSTMState(h=h0, c=c0), seq_lengths=lengths,
        reverse=reverse,
    )


@pytest.mark.parametrize("packed", [False, True])
def test_outputs_and_final_state_both_directions(setup, packed):
    module, xs, h0, c0 = setup
    lengths = np.array([STEPS, 1, 5, 0 if packed else STEPS])
    x_t = torch.from_numpy(xs)
    if packed:
        # PyTorch rejects a length of 0 in a packed batch: run the non-empty rows only, and
        # check the empty row against its definition (zero outputs, initial state) below.
        keep = lengths > 0
        x_in = torch.nn.utils.rnn.pack_padded_sequence(
            x_t[keep], torch.from_numpy(lengths[keep]), batch_first=True, enforce_sorted=False
        )
        state_in = (torch.from_numpy(h0[:, keep]), torch.from_numpy(c0[:, keep]))
    else:
        keep = np.ones(BATCH, bool)
        x_in, state_in = x_t, (torch.from_numpy(h0), torch.from_numpy(c0))
    with torch.no_grad():
        out, (h_n, c_n) = module(x_in, state_in)
    if packed:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=STEPS)
    out, h_n, c_n = to_np(out), to_np(h_n), to_np(c_n)

    for d, suffix, reverse in ((0, "", False), (1, "_reverse", True)):
        hs, final = run_ours(
            direction_params(module, suffix), xs, h0[d], c0[d], lengths if packed else None,
            reverse,
        )
        np.testing.assert_allclose(np.asarray(hs)[keep], out[..., d * HIDDEN:(d + 1) * HIDDEN],
                                   **TOL)
        np.testing.assert_allclose(np.asarray(final.h)[keep], h_n[d], **TOL)
        np.testing.assert_allclose(np.asarray(final.c)[keep], c_n[d], **TOL)
        if packed:
            np.testing.assert_array_equal(np.asarray(hs)[~keep], 0.0)
            np.testing.assert_array_equal(np.asarray(final.h)[~keep], h0[d][~keep])
            np.testing.assert_array_equal(np.asarray(final.c)[~keep], c0[d][~keep])


@pytest.mark.parametrize("packed", [False, True])
def test_gradients_both_directions(setup, packed):
    module, xs, h0, c0 = setup
    lengths = np.array([STEPS, 2, 6, 4]) if packed else None
    rng = np.random.default_rng(1)
    readout = rng.standard_normal((BATCH, STEPS, 2 * HIDDEN)).astype(np.float32)
    cell_readout = rng.standard_normal((2, BATCH, HIDDEN)).astype(np.float32)

    x_t = torch.from_numpy(xs).requires_grad_(True)
    x_in = x_t
    if packed:
        x_in = torch.nn.utils.rnn.pack_padded_sequence(
            x_t, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
        )
    module.zero_grad()
    out, (h_n, c_n) = module(x_in, (torch.from_numpy(h0), torch.from_numpy(c0)))
    if packed:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=STEPS)
    loss = (out * torch.from_numpy(readout)).sum() + (c_n * torch.from_numpy(cell_readout)).sum()
    loss.backward()
    torch_grads = {name: to_np(p.grad) for name, p in module.named_parameters()}

    def our_loss(fwd, bwd, xs):
        total = 0.0
        for d, params, reverse in ((0, fwd, False), (1, bwd, True)):
            hs, final = run_ours(params, xs, h0[d], c0[d], lengths, reverse)
            total += jnp.sum(hs * readout[..., d * HIDDEN:(d + 1) * HIDDEN])
            total += jnp.sum(final.c * cell_readout[d])
        return total

    grads = jax.grad(our_loss, argnums=(0, 1, 2))(
        direction_params(module), direction_params(module, "_reverse"), jnp.asarray(xs)
    )
    for params_grad, suffix in zip(grads[:2], ("", "_reverse")):
        np.testing.assert_allclose(params_grad.w_x.T, torch_grads[f"weight_ih_l0{suffix}"], **TOL)
        np.testing.assert_allclose(params_grad.w_h.T, torch_grads[f"weight_hh_l0{suffix}"], **TOL)
        # b = bias_ih + bias_hh, so each torch bias gets the gradient of b.
        np.testing.assert_allclose(params_grad.b, torch_grads[f"bias_ih_l0{suffix}"], **TOL)
        np.testing.assert_allclose(params_grad.b, torch_grads[f"bias_hh_l0{suffix}"], **TOL)
    np.testing.assert_allclose(grads[2], to_np(x_t.grad), **TOL)
