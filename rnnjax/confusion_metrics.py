"""Keras' threshold metrics, ``Precision``, ``Recall`` and ``AUC``, as additive statistics.

They follow the metric protocol of ``rnnjax.metrics`` (``name``, ``direction``, ``stats``,
``result``); their statistics are Keras' per-threshold weighted confusion counts ``[K]``, summed
over batches exactly as Keras' variables are (keras/src/metrics/confusion_metrics.py and
metrics_utils.py, 3.15.1):

* a prediction is positive at threshold ``tau`` iff ``y_pred > tau`` (strict), a label iff
  ``y_true != 0``; every element of ``y_pred`` counts (a ``[B, C]`` prediction is ``B C`` binary
  decisions), weighted by its sample weight;
* evenly spaced thresholds (AUC's by default) take Keras' bucket path, whose float32 rounding
  decides values lying on a threshold: ``y_pred`` clipped to ``[0, 1]``, bucket
  ``ceil(p (K - 1)) - 1`` counts towards every threshold up to it;
* ``top_k``, ``class_id``, ``multi_label``, ``label_weights`` and ``curve="PRGAIN"`` are not
  implemented.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax.losses import EPSILON, divide_no_nan
from rnnjax.losses import squeeze_or_expand_to_same_rank as align_ranks

Array = jax.Array
Counts = dict[str, Array]


def _threshold_tuple(thresholds: float | Sequence[float] | None, default: float) -> tuple:
    if thresholds is None:
        return (default,)
    values = (thresholds,) if np.isscalar(thresholds) else thresholds
    return tuple(float(value) for value in values)


def evenly_spaced(thresholds: Sequence[float]) -> bool:
    """Keras' ``is_evenly_distributed_thresholds``: at least 3 thresholds, within 1e-7 of
    ``i / (K - 1)``; such thresholds take the bucket path."""
    count = len(thresholds)
    if count < 3:
        return False
    even = np.arange(count, dtype=np.float32) / (count - 1)
    return bool(np.allclose(thresholds, even, atol=EPSILON))


def confusion_counts(
    y_true,
    y_pred,
    thresholds: Sequence[float],
    sample_weight=None,
    evenly: bool = False,
    thresholds_with_epsilon: bool = False,
) -> Counts:
    """Keras' ``update_confusion_matrix_variables`` as one batch's counts.

    Args:
      y_true: labels, nonzero = positive, e.g. ``[B]`` or ``[B, 1]``.
      y_pred: scores, e.g. ``[B, 1]``, aligned with ``y_true`` by
        ``squeeze_or_expand_to_same_rank``; every element is a decision.
      thresholds: ``K`` thresholds.
      sample_weight: ``[B]`` or the shape of ``y_true``; broadcast over ``y_pred``.
      evenly: the thresholds are ``i / (K - 1)`` (``evenly_spaced``): count by buckets.
      thresholds_with_epsilon: the first and last thresholds lie just outside ``[0, 1]`` (AUC's),
        so the bucket of a score of 0 is 0, not -1 (which counts nowhere).

    Returns:
      ``{"tp", "fp", "tn", "fn"}``, each ``[K]`` float32.
    """
    y_true = jnp.asarray(y_true).astype(jnp.float32)
    y_pred = jnp.asarray(y_pred).astype(jnp.float32)
    y_pred, y_true = align_ranks(y_pred, y_true)
    weights = None
    if sample_weight is not None:
        sample_weight = jnp.asarray(sample_weight).astype(jnp.float32)[..., None]
        _, sample_weight = align_ranks(y_true, sample_weight, expand_rank_1=False)
        weights = jnp.broadcast_to(sample_weight, y_pred.shape).reshape(-1)
    levels = jnp.asarray(thresholds, jnp.float32)
    positive = (y_true != 0).reshape(-1)
    scores = y_pred.reshape(-1)
    if evenly:
        return _bucket_counts(positive, scores, weights, levels.shape[0], thresholds_with_epsilon)
    above = scores[None, :] > levels[:, None]  # [K, M]
    below = ~above

    def count(label: Array, predicted: Array) -> Array:
        hit = label[None, :] & predicted
        if weights is None:
            return jnp.sum(hit.astype(jnp.float32), axis=1)
        return jnp.sum(jnp.where(hit, weights[None, :], 0.0), axis=1)

    return {
        "tp": count(positive, above),
        "fp": count(~positive, above),
        "tn": count(~positive, below),
        "fn": count(positive, below),
    }


def _bucket_counts(
    positive: Array, scores: Array, weights: Array | None, count: int, with_epsilon: bool
) -> Counts:
    """Keras' optimised path: a score in ``(i / (K - 1), (i + 1) / (K - 1)]`` falls in bucket
    ``i`` and is above thresholds ``0..i``; counts are reversed cumulative bucket sums."""
    labels = positive.astype(jnp.float32)
    true_labels = labels if weights is None else labels * weights
    false_labels = 1.0 - labels if weights is None else (1.0 - labels) * weights
    scores = jnp.clip(scores, 0.0, 1.0)
    buckets = jnp.ceil(scores * (jnp.asarray(count, jnp.float32) - 1.0)) - 1.0
    if with_epsilon:
        buckets = jnp.maximum(buckets, 0.0)
    buckets = buckets.astype(jnp.int32)  # -1 (a score of 0 without epsilon) is dropped

    def above(values: Array) -> Array:
        per_bucket = jax.ops.segment_sum(values, buckets, num_segments=count)
        return jnp.flip(jnp.cumsum(jnp.flip(per_bucket)))

    tp, fp = above(true_labels), above(false_labels)
    return {"tp": tp, "fp": fp, "tn": jnp.sum(false_labels) - fp, "fn": jnp.sum(true_labels) - tp}


def _require_unit_range(thresholds: tuple) -> None:
    if any(not 0.0 <= value <= 1.0 for value in thresholds):
        raise ValueError(f"thresholds must lie in [0, 1], got {thresholds}")


@dataclasses.dataclass(frozen=True)
class _TruePositiveShare:
    """``tp / (tp + other)`` per threshold, 0 while the denominator is; a scalar for one
    threshold (default 0.5), else ``[K]``. Stats ``{"tp", other}``."""

    thresholds: float | tuple[float, ...] | None = None
    name: str = ""
    direction: ClassVar[Literal["max"]] = "max"
    other: ClassVar[str]

    def __post_init__(self):
        object.__setattr__(self, "thresholds", _threshold_tuple(self.thresholds, 0.5))
        _require_unit_range(self.thresholds)

    def stats(self, y_true, y_pred, sample_weight=None) -> Counts:
        counts = confusion_counts(
            y_true, y_pred, self.thresholds, sample_weight, evenly_spaced(self.thresholds)
        )
        return {"tp": counts["tp"], self.other: counts[self.other]}

    def result(self, stats: Counts) -> Array:
        value = divide_no_nan(stats["tp"], stats["tp"] + stats[self.other])
        return value[0] if len(self.thresholds) == 1 else value


@dataclasses.dataclass(frozen=True)
class Precision(_TruePositiveShare):
    """``keras.metrics.Precision``: ``tp / (tp + fp)`` per threshold, 0 before any positive
    prediction. A scalar for one threshold (default 0.5), else ``[K]``. Stats ``{"tp", "fp"}``.
    """

    name: str = "precision"
    other: ClassVar[str] = "fp"


@dataclasses.dataclass(frozen=True)
class Recall(_TruePositiveShare):
    """``keras.metrics.Recall``: ``tp / (tp + fn)`` per threshold, 0 before any positive label.
    A scalar for one threshold (default 0.5), else ``[K]``. Stats ``{"tp", "fn"}``."""

    name: str = "recall"
    other: ClassVar[str] = "fn"


_CURVES = {"ROC": "ROC", "roc": "ROC", "PR": "PR", "pr": "PR"}
_SUMMATIONS = {
    "interpolation": "interpolation",
    "Interpolation": "interpolation",
    "minoring": "minoring",
    "Minoring": "minoring",
    "majoring": "majoring",
    "Majoring": "majoring",
}


@dataclasses.dataclass(frozen=True)
class AUC:
    """``keras.metrics.AUC``: the area under the ROC or precision-recall curve, from counts at
    ``num_thresholds`` thresholds; 0 before any update. Stats ``{"tp", "fp", "tn", "fn"}``,
    each ``[num_thresholds]``.

    Thresholds are ``-1e-7``, ``i / (n - 1)`` for ``i = 1..n-2``, ``1 + 1e-7``; or ``-1e-7``,
    the sorted ``thresholds``, ``1 + 1e-7`` (``num_thresholds`` becomes ``len + 2``).
    ``from_logits`` applies a sigmoid first. ``summation_method``: ``"interpolation"`` (ROC:
    trapezoids; PR: Davis & Goadrich's interpolation of ``tp`` against ``tp + fp``),
    ``"minoring"``/``"majoring"`` (the lower/higher end of each interval).
    """

    num_thresholds: int = 200
    curve: str = "ROC"
    summation_method: str = "interpolation"
    name: str = "auc"
    thresholds: tuple[float, ...] | None = None
    from_logits: bool = False
    direction: ClassVar[Literal["max"]] = "max"

    def __post_init__(self):
        if self.curve not in _CURVES:
            raise ValueError(f"curve must be 'ROC' or 'PR', got {self.curve!r}")
        if self.summation_method not in _SUMMATIONS:
            raise ValueError(
                "summation_method must be 'interpolation', 'minoring' or 'majoring', got "
                f"{self.summation_method!r}"
            )
        object.__setattr__(self, "curve", _CURVES[self.curve])
        object.__setattr__(self, "summation_method", _SUMMATIONS[self.summation_method])
        if self.thresholds is not None:
            thresholds = tuple(sorted(_threshold_tuple(self.thresholds, 0.5)))
            object.__setattr__(self, "thresholds", thresholds)
            object.__setattr__(self, "num_thresholds", len(thresholds) + 2)
        elif self.num_thresholds <= 1:
            raise ValueError(f"num_thresholds must be > 1, got {self.num_thresholds}")

    @property
    def all_thresholds(self) -> tuple[float, ...]:
        """The ``num_thresholds`` thresholds, in Python floats as Keras computes them."""
        count = self.num_thresholds
        inner = self.thresholds
        if inner is None:
            inner = tuple((i + 1) * 1.0 / (count - 1) for i in range(count - 2))
        return (0.0 - EPSILON, *inner, 1.0 + EPSILON)

    def stats(self, y_true, y_pred, sample_weight=None) -> Counts:
        if self.from_logits:
            y_pred = jax.nn.sigmoid(jnp.asarray(y_pred).astype(jnp.float32))
        evenly = self.thresholds is None or evenly_spaced((0.0, *self.thresholds, 1.0))
        return confusion_counts(
            y_true,
            y_pred,
            self.all_thresholds,
            sample_weight,
            evenly,
            thresholds_with_epsilon=True,
        )

    def result(self, stats: Counts) -> Array:
        tp, fp, tn, fn = stats["tp"], stats["fp"], stats["tn"], stats["fn"]
        if self.curve == "PR" and self.summation_method == "interpolation":
            return _interpolated_pr_auc(tp, fp, fn)
        recall = divide_no_nan(tp, tp + fn)
        if self.curve == "ROC":
            x, y = divide_no_nan(fp, fp + tn), recall
        else:
            x, y = recall, divide_no_nan(tp, tp + fp)
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2.0
        elif self.summation_method == "minoring":
            heights = jnp.minimum(y[:-1], y[1:])
        else:
            heights = jnp.maximum(y[:-1], y[1:])
        return jnp.sum((x[:-1] - x[1:]) * heights)


def _interpolated_pr_auc(tp: Array, fp: Array, fn: Array) -> Array:
    """Keras' ``AUC.interpolate_pr_auc``: within each interval, ``tp`` varies linearly with the
    predicted positives ``P = tp + fp``, so precision ``tp / P`` integrates in closed form:
    ``slope (dtp + intercept log(P_i / P_i+1)) / (tp + fn)``."""
    predicted = tp + fp
    dtp = tp[:-1] - tp[1:]
    dp = predicted[:-1] - predicted[1:]
    slope = divide_no_nan(dtp, jnp.maximum(dp, 0.0))
    intercept = tp[1:] - slope * predicted[1:]
    both_positive = (predicted[:-1] > 0) & (predicted[1:] > 0)
    ratio = jnp.where(
        both_positive,
        divide_no_nan(predicted[:-1], jnp.maximum(predicted[1:], 0.0)),
        jnp.ones_like(predicted[1:]),
    )
    increments = divide_no_nan(
        slope * (dtp + intercept * jnp.log(ratio)), jnp.maximum(tp[1:] + fn[1:], 0.0)
    )
    return jnp.sum(increments)
