"""rnnjax under the speed benchmark: ``TrainState`` + ``rmsprop`` + ``rnnjax.train.fit``.

Epoch seconds are ``on_epoch_begin`` to ``on_epoch_end`` (the training epoch as one compiled call
plus validation, until the metrics are on the host), as Keras' workers time theirs. Options
``implementation`` ('auto', 'scan', 'fused', 'cudnn' or 'pallas') and ``hoist`` (bool) are
``Classifier(implementation=..., hoist_input_projection=...)``. A job with ``models_at_once``
K > 1 trains K models (seeds 0..K-1) in one program with ``fit_ensemble``; its epoch seconds are
``fit_ensemble``'s, for all K models together. See ``common`` for the job.
"""

import time

import jax
from common import EPSILON, RHO, run_worker

import rnnjax
from rnnjax import (
    Classifier,
    LambdaCallback,
    LayerSpec,
    ModelConfig,
    TrainState,
    fit,
    fit_ensemble,
    fused,
    init_params,
    losses,
    metrics,
    rmsprop,
    stack,
)


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
    objective = (
        dict(
            loss=losses.BinaryCrossentropy(from_logits=True),
            metrics=[metrics.BinaryAccuracy(name="accuracy", threshold=0.0)],
        )
        if config.num_classes == 1
        else dict(loss=losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    )

    def state(seed: int) -> TrainState:
        return TrainState.create(
            model=model,
            params=init_params(config, jax.random.key(seed)),
            tx=rmsprop(job["learning_rate"], rho=RHO, epsilon=EPSILON),
            rng=jax.random.key(seed + 1),
            **objective,
        )

    count = job.get("models_at_once", 1)
    if count > 1:
        return train_ensemble([state(job["seed"] + k) for k in range(count)], job, arrays)
    seconds, begun = [], []
    timer = LambdaCallback(
        on_epoch_begin=lambda epoch, logs=None: begun.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs=None: seconds.append(time.perf_counter() - begun[-1]),
    )
    start = time.perf_counter()
    result = fit(
        state(job["seed"]),
        arrays["x_train"],
        arrays["y_train"],
        validation_data=(arrays["x_val"], arrays["y_val"]),
        epochs=job["epochs"],
        batch_size=job["batch_size"],
        seed=job["seed"],
        callbacks=[timer],
        verbose=0,
    )
    fit_seconds = time.perf_counter() - start
    history = result.history.history
    return {
        "epoch_seconds": seconds,
        "fit_seconds": fit_seconds,
        "train_loss": history["loss"][-1],
        "val_loss": history["val_loss"][-1],
    }


def train_ensemble(states: list[TrainState], job: dict, arrays: dict) -> dict:
    """K models in one vmapped program; losses are the models' mean."""
    start = time.perf_counter()
    result = fit_ensemble(
        stack(states),
        arrays["x_train"],
        arrays["y_train"],
        validation_data=(arrays["x_val"], arrays["y_val"]),
        seeds=[job["seed"] + k for k in range(len(states))],
        epochs=job["epochs"],
        batch_size=job["batch_size"],
        verbose=0,
    )
    fit_seconds = time.perf_counter() - start
    last = [history[-1] for history in result.histories]
    return {
        "epoch_seconds": [epoch["seconds"] for epoch in result.histories[0]],
        "fit_seconds": fit_seconds,
        "train_loss": sum(logs["loss"] for logs in last) / len(last),
        "val_loss": sum(logs["val_loss"] for logs in last) / len(last),
    }


if __name__ == "__main__":
    run_worker(versions, train)
