"""Checkpoints under damage, loss and misuse, in process: what a resumed ``fit`` trusts, what it
rewrites, what it refuses; ``load_model`` reads only."""

import json
import shutil
import threading
import warnings

import chex
import jax
import numpy as np
import pytest
from faults import damage, largest_file

from rnnjax import Classifier, LayerSpec, ModelConfig, init_params, losses
from rnnjax.callbacks import Callback, Loop
from rnnjax.checkpoint import (
    MANIFEST,
    BackupAndRestore,
    CheckpointError,
    ModelCheckpoint,
    load_model,
    write_manifest,
)
from rnnjax.early_stopping import EarlyStopping
from rnnjax.optimizers import adam, rmsprop
from rnnjax.train import fit
from rnnjax.train_state import TrainState
from rnnjax.workdir import WorkdirError

CONFIG = ModelConfig(50, 8, (LayerSpec("lstm", 6, dropout=0.2),))


def _state(lr=0.01, loss=losses.BinaryCrossentropy(from_logits=True), config=CONFIG, tx=None):  # noqa: B008
    init_key, dropout_key = jax.random.split(jax.random.key(0))
    return TrainState.create(
        model=Classifier(config),
        params=init_params(config, init_key),
        tx=tx or rmsprop(lr),
        rng=dropout_key,
        loss=loss,
        metrics=["accuracy"],
    )


def _data(rng, n):
    ids = rng.integers(1, 50, size=(n, 12)).astype(np.int32)
    return ids, ((ids[:, -4:] < 25).sum(1) >= 2).astype(np.int32)


@pytest.fixture(scope="module")
def splits():
    rng = np.random.default_rng(1)
    return _data(rng, 90), _data(rng, 40)


def _fit(directory, splits, **kwargs):
    """A run with the recipes' callbacks; its checkpoints in ``directory/best`` and ``latest``."""
    (x, y), validation = splits
    options = dict(epochs=8, batch_size=32, seed=3, verbose=0)
    return fit(
        _state(),
        x,
        y,
        validation_data=validation,
        callbacks=[
            EarlyStopping(patience=1, restore_best_weights=True),
            ModelCheckpoint(str(directory / "best"), save_best_only=True),
            BackupAndRestore(str(directory / "latest")),
        ],
        **(options | kwargs),
    )


@pytest.fixture(scope="module")
def reference(splits, tmp_path_factory):
    directory = tmp_path_factory.mktemp("reference") / "checkpoints"
    result = _fit(directory, splits)
    stopping = result.callbacks[0]
    assert stopping.state.stop_training and stopping.best_epoch > 0
    return directory, result


def _steps(directory):
    return sorted((p for p in directory.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def _latest(directory):
    return _steps(directory / "latest")


def _assert_same(result, reference, directory):
    assert result.history.epochs == reference[1].history.epochs
    chex.assert_trees_all_equal(result.state.params, reference[1].state.params)
    restored = load_model(str(directory / "best"), _state())
    chex.assert_trees_all_equal(restored.params, reference[1].state.params)  # best == restored
    assert [p.name for p in _steps(directory / "best")] == [
        str(reference[1].callbacks[0].best_epoch)
    ]


@pytest.mark.parametrize(
    "target, how",
    [
        (lambda step: largest_file(step / "arrays"), "xor"),
        (lambda step: largest_file(step / "arrays"), "truncate"),
        (lambda step: step / "loop", "delete"),
        (lambda step: step / MANIFEST, "delete"),
        (lambda step: step / MANIFEST, "xor"),
    ],
    ids=["arrays-xor", "arrays-truncated", "loop-deleted", "manifest-deleted", "manifest-garbled"],
)
def test_resume_falls_back_from_a_damaged_newest_checkpoint(
    splits, reference, tmp_path, target, how
):
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference[0], directory)
    newest = _latest(directory)[-1]
    damage(target(newest), how)
    with pytest.warns(
        UserWarning, match=rf"resuming from latest/\d+; removed latest/{newest.name}"
    ):
        result = _fit(directory, splits)
    _assert_same(result, reference, directory)


def test_resume_refuses_when_no_checkpoint_is_intact(splits, reference, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference[0], directory)
    for step in _latest(directory):
        damage(largest_file(step / "arrays"), "xor")
    with pytest.raises(CheckpointError, match="no intact checkpoint.*differs from its checksum"):
        _fit(directory, splits)


def test_resume_refuses_a_backup_in_an_earlier_layout(splits, reference, tmp_path):
    # An intact backup whose arrays are not the one item this version writes (earlier rnnjax
    # versions wrote `state` and one item per callback weight): one line, not Orbax's error.
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference[0], directory)
    for step in _latest(directory):
        (step / "arrays").rename(step / "state")
        write_manifest(str(step))
    with pytest.raises(CheckpointError, match="layout of an earlier rnnjax.*another --workdir"):
        _fit(directory, splits)


