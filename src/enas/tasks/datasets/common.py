"""What the dataset loaders share: the in-memory `ImageDataset`, label checks, downloads with a checksum, and the
cache folder a download goes to."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from enas.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class ImageDataset:
    """A labelled image dataset held in memory. Images: uint8 (N, C, H, W) with H == W; labels: int64 (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    class_names: list[str]
    name: str

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            assert x.dtype == torch.uint8 and x.dim() == 4 and x.shape[2] == x.shape[3], (split, x.dtype, x.shape)
            assert y.dtype == torch.int64 and y.shape == (x.shape[0],), (split, y.dtype, y.shape)
        assert self.train_images.shape[1:] == self.test_images.shape[1:]
        assert len(self.class_names) == self.num_classes


def check_labels(labels: np.ndarray, num_classes: int, what: str) -> torch.Tensor:
    """Integer labels in [0, num_classes) -> int64 tensor; anything else is a DataError."""
    if labels.dtype.kind not in "iub":
        raise DataError(f"{what}: labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{what}: labels must lie in [0, {num_classes}), found values from {labels.min()} to {labels.max()}"
        )
    return torch.from_numpy(labels.astype(np.int64))


def download(url: str, dest: Path, md5: str | None) -> None:
    """Fetch ``url`` into ``dest`` atomically, checking the MD5 of the bytes received (when given)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, dest)
    digest = hashlib.md5()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise DataError(
                f"download of {url} has MD5 {digest.hexdigest()}, expected {md5}: the file is corrupted or the URL "
                "points to different data"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"could not download {url} ({exc}); check the network or put the file at {dest}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cache_dir_for(cache_dir: str | os.PathLike | None, default_name: str) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path("~/.cache/enas").expanduser() / default_name


MAX_NPZ_BYTES = 1 << 34  # 16 GiB of arrays in one .npz: more is a malformed (or hostile) header


def read_npz(path: Path, max_bytes: int = MAX_NPZ_BYTES) -> dict[str, np.ndarray | bytes]:
    """The members of a ``.npz`` without pickles and with bounded memory: each ``.npy`` header is read first and
    its announced size checked against ``max_bytes`` (all members together) before anything is allocated; each
    member is inflated as a stream and refused if it holds more than its header announces. A member that is not a
    ``.npy`` file comes back as (at most 1 KiB of) its raw bytes, as numpy returns such members. Every failure is
    one `DataError`."""
    try:
        return _read_npz(path, max_bytes)
    except DataError:
        raise
    except Exception as exc:  # zipfile/format errors, object arrays (pickles are refused)
        raise DataError(f"{path} is not a readable .npz of plain arrays ({type(exc).__name__}: {exc})") from None


def _read_npz(path: Path, max_bytes: int) -> dict[str, np.ndarray | bytes]:
    total, arrays = 0, {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with z.open(info) as f:
                head = f.read(6)
                if not info.filename.endswith(".npy") or head != b"\x93NUMPY":  # not an array: its first bytes
                    arrays[name] = head + f.read(1018)
                    continue
                version = tuple(f.read(2))
                readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                if version not in readers:
                    raise ValueError(f"{name}: .npy format version {version} is not supported")
                shape, fortran, dtype = readers[version](f)
                if dtype.hasobject:
                    raise ValueError(f"{name} is an array of Python objects (pickles are refused)")
                total += math.prod(shape) * dtype.itemsize
                if total > max_bytes:
                    raise DataError(f"{path}: its headers announce more than {max_bytes:,} bytes of arrays ({name} "
                                    f"{shape} {dtype}); that is not a dataset this tool reads")
                data = f.read(math.prod(shape) * dtype.itemsize)
                if len(data) != math.prod(shape) * dtype.itemsize:
                    raise ValueError(f"{name} holds less data than its header announces")
                if f.read(1):
                    raise DataError(f"{path}: {name} holds more data than its header announces {shape} {dtype}")
                array = np.frombuffer(data, dtype=dtype)
                arrays[name] = array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
    return arrays
