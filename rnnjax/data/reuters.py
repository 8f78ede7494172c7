"""Reuters-21578 newswire topics: a TF-free TFDS builder, and ``keras.datasets.reuters.load_data``.

``Reuters21578`` prepares the raw collection (Lewis, 1997; ``reuters21578.tar.gz``, the SGML files
``reut2-000.sgm`` ... ``reut2-021.sgm`` in latin-1) as the TFDS dataset ``reuters21578:1.0.0``
with one split, ``train``, holding all 21,578 newswires (their Lewis split is a feature). Parsing
(``parse_sgml``):

* one document per ``<REUTERS ...>`` block; ``newid`` and ``lewis_split`` from its attributes;
* ``topics``: the ``<D>`` items of ``<TOPICS>``, in order (possibly none);
* ``title`` and ``body``: the ``<TITLE>`` and ``<BODY>`` of ``<TEXT>``; a ``TYPE="UNPROC"`` text
  has neither tag, and its whole text is the body; the dateline is left out;
* in both, the collection's paragraph marker ``&\\t`` and control characters (``&#2;``,
  ``&#3;``, ...) become spaces; ``&lt;``, ``&gt;``, ``&amp;`` are decoded.

``load`` builds Keras' 46-topic dataset from it:

1. documents with at least one topic, in ``newid`` (collection) order: 11,367;
2. label = the first topic; keep the ``num_topics`` (46) most frequent first topics (ties by
   name): 11,228 documents, the count of Keras' ``reuters.npz``;
3. labels number the kept topics in order of first appearance in the collection: 0 cocoa,
   1 grain, 2 veg-oil, 3 earn, 4 acq, ... exactly Keras' ``reuters.get_label_names()``;
4. text = title + body, tokenized as ``rnnjax.data.text``; then as Keras: shuffle the pool with
   ``np.random.RandomState(seed)``, drop sequences of ``maxlen`` ids or more, and split at
   ``int(n * (1 - test_split))`` (11,228 -> 8,982 train / 2,246 test);
5. the vocabulary is ranked on the training part only; ids as ``rnnjax.data.text``.

With the defaults the documents and labels of both splits are Keras' own: the train label counts
(``np.bincount(y_train)``) equal those of ``keras.datasets.reuters.load_data()`` and the first
training newswire is Keras' first. The ids differ in two ways: Keras took the body only, and ranked
its vocabulary on all 11,228 newswires.
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

TFDS_NAME = "reuters21578:1.0.0"

_DOCUMENT = re.compile(r"<REUTERS\b([^>]*)>(.*?)</REUTERS>", re.DOTALL)
_ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')
_TOPICS = re.compile(r"<TOPICS>(.*?)</TOPICS>", re.DOTALL)
_ITEM = re.compile(r"<D>(.*?)</D>", re.DOTALL)
_TEXT = re.compile(r"<TEXT\b[^>]*>(.*?)</TEXT>", re.DOTALL)
_TITLE = re.compile(r"<TITLE>(.*?)</TITLE>", re.DOTALL)
_BODY = re.compile(r"<BODY>(.*?)</BODY>", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_CHARACTER_REFERENCE = re.compile(r"&#(\d+);")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SGML_FILE = re.compile(r"(?:.*/)?reut2-\d{3}\.sgm")


class Reuters21578(tfds.core.GeneratorBasedBuilder):
    """Reuters-21578, Distribution 1.0: every newswire with its TOPICS, prepared without TF."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "All 21,578 newswires in one split."}
    code_path = epath.Path(__file__)  # see rnnjax.data.sources (tensorflow/datasets#11212)
    URL = "https://kdd.ics.uci.edu/databases/reuters21578/reuters21578.tar.gz"
    ARCHIVE = "reuters21578.tar.gz"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"Download {URL} and place {ARCHIVE} in the manual dir."

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "Reuters-21578 Text Categorization Collection, Distribution 1.0 (David D. Lewis): "
                "21,578 Reuters newswires from 1987 with their TOPICS categories."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "newid": np.int32,
                    "lewis_split": tfds.features.Text(),
                    "topics": tfds.features.Sequence(tfds.features.Text()),
                    "title": tfds.features.Text(),
                    "body": tfds.features.Text(),
                }
            ),
            homepage="https://kdd.ics.uci.edu/databases/reuters21578/reuters21578.html",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        archive = sources.archive_path(dl_manager, self.ARCHIVE, self.URL)
        return {"train": self._generate_examples(archive)}

    def _generate_examples(self, archive: Path) -> Iterator[tuple[int, dict[str, Any]]]:
        count = 0
        for name, content in sources.iter_tar(archive, _SGML_FILE.fullmatch):
            for document in parse_sgml(content.decode("latin-1"), name):
                count += 1
                yield document["newid"], document
        if not count:
            raise ValueError(f"{archive} holds no reut2-NNN.sgm file with documents")


