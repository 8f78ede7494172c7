"""Checkpoints under damage, loss and misuse, in process: what a resumed ``fit`` trusts, what it
rewrites, what it refuses; ``load_model`` reads only."""

import dataclasses
import shutil
import warnings

import chex
import jax
import numpy as np
import pytest
from faults import damage, largest_file

from rnnjax import Classifier, LayerSpec, ModelConfig, init_params
from rnnjax.checkpoint import MANIFEST, CheckpointError, Checkpoints, load_model
from rnnjax.early_stopping import EarlyStopping
from rnnjax.optimizers import rmsprop
from rnnjax.train import fit
from rnnjax.train_state import TrainState
from rnnjax.workdir import WorkdirError

CONFIG = ModelConfig(50, 8, (LayerSpec("lstm", 6, dropout=0.2),))
CHECKPOINT_CONFIG = {"model": dataclasses.asdict(CONFIG)}


def _state(lr=0.01):
    init_key, dropout_key = jax.random.split(jax.random.key(0))
    return TrainState.create(
        model=Classifier(CONFIG),
        params=init_params(CONFIG, init_key),
        tx=rmsprop(lr),
        rng=dropout_key,
        loss="binary_crossentropy",
    )


def _data(rng, n):
    ids = rng.integers(1, 50, size=(n, 12)).astype(np.int32)
    return ids, ((ids[:, -4:] < 25).sum(1) >= 2).astype(np.int32)


@pytest.fixture(scope="module")
def splits():
    rng = np.random.default_rng(1)
    return _data(rng, 90), _data(rng, 40)


def _fit(directory, splits, resume=False, **kwargs):
    checkpoints = Checkpoints(str(directory))
    try:
        options = dict(epochs=8, batch_size=32, seed=3, resume=resume)
        result = fit(
            _state(),
            *splits,
            early_stopping=EarlyStopping(patience=1, restore_best_weights=True),
            checkpoints=checkpoints,
            checkpoint_config=CHECKPOINT_CONFIG,
            **(options | kwargs),
        )
    finally:
        checkpoints.close()
    return result


@pytest.fixture(scope="module")
def reference(splits, tmp_path_factory):
    directory = tmp_path_factory.mktemp("reference") / "checkpoints"
    result = _fit(directory, splits)
    assert result.early_stopping.stop_training and result.early_stopping.best_epoch > 0
    return directory, result


def _latest(directory):
    return sorted((directory / "latest").iterdir(), key=lambda p: int(p.name))


def _assert_same(result, reference, directory):
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h.epochs]  # noqa
    assert strip(result.history) == strip(reference[1].history)
    chex.assert_trees_all_equal(result.state.params, reference[1].state.params)
    _, params, _ = load_model(str(directory))
    chex.assert_trees_all_equal(params, reference[1].state.params)  # best == restored weights
    assert [p.name for p in (directory / "best").iterdir()] == [
        str(reference[1].early_stopping.best_epoch)
    ]


@pytest.mark.parametrize(
    "target, how",
    [
        (lambda step: largest_file(step / "state"), "xor"),
        (lambda step: largest_file(step / "state"), "truncate"),
        (lambda step: step / "loop", "delete"),
        (lambda step: step / MANIFEST, "delete"),
        (lambda step: step / MANIFEST, "xor"),
    ],
    ids=["state-xor", "state-truncated", "loop-deleted", "manifest-deleted", "manifest-garbled"],
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
        result = _fit(directory, splits, resume=True)
    _assert_same(result, reference, directory)


def test_resume_refuses_when_no_checkpoint_is_intact(splits, reference, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference[0], directory)
    for step in _latest(directory):
        damage(largest_file(step / "state"), "xor")
    with pytest.raises(CheckpointError, match="no intact checkpoint.*differs from its checksum"):
        _fit(directory, splits, resume=True)


@pytest.mark.parametrize("how", ["deleted", "damaged", "older", "newer"])
def test_resume_makes_best_hold_the_best_epoch(splits, reference, tmp_path, how):
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference[0], directory)
    best = directory / "best"
    (epoch_dir,) = best.iterdir()
    if how == "deleted":
        damage(best, "delete")
    elif how == "damaged":
        damage(largest_file(epoch_dir / "params"), "xor")
    elif how == "older":  # what a lost save leaves: another epoch's weights
        epoch_dir.rename(best / "0")
    else:  # saved after the position resumed from (killed before the latest save)
        shutil.copytree(epoch_dir, best / "99")
    result = _fit(directory, splits, resume=True)
    _assert_same(result, reference, directory)


def test_resume_refuses_another_schedule(splits, reference, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference[0], directory)
    with pytest.raises(ValueError, match=r"another schedule \(batch_size 32 -> 16\)"):
        _fit(directory, splits, resume=True, batch_size=16)
    with pytest.raises(ValueError, match=r"another schedule \(seed 3 -> 4\)"):
        _fit(directory, splits, resume=True, seed=4)
    with pytest.raises(ValueError, match="holds another run's checkpoints; pass resume=True"):
        _fit(directory, splits)


def test_a_second_user_of_a_checkpoint_directory_is_refused(tmp_path):
    first = Checkpoints(str(tmp_path / "checkpoints"))
    try:
        with pytest.raises(WorkdirError, match=r"in use by another run \(pid \d+"):
            Checkpoints(str(tmp_path / "checkpoints"))
    finally:
        first.close()
    Checkpoints(str(tmp_path / "checkpoints")).close()  # released: usable again


def test_load_model_reads_only(reference, tmp_path):
    for missing in (tmp_path / "nothing", tmp_path / "empty"):
        with pytest.raises(CheckpointError, match="no best checkpoint"):
            load_model(str(missing))
        assert not missing.exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError):
        load_model(str(tmp_path / "empty"))
    assert list((tmp_path / "empty").iterdir()) == []
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference[0], directory)
    (epoch_dir,) = (directory / "best").iterdir()
    params_file = largest_file(epoch_dir / "params")
    damage(params_file, "xor")
    with pytest.raises(CheckpointError, match=f"{params_file} differs from its checksum"):
        load_model(str(directory))


def test_early_stopping_on_a_missing_metric_warns_once(splits):
    train, _ = splits
    stopping = EarlyStopping(monitor="val_loss", patience=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(_state(), train, epochs=3, batch_size=32, early_stopping=stopping)
    messages = [str(w.message) for w in caught if "val_loss" in str(w.message)]
    assert len(messages) == 1 and "not available" in messages[0] and "loss" in messages[0]
    assert len(result.history) == 3


def test_a_loss_that_does_not_fit_the_model_is_refused(splits):
    train, _ = splits
    wide = Classifier(dataclasses.replace(CONFIG, num_classes=3))
    params = wide.init(jax.random.key(0), train[0][:1])["params"]
    state = TrainState.create(
        model=wide,
        params=params,
        tx=rmsprop(1e-3),
        rng=jax.random.key(1),
        loss="binary_crossentropy",
    )
    with pytest.raises(ValueError, match="binary_crossentropy needs a model with one output"):
        fit(state, (train[0], train[1] % 3), epochs=1)
    binary = _state().replace(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="one output per class"):
        fit(binary, train, epochs=1)
