"""IMDB: the TF-free builder on a tiny archive, load() against a literal Keras transcription, the
loader's cache and every error."""

import functools
import json
import os
import signal
import socket
import sys
import textwrap

import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_reference import (
    http_server,
    imdb_reviews,
    keras_imdb_reference,
    reference_tokenize,
    reference_word_index,
    run_python,
    write_imdb_archive,
)

from rnnjax.data import DatasetNotFoundError, imdb, sources

pytest_plugins = ["data_fixtures"]  # the imdb_data_dir fixture


def read_records(data_dir, split):
    source = tfds.data_source(imdb.TFDS_NAME, split=split, data_dir=str(data_dir), download=False)
    return [source[i] for i in range(len(source))]


def test_builder_writes_every_review_of_the_archive_without_tensorflow(imdb_data_dir):
    info = json.loads(
        (imdb_data_dir / "imdb_reviews/plain_text/1.0.0/dataset_info.json").read_text()
    )
    assert info["fileFormat"] == "array_record"
    assert sorted(s["name"] for s in info["splits"]) == ["test", "train"]
    for split, reviews in imdb_reviews().items():
        records = read_records(imdb_data_dir, split)
        got = sorted((r["text"], int(r["label"])) for r in records)
        want = sorted(
            (text.strip().encode(), ["neg", "pos"].index(label)) for _, label, text in reviews
        )
        assert got == want
    assert "tensorflow" not in sys.modules


LOAD_CASES = [
    {},
    {"num_words": 12},
    {"num_words": 15, "skip_top": 6},
    {"start_char": None},
    {"oov_char": None, "num_words": 10},
    {"index_from": 5, "start_char": 3, "oov_char": 4},
    {"start_char": None, "index_from": 0, "oov_char": None},
    {"maxlen": 12},
    {"seed": 7, "maxlen": 20, "num_words": 9},
]


@pytest.mark.parametrize("kwargs", LOAD_CASES, ids=[str(k) for k in LOAD_CASES])
def test_load_matches_keras_reference(imdb_data_dir, tmp_path, kwargs):
    splits = [
        [
            (reference_tokenize(r["text"].decode()), int(r["label"]))
            for r in read_records(imdb_data_dir, s)
        ]
        for s in ("train", "test")
    ]
    word_index = reference_word_index([tokens for tokens, _ in splits[0]])
    (x_train, y_train), (x_test, y_test) = keras_imdb_reference(*splits, word_index, **kwargs)
    data = imdb.load(data_dir=imdb_data_dir, cache_dir=tmp_path, download=False, **kwargs)
    assert data.vocabulary.word_index == word_index
    assert [x.tolist() for x in data.x_train] == x_train
    assert [x.tolist() for x in data.x_test] == x_test
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_test, y_test)
    chex.assert_type([data.y_train, data.y_test, *data.x_train, *data.x_test], np.int32)
    assert data.label_names == ("neg", "pos")


def test_load_data_has_keras_layout(imdb_data_dir, tmp_path):
    (x_train, y_train), (x_test, y_test) = imdb.load_data(
        num_words=10, data_dir=imdb_data_dir, cache_dir=tmp_path, download=False
    )
    assert x_train.dtype == object and x_train.shape == (24,) and x_test.shape == (16,)
    chex.assert_shape([y_train, y_test], [(24,), (16,)])
    assert all(x[0] == 1 and max(x) < 10 for x in x_train)
    assert sorted(np.bincount(y_train).tolist()) == [12, 12]


