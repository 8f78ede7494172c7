"""Losses and accuracy against Keras' probability-form formulas in numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax.losses import (
    accuracy,
    binary_crossentropy,
    categorical_crossentropy,
    compute_loss,
    sparse_categorical_crossentropy,
)

EPS = 1e-7  # Keras' backend epsilon, used to clip probabilities


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _keras_bce(p, t):
    p = np.clip(p, EPS, 1 - EPS)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def test_binary_crossentropy_equals_keras_away_from_saturation(rng):
    logits = rng.uniform(-8, 8, size=(64, 1))
    labels = rng.integers(0, 2, size=64)
    ours = binary_crossentropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))
    np.testing.assert_allclose(ours, _keras_bce(_sigmoid(logits[:, 0]), labels), rtol=1e-5)


def test_binary_crossentropy_keeps_gradient_where_keras_saturates():
    ours = binary_crossentropy(jnp.asarray([[-30.0]]), jnp.asarray([1]))
    assert float(ours[0]) == pytest.approx(30.0, rel=1e-6)  # Keras clips to 16.118
    assert _keras_bce(_sigmoid(-30.0), 1) == pytest.approx(-np.log(EPS), rel=1e-6)


def test_categorical_and_sparse_categorical_equal_keras(rng):
    logits = rng.normal(size=(16, 5)) * 3
    labels = rng.integers(0, 5, size=16)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = -np.log(np.clip(probs[np.arange(16), labels], EPS, 1 - EPS))
    logits_j = jnp.asarray(logits, jnp.float32)
    np.testing.assert_allclose(
        sparse_categorical_crossentropy(logits_j, jnp.asarray(labels)), expected, rtol=1e-5
    )
    one_hot = np.eye(5)[labels]
    np.testing.assert_allclose(
        categorical_crossentropy(logits_j, jnp.asarray(one_hot, jnp.float32)), expected, rtol=1e-5
    )
    # compute_loss one-hot encodes integer labels for categorical cross-entropy.
    np.testing.assert_allclose(
        compute_loss("categorical_crossentropy", logits_j, jnp.asarray(labels)), expected, rtol=1e-5
    )
    with pytest.raises(ValueError, match="unknown loss 'mse'"):
        compute_loss("mse", logits_j, jnp.asarray(labels))


def test_binary_accuracy_threshold_is_strict():
    logits = jnp.asarray([[0.0], [1e-6], [-1e-6], [3.0]])
    # sigmoid(0) == 0.5 predicts 0 (Keras compares p > 0.5).
    np.testing.assert_array_equal(accuracy(logits, jnp.asarray([0, 1, 0, 0])), [1, 1, 1, 0])


def test_categorical_accuracy_is_argmax():
    logits = jnp.asarray([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0]])
    np.testing.assert_array_equal(accuracy(logits, jnp.asarray([1, 1])), [1, 0])  # ties: first
    np.testing.assert_array_equal(accuracy(logits, jnp.asarray([[0, 1, 0], [1, 0, 0]])), [1, 1])
