"""Keras 3 losses, value for value (keras/src/losses/{loss,losses}.py, 3.15.1):

- elementwise functions ``fn(y_true, y_pred, ...)`` like ``keras.losses.<fn>``, which reduce the
  last axis only: ``binary_crossentropy``, ``mean_squared_error``, ``huber``, ...;
- ``Loss`` objects (frozen, hashable dataclasses: ``BinaryCrossentropy(from_logits=True)``,
  ``SparseCategoricalCrossentropy(ignore_class=0)``, ...) whose
  ``loss(y_true, y_pred, sample_weight=None, valid=None)`` is Keras' ``loss_obj(y_true, y_pred,
  sample_weight)``: rank alignment, sample weights, Keras' loss mask and reduction;
- ``get(identifier)``: Keras' names and aliases, a ``Loss``, or a function of per-element losses.

``valid`` (``[B]``, 1 for a real row, 0 for the padding that fills a last partial batch) is
rnnjax's addition: padding rows count nowhere, neither in sums nor in divisors, so a padded batch
gives the loss of its real rows. All values are float32, as Keras' (``keras.config.floatx()``).

Shape letters: B batch, T time, C classes, D features.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

Array = jax.Array

EPSILON = 1e-7  # keras.config.epsilon(): clips probabilities and guards divisions

Reduction = Literal["sum_over_batch_size", "mean", "mean_with_sample_weight", "sum", "none"] | None
REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight", "sum", "none", None)


def squeeze_or_expand_to_same_rank(
    x1: Array, x2: Array, expand_rank_1: bool = True
) -> tuple[Array, Array]:
    """Keras' rank alignment. Only when the ranks differ by one and the longer array ends in a
    size-1 axis: that axis is dropped, unless the shorter array is rank 1 (and ``expand_rank_1``),
    which then gains one. ``[B]`` with ``[B, 1]`` -> ``[B, 1]`` twice; ``[B, T]`` with
    ``[B, T, 1]`` -> ``[B, T]`` twice; ``[B]`` with ``[B, C]`` stays as it is."""
    rank1, rank2 = x1.ndim, x2.ndim
    if rank1 == rank2 + 1 and x1.shape[-1] == 1:
        if rank2 == 1 and expand_rank_1:
            x2 = x2[..., None]
        else:
            x1 = jnp.squeeze(x1, -1)
    if rank2 == rank1 + 1 and x2.shape[-1] == 1:
        if rank1 == 1 and expand_rank_1:
            x1 = x1[..., None]
        else:
            x2 = jnp.squeeze(x2, -1)
    return x1, x2


def is_binary_or_sparse_categorical(y_true: Array, y_pred: Array) -> tuple[bool, bool]:
    """How Keras resolves ``"accuracy"`` and ``"crossentropy"``, from shapes only: binary when
    ``y_pred`` ends in 1; sparse when ``y_true`` has the lower rank, or ends in 1 where ``y_pred``
    does not. Otherwise categorical (one-hot)."""
    binary = y_pred.shape[-1] == 1
    sparse = y_true.ndim < y_pred.ndim or (y_true.shape[-1] == 1 and y_pred.shape[-1] > 1)
    return binary, sparse


def divide_no_nan(numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator``, and 0 where the denominator is 0 (Keras' ``divide_no_nan``)."""
    zero = denominator == 0
    return jnp.where(zero, 0.0, numerator / jnp.where(zero, 1.0, denominator))


def snake_case(text: str) -> str:
    """Keras' ``to_snake_case``: ``LogCoshError`` -> ``log_cosh_error``, ``AUC`` -> ``auc``."""
    text = re.sub(r"\W+", "", text)
    text = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", text)
    return re.sub("([a-z])([A-Z])", r"\1_\2", text).lower()


def object_name(obj) -> str:
    """Keras' name for a loss or metric given as an object: its ``name``, else its function or
    class name in snake case (``meanError`` -> ``mean_error``, ``<lambda>`` -> ``lambda``)."""
    if hasattr(obj, "name"):
        return obj.name
    return snake_case(getattr(obj, "__name__", type(obj).__name__))