def test_maxlen_that_drops_a_whole_split_is_an_error(imdb_data_dir, tmp_path):
    with pytest.raises(ValueError, match="no sequence shorter than maxlen=1"):
        imdb.load(maxlen=1, data_dir=imdb_data_dir, cache_dir=tmp_path, download=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_words": 4}, "leaves no word"),
        ({"maxlen": 0}, "maxlen must be >= 1"),
        ({"num_words": 5, "skip_top": 5}, "no word survives"),
        ({"index_from": 2**31 - 5}, "beyond the int32 range"),
    ],
)
def test_bad_arguments(imdb_data_dir, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        imdb.load(data_dir=imdb_data_dir, cache_dir=tmp_path, download=False, **kwargs)


def test_numpy_scalar_arguments_load_as_the_numbers_they_equal(imdb_data_dir, tmp_path):
    load = functools.partial(imdb.load, data_dir=imdb_data_dir, cache_dir=tmp_path, download=False)
    numpy = load(num_words=np.int64(20), maxlen=np.int32(200), seed=np.int64(7))
    python = load(num_words=20, maxlen=200, seed=7)
    assert [x.tolist() for x in numpy.x_train] == [x.tolist() for x in python.x_train]
    assert len(list(tmp_path.glob("imdb_reviews-*.npz"))) == 2  # the corpus and one encoding


def test_seed_none_shuffles_anew_on_every_load(imdb_data_dir, tmp_path):
    """Keras' ``RandomState(None)``: a fresh order each time, so no shuffled arrays are cached
    (the corpus is)."""
    load = functools.partial(imdb.load, data_dir=imdb_data_dir, cache_dir=tmp_path, download=False)
    orders = {tuple(load(seed=None).y_train.tolist()) for _ in range(4)}
    assert len(orders) > 1
    assert ["-corpus-" in p.name for p in tmp_path.glob("*.npz")] == [True]


def test_second_load_is_a_cache_hit_and_parameters_invalidate(imdb_data_dir, tmp_path, monkeypatch):
    calls = []
    for name in ("_tokenize", "_encode"):
        original = getattr(imdb, name)
        monkeypatch.setattr(
            imdb,
            name,
            functools.partial(
                lambda original, name, *a: calls.append(name) or original(*a), original, name
            ),
        )
    load = functools.partial(imdb.load, data_dir=imdb_data_dir, cache_dir=tmp_path, download=False)
    first = load(num_words=10)
    assert calls == ["_tokenize", "_encode"]
    again = load(num_words=10)
    assert calls == ["_tokenize", "_encode"]  # a hit: nothing rebuilt
    assert [x.tolist() for x in again.x_train] == [x.tolist() for x in first.x_train]
    assert again.vocabulary == first.vocabulary
    load(num_words=11)
    assert calls[2:] == ["_encode"]  # new parameters: re-encoded from the cached corpus
    shard = next((imdb_data_dir / "imdb_reviews/plain_text/1.0.0").glob("*train*"))
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    load(num_words=10)
    assert calls[3:] == ["_tokenize", "_encode"]  # the data changed: everything rebuilt


def test_data_dir_defaults_to_tfds_data_dir(imdb_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(imdb_data_dir))
    assert len(imdb.load(cache_dir=tmp_path, download=False).x_train) == 24


def assert_not_prepared_final(data_dir):
    assert not list((data_dir / "imdb_reviews").rglob("dataset_info.json"))


def assert_not_prepared(data_dir):
    assert_not_prepared_final(data_dir)
    assert not list((data_dir / "imdb_reviews").rglob("incomplete*"))


def test_failed_download_is_not_found_and_prepares_nothing(tmp_path, monkeypatch):
    (tmp_path / "www").mkdir()
    for proxy in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    with http_server(tmp_path / "www") as url:  # serves no archive: HTTP 404
        monkeypatch.setattr(imdb.ImdbReviews, "URL", f"{url}/aclImdb_v1.tar.gz")
        with pytest.raises(DatasetNotFoundError, match="downloading failed.*TFDS_DATA_DIR"):
            imdb.load(prepare=True, data_dir=tmp_path / "tfds", cache_dir=tmp_path)
    assert_not_prepared(tmp_path / "tfds")


def test_missing_dataset_offline_names_tfds_data_dir(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        imdb.load(prepare=True, data_dir=tmp_path / "empty", cache_dir=tmp_path, download=False)
    message = str(error.value)
    assert isinstance(error.value, ValueError)
    for part in (
        "TFDS_DATA_DIR",
        "downloading is off",
        str(tmp_path / "empty"),
        "aclImdb_v1.tar.gz",
        str(tmp_path / "empty" / "downloads" / "manual"),
    ):
        assert part in message
    assert_not_prepared(tmp_path / "empty")


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_host_fails_fast_with_the_same_message(tmp_path, monkeypatch):
    monkeypatch.setattr(imdb.ImdbReviews, "URL", f"http://127.0.0.1:{closed_port()}/a.tar.gz")
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    with pytest.raises(DatasetNotFoundError, match="cannot reach 127.0.0.1.*TFDS_DATA_DIR"):
        imdb.load(prepare=True, data_dir=tmp_path, cache_dir=tmp_path)
    assert_not_prepared(tmp_path)


def test_prepares_from_a_download(tmp_path, monkeypatch):
    write_imdb_archive(tmp_path / "www" / "aclImdb_v1.tar.gz", imdb_reviews(seed=1))
    for proxy in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    with http_server(tmp_path / "www") as url:
        monkeypatch.setattr(imdb.ImdbReviews, "URL", f"{url}/aclImdb_v1.tar.gz")
        data = imdb.load(prepare=True, data_dir=tmp_path / "tfds", cache_dir=tmp_path)
    assert (len(data.x_train), len(data.x_test)) == (24, 16)
    assert sorted(r["text"] for r in read_records(tmp_path / "tfds", "test")) == sorted(
        text.strip().encode() for _, _, text in imdb_reviews(seed=1)["test"]
    )


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x1f\x8b\x08 this is not gzip", "corrupt archive"),
        (b"plain garbage, not a tar file at all" * 20, "corrupt archive"),
        (None, "corrupt archive"),
    ],  # None: a real archive truncated mid-stream
)
def test_corrupt_archive_is_a_value_error_and_prepares_nothing(tmp_path, content, message):
    archive = tmp_path / "manual" / "aclImdb_v1.tar.gz"
    write_imdb_archive(archive, imdb_reviews())
    archive.write_bytes(content if content is not None else archive.read_bytes()[:-300])
    with pytest.raises(ValueError, match=message):
        imdb.load(
            prepare=True,
            data_dir=tmp_path / "tfds",
            manual_dir=tmp_path / "manual",
            cache_dir=tmp_path,
        )
    assert_not_prepared(tmp_path / "tfds")


