"""The Pallas recurrences (``rnnjax.pallas``) against the numpy Keras equations and the scan path:
values and every gradient within 1e-5, masks, direction, initial states, input dropout, a grid
over the batch, ``Bidirectional``, stacks and K models under ``vmap``. On CPU the kernels run in
Pallas' interpreter (tiny shapes: it is slow); the ``gpu`` tests compile them for a GPU."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpy_keras as ref
import pytest
from path_checks import assert_k_models_match_the_scan

from rnnjax import RNN, GRUCell, LayerSpec, LSTMCell, ModelConfig, SimpleRNNCell, pallas

# Units and rows that are not powers of two: the kernels pad both.
B, T, D, U = 5, 5, 3, 3
CELLS = {"lstm": LSTMCell, "gru": GRUCell}
NUM_STATES = {"lstm": 2, "gru": 1}
# Rows: full, 'pre' padding, 'post' padding, gaps, padding throughout.
MASK = np.array(
    [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 1, 0, 1], [0, 0, 0, 0, 0]], bool
)


def _random(tree, rng, scale=0.7):
    return jax.tree.map(
        lambda p: jnp.asarray(rng.normal(scale=scale, size=p.shape), jnp.float32), tree
    )


def _numpy_keras(kind, params, x, **kw):
    p = {name: np.asarray(value, np.float64) for name, value in params.items()}
    args = (np.asarray(x), p["kernel"], p["recurrent_kernel"], p["bias"])
    if kind == "lstm":
        outputs, h, c = ref.lstm(*args, **kw)
        return outputs, (h, c)
    outputs, h = ref.gru(*args, reset_after=True, **kw)
    return outputs, (h,)


@pytest.mark.parametrize("kind", list(CELLS))
def test_pallas_matches_numpy_keras(kind, rng):
    """A masked layer running backwards from given initial states: outputs and final states."""
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    layer = RNN(
        CELLS[kind](U),
        return_sequences=True,
        return_state=True,
        go_backwards=True,
        implementation="pallas",
    )
    variables = _random(layer.init(jax.random.key(0), x), rng)
    initial = _random([jnp.zeros((B, U))] * NUM_STATES[kind], rng)
    outputs, *states = jax.jit(layer.apply)(variables, x, jnp.asarray(MASK), initial_state=initial)
    expected, expected_states = _numpy_keras(
        kind,
        variables["params"]["cell"],
        x,
        mask=MASK,
        initial_state=[np.asarray(s, np.float64) for s in initial],
        go_backwards=True,
    )
    np.testing.assert_allclose(outputs, expected, atol=1e-5)
    chex.assert_trees_all_close(tuple(states), expected_states, atol=1e-5)
    chex.assert_type([outputs, *states], jnp.float32)


@pytest.mark.parametrize("kind", list(CELLS))
def test_pallas_gradients_equal_the_scan(kind, rng, monkeypatch):
    """Every gradient (parameters, inputs, initial states) of a masked layer with input
    dropout, with three kernel instances over the batch (two rows each, one of them padding)."""
    monkeypatch.setattr(pallas, "BLOCK_ROWS", 2)
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    initial = _random([jnp.zeros((B, U))] * NUM_STATES[kind], rng)
    variables = None
    grads = {}
    for implementation in ("pallas", "scan"):
        layer = RNN(
            CELLS[kind](U, dropout=0.3),
            return_sequences=True,
            return_state=True,
            implementation=implementation,
        )
        variables = variables or _random(layer.init(jax.random.key(0), x), rng)

        def loss(variables, x, initial, layer=layer):
            outputs, *states = layer.apply(
                variables,
                x,
                jnp.asarray(MASK),
                initial_state=initial,
                training=True,
                rngs={"dropout": jax.random.key(3)},
            )
            return jnp.sum(jnp.sin(outputs)) + sum(jnp.sum(s**2) for s in states)

        grads[implementation] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(
            variables, x, initial
        )
    chex.assert_trees_all_close(grads["pallas"], grads["scan"], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_pallas_runs_k_models_of_a_stacked_bidirectional_classifier_under_vmap(rng):
    """Three models at once (``vmap``): a masked bidirectional GRU feeding an LSTM; logits and
    every parameter gradient equal each model's own scan path."""
    config = ModelConfig(
        vocab_size=12,
        embed_dim=3,
        layers=(LayerSpec("gru", U, bidirectional=True), LayerSpec("lstm", U)),
        mask_zero=True,
    )
    ids = jnp.asarray(np.asarray(rng.integers(1, 12, size=(B, T)), np.int32) * MASK)
    assert_k_models_match_the_scan(config, ids, "pallas", rng)


@pytest.mark.parametrize(
    "cell, dtype, match",
    [
        (lambda: GRUCell(U, reset_after=False), jnp.float32, r"GRUCell\(reset_after=False\)"),
        (lambda: SimpleRNNCell(U), jnp.float32, "no Pallas kernel for SimpleRNNCell"),
        (lambda: LSTMCell(U, activation="relu"), jnp.float32, "activation='tanh'"),
        (lambda: LSTMCell(U, recurrent_dropout=0.2), jnp.float32, "no recurrent dropout"),
        (lambda: GRUCell(U, dtype=jnp.bfloat16), jnp.bfloat16, "float32 only.*bfloat16"),
    ],
)
def test_pallas_where_it_cannot_run_is_one_clear_error(cell, dtype, match):
    x = jnp.zeros((B, T, D), dtype)
    with pytest.raises(ValueError, match=f"implementation='pallas' cannot run.*{match}.*'scan'"):
        RNN(cell(), implementation="pallas").init(jax.random.key(0), x)


@pytest.mark.gpu
# 7 units run as 8 (broadcast products), 20 as 32 (Triton's dot).
@pytest.mark.parametrize("units", [7, 20])
@pytest.mark.parametrize("kind", list(CELLS))
def test_pallas_on_the_gpu_equals_numpy_keras_and_the_scan(kind, units, rng):
    """Compiled for the GPU (Triton): values against numpy Keras, gradients against the scan,
    with padded units and a grid of two batch blocks."""
    batch = 2 * pallas.BLOCK_ROWS
    steps = np.arange(T)
    mask = np.stack([steps >= (row % T) for row in range(batch)])  # 'pre' padding, every length
    x = jnp.asarray(rng.normal(size=(batch, T, D)), jnp.float32)
    variables = None
    results = {}
    with jax.default_matmul_precision("float32"):  # no TF32 in the scan's products
        for implementation in ("pallas", "scan"):
            layer = RNN(CELLS[kind](units), return_sequences=True, implementation=implementation)
            variables = variables or _random(layer.init(jax.random.key(0), x), rng, scale=0.5)

            def loss(variables, x, layer=layer):
                outputs = layer.apply(variables, x, jnp.asarray(mask))
                return jnp.sum(jnp.sin(outputs)), outputs

            step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
            results[implementation] = step(variables, x)
    expected, _ = _numpy_keras(kind, variables["params"]["cell"], x, mask=mask)
    np.testing.assert_allclose(results["pallas"][0][1], expected, atol=1e-5)
    chex.assert_trees_all_close(results["pallas"], results["scan"], atol=1e-5, rtol=1e-5)
