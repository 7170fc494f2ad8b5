"""Dataset loaders (files on disk to tensors) and the datasets registry: every named dataset is one
`DatasetEntry`, read by the presets (which data a space accepts), the loaders, `enas data` and `enas show`.

A ``.npz`` path is the user's own data (images or tabular rows, by the space's task); it has no entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    task: str  # the task kind it feeds: "text" or "images"
    loader: str  # "module:function" returning the dataset (an `ImageDataset` or a PTB `Corpus`)
    info: dict[str, Any] = field(default_factory=dict)  # the shapes `enas show` assumes without --data
    default: bool = False  # the data of its task kind when a command has no --data


DATASETS: dict[str, DatasetEntry] = {e.name: e for e in (
    DatasetEntry("ptb", "text", "enas.tasks.datasets.ptb:load_ptb", {"vocab_size": 10000}, default=True),
    DatasetEntry("cifar10", "images", "enas.tasks.datasets.images:load_cifar10",
                 {"in_channels": 3, "image_size": 32, "num_classes": 10}, default=True),
    DatasetEntry("fashion-mnist", "images", "enas.tasks.datasets.fashion_mnist:load_fashion_mnist",
                 {"in_channels": 1, "image_size": 28, "num_classes": 10}),
)}


def names(task: str | None = None) -> tuple[str, ...]:
    """The named datasets, of one task kind if given."""
    return tuple(n for n, e in DATASETS.items() if task is None or e.task == task)


def default_for(task: str) -> str:
    """The dataset a command uses without --data for a task kind; "" when there is none (tabular)."""
    return next((n for n, e in DATASETS.items() if e.task == task and e.default), "")


def is_file(dataset: str) -> bool:
    """Whether ``dataset`` names the user's own ``.npz`` file rather than a registered dataset."""
    return dataset.endswith(".npz")


def load(name: str, **kwargs: Any) -> Any:
    """Load the registered dataset ``name`` with its loader's keyword arguments."""
    module, _, attr = DATASETS[name].loader.partition(":")
    return getattr(importlib.import_module(module), attr)(**kwargs)
