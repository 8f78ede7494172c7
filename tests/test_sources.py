"""Where datasets are read and written: a data dir someone named is never written unless the
caller asks (``prepare=True``), for root too; damaged data and caches give one clear message."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from caches import fresh_cache
from data_reference import write_reuters_archive

from rnnjax.data import DatasetNotFoundError, cache, imdb, reuters

pytest_plugins = ["data_fixtures"]  # imdb_data_dir
REPO = Path(__file__).resolve().parents[1]


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` with its mode, size and modification time."""
    entries = {}
    for path in [root, *root.rglob("*")]:
        stat = path.lstat()
        entries[str(path.relative_to(root))] = (stat.st_mode, stat.st_size, stat.st_mtime_ns)
    return entries


@pytest.fixture
def shared(imdb_data_dir, tmp_path):
    """A directory shaped like ../shared: a TFDS data dir with IMDB prepared, the Reuters archive
    beside it, and (unlike ../shared) ordinary write permissions, as a careless copy would have."""
    root = tmp_path / "shared"
    shutil.copytree(imdb_data_dir, root / "data" / "tensorflow_datasets")
    write_reuters_archive(root / "data" / reuters.Reuters21578.ARCHIVE)
    return root


def test_a_named_data_dir_is_read_but_never_written(shared, tmp_path, monkeypatch):
    if os.geteuid() == 0:
        print("running as root: permission bits would not have stopped a write")
    tfds_dir, archive_dir = shared / "data" / "tensorflow_datasets", shared / "data"
    before = snapshot(shared)
    assert len(imdb.load(data_dir=tfds_dir, cache_dir=tmp_path / "cache").x_train) == 24
    with pytest.raises(DatasetNotFoundError, match=r"only when asked to \(prepare=True"):
        reuters.load(data_dir=tfds_dir, manual_dir=archive_dir, cache_dir=tmp_path / "cache")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
    with pytest.raises(DatasetNotFoundError, match="--prepare"):
        reuters.load(manual_dir=archive_dir, cache_dir=tmp_path / "cache")
    assert snapshot(shared) == before


