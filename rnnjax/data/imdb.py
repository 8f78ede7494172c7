"""IMDB movie reviews from tensorflow-datasets, TF-free, as ``keras.datasets.imdb.load_data``.

The data is the TFDS dataset ``imdb_reviews/plain_text:1.0.0`` (Maas et al., 2011): 25,000 train
and 25,000 test reviews, labels neg=0 / pos=1, read from its array_record files
(``rnnjax.data.sources.read_split``). When it is not prepared, ``ImdbReviews`` prepares it
without TensorFlow from ``aclImdb_v1.tar.gz`` (in the manual dir, or downloaded), in the same
format and record order as the stock TFDS builder.

``load`` then follows Keras 3 ``imdb.load_data`` step by step, with a vocabulary built from the
25,000 training reviews (see ``rnnjax.data.text``) in place of Keras' precomputed ``imdb.npz``:

1. shuffle the train reviews with ``np.random.RandomState(seed)``, then the test reviews with the
   same generator (the records are first taken in TFDS file order);
2. ``[start_char] + [rank + index_from ...]`` per review;
3. with ``maxlen``, drop (not truncate) every sequence of ``maxlen`` ids or more;
4. ``num_words=None`` means the largest id over both splits;
5. ids outside ``[skip_top, num_words)`` and words never seen in training become ``oov_char``, or
   are dropped when ``oov_char`` is None.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from rnnjax.data import cache, sources
from rnnjax.data.text import (
    Corpus,
    IndexConvention,
    TextDataset,
    check_maxlen,
    dataset_arrays,
    encode_splits,
    rank_corpus,
    short_rows,
    tokenize_corpus,
)

TFDS_NAME = "imdb_reviews/plain_text:1.0.0"
LABEL_NAMES = ("neg", "pos")


class ImdbReviews(tfds.builder_cls("imdb_reviews"), skip_registration=True):
    """The stock ``imdb_reviews`` builder, reading its archive with ``tarfile`` instead of
    ``tf.io.gfile``.

    Same name, config, version, features and example keys (so the same record order) as the
    stock builder; writes the ``train`` and ``test`` splits (not ``unsupervised``), like the data
    dir in ``../shared``. The archive comes from the manual dir when it is there, else from
    ``URL``.
    """

    name = "imdb_reviews"
    code_path = epath.Path(__file__)  # see rnnjax.data.sources (tensorflow/datasets#11212)
    URL = "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
    ARCHIVE = "aclImdb_v1.tar.gz"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"Download {URL} and place {ARCHIVE} in the manual dir."

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        archive = sources.archive_path(dl_manager, self.ARCHIVE, self.URL)
        return {split: self._generate_examples(archive, split) for split in ("train", "test")}

    def _generate_examples(self, archive: Path, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        review = re.compile(rf"aclImdb/{split}/(neg|pos)/[^/.][^/]*\.txt")
        count = 0
        for name, content in sources.iter_tar(archive, review.fullmatch):
            count += 1
            yield name, {"text": content.strip(), "label": review.fullmatch(name)[1]}
        if not count:
            raise ValueError(f"{archive} holds no reviews under aclImdb/{split}/neg|pos/")


def load(
    *,
    num_words: int | None = None,
    skip_top: int = 0,
    maxlen: int | None = None,
    seed: int = 113,
    start_char: int | None = 1,
    oov_char: int | None = 2,
    index_from: int = 3,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    prepare: bool | None = None,
) -> TextDataset:
    """IMDB reviews as id sequences in the Keras convention, with the vocabulary that decodes them.

    Args:
      num_words, skip_top, maxlen, seed, start_char, oov_char, index_from: as
        ``keras.datasets.imdb.load_data`` (see the module docstring).
      data_dir: the TFDS data dir; default ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``.
      manual_dir: where ``aclImdb_v1.tar.gz`` may be, for preparing offline; default
        ``<data_dir>/downloads/manual``.
      cache_dir: where encoded arrays are cached; default ``rnnjax.data.cache.default_dir()``.
      download: whether preparing may download the archive.
      prepare: whether the dataset may be prepared (written) in ``data_dir`` when it is not
        there; default: only in TFDS' default dir, used when neither ``data_dir`` nor
        ``$TFDS_DATA_DIR`` names one (``rnnjax.data.sources.ensure_prepared``).

    Returns:
      A ``TextDataset``: 25,000 train and 25,000 test sequences (fewer with ``maxlen``).

    Raises:
      sources.DatasetNotFoundError: not prepared and cannot be prepared (message names
        ``TFDS_DATA_DIR`` and how to prepare).
      ValueError: bad arguments, a corrupt archive, or an empty split after ``maxlen``.
    """
    convention = IndexConvention(num_words, skip_top, start_char, oov_char, index_from)
    check_maxlen(maxlen)
    arrays = sources.cached_dataset(
        ImdbReviews,
        {**vars(convention), "maxlen": maxlen, "seed": seed},
        _tokenize,
        lambda corpus: _encode(corpus, convention, maxlen, seed),
        data_dir=data_dir,
        manual_dir=manual_dir,
        cache_dir=cache_dir,
        download=download,
        prepare=prepare,
        cache_encoded=seed is not None,  # Keras' RandomState(None): a fresh shuffle each load
    )
    return TextDataset.from_arrays(arrays, convention)


def load_data(**kwargs: Any) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``(x_train, y_train), (x_test, y_test)``, laid out as Keras returns them; takes the keyword
    arguments of ``load``."""
    data = load(**kwargs)
    return (data.x_train, data.y_train), (data.x_test, data.y_test)


