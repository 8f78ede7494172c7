"""Mixed precision, Flax's convention: ``dtype`` (compute) and ``param_dtype`` (parameters) on the
cells, on ``RNN`` (overriding its cell's) and on ``Classifier``; bfloat16 compute with float32
parameters on the scan path, against the numpy Keras equations at bfloat16's resolution."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpy_keras as ref
import pytest

import rnnjax as rj
from rnnjax import (
    RNN,
    Bidirectional,
    Classifier,
    GRUCell,
    LayerSpec,
    LSTMCell,
    ModelConfig,
    SimpleRNNCell,
    fused,
)

B, T, D, U = 3, 5, 4, 3
CELLS = {
    "lstm": LSTMCell,
    "gru": GRUCell,
    "gru_reset_before": lambda units, **kw: GRUCell(units, reset_after=False, **kw),
    "simple_rnn": SimpleRNNCell,
}
MASK = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
# bfloat16 keeps 8 significant bits (relative spacing 2**-8 ~ 0.004); a few steps of a small
# recurrence stay within a few of those.
BF16_ATOL = 3e-2


def _numpy_keras(kind, params, x, mask):
    p = {name: np.asarray(value, np.float64) for name, value in params.items()}
    args = (np.asarray(x, np.float64), p["kernel"], p["recurrent_kernel"], p["bias"])
    if kind == "lstm":
        return ref.lstm(*args, mask=mask)[0]
    if kind.startswith("gru"):
        return ref.gru(*args, reset_after=kind == "gru", mask=mask)[0]
    return ref.simple_rnn(*args, mask=mask)[0]


@pytest.mark.parametrize("kind", list(CELLS))
def test_bfloat16_compute_with_float32_parameters_on_the_scan(kind, rng):
    """Parameters stay float32; states and outputs are bfloat16 and equal the float64 equations
    to bfloat16's resolution; the gradients are float32 and close to the float32 layer's."""
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    mask = jnp.asarray(MASK)
    mixed = RNN(CELLS[kind](U, dtype=jnp.bfloat16), return_sequences=True, return_state=True)
    variables = jax.tree.map(
        lambda p: jnp.asarray(rng.normal(scale=0.5, size=p.shape), jnp.float32),
        mixed.init(jax.random.key(0), x, mask),
    )
    chex.assert_type(jax.tree.leaves(variables), jnp.float32)
    outputs, *states = jax.jit(mixed.apply)(variables, x, mask)
    chex.assert_type([outputs, *states], jnp.bfloat16)
    expected = _numpy_keras(kind, variables["params"]["cell"], x, MASK)
    np.testing.assert_allclose(outputs.astype(jnp.float32), expected, atol=BF16_ATOL)

    def loss(layer, variables):
        outputs = layer.apply(variables, x, mask)[0]
        return jnp.sum(jnp.sin(outputs.astype(jnp.float32)))

    plain = RNN(CELLS[kind](U), return_sequences=True, return_state=True)
    grads, expected = jax.jit(
        lambda v: (jax.grad(lambda v: loss(mixed, v))(v), jax.grad(lambda v: loss(plain, v))(v))
    )(variables)
    chex.assert_type(jax.tree.leaves(grads), jnp.float32)
    chex.assert_trees_all_close(grads, expected, atol=0.1, rtol=0.05)


def test_param_dtype_and_a_layers_dtypes():
    """``param_dtype`` sets the parameters' dtype (compute promotes with the inputs: float32
    inputs, bfloat16 parameters -> float32); ``RNN(dtype=, param_dtype=)`` override its cell's,
    in a ``Bidirectional`` too."""
    x = jnp.ones((B, T, D), jnp.float32)
    layer = RNN(LSTMCell(U, param_dtype=jnp.bfloat16))
    variables = layer.init(jax.random.key(0), x)
    chex.assert_type(jax.tree.leaves(variables), jnp.bfloat16)
    chex.assert_type(layer.apply(variables, x), jnp.float32)

    layer = Bidirectional(
        RNN(GRUCell(U), return_sequences=True, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    )
    variables = layer.init(jax.random.key(0), x)
    chex.assert_type(jax.tree.leaves(variables), jnp.bfloat16)
    chex.assert_type(layer.apply(variables, x, jnp.asarray(MASK)), jnp.bfloat16)


@pytest.mark.skipif(not fused.available(), reason=f"{fused.unavailable_reason()}")
def test_auto_runs_other_dtypes_on_the_scan(rng):
    """The fused CPU kernels are float32-only: 'auto' gives a bfloat16 layer to the scan (and
    'fused' refuses it: tests/test_fused.py)."""
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    for dtype, kernels in ((jnp.float32, True), (jnp.bfloat16, False)):
        layer = RNN(LSTMCell(U, dtype=dtype))
        variables = layer.init(jax.random.key(0), x)
        program = jax.jit(layer.apply).lower(variables, x).as_text()
        assert ("rnnjax_lstm_forward" in program) == kernels


@pytest.mark.slow
def test_a_mixed_precision_classifier_trains_with_fit(rng):
    """``Classifier(dtype=bfloat16)``: float32 parameters (so the optimizer updates in float32),
    float32 logits near the float32 model's, and ``fit`` trains it."""
    config = ModelConfig(
        vocab_size=20,
        embed_dim=4,
        layers=(LayerSpec("gru", U, dropout=0.2), LayerSpec("lstm", U)),
        mask_zero=True,
    )
    ids = jnp.asarray(rng.integers(0, 20, size=(16, T)), jnp.int32)
    labels = jnp.asarray(rng.integers(0, 2, size=(16,)), jnp.int32)
    model = Classifier(config, dtype=jnp.bfloat16)
    params = rj.init_params(config, jax.random.key(0))
    logits = jax.jit(model.apply)({"params": params}, ids)
    chex.assert_type(logits, jnp.float32)
    expected = jax.jit(Classifier(config).apply)({"params": params}, ids)
    np.testing.assert_allclose(logits, expected, atol=0.05)
    state = rj.TrainState.create(
        model=model,
        params=model.init(jax.random.key(0), ids)["params"],
        tx=rj.adam(1e-2),
        loss=rj.losses.BinaryCrossentropy(from_logits=True),
        rng=jax.random.key(1),
    )
    chex.assert_type(jax.tree.leaves(state.params), jnp.float32)
    result = rj.fit(state, ids, labels, epochs=2, batch_size=8, verbose=0)
    losses = result.history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    chex.assert_type(jax.tree.leaves(result.state.params), jnp.float32)