def _as_float(x) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _floats(y_true, y_pred) -> tuple[Array, Array]:
    """``y_pred`` as floats and ``y_true`` in its dtype, as every Keras loss function starts."""
    y_pred = _as_float(y_pred)
    return jnp.asarray(y_true).astype(y_pred.dtype), y_pred


def _aligned_floats(y_true, y_pred) -> tuple[Array, Array]:
    return squeeze_or_expand_to_same_rank(*_floats(y_true, y_pred))


def _require_same_shape(y_true: Array, y_pred: Array) -> None:
    # jnp would broadcast [B] against [B, 1] to [B, B]; Keras' backend refuses.
    if y_true.shape != y_pred.shape:
        raise ValueError(
            "y_true and y_pred must have the same shape; got "
            f"y_true.shape={y_true.shape}, y_pred.shape={y_pred.shape}"
        )


def _log_probabilities(y_pred: Array, from_logits: bool, axis: int) -> Array:
    """``log_softmax`` of logits, or the log of probabilities renormalised to sum to 1 along
    ``axis`` and clipped to ``[1e-7, 1 - 1e-7]`` (Keras' probability form)."""
    if from_logits:
        return jax.nn.log_softmax(y_pred, axis=axis)
    probabilities = y_pred / jnp.sum(y_pred, axis=axis, keepdims=True)
    return jnp.log(jnp.clip(probabilities, EPSILON, 1.0 - EPSILON))


def binary_crossentropy(
    y_true, y_pred, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1
) -> Array:
    """``keras.losses.binary_crossentropy``: each unit's crossentropy, averaged over ``axis``.

    Args:
      y_true: targets in [0, 1], the shape of ``y_pred``.
      y_pred: probabilities (clipped to ``[1e-7, 1 - 1e-7]``, so the loss saturates near 16.1 with
        zero gradient), or logits when ``from_logits`` (``log_sigmoid``, never clipped); e.g.
        ``[B, 1]`` or ``[B, T, D]``.
      label_smoothing: targets become ``t (1 - ls) + ls / 2``.
      axis: the averaged axis.

    Returns:
      ``y_pred``'s shape without ``axis``: ``[B]`` for ``[B, 1]``. A rank-1 ``y_pred`` averages
      over the batch itself, to a scalar, as in Keras.
    """
    y_true, y_pred = _floats(y_true, y_pred)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    _require_same_shape(y_true, y_pred)
    if from_logits:
        per_unit = -y_true * jax.nn.log_sigmoid(y_pred) - (1.0 - y_true) * jax.nn.log_sigmoid(
            -y_pred
        )
    else:
        clipped = jnp.clip(y_pred, EPSILON, 1.0 - EPSILON)
        per_unit = -(y_true * jnp.log(clipped) + (1.0 - y_true) * jnp.log(1.0 - clipped))
    return jnp.mean(per_unit, axis=axis)


def categorical_crossentropy(
    y_true, y_pred, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1
) -> Array:
    """``keras.losses.categorical_crossentropy``: ``-sum(t log p)`` over ``axis``.

    Args:
      y_true: one-hot (or soft) targets ``[..., C]``, the shape of ``y_pred``.
      y_pred: probabilities ``[..., C]`` (renormalised to sum to 1, then clipped to
        ``[1e-7, 1 - 1e-7]``), or logits when ``from_logits`` (``log_softmax``).
      label_smoothing: targets become ``t (1 - ls) + ls / C``, C = ``y_true.shape[-1]``.

    Returns:
      ``y_pred``'s shape without ``axis``: ``[B]`` for ``[B, C]``, ``[B, T]`` for ``[B, T, C]``.
    """
    y_true, y_pred = _floats(y_true, y_pred)
    if label_smoothing:
        num_classes = jnp.asarray(y_true.shape[-1], y_pred.dtype)
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / num_classes
    _require_same_shape(y_true, y_pred)
    return -jnp.sum(y_true * _log_probabilities(y_pred, from_logits, axis), axis=axis)


