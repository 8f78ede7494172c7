"""Tiny IMDB-like and Reuters-like archives made by the tests, and plain-Python references.

The references transcribe Keras literally (``keras/src/datasets/imdb.py`` and ``reuters.py`` of
Keras 3, ``keras.preprocessing.text.text_to_word_sequence``) on Python lists, independently of
the numpy code under test. Words absent from the vocabulary are ``None`` before the cut and end as
``oov_char`` (or dropped), the one rule rnnjax adds to Keras (whose vocabulary had no unknowns).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import http.server
import io
import os
import random
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# Keras' Tokenizer default, written out here rather than imported from the code under test.
KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'

_WORDS = tuple(
    "the a and of movie film great bad acting plot is was it this not don't loved boring "
    "story good awful fine actor scene music end".split()
)


def keras_text_to_word_sequence(text: str) -> list[str]:
    """Keras' ``text_to_word_sequence(text)`` with its defaults, literally."""
    text = text.lower()
    translate_map = str.maketrans({c: " " for c in KERAS_FILTERS})
    return [w for w in text.translate(translate_map).split(" ") if w]


def reference_tokenize(text: str) -> list[str]:
    """The documented rule for text whose only whitespace is space, tab and newline."""
    return keras_text_to_word_sequence(re.sub(r"<br\s*/?>", " ", text, flags=re.IGNORECASE))


def reference_word_index(docs: list[list[str]]) -> dict[str, int]:
    """Rank 1 = most frequent; equal counts alphabetically."""
    counts = collections.Counter(w for doc in docs for w in doc)
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    return {w: r for r, w in enumerate(ranked, start=1)}


def keras_shift(xs, start_char, index_from):
    """Keras: ``[start_char] + [w + index_from for w in x]`` on rank lists (None = unknown word),
    for a list of splits."""
    shifted = []
    for split in xs:
        if start_char is not None:
            split = [[start_char] + [_add(w, index_from) for w in x] for x in split]
        elif index_from:
            split = [[_add(w, index_from) for w in x] for x in split]
        shifted.append(split)
    return shifted


def _add(w, index_from):
    return None if w is None else w + index_from


def keras_cut(xs, num_words, skip_top, oov_char):
    """Keras: ``num_words`` default (the largest id) and the ``[skip_top, num_words)`` cut."""
    if not num_words:
        # Keras: max(max(x) for x in xs), which fails on an empty sequence; same value otherwise.
        num_words = max(w for split in xs for x in split for w in x if w is not None)

    def keep(w):
        return w is not None and skip_top <= w < num_words

    if oov_char is not None:
        return [[[w if keep(w) else oov_char for w in x] for x in split] for split in xs]
    return [[[w for w in x if keep(w)] for x in split] for split in xs]


def keras_imdb_reference(
    train,
    test,
    word_index,
    *,
    num_words=None,
    skip_top=0,
    maxlen=None,
    seed=113,
    start_char=1,
    oov_char=2,
    index_from=3,
):
    """Keras 3 ``imdb.load_data`` on ``(tokens, label)`` lists in file order."""
    splits = []
    rng = np.random.RandomState(seed)
    for docs in (train, test):
        x = [[word_index.get(w) for w in tokens] for tokens, _ in docs]
        labels = np.array([label for _, label in docs])
        indices = np.arange(len(x))
        rng.shuffle(indices)
        splits.append(([x[i] for i in indices], labels[indices]))
    xs = keras_shift([x for x, _ in splits], start_char, index_from)
    labels = [y for _, y in splits]
    if maxlen:
        kept = [[i for i, x in enumerate(split) if len(x) < maxlen] for split in xs]
        if not kept[0] or not kept[1]:
            raise ValueError("empty split")
        xs = [[split[i] for i in k] for split, k in zip(xs, kept, strict=True)]
        labels = [y[k] for y, k in zip(labels, kept, strict=True)]
    xs = keras_cut(xs, num_words, skip_top, oov_char)
    return (xs[0], labels[0]), (xs[1], labels[1])


def keras_reuters_reference(
    pool,
    *,
    num_words=None,
    skip_top=0,
    maxlen=None,
    test_split=0.2,
    seed=113,
    start_char=1,
    oov_char=2,
    index_from=3,
):
    """Keras 3 ``reuters.load_data`` on a ``(tokens, label)`` pool; the vocabulary is ranked on
    the training part (rnnjax's rule)."""
    rng = np.random.RandomState(seed)
    indices = np.arange(len(pool))
    rng.shuffle(indices)
    pool = [pool[i] for i in indices]
    lengths = [len(tokens) + (start_char is not None) for tokens, _ in pool]
    if maxlen:
        pool = [doc for doc, length in zip(pool, lengths, strict=True) if length < maxlen]
    idx = int(len(pool) * (1 - test_split))
    word_index = reference_word_index([tokens for tokens, _ in pool[:idx]])
    x = [[word_index.get(w) for w in tokens] for tokens, _ in pool]
    (xs,) = keras_cut(keras_shift([x], start_char, index_from), num_words, skip_top, oov_char)
    labels = np.array([label for _, label in pool])
    return (xs[:idx], labels[:idx]), (xs[idx:], labels[idx:]), word_index


