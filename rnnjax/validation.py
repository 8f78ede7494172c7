"""Checks of user data at the library boundary, once per dataset (never in the hot loop).

JAX does not fail on bad indices: an embedding lookup clamps or fills out-of-range ids and a
one-hot of an out-of-range label is all zeros, so a vocabulary or label mismatch would train
silently on garbage. These checks turn that into one ``ValueError`` naming the value and where.
"""

from __future__ import annotations

import numpy as np


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_ids(ids: np.ndarray, vocab_size: int, name: str = "ids") -> np.ndarray:
    """``ids [N, T]``: integers in ``[0, vocab_size)``. Returns them as int32."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"{name} must have shape [examples, time], got shape {ids.shape}")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {ids.shape})")
    if not np.issubdtype(ids.dtype, np.integer):
        if not (np.issubdtype(ids.dtype, np.floating) and np.all(np.mod(ids, 1) == 0)):
            raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    bad = (ids < 0) | (ids >= vocab_size)
    if bad.any():
        where = _first_bad(bad)
        raise ValueError(
            f"{name}[{where[0]}, {where[1]}] = {ids[where]} is outside the vocabulary "
            f"[0, {vocab_size}); load the data with num_words <= vocab_size"
        )
    return ids.astype(np.int32)


def check_labels(
    labels: np.ndarray, num_classes: int, num_examples: int, name: str = "labels"
) -> np.ndarray:
    """``labels [N]``: integers in ``[0, max(num_classes, 2))`` (0/1 for a binary classifier)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"{name} must have shape [examples], got shape {labels.shape}")
    if len(labels) != num_examples:
        raise ValueError(f"{name} has {len(labels)} entries but there are {num_examples} sequences")
    if not np.issubdtype(labels.dtype, np.integer) and not np.all(np.mod(labels, 1) == 0):
        raise ValueError(f"{name} must be integer class ids, got dtype {labels.dtype}")
    classes = max(num_classes, 2)
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(
            f"{name}[{index}] = {labels[index]} is not a class id in [0, {classes}); "
            f"the model has num_classes={num_classes}"
        )
    return labels.astype(np.int32)


def check_dataset(
    data: tuple[np.ndarray, np.ndarray], vocab_size: int, num_classes: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(ids [N, T], labels [N])`` checked and converted to int32; ``name`` goes in messages."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{name} must be a pair (ids, labels)")
    ids = check_ids(data[0], vocab_size, f"{name} ids")
    return ids, check_labels(data[1], num_classes, len(ids), f"{name} labels")


def check_loss(loss: str, num_outputs: int) -> None:
    """The loss must suit the model's output width: binary cross-entropy one sigmoid output,
    the categorical ones a softmax over two or more classes."""
    if loss == "binary_crossentropy" and num_outputs != 1:
        raise ValueError(
            f"binary_crossentropy needs a model with one output (num_classes=1), this one has "
            f"{num_outputs}; for {num_outputs} classes use sparse_categorical_crossentropy"
        )
    if loss in ("categorical_crossentropy", "sparse_categorical_crossentropy") and num_outputs < 2:
        raise ValueError(
            f"{loss} needs a model with one output per class (num_classes >= 2), this one has "
            f"{num_outputs}; for two classes with one output use binary_crossentropy"
        )


def check_batch_size(batch_size: int) -> int:
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)
