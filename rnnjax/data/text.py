r"""Text to integer ids in the Keras index convention, and back.

The tokenizer rule (``tokenize``), exactly:

1. decode UTF-8 bytes; replace every HTML line break ``<br />`` (regex ``<br\s*/?>``, any case)
   with a space;
2. lower-case (``str.lower``);
3. tokens are the maximal runs of characters that are neither whitespace nor one of Keras'
   default ``Tokenizer`` filters ``!"#$%&()*+,-./:;<=>?@[\]^_`{|}~`` (plus tab and newline):
   ``TOKEN_PATTERN = [^\s!"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~]+``. Punctuation splits words
   and is dropped; the apostrophe is not a filter, so "don't" stays one token.

This is ``keras.preprocessing.text.text_to_word_sequence`` (lower=True, default filters) with two
differences: ``<br />`` is removed first (Keras' IMDB kept "br" as its 7th most frequent word), and
every Unicode whitespace character separates words (Keras splits on " ", tab and newline only).

Ranking (``Vocabulary``): words of the training documents by count, descending; equal counts in
code-point order of the word. Rank 1 is the most frequent word, as in ``imdb.get_word_index()``;
the order does not depend on the order of the documents.

Ids (``IndexConvention``, Keras' ``load_data`` arguments): 0 is padding, ``start_char`` (1)
starts every sequence, ``oov_char`` (2) stands for a word cut by ``num_words``/``skip_top`` or
absent from the vocabulary, and the word of rank r has id ``r + index_from`` (3), so ids are
``>= 4`` and 3 is never used.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import numbers
import os
import re
import string
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, TypeVar

import numpy as np

from rnnjax.data import cache
from rnnjax.data.sequences import Ragged

KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
TOKEN_PATTERN = re.compile(r"[^\s" + re.escape(KERAS_FILTERS) + r"]+")

_FILTERS_TO_SPACES = str.maketrans(KERAS_FILTERS, " " * len(KERAS_FILTERS))


def tokenize(text: str | bytes) -> list[str]:
    """The tokens of ``text`` by the module's rule.

    Equal to ``TOKEN_PATTERN.findall(LINE_BREAK.sub(" ", text).lower())``, computed with
    ``str.translate`` and ``str.split``, which is about twice as fast.

    >>> tokenize(b"Don't!<br /><br />It's GREAT, 10/10.")
    ["don't", "it's", 'great', '10', '10']
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return LINE_BREAK.sub(" ", text).lower().translate(_FILTERS_TO_SPACES).split()


class Corpus(NamedTuple):
    """Tokenized documents.

    Attributes:
      tokens: int32 ragged ``[N, L_i]``: each token as an index into ``words``.
      words: every distinct token, in order of first appearance.
    """

    tokens: Ragged
    words: tuple[str, ...]

    def to_arrays(self) -> cache.Arrays:
        """The corpus as plain arrays for the cache; ``from_arrays`` restores it."""
        return {
            "token_ids": self.tokens.values,
            "token_lengths": self.tokens.lengths,
            "words": cache.strings_to_array(self.words),
        }

    @classmethod
    def from_arrays(cls, arrays: cache.Arrays) -> Corpus:
        """The corpus stored by ``to_arrays``."""
        return cls(
            Ragged(arrays["token_ids"], arrays["token_lengths"]),
            cache.strings_from_array(arrays["words"]),
        )


def tokenize_corpus(texts: Iterable[str | bytes]) -> Corpus:
    """Tokenizes documents by the module's rule, numbering distinct tokens as they first appear.

    Equal to ``tokenize`` on every document, done for the whole corpus at once without a Python
    object per token: each document becomes bytes whose runs of non-space bytes are its tokens
    (``_folded``), and the runs of all documents, joined, are found and numbered with numpy
    (``_token_spans``, ``_number_tokens``).
    """
    documents = [_folded(text) for text in texts]
    sizes = np.fromiter(map(len, documents), np.int64, len(documents))
    # A space before every document and eight after the last: every token follows a space, and
    # eight bytes can be read from the start of any token.
    joined = b" ".join([b"", *documents, b" " * 7])
    del documents  # the corpus' size once more, for the rest of the function
    starts, lengths = _token_spans(joined)
    token_ids, first = _number_tokens(joined, starts, lengths)
    document_starts = (np.cumsum(sizes + 1) - sizes).astype(starts.dtype)
    tokens_before = np.searchsorted(starts, document_starts)
    return Corpus(
        Ragged(token_ids, np.diff(tokens_before, append=len(starts))),
        tuple(
            joined[start : start + length].decode()
            for start, length in zip(starts[first].tolist(), lengths[first].tolist())
        ),
    )


