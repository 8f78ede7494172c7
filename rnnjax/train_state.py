"""``TrainState``: all that training changes, one pytree (params, optimizer state, step, rng)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rnnjax.models import Classifier


class TrainState(struct.PyTreeNode):
    """The training state. ``model``, ``tx`` and ``loss`` are static (not leaves), so the state
    can be jitted, donated, vmapped over K models and checkpointed as it is.

    Attributes:
      step: optimizer steps taken (int32 scalar).
      params: model parameters.
      opt_state: optimizer state.
      rng: base key; step ``s`` draws its dropout masks from ``fold_in(rng, s)``, so a resumed run
        draws the same masks as an uninterrupted one.
      model: the ``Classifier`` (its ``config`` says which ids and labels are valid).
      tx: the optax optimizer.
      loss: Keras loss name (see ``rnnjax.losses``).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    model: Classifier = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    loss: str = struct.field(pytree_node=False)

    @classmethod
    def create(cls, *, model, params, tx, rng, loss) -> TrainState:
        return cls(
            step=jnp.zeros([], jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=rng,
            model=model,
            tx=tx,
            loss=loss,
        )

    def apply_gradients(self, grads) -> TrainState:
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state)
