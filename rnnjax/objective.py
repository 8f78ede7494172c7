"""What training minimises and reports: Keras' ``compile(loss, loss_weights, metrics,
weighted_metrics)`` as one frozen, hashable record, and the pure functions that turn a batch's
targets and predictions into the loss to differentiate and the statistics of every logged value.

Outputs. A model returns one array, or a dict, tuple or list of arrays; the targets have the
same structure. Outputs are named by their dict keys, or ``output_<i>`` in a tuple or list. One
loss (or one metric list) given for several outputs applies to each of them.

Logs (Keras' names): ``loss`` is the weighted sum of the outputs' losses; with two or more loss
terms, ``<output>_loss`` records each one unweighted. Metrics are named as given (``accuracy``,
``auc``, ...), prefixed ``<output>_`` when the model has several outputs; a name that repeats gets
``_1``, ``_2``, ..., and a weighted metric named like an unweighted one gets ``weighted_``.

An output of one number per example (``[B]``) is scored as ``[B, 1]`` (``per_example``).

Padding. Batches have a fixed size; the rows that fill a last partial batch are marked by
``valid`` (``[B]``, 0 for padding) and count nowhere: not in losses, not in metrics. ``metrics``
see only that row mask; ``weighted_metrics`` see it times the sample weights (Keras:
``metrics=`` ignore sample and class weights).

Statistics are additive (``rnnjax.metrics``): the epoch's are the sum of its batches', and every
logged value is ``result`` of a sum — the loss over an epoch is Keras' mean of batch losses
weighted by batch size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rnnjax import losses, metrics
from rnnjax.metrics import Metric

Array = jax.Array
Key = str | int | None  # an output: its dict key, its index, or None for a single array
Stats = dict[str, Any]


def outputs(tree: Any) -> list[tuple[Key, Any]]:
    """``(key, value)`` per output: ``[(None, array)]`` for one array, dict items (sorted by key)
    or ``(index, value)`` pairs for a tuple or list."""
    if isinstance(tree, dict):
        return sorted(tree.items())
    if isinstance(tree, (tuple, list)):
        return list(enumerate(tree))
    return [(None, tree)]


def output_name(key: Key) -> str:
    return "" if key is None else key if isinstance(key, str) else f"output_{key}"


def _per_output(spec: Any, leaf) -> tuple[tuple[Key, Any], ...]:
    """A per-output spec as ``((key, value), ...)``: a dict by key, a list by index, anything
    else for every output (key None)."""
    if isinstance(spec, dict):
        return tuple(sorted((key, leaf(value)) for key, value in spec.items()))
    return ((None, leaf(spec)),)


def _metric_lists(spec: Any) -> tuple[tuple[Key, tuple[Metric, ...]], ...]:
    if spec is None:
        return ()
    if isinstance(spec, dict):
        return tuple(
            sorted((key, tuple(metrics.get(m) for m in _as_list(v))) for key, v in spec.items())
        )
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if items and all(isinstance(m, (list, tuple)) or m is None for m in items):
        return tuple((i, tuple(metrics.get(m) for m in _as_list(v))) for i, v in enumerate(items))
    return ((None, tuple(metrics.get(m) for m in items)),)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _lookup(spec: tuple[tuple[Key, Any], ...], key: Key, default=None):
    for spec_key, value in spec:
        if spec_key is None or spec_key == key:
            return value
    return default


def per_example(target, prediction) -> tuple[Array, Array]:
    """A rank-1 output (one number per example, ``[B]``) as ``[B, 1]``, its target too: Keras'
    functions reduce the last axis, which for ``[B]`` would be the batch itself — the same value
    unweighted, but then padding rows and sample weights could not be told apart."""
    if jnp.ndim(prediction) == 1:
        prediction = prediction[:, None]
        if jnp.ndim(target) == 1:
            target = target[:, None]
    return target, prediction


def _rows(valid: Array, ndim: int) -> Array:
    """``valid [B]`` shaped to weigh targets of rank ``ndim``: ``[B]``, else ``[B, 1, ...]``
    with one trailing axis (per-step targets weigh whole rows)."""
    return valid if ndim <= 1 else valid.reshape(valid.shape[0], 1)


def _uniquify(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        unique.append(name if count == 0 else f"{name}_{count}")
        seen[name] = count + 1
    return unique


@dataclasses.dataclass(frozen=True)
class Objective:
    """Keras' compile arguments, resolved: ``losses.get`` and ``metrics.get`` applied, per output.

    Build it with ``Objective.create(loss=..., metrics=..., ...)``; ``TrainState.create`` does.
    """

    loss: tuple[tuple[Key, losses.Loss], ...] = ()
    loss_weights: tuple[tuple[Key, float], ...] = ()
    metrics: tuple[tuple[Key, tuple[Metric, ...]], ...] = ()
    weighted_metrics: tuple[tuple[Key, tuple[Metric, ...]], ...] = ()

    @classmethod
    def create(
        cls,
        loss: Any = None,
        metrics: Any = None,
        weighted_metrics: Any = None,
        loss_weights: Any = None,
    ) -> Objective:
        """Args as Keras' ``compile``:

        Args:
          loss: a Keras loss name, a ``losses.Loss``, a function ``fn(y_true, y_pred)`` of
            per-element losses; or a dict (by output key) or list (by output index) of them.
            None: no loss (a state for evaluation of metrics and prediction only).
          metrics: a list of metric names, ``Metric``s or functions, for every output; or a dict
            of such lists by output key, or a list of lists by output index.
          weighted_metrics: the same, weighted by ``sample_weight``/``class_weight``.
          loss_weights: a float for every output, or a dict/list of floats.
        """
        if loss is None:
            loss_spec = ()
        elif isinstance(loss, (list, tuple)):
            loss_spec = tuple((i, losses.get(v)) for i, v in enumerate(loss) if v is not None)
        else:
            loss_spec = _per_output(loss, losses.get)
        if loss_weights is None:
            weights = ()
        elif isinstance(loss_weights, (list, tuple)):
            weights = tuple((i, float(w)) for i, w in enumerate(loss_weights))
        else:
            weights = _per_output(loss_weights, float)
        return cls(loss_spec, weights, _metric_lists(metrics), _metric_lists(weighted_metrics))

    def loss_terms(self, y_true, y_pred, sample_weight, valid) -> dict[str, Array]:
        """Each output's reduced loss (unweighted), by output name; padding rows left out."""
        if not self.loss:
            raise ValueError("this state has no loss: pass loss= to TrainState.create to train")
        targets = dict(outputs(y_true))
        terms = {}
        for key, prediction in outputs(y_pred):
            loss = _lookup(self.loss, key)
            if loss is None:
                continue
            if key not in targets:
                raise ValueError(f"no target for output {output_name(key) or 'y'!r}")
            target, prediction = per_example(targets[key], prediction)
            terms[output_name(key)] = loss(target, prediction, sample_weight, valid)
        return terms

    def total_loss(self, terms: dict[str, Array], y_pred) -> Array:
        """Keras' total: the sum of the terms, each times its ``loss_weight``."""
        names = {output_name(key): key for key, _ in outputs(y_pred)}
        total = jnp.zeros([], jnp.float32)
        for name, term in terms.items():
            total = total + _lookup(self.loss_weights, names[name], 1.0) * term
        return total

    def stats(self, y_true, y_pred, sample_weight, valid, terms, total) -> Stats:
        """The batch's statistics of every logged value, keyed by log name: ``Tracked`` pairs of
        additive statistics and the metric that reads them."""
        count = jnp.sum(valid.astype(jnp.float32))
        stats: Stats = {}
        if self.loss:
            stats["loss"] = Tracked({"total": total * count, "count": count}, LOSS_MEAN)
            if len(terms) > 1:
                for name, term in terms.items():
                    stats[f"{name}_loss"] = Tracked(
                        {"total": term * count, "count": count}, LOSS_MEAN
                    )
        predictions = outputs(y_pred)
        targets = dict(outputs(y_true))
        prefixed = len(predictions) > 1
        named = []
        for weighted, spec in ((False, self.metrics), (True, self.weighted_metrics)):
            for key, prediction in predictions:
                if key not in targets:
                    continue
                target, prediction = per_example(targets[key], prediction)
                weight = _rows(valid.astype(jnp.float32), jnp.ndim(target))
                if weighted and sample_weight is not None:
                    weight = _weights_times_rows(sample_weight, valid)
                for metric in _lookup(spec, key, ()):
                    name = f"{output_name(key)}_{metric.name}" if prefixed else metric.name
                    named.append(
                        (name, weighted, Tracked(metric.stats(target, prediction, weight), metric))
                    )
        unweighted = {name for name, weighted, _ in named if not weighted}
        renamed = [
            f"weighted_{name}" if weighted and name in unweighted else name
            for name, weighted, _ in named
        ]
        for name, (_, _, tracked) in zip(_uniquify(renamed), named):
            stats[name] = tracked
        return stats


