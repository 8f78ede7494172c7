"""The real IMDB and Reuters-21578 data: from ``$TFDS_DATA_DIR`` or ``../shared/data`` (relative
to the repository root); skipped when neither has them. Prints the load times (run with ``-s``).
"""

import os
import time
from pathlib import Path

import numpy as np
import pytest

from rnnjax.data import imdb, pad_sequences, reuters, train_validation_split

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IMDB_DATA_DIR = next(
    (
        Path(d)
        for d in (os.environ.get("TFDS_DATA_DIR"), SHARED_DATA / "tensorflow_datasets")
        if d and (Path(d) / "imdb_reviews/plain_text/1.0.0").is_dir()
    ),
    None,
)

# keras.datasets.reuters.get_label_names() (Keras 3), labels 0..45.
# fmt: off
KERAS_REUTERS_LABELS = (
    "cocoa", "grain", "veg-oil", "earn", "acq", "wheat", "copper", "housing", "money-supply",
    "coffee", "sugar", "trade", "reserves", "ship", "cotton", "carcass", "crude", "nat-gas", "cpi",
    "money-fx", "interest", "gnp", "meal-feed", "alum", "oilseed", "gold", "tin",
    "strategic-metal", "livestock", "retail", "ipi", "iron-steel", "rubber", "heat", "jobs", "lei",
    "bop", "zinc", "orange", "pet-chem", "dlr", "gas", "silver", "wpi", "hog", "lead",
)
# np.bincount(y_train) of keras.datasets.reuters.load_data() (defaults: seed 113, test_split 0.2).
KERAS_REUTERS_TRAIN_COUNTS = [
    55, 432, 74, 3159, 1949, 17, 48, 16, 139, 101, 124, 390, 49, 172, 26, 20, 444, 39, 66, 549,
    269, 100, 15, 41, 62, 92, 24, 15, 48, 19, 45, 39, 32, 11, 50, 10, 49, 19, 19, 24, 36, 30, 13,
    21, 12, 18,
]
# fmt: on


def timed(fn, **kwargs):
    start = time.perf_counter()
    out = fn(**kwargs)
    return out, time.perf_counter() - start


@pytest.mark.skipif(
    IMDB_DATA_DIR is None,
    reason="no prepared imdb_reviews in $TFDS_DATA_DIR or ../shared",
)
def test_real_imdb(tmp_path):
    kwargs = dict(num_words=500, data_dir=IMDB_DATA_DIR, cache_dir=tmp_path, download=False)
    data, first = timed(imdb.load, **kwargs)
    again, cached = timed(imdb.load, **kwargs)
    print(f"\nIMDB num_words=500: first load {first:.2f} s, cached load {cached:.3f} s")
    assert cached < 1.0
    assert (len(data.x_train), len(data.x_test)) == (25_000, 25_000)
    assert np.bincount(data.y_train).tolist() == [12_500, 12_500]
    assert np.bincount(data.y_test).tolist() == [12_500, 12_500]
    for x in (data.x_train, data.x_test):
        ids = np.concatenate(x)
        assert ids.min() >= 1 and ids.max() == 499 and all(s[0] == 1 for s in x)
    assert data.vocabulary.words[:6] == ("the", "and", "a", "of", "to", "is")
    # Keras' imdb.npz ranked "br" (from "<br />") 7th; the only "br" left here is a broadcaster.
    assert data.vocabulary.word_index.get("br", len(data.vocabulary)) > 10_000
    assert [x.tolist() for x in again.x_test[:50]] == [x.tolist() for x in data.x_test[:50]]
    padded = pad_sequences(data.x_train, maxlen=100)
    assert padded.shape == (25_000, 100) and padded.dtype == np.int32
    (x_fit, _), (x_val, _) = train_validation_split(padded, data.y_train, 0.2, seed=42)
    assert (len(x_fit), len(x_val)) == (20_000, 5_000)


PREPARED_REUTERS = os.environ.get("TFDS_DATA_DIR") and Path(os.environ["TFDS_DATA_DIR"])
if PREPARED_REUTERS and not (PREPARED_REUTERS / "reuters21578/1.0.0").is_dir():
    PREPARED_REUTERS = None


@pytest.mark.skipif(
    not PREPARED_REUTERS and not (SHARED_DATA / "reuters21578.tar.gz").is_file(),
    reason="no reuters21578 in $TFDS_DATA_DIR and no ../shared/data/reuters21578.tar.gz",
)
def test_real_reuters(tmp_path):
    # Prepared from the archive into a temporary data dir: ../shared is read-only.
    where = (
        dict(data_dir=PREPARED_REUTERS)
        if PREPARED_REUTERS
        else dict(data_dir=tmp_path / "tfds", manual_dir=SHARED_DATA, prepare=True)
    )
    kwargs = dict(num_words=1000, cache_dir=tmp_path, download=False, **where)
    data, first = timed(reuters.load, **kwargs)
    _, cached = timed(reuters.load, **kwargs)
    print(f"\nReuters num_words=1000: (prepare +) first load {first:.2f} s, cached {cached:.3f} s")
    assert (len(data.x_train), len(data.x_test)) == (8982, 2246)
    assert data.label_names == KERAS_REUTERS_LABELS
    assert np.bincount(data.y_train, minlength=46).tolist() == KERAS_REUTERS_TRAIN_COUNTS
    assert np.concatenate(data.x_train).max() == 999
    assert set(np.unique(np.concatenate([data.y_train, data.y_test]))) == set(range(46))
