"""Keras' metrics as pure functions of additive statistics.

Keras reports an epoch's metrics over every example seen, so metrics are kept as sums (a mean's
total and count, AUC's confusion counts), merged by addition and read once per epoch.

The metric protocol (optax/CLU style; Keras 3.15.1 semantics, keras/src/metrics/): a metric is a
frozen, hashable dataclass with

* ``name``: the key in logs (Keras' default names; a string given to ``get`` as written);
* ``direction``: ``"max"``, ``"min"``, or None where Keras cannot tell (a plain user function),
  for ``mode="auto"`` in EarlyStopping/ModelCheckpoint;
* ``stats(y_true, y_pred, sample_weight=None)``: the batch's sufficient statistics, a pytree of
  float32 arrays whose shapes depend on the metric only (a mean's ``total`` and ``count``; AUC's
  per-threshold ``tp, fp, tn, fn``). Rows of weight 0 (with finite values) contribute nothing;
* ``result(stats)``: the metric's value from statistics (a scalar, or a vector where Keras
  returns one).

Statistics are additive: merging batches, epochs, devices or hosts is elementwise addition
(``merge``; ``jax.lax.psum`` across devices), and ``result`` of the sum over an epoch is Keras'
value after one ``update_state`` per batch, i.e. the metric over all its examples. ``zeros``
gives the empty statistics.

Padding: Keras' unweighted ``metrics=`` count every row, so a padded batch passes its 0/1 row
weights as ``sample_weight``, which changes no value, except that of the
``SparseCategoricalCrossentropy`` metric with ``ignore_class``: weighted, Keras drops ignored
elements from the count; unweighted, it averages them in as zeros. For per-step targets
``[B, T]`` give row weights as ``[B, 1]``: Keras refuses ``[B]`` weights on per-step values
wherever a loss mask is involved, and ``[B, 1]`` means the same everywhere else.

Shape letters: B batch, T time, C classes, D features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from rnnjax import losses
from rnnjax.confusion_metrics import AUC as AUC
from rnnjax.confusion_metrics import Precision as Precision
from rnnjax.confusion_metrics import Recall as Recall
from rnnjax.losses import divide_no_nan, is_binary_or_sparse_categorical, object_name, snake_case
from rnnjax.losses import squeeze_or_expand_to_same_rank as align_ranks

Array = jax.Array
Stats = Any  # a pytree of float32 arrays
Direction = Literal["min", "max"] | None


@runtime_checkable
class Metric(Protocol):
    """The metric protocol (see the module docstring). Anything with these members is a metric;
    a user metric can subclass it as a frozen dataclass with a ``name`` field, override
    ``stats`` and ``result``, and set ``direction`` when known."""

    name: str
    direction: ClassVar[Direction] = None

    def stats(self, y_true, y_pred, sample_weight=None) -> Stats:
        raise NotImplementedError

    def result(self, stats: Stats) -> Array:
        raise NotImplementedError


def merge(stats: Stats, other: Stats) -> Stats:
    """Statistics of both: their elementwise sum."""
    return jax.tree.map(jnp.add, stats, other)


def zeros(metric: Metric, y_true, y_pred, sample_weight=None) -> Stats:
    """The empty statistics of ``metric`` for batches like these (arrays or shape structs)."""
    shapes = jax.eval_shape(metric.stats, y_true, y_pred, sample_weight)
    return jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), shapes)


def mean_stats(values, sample_weight=None, mask=None) -> dict[str, Array]:
    """``{"total", "count"}`` of Keras' ``Mean.update_state(values, sample_weight)``.

    Without weights, each row's values are averaged over its non-batch axes and ``count`` is B.
    With weights (aligned by ``squeeze_or_expand_to_same_rank``), values are averaged over the
    axes beyond the weights' rank, weighted, then averaged per row; ``count`` is the sum of the
    weights averaged per row. So ``[B]`` weights on ``[B, T]`` values give
    ``sum_i w_i mean_t(v_it) / sum_i w_i``; ``[B, T]`` weights give ``sum w v / sum w``. A
    ``mask`` (the values' own, like ``ignore_class``) counts only together with weights, as in
    Keras.
    """
    values = jnp.asarray(values).astype(jnp.float32)
    if sample_weight is not None:
        sample_weight = jnp.asarray(sample_weight).astype(jnp.float32)
        if mask is not None:
            float_mask, sample_weight = align_ranks(mask.astype(jnp.float32), sample_weight)
            sample_weight = sample_weight * float_mask
        values, sample_weight = align_ranks(values, sample_weight)
        weight_rank = sample_weight.ndim
        if values.ndim > weight_rank:
            values = jnp.mean(values, axis=tuple(range(weight_rank, values.ndim)))
        sample_weight = jnp.broadcast_to(sample_weight, values.shape)
        values = values * sample_weight
        if weight_rank > 1:
            sample_weight = jnp.mean(sample_weight, axis=tuple(range(1, weight_rank)))
    if values.ndim > 1:
        values = jnp.mean(values, axis=tuple(range(1, values.ndim)))
    if sample_weight is not None:
        count = jnp.sum(sample_weight)
    else:
        count = jnp.asarray(values.shape[0] if values.ndim else 1, jnp.float32)
    return {"total": jnp.sum(values), "count": count}


class MeanMetric(Metric):
    """Keras' ``MeanMetricWrapper``: the weighted mean of per-example ``values``; stats
    ``{"total", "count"}`` (``mean_stats``). Subclasses implement ``values``."""

    def values(self, y_true, y_pred) -> Array:
        """Per-example (or per-element) values, e.g. ``[B]`` or ``[B, T]``."""
        raise NotImplementedError

    def values_and_mask(self, y_true, y_pred) -> tuple[Array, Array | None]:
        return self.values(y_true, y_pred), None

    def stats(self, y_true, y_pred, sample_weight=None) -> dict[str, Array]:
        values, mask = self.values_and_mask(y_true, y_pred)
        return mean_stats(values, sample_weight, mask)

    def result(self, stats: dict[str, Array]) -> Array:
        return divide_no_nan(stats["total"], stats["count"])


# Loss functions as metrics: Keras marks a mean of one as to be minimised.
_LOSS_FUNCTIONS = frozenset(
    {
        losses.binary_crossentropy,
        losses.categorical_crossentropy,
        losses.sparse_categorical_crossentropy,
        losses.mean_squared_error,
        losses.mean_absolute_error,
        losses.mean_absolute_percentage_error,
        losses.mean_squared_logarithmic_error,
        losses.huber,
        losses.log_cosh,
        losses.kl_divergence,
        losses.poisson,
        losses.hinge,
        losses.squared_hinge,
        losses.categorical_hinge,
        losses.cosine_similarity,
    }
)


@dataclasses.dataclass(frozen=True)
class MeanMetricWrapper(MeanMetric):
    """The mean of a user function ``fn(y_true, y_pred) -> per-example values``, named after it
    (``object_name``) unless ``name`` is given. ``direction`` is ``"min"`` for rnnjax's (Keras')
    loss functions and loss objects, else None, as Keras cannot tell."""

    fn: Callable[[Array, Array], Array]
    name: str | None = None
    direction: Direction = None

    def __post_init__(self):
        if self.name is None:
            object.__setattr__(self, "name", object_name(self.fn))
        if self.direction is None and (
            self.fn in _LOSS_FUNCTIONS or isinstance(self.fn, losses.Loss)
        ):
            object.__setattr__(self, "direction", "min")

    def values(self, y_true, y_pred) -> Array:
        return self.fn(y_true, y_pred)


def _argmax(x: Array) -> Array:
    """Keras' argmax on CPU: -0.0 ranks below 0.0 (jnp ties them and takes the first)."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        x = jnp.where((x == 0.0) & jnp.signbit(x), -jnp.finfo(x.dtype).tiny, x)
    return jnp.argmax(x, axis=-1)


