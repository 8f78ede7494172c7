"""The arrays the speed benchmark trains on: IMDB- or Reuters-shaped, synthetic or real.

Shape letters: N training examples, M validation examples, T = 100 time steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Shape:
    """A tutorial's data after ``load_data(num_words)``, ``pad_sequences(maxlen)`` and the 80/20
    validation split. Sequence lengths before padding are log-normal with median
    ``median_words`` and log-spread ``spread``, fitted to the real sets (IMDB: 88% of the
    sequences fill all 100 steps; Reuters: 46%)."""

    num_words: int
    maxlen: int
    num_train: int
    num_val: int
    num_classes: int  # 1: binary labels 0/1
    median_words: int
    spread: float


SHAPES = {
    "imdb": Shape(
        num_words=500,
        maxlen=100,
        num_train=20_000,
        num_val=5_000,
        num_classes=1,
        median_words=174,
        spread=0.45,
    ),
    "reuters": Shape(
        num_words=1000,
        maxlen=100,
        num_train=7_185,
        num_val=1_797,
        num_classes=46,
        median_words=95,
        spread=0.75,
    ),
}


def synthetic(shape: Shape, seed: int) -> dict[str, np.ndarray]:
    """Arrays shaped like the real ones, without a download.

    Lengths are log-normal (at least 10 ids); a sequence keeps its last
    ``maxlen`` ids ('pre' truncation) or gets leading zeros ('pre' padding) after a start mark 1;
    words are uniform ids in [2, num_words). Labels follow from the words (a fixed random score
    per word: the sign of the summed score for one class, the best of C summed scores else), so
    every framework's loss can fall, as on real data.

    Returns ``x_train [N, T]``, ``y_train [N]``, ``x_val [M, T]``, ``y_val [M]`` (int32).
    """
    rng = np.random.default_rng(seed)
    n = shape.num_train + shape.num_val
    lengths = np.maximum(rng.lognormal(np.log(shape.median_words), shape.spread, n).astype(int), 10)
    kept = np.minimum(lengths, shape.maxlen)
    first = shape.maxlen - kept  # column of each sequence's first id
    ids = rng.integers(2, shape.num_words, (n, shape.maxlen))
    ids[np.arange(shape.maxlen) < first[:, None]] = 0
    untruncated = lengths <= shape.maxlen
    ids[untruncated, first[untruncated]] = 1

    counts = np.zeros((n, shape.num_words))
    np.add.at(counts, (np.repeat(np.arange(n), shape.maxlen), ids.ravel()), 1.0)
    scores = rng.normal(size=(shape.num_words, max(shape.num_classes, 2)))
    scores[:2] = 0.0  # padding and the start mark say nothing
    totals = counts @ scores
    if shape.num_classes == 1:
        labels = totals[:, 0] > np.median(totals[:, 0])
    else:
        labels = np.argmax(totals, axis=1)
    ids, labels = ids.astype(np.int32), labels.astype(np.int32)
    return {
        "x_train": ids[: shape.num_train],
        "y_train": labels[: shape.num_train],
        "x_val": ids[shape.num_train :],
        "y_val": labels[shape.num_train :],
    }


def real(
    dataset: str, data_dir: str | None = None, manual_dir: str | None = None
) -> dict[str, np.ndarray]:
    """The tutorial's own training and validation arrays via ``rnnjax.experiment.load_splits``
    (tensorflow-datasets in ``data_dir``, else ``$TFDS_DATA_DIR``; see rnnjax's README, "Data")."""
    from rnnjax.experiment import DataConfig, load_splits

    config = DataConfig(
        dataset=dataset, num_words=SHAPES[dataset].num_words, maxlen=SHAPES[dataset].maxlen
    )
    splits = load_splits(config, data_dir=data_dir, manual_dir=manual_dir)
    (x_train, y_train), (x_val, y_val) = splits.train, splits.validation
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}
