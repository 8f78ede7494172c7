"""Per-model throughput of K models trained at once (``fit_ensemble``) against one model.

    python benchmarks/ensemble_scaling.py --ks 1,2,4,8 --epochs 3 [--model lstm8|gru8]

IMDB-shaped synthetic arrays (``speed_data``), RMSprop 1e-4, batch 64; prints the median seconds
per epoch (train + validation) for K models and the seconds per model-epoch.
"""

import argparse
import os
import platform
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.speed_data import SHAPES, synthetic  # noqa: E402
from rnnjax import Classifier, LayerSpec, ModelConfig, init_params, losses, metrics  # noqa: E402
from rnnjax.batches import seed_key  # noqa: E402
from rnnjax.ensemble import fit_ensemble, stack  # noqa: E402
from rnnjax.optimizers import rmsprop  # noqa: E402
from rnnjax.train_state import TrainState  # noqa: E402

MODELS = {"lstm8": LayerSpec("lstm", 8), "gru8": LayerSpec("gru", 8)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,2,4,8")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", default="lstm8", choices=sorted(MODELS))
    args = parser.parse_args()
    arrays = synthetic(SHAPES["imdb"], seed=0)
    train, val = (arrays["x_train"], arrays["y_train"]), (arrays["x_val"], arrays["y_val"])
    config = ModelConfig(500, 16, (MODELS[args.model],))
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{jax.devices()[0].platform}, {args.model}, {args.epochs} epochs"
    )
    print("| K | s/epoch (K models) | s per model-epoch | vs K=1 |")
    print("|---|---|---|---|")
    base = None
    for k in map(int, args.ks.split(",")):
        states = []
        for seed in range(k):
            init_key, dropout_key = jax.random.split(seed_key(seed))
            states.append(
                TrainState.create(
                    model=Classifier(config),
                    params=init_params(config, init_key),
                    tx=rmsprop(1e-4),
                    rng=dropout_key,
                    loss=losses.BinaryCrossentropy(from_logits=True),
                    metrics=[metrics.BinaryAccuracy(name="accuracy", threshold=0.0)],
                )
            )
        result = fit_ensemble(
            stack(states),
            *train,
            validation_data=val,
            seeds=list(range(k)),
            epochs=args.epochs,
            batch_size=64,
            verbose=0,
        )
        seconds = float(np.median([e["seconds"] for e in result.histories[0][1:]]))
        per_model = seconds / k
        base = base or per_model
        print(f"| {k} | {seconds:.2f} | {per_model:.3f} | {base / per_model:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