def _tokenize(data_dir: Path) -> cache.Arrays:
    """Both splits tokenized into one corpus (train rows first), with their labels."""
    texts, labels = [], []
    for split in ("train", "test"):
        for record in sources.read_split(ImdbReviews, split, data_dir):
            try:
                texts.append(record["text"].bytes_list.value[0])
                labels.append(record["label"].int64_list.value[0])
            except (KeyError, IndexError) as error:
                detail = f"record {len(labels)} lacks a text or a label: {error!r}"
                raise sources.damaged(ImdbReviews, split, data_dir, detail) from None
            if labels[-1] not in (0, 1):
                detail = f"record {len(labels) - 1} has label {labels[-1]}, not 0 or 1"
                raise sources.damaged(ImdbReviews, split, data_dir, detail)
        if split == "train":
            num_train = len(texts)
    return {
        **tokenize_corpus(texts).to_arrays(),
        "labels": np.array(labels, np.int32),
        "num_train": np.array(num_train),
    }


def _encode(
    arrays: cache.Arrays, convention: IndexConvention, maxlen: int | None, seed: int
) -> cache.Arrays:
    """The corpus encoded as Keras' ``load_data`` does (module docstring), as cache arrays."""
    corpus = Corpus.from_arrays(arrays)
    num_train, labels = int(arrays["num_train"]), arrays["labels"]
    vocabulary, ranks = rank_corpus(corpus, np.arange(num_train))
    rng = np.random.RandomState(seed)
    splits = []
    for rows in (np.arange(num_train), np.arange(num_train, corpus.tokens.num_rows)):
        rng.shuffle(rows)
        rows = rows[short_rows(corpus.tokens.lengths[rows], maxlen, convention)]
        if not len(rows):
            raise ValueError(
                f"no sequence shorter than maxlen={maxlen} in a split (Keras drops longer ones, "
                "it does not truncate them); increase maxlen"
            )
        splits.append(rows)
    train, test = encode_splits([ranks.take(rows) for rows in splits], len(vocabulary), convention)
    return dataset_arrays(
        (train, labels[splits[0]]), (test, labels[splits[1]]), vocabulary, LABEL_NAMES
    )