@pytest.mark.slow
def test_the_cli_leaves_a_named_data_dir_untouched(shared, tmp_path):
    tfds_dir = shared / "data" / "tensorflow_datasets"
    before = snapshot(shared)
    cache = fresh_cache(tmp_path / "cache")
    env = dict(os.environ, TFDS_DATA_DIR=str(tfds_dir), RNNJAX_CACHE_DIR=cache)
    command = [sys.executable, "-m", "experiments.reuters_lstm", "--workdir", str(tmp_path / "run")]
    result = subprocess.run(
        [*command, "--manual-dir", str(shared / "data"), "--epochs", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "--prepare" in result.stderr
    assert snapshot(shared) == before
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("named", ["its folder", "the archive itself"])
def test_prepare_true_writes_where_asked(tmp_path, named):
    archive = tmp_path / "manual" / reuters.Reuters21578.ARCHIVE
    write_reuters_archive(archive)
    manual_dir = archive.parent if named == "its folder" else archive
    data = reuters.load(
        data_dir=tmp_path / "mine", manual_dir=manual_dir, cache_dir=tmp_path, prepare=True
    )
    assert len(data.x_train) and (tmp_path / "mine" / "reuters21578").is_dir()


def test_the_default_data_dir_is_prepared_without_asking(tmp_path, monkeypatch):
    """TFDS' own default (~/tensorflow_datasets, nothing named) is the user's to fill."""
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    write_reuters_archive(tmp_path / "manual" / reuters.Reuters21578.ARCHIVE)
    reuters.load(manual_dir=tmp_path / "manual", cache_dir=tmp_path / "cache")
    assert (tmp_path / "tensorflow_datasets" / "reuters21578").is_dir()


def test_a_damaged_shard_names_the_file_and_the_fix(imdb_data_dir, tmp_path):
    data_dir = tmp_path / "tfds"
    shutil.copytree(imdb_data_dir, data_dir)
    shard = next(data_dir.glob("imdb_reviews/plain_text/1.0.0/*-train.array_record*"))
    content = bytearray(shard.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 64] = bytes(b ^ 0xFF for b in content[middle : middle + 64])
    shard.write_bytes(bytes(content))
    with pytest.raises(ValueError) as error:
        imdb.load(data_dir=data_dir, cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert str(shard) in message and "prepare=True" in message and "\n" not in message


def _rewrite_records(shard: Path, change) -> None:
    """Rewrites an array_record shard with ``change(example)`` applied to its 6th record."""
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
    from tensorflow_datasets.proto import tf_example_pb2

    reader = ArrayRecordReader(str(shard))
    records = reader.read_all()
    reader.close()
    example = tf_example_pb2.Example.FromString(records[5])
    change(example.features.feature)
    records[5] = example.SerializeToString()
    writer = ArrayRecordWriter(str(shard), "group_size:1")
    for record in records:
        writer.write(record)
    writer.close()


def _drop_label(features):
    del features["label"]


def _label_seven(features):
    features["label"].int64_list.value[0] = 7


@pytest.mark.parametrize(
    "damage, detail",
    [
        ("info: not JSON", "damaged dataset_info.json"),
        ("info: no splits", "dataset_info.json"),
        (_drop_label, "lacks a text or a label"),
        (_label_seven, "has label 7, not 0 or 1"),
    ],
    ids=["info-not-json", "info-no-splits", "no-label", "label-7"],
)
def test_damaged_records_and_dataset_info_name_the_fix(imdb_data_dir, tmp_path, damage, detail):
    """Damage that array_record's checksums cannot see (records rewritten whole, the dataset's
    JSON) is one ``ValueError`` naming the fix, and nothing is cached from it."""
    data_dir = tmp_path / "tfds"
    shutil.copytree(imdb_data_dir, data_dir)
    dataset = data_dir / "imdb_reviews" / "plain_text" / "1.0.0"
    info = dataset / "dataset_info.json"
    if damage == "info: not JSON":
        info.write_text('{"name": "imdb_reviews", "splits": [')
    elif damage == "info: no splits":
        info.write_text(info.read_text().replace('"splits"', '"no_splits"'))
    else:
        _rewrite_records(next(dataset.glob("*-test.array_record*")), damage)
    with pytest.raises(ValueError, match=detail) as error:
        imdb.load(data_dir=data_dir, cache_dir=tmp_path / "cache")
    assert "prepare=True" in str(error.value) and "\n" not in str(error.value)
    assert not list((tmp_path / "cache").glob("*.npz"))


@pytest.mark.parametrize("data_dir", ["", "a file", "a file/below"])
def test_a_data_dir_that_cannot_be_a_directory_is_refused(tmp_path, data_dir):
    (tmp_path / "a file").write_text("")
    path = str(tmp_path / data_dir) if data_dir else data_dir
    with pytest.raises(ValueError, match="empty path|cannot be a directory"):
        reuters.load(data_dir=path, prepare=True, cache_dir=tmp_path / "cache")
    assert (tmp_path / "a file").read_text() == ""


def test_a_read_only_dataset_directory_is_not_prepared_into(shared, tmp_path):
    """The write rule checks where the dataset goes too, not only the data dir above it."""
    data_dir = shared / "data" / "tensorflow_datasets"
    target = data_dir / "reuters21578"
    target.mkdir(mode=0o555)
    with pytest.raises(ValueError, match="read-only"):
        reuters.load(data_dir=data_dir, manual_dir=shared / "data", prepare=True)
    assert list(target.iterdir()) == []


def test_an_unwritable_cache_dir_warns_once_and_loads(imdb_data_dir, tmp_path):
    read_only = tmp_path / "cache"
    read_only.mkdir(mode=0o555)  # no write bits: refused for root too
    with pytest.warns(UserWarning, match="cannot write the data cache") as warned:
        first = imdb.load(data_dir=imdb_data_dir, cache_dir=read_only)
        imdb.load(data_dir=imdb_data_dir, cache_dir=read_only, num_words=20)
    assert len(warned) == 1 and len(first.x_train) == 24
    assert list(read_only.iterdir()) == []
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.warns(UserWarning, match="cannot write the data cache"):
        imdb.load(data_dir=imdb_data_dir, cache_dir=not_a_dir / "cache")
    assert cache.writable(tmp_path) and not cache.writable(read_only)


@pytest.fixture
def numpy_huge_pages():
    """numpy's huge-page switch (``rnnjax.data.host_memory``) set on for the test, then restored."""
    switch = np._core.multiarray
    previous = switch._set_madvise_hugepage(True)
    yield switch._get_madvise_hugepage
    switch._set_madvise_hugepage(previous)


def test_datasets_are_built_on_ordinary_pages_unless_the_user_chose(
    imdb_data_dir, tmp_path, monkeypatch, numpy_huge_pages
):
    seen = []
    tokenize = imdb._tokenize
    monkeypatch.setattr(imdb, "_tokenize", lambda d: seen.append(numpy_huge_pages()) or tokenize(d))
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    imdb.load(data_dir=imdb_data_dir, cache_dir=tmp_path / "a")
    assert seen == [False] and numpy_huge_pages()  # off while building, restored after
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    imdb.load(data_dir=imdb_data_dir, cache_dir=tmp_path / "b")
    assert seen == [False, True] and numpy_huge_pages()
