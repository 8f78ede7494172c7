"""Session fixtures (a pytest plugin: ``pytest_plugins = ["data_fixtures"]``): TFDS data dirs
prepared from the tiny archives of ``data_reference``."""

from pathlib import Path

import pytest
from data_reference import imdb_reviews, write_imdb_archive, write_reuters_archive

from rnnjax.data import imdb, reuters, sources


@pytest.fixture(scope="session")
def imdb_data_dir(tmp_path_factory) -> Path:
    """A TFDS data dir with the fixture reviews prepared as ``imdb_reviews`` (array_record)."""
    root = tmp_path_factory.mktemp("imdb")
    write_imdb_archive(root / "manual" / imdb.ImdbReviews.ARCHIVE, imdb_reviews())
    sources.ensure_prepared(
        imdb.ImdbReviews, root / "tfds", root / "manual", download=False, prepare=True
    )
    return root / "tfds"


@pytest.fixture(scope="session")
def reuters_data_dir(tmp_path_factory) -> Path:
    """A TFDS data dir with the fixture newswires prepared as ``reuters21578``."""
    root = tmp_path_factory.mktemp("reuters")
    write_reuters_archive(root / "manual" / reuters.Reuters21578.ARCHIVE)
    sources.ensure_prepared(
        reuters.Reuters21578, root / "tfds", root / "manual", download=False, prepare=True
    )
    return root / "tfds"
