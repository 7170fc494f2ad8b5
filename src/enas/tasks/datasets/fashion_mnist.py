"""Fashion-MNIST from its four IDX files: the Debian package's copy, a folder of the user's, or a download.

IDX headers, counts and label ranges are checked; any problem becomes a one-line `DataError`. MD5s are checked on
downloads only: local copies (e.g. Debian's re-compressed files) are validated by their contents instead.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from enas.errors import DataError
from enas.tasks.datasets.common import ImageDataset, cache_dir_for, check_labels, download

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


MAX_IDX_BYTES = 1 << 32  # 4 GiB of uint8: 5 million 28x28 images; more is a malformed (or hostile) header


def read_idx(path: Path, expect_dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzip-compressed or not, detected by content) -> array of ``expect_dims`` dims.

    Header: two zero bytes, type code 0x08 (uint8), number of dimensions, then each dimension as a big-endian
    uint32; the data follow and must hold exactly the product of the dimensions. Compressed files are inflated as
    a stream and stopped one byte past the size the header announces (at most `MAX_IDX_BYTES`), so a small file
    that inflates to gigabytes is refused after reading what it claims to hold.
    """
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            raw = f.read(4 + 4 * expect_dims)
            if len(raw) == 4 + 4 * expect_dims and raw[:3] == b"\x00\x00\x08" and raw[3] == expect_dims:
                announced = int(np.prod(struct.unpack(f">{expect_dims}I", raw[4:])))
                if announced > MAX_IDX_BYTES:
                    raise DataError(f"{path}: the IDX header announces {announced:,} bytes of data, more than the "
                                    f"{MAX_IDX_BYTES:,} an image dataset may hold here")
                raw += f.read(announced + 1)  # one byte more than announced: detects surplus data
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupted gzip data ({exc})") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] != expect_dims:
        raise DataError(
            f"{path}: not an IDX file of uint8 with {expect_dims} dimension(s) (magic bytes {raw[:4].hex() or 'none'}, "
            f"expected 000008{expect_dims:02x})"
        )
    header = 4 + 4 * expect_dims
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{expect_dims}I", raw[4:header])
    if len(raw) - header != int(np.prod(dims)):
        held = "more" if len(raw) - header > int(np.prod(dims)) else f"{len(raw) - header}"
        raise DataError(f"{path}: IDX header announces dims {dims} but holds {held} data bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_path(directory: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _fashion_split(directory: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(_idx_path(directory, f"{prefix}-images-idx3-ubyte"), 3)
    labels = read_idx(_idx_path(directory, f"{prefix}-labels-idx1-ubyte"), 1)
    if images.shape[1] != images.shape[2]:
        raise DataError(f"{directory}: {prefix} images must be square, found {images.shape[1]}x{images.shape[2]}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{directory}: {images.shape[0]} {prefix} images but {labels.shape[0]} labels")
    return torch.from_numpy(images.copy()).unsqueeze(1), check_labels(labels, 10, f"{directory} ({prefix} labels)")


_FASHION_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                  "t10k-labels-idx1-ubyte")  # fmt: skip


def _fashion_complete(directory: Path) -> bool:
    return all(_idx_path(directory, stem) is not None for stem in _FASHION_STEMS)


def load_fashion_mnist(
    root: str | os.PathLike | None = None,
    url: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    md5: Mapping[str, str] | None = None,
) -> ImageDataset:
    """Fashion-MNIST (60,000 train + 10,000 test images, 1x28x28) from the four IDX files (``.gz`` or not).

    ``root``: the directory holding them. Without ``root``: the Debian package's directory
    (/usr/share/datasets/fashion-mnist) when it is complete and no ``url`` is given; otherwise ``cache_dir``
    (default ``~/.cache/enas/fashion-mnist``), downloading missing files from the base ``url`` with ``md5``
    (file name -> MD5; default: the official ones).
    """
    if isinstance(md5, str):
        raise DataError("Fashion-MNIST MD5s must be a mapping from file name to hex string")
    if root is not None:
        directory = Path(root).expanduser()
        if not _fashion_complete(directory):
            raise DataError(
                f"no Fashion-MNIST in {directory}: expected {', '.join(s + '[.gz]' for s in _FASHION_STEMS)}"
            )
    elif url is None and _fashion_complete(Path(FASHION_MNIST_DIR)):
        directory = Path(FASHION_MNIST_DIR)
    else:
        directory = cache_dir_for(cache_dir, "fashion-mnist")
        sums = dict(FASHION_MNIST_MD5 if md5 is None else md5)
        base = (url or FASHION_MNIST_URL).rstrip("/") + "/"
        for stem in _FASHION_STEMS:
            if _idx_path(directory, stem) is None:
                download(base + f"{stem}.gz", directory / f"{stem}.gz", sums.get(f"{stem}.gz"))
    train_x, train_y = _fashion_split(directory, "train")
    test_x, test_y = _fashion_split(directory, "t10k")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"{directory}: train images are {tuple(train_x.shape[1:])}, test {tuple(test_x.shape[1:])}")
    return ImageDataset(train_x, train_y, test_x, test_y, 10, list(FASHION_MNIST_CLASSES), "fashion-mnist")
