"""Regression on float sequences: the adding problem of the original LSTM paper (Hochreiter and
Schmidhuber, 1997, experiment 4).

Each input is a sequence of T pairs ``(value, marker)``: values uniform in [0, 1], and exactly two
markers set to 1. The target is the sum of the two marked values. Predicting the mean (1.0)
gives a mean squared error of about 1/6; an LSTM learns to remember the marked values, wherever
they are, and gets far below that. Learning-rate drops on plateaus, Keras style.

    python examples/adding_problem.py [--examples 10000] [--time 50] [--epochs 30]
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import numpy as np

import rnnjax as rj


def make_data(n: int, time: int, seed: int = 0):
    """Inputs ``[N, T, 2]`` float32 and targets ``[N]`` float32."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 1, (n, time))
    markers = np.zeros((n, time))
    for row in markers:
        row[rng.choice(time, 2, replace=False)] = 1
    inputs = np.stack([values, markers], axis=-1).astype(np.float32)
    return inputs, (values * markers).sum(axis=1).astype(np.float32)


class Adder(nn.Module):
    """``[batch, time, 2]`` -> ``[batch]``: an LSTM's last state through a linear read-out."""

    units: int = 32

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(rj.RNN(rj.LSTMCell(self.units))(x))[:, 0]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--time", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    x, y = make_data(args.examples, args.time)
    model = Adder()
    state = rj.TrainState.create(
        model=model,
        params=model.init(jax.random.key(0), x[:1])["params"],
        tx=rj.adam(1e-2),
        loss="mse",
        metrics=["mae"],
    )
    result = rj.fit(
        state,
        x,
        y,
        validation_split=0.1,
        batch_size=64,
        epochs=args.epochs,
        verbose=args.verbose,
        callbacks=[
            rj.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3),
            rj.EarlyStopping(monitor="val_loss", patience=8, restore_best_weights=True),
        ],
    )
    logs = result.history.epochs[-1]
    print(f"val mse {logs['val_loss']:.4f} (predicting the mean: {np.var(y):.4f})")
    return logs


if __name__ == "__main__":
    main()
