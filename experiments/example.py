"""The functional core at work: an LSTM learns the adding problem from synthetic data.

Adding problem (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016 settings): each step has a
value drawn from U[0, 1] and a marker; exactly one marker is set in each half of the sequence,
and the target is the sum of the two marked values. Predicting the mean (1.0) scores an MSE of
about 0.167; to do better the LSTM must remember a marked value across the sequence.

    python -m experiments.example                 # about half a minute on 2 CPU cores
    python -m experiments.example --steps 100 --seq-len 20

Prints the data and parameter shapes, the loss while training, the test MSE against the
baseline, and what the gates did on one test sequence.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxlstm


def adding_batch(key: jax.Array, batch: int, seq_len: int) -> tuple[jax.Array, jax.Array]:
    """Inputs (batch, T, 2): [value, marker]; targets (batch,): sum of the two marked values."""
    key_values, key_first, key_second = jax.random.split(key, 3)
    values = jax.random.uniform(key_values, (batch, seq_len))
    half = seq_len // 2
    first = jax.random.randint(key_first, (batch,), 0, half)
    second = jax.random.randint(key_second, (batch,), half, seq_len)
    steps = jnp.arange(seq_len)
    markers = (steps == first[:, None]) | (steps == second[:, None])
    targets = jnp.sum(values * markers, axis=1)
    return jnp.stack([values, markers.astype(values.dtype)], axis=-1), targets


def init_model(key: jax.Array, hidden_size: int) -> dict:
    key_lstm, key_readout = jax.random.split(key)
    return {
        "lstm": jaxlstm.init_lstm(key_lstm, input_size=2, hidden_size=hidden_size),
        "readout_w": jax.random.normal(key_readout, (hidden_size,)) / jnp.sqrt(hidden_size),
        "readout_b": jnp.ones(()),  # start at the mean-predicting baseline
    }


def predict(model: dict, xs: jax.Array) -> jax.Array:
    _, final_state = jaxlstm.lstm(model["lstm"], xs)
    return final_state.h @ model["readout_w"] + model["readout_b"]


def mse(model: dict, xs: jax.Array, targets: jax.Array) -> jax.Array:
    return jnp.mean((predict(model, xs) - targets) ** 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq-len", type=int, default=30)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    key = jax.random.key(args.seed)
    key_model, key_test, key_train = jax.random.split(key, 3)
    model = init_model(key_model, args.hidden_size)
    test_xs, test_targets = adding_batch(key_test, 1000, args.seq_len)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; jaxlstm {jaxlstm.__version__}")
    print(f"adding problem: T={args.seq_len}, inputs {test_xs.shape[1:]} per sequence")
    print("params:", {k: tuple(v.shape) for k, v in model["lstm"]._asdict().items()
                      if v is not None})

    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.learning_rate))
    opt_state = optimizer.init(model)

    @jax.jit
    def train_step(model, opt_state, key):
        xs, targets = adding_batch(key, args.batch_size, args.seq_len)
        loss, grads = jax.value_and_grad(mse)(model, xs, targets)
        updates, opt_state = optimizer.update(grads, opt_state, model)
        return optax.apply_updates(model, updates), opt_state, loss

    baseline = float(jnp.mean((test_targets - 1.0) ** 2))
    print(f"test MSE before training: {float(mse(model, test_xs, test_targets)):.4f} "
          f"(predict-the-mean baseline {baseline:.4f})")
    start = time.perf_counter()
    for step, step_key in enumerate(jax.random.split(key_train, args.steps), start=1):
        model, opt_state, loss = train_step(model, opt_state, step_key)
        if step % max(1, args.steps // 10) == 0 or step == args.steps:
            print(f"  step {step:5d}  train MSE {float(loss):.4f}")
    elapsed = time.perf_counter() - start
    test_mse = float(mse(model, test_xs, test_targets))
    print(f"trained {args.steps} steps in {elapsed:.1f} s")
    print(f"test MSE after training: {test_mse:.4f} ({baseline / test_mse:.1f}x below baseline)")

    # Looking inside: the gates on one test sequence.
    xs = test_xs[0]
    _, _, gate_acts = jaxlstm.lstm(model["lstm"], xs, return_gates=True)
    marked = np.flatnonzero(np.asarray(xs[:, 1]))
    print(f"one test sequence: marked steps {marked.tolist()}, "
          f"target {float(test_targets[0]):.3f}, prediction {float(predict(model, xs)):.3f}")
    print("mean gate activations over units, at the marked steps and elsewhere:")
    unmarked = np.setdiff1d(np.arange(args.seq_len), marked)
    for name in ("i", "f", "o"):
        act = np.asarray(getattr(gate_acts, name)).mean(axis=-1)
        print(f"  {name}: marked {act[marked].mean():.3f}  elsewhere {act[unmarked].mean():.3f}")


if __name__ == "__main__":
    main()
