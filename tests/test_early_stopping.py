"""EarlyStopping against literal Keras 3 traces (keras_semantics.md §5)."""

import dataclasses

import pytest

from rnnjax.early_stopping import EarlyStopping


def _replay(values, monitor="val_loss", **kwargs):
    """Feeds ``values`` epoch by epoch as Keras' fit would; returns the record and epochs run."""
    stopping = EarlyStopping(monitor=monitor, **kwargs)
    ran = 0
    for epoch, value in enumerate(values):
        ran += 1
        stopping = stopping.update(epoch, {monitor: value})
        if stopping.stop_training:
            break
    return stopping, ran


def test_keras_worked_example():
    stopping, ran = _replay([0.50, 0.45, 0.46, 0.47, 0.48], patience=3, restore_best_weights=True)
    assert ran == 5 and stopping.stopped_epoch == 4 and stopping.best_epoch == 1
    assert stopping.messages() == [
        "Epoch 5: early stopping",
        "Restoring model weights from the end of the best epoch: 2.",
    ]


def test_restores_at_train_end_even_without_a_stop():
    stopping, ran = _replay([0.50, 0.45, 0.46], patience=3, restore_best_weights=True)
    assert ran == 3 and not stopping.stop_training and stopping.restores
    assert stopping.messages() == ["Restoring model weights from the end of the best epoch: 2."]


def test_seed_run_stops_after_epoch_30_and_restores_epoch_27():
    """The tutorial run: val_loss falls to 0.4323 at epoch 27, then 3 epochs without a new low."""
    falling = [0.69 - 0.01 * k for k in range(26)] + [0.4323]
    stopping, ran = _replay(
        falling + [0.4330, 0.4325, 0.4340, 0.4300], patience=3, restore_best_weights=True
    )
    assert ran == 30
    assert (stopping.stopped_epoch + 1, stopping.best_epoch + 1, stopping.best) == (30, 27, 0.4323)


def test_flax_trap_keras_stops_one_epoch_earlier():
    """flax.training.early_stopping stops at epoch 7 on its own docstring sequence; Keras at 3."""
    _, ran = _replay([4, 3, 3, 3, 2, 2, 2, 2, 1, 1], patience=2)
    assert ran == 4  # stopped at epoch index 3


def test_min_delta():
    stopping, ran = _replay([0.5, 0.49, 0.485, 0.47, 0.46], patience=2, min_delta=0.02)
    assert (ran, stopping.stopped_epoch, stopping.best) == (3, 2, 0.5)


def test_ties_are_not_improvements_and_patience_zero_stops_at_first():
    stopping, ran = _replay([0.5, 0.5, 0.4], patience=0)
    assert (ran, stopping.stopped_epoch) == (2, 1)


def test_patience_zero_never_stops_at_epoch_zero():
    # Only a record carried into epoch 0 with a best already set can fail to improve there.
    carried = dataclasses.replace(EarlyStopping(patience=0), best=0.1)
    stopping = carried.update(0, {"val_loss": 0.5})
    assert not stopping.stop_training and stopping.wait == 1
    assert stopping.update(1, {"val_loss": 0.5}).stopped_epoch == 1


def test_nan_first_blocks_every_later_improvement():
    stopping, ran = _replay([float("nan"), 0.4, 0.3, 0.2], patience=2, restore_best_weights=True)
    assert ran == 3 and stopping.best_epoch == 0


def test_baseline():
    # Improving without beating the baseline does not reset wait, so the stop comes sooner...
    stopping, ran = _replay([0.9, 0.95, 0.96], patience=2, baseline=0.65)
    assert (ran, stopping.stopped_epoch) == (2, 1)
    _, ran = _replay([0.9, 0.95, 0.96], patience=2)
    assert ran == 3
    # ...but an improving epoch never stops training, baseline or not.
    stopping, ran = _replay([0.9, 0.8, 0.7, 0.6], patience=2, baseline=0.65)
    assert (ran, stopping.stop_training, stopping.best) == (4, False, 0.6)
    stopping, ran = _replay([0.9, 0.6, 0.7, 0.7, 0.7], patience=2, baseline=0.65)
    assert (ran, stopping.best_epoch) == (4, 1)


def test_start_from_epoch_skips_early_epochs():
    stopping, ran = _replay([0.1, 0.2, 0.9, 0.8, 0.85, 0.86], patience=2, start_from_epoch=2)
    assert (ran, stopping.best_epoch, stopping.stopped_epoch) == (6, 3, 5)


def test_mode_auto_maximises_accuracy_and_explicit_modes():
    stopping, ran = _replay([0.6, 0.7, 0.65, 0.68], monitor="val_accuracy", patience=2)
    assert (ran, stopping.best) == (4, 0.7)
    stopping, _ = _replay([0.6, 0.7, 0.65], monitor="val_accuracy", mode="min", patience=5)
    assert stopping.best == 0.6


def test_missing_metric_is_skipped_without_counting():
    stopping = EarlyStopping(patience=1).update(0, {"loss": 1.0}).update(1, {"loss": 1.0})
    assert stopping.wait == 0 and stopping.best is None


def test_unknown_monitor_needs_a_mode():
    with pytest.raises(ValueError, match="cannot infer whether 'val_f1'"):
        EarlyStopping(monitor="val_f1")
    EarlyStopping(monitor="val_f1", mode="max")
