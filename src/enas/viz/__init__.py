"""Pictures: architectures (`draw_arch`), training runs (`plot_curves`), the shared DAG layout.

`enas.viz.draw_arch` and `enas.viz.plot_curves` (from `enas.viz.arch`) are loaded on first use (matplotlib).
"""

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("draw_arch", "plot_curves"):
        return getattr(importlib.import_module("enas.viz.arch"), name)
    raise AttributeError(f"module 'enas.viz' has no attribute {name!r}")