def binary_accuracy(y_true, y_pred, threshold: float = 0.5) -> Array:
    """``keras.metrics.binary_accuracy``: 1 where ``(y_pred > threshold) == y_true`` (strict: a
    probability equal to the threshold predicts 0). No sigmoid: give probabilities, or logits
    with ``threshold=0``. Shapes aligned, e.g. ``[B]`` with ``[B, 1]`` -> ``[B, 1]``."""
    y_true, y_pred = align_ranks(jnp.asarray(y_true), jnp.asarray(y_pred))
    predicted = (y_pred > threshold).astype(y_true.dtype)
    return (y_true == predicted).astype(jnp.float32)


def categorical_accuracy(y_true, y_pred) -> Array:
    """``keras.metrics.categorical_accuracy``: ``argmax(y_true) == argmax(y_pred)`` over the last
    axis, ties to the first index: one-hot ``[B, C]`` -> ``[B]``, ``[B, T, C]`` -> ``[B, T]``."""
    y_pred = jnp.asarray(y_pred)
    labels = _argmax(jnp.asarray(y_true)).astype(y_pred.dtype)
    shape = labels.shape
    squeezed = labels.ndim == y_pred.ndim
    if squeezed:
        labels = jnp.squeeze(labels, -1)
    matches = (labels == _argmax(y_pred).astype(labels.dtype)).astype(jnp.float32)
    return matches.reshape(shape) if squeezed else matches


