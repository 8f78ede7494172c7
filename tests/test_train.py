"""The fit loop on small synthetic data: Keras' means, determinism, chunking, early stopping,
checkpoints, NaN handling, and ``fit``/``evaluate``/``predict`` for models that are not the
tutorials' (regression, sequence labelling, several inputs and outputs, weights)."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import (
    RNN,
    Classifier,
    LayerSpec,
    LSTMCell,
    ModelConfig,
    init_params,
    losses,
    metrics,
)
from rnnjax.callbacks import Callback, LambdaCallback, TerminateOnNaN
from rnnjax.checkpoint import BackupAndRestore, ModelCheckpoint, load_model
from rnnjax.early_stopping import EarlyStopping
from rnnjax.optimizers import adam, rmsprop
from rnnjax.train import evaluate, fit, predict
from rnnjax.train_state import TrainState

CONFIG = ModelConfig(50, 8, (LayerSpec("lstm", 6, dropout=0.2),))
BCE = losses.BinaryCrossentropy(from_logits=True)
ACCURACY = metrics.BinaryAccuracy(name="accuracy", threshold=0.0)


def _data(rng, n, time=12):
    """A learnable task: label 1 when the last tokens are mostly small ids."""
    ids = rng.integers(1, 50, size=(n, time)).astype(np.int32)
    labels = ((ids[:, -4:] < 25).sum(1) >= 2).astype(np.int32)
    return ids, labels


def _state(seed=0, lr=1e-2, tx=None, **objective):
    init_key, dropout_key = jax.random.split(jax.random.key(seed))
    return TrainState.create(
        model=Classifier(CONFIG),
        params=init_params(CONFIG, init_key),
        tx=tx or rmsprop(lr),
        rng=dropout_key,
        **({"loss": BCE, "metrics": [ACCURACY]} | objective),
    )


@pytest.fixture(scope="module")
def splits():
    rng = np.random.default_rng(1)
    return _data(rng, 203), _data(rng, 61)  # 203 = 6 batches of 32 + a partial batch of 11


def _strip(history):
    return [{k: v for k, v in logs.items()} for logs in history.epochs]


def test_training_learns_and_logs_keras_keys(splits):
    (x, y), val = splits
    result = fit(_state(), x, y, validation_data=val, epochs=6, batch_size=32, verbose=0)
    history = result.history.history
    assert list(history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert history["loss"][-1] < history["loss"][0] and history["val_accuracy"][-1] > 0.6
    assert result.history.epoch == list(range(6))


def test_same_seed_gives_identical_history(splits):
    (x, y), val = splits
    run = lambda seed: fit(  # noqa: E731
        _state(), x, y, validation_data=val, epochs=3, batch_size=32, seed=seed, verbose=0
    )
    first, second, third = run(5), run(5), run(6)
    assert _strip(first.history) == _strip(second.history)
    jax.tree.map(np.testing.assert_array_equal, first.state.params, second.state.params)
    assert _strip(third.history) != _strip(first.history)


@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_chunked_epochs_equal_the_whole_epoch_call(splits, steps_per_execution):
    (x, y), val = splits
    whole = fit(_state(), x, y, validation_data=val, epochs=2, batch_size=32, verbose=0)
    chunks = []
    chunked = fit(
        _state(),
        x,
        y,
        validation_data=val,
        epochs=2,
        batch_size=32,
        verbose=0,
        steps_per_execution=steps_per_execution,
        callbacks=[LambdaCallback(on_train_batch_end=lambda batch, logs: chunks.append(batch))],
    )
    assert _strip(whole.history) == _strip(chunked.history)  # bitwise
    jax.tree.map(np.testing.assert_array_equal, whole.state.params, chunked.state.params)
    expected = [min(s + steps_per_execution, 7) - 1 for s in range(0, 7, steps_per_execution)]
    assert chunks == expected * 2


def test_evaluate_is_the_exact_mean_over_every_example(splits):
    """The padded last batch counts nowhere: the mean is over all N, as Keras reports."""
    _, (ids, labels) = splits
    state = _state()
    logits = np.asarray(Classifier(CONFIG).apply({"params": state.params}, jnp.asarray(ids)))
    p = 1 / (1 + np.exp(-logits[:, 0].astype(np.float64)))
    bce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    correct = (logits[:, 0] > 0) == labels
    for batch_size in (7, 32, 61, 100, 10**9):
        logs = evaluate(state, ids, labels, batch_size=batch_size)
        assert logs["loss"] == pytest.approx(bce.mean(), rel=1e-5)
        assert logs["accuracy"] == pytest.approx(correct.mean())
    outputs = predict(state, ids, batch_size=16)
    assert outputs.shape == (61, 1)
    np.testing.assert_allclose(outputs, logits, rtol=1e-5, atol=1e-6)


def test_train_loss_is_the_batch_size_weighted_mean_of_batch_losses(splits):
    """Keras: epoch loss = sum_b loss_b * n_b / N over batches (pre-update, dropout on)."""
    (x, y), _ = splits
    state = _state(lr=1e-9)  # parameters barely move: every batch sees the initial model
    result = fit(state, x, y, epochs=1, batch_size=32, verbose=0)
    plain = evaluate(state, x, y, batch_size=32)["loss"]
    # Without dropout noise this would be exact; dropout makes it an estimate of the same mean.
    assert result.history.epochs[0]["loss"] == pytest.approx(plain, abs=0.05)


def test_early_stopping_restores_the_best_epoch_and_the_checkpoint_holds_it(splits, tmp_path):
    (x, y), val = splits
    result = fit(
        _state(lr=0.3),  # validation loss bounces: the run stops early
        x,
        y,
        validation_data=val,
        epochs=30,
        batch_size=32,
        verbose=0,
        callbacks=[
            EarlyStopping(patience=1, restore_best_weights=True),
            ModelCheckpoint(str(tmp_path / "best"), save_best_only=True),
        ],
    )
    stopping = result.callbacks[0]
    val_losses = result.history.history["val_loss"]
    assert stopping.state.stop_training and len(result.history) == stopping.stopped_epoch + 1
    assert stopping.best_epoch == int(np.argmin(val_losses))
    assert evaluate(result.state, *val, batch_size=32)["loss"] == pytest.approx(min(val_losses))
    restored = load_model(str(tmp_path / "best"), _state())  # a model's own abstract state
    jax.tree.map(np.testing.assert_array_equal, restored.params, result.state.params)
    assert evaluate(restored, *val)["loss"] == pytest.approx(min(val_losses))


def test_a_nan_loss_ends_training_where_keras_does(splits):
    """A learning rate that turns NaN at step 17 (epoch 3, step 3 of 7): the step after it has
    a NaN loss, TerminateOnNaN stops, the epoch still validates and is recorded (Keras)."""
    (x, y), val = splits
    schedule = lambda count: jnp.where(count == 16, jnp.nan, 1e-2)  # noqa: E731
    result = fit(
        _state(tx=rmsprop(schedule)),
        x,
        y,
        validation_data=val,
        epochs=5,
        batch_size=32,
        verbose=0,
        callbacks=[EarlyStopping(patience=5, restore_best_weights=True), TerminateOnNaN()],
    )
    assert result.nan_at == (3, 4) and len(result.history) == 3
    assert np.isnan(result.history.epochs[2]["loss"])
    jax.tree.map(lambda p: np.testing.assert_array_equal(np.isfinite(p), True), result.state.params)


def test_without_terminate_on_nan_training_goes_on(splits):
    (x, y), _ = splits
    schedule = lambda count: jnp.where(count == 3, jnp.nan, 1e-2)  # noqa: E731
    result = fit(_state(tx=rmsprop(schedule)), x, y, epochs=2, batch_size=32, verbose=0)
    assert len(result.history) == 2 and int(result.state.step) == 14


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda x, y: (x, y[:-1]), r"y.* has 202 examples but .*x.* has 203"),
        (lambda x, y: (x[:0], y[:0]), "is empty"),
        (
            lambda x, y: (np.where(x == x[3, 4], 50, x), y),
            r"training data ids\[3, 4\] = 50 is outside the vocabulary \[0, 50\)",
        ),
        (lambda x, y: (x, np.where(np.arange(len(y)) == 7, 2, y)), r"targets\[7\] = 2 is outside"),
    ],
)
def test_bad_training_data_is_one_clear_error(splits, mutate, message):
    (x, y), _ = splits
    with pytest.raises(ValueError, match=message):
        fit(_state(), *mutate(x, y), epochs=1, batch_size=32, verbose=0)


def test_bad_arguments(splits):
    (x, y), _ = splits
    for kwargs, message in (
        (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
        (dict(epochs=0), "epochs must be a positive integer"),
        (dict(verbose=3), "verbose must be"),
        (dict(validation_split=1.0), r"validation_split must be in \[0, 1\)"),
        (dict(steps_per_execution=0), "steps_per_execution must be >= 1"),
        (dict(class_weight={0: 1.0}, sample_weight=np.ones(203)), "not both"),
        (dict(validation_batch_size=0, validation_split=0.2), "batch_size must be a positive"),
        (dict(validation_freq=0), "validation_freq must be >= 1"),
        (dict(validation_freq="2"), "validation_freq must be an int or a list"),
        (dict(steps_per_epoch=2), "steps_per_epoch is for a data source without a length"),
        (dict(initial_epoch=-1), "initial_epoch must be an integer >= 0"),
        (dict(class_weight={"pos": 2.0}), "class_weight keys are class ids"),
        (dict(sample_weight={"out": np.ones(203)}), "sample_weight must be one array"),
    ):
        with pytest.raises(ValueError, match=message):
            fit(_state(), x, y, **({"verbose": 0} | kwargs))
    with pytest.raises(ValueError, match="needs a state with an optimizer and a loss"):
        fit(TrainState.create(model=Classifier(CONFIG), params=_state().params), x, y)
    module = Classifier(CONFIG)  # as an apply function: no input check of its own

    def apply(params, model_state, ids, *, training, rngs):
        return module.apply({"params": params}, ids, training=training, rngs=rngs), model_state

    with pytest.raises(ValueError, match="predict data is empty"):
        predict(_state().replace(model=apply), x[:0])


def test_initial_epoch_continues_a_run_by_hand(splits):
    """Keras' ``initial_epoch``: 2 epochs, then ``fit(state, epochs=4, initial_epoch=2)`` with the
    state they ended with, is the 4-epoch run (its epochs 2 and 3, bitwise)."""
    (x, y), validation = splits
    options = dict(batch_size=32, verbose=0, validation_data=validation, seed=5)
    whole = fit(_state(), x, y, epochs=4, **options)
    first = fit(_state(), x, y, epochs=2, **options)
    rest = fit(first.state, x, y, epochs=4, initial_epoch=2, **options)
    assert rest.history.epoch == [2, 3]
    assert _strip(rest.history) == _strip(whole.history)[2:]
    assert len(fit(_state(), x, y, epochs=2, initial_epoch=2, **options).history) == 0


def test_keras_forms_of_the_arguments(splits):
    """What Keras accepts: ``callbacks=None`` or one callback, numpy integers for ``epochs``, a
    list of (1-based) epochs to validate after as ``validation_freq``."""
    (x, y), validation = splits
    ends = []
    one = LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(epoch))
    options = dict(batch_size=64, verbose=0, validation_data=validation)
    fit(_state(), x, y, epochs=np.int64(2), callbacks=one, **options)
    assert ends == [0, 1]
    result = fit(_state(), x, y, epochs=3, callbacks=None, validation_freq=[1, 3], **options)
    assert ["val_loss" in logs for logs in result.history.epochs] == [True, False, True]


def test_a_loss_the_model_cannot_use_is_refused(splits):
    """A binary model (one logit) with sparse categorical cross-entropy would train on a loss
    of 0; class ids beyond a sparse model's outputs would count 0 in Keras: both refused."""
    (x, y), _ = splits
    sparse = losses.SparseCategoricalCrossentropy(from_logits=True)
    with pytest.raises(ValueError, match="needs one output per class .* model gives 1"):
        fit(_state(loss=sparse), x, y, epochs=1, verbose=0)
    config = ModelConfig(50, 8, (LayerSpec("gru", 4),), num_classes=3)
    three = TrainState.create(
        model=Classifier(config),
        params=init_params(config, jax.random.key(0)),
        tx=adam(1e-3),
        loss=sparse,
    )
    with pytest.raises(ValueError, match=r"targets\[0\] = 3 is not a class id in \[0, 3\)"):
        fit(three, x, np.full(len(y), 3), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="y_true and y_pred must have the same shape"):
        fit(three.replace(objective=_state().objective), x, y % 3, epochs=1, verbose=0)