# What ``\s`` matches in a str pattern (and ``str.split`` splits on) among ASCII characters; a
# bytes pattern's ``\s`` would leave out \x1c-\x1f.
_ASCII_SPACES = "".join(c for c in map(chr, range(128)) if c.isspace())
_ASCII_LINE_BREAK = re.compile(
    rb"<br[" + re.escape(_ASCII_SPACES.encode()) + rb"]*/?>", re.IGNORECASE
)
# Lower-cases ASCII letters and turns the filters and ASCII whitespace into spaces; bytes of
# multi-byte UTF-8 characters (>= 0x80) stay as they are.
_SEPARATORS = "".join(sorted(set(KERAS_FILTERS + _ASCII_SPACES)))
_ASCII_FOLD = bytes.maketrans(
    (string.ascii_uppercase + _SEPARATORS).encode(),
    (string.ascii_lowercase + " " * len(_SEPARATORS)).encode(),
)


def _folded(text: str | bytes) -> bytes:
    """UTF-8 bytes whose runs of non-space bytes are ``tokenize(text)``.

    An ASCII text takes the rule in bytes, where ASCII case and whitespace are all there is. Any
    other text takes it in str up to lower-casing, and its non-ASCII whitespace becomes spaces;
    no character lower-cases to an ASCII capital, to whitespace or to a letter of a line break
    (``tests/test_text.py`` checks every code point), so ``_ASCII_FOLD`` then only turns the
    filters and ASCII whitespace into spaces.
    """
    if text.isascii():
        text = _ASCII_LINE_BREAK.sub(b" ", text if isinstance(text, bytes) else text.encode())
    else:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        text = _NON_ASCII_SPACE.sub(" ", LINE_BREAK.sub(" ", text).lower()).encode()
    return text.translate(_ASCII_FOLD)


# The characters beyond ASCII that ``str.isspace`` (so ``str.split``) counts as whitespace; a
# class of them is faster than ``[^\S\x00-\x7f]`` (``tests/test_text.py`` checks them).
_NON_ASCII_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


