"""Loaders of image datasets: CIFAR-10 pickles (directory, tar.gz, download), Fashion-MNIST IDX files, user .npz."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import pickle
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from enas.errors import DataError
from enas.tasks.datasets.fashion_mnist import FASHION_MNIST_DIR, load_fashion_mnist, read_idx
from enas.tasks.datasets.images import CIFAR10_ARCHIVE, load_cifar10, load_image_dataset, load_npz

CIFAR_NAMES = [f"class{i}" for i in range(10)]
PER_BATCH = 3  # images per training batch file (5 files)


def _write_pickle(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _cifar_batch(rng: np.random.Generator, n: int) -> dict:
    return {
        b"batch_label": b"tiny batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }


def make_cifar_dir(parent: Path, seed: int = 0) -> dict[str, dict]:
    """A cifar-10-batches-py directory in the official format, with PER_BATCH images per training file."""
    rng = np.random.default_rng(seed)
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": _cifar_batch(rng, PER_BATCH) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(rng, 4)
    for name, obj in batches.items():
        _write_pickle(folder / name, obj)
    _write_pickle(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072})
    return batches


def make_cifar_tar(folder: Path, out: Path) -> None:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")


def _check_cifar(ds, batches: dict) -> None:
    assert ds.name == "cifar10" and ds.num_classes == 10 and ds.class_names == CIFAR_NAMES
    assert ds.train_images.shape == (5 * PER_BATCH, 3, 32, 32) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (4, 3, 32, 32) and ds.test_labels.dtype == torch.int64
    first = batches["data_batch_1"][b"data"][1]  # channel-major: R plane, then G, then B
    for c in range(3):
        assert np.array_equal(ds.train_images[1, c].numpy(), first[c * 1024 : (c + 1) * 1024].reshape(32, 32))
    labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert ds.train_labels.tolist() == labels
    assert ds.test_labels.tolist() == batches["test_batch"][b"labels"]


@pytest.fixture
def http_root(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving a directory; yields (base URL, directory, list of paths hit)."""
    served = tmp_path / "www"
    served.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):  # noqa: N802 - name fixed by the base class
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served, hits
    server.shutdown()
    server.server_close()
    thread.join()


# ------------------------------------------------------------------------------------------------------ CIFAR-10


def test_cifar_from_parent_dir_and_from_batches_dir(tmp_path):
    batches = make_cifar_dir(tmp_path)
    _check_cifar(load_cifar10(tmp_path), batches)
    _check_cifar(load_image_dataset("cifar10", root=tmp_path / "cifar-10-batches-py"), batches)


def test_cifar_from_archive_read_in_place(tmp_path):
    batches = make_cifar_dir(tmp_path / "src")
    data = tmp_path / "data"
    data.mkdir()
    make_cifar_tar(tmp_path / "src" / "cifar-10-batches-py", data / CIFAR10_ARCHIVE)
    _check_cifar(load_cifar10(data), batches)
    _check_cifar(load_cifar10(data / CIFAR10_ARCHIVE), batches)
    assert sorted(p.name for p in data.iterdir()) == [CIFAR10_ARCHIVE]  # nothing extracted


def test_cifar_download_checks_md5_and_reuses_cache(tmp_path, http_root):
    base, served, hits = http_root
    batches = make_cifar_dir(tmp_path / "src")
    make_cifar_tar(tmp_path / "src" / "cifar-10-batches-py", served / "c10.tgz")
    md5 = hashlib.md5((served / "c10.tgz").read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    ds = load_image_dataset("cifar10", url=f"{base}/c10.tgz", cache_dir=cache, md5=md5)
    _check_cifar(ds, batches)
    assert (cache / CIFAR10_ARCHIVE).read_bytes() == (served / "c10.tgz").read_bytes()
    assert hits == ["/c10.tgz"]
    _check_cifar(load_cifar10(url=f"{base}/c10.tgz", cache_dir=cache, md5=md5), batches)
    assert hits == ["/c10.tgz"]  # second load served from the cache


def test_cifar_download_bad_md5_or_missing_leaves_nothing(tmp_path, http_root):
    base, served, _ = http_root
    make_cifar_dir(tmp_path / "src")
    make_cifar_tar(tmp_path / "src" / "cifar-10-batches-py", served / "c10.tgz")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="MD5"):
        load_cifar10(url=f"{base}/c10.tgz", cache_dir=cache, md5="0" * 32)
    assert list(cache.iterdir()) == []  # no partial or unverified file left behind
    with pytest.raises(DataError, match="could not download"):
        load_cifar10(url=f"{base}/missing.tgz", cache_dir=cache, md5="0" * 32)
    assert list(cache.iterdir()) == []


