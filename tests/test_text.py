"""The tokenizer rule, frequency ranking, and every Keras index parameter against a literal
transcription of Keras' load_data."""

import contextlib
import dataclasses
import re
import string

import chex
import numpy as np
import pytest
from data_reference import (
    KERAS_FILTERS,
    keras_cut,
    keras_shift,
    reference_tokenize,
    reference_word_index,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnjax.data import text as text_module
from rnnjax.data.sequences import Ragged
from rnnjax.data.text import (
    LINE_BREAK,
    TOKEN_PATTERN,
    IndexConvention,
    TextDataset,
    Vocabulary,
    dataset_arrays,
    decode,
    encode,
    encode_splits,
    rank_corpus,
    short_rows,
    tokenize,
    tokenize_corpus,
)


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("Don't!<br /><br />It's GREAT, 10/10.", ["don't", "it's", "great", "10", "10"]),
        ("one<BR>two<br/>three<br  />four", ["one", "two", "three", "four"]),
        ("e-mail: me@example.com (maybe)", ["e", "mail", "me", "example", "com", "maybe"]),
        ("a'b `quoted` [x]{y}|z~^_", ["a'b", "quoted", "x", "y", "z"]),
        ("tab\tnew\nline\r\nnbsp\xa0end", ["tab", "new", "line", "nbsp", "end"]),
        ("ÉTÉ Straße naïve", ["été", "straße", "naïve"]),
        ("...!!! ,", []),
        (b"Bytes are UTF-8: caf\xc3\xa9", ["bytes", "are", "utf", "8", "café"]),
    ],
)
def test_tokenize_literal_examples(text, tokens):
    assert tokenize(text) == tokens


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_tokenize_equals_documented_regex(text):
    assert tokenize(text) == TOKEN_PATTERN.findall(LINE_BREAK.sub(" ", text).lower())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(list("abcXYZ019' ") + list(KERAS_FILTERS) + ["<br />", "<BR/>"])).map(
        "".join
    )
)
def test_tokenize_equals_keras_text_to_word_sequence_on_ascii(text):
    assert tokenize(text) == reference_tokenize(text)


def reference_corpus(texts):
    """``tokenize`` per document, tokens numbered by first appearance in a dict."""
    numbers, tokens = {}, []
    for text in texts:
        tokens.append([numbers.setdefault(t, len(numbers)) for t in tokenize(text)])
    return tokens, tuple(numbers)


def assert_corpus_is_reference(texts):
    corpus = tokenize_corpus(texts)
    tokens, words = reference_corpus(texts)
    assert corpus.words == words
    assert [row.tolist() for row in corpus.tokens.to_arrays()] == tokens
    chex.assert_type([corpus.tokens.values, corpus.tokens.lengths], [np.int32, np.int64])


# Characters where the corpus path differs from per-document ``tokenize`` if anything is off:
# Unicode and ASCII-control whitespace (also inside a line break), NUL (a token "a" vs "a\0"),
# case pairs, and letters that make tokens longer than 8 and 16 bytes.
TRICKY = ["a", "b", "B", "r", "R", "<", "/", ">", " ", "\x00", "\x1c", "\x1f", "\x85", "\xa0",
          "\u2028", "\u3000", "\t", "\n", "'", ".", "é", "É", "ß", "İ", "K", "ǅ", "\U0001f600",
          "<br />", "<BR\xa0/>", "<br\x1c>", "abcdefgh", "abcdefghijklmnop", "x" * 23]  # fmt: skip


@contextlib.contextmanager
def block_size(size):
    saved, text_module._BLOCK = text_module._BLOCK, size
    try:
        yield
    finally:
        text_module._BLOCK = saved


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(TRICKY), max_size=12).map("".join), max_size=6),
    st.booleans(),
    st.sampled_from([1, 2, 3, 8, 1 << 20]),
)
def test_tokenize_corpus_is_tokenize_per_document(texts, as_bytes, block):
    with block_size(block):  # small blocks split tokens, documents and spans between blocks
        assert_corpus_is_reference([t.encode() for t in texts] if as_bytes else texts)


def test_tokenize_corpus_literal_cases():
    assert_corpus_is_reference([])
    assert_corpus_is_reference(["", "...", ""])
    corpus = tokenize_corpus(["b a\x00 a", "", "A!a abcdefghij abcdefghik abcdefgh abcdefgh\x00"])
    assert corpus.words == ("b", "a\x00", "a", "abcdefghij", "abcdefghik", "abcdefgh",
                            "abcdefgh\x00")  # fmt: skip
    assert corpus.tokens.lengths.tolist() == [3, 0, 6]
    assert corpus.tokens.values.tolist() == [0, 1, 2, 2, 2, 3, 4, 5, 6]
    with pytest.raises(UnicodeDecodeError):
        tokenize_corpus([b"ok", b"\xff"])


