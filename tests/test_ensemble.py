"""K models in one vmapped program equal K separate runs; each stops on its own."""

import chex
import jax
import numpy as np
import pytest

from rnnjax import Classifier, LayerSpec, ModelConfig, init_params, losses
from rnnjax.early_stopping import EarlyStopping
from rnnjax.ensemble import fit_ensemble, stack, unstack
from rnnjax.optimizers import rmsprop
from rnnjax.train import fit
from rnnjax.train_state import TrainState

CONFIG = ModelConfig(40, 6, (LayerSpec("gru", 5, dropout=0.25),))
SEEDS = (3, 4, 5)


def _state(seed, learning_rate=1e-2):
    init_key, dropout_key = jax.random.split(jax.random.key(seed))
    return TrainState.create(
        model=Classifier(CONFIG),
        params=init_params(CONFIG, init_key),
        tx=rmsprop(learning_rate),  # the learning rate lives in the state: grids stack
        rng=dropout_key,
        loss=losses.BinaryCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 40, size=(170, 9)).astype(np.int32)
    labels = ((ids[:, -3:] < 20).sum(1) >= 2).astype(np.int32)
    return (ids[:130], labels[:130]), (ids[130:], labels[130:])


def _strip(epochs):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]


@pytest.mark.parametrize(
    "learning_rates",
    [(1e-2, 1e-2, 1e-2), (3e-2, 1e-2, 3e-3)],
    ids=["seeds", "seeds_and_learning_rates"],
)
def test_vmapped_models_equal_separate_runs(data, learning_rates):
    train, val = data
    rule = EarlyStopping(patience=1, restore_best_weights=True)
    states = [_state(seed, lr) for seed, lr in zip(SEEDS, learning_rates)]
    together = fit_ensemble(
        stack(states),
        *train,
        validation_data=val,
        seeds=SEEDS,
        epochs=6,
        batch_size=32,
        early_stopping=rule,
        verbose=0,
    )
    for k, (state, seed) in enumerate(zip(states, SEEDS)):
        alone = fit(
            state,
            *train,
            validation_data=val,
            epochs=6,
            batch_size=32,
            seed=seed,
            callbacks=[rule],
            verbose=0,
        )
        ours, theirs = _strip(together.histories[k]), _strip(alone.history.epochs)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            for key in b:
                assert a[key] == pytest.approx(b[key], abs=1e-5), (k, key)
        assert together.early_stopping[k].best_epoch == alone.callbacks[0].best_epoch
        chex.assert_trees_all_close(
            unstack(together.state)[k].params, alone.state.params, atol=1e-5
        )


def test_each_model_stops_on_its_own(data):
    train, val = data
    # Very different learning rates make the models stop at different epochs.
    states = stack([_state(seed, lr) for seed, lr in zip(SEEDS, (0.3, 1e-2, 1e-3))])
    result = fit_ensemble(
        states,
        *train,
        validation_data=val,
        seeds=SEEDS,
        epochs=12,
        batch_size=32,
        early_stopping=EarlyStopping(patience=0),
        verbose=0,
    )
    lengths = [len(h) for h in result.histories]
    assert len(set(lengths)) > 1, lengths
    for history, record in zip(result.histories, result.early_stopping):
        assert len(history) == (record.stopped_epoch + 1 if record.stop_training else 12)
    # A stopped model's state froze at its last epoch: its optimizer step count says so.
    steps_per_epoch = -(-130 // 32)
    np.testing.assert_array_equal(
        np.asarray(result.state.step), [n * steps_per_epoch for n in lengths]
    )
