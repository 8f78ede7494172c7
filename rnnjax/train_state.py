"""``TrainState``: all that training changes, one pytree, and the compiled model it belongs to.

The leaves are the step, the parameters, the optimizer state, the dropout key and the model's
other variables (``model_state``: Flax collections such as ``batch_stats``). The static fields are
what Keras' ``compile`` fixes: the model, the optimizer and the ``Objective`` (loss and metrics).
So a state can be jitted, donated, vmapped over K models and checkpointed as it is, and the same
state object is what ``fit``, ``evaluate``, ``predict`` and ``load_model`` take and give.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rnnjax.objective import Objective

# An apply function: (params, model_state, inputs, *, training, rngs) -> (outputs, model_state).
ApplyFn = Callable[..., tuple[Any, Any]]


class TrainState(struct.PyTreeNode):
    """The training state of one model.

    Attributes:
      step: optimizer steps taken (int32 scalar).
      params: the model's parameters.
      opt_state: the optimizer's state (None without an optimizer).
      rng: base key; step ``s`` draws its dropout masks from ``fold_in(rng, s)``, so a resumed run
        draws the same masks as an uninterrupted one.
      model_state: the model's non-parameter variables (e.g. ``{"batch_stats": ...}``), updated
        by every training step; ``{}`` for most models.
      model: a ``flax.linen.Module``, or an apply function ``fn(params, model_state, inputs, *,
        training, rngs) -> (outputs, model_state)``.
      tx: the optax optimizer (None: the state can evaluate and predict, not train).
      objective: loss and metrics (``Objective``).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    model_state: Any
    model: Any = struct.field(pytree_node=False)
    tx: optax.GradientTransformation | None = struct.field(pytree_node=False)
    objective: Objective = struct.field(pytree_node=False)

    @classmethod
    def create(
        cls,
        *,
        model: nn.Module | ApplyFn,
        params: Any,
        tx: optax.GradientTransformation | None = None,
        loss: Any = None,
        metrics: Any = None,
        weighted_metrics: Any = None,
        loss_weights: Any = None,
        rng: jax.Array | None = None,
        model_state: Any = None,
    ) -> TrainState:
        """Keras' ``compile``: a model, its parameters, an optimizer, a loss and metrics.

        Args:
          model: any ``flax.linen.Module`` (its ``__call__`` gets the inputs; a ``training``,
            ``train`` or ``deterministic`` argument, if it has one, says whether it trains;
            randomness comes from the ``'dropout'`` rng), or an apply function (see ``model``).
          params: its parameters (``variables["params"]``).
          tx: an optax optimizer (``rnnjax.rmsprop``/``adam``/``sgd`` keep Keras' rules).
          loss, metrics, weighted_metrics, loss_weights: as Keras' ``compile``
            (``Objective.create``): names, objects or functions, per output if needed.
          rng: the dropout key (default ``jax.random.key(0)``).
          model_state: the model's other variable collections, e.g. ``batch_stats``.
        """
        return cls(
            step=jnp.zeros([], jnp.int32),
            params=params,
            opt_state=None if tx is None else tx.init(params),
            rng=jax.random.key(0) if rng is None else rng,
            model_state={} if model_state is None else model_state,
            model=model,
            tx=tx,
            objective=Objective.create(loss, metrics, weighted_metrics, loss_weights),
        )

    def apply_gradients(self, grads) -> TrainState:
        if self.tx is None:
            raise ValueError("this state has no optimizer: pass tx= to TrainState.create to train")
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state)

    def apply(self, params, inputs, *, training: bool = False, rng: jax.Array | None = None):
        """The model's outputs on ``inputs`` and its updated ``model_state`` (unchanged unless
        ``training`` and the model keeps mutable collections)."""
        return apply_model(self.model, params, self.model_state, inputs, training=training, rng=rng)


def apply_model(model, params, model_state, inputs, *, training: bool, rng=None):
    """``(outputs, model_state)`` of a Module or an apply function (see ``TrainState``)."""
    rngs = {} if rng is None else {"dropout": rng}
    if not isinstance(model, nn.Module):
        return model(params, model_state, inputs, training=training, rngs=rngs)
    variables = {"params": params, **model_state}
    kwargs = _training_kwargs(type(model), training)
    if training and model_state:
        return model.apply(variables, inputs, rngs=rngs, mutable=list(model_state), **kwargs)
    return model.apply(variables, inputs, rngs=rngs, **kwargs), model_state


@functools.cache
def _training_argument(module_type: type) -> str | None:
    parameters = inspect.signature(module_type.__call__).parameters
    return next((p for p in ("training", "train", "deterministic") if p in parameters), None)


def _training_kwargs(module_type: type, training: bool) -> dict[str, bool]:
    argument = _training_argument(module_type)
    if argument is None:
        return {}
    return {argument: (not training) if argument == "deterministic" else training}