def test_validation_split_is_keras_last_fraction(splits):
    (x, y), _ = splits
    result = fit(_state(), x, y, validation_split=0.25, epochs=1, verbose=0)
    held_out = evaluate(result.state, x[152:], y[152:])  # 203 - floor(203 * 0.75) = 51 rows
    assert result.history.epochs[0]["val_loss"] == pytest.approx(held_out["loss"])


# Models that are not the tutorials' -------------------------------------------------------------


class SequenceTagger(nn.Module):
    """Per-step labels: Embedding -> LSTM(return_sequences) -> Dense(C) per step."""

    classes: int = 3

    @nn.compact
    def __call__(self, ids, training: bool = False):
        x = nn.Embed(20, 8)(ids)
        x = RNN(LSTMCell(8), return_sequences=True)(x, training=training)
        return nn.Dense(self.classes)(x)


def test_sequence_labelling_with_per_step_targets_and_weights():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 20, size=(40, 6)).astype(np.int32)
    tags = (ids % 3).astype(np.int32)  # [N, T]: a tag per step
    weights = (ids > 0).astype(np.float32)  # per step: padding steps count nowhere
    model = SequenceTagger()
    state = TrainState.create(
        model=model,
        params=model.init(jax.random.key(0), ids[:1])["params"],
        tx=adam(5e-2),
        loss=losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
    )
    result = fit(state, ids, tags, sample_weight=weights, epochs=25, batch_size=16, verbose=0)
    logs = evaluate(result.state, ids, tags, sample_weight=weights)
    assert logs["accuracy"] > 0.9 and logs["loss"] < result.history.epochs[0]["loss"]
    assert predict(result.state, ids).shape == (40, 6, 3)