def test_cifar_missing_data_is_reported(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10 data"):
        load_cifar10(tmp_path)
    make_cifar_dir(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(tmp_path)


def test_cifar_corrupted_archive(tmp_path):
    (tmp_path / CIFAR10_ARCHIVE).write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(DataError, match="tar.gz"):
        load_cifar10(tmp_path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b"garbage" * 5, "not a readable CIFAR-10 pickle"),
        (lambda b: pickle.dumps([1, 2, 3], protocol=2), "expected a dict"),
        (lambda b: pickle.dumps({**b, b"data": b[b"data"][:, :3000]}, protocol=2), r"shape \(n, 3072\)"),
        (lambda b: pickle.dumps({**b, b"data": b[b"data"].astype(np.int32)}, protocol=2), "uint8"),
        (lambda b: pickle.dumps({**b, b"labels": b[b"labels"][:-1]}, protocol=2), "labels"),
        (lambda b: pickle.dumps({**b, b"labels": [10] * PER_BATCH}, protocol=2), r"\[0, 10\)"),
        (lambda b: pickle.dumps({b"labels": b[b"labels"]}, protocol=2), "b'data'"),
    ],
)
def test_cifar_malformed_batches(tmp_path, damage, message):
    batches = make_cifar_dir(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(damage(batches["data_batch_2"]))
    with pytest.raises(DataError, match=message):
        load_cifar10(tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_cifar_pickle_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_cifar_dir(tmp_path)
    _write_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": _Evil(), b"labels": []})
    with pytest.raises(DataError, match="not allowed"):
        load_cifar10(tmp_path)
    assert not (tmp_path / "pwned.txt").exists()


# ------------------------------------------------------------------------------------------------- Fashion-MNIST


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def make_fashion_dir(folder: Path, n_train: int = 7, n_test: int = 3, compress: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(_idx(arr)))
        else:
            (folder / stem).write_bytes(_idx(arr))
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_idx_files(tmp_path, compress):
    arrays = make_fashion_dir(tmp_path, compress=compress)
    ds = load_image_dataset("fashion-mnist", root=tmp_path)
    assert ds.train_images.shape == (7, 1, 28, 28) and ds.test_images.shape == (3, 1, 28, 28)
    assert np.array_equal(ds.train_images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert ds.test_labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert ds.num_classes == 10 and ds.class_names[0] == "T-shirt/top" and ds.name == "fashion-mnist"


def test_idx_validation(tmp_path):
    good = np.zeros((2, 4, 4), np.uint8)
    cases = {
        "magic.idx": (bytes([0, 0, 9, 3]) + _idx(good)[4:], "not an IDX file"),
        "dims.idx": (_idx(np.zeros((2, 16), np.uint8)), "not an IDX file"),
        "short.idx": (_idx(good)[:-5], "holds"),
        "header.idx": (_idx(good)[:9], "truncated"),
        "gz.idx": (b"\x1f\x8b\x08" + b"\x00" * 20, "gzip"),
    }
    for name, (raw, message) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(DataError, match=message):
            read_idx(tmp_path / name, 3)
    (tmp_path / "ok.idx").write_bytes(_idx(good))
    assert read_idx(tmp_path / "ok.idx", 3).shape == (2, 4, 4)


def test_fashion_mnist_count_and_label_checks(tmp_path):
    arrays = make_fashion_dir(tmp_path / "a")
    (tmp_path / "a" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.zeros(6, np.uint8))))
    with pytest.raises(DataError, match="7 train images but 6 labels"):
        load_fashion_mnist(tmp_path / "a")
    arrays["train-labels-idx1-ubyte"][0] = 10
    (tmp_path / "a" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(arrays["train-labels-idx1-ubyte"])))
    with pytest.raises(DataError, match=r"\[0, 10\)"):
        load_fashion_mnist(tmp_path / "a")
    (tmp_path / "a" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="no Fashion-MNIST"):
        load_fashion_mnist(tmp_path / "a")


def test_fashion_mnist_download(tmp_path, http_root):
    base, served, hits = http_root
    arrays = make_fashion_dir(served)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in served.iterdir()}
    cache = tmp_path / "cache"
    ds = load_fashion_mnist(url=base + "/", cache_dir=cache, md5=md5)
    assert np.array_equal(ds.test_images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert len(hits) == 4
    load_fashion_mnist(url=base, cache_dir=cache, md5=md5)
    assert len(hits) == 4  # cached
    bad = {**md5, "t10k-labels-idx1-ubyte.gz": "f" * 32}
    with pytest.raises(DataError, match="MD5"):
        load_fashion_mnist(url=base, cache_dir=tmp_path / "other", md5=bad)


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package():
    ds = load_image_dataset("fashion-mnist")
    assert ds.train_images.shape == (60000, 1, 28, 28) and ds.test_images.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10
    assert torch.bincount(ds.train_labels).tolist() == [6000] * 10
    assert torch.bincount(ds.test_labels).tolist() == [1000] * 10


# ------------------------------------------------------------------------------------------------------ user npz


@pytest.mark.parametrize(
    "layout, shape",
    [("NHW", (5, 6, 6)), ("NHWC", (5, 6, 6, 3)), ("NCHW", (5, 3, 6, 6)), ("NHWC1", (5, 6, 6, 1))],
)
def test_npz_layouts(tmp_path, layout, shape):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    expected = x[:, None] if layout == "NHW" else x if layout == "NCHW" else x.transpose(0, 3, 1, 2)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x, y_train=np.array([0, 1, 2, 1, 0]), x_test=x[:2], y_test=np.array([[2], [0]]))
    ds = load_image_dataset(str(path))
    assert np.array_equal(ds.train_images.numpy(), expected)
    assert ds.num_classes == 3 and ds.class_names == ["0", "1", "2"] and ds.name == "mine"
    assert ds.test_labels.tolist() == [2, 0] and ds.train_labels.dtype == torch.int64


