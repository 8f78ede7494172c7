"""Callbacks: the hook order and chunking of ``fit``, and the built-ins against literal Keras
3.15.1 output (CSV files and learning-rate traces printed by Keras itself, see each test)."""

import glob
import io
import math
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import Classifier, LayerSpec, ModelConfig, init_params, losses
from rnnjax.callbacks import (
    Callback,
    CallbackList,
    CSVLogger,
    LambdaCallback,
    LearningRateScheduler,
    Loop,
    ProgbarLogger,
    ReduceLROnPlateau,
)
from rnnjax.optimizers import sgd
from rnnjax.tensorboard import TensorBoard
from rnnjax.train import fit
from rnnjax.train_state import TrainState

CONFIG = ModelConfig(30, 4, (LayerSpec("gru", 4),))


def _state(tx=None):
    return TrainState.create(
        model=Classifier(CONFIG),
        params=init_params(CONFIG, jax.random.key(0)),
        tx=tx or sgd(0.1),
        loss=losses.BinaryCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 30, size=(50, 5)).astype(np.int32)
    return ids, (ids[:, -1] < 15).astype(np.int32)


def _loop(lr=0.1):
    state = TrainState.create(
        model=lambda params, model_state, x, **_: (x, model_state),
        params={"w": jnp.zeros(())},
        tx=sgd(lr),
    )
    loop = Loop(state=state, epochs=20, steps_per_epoch=1)
    loop.directions = {"val_loss": "min"}
    return loop


def test_hooks_run_in_keras_order_once_per_chunk(data):
    events = []

    class Recorder(Callback):
        def on_train_begin(self, logs=None):
            events.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            events.append(f"epoch_begin {epoch}")

        def on_train_batch_begin(self, batch, logs=None):
            events.append(f"batch_begin {batch}")

        def on_train_batch_end(self, batch, logs=None):
            events.append(f"batch_end {batch} {sorted(logs)}")

        def on_test_begin(self, logs=None):
            events.append("test_begin")

        def on_test_end(self, logs=None):
            events.append(f"test_end {sorted(logs)}")

        def on_epoch_end(self, epoch, logs=None):
            events.append(f"epoch_end {epoch} {sorted(logs)}")

        def on_train_end(self, logs=None):
            events.append("train_end")

    ids, labels = data
    fit(
        _state(),
        ids,
        labels,
        validation_data=(ids, labels),
        batch_size=16,  # 4 steps an epoch
        epochs=1,
        steps_per_execution=3,
        verbose=0,
        callbacks=[Recorder()],
    )
    assert events == [
        "train_begin",
        "epoch_begin 0",
        "batch_begin 0",
        "batch_end 2 ['accuracy', 'loss']",
        "batch_begin 3",
        "batch_end 3 ['accuracy', 'loss']",
        "test_begin",
        "test_end ['accuracy', 'loss']",
        "epoch_end 0 ['accuracy', 'loss', 'val_accuracy', 'val_loss']",
        "train_end",
    ]


def test_every_hook_gets_a_logs_dict_and_the_old_batch_names_are_called(data):
    """Keras' ``CallbackList`` hands every hook a logs dict (``{}`` where nothing is logged yet),
    so the tutorials' ``LambdaCallback(on_train_begin=lambda logs: ...)`` works;
    ``on_train_batch_*`` forward to the older ``on_batch_*``."""
    calls = []

    def record(hook):
        def hook_function(*args):  # ``logs`` positional: it must be passed
            *index, logs = args
            assert isinstance(logs, dict), (hook, logs)
            calls.append((hook, *index, sorted(logs)))

        return hook_function

    ids, labels = data
    hooks = (*CallbackList.HOOKS, "on_batch_begin", "on_batch_end")
    recorder = LambdaCallback(**{hook: record(hook) for hook in hooks})

    class OldNames(Callback):  # a subclass overriding only the old names
        def on_batch_end(self, batch, logs=None):
            calls.append(("subclass on_batch_end", batch, sorted(logs)))

    fit(
        _state(),
        ids,
        labels,
        validation_data=(ids, labels),
        batch_size=32,
        epochs=1,
        verbose=0,
        callbacks=[recorder, OldNames()],
    )
    metrics = ["accuracy", "loss"]
    assert calls == [
        ("on_train_begin", []),
        ("on_epoch_begin", 0, []),
        ("on_train_batch_begin", 0, []),
        ("on_train_batch_end", 1, metrics),
        ("subclass on_batch_end", 1, metrics),
        ("on_test_begin", []),
        ("on_test_batch_begin", 0, []),
        ("on_test_batch_end", 1, metrics),
        ("on_test_end", metrics),
        ("on_epoch_end", 0, metrics + ["val_accuracy", "val_loss"]),
        ("on_train_end", metrics + ["val_accuracy", "val_loss"]),
    ]


