"""pad_sequences against a plain-Python transcription of Keras, the seeded split, Ragged."""

import math

import chex
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnjax.data.sequences import Ragged, pad_sequences, train_validation_split

PADDINGS = ["pre", "post"]


def reference_pad(sequences, maxlen, padding, truncating, value):
    """Keras' pad_sequences on lists, one row at a time."""
    if maxlen is None:
        maxlen = max((len(s) for s in sequences), default=0)
    rows = []
    for s in sequences:
        s = list(s)
        kept = s[len(s) - maxlen :] if truncating == "pre" and len(s) > maxlen else s[:maxlen]
        fill = [value] * (maxlen - len(kept))
        rows.append(fill + kept if padding == "pre" else kept + fill)
    return rows


sequences_strategy = st.lists(st.lists(st.integers(-5, 1000), max_size=12), max_size=8)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("truncating", PADDINGS)
@settings(max_examples=60, deadline=None)
@given(
    sequences=sequences_strategy,
    maxlen=st.one_of(st.none(), st.integers(1, 15)),
    value=st.integers(-3, 3),
)
def test_pad_sequences_matches_reference(padding, truncating, sequences, maxlen, value):
    out = pad_sequences(
        sequences, maxlen=maxlen, padding=padding, truncating=truncating, value=value
    )
    expected = reference_pad(sequences, maxlen, padding, truncating, value)
    width = maxlen if maxlen is not None else max(map(len, sequences), default=0)
    chex.assert_shape(out, (len(sequences), width))
    chex.assert_type(out, np.int32)
    assert out.tolist() == expected


@pytest.mark.parametrize(
    "padding, truncating, expected",
    [
        ("pre", "pre", [[0, 0, 1, 2], [4, 5, 6, 7], [0, 0, 0, 0]]),
        ("pre", "post", [[0, 0, 1, 2], [3, 4, 5, 6], [0, 0, 0, 0]]),
        ("post", "pre", [[1, 2, 0, 0], [4, 5, 6, 7], [0, 0, 0, 0]]),
        ("post", "post", [[1, 2, 0, 0], [3, 4, 5, 6], [0, 0, 0, 0]]),
    ],
)
def test_pad_sequences_literal_cases(padding, truncating, expected):
    sequences = [[1, 2], np.array([3, 4, 5, 6, 7]), []]
    out = pad_sequences(sequences, maxlen=4, padding=padding, truncating=truncating)
    assert out.tolist() == expected


def test_pad_sequences_maxlen_none_is_longest_and_value_dtype():
    out = pad_sequences([[1], [2, 3, 4]], value=-1.5, dtype="float32", padding="post")
    chex.assert_shape(out, (2, 3))
    chex.assert_type(out, np.float32)
    assert out.tolist() == [[1.0, -1.5, -1.5], [2.0, 3.0, 4.0]]
    # value is cast to dtype, as numpy (and Keras) do: 0.7 -> 0 for int32.
    assert pad_sequences([[5]], maxlen=2, value=0.7).tolist() == [[0, 5]]


def test_pad_sequences_object_array_and_vectors():
    ragged = Ragged(np.arange(6, dtype=np.int32), np.array([2, 0, 4])).to_arrays()
    assert pad_sequences(ragged, maxlen=3).tolist() == [[0, 0, 1], [0, 0, 0], [3, 4, 5]]
    vectors = [np.ones((2, 3)), np.full((1, 3), 2.0)]
    out = pad_sequences(vectors, maxlen=2, dtype="float32")
    chex.assert_shape(out, (2, 2, 3))
    assert out[1].tolist() == [[0, 0, 0], [2, 2, 2]]
    with pytest.raises(ValueError, match="shape"):
        pad_sequences([np.ones((2, 3)), np.ones((1, 4))])


def test_pad_sequences_empty_input():
    chex.assert_shape(pad_sequences([]), (0, 0))
    chex.assert_shape(pad_sequences([[], []], maxlen=3), (2, 3))