# Tokens (or bytes) per block of the vectorised steps below. Their temporaries stay small and are
# reused; arrays the size of the corpus are allocated only for results, because fresh memory
# costs more in page faults than these steps cost in arithmetic.
_BLOCK = 1 << 20

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def _token_spans(joined: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``[N]`` starts and lengths of the runs of non-space bytes of ``joined``, which starts and
    ends with a space; int32 below 2 GiB, else int64. Two passes: count, then fill."""
    blocks = _blocks(len(joined) - 1)

    def space(block: slice) -> np.ndarray:  # bool [block + 1]: which bytes are spaces
        return np.frombuffer(joined, np.uint8, block.stop - block.start + 1, block.start) == 32

    def count(block: slice) -> tuple[int, int]:
        s = space(block)
        return np.count_nonzero(s[:-1] & ~s[1:]), np.count_nonzero(~s[:-1] & s[1:])

    counts = np.array(_in_threads(count, blocks), np.int64).reshape(-1, 2)
    offsets = np.cumsum(counts, axis=0) - counts  # where each block's starts and ends go
    dtype = np.int32 if len(joined) < 2**31 else np.int64
    starts, ends = np.empty(counts[:, 0].sum(), dtype), np.empty(counts[:, 1].sum(), dtype)

    def fill(index: int) -> None:
        block, (start_at, end_at) = blocks[index], offsets[index]
        s = space(block)
        found = np.flatnonzero(s[:-1] & ~s[1:]) + (block.start + 1)
        starts[start_at : start_at + len(found)] = found
        found = np.flatnonzero(~s[:-1] & s[1:]) + (block.start + 1)
        ends[end_at : end_at + len(found)] = found

    _in_threads(fill, range(len(blocks)))
    return starts, np.subtract(ends, starts, out=ends)


# [n]: the low n bytes of a little-endian uint64; spaces in the other 8 - n.
_MASKS = np.array([(1 << (8 * n)) - 1 for n in range(8)] + [2**64 - 1], np.uint64)
_PADDING = np.uint64(int.from_bytes(b" " * 8, "little")) & ~_MASKS


def _number_tokens(
    joined: bytes, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Numbers the tokens ``joined[starts[i] : starts[i] + lengths[i]]`` (no spaces in them;
    ``joined`` goes on for 8 bytes after the last).

    Returns:
      int32 ``[N]``: each token's id, equal tokens equal ids, ids ``[0, W)`` in order of first
      appearance; int64 ``[W]``: the index of each id's first token.
    """
    if not len(starts):
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    # Bytes 8k..8k+7 of a token as one integer, padded with spaces: no token holds a space, so
    # equal integers mean equal bytes. Tokens longer than 8k bytes then refine their id with
    # their next 8 bytes, as a (previous id, next 8 bytes) pair given a fresh id.
    eight = np.ndarray((len(joined) - 7,), "<u8", joined, strides=(1,))

    def chunk(rows: slice | np.ndarray, skip: int) -> np.ndarray:
        size = np.minimum(lengths[rows] - skip, 8)
        keys = eight[starts[rows] + skip]
        keys &= _MASKS[size]
        keys |= _PADDING[size]
        return keys

    ids = _dense_in_blocks(lambda block: chunk(block, 0), len(starts))
    skip, longer = 8, np.flatnonzero(lengths > 8)
    while longer.size:
        pairs = _dense(ids[longer].astype(np.uint64)).astype(np.uint64) << np.uint64(32)
        pairs |= _dense(chunk(longer, skip)).astype(np.uint64)
        ids[longer] = ids.max() + 1 + _dense(pairs)
        skip += 8
        longer = longer[lengths[longer] > skip]
    first = np.full(ids.max() + 1, len(ids), np.int64)
    blocks = _blocks(len(ids))
    for block in blocks:
        np.minimum.at(first, ids[block], np.arange(block.start, block.stop))
    first = np.sort(first[first < len(ids)])
    number = np.empty(ids.max() + 1, np.int32)
    number[ids[first]] = np.arange(len(first), dtype=np.int32)
    for block in blocks:
        ids[block] = number[ids[block]]
    return ids, first


def _dense_in_blocks(keys: Callable[[slice], np.ndarray], n: int) -> np.ndarray:
    """``_dense`` of ``n`` uint64 keys made block by block (``keys(block)``), in threads."""
    blocks = _blocks(n)
    all_keys = np.empty(n, np.uint64)

    def fill_keys(block: slice) -> np.ndarray:
        all_keys[block] = keys(block)
        return _sorted_distinct(all_keys[block])

    rank = _ranker(_sorted_distinct(np.concatenate(_in_threads(fill_keys, blocks))))
    ranks = np.empty(n, np.int32)

    def fill_ranks(block: slice) -> None:
        ranks[block] = rank(all_keys[block])

    _in_threads(fill_ranks, blocks)
    return ranks


def _dense(keys: np.ndarray) -> np.ndarray:
    """int32 ``[N]``: the rank of each key among the distinct ``keys`` (uint64 ``[N]``), as
    ``np.unique(keys, return_inverse=True)`` numbers them."""
    return _ranker(_sorted_distinct(keys))(keys)


_FIBONACCI = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio, for multiplicative hashing


def _ranker(distinct: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``keys -> int32 ranks`` of the keys among ``distinct`` (sorted uint64, holding them all).

    ``np.searchsorted`` alone, a binary search per key, is slow on millions of keys: a hash table
    of ``distinct`` guesses each key's rank, a comparison checks every guess, and only the keys
    whose slot another key took are searched.
    """
    bits = min(len(distinct).bit_length() + 5, 23)  # 32-64 slots a key, at most 32 MB
    shift = np.uint64(64 - bits)
    table = np.zeros(1 << bits, np.int32)
    table[(distinct * _FIBONACCI) >> shift] = np.arange(len(distinct), dtype=np.int32)

    def rank(keys: np.ndarray) -> np.ndarray:
        guess = table[(keys * _FIBONACCI) >> shift]
        wrong = np.flatnonzero(distinct[guess] != keys)
        guess[wrong] = np.searchsorted(distinct, keys[wrong])
        return guess

    return rank


def _sorted_distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)``, by ``np.sort`` (whose SIMD sort NumPy's unique does not use)."""
    values = np.sort(values)
    keep = np.empty(len(values), bool)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _blocks(n: int) -> list[slice]:
    """``[0, n)`` in slices of ``_BLOCK``."""
    return [slice(low, min(low + _BLOCK, n)) for low in range(0, n, _BLOCK)]


def _in_threads(function: Callable[[_Item], _Result], items: Sequence[_Item]) -> list[_Result]:
    """``[function(item) for item in items]``, on a thread per core: the numpy steps above
    release the GIL, and each block writes only its own slice of the results."""
    if len(items) < 2:
        return [function(item) for item in items]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with concurrent.futures.ThreadPoolExecutor(min(len(items), cores or 1)) as pool:
        return list(pool.map(function, items))


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Words ranked by frequency in the training documents: rank r (1-based) is ``words[r - 1]``.

    Attributes:
      words: the words, most frequent first; equal counts in code-point order.
      counts: how often each word occurs in the training documents.
    """

    words: tuple[str, ...]
    counts: tuple[int, ...]

    @classmethod
    def from_corpus(cls, corpus: Corpus, rows: np.ndarray | None = None) -> Vocabulary:
        """Ranks the words of ``corpus`` (of the documents ``rows`` only, when given)."""
        return _vocabulary(corpus, *_ranked_words(corpus, rows))

    def __len__(self) -> int:
        return len(self.words)

    @functools.cached_property
    def word_index(self) -> dict[str, int]:
        """``{word: rank}``, the layout of ``keras.datasets.imdb.get_word_index()``."""
        return {word: rank for rank, word in enumerate(self.words, start=1)}

    def ranks(self, corpus: Corpus) -> Ragged:
        """int32 ragged ``[N, L_i]``: the rank of every token of ``corpus``; 0 where a word is not
        in this vocabulary."""
        lookup = np.fromiter(
            map(self.word_index.get, corpus.words, itertools.repeat(0)), np.int32, len(corpus.words)
        )
        return Ragged(lookup[corpus.tokens.values], corpus.tokens.lengths)


def rank_corpus(corpus: Corpus, rows: np.ndarray | None = None) -> tuple[Vocabulary, Ragged]:
    """The vocabulary of ``corpus`` and the rank of each of its tokens in it: equal to
    ``Vocabulary.from_corpus(corpus, rows)`` and ``.ranks(corpus)``, without a dict of the words.

    Args:
      corpus: the documents.
      rows: the documents whose words are ranked (the training split); None for all.

    Returns:
      The vocabulary, and int32 ragged ``[N, L_i]`` ranks of every document of ``corpus``, 0 for
      a word that only other documents have.
    """
    ranked, counts = _ranked_words(corpus, rows)
    rank_of = np.zeros(len(corpus.words), np.int32)
    rank_of[ranked] = np.arange(1, len(ranked) + 1, dtype=np.int32)
    vocabulary = _vocabulary(corpus, ranked, counts)
    return vocabulary, Ragged(rank_of[corpus.tokens.values], corpus.tokens.lengths)


def _ranked_words(corpus: Corpus, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """int64 ``[W]``: the ids of the words of documents ``rows`` (all when None) in rank order;
    int64 ``[len(corpus.words)]``: each word's count in those documents."""
    tokens = corpus.tokens if rows is None else corpus.tokens.take(rows)
    counts = np.bincount(tokens.values, minlength=len(corpus.words))
    # By word, then stably by count: (-count, word) order, without a Python key per word.
    seen = sorted(np.flatnonzero(counts).tolist(), key=corpus.words.__getitem__)
    by_word = np.array(seen, np.int64)
    return by_word[np.argsort(-counts[by_word], kind="stable")], counts


def _vocabulary(corpus: Corpus, ranked: np.ndarray, counts: np.ndarray) -> Vocabulary:
    ranked = ranked.tolist()
    return Vocabulary(tuple(map(corpus.words.__getitem__, ranked)), tuple(counts[ranked].tolist()))


@dataclasses.dataclass(frozen=True)
class IndexConvention:
    """Keras' ``load_data`` id arguments, with Keras' defaults.

    Attributes:
      num_words: keep only ids ``< num_words`` (words of rank ``< num_words - index_from``);
        None: ``load_data`` uses the largest id present, as Keras does (so that single id becomes
        ``oov_char``); ``encode`` keeps every word.
      skip_top: also cut ids ``< skip_top`` (this includes ``start_char`` when ``skip_top >
        start_char``, as in Keras).
      start_char: the id that starts every sequence; None for none.
      oov_char: the id that replaces cut and unknown words; None drops them instead.
      index_from: word ids are ``rank + index_from``; reserved ids are ``<= index_from``.
    """

    num_words: int | None = None
    skip_top: int = 0
    start_char: int | None = 1
    oov_char: int | None = 2
    index_from: int = 3

    def __post_init__(self):
        for name in ("num_words", "skip_top", "start_char", "oov_char", "index_from"):
            value = getattr(self, name)
            if value is None and name in ("num_words", "start_char", "oov_char"):
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))  # numpy integers too, as Keras takes them
        if not self.num_words:  # Keras: a falsy num_words means the largest id present
            object.__setattr__(self, "num_words", None)
        if self.index_from < 0 or self.skip_top < 0:
            raise ValueError(
                f"index_from and skip_top must be >= 0, got {self.index_from} and {self.skip_top}"
            )
        for name in ("start_char", "oov_char"):
            char = getattr(self, name)
            if char is not None and not 0 <= char <= self.index_from:
                raise ValueError(
                    f"{name}={char} must be in [0, index_from={self.index_from}]: ids above "
                    "index_from are words"
                )
        if self.num_words is not None and self.num_words <= self.index_from + 1:
            raise ValueError(
                f"num_words={self.num_words} leaves no word: word ids start at index_from + 1 = "
                f"{self.index_from + 1} and only ids < num_words are kept"
            )

    def sequence_lengths(self, token_lengths: np.ndarray) -> np.ndarray:
        """Lengths of the id sequences of documents with ``token_lengths`` tokens (before words
        are dropped by ``oov_char=None``)."""
        return token_lengths + (self.start_char is not None)