def sparse_categorical_accuracy(y_true, y_pred) -> Array:
    """``keras.metrics.sparse_categorical_accuracy``: ``label == argmax(y_pred)``, ties to the
    first index. Labels ``[B]``/``[B, 1]`` with ``y_pred [B, C]`` -> ``[B]``; per step
    ``[B, T]`` with ``[B, T, C]`` -> ``[B, T]``."""
    y_pred = jnp.asarray(y_pred)
    labels = jnp.asarray(y_true).astype(y_pred.dtype)
    shape = labels.shape
    squeezed = labels.ndim == y_pred.ndim and labels.shape[-1] == 1
    if squeezed:
        labels = jnp.squeeze(labels, -1)
    matches = (labels == _argmax(y_pred).astype(labels.dtype)).astype(jnp.float32)
    if squeezed:
        matches = matches.reshape(shape)
    if matches.ndim > 1 and matches.shape[-1] == 1:
        matches = jnp.squeeze(matches, -1)
    return matches


def _in_top_k(labels: Array, scores: Array, k: int) -> Array:
    """Keras' ``in_top_k`` on ``labels [M]``, ``scores [M, C]``: a hit iff fewer than ``k``
    scores lie strictly above the label's, so ties count as hits; a NaN label score never hits."""
    at_label = jnp.take_along_axis(scores, labels[:, None], axis=-1)
    at_label = jnp.where(jnp.isnan(at_label), -jnp.inf, at_label)
    return 1 + jnp.sum(scores > at_label, axis=-1) <= k


def _top_k_matches(labels: Array, y_pred: Array, k: int) -> Array:
    """``_in_top_k`` over every position of ``labels [...]`` and ``y_pred [..., C]``."""
    scores = y_pred.reshape(-1, y_pred.shape[-1]) if y_pred.ndim > 2 else y_pred
    hits = _in_top_k(labels.reshape(-1).astype(jnp.int32), scores, k).astype(jnp.float32)
    return hits.reshape(labels.shape) if labels.ndim > 1 else hits


def top_k_categorical_accuracy(y_true, y_pred, k: int = 5) -> Array:
    """``keras.metrics.top_k_categorical_accuracy``: the one-hot label among the ``k`` highest
    scores (ties count as hits): ``[B, C]`` -> ``[B]``, ``[B, T, C]`` -> ``[B, T]``."""
    y_pred = jnp.asarray(y_pred)
    labels = _argmax(jnp.asarray(y_true).astype(y_pred.dtype))
    return _top_k_matches(labels, y_pred, k)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k: int = 5) -> Array:
    """``keras.metrics.sparse_top_k_categorical_accuracy``: the integer label among the ``k``
    highest scores (ties count as hits): labels ``[B]`` -> ``[B]``, ``[B, 1]`` -> ``[B, 1]``,
    ``[B, T]`` with ``y_pred [B, T, C]`` -> ``[B, T]``."""
    y_pred = jnp.asarray(y_pred)
    return _top_k_matches(jnp.asarray(y_true).astype(jnp.int32), y_pred, k)


@dataclasses.dataclass(frozen=True)
class BinaryAccuracy(MeanMetric):
    """``keras.metrics.BinaryAccuracy``; see ``binary_accuracy``."""

    name: str = "binary_accuracy"
    threshold: float = 0.5
    direction: ClassVar[Direction] = "max"

    def values(self, y_true, y_pred) -> Array:
        return binary_accuracy(y_true, y_pred, self.threshold)


