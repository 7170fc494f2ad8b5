"""Tabular classification as an ENAS task: rows of numeric features from a ``.npz`` file, standardised and kept on
the device, with cross-entropy for the shared weights, validation-minibatch accuracy as the reward and accuracy over
a whole split for evaluation.

The file holds ``x_train`` (N, F) numbers (integers, floats or booleans), ``y_train`` (N,) integer labels in
``0..K-1``, ``x_test`` (M, F) and ``y_test`` (M,), and optionally ``class_names`` (K strings): the keys of the image
``.npz`` format (`enas.tasks.datasets.images.load_npz`) with a feature vector per row instead of an image. K is
``len(class_names)``, else the largest label + 1. Every problem with the file is a one-line `DataError`.

The pipeline follows the image task's (`enas.tasks.images`):

* validation = the **last** ``valid_size`` training rows (after ``train_subset``); the test split never feeds the
  reward;
* with ``standardize``, every feature is shifted and scaled by the mean and population standard deviation (ddof 0)
  of the training part only (validation excluded), applied to every split; a constant feature gets std 1 (it
  becomes 0, not NaN);
* training batches are full ``batch_size`` rows of a fresh permutation each epoch; the rows left after the last full
  batch (fewer than ``batch_size``, different ones each epoch) are skipped, so every step has the same size and a
  model with batch normalisation never sees a one-row batch. Hence the training part must hold one full batch.

Features stay on the device as float32 (B, F); models follow the tabular interface of `enas.spaces.base`:
``logits, _ = model(features, arch=arch)``. All randomness comes from one private CPU ``torch.Generator``,
checkpointed by `state_dict`.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from enas.errors import ConfigError, DataError
from enas.spaces.base import TaskInfo
from enas.tasks.base import ClassificationTask, sharded_accuracy
from enas.tasks.datasets.common import read_npz

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class TabularTaskConfig:
    """Data and batching of a tabular-classification task (see the module docstring for the pipeline)."""

    dataset: str = ""  # path of the .npz (set from --data)
    valid_size: int = 1000  # the last valid_size training rows; 0 = train on all (no valid split)
    batch_size: int = 128
    eval_batch_size: int = 1000
    reward_batch_size: int = 128
    standardize: bool = True  # features -> (x - mean) / std with the training part's statistics
    train_subset: int | None = None  # keep the first N training rows (before the split); for demos and tests
    test_subset: int | None = None  # keep the first N test rows

    def validate(self) -> None:
        """Raise `ConfigError` on a value that cannot work."""
        for key in ("batch_size", "eval_batch_size", "reward_batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        if isinstance(self.valid_size, bool) or not isinstance(self.valid_size, int) or self.valid_size < 0:
            raise ConfigError(f"valid_size must be an integer >= 0, got {self.valid_size!r}")
        for key in ("train_subset", "test_subset"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{key} must be a positive integer or null, got {value!r}")
        if not isinstance(self.standardize, bool):
            raise ConfigError(f"standardize must be true or false, got {self.standardize!r}")


@dataclass
class TabularDataset:
    """A labelled table held in memory. Features: float64 (N, F) numpy arrays, finite; labels: int64 (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]
    name: str


# ------------------------------------------------------------------------------------------------------ the file


def _features(x: np.ndarray, what: str) -> np.ndarray:
    """Numeric (N, F) -> float64 (N, F); anything else is a DataError."""
    if x.ndim != 2:
        raise DataError(f"{what} must have shape (rows, features), found {x.shape}; reshape it to (N, F)")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{what} must be numeric (int, float or bool), found dtype {x.dtype}; encode categorical "
                        "and text columns as numbers first")
    if x.shape[1] == 0:
        raise DataError(f"{what} has no feature columns (shape {x.shape})")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(f"{what} holds {int(bad.sum())} NaN or infinite value(s) (first at row {row}, column {col}); "
                        "impute or drop them")
    return x


def _labels(y: np.ndarray, rows: int, what: str) -> np.ndarray:
    """Integer labels >= 0 of shape (rows,) or (rows, 1) -> int64 (rows,)."""
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y  # accept (N, 1) columns
    if y.shape != (rows,):
        raise DataError(f"{what} must have shape ({rows},) to match the feature rows, found {y.shape}")
    if y.dtype.kind not in "iub":
        raise DataError(f"{what}: labels must be integers 0..K-1, got dtype {y.dtype}; convert with "
                        ".astype(np.int64) or map class names to indices")
    if y.size and y.min() < 0:
        raise DataError(f"{what}: labels must be integers 0..K-1, found {y.min()}")
    return y.astype(np.int64)