def sparse_categorical_crossentropy_and_mask(
    y_true, y_pred, from_logits: bool, ignore_class: int | None, axis: int = -1
) -> tuple[Array, Array | None]:
    """``sparse_categorical_crossentropy`` and, with ``ignore_class``, the mask of the
    elements that count (Keras attaches it to the losses; ``Loss`` objects and weighted metrics
    use it)."""
    y_pred = _as_float(y_pred)
    y_true = jnp.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[axis] == 1:
        y_true = jnp.squeeze(y_true, axis)
    keep = None
    if ignore_class is not None:
        keep = y_true.astype(y_pred.dtype) != jnp.asarray(ignore_class, y_pred.dtype)
        y_true = jnp.where(keep, y_true, 0)
        # Any finite row will do: its loss is replaced by 0 below. (Keras puts zeros there, whose
        # renormalisation 0/0 is NaN in the probability form and could reach gradients.)
        y_pred = jnp.where(jnp.expand_dims(keep, axis), y_pred, 1.0)
    labels = y_true.astype(jnp.int32)
    if labels.ndim == y_pred.ndim and labels.shape[-1] == 1:
        labels = jnp.squeeze(labels, -1)
    if labels.shape != y_pred.shape[:-1]:
        raise ValueError(
            "y_true must have y_pred's shape without its last axis; got "
            f"y_true.shape={labels.shape}, y_pred.shape={y_pred.shape}"
        )
    log_probabilities = _log_probabilities(y_pred, from_logits, axis)
    # An out-of-range label one-hot encodes to zeros: loss 0, as in Keras.
    one_hot = jax.nn.one_hot(labels, y_pred.shape[axis], axis=axis, dtype=y_pred.dtype)
    values = -jnp.sum(one_hot * log_probabilities, axis=axis)
    if keep is None:
        return values, None
    keep = keep.reshape(values.shape)
    return jnp.where(keep, values, 0.0), keep


def sparse_categorical_crossentropy(
    y_true,
    y_pred,
    from_logits: bool = False,
    ignore_class: int | None = None,
    axis: int = -1,
) -> Array:
    """``keras.losses.sparse_categorical_crossentropy``: ``-log p[label]``.

    Args:
      y_true: integer labels ``[B]`` or ``[B, 1]`` (per step: ``[B, T]`` or ``[B, T, 1]``).
      y_pred: probabilities ``[B, C]`` / ``[B, T, C]`` (renormalised, clipped as in
        ``categorical_crossentropy``), or logits when ``from_logits``.
      ignore_class: a label whose elements get loss 0 (``Loss`` objects also drop them from the
        divisor).

    Returns:
      ``[B]`` / ``[B, T]``. A label outside ``[0, C)`` gets loss 0, as in Keras.
    """
    return sparse_categorical_crossentropy_and_mask(
        y_true, y_pred, from_logits, ignore_class, axis
    )[0]


def mean_squared_error(y_true, y_pred) -> Array:
    """``mean((t - p)^2)`` over the last axis: ``[B, D]`` -> ``[B]``."""
    y_true, y_pred = _aligned_floats(y_true, y_pred)
    return jnp.mean(jnp.square(y_true - y_pred), axis=-1)


def mean_absolute_error(y_true, y_pred) -> Array:
    """``mean(|t - p|)`` over the last axis: ``[B, D]`` -> ``[B]``."""
    y_true, y_pred = _aligned_floats(y_true, y_pred)
    return jnp.mean(jnp.abs(y_true - y_pred), axis=-1)


def mean_absolute_percentage_error(y_true, y_pred) -> Array:
    """``100 mean(|t - p| / max(|t|, 1e-7))`` over the last axis: ``[B, D]`` -> ``[B]``."""
    y_true, y_pred = _aligned_floats(y_true, y_pred)
    ratio = jnp.abs((y_true - y_pred) / jnp.maximum(jnp.abs(y_true), EPSILON))
    return 100.0 * jnp.mean(ratio, axis=-1)


def mean_squared_logarithmic_error(y_true, y_pred) -> Array:
    """``mean((log(max(p, 1e-7) + 1) - log(max(t, 1e-7) + 1))^2)`` over the last axis."""
    y_true, y_pred = _aligned_floats(y_true, y_pred)
    difference = jnp.log(jnp.maximum(y_pred, EPSILON) + 1.0) - jnp.log(
        jnp.maximum(y_true, EPSILON) + 1.0
    )
    return jnp.mean(jnp.square(difference), axis=-1)