def parse_sgml(sgml: str, name: str = "<sgml>") -> list[dict[str, Any]]:
    """The documents of one ``reut2-NNN.sgm`` file, parsed as the module docstring says.

    Raises:
      ValueError: a ``<REUTERS>`` block is unterminated or lacks NEWID, TOPICS or TEXT.
    """
    documents = []
    for match in _DOCUMENT.finditer(sgml):
        attributes = dict(_ATTRIBUTE.findall(match[1]))
        topics, text = _TOPICS.search(match[2]), _TEXT.search(match[2])
        if "NEWID" not in attributes or topics is None or text is None:
            raise ValueError(f"malformed <REUTERS {match[1].strip()}> in {name}")
        title, body = _TITLE.search(text[1]), _BODY.search(text[1])
        if title is None and body is None:  # TYPE="UNPROC": the text is not tagged
            title_text, body_text = "", _TAG.sub(" ", text[1])
        else:
            title_text, body_text = (part[1] if part else "" for part in (title, body))
        documents.append(
            {
                "newid": int(attributes["NEWID"]),
                "lewis_split": attributes.get("LEWISSPLIT", ""),
                "topics": _ITEM.findall(topics[1]),
                "title": _clean(title_text),
                "body": _clean(body_text),
            }
        )
    if len(documents) != sgml.count("<REUTERS "):
        raise ValueError(
            f"malformed SGML in {name}: {sgml.count('<REUTERS ')} <REUTERS> tags but "
            f"{len(documents)} complete documents"
        )
    return documents