def short_rows(
    token_lengths: np.ndarray, maxlen: int | None, convention: IndexConvention
) -> np.ndarray:
    """bool ``[N]``: the documents Keras' ``load_data(maxlen=...)`` keeps.

    Keras drops (it does not truncate) every sequence of ``maxlen`` ids or more, counting
    ``start_char``; None keeps all. Use ``pad_sequences`` to truncate.
    """
    check_maxlen(maxlen)
    if maxlen is None:
        return np.ones(len(token_lengths), bool)
    return convention.sequence_lengths(token_lengths) < maxlen


def check_maxlen(maxlen: int | None) -> None:
    """``load_data``'s ``maxlen`` is None or >= 1."""
    if maxlen is not None and maxlen < 1:
        raise ValueError(f"maxlen must be >= 1 (or None to keep every sequence), got {maxlen}")


def encode_splits(
    ranks: Sequence[Ragged], vocabulary_size: int, convention: IndexConvention
) -> list[Ragged]:
    """Ranks to ids, as Keras' ``load_data`` does after shuffling and dropping long sequences.

    Args:
      ranks: the splits (train, test, ...), each int32 ragged ``[N, L_i]`` of ranks, 0 for a word
        not in the vocabulary.
      vocabulary_size: the number of ranked words.
      convention: the id arguments. With ``num_words=None`` the cut is the largest id over all
        splits, as in Keras.

    Returns:
      int32 ragged ``[N, L'_i]`` ids per split.
    """
    c = convention
    ids = [_shift(r, c) for r in ranks]
    num_words = c.num_words or max(int(i.values.max(initial=0)) for i in ids)
    last_word = c.index_from + vocabulary_size
    if max(c.skip_top, c.index_from + 1) >= min(num_words, last_word + 1):
        raise ValueError(
            f"no word survives num_words={c.num_words} (cut at {num_words}) and "
            f"skip_top={c.skip_top}: word ids run from {c.index_from + 1} to {last_word}"
        )
    return [_cut(i, num_words, c) for i in ids]


