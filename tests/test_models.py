"""Classifier: Keras parameter totals and summary, numerics, jit, vmap, gradients, config errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpy_keras as ref
import pytest

from rnnjax import Classifier, LayerSpec, ModelConfig, count_params, init_params, probabilities
from rnnjax import summary as model_summary

LSTM8, GRU8 = LayerSpec("lstm", 8), LayerSpec("gru", 8)

KERAS_TOTALS = [
    (ModelConfig(500, 16, (LSTM8,)), 8_809),
    (ModelConfig(500, 16, (LSTM8, LSTM8)), 9_353),
    (ModelConfig(500, 16, (GRU8,)), 8_633),
    (ModelConfig(500, 32, (LayerSpec("lstm", 32),)), 24_353),
    (ModelConfig(500, 32, (LayerSpec("gru", 32),)), 22_369),
    (ModelConfig(1000, 100, (LayerSpec("lstm", 100),), num_classes=46), 185_046),
    (ModelConfig(500, 32, (LayerSpec("simple_rnn", 32),)), 18_113),
]


@pytest.mark.parametrize("config, total", KERAS_TOTALS)
def test_parameter_totals_equal_keras(config, total):
    params = init_params(config, jax.random.key(0))
    assert count_params(params) == total
    assert f" Total params: {total:,} (" in model_summary(config, seq_len=100)


def test_summary_is_the_keras_table():
    expected = """\
