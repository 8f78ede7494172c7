"""Keras get_weights() order -> rnnjax parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import numpy_keras as ref
import pytest

from rnnjax import Classifier, LayerSpec, ModelConfig, load_keras_weights, params_from_keras


def _keras_like_weights(rng, vocab, embed, units, classes, kind="lstm", bidirectional=False):
    """Random arrays laid out as Keras' Sequential.get_weights() returns them."""
    gates = {"lstm": 4, "gru": 3}[kind]
    bias_shape = (gates * units,) if kind == "lstm" else (2, gates * units)
    layer = [
        rng.normal(size=(embed, gates * units)),
        rng.normal(size=(units, gates * units)),
        rng.normal(size=bias_shape),
    ]
    layers = layer + [rng.normal(size=a.shape) for a in layer] if bidirectional else layer
    width = units * (2 if bidirectional else 1)
    weights = [
        rng.uniform(-0.05, 0.05, size=(vocab, embed)),
        *layers,
        rng.normal(size=(width, classes)),
        rng.normal(size=(classes,)),
    ]
    return [w.astype(np.float32) for w in weights]


def test_lstm_weights_run_with_keras_outputs(rng, tmp_path):
    config = ModelConfig(30, 6, (LayerSpec("lstm", 5),), num_classes=4)
    weights = _keras_like_weights(rng, 30, 6, 5, 4)
    ids = rng.integers(0, 30, size=(3, 9))
    embedding, kernel, recurrent, bias, dense_kernel, dense_bias = weights
    _, h, _ = ref.lstm(embedding[ids], kernel, recurrent, bias)
    expected = ref.dense(h, dense_kernel, dense_bias)
    model = Classifier(config)
    params = params_from_keras(config, weights)
    np.testing.assert_allclose(
        model.apply({"params": params}, jnp.asarray(ids)), expected, atol=1e-5
    )
    np.savez(tmp_path / "weights.npz", *weights)
    loaded = load_keras_weights(config, tmp_path / "weights.npz")
    jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_bidirectional_gru_weights_are_forward_then_backward(rng):
    config = ModelConfig(30, 6, (LayerSpec("gru", 5, bidirectional=True),), num_classes=1)
    weights = _keras_like_weights(rng, 30, 6, 5, 1, kind="gru", bidirectional=True)
    params = params_from_keras(config, weights)
    np.testing.assert_array_equal(params["bidirectional"]["forward"]["cell"]["kernel"], weights[1])
    np.testing.assert_array_equal(params["bidirectional"]["backward"]["cell"]["bias"], weights[6])
    ids = rng.integers(0, 30, size=(2, 7))
    x = weights[0][ids]
    _, h_forward = ref.gru(x, *weights[1:4])
    _, h_backward = ref.gru(x, *weights[4:7], go_backwards=True)
    expected = ref.dense(np.concatenate([h_forward, h_backward], -1), *weights[7:])
    logits = Classifier(config).apply({"params": params}, jnp.asarray(ids))
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_wrong_count_or_shape_names_the_weight(rng):
    config = ModelConfig(30, 6, (LayerSpec("lstm", 5),), num_classes=4)
    weights = _keras_like_weights(rng, 30, 6, 5, 4)
    with pytest.raises(ValueError, match="expects 6 Keras weight arrays"):
        params_from_keras(config, weights[:-1])
    weights[2] = weights[2][:, :12]
    with pytest.raises(ValueError, match=r"lstm/cell/recurrent_kernel has shape \(5, 12\)"):
        params_from_keras(config, weights)
