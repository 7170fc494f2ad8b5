"""Image datasets as uint8 tensors: CIFAR-10, Fashion-MNIST (`enas.tasks.datasets.fashion_mnist`) and user data in a
``.npz``
file.

Every loader returns an `ImageDataset` whose images are ``uint8`` tensors of shape ``(N, C, H, W)`` (square images)
and whose labels are ``int64`` tensors with values in ``[0, num_classes)``. Files are checked (shapes, counts,
label ranges, IDX headers) and any problem becomes a one-line `DataError` saying what is wrong.

Downloads stream into a temporary file next to the destination, are checked against an MD5 and only then renamed
into place, so an interrupted download never leaves a file that looks complete. MD5s are checked on downloads only:
local copies (e.g. Debian's re-compressed Fashion-MNIST) are validated by their contents instead.

The CIFAR-10 batches are Python pickles; they are read with an unpickler that only accepts the handful of globals a
pickled numpy array needs, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from enas.errors import DataError
from enas.tasks import datasets
from enas.tasks.datasets.common import ImageDataset, cache_dir_for, check_labels, download, read_npz

log = logging.getLogger(__name__)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")



# ---------------------------------------------------------------------------------------------------- downloads


# ------------------------------------------------------------------------------------------------------ CIFAR-10


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals that pickled dicts of numpy arrays and lists refer to."""

    _ALLOWED = {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if name == "_reconstruct":
            # Files written with numpy 1.x name numpy.core, numpy 2 moved it to numpy._core: use whichever function
            # this numpy itself pickles arrays with.
            return np.zeros(0).__reduce__()[0]
        return super().find_class(module, name)


def _unpickle(data: bytes, what: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # any failure of a corrupted or foreign pickle
        raise DataError(f"{what} is not a readable CIFAR-10 pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{what} is not a CIFAR-10 batch: expected a dict, found {type(obj).__name__}")
    return obj


def _cifar_batch(obj: dict, what: str) -> tuple[np.ndarray, np.ndarray]:
    """One unpickled batch -> images uint8 (n, 3, 32, 32), labels (n,)."""
    data, labels = obj.get(b"data"), obj.get(b"labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{what} is not a CIFAR-10 batch: the keys b'data' and b'labels' are missing")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{what}: b'data' must be uint8 of shape (n, 3072), found {data.dtype} {data.shape}")
    labels = np.asarray(labels)
    if labels.shape != (data.shape[0],):
        raise DataError(f"{what}: {data.shape[0]} images but b'labels' has shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels  # rows are channel-major: R plane, G plane, B plane


def _read_cifar_members(source: Path) -> dict[str, bytes]:
    """The batch files by base name, from a directory or straight from the official tar.gz (nothing extracted)."""
    wanted = {*CIFAR10_TRAIN_FILES, "test_batch", "batches.meta"}
    found: dict[str, bytes] = {}
    if source.is_dir():
        for name in wanted:
            if (source / name).is_file():
                found[name] = (source / name).read_bytes()
        return found
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    found[base] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{source} is not a readable tar.gz archive ({exc}); delete it and try again") from None
    return found


def _find_cifar_source(root: Path) -> Path | None:
    for candidate in (root / CIFAR10_DIR, root):
        if (candidate / "test_batch").is_file():
            return candidate
    if (root / CIFAR10_ARCHIVE).is_file():
        return root / CIFAR10_ARCHIVE
    return None


def load_cifar10(
    root: str | os.PathLike | None = None,
    url: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    md5: str | None = None,
) -> ImageDataset:
    """CIFAR-10 (50,000 train + 10,000 test images, 3x32x32).

    ``root``: a directory holding ``cifar-10-batches-py/`` (or being it) or the official ``cifar-10-python.tar.gz``
    (read in place, nothing extracted), or the path of that archive. Without ``root`` the archive is looked for in
    ``cache_dir`` (default ``~/.cache/enas/cifar10``) and downloaded there from ``url`` (default: the dataset's home
    page) if absent, checked against ``md5`` (default: the official MD5).
    """
    if md5 is not None and not isinstance(md5, str):
        raise DataError("the CIFAR-10 MD5 must be one hex string")
    if root is not None:
        root = Path(root).expanduser()
        source = root if root.is_file() else _find_cifar_source(root)  # the archive itself may be given
        if source is None:
            raise DataError(
                f"no CIFAR-10 data in {root}: expected {CIFAR10_DIR}/ or {CIFAR10_ARCHIVE} there; "
                "omit the root to download it"
            )
    else:
        cache = cache_dir_for(cache_dir, "cifar10")
        source = _find_cifar_source(cache)
        if source is None:
            source = cache / CIFAR10_ARCHIVE
            download(url or CIFAR10_URL, source, md5 or CIFAR10_MD5)

    members = _read_cifar_members(source)
    missing = sorted({*CIFAR10_TRAIN_FILES, "test_batch"} - members.keys())
    if missing:
        raise DataError(f"CIFAR-10 files missing in {source}: {', '.join(missing)}")
    parts = [_cifar_batch(_unpickle(members[f], f"{source}/{f}"), f"{source}/{f}") for f in CIFAR10_TRAIN_FILES]
    test_x, test_y = _cifar_batch(_unpickle(members["test_batch"], f"{source}/test_batch"), f"{source}/test_batch")
    names = list(CIFAR10_CLASSES)
    if "batches.meta" in members:
        meta = _unpickle(members["batches.meta"], f"{source}/batches.meta")
        raw = meta.get(b"label_names")
        if not isinstance(raw, list) or len(raw) != 10:
            raise DataError(f"{source}/batches.meta: b'label_names' must be a list of 10 names")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    return ImageDataset(
        train_images=torch.from_numpy(np.concatenate([x for x, _ in parts])),
        train_labels=check_labels(np.concatenate([y for _, y in parts]), 10, f"{source} (training batches)"),
        test_images=torch.from_numpy(np.ascontiguousarray(test_x)),
        test_labels=check_labels(test_y, 10, f"{source}/test_batch"),
        num_classes=10,
        class_names=names,
        name="cifar10",
    )


# -------------------------------------------------------------------------------------------------- user .npz


def _npz_images(x: np.ndarray, what: str) -> np.ndarray:
    """uint8 images in (N, H, W), (N, H, W, C) or (N, C, H, W) -> (N, C, H, W).

    A 4-D array is taken as channels-last when its last dim is 1, 3 or 4 (grey, RGB, RGBA) and its second is not
    (so (N, 32, 32, 3) is channels-last and (N, 3, 32, 32) channels-first; an ambiguous (N, 3, 3, 3) is read as
    channels-first).
    """
    if x.dtype != np.uint8:
        raise DataError(f"{what} must be uint8 pixels in 0..255, found dtype {x.dtype}; convert with .astype(np.uint8)")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{what} must have shape (N, H, W), (N, H, W, C) or (N, C, H, W), found {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{what} holds no images; a split without images has no accuracy to report")
    if x.shape[2] != x.shape[3]:
        raise DataError(f"{what}: images must be square, found {x.shape[2]}x{x.shape[3]} (layout N, C, H, W)")
    return np.ascontiguousarray(x)


def load_npz(path: str | os.PathLike) -> ImageDataset:
    """User data: a ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``class_names``
    (an array of strings). The number of classes is ``len(class_names)``, else the largest label + 1."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    arrays = read_npz(path)
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks the array(s) {', '.join(missing)} (found: {', '.join(sorted(arrays))})")
    not_arrays = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))
    if not_arrays:  # a member that is not a .npy file reads back as raw bytes
        raise DataError(f"{path}: {', '.join(not_arrays)} are not arrays; write the file with numpy.savez")
    xs = {s: _npz_images(arrays[f"x_{s}"], f"{path}: x_{s}") for s in ("train", "test")}
    if xs["train"].shape[1:] != xs["test"].shape[1:]:
        raise DataError(f"{path}: x_train images are {xs['train'].shape[1:]} but x_test {xs['test'].shape[1:]}")
    ys = {}
    for s in ("train", "test"):
        y = arrays[f"y_{s}"]
        y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y  # accept (N, 1) columns
        if y.shape != (xs[s].shape[0],):
            raise DataError(f"{path}: y_{s} must have shape ({xs[s].shape[0]},) to match x_{s}, found {y.shape}")
        ys[s] = y
    if "class_names" in arrays:
        names = [str(n) for n in arrays["class_names"].reshape(-1)]
    else:
        top = max((int(y.max()) for y in ys.values() if y.size and y.dtype.kind in "iub"), default=0)
        names = [str(i) for i in range(top + 1)]
    if len(names) < 2:
        raise DataError(f"{path}: at least 2 classes are needed, found {len(names)}")
    return ImageDataset(
        train_images=torch.from_numpy(xs["train"]),
        train_labels=check_labels(ys["train"], len(names), f"{path}: y_train"),
        test_images=torch.from_numpy(xs["test"]),
        test_labels=check_labels(ys["test"], len(names), f"{path}: y_test"),
        num_classes=len(names),
        class_names=names,
        name=path.stem,
    )


def load_image_dataset(
    name_or_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    url: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    md5: str | Mapping[str, str] | None = None,
) -> ImageDataset:
    """``"cifar10"``, ``"fashion-mnist"`` or the path of a ``.npz`` file -> the dataset (see the loaders)."""
    name = str(name_or_path)
    if datasets.is_file(name):
        return load_npz(name)
    if name in datasets.names("images"):
        return datasets.load(name, root=root, url=url, cache_dir=cache_dir, md5=md5)
    raise DataError(f"unknown image dataset {name!r}; choose one of: {', '.join(datasets.names('images'))}, FILE.npz")
