"""Epoch metrics as on-device sums (``Metrics``) and the host-side per-epoch record (``History``).

Keras reports an epoch's loss and accuracy as sample-weighted means over every example seen, so
metrics are kept as sums and a count, merged by addition and divided once per epoch.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
from flax import struct


class Metrics(struct.PyTreeNode):
    """Weighted sums of per-example loss and accuracy, and the total weight (example count)."""

    loss_sum: jax.Array
    correct_sum: jax.Array
    count: jax.Array

    @classmethod
    def zeros(cls) -> Metrics:
        return cls(
            jnp.zeros([], jnp.float32), jnp.zeros([], jnp.float32), jnp.zeros([], jnp.float32)
        )

    @classmethod
    def from_batch(cls, losses: jax.Array, correct: jax.Array, weights: jax.Array) -> Metrics:
        """Sums of ``losses [B]`` and ``correct [B]`` weighted by ``weights [B]`` (0 = padding)."""
        return cls(jnp.sum(losses * weights), jnp.sum(correct * weights), jnp.sum(weights))

    def merge(self, other: Metrics) -> Metrics:
        return jax.tree.map(jnp.add, self, other)

    def compute(self, prefix: str = "") -> dict[str, float]:
        """Host floats ``{prefix + "loss": mean loss, prefix + "accuracy": mean accuracy}``."""
        loss_sum, correct_sum, count = (
            float(v) for v in jax.device_get((self.loss_sum, self.correct_sum, self.count))
        )
        count = max(count, 1.0)
        return {f"{prefix}loss": loss_sum / count, f"{prefix}accuracy": correct_sum / count}


@dataclasses.dataclass(frozen=True)
class History:
    """Keras' ``History``: one dict of logs per finished epoch, in order.

    ``history.history`` gives Keras' dict of lists (``{"loss": [...], "val_loss": [...]}``).
    """

    epochs: tuple[dict[str, float], ...] = ()

    def append(self, logs: dict[str, float]) -> History:
        return History(self.epochs + (dict(logs),))

    @property
    def history(self) -> dict[str, list[float]]:
        keys: dict[str, None] = {}
        for logs in self.epochs:
            keys.update(dict.fromkeys(logs))
        return {key: [logs.get(key, math.nan) for logs in self.epochs] for key in keys}

    def to_json(self) -> str:
        return json.dumps({"epochs": list(self.epochs)}, indent=1, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> History:
        return cls(tuple(json.loads(text)["epochs"]))

    def __len__(self) -> int:
        return len(self.epochs)
