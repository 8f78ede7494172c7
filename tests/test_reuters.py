"""Reuters-21578: SGML parsing, the TF-free builder on a tiny archive, the topic/label rule, load()
against a literal Keras transcription, and the errors."""

import collections
import functools
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_reference import (
    REUTERS_TOPICS,
    add_member,
    keras_reuters_reference,
    reference_tokenize,
    reuters_documents,
    sgml_document,
    write_reuters_archive,
)

from rnnjax.data import DatasetNotFoundError, reuters

pytest_plugins = ["data_fixtures"]  # the reuters_data_dir fixture


def test_parse_sgml_fields_entities_and_text_types():
    sgml = (
        '<!DOCTYPE lewis SYSTEM "lewis.dtd">\n'
        + sgml_document(
            7, ["earn", "acq"], "AT&amp;T &lt;ATT&gt; NET", "Profit\xe9 rose.\n&\\tIt said"
        )
        + sgml_document(8, [], "BRIEF ONLY", "", text_type="BRIEF").replace(
            "<BODY>\n Reuter\n&#3;</BODY>", "Blah blah blah.\n&#3;"
        )
        + sgml_document(
            9, ["money-fx"], "", "RATES 1.5 vs 1.6", text_type="UNPROC", lewis_split="NOT-USED"
        )
    )
    docs = reuters.parse_sgml(sgml)
    assert [d["newid"] for d in docs] == [7, 8, 9]
    assert [d["topics"] for d in docs] == [["earn", "acq"], [], ["money-fx"]]
    assert [d["lewis_split"] for d in docs] == ["TRAIN", "TRAIN", "NOT-USED"]
    assert docs[0]["title"] == "AT&T <ATT> NET"
    assert docs[0]["body"] == "Profit\xe9 rose.\n It said\n Reuter\n "
    assert (docs[1]["title"], docs[1]["body"]) == ("BRIEF ONLY", "")  # untagged text is left out
    assert docs[2]["title"] == "" and docs[2]["body"].split() == ["RATES", "1.5", "vs", "1.6"]


@pytest.mark.parametrize(
    "sgml, message",
    [
        (sgml_document(1, ["earn"], "T", "B").replace("</REUTERS>", ""), "1 <REUTERS> tags but 0"),
        (sgml_document(1, ["earn"], "T", "B").replace(' NEWID="1"', ""), "malformed <REUTERS"),
        (sgml_document(1, ["earn"], "T", "B").replace("<TOPICS>", "<TOPIC>"), "malformed <REUTERS"),
    ],
)
def test_parse_sgml_rejects_malformed_blocks(sgml, message):
    with pytest.raises(ValueError, match=message):
        reuters.parse_sgml(sgml, "reut2-000.sgm")


def test_builder_writes_every_document(reuters_data_dir):
    source = tfds.data_source(reuters.TFDS_NAME, split="train", data_dir=str(reuters_data_dir))
    records = sorted((source[i] for i in range(len(source))), key=lambda r: r["newid"])
    assert [int(r["newid"]) for r in records] == sorted(REUTERS_TOPICS)
    assert [[t.decode() for t in r["topics"]] for r in records] == list(REUTERS_TOPICS.values())
    for record, (_, _, title, body) in zip(records, reuters_documents(), strict=True):
        assert record["title"].decode() == title
        assert record["body"].decode() == body + "\n Reuter\n "


def reference_pool(num_topics):
    """Documents with a topic, newid order; labels: the num_topics most frequent first topics
    (ties by name) numbered by first appearance."""
    docs = [
        (newid, topics[0], title, body)
        for newid, topics, title, body in reuters_documents()
        if topics
    ]
    counts = collections.Counter(first for _, first, _, _ in docs)
    kept = set(sorted(counts, key=lambda t: (-counts[t], t))[:num_topics])
    names = list(dict.fromkeys(first for _, first, _, _ in docs if first in kept))
    pool = [
        (reference_tokenize(title) + reference_tokenize(body) + ["reuter"], names.index(first))
        for _, first, title, body in docs
        if first in kept
    ]
    return pool, tuple(names)


@pytest.mark.parametrize(
    "num_topics, names",
    [
        (46, ("cocoa", "earn", "acq", "grain", "crude", "ship", "tin")),
        (5, ("earn", "acq", "grain", "crude", "ship")),
        (1, ("acq",)),
    ],
)
def test_topic_rule_and_label_numbering(reuters_data_dir, tmp_path, num_topics, names):
    data = reuters.load(
        num_topics=num_topics, data_dir=reuters_data_dir, cache_dir=tmp_path, download=False
    )
    assert data.label_names == names == reference_pool(num_topics)[1]
    labels = np.concatenate([data.y_train, data.y_test])
    counts = collections.Counter(t[0] for t in REUTERS_TOPICS.values() if t)
    assert np.bincount(labels, minlength=len(names)).tolist() == [counts[n] for n in names]