@pytest.mark.parametrize("how", ["deleted", "damaged", "older", "newer"])
def test_resume_makes_best_hold_the_best_epoch(splits, reference, tmp_path, how):
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference[0], directory)
    best = directory / "best"
    (epoch_dir,) = _steps(best)
    if how == "deleted":
        damage(best, "delete")
    elif how == "damaged":
        damage(largest_file(epoch_dir / "params"), "xor")
    elif how == "older":  # what a lost save leaves: another epoch's weights
        epoch_dir.rename(best / "0")
    else:  # saved after the position resumed from (killed before the latest save)
        shutil.copytree(epoch_dir, best / "99")
    result = _fit(directory, splits)
    _assert_same(result, reference, directory)


def test_resume_refuses_another_model_or_optimizer(splits, reference, tmp_path):
    """One line naming the backup and what differs, before Orbax is asked to restore it."""
    (x, y), validation = splits
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference[0] / "latest", directory / "latest")
    wider = ModelConfig(50, 8, (LayerSpec("lstm", 7, dropout=0.2),))
    other_model = _state(config=wider)
    other_optimizer = _state(tx=adam(0.01))
    for state, changed in (
        (other_model, r"params\[dense\]\[kernel\]: \(6, 1\) -> \(7, 1\)"),
        (other_optimizer, "opt_state"),
    ):
        with pytest.raises(CheckpointError, match=f"another model or optimizer .*{changed}"):
            fit(
                state,
                x,
                y,
                validation_data=validation,
                epochs=8,
                batch_size=32,
                seed=3,
                verbose=0,
                callbacks=[BackupAndRestore(str(directory / "latest"))],
            )


def test_resume_refuses_another_schedule(splits, reference, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference[0], directory)
    with pytest.raises(ValueError, match=r"another schedule \(batch_size 32 -> 16\)"):
        _fit(directory, splits, batch_size=16)
    with pytest.raises(ValueError, match=r"another schedule \(seed 3 -> 4\)"):
        _fit(directory, splits, seed=4)


def test_a_fresh_run_refuses_another_runs_best_checkpoints(splits, reference, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference[0] / "best", directory / "best")
    with pytest.raises(ValueError, match="holds another run's checkpoints"):
        _fit(directory, splits)


class _ValidationLosses(Callback):
    """Puts made-up validation losses into the logs, one per epoch, across ``fit`` calls."""

    def __init__(self, *values):
        self.values = iter(values)

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = next(self.values)


def test_a_second_fit_keeps_the_best_of_the_first(splits, tmp_path):
    """Keras keeps ``ModelCheckpoint.best`` across ``fit`` calls of one instance: epochs of the
    second ``fit`` that are worse save nothing, a better one (a lower epoch number here) replaces
    the first ``fit``'s checkpoint."""
    (x, y), _ = splits
    best = ModelCheckpoint(str(tmp_path / "best"), save_best_only=True)
    first = fit(
        _state(),
        x,
        y,
        epochs=2,
        batch_size=32,
        verbose=0,
        callbacks=[_ValidationLosses(0.3, 0.2), best],
    )
    assert (best.best, _steps(tmp_path / "best")) == (0.2, [tmp_path / "best" / "1"])
    fit(
        first.state,
        x,
        y,
        epochs=2,
        batch_size=32,
        verbose=0,
        callbacks=[_ValidationLosses(0.9, 0.8), best],
    )
    assert (best.best, _steps(tmp_path / "best")) == (0.2, [tmp_path / "best" / "1"])
    chex.assert_trees_all_equal(
        load_model(str(tmp_path / "best"), _state()).params, first.state.params
    )
    second = fit(
        first.state,
        x,
        y,
        epochs=1,
        batch_size=32,
        verbose=0,
        callbacks=[_ValidationLosses(0.1), best],
    )
    assert (best.best, _steps(tmp_path / "best")) == (0.1, [tmp_path / "best" / "0"])
    chex.assert_trees_all_equal(
        load_model(str(tmp_path / "best"), _state()).params, second.state.params
    )