def huber(y_true, y_pred, delta: float = 1.0) -> Array:
    """Huber loss averaged over the last axis: with ``x = p - t``, ``x^2 / 2`` where
    ``|x| <= delta``, else ``delta |x| - delta^2 / 2``."""
    y_true, y_pred = _aligned_floats(y_true, y_pred)
    delta = jnp.asarray(delta, y_pred.dtype)
    half = jnp.asarray(0.5, y_pred.dtype)
    error = y_pred - y_true
    magnitude = jnp.abs(error)
    per_unit = jnp.where(
        magnitude <= delta, half * jnp.square(error), delta * magnitude - half * jnp.square(delta)
    )
    return jnp.mean(per_unit, axis=-1)


def log_cosh(y_true, y_pred) -> Array:
    """``mean(log(cosh(p - t)))`` over the last axis, as ``x + softplus(-2x) - log 2``."""
    y_true, y_pred = _aligned_floats(y_true, y_pred)
    error = y_pred - y_true
    log_2 = jnp.log(jnp.asarray(2.0, y_pred.dtype))
    return jnp.mean(error + jax.nn.softplus(error * -2.0) - log_2, axis=-1)


def kl_divergence(y_true, y_pred) -> Array:
    """``sum(t log(t / p))`` over the last axis, ``t`` and ``p`` clipped to ``[1e-7, 1]``."""
    y_true, y_pred = _floats(y_true, y_pred)
    y_true = jnp.clip(y_true, EPSILON, 1.0)
    y_pred = jnp.clip(y_pred, EPSILON, 1.0)
    return jnp.sum(y_true * jnp.log(y_true / y_pred), axis=-1)


def poisson(y_true, y_pred) -> Array:
    """``mean(p - t log(p + 1e-7))`` over the last axis."""
    y_true, y_pred = _floats(y_true, y_pred)
    return jnp.mean(y_pred - y_true * jnp.log(y_pred + EPSILON), axis=-1)


def _hinge_targets(y_true: Array) -> Array:
    """-1/1 targets: Keras maps 0/1 to -1/1 when *every* target of the batch is 0 or 1."""
    binary = jnp.all((y_true == 0) | (y_true == 1))
    return jnp.where(binary, 2.0 * y_true - 1.0, y_true)


def hinge(y_true, y_pred) -> Array:
    """``mean(max(1 - t p, 0))`` over the last axis; 0/1 targets become -1/1."""
    y_true, y_pred = _floats(y_true, y_pred)
    return jnp.mean(jnp.maximum(1.0 - _hinge_targets(y_true) * y_pred, 0.0), axis=-1)


def squared_hinge(y_true, y_pred) -> Array:
    """``mean(max(1 - t p, 0)^2)`` over the last axis; 0/1 targets become -1/1."""
    y_true, y_pred = _floats(y_true, y_pred)
    margin = jnp.maximum(1.0 - _hinge_targets(y_true) * y_pred, 0.0)
    return jnp.mean(jnp.square(margin), axis=-1)


def categorical_hinge(y_true, y_pred) -> Array:
    """``max(max((1 - t) p) - sum(t p) + 1, 0)`` over the last axis, for one-hot ``t``."""
    y_true, y_pred = _floats(y_true, y_pred)
    positive = jnp.sum(y_true * y_pred, axis=-1)
    negative = jnp.max((1.0 - y_true) * y_pred, axis=-1)
    return jnp.maximum(negative - positive + 1.0, 0.0)


def _l2_normalize(x: Array, axis: int) -> Array:
    # Keras' x * rsqrt(sum x^2), the inverse norm capped at 1 / epsilon (zero vectors stay zero).
    inverse_norm = jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x * jnp.minimum(inverse_norm, 1.0 / EPSILON)


def cosine_similarity(y_true, y_pred, axis: int = -1) -> Array:
    """The *negated* cosine similarity along ``axis`` (a loss: -1 is best), 0 for a zero vector."""
    y_true, y_pred = _aligned_floats(y_true, y_pred)
    return -jnp.sum(_l2_normalize(y_true, axis) * _l2_normalize(y_pred, axis), axis=axis)


# Keras' reduction, with padding rows -------------------------------------------------------------