@dataclasses.dataclass(frozen=True)
class CategoricalAccuracy(MeanMetric):
    """``keras.metrics.CategoricalAccuracy``; see ``categorical_accuracy``."""

    name: str = "categorical_accuracy"
    direction: ClassVar[Direction] = "max"

    def values(self, y_true, y_pred) -> Array:
        return categorical_accuracy(y_true, y_pred)


@dataclasses.dataclass(frozen=True)
class SparseCategoricalAccuracy(MeanMetric):
    """``keras.metrics.SparseCategoricalAccuracy``; see ``sparse_categorical_accuracy``."""

    name: str = "sparse_categorical_accuracy"
    direction: ClassVar[Direction] = "max"

    def values(self, y_true, y_pred) -> Array:
        return sparse_categorical_accuracy(y_true, y_pred)


@dataclasses.dataclass(frozen=True)
class TopKCategoricalAccuracy(MeanMetric):
    """``keras.metrics.TopKCategoricalAccuracy``; see ``top_k_categorical_accuracy``."""

    k: int = 5
    name: str = "top_k_categorical_accuracy"
    direction: ClassVar[Direction] = "max"

    def values(self, y_true, y_pred) -> Array:
        return top_k_categorical_accuracy(y_true, y_pred, self.k)


@dataclasses.dataclass(frozen=True)
class SparseTopKCategoricalAccuracy(MeanMetric):
    """``keras.metrics.SparseTopKCategoricalAccuracy``; see
    ``sparse_top_k_categorical_accuracy``."""

    k: int = 5
    name: str = "sparse_top_k_categorical_accuracy"
    direction: ClassVar[Direction] = "max"

    def values(self, y_true, y_pred) -> Array:
        return sparse_top_k_categorical_accuracy(y_true, y_pred, self.k)


@dataclasses.dataclass(frozen=True)
class AutoAccuracy(MeanMetric):
    """Keras' ``metrics=["accuracy"]`` (or ``"acc"``, any case): binary, sparse categorical or
    categorical accuracy, chosen from the shapes (``is_binary_or_sparse_categorical``) each time
    ``stats`` sees them: ``y_pred [..., 1]`` -> binary; labels ``[B]`` with ``[B, C]``, or per
    step ``[B, T]`` with ``[B, T, C]`` -> sparse; equal shapes -> categorical. Never from the
    loss."""

    name: str = "accuracy"
    direction: ClassVar[Direction] = "max"

    def values(self, y_true, y_pred) -> Array:
        y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
        binary, sparse = is_binary_or_sparse_categorical(y_true, y_pred)
        if binary:
            return binary_accuracy(y_true, y_pred)
        if sparse:
            return sparse_categorical_accuracy(y_true, y_pred)
        return categorical_accuracy(y_true, y_pred)


class _LossMean(MeanMetric):
    """The mean of a Keras loss function ``function(y_true, y_pred)`` (a ClassVar), minimised."""

    direction: ClassVar[Direction] = "min"
    function: ClassVar[Callable[[Array, Array], Array]]

    def values(self, y_true, y_pred) -> Array:
        return self.function(y_true, y_pred)


@dataclasses.dataclass(frozen=True)
class MeanSquaredError(_LossMean):
    """``keras.metrics.MeanSquaredError``: the mean of ``losses.mean_squared_error``."""

    name: str = "mean_squared_error"
    function: ClassVar = staticmethod(losses.mean_squared_error)


@dataclasses.dataclass(frozen=True)
class MeanAbsoluteError(_LossMean):
    """``keras.metrics.MeanAbsoluteError``: the mean of ``losses.mean_absolute_error``."""

    name: str = "mean_absolute_error"
    function: ClassVar = staticmethod(losses.mean_absolute_error)


@dataclasses.dataclass(frozen=True)
class MeanAbsolutePercentageError(_LossMean):
    """``keras.metrics.MeanAbsolutePercentageError``: the mean of
    ``losses.mean_absolute_percentage_error``."""

    name: str = "mean_absolute_percentage_error"
    function: ClassVar = staticmethod(losses.mean_absolute_percentage_error)


