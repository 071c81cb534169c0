"""Random masks for regularising LSTMs: dropout, variational recurrent dropout and zoneout.

Every function takes an explicit PRNG key; nothing here keeps random state.

* Dropout (inverted): each element is zeroed with probability p and the rest scaled by
  1 / (1 - p), so evaluation needs no rescaling.
* Variational recurrent dropout (Gal & Ghahramani 2016): one dropout mask per sequence on the
  recurrent input, the same at every step, r_t = h_{t-1} * m, z_h = r_t @ W_h. A fresh mask per
  step would inject noise into the memory at every step; one mask per sequence is the Bayesian
  reading of dropout for an RNN. Identity in evaluation.
* Zoneout (Krueger et al. 2017): each unit of h and c keeps its previous value with probability
  p at each step, h_t = k * h_{t-1} + (1 - k) * h~_t with k ~ Bernoulli(p); gradients flow
  through the kept units unchanged, like a stochastic identity connection. In evaluation,
  k = p (the expectation).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


def dropout(key: Array, x: Array, rate: float) -> Array:
    """Inverted dropout: zeroes each element with probability `rate`, scales the rest by
    1 / (1 - rate), so the expectation is unchanged. Identity when `rate` is 0."""
    if rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


class RecurrentMasks(NamedTuple):
    """The masks for one layer and direction over one batch of sequences.

    Attributes:
        recurrent: variational dropout mask on h_{t-1}, (batch..., R), values 0 or 1 / (1 - p);
            None when the rate is 0.
        keep_h: zoneout on h, bool (T, batch..., R), True where a unit keeps h_{t-1}; or None.
        keep_c: zoneout on c, bool (T, batch..., H); or None.
    Time is the leading axis of keep_h and keep_c, indexed by the step's position in the
    sequence (also when the layer runs in reverse).
    """

    recurrent: Array | None
    keep_h: Array | None
    keep_c: Array | None


def draw_recurrent_masks(
    key: Array,
    num_steps: int,
    batch_shape: tuple[int, ...],
    hidden_size: int,
    recurrent_size: int,
    recurrent_dropout: float,
    zoneout_h: float,
    zoneout_c: float,
    dtype: jnp.dtype = jnp.float32,
) -> RecurrentMasks:
    """Draws the training-time masks of `jaxlstm.lstm`'s recurrent regularisation.

        k_rec, k_h, k_c = jax.random.split(key, 3)
        recurrent = bernoulli(k_rec, 1 - recurrent_dropout, batch_shape + (R,)) / (1 - rate)
        keep_h    = bernoulli(k_h, zoneout_h, (T,) + batch_shape + (R,))
        keep_c    = bernoulli(k_c, zoneout_c, (T,) + batch_shape + (H,))

    Args:
        key: a PRNG key.
        num_steps: T.
        batch_shape: the batch dimensions of the inputs.
        hidden_size: H, the cell state's size.
        recurrent_size: R, the size of h (proj_size with a projection, else H).
        recurrent_dropout, zoneout_h, zoneout_c: rates in [0, 1); a mask whose rate is 0 is None.
        dtype: dtype of the recurrent dropout mask.

    Returns:
        `RecurrentMasks(recurrent, keep_h, keep_c)`.
    """
    batch_shape = tuple(batch_shape)
    k_rec, k_h, k_c = jax.random.split(key, 3)
    recurrent = keep_h = keep_c = None
    if recurrent_dropout:
        keep = jax.random.bernoulli(k_rec, 1.0 - recurrent_dropout,
                                    batch_shape + (recurrent_size,))
        recurrent = keep.astype(dtype) / jnp.asarray(1.0 - recurrent_dropout, dtype)
    if zoneout_h:
        keep_h = jax.random.bernoulli(k_h, zoneout_h, (num_steps,) + batch_shape + (recurrent_size,))
    if zoneout_c:
        keep_c = jax.random.bernoulli(k_c, zoneout_c, (num_steps,) + batch_shape + (hidden_size,))
    return RecurrentMasks(recurrent, keep_h, keep_c)