def encode(
    texts: Iterable[str | bytes],
    vocabulary: Vocabulary,
    convention: IndexConvention = IndexConvention(),
) -> np.ndarray:
    """New texts to id sequences, as the loaders encode their data.

    Returns:
      object ``[N]`` of int32 ``[L_i]``. ``num_words=None`` keeps every word of the vocabulary.
    """
    ranks = vocabulary.ranks(tokenize_corpus(texts))
    num_words = convention.num_words or convention.index_from + len(vocabulary) + 1
    return _cut(_shift(ranks, convention), num_words, convention).to_arrays()


def decode(
    ids: Iterable[int], vocabulary: Vocabulary, convention: IndexConvention = IndexConvention()
) -> str:
    """Ids back to words joined by spaces: padding (0) is skipped, ``start_char`` and ``oov_char``
    read ``<start>`` and ``<oov>``, and an id that is no word ``<?>``.

    >>> vocabulary = Vocabulary(("the", "movie"), (2, 1))
    >>> decode([0, 0, 1, 4, 2, 5], vocabulary)
    '<start> the <oov> movie'
    """
    c = convention
    words = []
    for i in map(int, ids):
        rank = i - c.index_from
        if i == c.start_char:
            words.append("<start>")
        elif i == c.oov_char:
            words.append("<oov>")
        elif i == 0:
            continue
        elif 1 <= rank <= len(vocabulary):
            words.append(vocabulary.words[rank - 1])
        else:
            words.append("<?>")
    return " ".join(words)