def test_a_callback_can_stop_training(data):
    ids, labels = data

    def stop_after_second(epoch, logs=None):
        if epoch == 1:
            stopper.loop.stop_training = True

    stopper = LambdaCallback(on_epoch_end=stop_after_second)
    result = fit(_state(), ids, labels, epochs=10, verbose=0, callbacks=[stopper])
    assert len(result.history) == 2


def test_csv_logger_writes_keras_exact_files(tmp_path):
    """The literals are the files keras.callbacks.CSVLogger wrote for the same logs."""
    path = str(tmp_path / "log.csv")
    logger = CSVLogger(path)
    logger.set_loop(_loop())
    logger.on_train_begin()
    f32 = lambda v: float(np.float32(v))  # noqa: E731 (logs hold widened float32s)
    for epoch, logs in enumerate(
        [
            {"loss": f32(0.6931471824645996), "accuracy": f32(0.5)},
            {"loss": f32(0.5), "accuracy": f32(0.75), "learning_rate": f32(0.001)},
            {"accuracy": f32(1 / 3)},
        ]
    ):
        logger.on_epoch_end(epoch, logs)
    with open(path, newline="") as f:
        assert f.read() == (
            "epoch,accuracy,loss,val_accuracy,val_loss\r\n"
            "0,0.5,0.6931471824645996,NA,NA\r\n"
            "1,0.75,0.5,NA,NA\r\n"
            "2,0.3333333432674408,NA,NA,NA\r\n"
        )
    path = str(tmp_path / "log2.csv")
    logger = CSVLogger(path, separator=";")
    logger.set_loop(_loop())
    logger.on_train_begin()
    logger.on_epoch_end(0, {"loss": 1.5, "val_loss": float("nan"), "auc": 0.25})
    logger.on_epoch_end(1, {"loss": 1.25, "val_loss": 2.0, "auc": 0.5})
    with open(path, newline="") as f:
        assert f.read() == "epoch;auc;loss;val_loss\r\n0;0.25;1.5;nan\r\n1;0.5;1.25;2.0\r\n"


def test_csv_logger_appends_and_a_resume_drops_rows_past_the_backup(tmp_path):
    path = str(tmp_path / "log.csv")
    logger = CSVLogger(path)
    logger.set_loop(_loop())
    logger.on_train_begin()
    for epoch in range(3):
        logger.on_epoch_end(epoch, {"loss": float(epoch)})
    saved = logger.checkpoint_state()  # as a backup after epoch 3 would hold it
    logger.on_epoch_end(3, {"loss": 3.0})  # written, then the run died before its backup
    resumed = CSVLogger(path)
    resumed.set_loop(_loop())
    resumed.on_train_begin()
    resumed.restore_state(saved)
    resumed.on_epoch_end(3, {"loss": 3.5})
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    assert lines == ["epoch,loss,val_loss", "0,0.0,NA", "1,1.0,NA", "2,2.0,NA", "3,3.5,NA"]
    appended = CSVLogger(path, append=True)
    appended.set_loop(_loop())
    appended.on_train_begin()
    appended.on_epoch_end(0, {"loss": 9.0})
    with open(path, newline="") as f:
        assert f.read().splitlines()[-2:] == ["3,3.5,NA", "0,9.0,NA"]


def test_reduce_lr_on_plateau_follows_the_keras_trace():
    """keras_training_semantics.md 3.4 [v], and what Keras 3.15.1 printed for it:
    cuts at epochs 4, 6, 8, 10: .1 -> .05 -> .025 -> .0125 -> .01."""
    loop = _loop(lr=0.1)
    reduce = ReduceLROnPlateau(monitor="val_loss", patience=2, cooldown=1, factor=0.5, min_lr=0.01)
    reduce.set_loop(loop)
    reduce.on_train_begin()
    rates, logged = [], []
    for epoch, value in enumerate([1, math.nan, 0.9, 0.95, 0.99995] + [0.9] * 6):
        logs = {"val_loss": value}
        reduce.on_epoch_end(epoch, logs)
        rates.append(loop.learning_rate)
        logged.append(logs["learning_rate"])
    keras = [0.10000000149011612] * 4 + [0.05000000074505806] * 2 + [0.02500000037252903] * 2
    keras += [0.012500000186264515] * 2 + [0.009999999776482582]
    assert rates == keras
    assert logged[:5] == [0.10000000149011612] * 5  # the rate each epoch used


def test_learning_rate_scheduler_applies_from_the_epochs_first_step(data):
    ids, labels = data
    seen = []
    schedule = LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    probe = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs["learning_rate"]))
    fit(_state(), ids, labels, epochs=3, verbose=0, callbacks=[schedule, probe])
    np.testing.assert_allclose(seen, [0.1, 0.05, 0.1 / 3], rtol=1e-7)
    one_argument = LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))
    result = fit(_state(), ids, labels, epochs=2, verbose=0, callbacks=[one_argument])
    assert result.history.epochs[1]["learning_rate"] == pytest.approx(0.02)


