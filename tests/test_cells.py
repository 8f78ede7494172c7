"""Cells: Keras parameter layout and initializers, one step against the numpy equations."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpy_keras as ref
import pytest

from rnnjax import GRUCell, LSTMCell, SimpleRNNCell

D, U, B = 5, 4, 3


def _init(cell, x_t):
    carry = cell.zero_carry(x_t.shape[0])
    return cell.init(jax.random.key(0), carry, x_t)["params"]


def _random_params(params, rng):
    """Replaces every parameter with random values so biases are exercised too."""
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)


@pytest.mark.parametrize(
    "cell, bias_shape",
    [
        (LSTMCell(U), (4 * U,)),
        (GRUCell(U), (2, 3 * U)),
        (GRUCell(U, reset_after=False), (3 * U,)),
        (SimpleRNNCell(U), (U,)),
    ],
)
def test_parameters_have_keras_names_and_shapes(cell, bias_shape):
    params = _init(cell, jnp.zeros((B, D)))
    width = cell.gates * U
    chex.assert_trees_all_equal_shapes(
        params,
        {
            "kernel": jnp.zeros((D, width)),
            "recurrent_kernel": jnp.zeros((U, width)),
            "bias": jnp.zeros(bias_shape),
        },
    )
    for leaf in jax.tree.leaves(params):
        chex.assert_type(leaf, jnp.float32)


def test_lstm_bias_starts_with_forget_slice_of_ones():
    params = _init(LSTMCell(U), jnp.zeros((B, D)))
    expected = np.concatenate([np.zeros(U), np.ones(U), np.zeros(2 * U)])
    np.testing.assert_array_equal(params["bias"], expected)
    params = _init(LSTMCell(U, unit_forget_bias=False), jnp.zeros((B, D)))
    np.testing.assert_array_equal(params["bias"], np.zeros(4 * U))


@pytest.mark.parametrize("cell", [LSTMCell(16), GRUCell(16), SimpleRNNCell(16)])
def test_initializers_follow_keras(cell):
    d = 64
    params = _init(cell, jnp.zeros((1, d)))
    kernel = np.asarray(params["kernel"])
    limit = np.sqrt(6.0 / (d + kernel.shape[1]))  # glorot_uniform over the fused width
    assert np.abs(kernel).max() <= limit
    # A uniform on [-limit, limit] has standard deviation limit / sqrt(3).
    np.testing.assert_allclose(kernel.std(), limit / np.sqrt(3), rtol=0.1)
    # Keras' orthogonal on the whole [U, G*U] matrix: orthonormal rows, not per-gate blocks.
    recurrent = np.asarray(params["recurrent_kernel"], np.float64)
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(16), atol=1e-5)
    if cell.gates > 1:
        block = recurrent[:, :16]
        assert not np.allclose(block @ block.T, np.eye(16), atol=1e-3)
    assert not np.any(np.asarray(params["bias"])[..., : cell.units])


def _reference_step(cell, params, carry, x_t):
    p = jax.tree.map(np.asarray, params)
    x = np.asarray(x_t)[:, None, :]
    if isinstance(cell, LSTMCell):
        _, h, c = ref.lstm(x, p["kernel"], p["recurrent_kernel"], p["bias"], initial_state=carry)
        return (h, c)
    if isinstance(cell, GRUCell):
        _, h = ref.gru(
            x, p["kernel"], p["recurrent_kernel"], p["bias"], cell.reset_after, initial_state=carry
        )
        return (h,)
    _, h = ref.simple_rnn(x, p["kernel"], p["recurrent_kernel"], p["bias"], initial_state=carry)
    return (h,)


@pytest.mark.parametrize(
    "cell",
    [LSTMCell(U), GRUCell(U), GRUCell(U, reset_after=False), SimpleRNNCell(U)],
    ids=["lstm", "gru", "gru_reset_before", "simple_rnn"],
)
def test_one_step_matches_numpy_keras(cell, rng):
    x_t = jnp.asarray(rng.normal(size=(B, D)), jnp.float32)
    params = _random_params(_init(cell, x_t), rng)
    carry = tuple(jnp.asarray(rng.normal(size=(B, U)), jnp.float32) for _ in range(cell.num_states))
    new_carry, h = cell.apply({"params": params}, carry, x_t)
    expected = _reference_step(cell, params, [np.asarray(c) for c in carry], x_t)
    chex.assert_shape(h, (B, U))
    chex.assert_trees_all_close(new_carry, expected, atol=1e-5)
    np.testing.assert_array_equal(h, new_carry[0])


def test_activations_are_configurable(rng):
    cell = LSTMCell(U, activation="relu", recurrent_activation="hard_sigmoid")
    x_t = jnp.asarray(rng.normal(size=(B, D)), jnp.float32)
    params = _random_params(_init(cell, x_t), rng)
    carry = cell.zero_carry(B)
    (h, c), _ = cell.apply({"params": params}, carry, x_t)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    _, h_ref, c_ref = ref.lstm(
        np.asarray(x_t)[:, None],
        p["kernel"],
        p["recurrent_kernel"],
        p["bias"],
        activation=relu,
        recurrent_activation=ref.hard_sigmoid,
    )
    np.testing.assert_allclose(h, h_ref, atol=1e-5)
    np.testing.assert_allclose(c, c_ref, atol=1e-5)


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        LSTMCell(U, activation="swishy")


def test_cells_work_inside_flax_rnn(rng):
    """The Flax cell protocol: flax.linen.RNN scans our cell to the same result as Keras."""
    x = jnp.asarray(rng.normal(size=(B, 6, D)), jnp.float32)
    layer = nn.RNN(LSTMCell(U))
    variables = layer.init(jax.random.key(0), x)
    params = variables["params"]["cell"]
    p = jax.tree.map(np.asarray, params)
    outputs = layer.apply(variables, x)
    expected, _, _ = ref.lstm(np.asarray(x), p["kernel"], p["recurrent_kernel"], p["bias"])
    np.testing.assert_allclose(outputs, expected, atol=1e-5)
