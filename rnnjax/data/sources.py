"""Where the datasets come from: TFDS data dirs in the array_record format, without TensorFlow.

tensorflow-datasets 4.9.10 prepares (``GeneratorBasedBuilder.download_and_prepare`` with
``file_format="array_record"``, ``DownloadManager.download``) and reads (``tfds.data_source``)
array_record datasets with no TensorFlow installed; rnnjax reads the files itself
(``read_split``), which is faster. Three things need TensorFlow or are broken
without it, and this package goes around them:

* ``dl_manager.iter_archive`` / ``extract`` open files with ``tf.io.gfile``: builders here read
  archives with ``tarfile`` (``iter_tar``).
* ``tfds.load`` builds a ``tf.data`` pipeline: loaders here read the array_record shards
  themselves (``read_split``).
* ``DatasetBuilder.code_path`` imports ``importlib_resources``, which tfds only declares for
  Python < 3.9 (tensorflow/datasets#11212), so any builder defined in a package fails to prepare:
  builders here set ``code_path`` themselves.

TFDS writes a dataset into an ``incomplete.*`` directory and renames it when done, deleting it on
failure; a dataset counts as prepared only once its ``dataset_info.json`` is in the final
directory, so a failed or killed preparation is never read.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import os
import socket
import tarfile
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import requests
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordReader
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from tensorflow_datasets.proto import tf_example_pb2, tf_feature_pb2

from rnnjax.data import cache
from rnnjax.data.host_memory import small_pages

# Seconds to wait for a TCP connection before calling a host unreachable. TFDS itself retries a
# failed connection ten times with exponential backoff (about 200 s), too long for an offline user.
CONNECT_TIMEOUT = 5.0


class DatasetNotFoundError(ValueError):
    """A dataset is not prepared in the TFDS data dir and cannot be prepared now."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``data_dir`` if given, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets`` (as TFDS)."""
    if data_dir is None:
        data_dir = os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    if not os.fspath(data_dir):
        raise ValueError("the TFDS data dir is an empty path; name a directory (--data-dir)")
    path = Path(data_dir).expanduser()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(
            f"the TFDS data dir {path} cannot be a directory: {existing} is a file; name a "
            "directory (--data-dir, TFDS_DATA_DIR)"
        )
    return path


def ensure_prepared(
    builder_cls: type[tfds.core.DatasetBuilder],
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    prepare: bool | None = None,
) -> Path:
    """The prepared dataset directory of ``builder_cls``, preparing it first if allowed.

    The rule for writing: rnnjax reads any data dir, but writes a dataset only into one it was
    asked to write. ``prepare=True`` asks; ``prepare=None`` (the default) asks only for TFDS'
    default data dir ``~/tensorflow_datasets``, used when neither ``data_dir`` nor
    ``$TFDS_DATA_DIR`` names one — a data dir someone named (a shared, read-only copy, say) is
    never written unless ``prepare=True`` says so. Permission bits are checked on top, for root
    too: a data dir (or its nearest existing parent) without write bits is never written.

    Args:
      builder_cls: a builder with ``ARCHIVE`` (the file name of its source archive) and ``URL``.
      data_dir: the TFDS data dir; see ``resolve_data_dir``.
      manual_dir: where to look for ``ARCHIVE`` before downloading it; default
        ``<data_dir>/downloads/manual`` (TFDS' default).
      download: whether the network may be used.
      prepare: whether the dataset may be prepared in ``data_dir`` (see above).

    Returns:
      ``<data_dir>/<name>[/<config>]/<version>``, holding ``dataset_info.json`` and the
      array_record shards.

    Raises:
      DatasetNotFoundError: not prepared, and preparing is not allowed, or the archive is not in
        ``manual_dir`` and downloading is off or its host cannot be reached.
      ValueError: prepared in another file format, the data dir is read-only, or the archive is
        corrupt.
    """
    named = data_dir is not None or bool(os.environ.get("TFDS_DATA_DIR"))
    data_dir = resolve_data_dir(data_dir)
    # Without file_format, a builder takes the format of the data already there (or the default).
    target = Path(_builder(builder_cls, data_dir).data_dir)
    if not (target / "dataset_info.json").is_file():
        manual_dir = Path(manual_dir) if manual_dir else data_dir / "downloads" / "manual"
        if manual_dir.name == builder_cls.ARCHIVE and manual_dir.is_file():
            manual_dir = manual_dir.parent  # the archive itself named: its folder is meant
        if not (named is False if prepare is None else prepare):
            raise DatasetNotFoundError(
                _not_found(
                    builder_cls,
                    data_dir,
                    manual_dir,
                    "rnnjax writes into a data dir only when asked to (prepare=True, the CLI's "
                    "--prepare)",
                )
            )
        if not (manual_dir / builder_cls.ARCHIVE).is_file():
            _check_download(builder_cls, data_dir, manual_dir, download)
        _check_writable(builder_cls, data_dir, target)
        builder = builder_cls(data_dir=os.fspath(data_dir), file_format="array_record")
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
            )
        except (requests.exceptions.RequestException, tfds.download.DownloadError) as e:
            raise DatasetNotFoundError(
                _not_found(builder_cls, data_dir, manual_dir, f"downloading failed: {e}")
            ) from e
    file_format = json.loads((target / "dataset_info.json").read_text()).get("fileFormat")
    if file_format != "array_record":
        raise ValueError(
            f"{target} holds {builder_cls.name} in the {file_format or 'tfrecord'} format, which "
            "tfds.data_source cannot read; delete that directory (rnnjax then prepares it as "
            "array_record) or point TFDS_DATA_DIR at an array_record copy"
        )
    return target


