"""Fast paths (packed products, batch norm by products, arch-as-data graph ops, torch.compile), each with a plain
twin the tests compare against.

The CPU-only paths are switched by the run's config (``kernels.packed``, ``kernels.bn_products``; written to
``config.yaml`` and ``summary.json``, changeable on ``--resume``). `configure` applies a run's section; every path
also checks its own conditions (device, dtype, sizes) before it applies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, fields


@dataclass
class KernelsConfig:
    """Which CPU fast paths a run may take; both change float32 rounding, not the mathematics."""

    packed: bool = True  # the recurrent products on MKL-packed weights (enas.kernels.packed)
    bn_products: bool = True  # batch norm by products where the library's kernel is slow (enas.kernels.batch_norm)


_active = KernelsConfig()


def configure(cfg: KernelsConfig) -> None:
    """Use ``cfg``'s switches from now on in this process (every run calls it when it builds its space)."""
    for f in fields(KernelsConfig):
        setattr(_active, f.name, bool(getattr(cfg, f.name)))


def enabled(name: str) -> bool:
    """Whether the fast path ``name`` (a `KernelsConfig` field) is switched on."""
    return getattr(_active, name)


def record(cfg: KernelsConfig, model: object) -> dict[str, object]:
    """What a run's summary.json says of its code paths: the switches and the model's ``cell`` path."""
    return {**{f.name: bool(getattr(cfg, f.name)) for f in fields(KernelsConfig)}, "cell": getattr(model, "cell", None)}


@contextlib.contextmanager
def switched(**switches: bool) -> Iterator[None]:
    """The switches set as given inside the block, restored after (``switched(packed=False)``)."""
    saved = {f.name: getattr(_active, f.name) for f in fields(KernelsConfig)}
    try:
        for name, value in switches.items():
            if name not in saved:
                raise ValueError(f"unknown kernel switch {name!r}; choose among {', '.join(saved)}")
            setattr(_active, name, bool(value))
        yield
    finally:
        for name, value in saved.items():
            setattr(_active, name, value)