class Tracked(struct.PyTreeNode):
    """A logged value's additive statistics with the metric that reads them (static), so a stats
    dict carries what ``results`` needs through jit, merging and checkpoints."""

    stats: Any
    metric: Any = struct.field(pytree_node=False)


def results(stats: Stats) -> dict[str, Array]:
    """Every logged value from (summed) statistics, as arrays (host floats: ``to_logs``)."""
    return {name: tracked.metric.result(tracked.stats) for name, tracked in stats.items()}


def directions(stats: Stats) -> dict[str, str | None]:
    """``"min"``/``"max"``/None per log name, for ``mode="auto"`` monitors."""
    return {name: tracked.metric.direction for name, tracked in stats.items()}


def _weights_times_rows(sample_weight: Array, valid: Array) -> Array:
    sample_weight = jnp.asarray(sample_weight).astype(jnp.float32)
    rows = valid.astype(jnp.float32)
    return sample_weight * rows.reshape(rows.shape[0], *([1] * (sample_weight.ndim - 1)))


@dataclasses.dataclass(frozen=True)
class LossMean:
    """The running mean of a loss: ``{"total", "count"}`` stats (Keras' ``Mean`` tracker, which
    weighs each batch's loss by its size)."""

    name: str = "loss"
    direction: str = "min"

    def result(self, stats: Stats) -> Array:
        return losses.divide_no_nan(stats["total"], stats["count"])


