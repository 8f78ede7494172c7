"""Optimizers with Keras 3 defaults and update rules, as ``optax.GradientTransformation``s.

RMSprop and SGD are optax's own transformations with Keras' defaults. Keras' Adam adds epsilon to
the *uncorrected* ``sqrt(v)`` and folds both bias corrections into the step size, which no setting
of ``optax.adam`` reproduces, so ``adam`` here is its own (init, update) pair.

Each keeps its learning rate in its state (``optax.inject_hyperparams``), so callbacks can change
it between steps (``ReduceLROnPlateau``, ``LearningRateScheduler``) and stacked models can differ
in it (a learning-rate grid); the other hyperparameters stay Python constants, which keeps every
update bitwise what it would be without the injection.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def _injected(factory, learning_rate, **constants) -> optax.GradientTransformation:
    """``factory(learning_rate, **constants)`` with the learning rate kept in the state."""
    injectable = optax.inject_hyperparams(factory, static_args=tuple(constants))
    return injectable(learning_rate=learning_rate, **constants)


def rmsprop(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    rho: float = 0.9,
    momentum: float = 0.0,
    epsilon: float = 1e-7,
    centered: bool = False,
) -> optax.GradientTransformation:
    """``keras.optimizers.RMSprop``: ``v = rho v + (1 - rho) g^2; w -= lr g / sqrt(v + eps)``.

    Epsilon sits inside the square root, as in Keras (and ``optax.rmsprop``'s default); velocities
    start at zero with no bias correction. Keras ``momentum > 0`` is optax's ``momentum`` trace.
    """
    return _injected(
        _rmsprop, learning_rate, rho=rho, momentum=momentum, epsilon=epsilon, centered=centered
    )


def _rmsprop(learning_rate, rho, momentum, epsilon, centered) -> optax.GradientTransformation:
    return optax.rmsprop(
        learning_rate,
        decay=rho,
        eps=epsilon,
        initial_scale=0.0,
        eps_in_sqrt=True,
        centered=centered,
        momentum=momentum or None,
    )


class KerasAdamState(NamedTuple):
    """Step count and the first/second moment estimates, one of each per parameter."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def adam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
) -> optax.GradientTransformation:
    """``keras.optimizers.Adam``, update for update.

    With ``t = step + 1``: ``alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)``;
    ``m += (g - m)(1 - beta_1)``; ``v += (g^2 - v)(1 - beta_2)``;
    ``w -= m alpha / (sqrt(v) + epsilon)``. Unlike ``optax.adam``, epsilon is added to the
    uncorrected ``sqrt(v)`` (an effective epsilon of ``epsilon / sqrt(1 - beta_2^t)``).
    """
    return _injected(_adam, learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)


def _adam(learning_rate, beta_1, beta_2, epsilon) -> optax.GradientTransformation:
    def init_fn(params: optax.Params) -> KerasAdamState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return KerasAdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=zeros)

    def update_fn(updates, state: KerasAdamState, params=None):
        del params
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        t = (state.count + 1).astype(jnp.float32)
        alpha = lr * jnp.sqrt(1.0 - beta_2**t) / (1.0 - beta_1**t)
        mu = jax.tree.map(lambda m, g: m + (g - m) * (1.0 - beta_1), state.mu, updates)
        nu = jax.tree.map(lambda v, g: v + (g * g - v) * (1.0 - beta_2), state.nu, updates)
        steps = jax.tree.map(lambda m, v: -(m * alpha) / (jnp.sqrt(v) + epsilon), mu, nu)
        return steps, KerasAdamState(count=optax.safe_int32_increment(state.count), mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def sgd(
    learning_rate: optax.ScalarOrSchedule = 0.01, momentum: float = 0.0, nesterov: bool = False
) -> optax.GradientTransformation:
    """``keras.optimizers.SGD``: ``m = momentum m - lr g; w += m`` (Nesterov:
    ``w += momentum m - lr g``), which is ``optax.sgd``'s trace scaled by ``-lr``."""
    return _injected(_sgd, learning_rate, momentum=momentum, nesterov=nesterov)


def _sgd(learning_rate, momentum, nesterov) -> optax.GradientTransformation:
    return optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov)


OPTIMIZERS = {"rmsprop": rmsprop, "adam": adam, "sgd": sgd}


def get_optimizer(name: str, learning_rate: float | None = None) -> optax.GradientTransformation:
    """``compile(optimizer="rmsprop")``: the named optimizer with Keras defaults, or the given
    learning rate."""
    try:
        factory = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; use one of {sorted(OPTIMIZERS)}") from None
    return factory() if learning_rate is None else factory(learning_rate)