def _per_row(rows: Array, ndim: int) -> Array:
    """``rows [B]`` shaped to broadcast against a rank-``ndim`` array with a leading batch axis."""
    return rows.reshape(rows.shape + (1,) * (ndim - 1))


def _element_count(shape: tuple[int, ...], rows: Array | None) -> Array:
    """How many elements of an array of ``shape`` lie in real rows: all of them, when there is no
    padding (Keras' divisor, ``size``)."""
    if rows is None:
        return jnp.asarray(math.prod(shape), jnp.float32)
    return jnp.sum(jnp.broadcast_to(_per_row(rows, len(shape)), shape).astype(jnp.float32))


def _apply_mask(
    sample_weight: Array | None, mask: Array, reduction: Reduction, rows: Array | None
) -> Array:
    """Keras' ``apply_mask``: the loss mask folded into the sample weights."""
    if reduction in ("mean", "sum_over_batch_size"):
        # Unmasked elements weigh total/unmasked, so the later division by the element count
        # yields the mean over unmasked elements only.
        total = _element_count(mask.shape, rows)
        unmasked = jnp.sum(mask.astype(jnp.float32))
        float_mask = jnp.where(mask, divide_no_nan(total, unmasked), 0.0)
    else:
        float_mask = mask.astype(jnp.float32)
    if sample_weight is None:
        return float_mask
    float_mask, sample_weight = squeeze_or_expand_to_same_rank(float_mask, sample_weight)
    return sample_weight * float_mask


def _reduce_values(
    values: Array, sample_weight: Array | None, reduction: Reduction, rows: Array | None
) -> Array:
    if reduction in (None, "none") or values.ndim == 0 or values.shape == (0,):
        return values
    total = jnp.sum(values)
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        return divide_no_nan(total, jnp.sum(sample_weight))
    return divide_no_nan(total, _element_count(values.shape, rows))


def reduce_weighted_values(
    values: Array,
    sample_weight: Array | None = None,
    mask: Array | None = None,
    reduction: Reduction = "sum_over_batch_size",
    valid: Array | None = None,
) -> Array:
    """Keras' ``reduce_weighted_values`` of per-element losses, and padding rows dropped.

    Args:
      values: per-element losses with a leading batch axis, e.g. ``[B]`` or ``[B, T]``.
      sample_weight: aligned to ``values`` by ``squeeze_or_expand_to_same_rank``, then
        multiplied in: ``[B]``, ``[B, 1]`` (per sample) or ``[B, T]`` (per step).
      mask: bool, the shape of ``values``: the elements that count (Keras' loss mask).
      reduction: ``"sum_over_batch_size"``/``"mean"``: sum over the element count (never over
        the weights; masked elements leave the count); ``"mean_with_sample_weight"``: over the
        sum of the aligned weights; ``"sum"``; ``None``/``"none"``: the weighted values.
      valid: ``[B]``, 0 for padding rows. They leave the sums, the element counts and the weight
        sums; ``None`` or all ones changes nothing, bit for bit.

    Returns:
      A scalar, or the weighted values for ``None``.
    """
    rows = None
    if valid is not None:
        if values.ndim == 0:
            raise ValueError(
                "padding rows cannot be removed from a loss that is already a scalar: a loss "
                "function must keep the batch axis (for binary crossentropy, give y_pred shape "
                "[B, 1] rather than [B])"
            )
        rows = jnp.asarray(valid) != 0
        values = jnp.where(_per_row(rows, values.ndim), values, 0.0)
        if sample_weight is not None and sample_weight.ndim > 0:
            sample_weight = jnp.where(_per_row(rows, sample_weight.ndim), sample_weight, 0.0)
        if mask is not None:
            mask = mask & _per_row(rows, mask.ndim)
    if mask is not None:
        sample_weight = _apply_mask(sample_weight, mask, reduction, rows)
    if sample_weight is not None:
        values, sample_weight = squeeze_or_expand_to_same_rank(values, sample_weight)
        values = values * sample_weight
    return _reduce_values(values, sample_weight, reduction, rows)


# Loss objects ------------------------------------------------------------------------------------