def load_tabular_npz(path: str | os.PathLike) -> TabularDataset:
    """A ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (and optionally ``class_names``), checked."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a .npz archive (write it with numpy.savez(path, x_train=..., y_train=..., "
                        "x_test=..., y_test=...))")
    arrays = read_npz(path)
    broken = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))  # numpy returns such members raw
    if broken:
        raise DataError(f"{path} is not a readable .npz of plain arrays (not a .npy array: {', '.join(broken)})")
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "none"
        raise DataError(f"{path} lacks the array(s) {', '.join(missing)} (found: {found})")
    xs = {s: _features(arrays[f"x_{s}"], f"{path}: x_{s}") for s in ("train", "test")}
    if xs["train"].shape[1] != xs["test"].shape[1]:
        raise DataError(f"{path}: x_train has {xs['train'].shape[1]} features but x_test has {xs['test'].shape[1]}")
    for s in ("train", "test"):
        if xs[s].shape[0] == 0:
            raise DataError(f"{path}: x_{s} has no rows")
    ys = {s: _labels(arrays[f"y_{s}"], xs[s].shape[0], f"{path}: y_{s}") for s in ("train", "test")}
    if "class_names" in arrays:
        names = [str(n) for n in arrays["class_names"].reshape(-1)]
        for s in ("train", "test"):
            if ys[s].max() >= len(names):
                raise DataError(f"{path}: y_{s} holds label {ys[s].max()} but class_names names {len(names)} "
                                f"classes (labels 0..{len(names) - 1})")
    else:
        names = [str(i) for i in range(int(max(ys["train"].max(), ys["test"].max())) + 1)]
    if len(names) < 2:
        raise DataError(f"{path}: at least 2 classes are needed, found {len(names)}")
    return TabularDataset(xs["train"], ys["train"], xs["test"], ys["test"], len(names), names, path.stem)


def feature_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and population std (ddof 0) of float64 rows (N, F); a constant feature gets std 1."""
    mean = x.mean(axis=0)
    std = np.sqrt(((x - mean) ** 2).mean(axis=0))
    constant = (x == x[:1]).all(axis=0)
    return mean, np.where(constant | (std == 0), 1.0, std)


# ------------------------------------------------------------------------------------------------------ the task


