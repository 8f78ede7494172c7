"""EarlyStopping against literal Keras 3 traces (keras_semantics.md §5), driven as ``fit`` drives
the callback: epoch ends with logs, then the end of training."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax.callbacks import Loop
from rnnjax.early_stopping import EarlyStopping, EarlyStoppingState
from rnnjax.train_state import TrainState


def _state(epoch: int) -> TrainState:
    """A state whose one parameter records the epoch that produced it."""
    return TrainState.create(
        model=lambda params, model_state, x, **_: (x, model_state),
        params={"w": jnp.asarray(float(epoch))},
    ).replace(step=jnp.asarray(epoch, jnp.int32))


def _replay(values, monitor="val_loss", capsys=None, **kwargs):
    """Feeds ``values`` epoch by epoch as Keras' fit would; returns the callback, the epochs run
    and the epoch whose weights the state holds at the end."""
    stopping = EarlyStopping(monitor=monitor, **kwargs)
    loop = Loop(state=_state(0), epochs=len(values), steps_per_epoch=1)
    loop.directions = {"val_accuracy": "max", "val_f1": None}
    stopping.set_loop(loop)
    stopping.on_train_begin()
    ran = 0
    for epoch, value in enumerate(values):
        ran += 1
        loop.state = _state(epoch)
        stopping.on_epoch_end(epoch, {monitor: value})
        if loop.stop_training:
            break
    stopping.on_train_end()
    return stopping, ran, int(loop.state.params["w"])


def test_keras_worked_example(capsys):
    stopping, ran, weights = _replay(
        [0.50, 0.45, 0.46, 0.47, 0.48], patience=3, restore_best_weights=True, verbose=1
    )
    assert ran == 5 and stopping.stopped_epoch == 4 and stopping.best_epoch == 1
    assert weights == 1  # the best epoch's weights, restored
    assert capsys.readouterr().out.splitlines() == [
        "Epoch 5: early stopping",
        "Restoring model weights from the end of the best epoch: 2.",
    ]


def test_restores_at_train_end_even_without_a_stop(capsys):
    stopping, ran, weights = _replay(
        [0.50, 0.45, 0.46], patience=3, restore_best_weights=True, verbose=1
    )
    assert ran == 3 and not stopping.state.stop_training and weights == 1
    assert capsys.readouterr().out.splitlines() == [
        "Restoring model weights from the end of the best epoch: 2."
    ]


def test_silent_by_default_and_no_restore_without_restore_best_weights(capsys):
    _, _, weights = _replay([0.50, 0.45, 0.46, 0.47, 0.48], patience=3)
    assert weights == 4 and capsys.readouterr().out == ""


def test_seed_run_stops_after_epoch_30_and_restores_epoch_27():
    """The tutorial run: val_loss falls to 0.4323 at epoch 27, then 3 epochs without a new low."""
    falling = [0.69 - 0.01 * k for k in range(26)] + [0.4323]
    stopping, ran, weights = _replay(
        falling + [0.4330, 0.4325, 0.4340, 0.4300], patience=3, restore_best_weights=True
    )
    assert ran == 30 and weights == 26
    assert (stopping.stopped_epoch + 1, stopping.best_epoch + 1, stopping.state.best) == (
        30,
        27,
        0.4323,
    )


def test_flax_trap_keras_stops_one_epoch_earlier():
    """flax.training.early_stopping stops at epoch 7 on its own docstring sequence; Keras at 3."""
    _, ran, _ = _replay([4, 3, 3, 3, 2, 2, 2, 2, 1, 1], patience=2)
    assert ran == 4  # stopped at epoch index 3


def test_min_delta():
    stopping, ran, _ = _replay([0.5, 0.49, 0.485, 0.47, 0.46], patience=2, min_delta=0.02)
    assert (ran, stopping.stopped_epoch, stopping.state.best) == (3, 2, 0.5)


def test_ties_are_not_improvements_and_patience_zero_stops_at_first():
    stopping, ran, _ = _replay([0.5, 0.5, 0.4], patience=0)
    assert (ran, stopping.stopped_epoch) == (2, 1)


def test_improvement_compares_in_float32():
    """Keras 3.11+ compares in float32: 0.3 + 1e-9 is no improvement on 0.3 there."""
    stopping, ran, _ = _replay([0.3, 0.3 - 1e-9, 0.2], patience=0)
    assert (ran, stopping.stopped_epoch) == (2, 1)


def test_patience_zero_never_stops_at_epoch_zero():
    # Only a record carried into epoch 0 with a best already set can fail to improve there.
    carried = dataclasses.replace(EarlyStoppingState(patience=0), best=0.1)
    stopping = carried.update(0, 0.5)
    assert not stopping.stop_training and stopping.wait == 1
    assert stopping.update(1, 0.5).stopped_epoch == 1


def test_nan_first_blocks_every_later_improvement():
    stopping, ran, weights = _replay(
        [float("nan"), 0.4, 0.3, 0.2], patience=2, restore_best_weights=True
    )
    assert ran == 3 and stopping.best_epoch == 0 and weights == 0


def test_baseline():
    # Improving without beating the baseline does not reset wait, so the stop comes sooner...
    stopping, ran, _ = _replay([0.9, 0.95, 0.96], patience=2, baseline=0.65)
    assert (ran, stopping.stopped_epoch) == (2, 1)
    _, ran, _ = _replay([0.9, 0.95, 0.96], patience=2)
    assert ran == 3
    # ...but an improving epoch never stops training, baseline or not.
    stopping, ran, _ = _replay([0.9, 0.8, 0.7, 0.6], patience=2, baseline=0.65)
    assert (ran, stopping.state.stop_training, stopping.state.best) == (4, False, 0.6)
    stopping, ran, _ = _replay([0.9, 0.6, 0.7, 0.7, 0.7], patience=2, baseline=0.65)
    assert (ran, stopping.best_epoch) == (4, 1)


def test_start_from_epoch_skips_early_epochs():
    stopping, ran, _ = _replay([0.1, 0.2, 0.9, 0.8, 0.85, 0.86], patience=2, start_from_epoch=2)
    assert (ran, stopping.best_epoch, stopping.stopped_epoch) == (6, 3, 5)


def test_mode_auto_follows_the_metric_and_explicit_modes():
    stopping, ran, _ = _replay([0.6, 0.7, 0.65, 0.68], monitor="val_accuracy", patience=2)
    assert (ran, stopping.state.best) == (4, 0.7)
    stopping, _, _ = _replay([0.6, 0.7, 0.65], monitor="val_accuracy", mode="min", patience=5)
    assert stopping.state.best == 0.6


def test_missing_metric_is_skipped_without_counting_and_warned_once():
    stopping = EarlyStopping(patience=1)
    loop = Loop(state=_state(0), epochs=3, steps_per_epoch=1)
    stopping.set_loop(loop)
    stopping.on_train_begin()
    with pytest.warns(UserWarning, match="`val_loss` which is not available") as warned:
        for epoch in range(3):
            stopping.on_epoch_end(epoch, {"loss": 1.0})
    assert len(warned) == 1 and stopping.state.wait == 0 and stopping.state.best is None


def test_a_monitor_without_a_known_direction_needs_a_mode():
    with pytest.raises(ValueError, match="cannot infer whether 'val_f1'.*mode='min'"):
        _replay([0.5], monitor="val_f1")
    stopping, _, _ = _replay([0.5, 0.6], monitor="val_f1", mode="max", patience=3)
    assert stopping.state.best == 0.6


def test_bad_arguments():
    for kwargs, message in (
        (dict(patience=-1), "patience must be >= 0"),
        (dict(mode="up"), "mode must be"),
        (dict(start_from_epoch=-2), "start_from_epoch must be >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            EarlyStopping(**kwargs)
    assert np.isfinite(EarlyStoppingState().patience)
