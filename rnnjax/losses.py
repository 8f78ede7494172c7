"""Keras losses and the ``"accuracy"`` metric, per example, computed from logits.

Shape letters: B batch, C classes. Every function returns ``[B]``; the caller reduces with sample
weights, which is how Keras averages (a batch's mean over its real examples).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

LOSSES = ("binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy")


def binary_crossentropy(logits: Array, labels: Array) -> Array:
    """``keras.losses.binary_crossentropy`` of ``sigmoid(logits)``, computed stably from logits.

    Args:
      logits: ``[B, 1]`` (or ``[B]``).
      labels: ``[B]`` of 0/1 (or ``[B, 1]``).

    Equal to Keras' probability form wherever Keras' clip to ``[1e-7, 1 - 1e-7]`` is inactive;
    beyond it Keras' loss saturates at ~16.1 with zero gradient, this one keeps learning.
    """
    logits = logits.reshape(logits.shape[0], -1)
    labels = labels.reshape(labels.shape[0], -1).astype(logits.dtype)
    per_unit = -labels * jax.nn.log_sigmoid(logits) - (1 - labels) * jax.nn.log_sigmoid(-logits)
    return jnp.mean(per_unit, axis=-1)


def categorical_crossentropy(logits: Array, labels: Array) -> Array:
    """``keras.losses.categorical_crossentropy`` of ``softmax(logits)``: ``labels`` are one-hot
    ``[B, C]``; ``-sum(labels * log_softmax(logits))``."""
    return -jnp.sum(labels.astype(logits.dtype) * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def sparse_categorical_crossentropy(logits: Array, labels: Array) -> Array:
    """``keras.losses.sparse_categorical_crossentropy``: integer ``labels [B]`` in ``[0, C)``."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_probs, labels.reshape(-1, 1).astype(jnp.int32), axis=-1)[:, 0]


def compute_loss(name: str, logits: Array, labels: Array) -> Array:
    """Per-example loss ``[B]`` by Keras name. ``categorical_crossentropy`` accepts integer
    labels ``[B]`` too (one-hot encoded here, as ``keras.utils.to_categorical`` would)."""
    if name == "binary_crossentropy":
        return binary_crossentropy(logits, labels)
    if name == "categorical_crossentropy":
        if labels.ndim == 1:
            labels = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        return categorical_crossentropy(logits, labels)
    if name == "sparse_categorical_crossentropy":
        return sparse_categorical_crossentropy(logits, labels)
    raise ValueError(f"unknown loss {name!r}; use one of {LOSSES}")


def accuracy(logits: Array, labels: Array) -> Array:
    """Keras ``metrics=["accuracy"]`` per example ``[B]`` of 0./1.

    One logit: ``BinaryAccuracy(threshold=0.5)``, i.e. ``sigmoid(z) > 0.5`` (strict: a
    probability of exactly 0.5 predicts 0) which is ``z > 0``. Several: argmax against the
    integer label (or the argmax of a one-hot label).
    """
    if logits.shape[-1] == 1:
        predicted = (logits[:, 0] > 0).astype(jnp.int32)
        return (predicted == labels.reshape(-1).astype(jnp.int32)).astype(jnp.float32)
    if labels.ndim == 2:
        labels = jnp.argmax(labels, axis=-1)
    return (jnp.argmax(logits, axis=-1) == labels.astype(jnp.int32)).astype(jnp.float32)
