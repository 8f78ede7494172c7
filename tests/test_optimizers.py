"""Optimizer updates against the Keras update rules written out in numpy, over several steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnjax.optimizers import adam, get_optimizer, rmsprop, sgd

STEPS = 6


def _gradients(rng):
    # Magnitudes from 1e-4 to 1, where epsilon placement matters.
    return [rng.normal(size=(3, 4)) * 10.0 ** rng.uniform(-4, 0, size=(3, 4)) for _ in range(STEPS)]


def _run(tx, w0, grads):
    params = jnp.asarray(w0, jnp.float32)
    state = tx.init(params)
    trajectory = []
    for g in grads:
        updates, state = tx.update(jnp.asarray(g, jnp.float32), state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append(np.asarray(params))
    return np.stack(trajectory)


def test_rmsprop_matches_keras(rng):
    w0, grads = rng.normal(size=(3, 4)), _gradients(rng)
    lr, rho, eps = 1e-3, 0.9, 1e-7
    w, v, expected = w0.copy(), np.zeros_like(w0), []
    for g in grads:
        v = rho * v + (1 - rho) * g**2
        w = w - lr * g / np.sqrt(v + eps)  # Keras: epsilon inside the square root
        expected.append(w)
    np.testing.assert_allclose(
        _run(rmsprop(lr), w0, grads), np.stack(expected), rtol=1e-5, atol=1e-7
    )


def test_rmsprop_momentum_and_centered_match_keras(rng):
    w0, grads = rng.normal(size=(3, 4)), _gradients(rng)
    lr, rho, eps, momentum = 1e-2, 0.9, 1e-7, 0.5
    w, v, a, m, expected = w0.copy(), np.zeros_like(w0), np.zeros_like(w0), np.zeros_like(w0), []
    for g in grads:
        v = rho * v + (1 - rho) * g**2
        a = rho * a + (1 - rho) * g
        m = momentum * m + lr * g / np.sqrt(v - a**2 + eps)
        w = w - m
        expected.append(w)
    tx = rmsprop(lr, momentum=momentum, centered=True)
    np.testing.assert_allclose(_run(tx, w0, grads), np.stack(expected), rtol=1e-5, atol=1e-6)


def _keras_adam(w0, grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7):
    w, m, v, out = w0.copy(), np.zeros_like(w0), np.zeros_like(w0), []
    for step, g in enumerate(grads):
        t = step + 1
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        w = w - m * alpha / (np.sqrt(v) + eps)
        out.append(w)
    return np.stack(out)


def test_adam_matches_keras_not_optax(rng):
    w0, grads = rng.normal(size=(3, 4)), [g * 1e-3 for g in _gradients(rng)]
    expected = _keras_adam(w0, grads)
    ours = _run(adam(1e-3), w0, grads)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-7)
    # optax.adam puts epsilon after the bias-corrected sqrt: measurably different on small grads.
    with jax.numpy_dtype_promotion("standard"):  # optax.adam mixes int and float internally
        theirs = _run(optax.adam(1e-3, eps=1e-7), w0, grads)
    assert np.abs(theirs - expected).max() > 10 * np.abs(ours - expected).max()


def test_adam_is_jittable_and_counts_steps(rng):
    params = {"w": jnp.ones((2, 2))}
    tx = adam(1e-3)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(3):
        _, state = update(jax.tree.map(jnp.ones_like, params), state, params)
    assert int(state.count) == 3


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_keras(nesterov, rng):
    w0, grads = rng.normal(size=(3, 4)), _gradients(rng)
    lr, momentum = 0.1, 0.9
    w, m, expected = w0.copy(), np.zeros_like(w0), []
    for g in grads:
        m = momentum * m - lr * g
        w = w + (momentum * m - lr * g if nesterov else m)
        expected.append(w)
    tx = sgd(lr, momentum=momentum, nesterov=nesterov)
    np.testing.assert_allclose(_run(tx, w0, grads), np.stack(expected), rtol=1e-5, atol=1e-6)


def test_get_optimizer_uses_keras_defaults_and_rejects_unknown_names(rng):
    w0, grads = rng.normal(size=(3, 4)), _gradients(rng)
    np.testing.assert_allclose(
        _run(get_optimizer("adam"), w0, grads), _keras_adam(w0, grads), atol=2e-7
    )
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        get_optimizer("adamw")