class AddingProblem(nn.Module):
    """Hochreiter & Schmidhuber's adding problem: float sequences [N, T, 2] -> a float."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(RNN(LSTMCell(16))(x))[..., 0]


def test_regression_on_float_sequences_with_mse_and_mae():
    rng = np.random.default_rng(0)
    n, t = 256, 10
    values = rng.uniform(0, 1, size=(n, t))
    marks = np.zeros((n, t))
    for row in marks:
        row[rng.choice(t, 2, replace=False)] = 1
    x = np.stack([values, marks], -1).astype(np.float32)
    y = (values * marks).sum(1).astype(np.float32)  # [N] floats
    model = AddingProblem()
    state = TrainState.create(
        model=model,
        params=model.init(jax.random.key(0), x[:1])["params"],
        tx=adam(1e-2),
        loss="mse",
        metrics=["mae"],
    )
    result = fit(state, x, y, validation_split=0.25, epochs=40, batch_size=32, verbose=0)
    baseline = float(np.mean((y - y.mean()) ** 2))  # predicting the mean
    assert result.history.epochs[-1]["val_loss"] < 0.5 * baseline
    assert set(result.history.history) == {"loss", "mae", "val_loss", "val_mae"}


class TwoHeads(nn.Module):
    """Inputs {"ids", "mask"}; outputs {"sentiment": [N, 1] logits, "length": [N] float}."""

    @nn.compact
    def __call__(self, inputs):
        x = nn.Embed(30, 8)(inputs["ids"])
        h = RNN(LSTMCell(8))(x, mask=inputs["mask"])
        return {"sentiment": nn.Dense(1)(h), "length": nn.Dense(1)(h)[..., 0]}


def test_dict_inputs_and_two_outputs_with_loss_weights():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 30, size=(64, 7)).astype(np.int32)
    mask = rng.random((64, 7)) < 0.8
    x = {"ids": ids, "mask": mask}
    y = {
        "sentiment": (ids[:, -1] < 15).astype(np.float32)[:, None],
        "length": mask.sum(1).astype(np.float32),
    }
    model = TwoHeads()
    state = TrainState.create(
        model=model,
        params=model.init(jax.random.key(0), jax.tree.map(lambda a: a[:1], x))["params"],
        tx=adam(1e-2),
        loss={"sentiment": BCE, "length": "mse"},
        loss_weights={"sentiment": 1.0, "length": 0.1},
        metrics={"sentiment": [ACCURACY]},
    )
    result = fit(state, x, y, epochs=2, batch_size=16, verbose=0)
    logs = result.history.epochs[-1]
    assert set(logs) == {"loss", "length_loss", "sentiment_loss", "sentiment_accuracy"}
    assert logs["loss"] == pytest.approx(logs["sentiment_loss"] + 0.1 * logs["length_loss"], 1e-5)
    outputs = predict(result.state, x)
    assert outputs["sentiment"].shape == (64, 1) and outputs["length"].shape == (64,)


def test_class_weight_is_keras_per_example_weight(splits):
    (x, y), _ = splits
    weights = {0: 0.5, 1: 2.0}
    with_classes = fit(_state(), x, y, class_weight=weights, epochs=1, verbose=0)
    with_samples = fit(
        _state(), x, y, sample_weight=np.where(y == 1, 2.0, 0.5), epochs=1, verbose=0
    )
    assert _strip(with_classes.history) == _strip(with_samples.history)


def test_one_hot_targets_with_categorical_crossentropy():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, size=(48, 8)).astype(np.int32)
    labels = ids[:, -1] % 3
    config = ModelConfig(50, 8, (LayerSpec("gru", 6),), num_classes=3)
    params = init_params(config, jax.random.key(0))

    def state(loss, *names):
        return TrainState.create(
            model=Classifier(config), params=params, tx=adam(1e-2), loss=loss, metrics=list(names)
        )

    one_hot = np.eye(3, dtype=np.float32)[labels]
    dense = evaluate(
        state(
            losses.CategoricalCrossentropy(from_logits=True),
            "accuracy",
            "top_k_categorical_accuracy",
        ),
        ids,
        one_hot,
    )
    assert set(dense) == {"loss", "accuracy", "top_k_categorical_accuracy"}
    sparse = evaluate(
        state(losses.SparseCategoricalCrossentropy(from_logits=True), "accuracy"), ids, labels
    )
    assert dense["loss"] == pytest.approx(sparse["loss"], rel=1e-6)
    assert dense["accuracy"] == pytest.approx(sparse["accuracy"])


def test_an_apply_function_is_a_model(splits):
    (x, y), _ = splits
    module = Classifier(CONFIG)

    def apply(params, model_state, ids, *, training, rngs):
        return module.apply({"params": params}, ids, training=training, rngs=rngs), model_state

    function_state = _state().replace(model=apply)
    a = fit(function_state, x, y, epochs=1, verbose=0)
    b = fit(_state(), x, y, epochs=1, verbose=0)
    assert _strip(a.history) == _strip(b.history)


class WithBatchNorm(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(1)(x)


def _batch_norm_regression(scale, shift):
    """A ``WithBatchNorm`` state and data ``x ~ N(shift, scale)``, ``y = sum(x)``."""
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * scale + shift
    model = WithBatchNorm()
    variables = model.init(jax.random.key(0), x[:2])
    state = TrainState.create(
        model=model,
        params=variables["params"],
        model_state={"batch_stats": variables["batch_stats"]},
        tx=adam(1e-2),
        loss="mse",
    )
    return state, x, x.sum(1, keepdims=True)


def test_mutable_collections_update_in_training_only():
    state, x, y = _batch_norm_regression(5, 2)
    result = fit(state, x, y, epochs=2, batch_size=16, verbose=0)
    moved = result.state.model_state["batch_stats"]["BatchNorm_0"]["mean"]
    assert not np.allclose(moved, 0.0)
    again = evaluate(result.state, x, y)  # inference reads the running averages, keeps them
    assert np.isfinite(again["loss"])


def test_restoring_the_best_weights_restores_the_batch_statistics_too(tmp_path):
    """Keras' ``restore_best_weights`` sets every weight, the non-trainable moving statistics
    too; also when the best epoch comes back from a backup (a run extended by a second ``fit``).
    """
    state, x, y = _batch_norm_regression(3, 1)

    class Judge(Callback):  # a made-up validation loss: epoch 1 (0-based) is the best
        def __init__(self):
            self.weights = []

        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = [0.5, 0.1, 0.6, 0.7][epoch]
            self.weights.append(
                jax.device_get((self.loop.state.params, self.loop.state.model_state))
            )

    def run(epochs, *extra):
        judge = Judge()
        callbacks = [judge, EarlyStopping(patience=5, restore_best_weights=True), *extra]
        result = fit(state, x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=callbacks)
        return result.state, judge.weights

    final, weights = run(4)
    chex.assert_trees_all_equal((final.params, final.model_state), weights[1])
    assert not np.array_equal(
        weights[1][1]["batch_stats"]["BatchNorm_0"]["mean"],
        weights[3][1]["batch_stats"]["BatchNorm_0"]["mean"],
    )

    backup = str(tmp_path / "backup")
    run(2, BackupAndRestore(backup))  # epochs 0 and 1, the best last
    extended, later = run(4, BackupAndRestore(backup))  # epochs 2 and 3 after the backup
    assert len(later) == 2
    chex.assert_trees_all_equal((extended.params, extended.model_state), weights[1])
