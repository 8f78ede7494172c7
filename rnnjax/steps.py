"""Pure, jittable training, evaluation and prediction functions. Nothing here touches the host.

A batch is a dict ``{"x": inputs, "y": targets, "valid": [B]}`` (plus ``"sample_weight"``: ``[B]``
or per step ``[B, T]``, when given), where inputs and targets are pytrees of arrays with a leading
batch axis B. ``valid`` is 1 for a real example and 0 for the padding that fills a last partial
batch, so every step has one compiled shape and every logged value is Keras' over the real
examples only (``rnnjax.objective``).

Steps run in chunks: ``train_steps`` runs steps ``start .. stop - 1`` of an epoch's ``Batches``
(``rnnjax.batches``) as one ``lax.while_loop``, so a whole epoch, or a few chunks of it for a live
progress bar, is one compiled call whatever ``start`` and ``stop`` are.
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import jax.numpy as jnp

from rnnjax import objective
from rnnjax.train_state import TrainState

Batch = dict[str, Any]
Stats = dict[str, Any]


def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Stats]:
    """One optimizer step on ``batch`` with dropout drawn from ``rng``.

    As in Keras, the returned statistics are the batch's loss and metrics in training mode with
    the parameters *before* the update.
    """
    goal = state.objective

    def loss_fn(params):
        y_pred, model_state = state.apply(params, batch["x"], training=True, rng=rng)
        terms = goal.loss_terms(batch["y"], y_pred, batch.get("sample_weight"), batch["valid"])
        return goal.total_loss(terms, y_pred), (y_pred, terms, model_state)

    (total, (y_pred, terms, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    stats = goal.stats(batch["y"], y_pred, batch.get("sample_weight"), batch["valid"], terms, total)
    return state.apply_gradients(grads).replace(model_state=model_state), stats


def eval_step(state: TrainState, batch: Batch) -> Stats:
    """The batch's loss and metric statistics in inference mode (no dropout)."""
    goal = state.objective
    y_pred, _ = state.apply(state.params, batch["x"])
    weight = batch.get("sample_weight")
    if goal.loss:
        terms = goal.loss_terms(batch["y"], y_pred, weight, batch["valid"])
        total = goal.total_loss(terms, y_pred)
    else:
        terms, total = {}, None
    return goal.stats(batch["y"], y_pred, weight, batch["valid"], terms, total)


def step_rng(state: TrainState) -> jax.Array:
    """The dropout key of the state's next step."""
    return jax.random.fold_in(state.rng, state.step)


def mesh_context(sharding: jax.sharding.Sharding | None):
    """The data-parallel mesh as the context mesh while tracing a sharded step, so the fused CPU
    kernels (``rnnjax.fused``) run on each device's rows; a no-op for one device."""
    if isinstance(sharding, jax.sharding.NamedSharding):
        return jax.sharding.use_abstract_mesh(sharding.mesh.abstract_mesh)
    return contextlib.nullcontext()


def train_steps(
    state: TrainState, stats: Stats, batches, start: jax.Array, stop: jax.Array
) -> tuple[TrainState, Stats, jax.Array]:
    """Steps ``start .. stop - 1`` of ``batches``, adding each step's statistics to ``stats``.

    The loop ends early right after a step whose loss is not finite (Keras' ``TerminateOnNaN``
    decides on the host whether to go on).

    Returns:
      ``(state, stats, steps)``: ``steps`` is the step after the last one run (``stop`` unless
      a loss was not finite).
    """

    def keep_going(carry):
        _, _, step, finite = carry
        return (step < stop) & finite

    def body(carry):
        state, stats, step, _ = carry
        state, batch_stats = train_step(state, batches.at(step), step_rng(state))
        loss = batch_stats["loss"].stats["total"]
        return state, objective.merge(stats, batch_stats), step + 1, jnp.isfinite(loss)

    with mesh_context(batches.sharding):
        state, stats, step, _ = jax.lax.while_loop(
            keep_going, body, (state, stats, jnp.asarray(start, jnp.int32), jnp.asarray(True))
        )
    return state, stats, step


def eval_steps(state: TrainState, stats: Stats, batches, start, stop) -> Stats:
    """``stats`` plus those of steps ``start .. stop - 1`` of ``batches`` in inference mode."""

    def body(step, stats):
        return objective.merge(stats, eval_step(state, batches.at(step)))

    with mesh_context(batches.sharding):
        return jax.lax.fori_loop(start, stop, body, stats)


def predict_steps(state: TrainState, batches) -> Any:
    """Outputs ``[S, B, ...]`` for every step of ``batches`` (padding rows included)."""

    def body(_, step):
        return None, state.apply(state.params, batches.at(step)["x"])[0]

    with mesh_context(batches.sharding):
        return jax.lax.scan(body, None, jnp.arange(batches.num_steps))[1]


def zero_stats(state: TrainState, batches) -> Stats:
    """Empty statistics of the values ``eval_step`` (and ``train_step``) log for these batches."""
    shapes = jax.eval_shape(lambda: eval_step(state, batches.at(0)))
    return jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), shapes)
