"""Data sources streamed to the device: the same batches give the same training as arrays held on
device; grain datasets, generators and iterators; chunks, padding and one-line errors."""

import grain
import jax
import numpy as np
import pytest

from rnnjax import Classifier, LayerSpec, ModelConfig, init_params, losses
from rnnjax.optimizers import rmsprop
from rnnjax.train import evaluate, fit, predict
from rnnjax.train_state import TrainState

CONFIG = ModelConfig(40, 6, (LayerSpec("lstm", 5, dropout=0.2),))


def _state():
    return TrainState.create(
        model=Classifier(CONFIG),
        params=init_params(CONFIG, jax.random.key(0)),
        tx=rmsprop(1e-2),
        rng=jax.random.key(1),
        loss=losses.BinaryCrossentropy(from_logits=True),
        metrics=["accuracy", "auc"],
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 40, size=(70, 8)).astype(np.int32)
    return ids, ((ids[:, -3:] < 20).sum(1) >= 2).astype(np.float32)[:, None]


def _slices(ids, labels, batch_size):
    """The unshuffled batches of the arrays path, as a generator would yield them."""
    for start in range(0, len(ids), batch_size):
        yield ids[start : start + batch_size], labels[start : start + batch_size]


def test_a_streamed_source_trains_exactly_as_the_same_arrays(data):
    ids, labels = data
    arrays = fit(_state(), ids, labels, batch_size=16, epochs=3, shuffle=False, verbose=0)
    dataset = grain.MapDataset.source(list(_slices(ids, labels, 16)))  # re-iterable, len 5
    streamed = fit(_state(), dataset, epochs=3, verbose=0, steps_per_execution=2)
    # Equal to float32 rounding: the two paths compile into different XLA programs.
    for ours, theirs in zip(streamed.history.epochs, arrays.history.epochs, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        streamed.state.params,
        arrays.state.params,
    )


def test_an_iterator_is_read_on_across_epochs(data):
    ids, labels = data

    def forever():
        while True:
            yield from _slices(ids, labels, 16)

    result = fit(_state(), forever(), epochs=2, steps_per_epoch=5, verbose=0)
    assert int(result.state.step) == 10 and len(result.history) == 2
    with pytest.raises(ValueError, match="yielded no batch in epoch 2.*steps_per_epoch"):
        fit(_state(), _slices(ids, labels, 16), epochs=2, verbose=0)


def test_grain_pipeline_with_dict_batches_and_validation(data):
    ids, labels = data
    records = [{"x": ids[i], "y": labels[i]} for i in range(len(ids))]
    train = grain.MapDataset.source(records).shuffle(seed=3).batch(16)
    validation = grain.MapDataset.source(records).batch(32)
    result = fit(_state(), train, validation_data=validation, epochs=2, verbose=0)
    assert set(result.history.history) == {
        "accuracy",
        "auc",
        "loss",
        "val_accuracy",
        "val_auc",
        "val_loss",
    }
    on_arrays = evaluate(result.state, ids, labels)
    on_stream = evaluate(result.state, validation)
    assert on_stream == pytest.approx(on_arrays, rel=1e-6)
    np.testing.assert_allclose(
        predict(result.state, grain.MapDataset.source(list(ids)).batch(32)),
        predict(result.state, ids),
        rtol=1e-6,
    )


def test_source_errors_are_one_line(data):
    ids, labels = data
    with pytest.raises(ValueError, match="the data source is empty"):
        fit(_state(), iter([]), epochs=1, verbose=0)
    growing = iter([(ids[:8], labels[:8]), (ids[:16], labels[:16])])
    with pytest.raises(ValueError, match="may shrink .* but not grow"):
        fit(_state(), growing, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"must be \(x, y\)"):
        fit(_state(), iter([ids[:8]]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="its batches carry y"):
        fit(_state(), iter([(ids, labels)]), labels, epochs=1, verbose=0)