@pytest.mark.parametrize("maxlen", [0, -1])
def test_pad_sequences_rejects_maxlen_below_one(maxlen):
    with pytest.raises(ValueError, match="maxlen must be >= 1"):
        pad_sequences([[1, 2]], maxlen=maxlen)


@pytest.mark.parametrize("argument", ["padding", "truncating"])
def test_pad_sequences_rejects_unknown_side(argument):
    with pytest.raises(ValueError, match=argument):
        pad_sequences([[1]], **{argument: "middle"})


def test_split_sizes_and_indices_are_the_documented_permutation():
    x, y = np.arange(25_000), np.arange(25_000) % 2
    (x_train, y_train), (x_val, y_val) = train_validation_split(x, y)
    assert (len(x_train), len(x_val)) == (20_000, 5_000)
    order = np.random.RandomState(42).permutation(25_000)  # sklearn's ShuffleSplit recipe
    np.testing.assert_array_equal(x_val, order[:5_000])
    np.testing.assert_array_equal(x_train, order[5_000:])
    np.testing.assert_array_equal(y_train, x_train % 2)
    # Keras' sizes for Reuters' 8,982 training newswires: ceil(0.2 * 8982) = 1797 held out.
    (x_train, _), (x_val, _) = train_validation_split(np.arange(8982), np.arange(8982))
    assert (len(x_train), len(x_val)) == (7185, 1797)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 200), fraction=st.floats(0.01, 0.99), seed=st.integers(0, 2**31 - 1))
def test_split_is_a_deterministic_partition(n, fraction, seed):
    n_val = math.ceil(fraction * n)
    x = np.arange(n)
    if n_val in (0, n):
        with pytest.raises(ValueError, match="empty split"):
            train_validation_split(x, x, fraction, seed)
        return
    (a_train, _), (a_val, _) = train_validation_split(x, x, fraction, seed)
    (b_train, _), (b_val, _) = train_validation_split(x, x, fraction, seed)
    np.testing.assert_array_equal(a_train, b_train)
    np.testing.assert_array_equal(a_val, b_val)
    assert len(a_val) == n_val
    np.testing.assert_array_equal(np.sort(np.concatenate([a_train, a_val])), x)


def test_split_depends_on_seed_and_keeps_pairs_of_lists_and_object_arrays():
    x = Ragged(np.arange(30, dtype=np.int32), np.full(10, 3)).to_arrays()
    y = [f"label{i}" for i in range(10)]
    (x1, y1), (xv1, yv1) = train_validation_split(x, y, 0.3, seed=1)
    (x2, _), _ = train_validation_split(x, y, 0.3, seed=2)
    assert x1.dtype == object and isinstance(y1, list) and len(xv1) == len(yv1) == 3
    assert [int(s[0]) // 3 for s in x1] == [int(label[5:]) for label in y1]
    assert [s[0] for s in x1] != [s[0] for s in x2]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_split_rejects_fraction_outside_open_interval(fraction):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        train_validation_split(np.arange(10), np.arange(10), fraction)


def test_split_rejects_mismatched_and_empty():
    with pytest.raises(ValueError, match="y has 3"):
        train_validation_split(np.arange(4), np.arange(3))
    with pytest.raises(ValueError, match="empty split"):
        train_validation_split(np.arange(0), np.arange(0))
    with pytest.raises(ValueError, match="empty split"):
        train_validation_split(np.arange(1), np.arange(1))


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(st.lists(st.integers(0, 99), max_size=6), max_size=8), data=st.data())
def test_ragged_take_and_to_arrays_match_lists(rows, data):
    ragged = Ragged.from_rows(rows)
    chex.assert_type(ragged.values, np.int32)
    assert [r.tolist() for r in ragged.to_arrays()] == rows
    picks = data.draw(st.lists(st.integers(0, max(len(rows) - 1, 0)), max_size=10)) if rows else []
    taken = ragged.take(np.array(picks, np.int64))
    assert [r.tolist() for r in taken.to_arrays()] == [rows[i] for i in picks]