class Loss:
    """A Keras loss object: per-element losses (``call``) reduced the Keras way (``__call__``).

    Subclasses are frozen dataclasses (hashable, so a loss can be a static field of a jitted
    state) with ``reduction`` and ``name`` fields, and implement ``call``.
    ``values_and_mask`` adds Keras' loss mask (elements outside it leave the divisor), which
    only ``SparseCategoricalCrossentropy(ignore_class=...)`` sets.
    """

    reduction: Reduction
    name: str

    def __post_init__(self):
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")

    def call(self, y_true: Array, y_pred: Array) -> Array:
        """Per-element losses, e.g. ``[B]`` or ``[B, T]``, from float32 ``y_true``/``y_pred``."""
        raise NotImplementedError

    def values_and_mask(self, y_true: Array, y_pred: Array) -> tuple[Array, Array | None]:
        return self.call(y_true, y_pred), None

    def __call__(
        self,
        y_true,
        y_pred,
        sample_weight: Array | None = None,
        valid: Array | None = None,
    ) -> Array:
        """Keras' ``loss_obj(y_true, y_pred, sample_weight)``, without the padding rows.

        Args:
          y_true: targets, e.g. labels ``[B]`` or ``[B, T]``, one-hot ``[B, C]``, values
            ``[B, D]``; cast to float32 as Keras does.
          y_pred: predictions, e.g. ``[B, 1]``, ``[B, C]``, ``[B, T, C]``; cast to float32.
          sample_weight: ``[B]``, ``[B, 1]`` or per step ``[B, T]`` (see
            ``reduce_weighted_values``).
          valid: ``[B]``, 1 for a real row, 0 for padding (None: all real).

        Returns:
          The reduced loss (a scalar, unless ``reduction`` is None).
        """
        y_true = jnp.asarray(y_true).astype(jnp.float32)
        y_pred = jnp.asarray(y_pred).astype(jnp.float32)
        values, mask = self.values_and_mask(y_true, y_pred)
        if sample_weight is not None:
            sample_weight = jnp.asarray(sample_weight).astype(jnp.float32)
        return reduce_weighted_values(
            jnp.asarray(values).astype(jnp.float32), sample_weight, mask, self.reduction, valid
        )


class _FunctionLoss(Loss):
    """Keras' ``LossFunctionWrapper``: aligns the ranks of ``y_true`` and ``y_pred``
    (``squeeze_or_expand_to_same_rank``), then applies ``function``."""

    def function(self, y_true: Array, y_pred: Array) -> Array:
        raise NotImplementedError

    def call(self, y_true: Array, y_pred: Array) -> Array:
        return self.function(*squeeze_or_expand_to_same_rank(y_true, y_pred))


@dataclasses.dataclass(frozen=True)
class LossFunctionWrapper(_FunctionLoss):
    """A user function ``fn(y_true, y_pred) -> per-element losses`` as a ``Loss``; named after
    the function (``object_name``) unless ``name`` is given."""

    fn: Callable[[Array, Array], Array]
    reduction: Reduction = "sum_over_batch_size"
    name: str | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.name is None:
            object.__setattr__(self, "name", object_name(self.fn))

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return self.fn(y_true, y_pred)


@dataclasses.dataclass(frozen=True)
class BinaryCrossentropy(_FunctionLoss):
    """``keras.losses.BinaryCrossentropy``; see ``binary_crossentropy``."""

    from_logits: bool = False
    label_smoothing: float = 0.0
    axis: int = -1
    reduction: Reduction = "sum_over_batch_size"
    name: str = "binary_crossentropy"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return binary_crossentropy(
            y_true, y_pred, self.from_logits, self.label_smoothing, self.axis
        )


@dataclasses.dataclass(frozen=True)
class CategoricalCrossentropy(_FunctionLoss):
    """``keras.losses.CategoricalCrossentropy``; see ``categorical_crossentropy``."""

    from_logits: bool = False
    label_smoothing: float = 0.0
    axis: int = -1
    reduction: Reduction = "sum_over_batch_size"
    name: str = "categorical_crossentropy"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return categorical_crossentropy(
            y_true, y_pred, self.from_logits, self.label_smoothing, self.axis
        )


