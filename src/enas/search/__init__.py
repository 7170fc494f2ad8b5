"""The search: the controller, REINFORCE, the loop, scoring, derive diagnostics, ranking, seeds.

`enas.search.Search` is the loop's entry point (`enas.search.loop.Search`), loaded on first use.
"""

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name == "Search":
        return importlib.import_module("enas.search.loop").Search
    raise AttributeError(f"module 'enas.search' has no attribute {name!r}")
