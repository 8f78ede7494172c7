"""The cuDNN path (``rnnjax.cudnn``): Keras weights in cuDNN's flat layout, checked against
``jax.experimental.rnn``'s own unpacking and its reference LSTM (``lstm_ref``); the layer with
every Keras mask, direction, initial states, dropout, ``Bidirectional``, stacks and K models under
``vmap``, on CPU with ``lstm_ref`` standing in for the cuDNN kernel (``reference_cudnn``), against
numpy Keras and the scan path; the one error off a GPU; and, marked ``gpu``, the real cuDNN."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpy_keras as ref
import pytest
from jax.experimental import rnn
from path_checks import assert_k_models_match_the_scan

from rnnjax import RNN, GRUCell, LayerSpec, LSTMCell, ModelConfig, cudnn

B, T, D, U = 5, 6, 3, 4
# Rows: full, 'pre' padding, 'post' padding, gaps, padding throughout.
MASK = np.array(
    [[1] * 6, [0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 0, 1], [0] * 6], bool
)


def _random(tree, rng, scale=0.6):
    return jax.tree.map(
        lambda p: jnp.asarray(rng.normal(scale=scale, size=p.shape), jnp.float32), tree
    )


def _keras_layers(rng, input_size, units, count, widths=None):
    """``count`` random Keras LSTM weight triples; pseudo-layer i reads ``widths[i]`` inputs."""
    widths = widths or [input_size] * count
    return [
        tuple(
            jnp.asarray(rng.normal(scale=0.5, size=shape), jnp.float32)
            for shape in ((width, 4 * units), (units, 4 * units), (4 * units,))
        )
        for width in widths
    ]


def test_keras_weights_are_what_jax_unpacks_from_the_cudnn_layout(rng):
    """``to_cudnn``: jax's own ``unpack_lstm_weights`` reads back ``W_ih = kernel.T``, ``W_hh =
    recurrent_kernel.T``, ``b_ih = bias``, ``b_hh = 0`` for every pseudo-layer of a 2-layer
    bidirectional stack; ``from_cudnn`` returns the Keras weights."""
    widths = [D, D, 2 * U, 2 * U]
    layers = _keras_layers(rng, D, U, 4, widths)
    flat = cudnn.to_cudnn(layers)
    assert flat.shape == (rnn.get_num_params_in_lstm(D, U, 2, True),)
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(flat, D, U, 2, True)
    for index, (kernel, recurrent_kernel, bias) in enumerate(layers):
        np.testing.assert_array_equal(w_ih[index], kernel.T)
        np.testing.assert_array_equal(w_hh[index], recurrent_kernel.T)
        np.testing.assert_array_equal(b_ih[index], bias)
        np.testing.assert_array_equal(b_hh[index], np.zeros(4 * U))
    chex.assert_trees_all_equal(cudnn.from_cudnn(flat, D, U, 2, True), layers)
    with pytest.raises(ValueError, match="take"):
        cudnn.from_cudnn(flat, D, U, 1, True)


def test_cudnn_weights_run_the_keras_equations_in_jax_reference(rng):
    """A cuDNN weight vector with both biases (jax's own initialiser) -> Keras weights: numpy
    Keras on them (two layers, the second reading the first's sequence; no padding) equals
    ``jax.experimental.rnn.lstm_ref`` on the original vector."""
    flat = rnn.init_lstm_weight(jax.random.key(0), D, U, 2, False)
    x = rng.normal(size=(B, T, D))
    states = [rng.normal(size=(2, B, U)) for _ in range(2)]
    expected = rnn.lstm_ref(
        jnp.asarray(x, jnp.float32),
        *(jnp.asarray(s, jnp.float32) for s in states),
        *rnn.unpack_lstm_weights(flat, D, U, 2, False),
        jnp.full((B,), T, jnp.int32),
        D,
        U,
        2,
        0.0,
        False,
    )
    sequence, finals = x, []
    for index, weights in enumerate(cudnn.from_cudnn(flat, D, U, 2, False)):
        initial = [states[0][index], states[1][index]]
        sequence, h, c = ref.lstm(sequence, *weights, initial_state=initial)
        finals.append((h, c))
    np.testing.assert_allclose(expected[0], sequence, atol=1e-5)
    np.testing.assert_allclose(expected[1], np.stack([h for h, _ in finals]), atol=1e-5)
    np.testing.assert_allclose(expected[2], np.stack([c for _, c in finals]), atol=1e-5)


# -- the layer, with jax's reference LSTM standing in for the cuDNN kernel -------------------------


def _reference_forward(x, h0, c0, weights, lengths):
    """What ``cudnn._cudnn_forward`` returns, computed by ``lstm_ref``; it must never be handed a
    vmapped array (cuDNN's primitives have no batching rule)."""
    assert not any(type(a).__name__ == "BatchTracer" for a in (x, h0, c0, weights, lengths))
    unpacked = rnn.unpack_lstm_weights(weights, x.shape[-1], h0.shape[-1], 1, False)
    outputs = rnn.lstm_ref(x, h0, c0, *unpacked, lengths, x.shape[-1], h0.shape[-1], 1, 0.0, False)
    return outputs, (x, h0, c0, weights, lengths)


def _reference_backward(residuals, cotangents):
    x, h0, c0, weights, lengths = residuals
    _, pullback = jax.vjp(lambda *args: _reference_forward(*args, lengths)[0], x, h0, c0, weights)
    return pullback(cotangents)


@pytest.fixture
def reference_cudnn(monkeypatch):
    """The cuDNN path on CPU: ``lstm_ref`` (cuDNN's documented semantics, lengths included) in
    place of the kernel calls, and the backend check passed."""
    monkeypatch.setattr(cudnn, "_cudnn_forward", _reference_forward)
    monkeypatch.setattr(cudnn, "_cudnn_backward", _reference_backward)
    monkeypatch.setattr(cudnn, "unavailable_reason", lambda: None)


@pytest.mark.parametrize(
    "go_backwards, masked", [(False, False), (True, True)], ids=["forward", "backwards_masked"]
)
def test_cudnn_layer_matches_numpy_keras(reference_cudnn, go_backwards, masked, rng):
    """Every Keras mask (full, 'pre', 'post', gaps, an empty row), both directions, initial
    states: outputs at every step and the final states."""
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    mask = MASK if masked else None
    layer = RNN(
        LSTMCell(U),
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
        implementation="cudnn",
    )
    variables = _random(layer.init(jax.random.key(0), x), rng)
    initial = _random([jnp.zeros((B, U))] * 2, rng)
    outputs, h, c = jax.jit(layer.apply)(
        variables, x, None if mask is None else jnp.asarray(mask), initial_state=initial
    )
    params = {k: np.asarray(v, np.float64) for k, v in variables["params"]["cell"].items()}
    expected, expected_h, expected_c = ref.lstm(
        np.asarray(x),
        params["kernel"],
        params["recurrent_kernel"],
        params["bias"],
        mask=mask,
        initial_state=[np.asarray(s, np.float64) for s in initial],
        go_backwards=go_backwards,
    )
    np.testing.assert_allclose(outputs, expected, atol=1e-5)
    np.testing.assert_allclose(h, expected_h, atol=1e-5)
    np.testing.assert_allclose(c, expected_c, atol=1e-5)


def test_cudnn_gradients_equal_the_scan(reference_cudnn, rng):
    """Every gradient (parameters, inputs, initial states) of a masked layer with input dropout
    and without bias."""
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    initial = _random([jnp.zeros((B, U))] * 2, rng)
    variables = None
    grads = {}
    for implementation in ("cudnn", "scan"):
        layer = RNN(
            LSTMCell(U, dropout=0.3, use_bias=False),
            return_sequences=True,
            return_state=True,
            implementation=implementation,
        )
        variables = variables or _random(layer.init(jax.random.key(0), x), rng)

        def loss(variables, x, initial, layer=layer):
            outputs, h, c = layer.apply(
                variables,
                x,
                jnp.asarray(MASK),
                initial_state=initial,
                training=True,
                rngs={"dropout": jax.random.key(3)},
            )
            return jnp.sum(jnp.sin(outputs)) + jnp.sum(h**2) + jnp.sum(jnp.cos(c))

        grads[implementation] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(
            variables, x, initial
        )
    chex.assert_trees_all_close(grads["cudnn"], grads["scan"], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_cudnn_runs_k_models_of_a_stacked_bidirectional_classifier_under_vmap(reference_cudnn, rng):
    """Three models at once: a masked bidirectional LSTM feeding an LSTM; logits and every
    parameter gradient equal each model's own scan path, and cuDNN is only ever called on one
    model's arrays (``_reference_forward`` checks)."""
    config = ModelConfig(
        vocab_size=12,
        embed_dim=3,
        layers=(LayerSpec("lstm", U, bidirectional=True), LayerSpec("lstm", U)),
        mask_zero=True,
    )
    ids = jnp.asarray(np.asarray(rng.integers(1, 12, size=(B, T)), np.int32) * MASK)
    assert_k_models_match_the_scan(config, ids, "cudnn", rng)


def test_cudnn_off_a_gpu_is_one_clear_error():
    x = jnp.zeros((B, T, D), jnp.float32)
    match = (
        r"implementation='cudnn' cannot run this layer: cuDNN needs a GPU, and the default JAX "
        r"backend is 'cpu'; use implementation='auto' or 'scan'"
    )
    with pytest.raises(ValueError, match=match):
        RNN(LSTMCell(U), implementation="cudnn").init(jax.random.key(0), x)


@pytest.mark.parametrize(
    "cell, dtype, match",
    [
        (lambda: GRUCell(U), jnp.float32, "LSTMCell only, not GRUCell"),
        (lambda: LSTMCell(U, recurrent_activation="hard_sigmoid"), jnp.float32, "'sigmoid'"),
        (lambda: LSTMCell(U, recurrent_dropout=0.2), jnp.float32, "no recurrent dropout"),
        (lambda: LSTMCell(U, dtype=jnp.bfloat16), jnp.float32, "float32 only.*bfloat16"),
    ],
)
def test_cudnn_names_what_it_cannot_run(cell, dtype, match):
    x = jnp.zeros((B, T, D), dtype)
    with pytest.raises(ValueError, match=f"implementation='cudnn' cannot run.*{match}"):
        RNN(cell(), implementation="cudnn").init(jax.random.key(0), x)


@pytest.mark.gpu
def test_cudnn_on_the_gpu_equals_numpy_keras_and_the_scan(rng):
    """The real cuDNN kernels: values of a masked layer (every mask pattern) against numpy Keras,
    gradients against the scan, and three models under vmap."""
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    variables = None
    results = {}
    with jax.default_matmul_precision("float32"):  # no TF32 in the scan's products
        for implementation in ("cudnn", "scan"):
            layer = RNN(LSTMCell(U), return_sequences=True, implementation=implementation)
            variables = variables or _random(layer.init(jax.random.key(0), x), rng)

            def loss(variables, x, layer=layer):
                outputs = layer.apply(variables, x, jnp.asarray(MASK))
                return jnp.sum(jnp.sin(outputs)), outputs

            step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
            results[implementation] = step(variables, x)
            stacked = jax.tree.map(lambda p: jnp.stack([p, 0.5 * p, -p]), variables)
            results[f"{implementation}_vmap"] = jax.jit(jax.vmap(step, in_axes=(0, None)))(
                stacked, x
            )
    params = {k: np.asarray(v, np.float64) for k, v in variables["params"]["cell"].items()}
    names = ("kernel", "recurrent_kernel", "bias")
    expected, _, _ = ref.lstm(np.asarray(x), *(params[name] for name in names), mask=MASK)
    np.testing.assert_allclose(results["cudnn"][0][1], expected, atol=1e-5)
    chex.assert_trees_all_close(results["cudnn"], results["scan"], atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(results["cudnn_vmap"], results["scan_vmap"], atol=1e-5, rtol=1e-5)