def test_killed_preparation_is_not_trusted_and_is_redone(tmp_path):
    """A child process is SIGKILLed while TFDS writes the dataset; the next load prepares it."""
    write_imdb_archive(tmp_path / "manual" / "aclImdb_v1.tar.gz", imdb_reviews())
    child = textwrap.dedent(
        f"""
        import os, signal
        from rnnjax.data import imdb, sources

        def dying(archive, wanted, iter_tar=sources.iter_tar):
            for i, member in enumerate(iter_tar(archive, wanted)):
                if i == 5:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield member

        sources.iter_tar = dying
        sources.ensure_prepared(
            imdb.ImdbReviews, {str(tmp_path / "tfds")!r}, {str(tmp_path / "manual")!r}, False, True
        )
        """
    )
    result = run_python(child)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    assert list((tmp_path / "tfds" / "imdb_reviews" / "plain_text").glob("incomplete*"))
    assert_not_prepared_final(tmp_path / "tfds")
    data = imdb.load(
        prepare=True, data_dir=tmp_path / "tfds", manual_dir=tmp_path / "manual", cache_dir=tmp_path
    )
    assert (len(data.x_train), len(data.x_test)) == (24, 16)


def test_archive_without_reviews_is_a_value_error(tmp_path):
    write_imdb_archive(tmp_path / "manual" / "aclImdb_v1.tar.gz", {"train": [], "test": []})
    with pytest.raises(ValueError, match="holds no reviews under aclImdb/train"):
        imdb.load(
            prepare=True,
            data_dir=tmp_path / "tfds",
            manual_dir=tmp_path / "manual",
            cache_dir=tmp_path,
        )
    assert_not_prepared(tmp_path / "tfds")


def test_dataset_in_another_file_format_is_a_value_error(imdb_data_dir, tmp_path):
    prepared = imdb_data_dir / "imdb_reviews/plain_text/1.0.0"
    version_dir = tmp_path / "imdb_reviews/plain_text/1.0.0"
    version_dir.mkdir(parents=True)
    info = json.loads((prepared / "dataset_info.json").read_text())
    info["fileFormat"] = "tfrecord"
    (version_dir / "dataset_info.json").write_text(json.dumps(info))
    (version_dir / "features.json").write_text((prepared / "features.json").read_text())
    with pytest.raises(ValueError, match="tfrecord format"):
        sources.ensure_prepared(imdb.ImdbReviews, tmp_path, download=False)
