"""Pure, jittable training and evaluation functions. Nothing here touches the host.

Shape letters: N examples, T time, S steps per epoch, B batch size.

A batch is ``{"ids": [B, T] int32, "label": [B], "weight": [B] float32}``; ``weight`` is 1 for a
real example and 0 for the padding that fills the last partial batch up to B, so every step has one
compiled shape and every mean is Keras' mean over the real examples.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

from rnnjax.batches import DeviceData, gather_batch
from rnnjax.losses import accuracy, compute_loss
from rnnjax.metrics import Metrics
from rnnjax.train_state import TrainState

Batch = dict[str, jax.Array]


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    """One optimizer step on ``batch`` with dropout drawn from ``rng``.

    As in Keras, the returned metrics are the batch's loss and accuracy in training mode with the
    parameters *before* the update.
    """

    def loss_fn(params):
        logits = state.model.apply(
            {"params": params}, batch["ids"], training=True, rngs={"dropout": rng}
        )
        losses = compute_loss(state.loss, logits, batch["label"])
        return weighted_mean(losses, batch["weight"]), (logits, losses)

    (_, (logits, losses)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = Metrics.from_batch(losses, accuracy(logits, batch["label"]), batch["weight"])
    return state.apply_gradients(grads), metrics


def eval_step(state: TrainState, batch: Batch) -> Metrics:
    """Loss and accuracy sums of ``batch`` in inference mode (no dropout)."""
    logits = state.model.apply({"params": state.params}, batch["ids"])
    losses = compute_loss(state.loss, logits, batch["label"])
    return Metrics.from_batch(losses, accuracy(logits, batch["label"]), batch["weight"])


def make_batch(
    data: DeviceData,
    rows: jax.Array,
    weights: jax.Array,
    sharding: jax.sharding.Sharding | None = None,
) -> Batch:
    """Rows ``rows [B]`` of the on-device dataset, with their weights ``[B]``; split over devices
    along the batch axis when ``sharding`` is given (data parallelism)."""
    ids, labels = gather_batch(data, rows)
    batch = {"ids": ids, "label": labels, "weight": weights}
    return batch if sharding is None else jax.lax.with_sharding_constraint(batch, sharding)


def mesh_context(sharding: jax.sharding.Sharding | None):
    """The data-parallel mesh as the context mesh while tracing a sharded step, so the fused CPU
    kernels (``rnnjax.fused``) run on each device's rows; a no-op for one device."""
    if isinstance(sharding, jax.sharding.NamedSharding):
        return jax.sharding.use_abstract_mesh(sharding.mesh.abstract_mesh)
    return contextlib.nullcontext()


def step_rng(state: TrainState) -> jax.Array:
    """The dropout key of the state's next step."""
    return jax.random.fold_in(state.rng, state.step)


def train_epoch(
    state: TrainState,
    data: DeviceData,
    indices: jax.Array,
    weights: jax.Array,
    sharding: jax.sharding.Sharding | None = None,
) -> tuple[TrainState, Metrics, jax.Array]:
    """A whole epoch as one ``lax.scan`` over steps, gathering each batch on device.

    Args:
      state: the training state.
      data: the training set on device.
      indices: ``[S, B]`` row numbers per step (the epoch's shuffled order).
      weights: ``[S, B]`` 1 for real rows, 0 for padding.
      sharding: how to split each batch over devices (None: one device).

    Returns:
      ``(state, epoch metrics, per-step loss [S])``; the per-step losses let the host name the
      first step whose loss was not finite.
    """

    def body(carry, step_inputs):
        state, totals = carry
        batch = make_batch(data, *step_inputs, sharding)
        state, metrics = train_step(state, batch, step_rng(state))
        return (state, totals.merge(metrics)), metrics.loss_sum / jnp.maximum(metrics.count, 1.0)

    with mesh_context(sharding):
        (state, totals), step_losses = jax.lax.scan(
            body, (state, Metrics.zeros()), (indices, weights)
        )
    return state, totals, step_losses


def evaluate_epoch(
    state: TrainState,
    data: DeviceData,
    indices: jax.Array,
    weights: jax.Array,
    sharding: jax.sharding.Sharding | None = None,
) -> Metrics:
    """Loss and accuracy sums over ``data`` in the order of ``indices [S, B]``."""

    def body(totals, step_inputs):
        return totals.merge(eval_step(state, make_batch(data, *step_inputs, sharding))), None

    with mesh_context(sharding):
        totals, _ = jax.lax.scan(body, Metrics.zeros(), (indices, weights))
    return totals


def predict_logits(state: TrainState, ids: jax.Array) -> jax.Array:
    """Logits ``[N, C]`` for ``ids [N, T]`` in inference mode."""
    return state.model.apply({"params": state.params}, ids)