LOAD_CASES = [
    {},
    {"num_words": 12, "test_split": 0.3},
    {"maxlen": 20, "seed": 5},
    {"num_words": 14, "skip_top": 5, "oov_char": None},
    {"start_char": None, "index_from": 1, "oov_char": 1},
    {"num_topics": 5, "seed": 0},
]


@pytest.mark.parametrize("kwargs", LOAD_CASES, ids=[str(k) for k in LOAD_CASES])
def test_load_matches_keras_reference(reuters_data_dir, tmp_path, kwargs):
    kwargs = dict(kwargs)
    pool, _ = reference_pool(kwargs.pop("num_topics", 46))
    (x_train, y_train), (x_test, y_test), word_index = keras_reuters_reference(pool, **kwargs)
    data = reuters.load(
        data_dir=reuters_data_dir,
        cache_dir=tmp_path,
        download=False,
        num_topics=len(set(label for _, label in pool)),
        **kwargs,
    )
    assert data.vocabulary.word_index == word_index
    assert [x.tolist() for x in data.x_train] == x_train
    assert [x.tolist() for x in data.x_test] == x_test
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_test, y_test)


def test_split_sizes_are_keras(reuters_data_dir, tmp_path):
    (x_train, y_train), (x_test, _) = reuters.load_data(
        test_split=0.25, data_dir=reuters_data_dir, cache_dir=tmp_path, download=False
    )
    assert (len(x_train), len(x_test)) == (int(21 * 0.75), 21 - int(21 * 0.75))
    assert x_train.dtype == object and y_train.dtype == np.int32


def test_second_load_is_a_cache_hit(reuters_data_dir, tmp_path, monkeypatch):
    load = functools.partial(
        reuters.load, data_dir=reuters_data_dir, cache_dir=tmp_path, download=False
    )
    first = load(num_words=10)

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt on a hit")

    monkeypatch.setattr(reuters, "_tokenize", fail)
    monkeypatch.setattr(reuters, "_encode", fail)
    again = load(num_words=10)
    assert [x.tolist() for x in again.x_test] == [x.tolist() for x in first.x_test]
    with pytest.raises(AssertionError, match="rebuilt"):
        load(num_words=11)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"test_split": 0.0}, r"\(0, 1\)"),
        ({"test_split": 1.0}, r"\(0, 1\)"),
        ({"test_split": -0.5}, r"\(0, 1\)"),
        ({"test_split": 0.99}, "empty split"),
        ({"maxlen": 2}, "empty split"),
        ({"maxlen": 0}, "maxlen must be >= 1"),
        ({"num_topics": 0}, "num_topics"),
        ({"num_words": 2}, "leaves no word"),
    ],
)
def test_bad_arguments(reuters_data_dir, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        reuters.load(data_dir=reuters_data_dir, cache_dir=tmp_path, download=False, **kwargs)


def test_missing_dataset_offline_names_tfds_data_dir(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="TFDS_DATA_DIR") as error:
        reuters.load(prepare=True, data_dir=tmp_path / "tfds", cache_dir=tmp_path, download=False)
    assert "reuters21578.tar.gz" in str(error.value)
    assert not list((tmp_path / "tfds").rglob("dataset_info.json"))


def test_corrupt_archive_is_a_value_error(tmp_path):
    archive = write_reuters_archive(tmp_path / "manual" / "reuters21578.tar.gz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt archive"):
        reuters.load(
            prepare=True,
            data_dir=tmp_path / "tfds",
            manual_dir=tmp_path / "manual",
            cache_dir=tmp_path,
        )
    assert not list((tmp_path / "tfds").rglob("dataset_info.json"))
    assert not list((tmp_path / "tfds").rglob("incomplete*"))


def test_read_only_data_dir_is_never_written(tmp_path):
    write_reuters_archive(tmp_path / "manual" / "reuters21578.tar.gz")
    (tmp_path / "shared").mkdir(mode=0o555)
    with pytest.raises(ValueError, match="read-only TFDS data dir"):
        reuters.load(
            data_dir=tmp_path / "shared",
            manual_dir=tmp_path / "manual",
            cache_dir=tmp_path,
            prepare=True,  # asked, but the mode bits say no: root is refused too
        )
    assert list((tmp_path / "shared").iterdir()) == []


def test_archive_without_sgml_files_is_a_value_error(tmp_path):
    (tmp_path / "manual").mkdir()
    with tarfile.open(tmp_path / "manual" / "reuters21578.tar.gz", "w:gz") as tar:
        add_member(tar, "README.txt", b"no newswires here")
    with pytest.raises(ValueError, match="no reut2-NNN.sgm"):
        reuters.load(
            prepare=True,
            data_dir=tmp_path / "tfds",
            manual_dir=tmp_path / "manual",
            cache_dir=tmp_path,
        )