@dataclasses.dataclass(frozen=True)
class SparseCategoricalCrossentropy(_FunctionLoss):
    """``keras.losses.SparseCategoricalCrossentropy``; see
    ``sparse_categorical_crossentropy``. Per step (labels ``[B, T]``, ``y_pred [B, T, C]``)
    the divisor is ``B T``; ``ignore_class`` elements leave it."""

    from_logits: bool = False
    ignore_class: int | None = None
    reduction: Reduction = "sum_over_batch_size"
    axis: int = -1
    name: str = "sparse_categorical_crossentropy"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return self.values_and_mask(y_true, y_pred)[0]

    def values_and_mask(self, y_true: Array, y_pred: Array) -> tuple[Array, Array | None]:
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        return sparse_categorical_crossentropy_and_mask(
            y_true, y_pred, self.from_logits, self.ignore_class, self.axis
        )


@dataclasses.dataclass(frozen=True)
class MeanSquaredError(_FunctionLoss):
    """``keras.losses.MeanSquaredError``; see ``mean_squared_error``."""

    reduction: Reduction = "sum_over_batch_size"
    name: str = "mean_squared_error"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return mean_squared_error(y_true, y_pred)


@dataclasses.dataclass(frozen=True)
class MeanAbsoluteError(_FunctionLoss):
    """``keras.losses.MeanAbsoluteError``; see ``mean_absolute_error``."""

    reduction: Reduction = "sum_over_batch_size"
    name: str = "mean_absolute_error"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return mean_absolute_error(y_true, y_pred)


@dataclasses.dataclass(frozen=True)
class MeanAbsolutePercentageError(_FunctionLoss):
    """``keras.losses.MeanAbsolutePercentageError``; see ``mean_absolute_percentage_error``."""

    reduction: Reduction = "sum_over_batch_size"
    name: str = "mean_absolute_percentage_error"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return mean_absolute_percentage_error(y_true, y_pred)


@dataclasses.dataclass(frozen=True)
class MeanSquaredLogarithmicError(_FunctionLoss):
    """``keras.losses.MeanSquaredLogarithmicError``; see ``mean_squared_logarithmic_error``."""

    reduction: Reduction = "sum_over_batch_size"
    name: str = "mean_squared_logarithmic_error"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return mean_squared_logarithmic_error(y_true, y_pred)


@dataclasses.dataclass(frozen=True)
class Huber(_FunctionLoss):
    """``keras.losses.Huber``; see ``huber``."""

    delta: float = 1.0
    reduction: Reduction = "sum_over_batch_size"
    name: str = "huber_loss"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return huber(y_true, y_pred, self.delta)


@dataclasses.dataclass(frozen=True)
class LogCosh(_FunctionLoss):
    """``keras.losses.LogCosh``; see ``log_cosh``."""

    reduction: Reduction = "sum_over_batch_size"
    name: str = "log_cosh"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return log_cosh(y_true, y_pred)


@dataclasses.dataclass(frozen=True)
class KLDivergence(_FunctionLoss):
    """``keras.losses.KLDivergence``; see ``kl_divergence``."""

    reduction: Reduction = "sum_over_batch_size"
    name: str = "kl_divergence"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return kl_divergence(y_true, y_pred)


@dataclasses.dataclass(frozen=True)
class Poisson(_FunctionLoss):
    """``keras.losses.Poisson``; see ``poisson``."""

    reduction: Reduction = "sum_over_batch_size"
    name: str = "poisson"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return poisson(y_true, y_pred)


@dataclasses.dataclass(frozen=True)
class Hinge(_FunctionLoss):
    """``keras.losses.Hinge``; see ``hinge``."""

    reduction: Reduction = "sum_over_batch_size"
    name: str = "hinge"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return hinge(y_true, y_pred)


@dataclasses.dataclass(frozen=True)
class SquaredHinge(_FunctionLoss):
    """``keras.losses.SquaredHinge``; see ``squared_hinge``."""

    reduction: Reduction = "sum_over_batch_size"
    name: str = "squared_hinge"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return squared_hinge(y_true, y_pred)


@dataclasses.dataclass(frozen=True)
class CategoricalHinge(_FunctionLoss):
    """``keras.losses.CategoricalHinge``; see ``categorical_hinge``."""

    reduction: Reduction = "sum_over_batch_size"
    name: str = "categorical_hinge"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return categorical_hinge(y_true, y_pred)