def test_learning_rate_callbacks_need_an_injectable_optimizer(data):
    import optax

    ids, labels = data
    plain = _state(tx=optax.sgd(0.1))
    with pytest.raises(ValueError, match="optax.inject_hyperparams"):
        fit(
            plain,
            ids,
            labels,
            epochs=1,
            verbose=0,
            callbacks=[LearningRateScheduler(lambda e: 1.0)],
        )
    # A scheduled rate is recomputed by optax at every step: a callback setting it would be
    # ignored, so both callbacks refuse it before the first epoch.
    scheduled = _state(tx=optax.inject_hyperparams(optax.sgd)(optax.constant_schedule(0.1)))
    seen = []
    for callback in (LearningRateScheduler(lambda e: 0.0), ReduceLROnPlateau("loss")):
        started = LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
        with pytest.raises(ValueError, match="learning_rate is an optax schedule"):
            fit(scheduled, ids, labels, epochs=1, verbose=0, callbacks=[callback, started])
        assert seen == []


@pytest.mark.parametrize("value", [None, "0.1", True, [0.1], float])
def test_a_schedule_that_returns_no_number_is_refused(data, value):
    ids, labels = data
    with pytest.raises(ValueError, match="the schedule must return a float"):
        fit(
            _state(),
            ids,
            labels,
            epochs=1,
            verbose=0,
            callbacks=[LearningRateScheduler(lambda e: value)],
        )


def _read_events(directory):
    """Scalars ``{tag: [(step, value)]}`` from TFRecord event files (length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in glob.glob(f"{directory}/events.out.tfevents.*"):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_writes_keras_layout(data, tmp_path):
    ids, labels = data
    result = fit(
        _state(),
        ids,
        labels,
        validation_data=(ids, labels),
        epochs=2,
        verbose=0,
        callbacks=[TensorBoard(str(tmp_path), update_freq=1)],
        steps_per_execution=1,
    )
    train, validation = _read_events(tmp_path / "train"), _read_events(tmp_path / "validation")
    history = result.history.history
    assert [s for s, _ in train["epoch_loss"]] == [0, 1]
    np.testing.assert_allclose([v for _, v in train["epoch_loss"]], history["loss"], rtol=1e-6)
    np.testing.assert_allclose(
        [v for _, v in validation["epoch_accuracy"]], history["val_accuracy"], rtol=1e-6
    )
    assert [s for s, _ in train["batch_loss"]] == [1, 2, 3, 4]  # 2 steps an epoch (50 / 32)


def test_progress_verbose_2_is_one_keras_line_an_epoch(data):
    ids, labels = data
    stream = io.StringIO()

    class Terminal(io.StringIO):
        def isatty(self):
            return False

    progbar = ProgbarLogger(2, stream=Terminal())
    loop = _loop()
    loop.epochs, loop.steps_per_epoch = 2, 4
    progbar.set_loop(loop)
    progbar.on_epoch_begin(0)
    progbar.on_train_batch_end(3, {"loss": 0.5})
    progbar.on_epoch_end(0, {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.0001})
    lines = progbar.stream.getvalue().splitlines()
    assert lines[0] == "Epoch 1/2"
    head, *rest = lines[1].split(" - ")
    assert head == "4/4" and rest[0].endswith("s") and rest[1].endswith("/step")
    assert rest[2:] == ["accuracy: 0.7500", "loss: 0.5000", "val_loss: 1.0000e-04"]
    assert stream.getvalue() == ""


@pytest.mark.parametrize("verbose", [1, 2])
def test_progress_of_an_epoch_resumed_after_its_last_step(verbose):
    """A Ctrl-C after an epoch's last step saves that position; the resumed epoch runs no step
    and only ends (validation, callbacks): its progress line still prints."""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    progbar = ProgbarLogger(verbose, stream=Terminal())
    loop = _loop()
    loop.epochs, loop.steps_per_epoch, loop.step = 2, 4, 4
    progbar.set_loop(loop)
    progbar.on_epoch_begin(1)
    progbar.on_epoch_end(1, {"loss": 0.5})
    assert progbar.stream.getvalue().splitlines()[-1].startswith("4/4")


def test_log_files_that_cannot_be_written_are_refused_before_training(data, tmp_path):
    """A CSV path that is a directory or lies in a missing folder, a TensorBoard log_dir below a
    file: one ``ValueError`` before the first epoch, not an ``OSError`` after it."""
    ids, labels = data
    (tmp_path / "a file").write_text("")
    (tmp_path / "a dir").mkdir()
    epochs = []
    started = LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs.append(epoch))
    for callback, message in (
        (CSVLogger(str(tmp_path / "a dir")), "it is a directory"),
        (CSVLogger(str(tmp_path / "missing" / "log.csv")), "its folder is missing"),
        (TensorBoard(str(tmp_path / "a file" / "logs")), "TensorBoard cannot write its logs"),
    ):
        with pytest.raises(ValueError, match=message):
            fit(_state(), ids, labels, epochs=1, verbose=0, callbacks=[started, callback])
        assert epochs == []