@dataclasses.dataclass(frozen=True)
class MeanSquaredLogarithmicError(_LossMean):
    """``keras.metrics.MeanSquaredLogarithmicError``: the mean of
    ``losses.mean_squared_logarithmic_error``."""

    name: str = "mean_squared_logarithmic_error"
    function: ClassVar = staticmethod(losses.mean_squared_logarithmic_error)


@dataclasses.dataclass(frozen=True)
class LogCoshError(_LossMean):
    """``keras.metrics.LogCoshError``: the mean of ``losses.log_cosh``; Keras names it
    ``"logcosh"``."""

    name: str = "logcosh"
    function: ClassVar = staticmethod(losses.log_cosh)


@dataclasses.dataclass(frozen=True)
class KLDivergence(_LossMean):
    """``keras.metrics.KLDivergence``: the mean of ``losses.kl_divergence``."""

    name: str = "kl_divergence"
    function: ClassVar = staticmethod(losses.kl_divergence)


@dataclasses.dataclass(frozen=True)
class Poisson(_LossMean):
    """``keras.metrics.Poisson``: the mean of ``losses.poisson``."""

    name: str = "poisson"
    function: ClassVar = staticmethod(losses.poisson)


@dataclasses.dataclass(frozen=True)
class Hinge(_LossMean):
    """``keras.metrics.Hinge``: the mean of ``losses.hinge``."""

    name: str = "hinge"
    function: ClassVar = staticmethod(losses.hinge)


@dataclasses.dataclass(frozen=True)
class SquaredHinge(_LossMean):
    """``keras.metrics.SquaredHinge``: the mean of ``losses.squared_hinge``."""

    name: str = "squared_hinge"
    function: ClassVar = staticmethod(losses.squared_hinge)


@dataclasses.dataclass(frozen=True)
class CategoricalHinge(_LossMean):
    """``keras.metrics.CategoricalHinge``: the mean of ``losses.categorical_hinge``."""

    name: str = "categorical_hinge"
    function: ClassVar = staticmethod(losses.categorical_hinge)


@dataclasses.dataclass(frozen=True)
class RootMeanSquaredError(MeanMetric):
    """``keras.metrics.RootMeanSquaredError``: the root of the weighted mean of the squared
    errors, element by element (so ``[B, D]`` weights weigh elements), not a mean of roots."""

    name: str = "root_mean_squared_error"
    direction: ClassVar[Direction] = "min"

    def values(self, y_true, y_pred) -> Array:
        y_true, y_pred = align_ranks(
            jnp.asarray(y_true).astype(jnp.float32), jnp.asarray(y_pred).astype(jnp.float32)
        )
        return jnp.square(y_pred - y_true)

    def result(self, stats: dict[str, Array]) -> Array:
        return jnp.sqrt(super().result(stats))


@dataclasses.dataclass(frozen=True)
class CosineSimilarity(MeanMetric):
    """``keras.metrics.CosineSimilarity``: the mean cosine similarity along ``axis``
    (positive, unlike the loss)."""

    name: str = "cosine_similarity"
    axis: int = -1
    direction: ClassVar[Direction] = "max"

    def values(self, y_true, y_pred) -> Array:
        return -losses.cosine_similarity(y_true, y_pred, self.axis)


@dataclasses.dataclass(frozen=True)
class BinaryCrossentropy(MeanMetric):
    """``keras.metrics.BinaryCrossentropy``: the mean of ``losses.binary_crossentropy``.
    Unlike the loss object it does not align ranks: labels ``[B]`` with ``y_pred [B, 1]`` are an
    error, as in Keras."""

    name: str = "binary_crossentropy"
    from_logits: bool = False
    label_smoothing: float = 0.0
    direction: ClassVar[Direction] = "min"

    def values(self, y_true, y_pred) -> Array:
        return losses.binary_crossentropy(y_true, y_pred, self.from_logits, self.label_smoothing)