def random_text(rng: random.Random, n_words: int, extra: tuple[str, ...] = ()) -> str:
    """Words from a small Zipf-like pool (``extra`` words first) with capitals, punctuation and
    line breaks."""
    pool = extra + _WORDS
    words = rng.choices(pool, weights=[1 / (i + 1) for i in range(len(pool))], k=n_words)
    out = []
    for i, w in enumerate(words):
        w = w.capitalize() if i == 0 or rng.random() < 0.1 else w
        out.append(w + rng.choice(["", "", "", ",", ".", "!", "<br /><br />", " --"]))
    return " ".join(out)


def imdb_reviews(seed: int = 0) -> dict[str, list[tuple[str, str, str]]]:
    """``{split: [(file name, label name, text)]}``: 24 train and 16 test reviews; the test ones
    use words never seen in training too."""
    rng = random.Random(seed)
    reviews = {}
    for split, n, extra in (("train", 24, ()), ("test", 16, ("zebra", "quokka"))):
        reviews[split] = [
            (f"{i}_{rng.randint(1, 10)}.txt", label, random_text(rng, rng.randint(0, 30), extra))
            for i in range(n // 2)
            for label in ("neg", "pos")
        ]
    return reviews


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_imdb_archive(path: Path, reviews: dict[str, list[tuple[str, str, str]]]) -> Path:
    """An ``aclImdb_v1.tar.gz`` lookalike, with members the builder must skip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        add_member(tar, "aclImdb/README", b"not a review")
        add_member(tar, "aclImdb/train/unsup/0_0.txt", b"unlabelled review")
        add_member(tar, "aclImdb/train/pos/._0_9.txt", b"macOS resource fork")
        for split, items in reviews.items():
            for name, label, text in items:
                add_member(tar, f"aclImdb/{split}/{label}/{name}", f"  {text}\n".encode())
    return path


def run_python(code: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter that imports this checkout's ``rnnjax``."""
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)


@contextlib.contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """Serves ``directory`` on localhost; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def sgml_document(
    newid: int,
    topics: list[str],
    title: str,
    body: str,
    *,
    lewis_split: str = "TRAIN",
    text_type: str = "",
) -> str:
    """One ``<REUTERS>`` block in the layout of ``reut2-NNN.sgm``."""
    items = "".join(f"<D>{t}</D>" for t in topics)
    attribute = f' TYPE="{text_type}"' if text_type else ""
    if text_type == "UNPROC":
        text = f"&#2;\n{body}\n&#3;"
    else:
        text = (
            f"&#2;\n<TITLE>{title}</TITLE>\n<DATELINE>    LONDON, March 3 - </DATELINE>"
            f"<BODY>{body}\n Reuter\n&#3;</BODY>"
        )
    return (
        f'<REUTERS TOPICS="{"YES" if topics else "NO"}" LEWISSPLIT="{lewis_split}" '
        f'CGISPLIT="TRAINING-SET" OLDID="{newid + 5000}" NEWID="{newid}">\n'
        f"<DATE>26-FEB-1987 15:01:01.79</DATE>\n<TOPICS>{items}</TOPICS>\n"
        f"<PLACES><D>usa</D></PLACES>\n<PEOPLE></PEOPLE>\n<ORGS></ORGS>\n<EXCHANGES></EXCHANGES>\n"
        f"<COMPANIES></COMPANIES>\n<UNKNOWN> \n&#5;&#5;&#5;C T\n</UNKNOWN>\n"
        f"<TEXT{attribute}>{text}</TEXT>\n</REUTERS>\n"
    )


# Topics of the fixture collection, by newid. First topics: earn x5, acq x5, grain x3, crude x3,
# ship x2, tin x2 (a tie: ship is kept by name when 5 topics are kept), cocoa x1 (but first).
REUTERS_TOPICS = {
    1: ["cocoa"],
    2: [],
    3: ["earn"],
    4: ["acq", "earn"],
    5: ["grain", "wheat"],
    6: ["earn"],
    7: ["crude"],
    8: ["acq"],
    9: ["ship"],
    10: ["earn"],
    11: ["tin"],
    12: ["grain"],
    13: ["acq"],
    14: [],
    15: ["earn", "acq"],
    16: ["crude", "nat-gas"],
    17: ["ship"],
    18: ["acq"],
    19: ["earn"],
    20: ["tin"],
    21: ["crude"],
    22: ["acq"],
    23: ["grain"],
}


def reuters_documents(seed: int = 0) -> list[tuple[int, list[str], str, str]]:
    """``(newid, topics, title, body)`` of the fixture collection."""
    rng = random.Random(seed)
    return [
        (newid, topics, random_text(rng, 4).upper(), random_text(rng, rng.randint(3, 30)))
        for newid, topics in REUTERS_TOPICS.items()
    ]


def write_reuters_archive(path: Path, documents=None) -> Path:
    """A ``reuters21578.tar.gz`` lookalike: two SGML files (latin-1) and the README."""
    documents = documents or reuters_documents()
    path.parent.mkdir(parents=True, exist_ok=True)
    half = len(documents) // 2
    with tarfile.open(path, "w:gz") as tar:
        add_member(tar, "README.txt", b"Reuters-21578 text categorization test collection")
        for name, docs in (
            ("reut2-000.sgm", documents[:half]),
            ("reut2-001.sgm", documents[half:]),
        ):
            sgml = '<!DOCTYPE lewis SYSTEM "lewis.dtd">\n' + "".join(
                sgml_document(newid, topics, title, body) for newid, topics, title, body in docs
            )
            add_member(tar, name, sgml.encode("latin-1"))
    return path