def test_dense_ranks_as_np_unique_also_where_hash_slots_collide():
    rng = np.random.default_rng(0)
    pool = np.concatenate(
        [
            rng.integers(0, 2**64 - 1, 150_000, np.uint64, endpoint=True),
            np.arange(50_000, dtype=np.uint64) << np.uint64(40),  # one pattern, many keys
            np.array([0, 2**64 - 1], np.uint64),
        ]
    )
    keys = rng.choice(pool, 400_000)
    ranks = text_module._dense(keys)
    np.testing.assert_array_equal(ranks, np.unique(keys, return_inverse=True)[1])
    assert ranks.dtype == np.int32


def test_non_ascii_spaces_are_this_pythons_whitespace():
    every = "".join(map(chr, range(0x80, 0x110000)))
    found = "".join(text_module._NON_ASCII_SPACE.findall(every))
    assert found == "".join(c for c in every if c.isspace())


def test_no_character_lower_cases_into_the_ascii_rule():
    """What lets ``tokenize_corpus`` fold non-ASCII documents' bytes after ``str.lower``: no
    character lower-cases to an ASCII capital, to whitespace (unless it is whitespace), or to a
    character of a line break, and no other character matches a line break's letters."""
    rule = set(string.ascii_uppercase + "<>/brBR")
    for code in range(0x80, 0x110000):
        c = chr(code)
        lowered = c.lower()
        assert not rule & set(lowered), hex(code)
        assert c.isspace() or not any(x.isspace() for x in lowered), hex(code)
        assert not re.fullmatch("[br]", c, re.IGNORECASE), hex(code)


def test_vocabulary_ranks_by_count_then_code_point():
    corpus = tokenize_corpus(["b a c", "a b", "d", "zz zz a"])
    vocabulary = Vocabulary.from_corpus(corpus)
    assert vocabulary.words == ("a", "b", "zz", "c", "d")  # a:3, b:2, zz:2, c:1, d:1
    assert vocabulary.counts == (3, 2, 2, 1, 1)
    assert vocabulary.word_index == {"a": 1, "b": 2, "zz": 3, "c": 4, "d": 5}
    train_only = Vocabulary.from_corpus(corpus, np.array([1, 2]))
    assert train_only.words == ("a", "b", "d")
    ranks = train_only.ranks(corpus)
    assert [r.tolist() for r in ranks.to_arrays()] == [[2, 1, 0], [1, 2], [3], [0, 0, 1]]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from("the a film bad good it is".split()), max_size=8), max_size=10
    ),
    st.randoms(use_true_random=False),
)
def test_vocabulary_is_the_reference_ranking_in_any_document_order(docs, rng):
    shuffled = list(docs)
    rng.shuffle(shuffled)
    vocabulary = Vocabulary.from_corpus(tokenize_corpus(" ".join(d) for d in docs))
    assert vocabulary.word_index == reference_word_index(docs)
    assert Vocabulary.from_corpus(tokenize_corpus(" ".join(d) for d in shuffled)) == vocabulary


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from("the a film bad good it is".split()), max_size=8), max_size=10
    ),
    st.data(),
)
def test_ranked_corpus_is_the_reference_ranking_of_its_training_rows(docs, data):
    rows = data.draw(
        st.lists(st.sampled_from(range(len(docs))), unique=True) if docs else st.just([])
    )
    vocabulary, ranks = rank_corpus(tokenize_corpus(" ".join(d) for d in docs), np.array(rows, int))
    word_index = reference_word_index([docs[r] for r in rows])
    assert vocabulary.word_index == word_index
    chex.assert_type(ranks.values, np.int32)
    assert [r.tolist() for r in ranks.to_arrays()] == [
        [word_index.get(w, 0) for w in d] for d in docs
    ]


@pytest.mark.parametrize("num_words, index_from", [(4, 3), (1, 3), (1, 0)])
def test_num_words_that_leaves_no_word_is_rejected(num_words, index_from):
    with pytest.raises(ValueError, match="leaves no word"):
        IndexConvention(num_words=num_words, index_from=index_from, start_char=None, oov_char=None)