Model: "sequential"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
┃ Layer (type)                    ┃ Output Shape           ┃       Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
│ embedding (Embedding)           │ (None, 100, 16)        │         8,000 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ lstm (LSTM)                     │ (None, 100, 8)         │           800 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ lstm_1 (LSTM)                   │ (None, 8)              │           544 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ dense (Dense)                   │ (None, 1)              │             9 │
└─────────────────────────────────┴────────────────────────┴───────────────┘
 Total params: 9,353 (36.54 KB)
 Trainable params: 9,353 (36.54 KB)
 Non-trainable params: 0 (0.00 B)"""
    assert model_summary(ModelConfig(500, 16, (LSTM8, LSTM8)), seq_len=100) == expected


def test_summary_without_a_sequence_length_shows_none():
    config = ModelConfig(500, 16, (LayerSpec("gru", 8, bidirectional=True), LSTM8))
    text = model_summary(config)
    assert "│ embedding (Embedding)           │ (None, None, 16)" in text
    assert "│ bidirectional (Bidirectional)   │ (None, None, 16)" in text
    assert "│ lstm (LSTM)                     │ (None, 8) " in text


def test_parameter_tree_and_initializers():
    config = ModelConfig(500, 16, (LSTM8, GRU8), num_classes=3)
    params = init_params(config, jax.random.key(0))
    assert set(params) == {"embedding", "lstm", "gru", "dense"}
    chex.assert_shape(params["embedding"]["embedding"], (500, 16))
    chex.assert_shape(params["gru"]["cell"]["bias"], (2, 24))
    embedding = np.asarray(params["embedding"]["embedding"])
    assert np.abs(embedding).max() <= 0.05 and embedding.std() > 0.025  # U(-0.05, 0.05)
    kernel = np.asarray(params["dense"]["kernel"])
    assert np.abs(kernel).max() <= np.sqrt(6 / (8 + 3))
    np.testing.assert_array_equal(params["dense"]["bias"], 0.0)


def _reference_logits(params, ids, mask=None):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = p["embedding"]["embedding"][np.asarray(ids)]
    sequences, _, _ = ref.lstm(
        x, **{k: p["lstm"]["cell"][k] for k in ("kernel", "recurrent_kernel", "bias")}, mask=mask
    )
    _, h, _ = ref.lstm(
        sequences,
        **{k: p["lstm_1"]["cell"][k] for k in ("kernel", "recurrent_kernel", "bias")},
        mask=mask,
    )
    return ref.dense(h, p["dense"]["kernel"], p["dense"]["bias"])


@pytest.mark.parametrize("mask_zero", [False, True])
def test_stacked_classifier_matches_numpy_keras(mask_zero, rng):
    config = ModelConfig(50, 6, (LSTM8, LSTM8), num_classes=3, mask_zero=mask_zero)
    params = jax.tree.map(
        lambda p: p + 0.1 * jnp.asarray(rng.normal(size=p.shape), jnp.float32),
        init_params(config, jax.random.key(1)),
    )
    ids = ref.pad([[5, 7, 9, 11], [3, 4], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]], 10, "pre")
    logits = Classifier(config).apply({"params": params}, jnp.asarray(ids))
    chex.assert_shape(logits, (3, 3))
    expected = _reference_logits(params, ids, mask=ids != 0 if mask_zero else None)
    np.testing.assert_allclose(logits, expected, atol=1e-5)


@pytest.mark.parametrize("padding", ["pre", "post"])
def test_mask_zero_makes_padding_invisible_through_stacked_layers(padding, rng):
    """Keras 3.15.1 forwards the mask along returned sequences to the next RNN layer."""
    config = ModelConfig(50, 6, (LayerSpec("gru", 8), LSTM8), mask_zero=True)
    params = init_params(config, jax.random.key(2))
    tokens = [[5, 7, 9, 11, 13]]
    model = Classifier(config)
    unpadded = model.apply({"params": params}, jnp.asarray(tokens))
    padded = model.apply({"params": params}, jnp.asarray(ref.pad(tokens, 12, padding)))
    np.testing.assert_allclose(padded, unpadded, atol=1e-6)


def test_probabilities():
    binary = jnp.asarray([[0.0], [2.0]])
    np.testing.assert_allclose(probabilities(binary), [[0.5], [1 / (1 + np.exp(-2))]], rtol=1e-6)
    multi = jnp.asarray([[0.0, np.log(3.0)]])
    np.testing.assert_allclose(probabilities(multi), [[0.25, 0.75]], rtol=1e-6)


def _ids(rng, batch=4, time=12, vocab=500):
    return jnp.asarray(rng.integers(0, vocab, size=(batch, time)), jnp.int32)


def test_jit_equals_no_jit(rng):
    config = ModelConfig(500, 16, (LayerSpec("lstm", 8, dropout=0.3), GRU8), mask_zero=True)
    model = Classifier(config)
    params = init_params(config, jax.random.key(0))
    ids = _ids(rng)

    def apply(params, ids, key):
        return model.apply({"params": params}, ids, training=True, rngs={"dropout": key})

    key = jax.random.key(3)
    chex.assert_trees_all_close(
        jax.jit(apply)(params, ids, key), apply(params, ids, key), atol=1e-6
    )


def test_vmap_over_stacked_parameters_equals_separate_calls(rng):
    config = ModelConfig(500, 16, (LSTM8,))
    model = Classifier(config)
    keys = jax.random.split(jax.random.key(0), 5)
    stacked = jax.vmap(lambda k: init_params(config, k))(keys)
    chex.assert_tree_shape_prefix(stacked, (5,))
    ids = _ids(rng)
    together = jax.jit(jax.vmap(lambda p: model.apply({"params": p}, ids)))(stacked)
    chex.assert_shape(together, (5, 4, 1))
    for k, key in enumerate(keys):
        alone = model.apply({"params": init_params(config, key)}, ids)
        np.testing.assert_allclose(together[k], alone, atol=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_gradients_are_finite_and_reach_every_parameter(kind, rng):
    config = ModelConfig(
        50,
        6,
        (
            LayerSpec(kind, 8, dropout=0.2, recurrent_dropout=0.2),
            LayerSpec(kind, 8, bidirectional=True),
        ),
    )
    model = Classifier(config)
    params = init_params(config, jax.random.key(0))
    ids = _ids(rng, vocab=50)

    def loss(params):
        logits = model.apply(
            {"params": params}, ids, training=True, rngs={"dropout": jax.random.key(1)}
        )
        return jnp.mean(logits**2)

    grads = jax.grad(loss)(params)
    chex.assert_trees_all_equal_shapes(grads, params)
    chex.assert_tree_all_finite(grads)
    for path, grad in jax.tree_util.tree_leaves_with_path(grads):
        if path[0].key != "embedding":  # only the looked-up rows get gradient
            assert np.abs(np.asarray(grad)).max() > 0, jax.tree_util.keystr(path)


def test_output_at_t_does_not_depend_on_later_inputs(rng):
    """Causality: with return_sequences, step t has zero gradient w.r.t. inputs after t."""
    from rnnjax import RNN, LSTMCell

    layer = RNN(LSTMCell(4), return_sequences=True)
    x = jnp.asarray(rng.normal(size=(1, 6, 3)), jnp.float32)
    variables = layer.init(jax.random.key(0), x)
    grad = jax.grad(lambda x: layer.apply(variables, x)[0, 2].sum())(x)
    assert np.abs(np.asarray(grad[0, :3])).sum() > 0
    np.testing.assert_array_equal(grad[0, 3:], 0.0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: LayerSpec("rnn", 8), "layer kind must be one of"),
        (lambda: LayerSpec("lstm", 0), "units must be >= 1"),
        (lambda: LayerSpec("lstm", 8, dropout=1.5), r"dropout must be in \[0, 1\)"),
        (lambda: LayerSpec("lstm", 8, activation="swish2"), "activation must be one of"),
        (lambda: LayerSpec("lstm", 8, bidirectional=True, merge_mode="max"), "merge_mode"),
        (lambda: ModelConfig(0, 16), "vocab_size and embed_dim must be >= 1"),
        (lambda: ModelConfig(500, 16, ()), "at least one recurrent layer"),
        (lambda: ModelConfig(500, 16, num_classes=0), "num_classes must be >= 1"),
    ],
)
def test_config_errors_are_clear(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_config_round_trips_through_a_dict():
    import dataclasses

    config = ModelConfig(
        1000, 100, (LayerSpec("gru", 32, dropout=0.2, reset_after=False),), num_classes=46
    )
    assert ModelConfig.from_dict(dataclasses.asdict(config)) == config
    hash(config)  # frozen and hashable: usable as a static jit argument


def test_models_of_one_config_compile_their_initialisation_once():
    """``--num-seeds K`` initialises K models of one config: one compilation, not K (each took
    ~1 s, before the data was even checked)."""
    config = ModelConfig(37, 5, (LayerSpec("gru", 3),))  # a config no other test compiles
    compiled = []

    def count(event, seconds, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        first = init_params(config, jax.random.key(0))
        after_first = len(compiled)
        others = [init_params(config, jax.random.key(k)) for k in (1, 2)]
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert after_first >= 1 and len(compiled) == after_first
    assert not np.array_equal(first["embedding"]["embedding"], others[0]["embedding"]["embedding"])