class TabularClassificationTask(ClassificationTask):
    """Tabular classification: cross-entropy for the shared weights, validation-minibatch accuracy as the
    controller's reward, accuracy over a whole split for evaluation."""

    def __init__(
        self, cfg: TabularTaskConfig, device: str | torch.device = "cpu", seed: int = 0,
        dataset: TabularDataset | None = None,
    ) -> None:  # fmt: skip
        cfg.validate()
        self.cfg = cfg
        self.device = torch.device(device)
        if dataset is None:
            if not cfg.dataset:
                raise ConfigError("a tabular task needs its data: pass --data FILE.npz (task.dataset)")
            dataset = load_tabular_npz(cfg.dataset)
        data = dataset
        where = cfg.dataset or data.name
        self.dataset_name = data.name
        self.class_names = list(data.class_names)

        x, y = data.x_train[: cfg.train_subset], data.y_train[: cfg.train_subset]
        cut = x.shape[0] - cfg.valid_size
        if cut < cfg.batch_size:
            raise DataError(
                f"{where}: {x.shape[0]} training rows leave {max(cut, 0)} for training after valid_size="
                f"{cfg.valid_size}, fewer than one batch (batch_size={cfg.batch_size}); lower valid_size or batch_size"
            )
        test_x, test_y = data.x_test[: cfg.test_subset], data.y_test[: cfg.test_subset]
        if cfg.standardize:
            mean, std = feature_stats(x[:cut])  # training part only
        else:
            mean, std = np.zeros(x.shape[1]), np.ones(x.shape[1])
        # (F,) each, float64 on the CPU: float32 would shift a feature of large magnitude by a visible fraction of
        # its std (e.g. 1234567.891 -> 1234567.875 with std 0.1) for whoever re-applies them (`enas export`)
        self.mean, self.std = torch.from_numpy(mean), torch.from_numpy(std)

        splits = {"train": (x[:cut], y[:cut]), "valid": (x[cut:], y[cut:]), "test": (test_x, test_y)}
        self._x: dict[str, torch.Tensor] = {}  # float32 (N, F), standardised
        self._y: dict[str, torch.Tensor] = {}  # int64 (N,)
        for split, (features, labels) in splits.items():
            scaled = torch.from_numpy((features - mean) / std).float()
            if not torch.isfinite(scaled).all():
                raise DataError(f"{where}: the {split} features exceed float32's range (|x| > 3.4e38) after "
                                "standardisation; rescale them")
            self._x[split] = scaled.contiguous().to(self.device)
            self._y[split] = torch.from_numpy(np.ascontiguousarray(labels)).to(self.device)

        self.info = TaskInfo(in_features=x.shape[1], num_classes=data.num_classes)
        self.generator = torch.Generator().manual_seed(seed)
        self._train_perm: torch.Tensor | None = None  # permutation of the epoch in progress (None: none started)
        self._train_pos = 0
        self._valid_perm: torch.Tensor | None = None
        self._valid_pos = 0

    # ------------------------------------------------------------------------------------------------ batches

    def split_size(self, split: str) -> int:
        """Number of rows in ``split`` ("train", "valid" (0 when valid_size=0) or "test")."""
        if split not in self._y:
            raise ValueError(f"unknown split {split!r}; use 'train', 'valid' or 'test'")
        return self._y[split].shape[0]

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self._x:
            raise ValueError(f"unknown split {split!r}; use 'train', 'valid' or 'test'")
        if split == "valid" and self._y["valid"].shape[0] == 0:
            raise ConfigError("there is no validation split (valid_size=0); set valid_size > 0 to use it")
        return self._x[split], self._y[split]

    def shard(self, rank: int, world: int) -> None:
        """Keep rank ``rank``'s contiguous share of every training, reward and evaluation batch."""
        self._check_divisible(self.cfg, ("batch_size", "reward_batch_size", "eval_batch_size"), world)
        self.rank, self.world = rank, world

    def num_train_batches(self) -> int:
        return self._y["train"].shape[0] // self.cfg.batch_size

    def train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields (features (B, F), labels (B,)) over a fresh permutation of the training part, full batches only.
        An epoch left unfinished (or restored mid-way by `load_state_dict`) is continued by the next call before a
        new permutation is drawn."""
        n, bs = self._y["train"].shape[0], self.cfg.batch_size
        end_of_epoch = n - n % bs  # the rows after the last full batch are skipped
        if self._train_perm is None:
            self._train_perm, self._train_pos = torch.randperm(n, generator=self.generator).to(self.device), 0
        perm, start = self._train_perm, self._train_pos
        for pos in range(start, end_of_epoch, bs):
            idx = perm[pos : pos + bs]
            end = pos + bs
            # Advance the cursor before yielding, so a checkpoint taken after this batch resumes after it.
            self._train_perm, self._train_pos = (perm, end) if end < end_of_epoch else (None, 0)
            if self.world > 1:  # drawn for the global batch as above; this rank keeps its share
                idx = idx[self.share(bs)]
            yield self._x["train"][idx], self._y["train"][idx]

    def start_epoch(self, model: nn.Module) -> None:
        """Nothing carries over between epochs of a tabular task."""

    def reward_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``reward_batch_size`` validation rows, cycling through a permutation of the validation split
        that is redrawn when too few rows are left for a full batch."""
        features, labels = self._split("valid")
        n = labels.shape[0]
        bs = min(self.cfg.reward_batch_size, n)
        if self._valid_perm is None or self._valid_pos + bs > n:
            self._valid_perm, self._valid_pos = torch.randperm(n, generator=self.generator).to(self.device), 0
        idx = self._valid_perm[self._valid_pos : self._valid_pos + bs]
        self._valid_pos += bs
        if self.world > 1:
            idx = idx[self.share(idx.shape[0])]
        return features[idx], labels[idx]

    # ------------------------------------------------------------------------------------------- loss, metrics

    def shared_loss(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], arch: Any = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Cross-entropy of the logits (the model's second output is not used); stats as 0-dim tensors."""
        x, y = batch
        logits, _ = model(x, arch=arch)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        return loss, {"loss": loss.detach(), "acc": acc}

    @torch.no_grad()
    def reward(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], arch: Any = None) -> float:
        """Accuracy of ``arch`` on one validation minibatch (sharded: on the global minibatch)."""
        x, y = batch
        if self.world > 1:
            return sharded_accuracy(model, x, y, arch)
        logits, _ = model(x, arch=arch)
        return (logits.argmax(dim=1) == y).float().mean().item()

    def _eval_inputs(self, split: str, rows: slice) -> torch.Tensor:
        return self._split(split)[0][rows]