def test_the_convention_takes_what_keras_takes():
    """Keras reads a falsy ``num_words`` as None and takes numpy integers; floats and bools are
    no ids."""
    assert IndexConvention(num_words=0) == IndexConvention(num_words=None)
    numpy_ints = IndexConvention(*(np.int64(v) for v in (500, 0, 1, 2, 3)))
    assert numpy_ints == IndexConvention(500, 0, 1, 2, 3)
    assert all(type(v) is int for v in dataclasses.astuple(numpy_ints))
    for bad in ({"num_words": 1.5}, {"index_from": True}, {"skip_top": None}):
        with pytest.raises(ValueError, match="must be an integer"):
            IndexConvention(**bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"skip_top": -1}, ">= 0"),
        ({"index_from": -1, "start_char": None, "oov_char": None}, ">= 0"),
        ({"start_char": 4}, "start_char=4"),
        ({"oov_char": -1}, "oov_char=-1"),
    ],
)
def test_index_convention_rejects_bad_ids(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IndexConvention(**kwargs)


@st.composite
def conventions_and_splits(draw):
    vocabulary_size = draw(st.integers(1, 12))
    index_from = draw(st.integers(0, 4))
    reserved = st.one_of(st.none(), st.integers(0, index_from))
    convention = IndexConvention(
        num_words=draw(st.one_of(st.none(), st.integers(index_from + 2, index_from + 16))),
        skip_top=draw(st.integers(0, index_from + vocabulary_size + 2)),
        start_char=draw(reserved),
        oov_char=draw(reserved),
        index_from=index_from,
    )
    rank = st.integers(0, vocabulary_size)
    splits = draw(
        st.lists(st.lists(st.lists(rank, max_size=6), max_size=5), min_size=1, max_size=3)
    )
    return vocabulary_size, convention, splits


@settings(max_examples=300, deadline=None)
@given(conventions_and_splits())
def test_encode_splits_matches_keras(case):
    vocabulary_size, c, splits = case
    as_lists = [[[r or None for r in x] for x in split] for split in splits]
    shifted = keras_shift(as_lists, c.start_char, c.index_from)
    present = [w for split in shifted for x in split for w in x if w is not None]
    num_words = c.num_words or max(present, default=0)
    last_word = c.index_from + vocabulary_size
    keeps_a_word = max(c.skip_top, c.index_from + 1) < min(num_words, last_word + 1)
    ragged = [Ragged.from_rows(split) for split in splits]
    if not keeps_a_word:
        with pytest.raises(ValueError, match="no word survives"):
            encode_splits(ragged, vocabulary_size, c)
        return
    expected = keras_cut(shifted, c.num_words, c.skip_top, c.oov_char)
    out = encode_splits(ragged, vocabulary_size, c)
    for got, want in zip(out, expected, strict=True):
        chex.assert_type(got.values, np.int32)
        assert [x.tolist() for x in got.to_arrays()] == want


def test_each_index_parameter_on_a_literal_case():
    vocabulary = Vocabulary(("the", "film", "was", "bad"), (4, 3, 2, 1))
    text = ["the film was bad, a flop"]  # "a" and "flop" are not in the vocabulary

    def ids(**kwargs):
        return encode(text, vocabulary, IndexConvention(**kwargs))[0].tolist()

    assert ids() == [1, 4, 5, 6, 7, 2, 2]
    assert ids(num_words=6) == [1, 4, 5, 2, 2, 2, 2]
    assert ids(skip_top=5) == [2, 2, 5, 6, 7, 2, 2]
    assert ids(start_char=None) == [4, 5, 6, 7, 2, 2]
    assert ids(oov_char=None, num_words=6) == [1, 4, 5]
    assert ids(index_from=5, start_char=3, oov_char=4) == [3, 6, 7, 8, 9, 4, 4]
    assert ids(index_from=0, start_char=None, oov_char=None) == [1, 2, 3, 4]


def test_decode_inverts_encode():
    corpus_text = ["the film was bad", "the film was good"]
    vocabulary = Vocabulary.from_corpus(tokenize_corpus(corpus_text))
    (ids,) = encode(["The FILM was... bad!"], vocabulary)
    assert decode(ids, vocabulary) == "<start> the film was bad"
    padded = np.concatenate([[0, 0], ids, [2, 99]])
    assert decode(padded, vocabulary) == "<start> the film was bad <oov> <?>"
    c = IndexConvention(start_char=None, oov_char=None, index_from=0)
    assert decode(encode(["good film, bad zebra"], vocabulary, c)[0], vocabulary, c) == (
        "good film bad"
    )


def test_short_rows_is_keras_maxlen_rule():
    lengths = np.array([0, 3, 4, 5])
    assert short_rows(lengths, None, IndexConvention()).tolist() == [True] * 4
    # With start_char the sequence has one more id; Keras keeps len(ids) < maxlen.
    assert short_rows(lengths, 5, IndexConvention()).tolist() == [True, True, False, False]
    assert short_rows(lengths, 5, IndexConvention(start_char=None)).tolist() == [
        True,
        True,
        True,
        False,
    ]
    with pytest.raises(ValueError, match="maxlen must be >= 1"):
        short_rows(lengths, 0, IndexConvention())


def test_dataset_arrays_round_trip():
    vocabulary = Vocabulary(("a", "b"), (2, 1))
    train = (Ragged.from_rows([[1, 4], [1, 5, 4]]), np.array([0, 1]))
    test = (Ragged.from_rows([[1]]), np.array([1]))
    arrays = dataset_arrays(train, test, vocabulary, ["neg", "pos"])
    assert all(a.dtype != object for a in arrays.values())
    data = TextDataset.from_arrays(arrays, IndexConvention())
    assert [x.tolist() for x in data.x_train] == [[1, 4], [1, 5, 4]]
    chex.assert_type([data.y_train, data.y_test], np.int32)
    assert data.vocabulary == vocabulary and data.label_names == ("neg", "pos")
    assert data.decode(data.x_train[1]) == "<start> b a"