def cached_dataset(
    builder_cls: type[tfds.core.DatasetBuilder],
    params: Mapping[str, Any],
    tokenize: Callable[[Path], cache.Arrays],
    encode: Callable[[cache.Arrays], cache.Arrays],
    *,
    data_dir: str | os.PathLike[str] | None,
    manual_dir: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    download: bool,
    prepare: bool | None = None,
    cache_encoded: bool = True,
) -> cache.Arrays:
    """A dataset's encoded arrays, through two cache levels keyed by the prepared data's identity.

    Args:
      builder_cls: the dataset's builder; prepared first if needed (``ensure_prepared``).
      params: every argument that changes ``encode``'s output.
      tokenize: ``data_dir -> corpus arrays``, the slow part; cached per prepared dataset, so new
        ``params`` only re-run ``encode``.
      encode: ``corpus arrays -> dataset arrays``; cached per prepared dataset and ``params``
        when ``cache_encoded`` (not for an encoding that differs on every call: a shuffle with
        ``seed=None``).
      data_dir, manual_dir, download, prepare: as ``ensure_prepared``.
      cache_dir: as ``cache.cached``.
    """
    prepared = ensure_prepared(builder_cls, data_dir, manual_dir, download, prepare)
    data_dir = resolve_data_dir(data_dir)
    source = {"source": fingerprint(prepared)}

    def build() -> cache.Arrays:
        path = cache.entry_path(cache_dir, f"{builder_cls.name}-corpus", source)
        corpus = cache.read(path, source)
        if corpus is not None:
            return encode(corpus)
        corpus = tokenize(data_dir)
        # A new corpus is written while it is encoded (read-only meanwhile): the write (~50 MB
        # for IMDB; 0.25-0.35 s on the development VM) waits on the disk, not the interpreter.
        for array in corpus.values():
            array.flags.writeable = False
        with concurrent.futures.ThreadPoolExecutor(1) as writer:
            stored = writer.submit(cache.store, path, source, corpus)
            arrays = encode(corpus)
            stored.result()
        return arrays

    with small_pages():  # arrays the size of the corpus, built once (rnnjax.data.host_memory)
        if not cache_encoded:
            return build()
        return cache.cached(builder_cls.name, {**source, **params}, build, cache_dir)


def fingerprint(directory: Path) -> list[Any]:
    """The identity of a prepared dataset: its resolved path and each file's name, size, mtime."""
    files = sorted(p for p in directory.iterdir() if p.is_file())
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return [os.fspath(directory.resolve()), stats]


def read_split(
    builder_cls: type[tfds.core.DatasetBuilder], split: str, data_dir: Path
) -> Iterator[Mapping[str, tf_feature_pb2.Feature]]:
    """Every record of a prepared split, in file order, as its ``tf.train.Example`` features.

    A record is ``{name: feature}``; a feature's values are ``feature.bytes_list.value``,
    ``.int64_list.value`` or ``.float_list.value``. The shards are read with ``array_record``'s
    reader and the records parsed with protobuf, one at a time: TFDS' ``data_source`` does the
    same and then decodes every record into numpy, which took twice as long again.

    Raises:
      ValueError: a file of the split is damaged (named, with how to prepare it again).
    """
    builder = _builder(builder_cls, data_dir)
    try:
        paths = [os.fspath(p) for p in builder.info.splits[split].filepaths]
    except KeyError as error:
        raise damaged(builder_cls, split, data_dir, f"its dataset_info.json: {error}") from None
    for path in paths:
        try:
            reader = ArrayRecordReader(path)
            try:
                records = reader.read_all()
            finally:
                reader.close()
            for record in records:
                yield tf_example_pb2.Example.FromString(record).features.feature
        except (RuntimeError, OSError, DecodeError) as error:
            raise damaged(builder_cls, split, data_dir, f"{path}: {error}") from None