def test_npz_class_names_and_errors(tmp_path):
    x = np.zeros((4, 8, 8), np.uint8)
    y = np.array([0, 1, 1, 0])
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y, class_names=np.array(["cat", "dog", "eel"]))
    ds = load_image_dataset(path)
    assert ds.num_classes == 3 and ds.class_names == ["cat", "dog", "eel"]

    def bad(message, **over):
        arrays = dict(x_train=x, y_train=y, x_test=x, y_test=y) | over
        np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
        with pytest.raises(DataError, match=message):
            load_image_dataset(path)

    bad("square", x_train=np.zeros((4, 8, 6), np.uint8))
    bad("square", x_train=np.zeros((4, 8, 6, 3), np.uint8))
    bad("uint8", x_train=x.astype(np.float32))
    bad(r"\[0, 2\)", y_test=np.array([0, 1, 2, 0]), class_names=np.array(["a", "b"]))
    bad(r"\[0, 2\)", y_train=np.array([0, -1, 1, 0]))
    bad("integers", y_train=y.astype(np.float64))
    bad(r"shape \(4,\)", y_train=y[:3])
    bad("lacks the array", y_test=None)
    bad("x_test", x_test=np.zeros((4, 6, 6), np.uint8))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        load_image_dataset(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="does not exist"):
        load_image_dataset(tmp_path / "absent.npz")


def test_unknown_dataset_lists_choices():
    with pytest.raises(DataError, match="cifar10, fashion-mnist, FILE.npz"):
        load_image_dataset("mnist")


def test_a_gzip_bomb_is_refused_after_the_bytes_its_header_announces(tmp_path):
    """A small .gz whose header announces 2 images of 4x4 but that inflates to 64 MiB: reading stops one byte past
    the announced 32 data bytes."""
    import gzip
    import struct
    import tracemalloc

    path = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 4, 4))
        for _ in range(64):
            f.write(bytes(1 << 20))
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    with pytest.raises(DataError, match="holds more data bytes"):
        read_idx(path, 3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20  # far below the 64 MiB it would inflate to


def test_an_idx_header_announcing_too_much_is_refused(tmp_path):
    import struct

    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 100_000_000, 28, 28))
    with pytest.raises(DataError, match="announces"):
        read_idx(path, 3)


def test_an_npz_bomb_is_refused_with_bounded_memory(tmp_path):
    """A .npz whose x_train header announces 2 images of 4x4 but whose member inflates to 64 MiB, and one whose
    header announces terabytes: both refused without allocating what they claim or hold."""
    import tracemalloc
    import zipfile

    from enas.tasks.datasets.common import read_npz

    def npy_header(shape):
        header = {"descr": "|u1", "fortran_order": False, "shape": shape}
        buf = __import__("io").BytesIO()
        np.lib.format.write_array_header_1_0(buf, header)
        return buf.getvalue()

    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, z.open("x_train.npy", "w") as f:
        f.write(npy_header((2, 4, 4)))
        for _ in range(64):
            f.write(bytes(1 << 20))
    assert bomb.stat().st_size < 200_000
    tracemalloc.start()
    with pytest.raises(DataError, match="more data than its header announces"):
        read_npz(bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20

    huge = tmp_path / "huge.npz"
    with zipfile.ZipFile(huge, "w") as z:
        z.writestr("x_train.npy", npy_header((10**9, 1000, 1000)))
    with pytest.raises(DataError, match="announce more than"):
        load_npz(huge)


def test_rgba_is_read_channels_last_and_an_empty_test_split_is_refused(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 4), dtype=np.uint8)
    y = np.arange(6) % 2
    np.savez(tmp_path / "rgba.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    ds = load_npz(tmp_path / "rgba.npz")
    assert ds.train_images.shape == (6, 4, 8, 8)
    assert torch.equal(ds.train_images[1, 3], torch.from_numpy(x[1, :, :, 3]))  # the alpha plane, not a row
    np.savez(tmp_path / "empty.npz", x_train=x, y_train=y, x_test=x[:0], y_test=y[:0])
    with pytest.raises(DataError, match="x_test holds no images"):
        load_npz(tmp_path / "empty.npz")