LOSS_MEAN = LossMean()


def check_targets(goal: Objective, y: Any, output_shapes: Any, name: str) -> None:
    """Host-side checks of targets against what each output's loss can mean, once per dataset:
    JAX would train silently on labels a loss cannot use (Keras gives such a label loss 0).

    Raises:
      ValueError: one line naming the output, the first bad value and the fix.
    """
    targets = dict(outputs(y))
    for key, shape in outputs(output_shapes):
        loss = _lookup(goal.loss, key)
        if loss is None or key not in targets:
            continue
        target = np.asarray(targets[key])
        where = f"{name} targets{'' if key is None else f' of {output_name(key)!r}'}"
        if isinstance(loss, losses.SparseCategoricalCrossentropy):
            classes = shape.shape[-1]
            if classes < 2:
                raise ValueError(
                    f"sparse_categorical_crossentropy needs one output per class (>= 2); the "
                    f"model gives {classes} — for two classes with one output use "
                    "binary_crossentropy"
                )
            allowed = (target >= 0) & (target < classes) & (np.mod(target, 1) == 0)
            if loss.ignore_class is not None:
                allowed |= target == loss.ignore_class
            if not allowed.all():
                index = tuple(int(i) for i in np.argwhere(~allowed)[0])
                raise ValueError(
                    f"{where}{list(index)} = {target[index]} is not a class id in [0, {classes}) "
                    f"of the model's {classes} outputs"
                )
        elif isinstance(loss, losses.BinaryCrossentropy):
            if target.size and (target.min() < 0 or target.max() > 1):
                index = tuple(int(i) for i in np.argwhere((target < 0) | (target > 1))[0])
                raise ValueError(
                    f"{where}{list(index)} = {target[index]} is outside [0, 1]: "
                    "binary_crossentropy takes 0/1 labels or probabilities (class ids need "
                    "sparse_categorical_crossentropy and one output per class)"
                )


def to_logs(values: dict[str, Array], prefix: str = "") -> dict[str, float]:
    """Host logs: Python floats (a vector-valued metric becomes a list), keys prefixed."""
    host = jax.device_get(values)
    return {
        f"{prefix}{name}": float(value) if jnp.ndim(value) == 0 else [float(v) for v in value]
        for name, value in host.items()
    }


def merge(stats: Stats, other: Stats) -> Stats:
    """Statistics of both batches (or epochs, devices): their elementwise sum."""
    return metrics.merge(stats, other)