@dataclasses.dataclass(frozen=True)
class CategoricalCrossentropy(MeanMetric):
    """``keras.metrics.CategoricalCrossentropy``: the mean of
    ``losses.categorical_crossentropy``."""

    name: str = "categorical_crossentropy"
    from_logits: bool = False
    label_smoothing: float = 0.0
    axis: int = -1
    direction: ClassVar[Direction] = "min"

    def values(self, y_true, y_pred) -> Array:
        return losses.categorical_crossentropy(
            y_true, y_pred, self.from_logits, self.label_smoothing, self.axis
        )


@dataclasses.dataclass(frozen=True)
class SparseCategoricalCrossentropy(MeanMetric):
    """``keras.metrics.SparseCategoricalCrossentropy``: the mean of
    ``losses.sparse_categorical_crossentropy``. As in Keras, ``ignore_class`` elements
    leave the count only when a sample weight is given; unweighted, they count as 0."""

    name: str = "sparse_categorical_crossentropy"
    from_logits: bool = False
    ignore_class: int | None = None
    axis: int = -1
    direction: ClassVar[Direction] = "min"

    def values_and_mask(self, y_true, y_pred) -> tuple[Array, Array | None]:
        return losses.sparse_categorical_crossentropy_and_mask(
            y_true, y_pred, self.from_logits, self.ignore_class, self.axis
        )

    def values(self, y_true, y_pred) -> Array:
        return self.values_and_mask(y_true, y_pred)[0]


METRIC_CLASSES = (
    BinaryAccuracy,
    CategoricalAccuracy,
    SparseCategoricalAccuracy,
    TopKCategoricalAccuracy,
    SparseTopKCategoricalAccuracy,
    AUC,
    Precision,
    Recall,
    MeanSquaredError,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredLogarithmicError,
    RootMeanSquaredError,
    CosineSimilarity,
    LogCoshError,
    BinaryCrossentropy,
    CategoricalCrossentropy,
    SparseCategoricalCrossentropy,
    KLDivergence,
    Poisson,
    Hinge,
    SquaredHinge,
    CategoricalHinge,
)
# Keras' metric strings (keras/src/metrics/__init__.py): class names, their snake case, aliases.
METRIC_NAMES = {
    **{cls.__name__: cls for cls in METRIC_CLASSES},
    **{snake_case(cls.__name__): cls for cls in METRIC_CLASSES},
    "bce": BinaryCrossentropy,
    "BCE": BinaryCrossentropy,
    "mse": MeanSquaredError,
    "MSE": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "MAE": MeanAbsoluteError,
    "mape": MeanAbsolutePercentageError,
    "MAPE": MeanAbsolutePercentageError,
    "msle": MeanSquaredLogarithmicError,
    "MSLE": MeanSquaredLogarithmicError,
}


def get(identifier) -> Metric:
    """A metric from what Keras' ``compile(metrics=[...])`` accepts.

    * a ``Metric`` (itself) or a metric class (default instance);
    * ``"accuracy"``/``"acc"`` (any case): ``AutoAccuracy``, resolved by shapes in ``stats``;
    * a Keras metric string: a class name (``"AUC"``), its snake case (``"auc"``,
      ``"binary_accuracy"``, ``"root_mean_squared_error"``, ``"log_cosh_error"``) or an alias
      (``"mse"``, ``"mae"``, ``"mape"``, ``"msle"``, ``"bce"``): that metric with Keras'
      defaults, named as written;
    * a function ``fn(y_true, y_pred) -> per-example values``: ``MeanMetricWrapper(fn)``.

    Raises:
      ValueError: anything else, listing the valid names. Keras 3.15.1 has no ``"rmse"``,
        ``"huber"`` or ``"kld"`` metric, so neither has this.
    """
    if isinstance(identifier, type):
        identifier = identifier()
    if isinstance(identifier, str):
        if identifier.lower() in ("accuracy", "acc"):
            return AutoAccuracy(name=identifier)
        if identifier in METRIC_NAMES:
            return METRIC_NAMES[identifier](name=identifier)
    elif isinstance(identifier, Metric):
        return identifier
    elif callable(identifier):
        return MeanMetricWrapper(identifier)
    names = sorted([*METRIC_NAMES, "accuracy", "acc"])
    raise ValueError(
        f"unknown metric {identifier!r}: give a Metric, a function fn(y_true, y_pred) returning "
        f"per-example values, or one of {', '.join(names)}"
    )
