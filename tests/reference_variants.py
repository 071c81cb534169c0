"""Independent references for the cell variants, the projection and recurrent regularisation.

Written straight from the equations of the variants' contract, sharing no code with jaxlstm:
only the parameter containers' field names are read. Two versions:

* `numpy_variant_lstm`: float64 NumPy, a plain Python loop over every sequence and step.
* `jax_variant_lstm`: the same loop in jnp (float32 by default), one sequence and one step at a
  time, so that JAX can differentiate it for gradient checks.

Both take xs (N, T, I) with one batch axis and implement, per sequence n of length L_n (the
PyTorch packed-sequence convention): steps 0..L_n-1 (L_n-1 down to 0 when `reverse`), outputs and
gates at padded steps exactly zero, the final state the state after the last valid step.

Regularisation: `recurrent_mask` (N, R) multiplies h_{t-1} before W_h (the same at every step);
`keep_h` (T, N, R) and `keep_c` (T, N, H) are zoneout's keep factors, indexed by the original
time index t. In training they are the 0/1 masks; for evaluation pass `zoneout=(p_h, p_c)` instead
and the factors are the rates themselves (the expectation).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

CELLS = ("lstm", "peephole", "cifg", "layer_norm", "retained_readout")
LN_EPS = 1e-5


def gate_names(cell):
    """The names of the per-step activations returned for `cell`, in field order."""
    return ("i", "f", "g", "u", "v", "c") if cell == "retained_readout" else (
        "i", "f", "g", "o", "c")


def _np_sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _np_layer_norm(a):
    mean = a.mean(axis=-1, keepdims=True)
    var = ((a - mean) ** 2).mean(axis=-1, keepdims=True)
    return (a - mean) / np.sqrt(var + LN_EPS)


def _np_step(cell, p, x, h_prev, c_prev, m):
    """One step of one sequence in float64. Returns (h_new, c_new, activations dict)."""
    hidden = c_prev.shape[-1]
    r = h_prev if m is None else h_prev * m
    zx = x @ p["w_x"]
    zh = r @ p["w_h"]
    if cell == "layer_norm":
        z = _np_layer_norm(zx) * p["gain_x"] + _np_layer_norm(zh) * p["gain_h"] + p["b"]
    else:
        z = zx + zh + p["b"]
    blocks = [z[k * hidden:(k + 1) * hidden] for k in range(z.shape[-1] // hidden)]
    if cell == "cifg":
        z_f, z_g, z_o = blocks
        f = _np_sigmoid(z_f)
        i = 1.0 - f
        g = np.tanh(z_g)
        c = f * c_prev + i * g
        o = _np_sigmoid(z_o)
        h = o * np.tanh(c)
        acts = {"i": i, "f": f, "g": g, "o": o}
    elif cell == "retained_readout":
        z_i, z_f, z_g, z_v = blocks
        i, f, g, v = _np_sigmoid(z_i), _np_sigmoid(z_f), np.tanh(z_g), _np_sigmoid(z_v)
        retained = f * c_prev
        c = i * g + retained
        u = np.tanh(retained @ p["w_u"] + p["b_u"])
        h = u * v
        acts = {"i": i, "f": f, "g": g, "u": u, "v": v}
    else:
        z_i, z_f, z_g, z_o = blocks
        if cell == "peephole":
            i = _np_sigmoid(z_i + p["w_ci"] * c_prev)
            f = _np_sigmoid(z_f + p["w_cf"] * c_prev)
        else:
            i, f = _np_sigmoid(z_i), _np_sigmoid(z_f)
        g = np.tanh(z_g)
        c = f * c_prev + i * g
        if cell == "peephole":
            o = _np_sigmoid(z_o + p["w_co"] * c)
        else:
            o = _np_sigmoid(z_o)
        if cell == "layer_norm":
            h = o * np.tanh(_np_layer_norm(c) * p["gain_c"] + p["bias_c"])
        else:
            h = o * np.tanh(c)
        acts = {"i": i, "f": f, "g": g, "o": o}
    if p.get("w_p") is not None:
        h = h @ p["w_p"]
    return h, c, acts


def flat_params(params, convert):
    """The fields of an `LSTMParams`-like object (and its cell weights) as a dict."""
    p = {"w_x": params.w_x, "w_h": params.w_h, "b": params.b}
    if getattr(params, "w_p", None) is not None:
        p["w_p"] = params.w_p
    cell_weights = getattr(params, "cell", None)
    if cell_weights is not None:
        p.update(cell_weights._asdict())
    return {k: convert(v) for k, v in p.items()}


def _check_cell(cell, p):
    want = {"lstm": set(), "cifg": set(), "peephole": {"w_ci", "w_cf", "w_co"},
            "layer_norm": {"gain_x", "gain_h", "gain_c", "bias_c"},
            "retained_readout": {"w_u", "b_u"}}[cell]
    have = set(p) - {"w_x", "w_h", "b", "w_p"}
    assert have == want, f"params for {cell!r} have cell weights {sorted(have)}"


def numpy_variant_lstm(params, xs, *, cell, initial_state=None, seq_lengths=None,
                       reverse=False, recurrent_mask=None, keep_h=None, keep_c=None,
                       zoneout=(0.0, 0.0)):
    """float64 reference. Returns (hs (N, T, R), (h (N, R), c (N, H)), gates dict of (N, T, H))."""
    p = flat_params(params, lambda a: np.asarray(a, np.float64))
    _check_cell(cell, p)
    xs = np.asarray(xs, np.float64)
    n_seq, num_steps, _ = xs.shape
    hidden = p["w_x"].shape[-1] // (3 if cell == "cifg" else 4)
    out_size = p["w_h"].shape[0]
    if initial_state is None:
        h0 = np.zeros((n_seq, out_size))
        c0 = np.zeros((n_seq, hidden))
    else:
        h0 = np.asarray(initial_state[0], np.float64)
        c0 = np.asarray(initial_state[1], np.float64)
    lengths = [num_steps] * n_seq if seq_lengths is None else [int(n) for n in seq_lengths]
    hs = np.zeros((n_seq, num_steps, out_size))
    acts_out = {k: np.zeros((n_seq, num_steps, hidden)) for k in gate_names(cell)}
    final_h, final_c = np.zeros((n_seq, out_size)), np.zeros((n_seq, hidden))
    for n in range(n_seq):
        h, c = h0[n].copy(), c0[n].copy()
        m = None if recurrent_mask is None else np.asarray(recurrent_mask[n], np.float64)
        order = range(lengths[n])
        for t in (reversed(order) if reverse else order):
            h_new, c_new, acts = _np_step(cell, p, xs[n, t], h, c, m)
            kh = zoneout[0] if keep_h is None else np.asarray(keep_h[t, n], np.float64)
            kc = zoneout[1] if keep_c is None else np.asarray(keep_c[t, n], np.float64)
            h = kh * h + (1.0 - kh) * h_new
            c = kc * c + (1.0 - kc) * c_new
            hs[n, t] = h
            for k, v in acts.items():
                acts_out[k][n, t] = v
            acts_out["c"][n, t] = c
        final_h[n], final_c[n] = h, c
    return hs, (final_h, final_c), acts_out


def _jnp_layer_norm(a):
    mean = jnp.mean(a, axis=-1, keepdims=True)
    var = jnp.mean((a - mean) ** 2, axis=-1, keepdims=True)
    return (a - mean) / jnp.sqrt(var + LN_EPS)


def _jnp_sigmoid(a):
    return 1.0 / (1.0 + jnp.exp(-a))


def _jnp_step(cell, p, x, h_prev, c_prev, m):
    """One step of one sequence in jnp; mirrors `_np_step`."""
    hidden = c_prev.shape[-1]
    r = h_prev if m is None else h_prev * m
    zx = x @ p["w_x"]
    zh = r @ p["w_h"]
    if cell == "layer_norm":
        z = _jnp_layer_norm(zx) * p["gain_x"] + _jnp_layer_norm(zh) * p["gain_h"] + p["b"]
    else:
        z = zx + zh + p["b"]
    blocks = [z[k * hidden:(k + 1) * hidden] for k in range(z.shape[-1] // hidden)]
    if cell == "cifg":
        z_f, z_g, z_o = blocks
        f = _jnp_sigmoid(z_f)
        i = 1.0 - f
        g = jnp.tanh(z_g)
        c = f * c_prev + i * g
        o = _jnp_sigmoid(z_o)
        h = o * jnp.tanh(c)
        acts = {"i": i, "f": f, "g": g, "o": o}
    elif cell == "retained_readout":
        z_i, z_f, z_g, z_v = blocks
        i, f, g, v = _jnp_sigmoid(z_i), _jnp_sigmoid(z_f), jnp.tanh(z_g), _jnp_sigmoid(z_v)
        retained = f * c_prev
        c = i * g + retained
        u = jnp.tanh(retained @ p["w_u"] + p["b_u"])
        h = u * v
        acts = {"i": i, "f": f, "g": g, "u": u, "v": v}
    else:
        z_i, z_f, z_g, z_o = blocks
        if cell == "peephole":
            i = _jnp_sigmoid(z_i + p["w_ci"] * c_prev)
            f = _jnp_sigmoid(z_f + p["w_cf"] * c_prev)
        else:
            i, f = _jnp_sigmoid(z_i), _jnp_sigmoid(z_f)
        g = jnp.tanh(z_g)
        c = f * c_prev + i * g
        o = _jnp_sigmoid(z_o + p["w_co"] * c) if cell == "peephole" else _jnp_sigmoid(z_o)
        if cell == "layer_norm":
            h = o * jnp.tanh(_jnp_layer_norm(c) * p["gain_c"] + p["bias_c"])
        else:
            h = o * jnp.tanh(c)
        acts = {"i": i, "f": f, "g": g, "o": o}
    if "w_p" in p:
        h = h @ p["w_p"]
    return h, c, acts


@functools.partial(jax.jit, static_argnums=0)
def _jnp_zoned_step(cell, p, xs, n, t, h, c, recurrent_mask, keep_h, keep_c, zoneout):
    """Step t of sequence n (traced indices, so one compilation serves every step), then
    zoneout. Returns (h_t, c_t, activations)."""
    m = None if recurrent_mask is None else recurrent_mask[n]
    h_new, c_new, acts = _jnp_step(cell, p, xs[n, t], h, c, m)
    kh = zoneout[0] if keep_h is None else keep_h[t, n].astype(h.dtype)
    kc = zoneout[1] if keep_c is None else keep_c[t, n].astype(c.dtype)
    return kh * h + (1.0 - kh) * h_new, kc * c + (1.0 - kc) * c_new, acts


def jax_variant_lstm(params, xs, initial_state, *, cell, seq_lengths, reverse=False,
                     recurrent_mask=None, keep_h=None, keep_c=None, zoneout=(0.0, 0.0)):
    """Differentiable jnp reference: (hs (N, T, R), (h, c), gates dict of (N, T, H)).

    `params` an `LSTMParams`-like pytree, xs (N, T, I), `initial_state` (h (N, R), c (N, H)),
    `seq_lengths` a tuple of Python ints (static). Masks as in `numpy_variant_lstm`. The loop
    over sequences and steps is Python; only the step itself is jitted.
    """
    p = flat_params(params, jnp.asarray)
    _check_cell(cell, p)
    n_seq, num_steps, _ = xs.shape
    zoneout = tuple(float(z) for z in zoneout)
    hs_rows, finals_h, finals_c = [], [], []
    act_rows = {k: [] for k in gate_names(cell)}
    for n in range(n_seq):
        h, c = initial_state[0][n], initial_state[1][n]
        hs_t = [jnp.zeros_like(h)] * num_steps
        acts_t = {k: [jnp.zeros_like(c)] * num_steps for k in act_rows}
        order = range(seq_lengths[n])
        for t in (reversed(order) if reverse else order):
            h, c, acts = _jnp_zoned_step(cell, p, xs, n, t, h, c, recurrent_mask, keep_h,
                                         keep_c, zoneout)
            hs_t[t] = h
            for k, v in acts.items():
                acts_t[k][t] = v
            acts_t["c"][t] = c
        hs_rows.append(jnp.stack(hs_t))
        for k, rows in act_rows.items():
            rows.append(jnp.stack(acts_t[k]))
        finals_h.append(h)
        finals_c.append(c)
    gates = {k: jnp.stack(v) for k, v in act_rows.items()}
    return jnp.stack(hs_rows), (jnp.stack(finals_h), jnp.stack(finals_c)), gates
