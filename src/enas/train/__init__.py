"""Final training of one architecture: the recipe, optimizers and schedules, evaluation.

`enas.train.FinalTraining` and `enas.train.evaluate_model` (from `enas.train.final`) are loaded on first use.
"""

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("FinalTraining", "evaluate_model"):
        return getattr(importlib.import_module("enas.train.final"), name)
    raise AttributeError(f"module 'enas.train' has no attribute {name!r}")