@dataclasses.dataclass(frozen=True)
class CosineSimilarity(_FunctionLoss):
    """``keras.losses.CosineSimilarity``; see ``cosine_similarity``."""

    axis: int = -1
    reduction: Reduction = "sum_over_batch_size"
    name: str = "cosine_similarity"

    def function(self, y_true: Array, y_pred: Array) -> Array:
        return cosine_similarity(y_true, y_pred, self.axis)


@dataclasses.dataclass(frozen=True)
class AutoCrossentropy(_FunctionLoss):
    """Keras' ``loss="crossentropy"`` (or ``"ce"``): binary, sparse or categorical
    crossentropy of probabilities, chosen by shapes (``is_binary_or_sparse_categorical``) when
    the loss first sees them."""

    reduction: Reduction = "sum_over_batch_size"
    name: str = "crossentropy"

    def call(self, y_true: Array, y_pred: Array) -> Array:
        # Keras decides on the shapes as given, before aligning them.
        binary, sparse = is_binary_or_sparse_categorical(y_true, y_pred)
        if binary:
            function = binary_crossentropy
        elif sparse:
            function = sparse_categorical_crossentropy
        else:
            function = categorical_crossentropy
        return function(*squeeze_or_expand_to_same_rank(y_true, y_pred))


LOSS_CLASSES = (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    SparseCategoricalCrossentropy,
    MeanSquaredError,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredLogarithmicError,
    Huber,
    LogCosh,
    KLDivergence,
    Poisson,
    Hinge,
    SquaredHinge,
    CategoricalHinge,
    CosineSimilarity,
)
# Keras' function names and their aliases (keras/src/losses/__init__.py), each meaning the
# function with its defaults: the loss object of that function, named as written.
LOSS_NAMES = {
    "binary_crossentropy": BinaryCrossentropy,
    "bce": BinaryCrossentropy,
    "BCE": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
    "MSE": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "mae": MeanAbsoluteError,
    "MAE": MeanAbsoluteError,
    "mean_absolute_percentage_error": MeanAbsolutePercentageError,
    "mape": MeanAbsolutePercentageError,
    "MAPE": MeanAbsolutePercentageError,
    "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
    "msle": MeanSquaredLogarithmicError,
    "MSLE": MeanSquaredLogarithmicError,
    "huber": Huber,
    "log_cosh": LogCosh,
    "kl_divergence": KLDivergence,
    "kld": KLDivergence,
    "KLD": KLDivergence,
    "poisson": Poisson,
    "hinge": Hinge,
    "squared_hinge": SquaredHinge,
    "categorical_hinge": CategoricalHinge,
    "cosine_similarity": CosineSimilarity,
}


def get(identifier) -> Loss:
    """A ``Loss`` from what Keras' ``compile(loss=...)`` accepts.

    * a ``Loss`` (itself) or a ``Loss`` class (default instance);
    * a Keras function name or alias (``"binary_crossentropy"``, ``"mse"``, ``"kld"``, ...):
      that function with Keras' defaults (``from_logits=False``), named as written;
    * a Keras class name (``"BinaryCrossentropy"``): the default object, with its default name;
    * ``"crossentropy"``/``"ce"`` (any case): ``AutoCrossentropy``, resolved by shapes;
    * a function ``fn(y_true, y_pred) -> per-element losses``: ``LossFunctionWrapper(fn)``.

    Raises:
      ValueError: anything else, listing the valid names. Keras 3.15.1 has no ``"logcosh"`` or
        ``"rmse"``, so neither has this.
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, str):
        if identifier.lower() in ("crossentropy", "ce"):
            return AutoCrossentropy(name=identifier)
        if identifier in LOSS_NAMES:
            return LOSS_NAMES[identifier](name=identifier)
        classes = {cls.__name__: cls for cls in LOSS_CLASSES}
        if identifier in classes:
            return classes[identifier]()
    elif callable(identifier):
        return LossFunctionWrapper(identifier)
    names = sorted([*LOSS_NAMES, *(cls.__name__ for cls in LOSS_CLASSES), "crossentropy", "ce"])
    raise ValueError(
        f"unknown loss {identifier!r}: give a Loss, a function fn(y_true, y_pred) returning "
        f"per-element losses, or one of {', '.join(names)}"
    )