@dataclasses.dataclass(frozen=True, eq=False)
class TextDataset:
    """A loaded text classification dataset: what Keras' ``load_data`` returns, and its vocabulary.

    Attributes:
      x_train: object ``[N_train]`` of int32 ``[L_i]`` id sequences.
      y_train: int32 ``[N_train]`` labels in ``[0, len(label_names))``.
      x_test: object ``[N_test]`` of int32 ``[L_i]``.
      y_test: int32 ``[N_test]``.
      vocabulary: the training-set vocabulary the ids index.
      convention: the id arguments the sequences were encoded with.
      label_names: the class names, indexed by label.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    vocabulary: Vocabulary
    convention: IndexConvention
    label_names: tuple[str, ...]

    def decode(self, ids: Iterable[int]) -> str:
        """``decode`` with this dataset's vocabulary and convention."""
        return decode(ids, self.vocabulary, self.convention)

    @classmethod
    def from_arrays(cls, arrays: cache.Arrays, convention: IndexConvention) -> TextDataset:
        """The dataset stored by ``dataset_arrays``."""
        return cls(
            Ragged(arrays["train_ids"], arrays["train_lengths"]).to_arrays(),
            arrays["train_labels"],
            Ragged(arrays["test_ids"], arrays["test_lengths"]).to_arrays(),
            arrays["test_labels"],
            Vocabulary(cache.strings_from_array(arrays["words"]), tuple(arrays["counts"].tolist())),
            convention,
            cache.strings_from_array(arrays["label_names"]),
        )


def dataset_arrays(
    train: tuple[Ragged, np.ndarray],
    test: tuple[Ragged, np.ndarray],
    vocabulary: Vocabulary,
    label_names: Sequence[str],
) -> cache.Arrays:
    """A dataset as plain arrays for the cache (no pickled objects); ``TextDataset.from_arrays``
    restores it.

    Args:
      train: ``(ids, labels)``: int32 ragged ``[N, L_i]`` ids and ``[N]`` labels.
      test: the same for the test split.
      vocabulary: the vocabulary the ids index.
      label_names: the class names, indexed by label.
    """
    return {
        "train_ids": train[0].values,
        "train_lengths": train[0].lengths,
        "train_labels": np.asarray(train[1], np.int32),
        "test_ids": test[0].values,
        "test_lengths": test[0].lengths,
        "test_labels": np.asarray(test[1], np.int32),
        "words": cache.strings_to_array(vocabulary.words),
        "counts": np.asarray(vocabulary.counts, np.int64),
        "label_names": cache.strings_to_array(label_names),
    }


def _shift(ranks: Ragged, c: IndexConvention) -> Ragged:
    """Keras' ``[start_char] + [w + index_from for w in x]``; unknown words (rank 0) become -1,
    below every kept window."""
    if c.index_from + int(ranks.values.max(initial=0)) > np.iinfo(np.int32).max:
        raise ValueError(
            f"index_from={c.index_from} puts word ids beyond the int32 range of the sequences; "
            "use a smaller index_from"
        )
    values = np.where(ranks.values > 0, ranks.values + c.index_from, -1).astype(np.int32)
    if c.start_char is None:
        return Ragged(values, ranks.lengths)
    return Ragged(np.insert(values, ranks.offsets[:-1], c.start_char), ranks.lengths + 1)


def _cut(ids: Ragged, num_words: int, c: IndexConvention) -> Ragged:
    """Keras' ``w if skip_top <= w < num_words else oov_char`` (or drop ``w`` if oov_char None)."""
    kept = (ids.values >= c.skip_top) & (ids.values < num_words)
    if c.oov_char is not None:
        return Ragged(np.where(kept, ids.values, c.oov_char).astype(np.int32), ids.lengths)
    rows = np.repeat(np.arange(ids.num_rows), ids.lengths)
    return Ragged(ids.values[kept], np.bincount(rows[kept], minlength=ids.num_rows))
