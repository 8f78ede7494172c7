"""The fit loop on small synthetic data: Keras means, determinism, modes, early stopping."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import Classifier, LayerSpec, ModelConfig, init_params
from rnnjax.checkpoint import Checkpoints, load_model
from rnnjax.early_stopping import EarlyStopping
from rnnjax.losses import binary_crossentropy
from rnnjax.metrics import History
from rnnjax.optimizers import rmsprop
from rnnjax.train import evaluate, fit, predict
from rnnjax.train_state import TrainState

CONFIG = ModelConfig(50, 8, (LayerSpec("lstm", 6, dropout=0.2),))


def _data(rng, n, time=12):
    """A learnable task: label 1 when the last tokens are mostly small ids."""
    ids = rng.integers(1, 50, size=(n, time)).astype(np.int32)
    labels = ((ids[:, -4:] < 25).sum(1) >= 2).astype(np.int32)
    return ids, labels


def _state(seed=0, lr=1e-2):
    model = Classifier(CONFIG)
    init_key, dropout_key = jax.random.split(jax.random.key(seed))
    return TrainState.create(
        model=model,
        params=init_params(CONFIG, init_key),
        tx=rmsprop(lr),
        rng=dropout_key,
        loss="binary_crossentropy",
    )


@pytest.fixture(scope="module")
def splits():
    rng = np.random.default_rng(1)
    return _data(rng, 203), _data(rng, 61)  # 203 = 6 batches of 32 + a partial batch of 11


def test_training_learns_and_logs_keras_keys(splits):
    train, val = splits
    result = fit(_state(), train, val, epochs=6, batch_size=32)
    history = result.history.history
    assert list(history) == ["loss", "accuracy", "val_loss", "val_accuracy", "seconds"]
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_accuracy"][-1] > 0.6


def test_same_seed_gives_identical_history(splits):
    train, val = splits
    first = fit(_state(), train, val, epochs=3, batch_size=32, seed=5)
    second = fit(_state(), train, val, epochs=3, batch_size=32, seed=5)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h.epochs]  # noqa
    assert strip(first.history) == strip(second.history)
    chex.assert_trees_all_equal(first.state.params, second.state.params)
    third = fit(_state(), train, val, epochs=3, batch_size=32, seed=6)
    assert strip(third.history) != strip(first.history)


def test_per_step_mode_equals_the_fused_epoch(splits):
    train, val = splits
    fused = fit(_state(), train, val, epochs=2, batch_size=32)
    stepped = fit(_state(), train, val, epochs=2, batch_size=32, per_step=True)
    for a, b in zip(fused.history.epochs, stepped.history.epochs):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], abs=1e-5)
    chex.assert_trees_all_close(fused.state.params, stepped.state.params, atol=1e-5)


def test_evaluate_is_the_exact_mean_over_every_example(splits):
    """The padded last batch carries weight 0: the mean is over all N, as Keras reports."""
    _, (ids, labels) = splits
    state = _state()
    logits = Classifier(CONFIG).apply({"params": state.params}, jnp.asarray(ids))
    losses = np.asarray(binary_crossentropy(logits, jnp.asarray(labels)))
    correct = (np.asarray(logits)[:, 0] > 0) == labels
    for batch_size in (7, 32, 61, 100):
        logs = evaluate(state, (ids, labels), batch_size)
        assert logs["loss"] == pytest.approx(losses.mean(), rel=1e-5)
        assert logs["accuracy"] == pytest.approx(correct.mean())
    probs = predict(state, ids, batch_size=16)
    chex.assert_shape(probs, (61, 1))
    np.testing.assert_allclose(probs[:, 0], jax.nn.sigmoid(logits[:, 0]), rtol=1e-5)


def test_train_loss_is_the_sample_weighted_mean_of_batch_losses(splits):
    """Keras: epoch loss = sum_b loss_b * n_b / N over batches (pre-update, dropout on)."""
    train, _ = splits
    state = _state(lr=1e-9)  # parameters barely move: every batch sees the initial model
    result = fit(state, train, epochs=1, batch_size=32)
    logits = Classifier(CONFIG).apply({"params": state.params}, jnp.asarray(train[0]))
    # Without dropout noise this would be exact; dropout makes it an estimate of the same mean.
    plain = float(np.mean(binary_crossentropy(logits, jnp.asarray(train[1]))))
    assert result.history.epochs[0]["loss"] == pytest.approx(plain, abs=0.05)


def test_early_stopping_restores_the_best_epoch_weights(splits, tmp_path):
    train, val = splits
    stopping = EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    # A large learning rate makes validation loss bounce, so the run stops early.
    checkpoints = Checkpoints(str(tmp_path / "checkpoints"))
    result = fit(
        _state(lr=0.3),
        train,
        val,
        epochs=30,
        batch_size=32,
        early_stopping=stopping,
        checkpoints=checkpoints,
        checkpoint_config={"model": _model_dict()},
        history_path=str(tmp_path / "history.json"),
    )
    checkpoints.close()
    stopping = result.early_stopping
    assert stopping.stop_training and len(result.history) == stopping.stopped_epoch + 1
    val_losses = result.history.history["val_loss"]
    assert stopping.best_epoch == int(np.argmin(val_losses))
    # The restored weights are the best epoch's: they reproduce its validation loss...
    assert evaluate(result.state, val, 32)["loss"] == pytest.approx(min(val_losses), rel=1e-5)
    # ...and equal the best-only checkpoint, which rebuilds from the directory alone.
    model, params, config = load_model(str(tmp_path / "checkpoints"))
    chex.assert_trees_all_close(params, result.state.params)
    assert model.config == CONFIG == ModelConfig.from_dict(config["model"])
    saved = History.from_json((tmp_path / "history.json").read_text())
    assert [e["val_loss"] for e in saved.epochs] == val_losses


def test_nan_loss_terminates_with_the_epoch_and_step(splits):
    train, val = splits
    state = _state()
    poisoned = jax.tree.map(lambda p: p, state.params)
    poisoned["dense"]["bias"] = jnp.full_like(poisoned["dense"]["bias"], jnp.nan)
    result = fit(state.replace(params=poisoned), train, val, epochs=3, batch_size=32)
    assert result.nan_at == (1, 1) and len(result.history) == 0


def _model_dict():
    import dataclasses

    return dataclasses.asdict(CONFIG)


def test_history_json_round_trip():
    history = History().append({"loss": 1.0, "val_loss": float("nan")}).append({"loss": 0.5})
    again = History.from_json(history.to_json())
    assert again.epochs[1] == {"loss": 0.5} and np.isnan(again.history["val_loss"][0])
    assert os.path.basename(__file__) and json.loads(history.to_json())["epochs"][0]["loss"] == 1.0


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda x, y: (x.astype(np.float32) + 0.5, y), "must hold integer token ids"),
        (
            lambda x, y: (np.where(x == x[3, 4], 50, x), y),
            r"training data ids\[3, 4\] = 50 is "
            r"outside the vocabulary \[0, 50\)",
        ),
        (lambda x, y: (np.where(x == x[0, 0], -1, x), y), "outside the vocabulary"),
        (
            lambda x, y: (x, np.where(np.arange(len(y)) == 7, 2, y)),
            r"training data labels\[7\] = 2 is not a class id in \[0, 2\)",
        ),
        (lambda x, y: (x, y[:-1]), "labels has 202 entries but there are 203 sequences"),
        (lambda x, y: (x[:0], y[:0]), "is empty"),
    ],
)
def test_bad_training_data_is_a_clear_error(splits, mutate, message):
    train, val = splits
    with pytest.raises(ValueError, match=message):
        fit(_state(), mutate(*train), val, epochs=1, batch_size=32)


def test_bad_batch_size_and_predict_ids(splits):
    train, _ = splits
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        fit(_state(), train, epochs=1, batch_size=0)
    with pytest.raises(ValueError, match=r"predict ids\[0, 1\] = 99"):
        predict(_state(), np.asarray([[1, 99]]))


def test_nan_mid_training_stops_and_keeps_the_best_checkpoint(splits, tmp_path):
    """A learning rate that turns NaN at step 17 (epoch 3, step 3 with 7 steps an epoch)."""
    train, val = splits
    schedule = lambda count: jnp.where(count == 16, jnp.nan, 1e-2)  # noqa: E731
    model = Classifier(CONFIG)
    state = TrainState.create(
        model=model,
        params=init_params(CONFIG, jax.random.key(0)),
        tx=rmsprop(schedule),
        rng=jax.random.key(1),
        loss="binary_crossentropy",
    )
    checkpoints = Checkpoints(str(tmp_path))
    result = fit(
        state,
        train,
        val,
        epochs=5,
        batch_size=32,
        checkpoints=checkpoints,
        early_stopping=EarlyStopping(patience=5, restore_best_weights=True),
        checkpoint_config={"model": _model_dict()},
    )
    checkpoints.close()
    # Step 17 applies the NaN update; step 18 is the first whose loss is NaN.
    assert result.nan_at == (3, 4) and len(result.history) == 2
    chex.assert_tree_all_finite(result.state.params)  # the best epoch's weights, restored
    _, params, _ = load_model(str(tmp_path))
    best = int(np.argmin(result.history.history["val_loss"]))
    assert result.early_stopping.best_epoch == best
    chex.assert_trees_all_close(params, result.state.params)