def load(
    *,
    num_words: int | None = None,
    skip_top: int = 0,
    maxlen: int | None = None,
    test_split: float = 0.2,
    seed: int = 113,
    start_char: int | None = 1,
    oov_char: int | None = 2,
    index_from: int = 3,
    num_topics: int = 46,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    prepare: bool | None = None,
) -> TextDataset:
    """Reuters newswires as id sequences labelled by topic, with the vocabulary that decodes them.

    Args:
      num_words, skip_top, maxlen, test_split, seed, start_char, oov_char, index_from: as
        ``keras.datasets.reuters.load_data`` (see the module docstring).
      num_topics: how many of the most frequent first topics to keep.
      data_dir: the TFDS data dir; default ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``.
      manual_dir: where ``reuters21578.tar.gz`` may be, for preparing offline; default
        ``<data_dir>/downloads/manual``.
      cache_dir: where encoded arrays are cached; default ``rnnjax.data.cache.default_dir()``.
      download: whether preparing may download the archive.
      prepare: whether the dataset may be prepared (written) in ``data_dir`` when it is not
        there; default: only in TFDS' default dir, used when neither ``data_dir`` nor
        ``$TFDS_DATA_DIR`` names one (``rnnjax.data.sources.ensure_prepared``).

    Returns:
      A ``TextDataset``; ``label_names`` are the kept topics.

    Raises:
      sources.DatasetNotFoundError: not prepared and cannot be prepared (message names
        ``TFDS_DATA_DIR`` and how to prepare).
      ValueError: bad arguments, a corrupt archive, or an empty split.
    """
    convention = IndexConvention(num_words, skip_top, start_char, oov_char, index_from)
    check_maxlen(maxlen)
    if not 0.0 < test_split < 1.0:
        raise ValueError(f"test_split must be in (0, 1), got {test_split}")
    if num_topics < 1:
        raise ValueError(f"num_topics must be >= 1, got {num_topics}")
    params = {"maxlen": maxlen, "test_split": test_split, "seed": seed, "num_topics": num_topics}
    arrays = sources.cached_dataset(
        Reuters21578,
        {**vars(convention), **params},
        _tokenize,
        lambda corpus: _encode(corpus, convention, **params),
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
    """Documents with at least one topic, in newid order: tokens and first topics (as indices into
    the topic names, numbered in order of first appearance)."""
    records = []
    for r in sources.read_split(Reuters21578, "train", data_dir):
        try:
            if r["topics"].bytes_list.value:
                text = r["title"].bytes_list.value[0] + b"\n" + r["body"].bytes_list.value[0]
                records.append(
                    (r["newid"].int64_list.value[0], r["topics"].bytes_list.value[0], text)
                )
        except (KeyError, IndexError) as error:
            detail = f"a record lacks a feature: {error!r}"
            raise sources.damaged(Reuters21578, "train", data_dir, detail) from None
    records.sort(key=lambda record: record[0])
    topic_ids: dict[bytes, int] = {}
    first_topics = [topic_ids.setdefault(topic, len(topic_ids)) for _, topic, _ in records]
    return {
        **tokenize_corpus(text for _, _, text in records).to_arrays(),
        "first_topics": np.array(first_topics, np.int32),
        "topic_names": cache.strings_to_array([t.decode() for t in topic_ids]),
    }


def _encode(
    arrays: cache.Arrays,
    convention: IndexConvention,
    maxlen: int | None,
    test_split: float,
    seed: int,
    num_topics: int,
) -> cache.Arrays:
    """The corpus encoded as Keras' ``load_data`` does (module docstring), as cache arrays."""
    corpus = Corpus.from_arrays(arrays)
    first_topics, names = arrays["first_topics"], cache.strings_from_array(arrays["topic_names"])
    counts = np.bincount(first_topics, minlength=len(names))
    by_frequency = sorted(range(len(names)), key=lambda t: (-counts[t], names[t]))
    kept = sorted(by_frequency[:num_topics])  # label order = order of first appearance
    label_of = np.full(len(names), -1, np.int32)
    label_of[kept] = np.arange(len(kept))
    rows = np.flatnonzero(label_of[first_topics] >= 0)
    np.random.RandomState(seed).shuffle(rows)
    rows = rows[short_rows(corpus.tokens.lengths[rows], maxlen, convention)]
    split = int(len(rows) * (1 - test_split))
    if split == 0 or split == len(rows):
        raise ValueError(
            f"test_split={test_split} of {len(rows)} newswires (after maxlen={maxlen}) leaves an "
            f"empty split ({split} train / {len(rows) - split} test)"
        )
    train_rows, test_rows = rows[:split], rows[split:]
    vocabulary, ranks = rank_corpus(corpus, train_rows)
    train, test = encode_splits(
        [ranks.take(train_rows), ranks.take(test_rows)], len(vocabulary), convention
    )
    return dataset_arrays(
        (train, label_of[first_topics[train_rows]]),
        (test, label_of[first_topics[test_rows]]),
        vocabulary,
        [names[t] for t in kept],
    )


def _clean(text: str) -> str:
    text = _CHARACTER_REFERENCE.sub(lambda m: chr(int(m[1])), text.replace("&\\t", " "))
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return _CONTROL.sub(" ", text)
