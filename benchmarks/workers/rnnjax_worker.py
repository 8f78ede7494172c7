"""rnnjax under the speed benchmark: ``TrainState`` + ``rmsprop`` + ``rnnjax.train.fit``.

Epoch seconds are ``fit``'s own per-epoch ``seconds`` log (the training epoch as one compiled
``lax.scan`` plus validation, until the metrics are on the host). Options ``implementation``
('auto', 'scan' or 'fused') and ``hoist`` (bool) are ``Classifier(implementation=...,
hoist_input_projection=...)``. See ``common`` for the job.
"""

import time

import jax
from common import EPSILON, RHO, run_worker

import rnnjax
from rnnjax import Classifier, LayerSpec, ModelConfig, TrainState, fit, fused, init_params, rmsprop


def versions() -> dict:
    return {
        "rnnjax": rnnjax.__version__,
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
        "fused_kernels": fused.unavailable_reason() or "available",
    }


def train(job: dict, arrays: dict) -> dict:
    spec = job["model"]
    config = ModelConfig(
        spec["vocab_size"],
        spec["embed_dim"],
        tuple(LayerSpec(**layer) for layer in spec["layers"]),
        num_classes=spec["num_classes"],
        mask_zero=spec["mask_zero"],
    )
    options = job["options"]
    model = Classifier(
        config,
        hoist_input_projection=options.get("hoist", True),
        implementation=options.get("implementation", "auto"),
    )
    state = TrainState.create(
        model=model,
        params=init_params(config, jax.random.key(job["seed"])),
        tx=rmsprop(job["learning_rate"], rho=RHO, epsilon=EPSILON),
        rng=jax.random.key(job["seed"] + 1),
        loss="binary_crossentropy" if config.num_classes == 1 else "categorical_crossentropy",
    )
    start = time.perf_counter()
    result = fit(
        state,
        (arrays["x_train"], arrays["y_train"]),
        (arrays["x_val"], arrays["y_val"]),
        epochs=job["epochs"],
        batch_size=job["batch_size"],
        seed=job["seed"],
    )
    fit_seconds = time.perf_counter() - start
    history = result.history.history
    return {
        "epoch_seconds": history["seconds"],
        "fit_seconds": fit_seconds,
        "train_loss": history["loss"][-1],
        "val_loss": history["val_loss"][-1],
    }


if __name__ == "__main__":
    run_worker(versions, train)