def damaged(
    builder_cls: type[tfds.core.DatasetBuilder], split: str, data_dir: Path, detail: str
) -> ValueError:
    """The error for a prepared split that cannot be read as written (``detail``: where, why)."""
    directory = _builder(builder_cls, data_dir).data_dir
    return ValueError(
        f"the prepared {builder_cls.name} {split} split is damaged ({detail}); delete {directory} "
        "and load again with prepare=True (--prepare) to prepare it from the archive, or point "
        "TFDS_DATA_DIR at an intact copy"
    )


def _builder(
    builder_cls: type[tfds.core.DatasetBuilder], data_dir: Path
) -> tfds.core.DatasetBuilder:
    """The builder over ``data_dir``; it reads the prepared dataset's ``dataset_info.json``."""
    try:
        return builder_cls(data_dir=os.fspath(data_dir))
    except (json_format.ParseError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"the prepared {builder_cls.name} in {data_dir} has a damaged dataset_info.json "
            f"({type(error).__name__}: {' '.join(str(error).split())[:200]}); delete that "
            "dataset's directory and load again with prepare=True (--prepare), or point "
            "TFDS_DATA_DIR at an intact copy"
        ) from None


def archive_path(dl_manager: tfds.download.DownloadManager, archive: str, url: str) -> Path:
    """``archive`` from the manual dir when it is there, else ``url`` downloaded by TFDS."""
    try:
        manual = Path(dl_manager.manual_dir) / archive
    except AssertionError:  # TFDS' answer for a manual dir that is missing or empty
        manual = None
    if manual is not None and manual.is_file():
        return manual
    return Path(dl_manager.download(url))


def iter_tar(archive: Path, wanted: Callable[[str], Any]) -> Iterator[tuple[str, bytes]]:
    """``(member name, content)`` of the regular files whose name is ``wanted``, in archive order.

    Raises:
      ValueError: the archive is not a readable (optionally compressed) tar file.
    """
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                if member.isfile() and wanted(member.name):
                    yield member.name, tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(
            f"corrupt archive {archive} ({type(e).__name__}: {e}); replace or delete it, then "
            "load again"
        ) from e


def _check_download(
    builder_cls: type[tfds.core.DatasetBuilder], data_dir: Path, manual_dir: Path, download: bool
) -> None:
    if not download:
        raise DatasetNotFoundError(
            _not_found(builder_cls, data_dir, manual_dir, "downloading is off")
        )
    url = urllib.parse.urlsplit(builder_cls.URL)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname):
        url = urllib.parse.urlsplit(proxy)  # requests will connect to the proxy, so probe that
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise DatasetNotFoundError(
            _not_found(builder_cls, data_dir, manual_dir, f"cannot reach {url.hostname}: {e}")
        ) from e


def _check_writable(
    builder_cls: type[tfds.core.DatasetBuilder], data_dir: Path, target: Path
) -> None:
    """Refuses a data dir (or a directory of it the dataset goes into) without write permission
    bits, even where the OS would not (root)."""
    if not (cache.writable(data_dir) and cache.writable(target)):
        raise ValueError(
            f"cannot prepare {builder_cls.name} in the read-only TFDS data dir {data_dir}; pass "
            "data_dir= (or set TFDS_DATA_DIR to) a writable directory to prepare it there"
        )


def _not_found(
    builder_cls: type[tfds.core.DatasetBuilder], data_dir: Path, manual_dir: Path, reason: str
) -> str:
    return (
        f"{builder_cls.name} is not prepared in the TFDS data dir {data_dir} and {reason}. "
        f"Set TFDS_DATA_DIR (or pass data_dir=, the CLI's --data-dir) to a data dir where it is "
        f"prepared in the array_record format, or prepare it into a writable one with "
        f"prepare=True (--prepare): with network access that downloads {builder_cls.URL}; "
        f"offline, put {builder_cls.ARCHIVE} in {manual_dir} (or pass manual_dir=, "
        f"--manual-dir). No TensorFlow is needed."
    )