def test_overwrite_replaces_another_runs_later_checkpoint(splits, reference, tmp_path):
    """``overwrite=True``: this run's best replaces the other run's checkpoint, also when that
    one is of a later epoch (Orbax would skip a lower step unasked) or better by its value."""
    (x, y), _ = splits
    directory = tmp_path / "best"
    shutil.copytree(reference[0] / "best", directory)
    (theirs,) = _steps(directory)
    assert int(theirs.name) > 0
    result = fit(
        _state(),
        x,
        y,
        epochs=1,
        batch_size=32,
        verbose=0,
        callbacks=[
            _ValidationLosses(9.0),
            ModelCheckpoint(str(directory), save_best_only=True, overwrite=True),
        ],
    )
    assert _steps(directory) == [directory / "0"]
    chex.assert_trees_all_equal(load_model(str(directory), _state()).params, result.state.params)


def test_a_second_user_of_a_checkpoint_directory_is_refused(tmp_path):
    loop = Loop(state=_state(), epochs=1, steps_per_epoch=1)
    first, second = (BackupAndRestore(str(tmp_path / "latest")) for _ in range(2))
    for callback in (first, second):
        callback.set_loop(loop)
    first.on_train_begin()
    with pytest.raises(WorkdirError, match=r"in use by another run \(pid \d+"):
        second.on_train_begin()
    first.on_train_end()
    second.on_train_begin()  # released: usable again
    second.on_train_end()


def test_load_model_reads_only(reference, tmp_path):
    for missing in (tmp_path / "nothing", tmp_path / "empty"):
        with pytest.raises(CheckpointError, match="no checkpoint under"):
            load_model(str(missing), _state())
        assert not missing.exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError):
        load_model(str(tmp_path / "empty"), _state())
    assert list((tmp_path / "empty").iterdir()) == []
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference[0], directory)
    (epoch_dir,) = _steps(directory / "best")
    with pytest.raises(CheckpointError, match="no config to rebuild the model from"):
        load_model(str(directory))
    params_file = largest_file(epoch_dir / "params")
    damage(params_file, "xor")
    with pytest.raises(CheckpointError, match=f"{params_file} differs from its checksum"):
        load_model(str(directory), _state())


def test_early_stopping_on_a_missing_metric_warns_once(splits):
    (x, y), _ = splits
    stopping = EarlyStopping(monitor="val_loss", patience=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(_state(), x, y, epochs=3, batch_size=32, verbose=0, callbacks=[stopping])
    messages = [str(w.message) for w in caught if "val_loss" in str(w.message)]
    assert len(messages) == 1 and "not available" in messages[0] and "loss" in messages[0]
    assert len(result.history) == 3


class _NextEpochLogged(Callback):
    """Sets ``event`` once ``History`` has logged the second epoch, before that epoch's backup."""

    order = 15  # after History (10), before BackupAndRestore (20)

    def __init__(self, event):
        self.event = event

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            self.event.set()


def test_a_backup_holds_its_own_epoch_when_orbax_writes_it_late(splits, tmp_path, monkeypatch):
    # Orbax serializes a checkpoint's JSON in a background thread; here that thread is held until
    # the next epoch is logged, as a loaded machine may do. Each backup must still hold the
    # history of its own position, or a resume from it repeats an epoch.
    logged, dumps = threading.Event(), json.dumps

    def late_dumps(value, *args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            logged.wait(timeout=30)
        return dumps(value, *args, **kwargs)

    monkeypatch.setattr(json, "dumps", late_dumps)
    (x, y), validation = splits
    latest = tmp_path / "latest"
    fit(
        _state(),
        x,
        y,
        validation_data=validation,
        epochs=2,
        batch_size=32,
        verbose=0,
        callbacks=[_NextEpochLogged(logged), BackupAndRestore(str(latest))],
    )
    monkeypatch.undo()
    assert logged.is_set()
    for step in _latest(tmp_path):
        loop = json.loads((step / "loop" / "metadata").read_text())
        assert len(loop["callbacks"]["History"]["epochs"]) == loop["epoch"], step.name


def test_a_save_that_fails_in_its_thread_fails_the_run(splits, tmp_path, monkeypatch):
    """A full disk while a backup is sealed: the error reaches ``fit`` (the CLI's one line), not
    a traceback printed by the sealing thread while training goes on."""
    import errno

    def disk_full(step_dir):
        raise OSError(errno.ENOSPC, "No space left on device", step_dir)

    monkeypatch.setattr("rnnjax.checkpoint.write_manifest", disk_full)
    (x, y), _ = splits
    unhandled = []
    monkeypatch.setattr(threading, "excepthook", unhandled.append)
    with pytest.raises(OSError, match="No space left on device"):
        fit(
            _state(),
            x,
            y,
            epochs=3,
            batch_size=32,
            verbose=0,
            callbacks=[BackupAndRestore(str(tmp_path / "latest"))],
        )
    assert unhandled == []
