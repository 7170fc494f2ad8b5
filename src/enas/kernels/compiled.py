"""One ``torch.compile`` artefact per device type for the arch-as-data supernet paths.

The arch-as-data paths (`enas.spaces.rnn.graph`, `enas.spaces.micro.graph`, `enas.spaces.macro.graph`) take the
sampled arch as index tensors, so a single compiled function serves every arch. `CompiledPerDevice` compiles lazily
on the first call, per device type, so that a model moved to a GPU gets inductor's ``reduce-overhead`` mode, which
replays the compiled function as a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from enas.errors import ConfigError

#: How a supernet runs its cells or layers, the same words in every space: ``path`` (only the sampled path, the
#: default), ``graph`` (the arch as index tensors: one kernel sequence for every arch, what ``model.compile_cell``
#: compiles), ``reference`` (plain autograd that reads like the paper; the recurrent space).
CELLS = ("path", "graph", "reference")
#: Values stored by earlier versions, read as today's (a checkpoint or model file keeps loading).
OLD_CELL_NAMES = {"fast": "path"}


def check_cell_options(cell: Any, compile_cell: Any, supported: tuple[str, ...] = ("path", "graph")) -> None:
    """The ``model.cell`` / ``model.compile_cell`` options of a space that runs ``supported`` of `CELLS`, checked
    with one-line errors (every space checks them here)."""
    if not isinstance(cell, str) or cell not in supported:
        raise ConfigError(f"model.cell must be one of {', '.join(supported)}; got {cell!r}")
    if not isinstance(compile_cell, bool):
        raise ConfigError(f"model.compile_cell must be true or false; got {compile_cell!r}")
    if compile_cell and cell != "graph":
        raise ConfigError("model.compile_cell=true compiles the arch-as-data network; set model.cell=graph too")


def _clone(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.clone()
    if isinstance(out, (tuple, list)):
        return type(out)(_clone(o) for o in out)
    return out


def _device_type(args: tuple[Any, ...]) -> str:
    for a in args:
        if isinstance(a, Tensor):
            return a.device.type
    raise TypeError("a compiled arch-as-data function needs at least one tensor argument")


def to_device(t: Tensor, device: torch.device | str) -> Tensor:
    """An arch's index tensor built on the host, on ``device``. To a GPU through pinned memory without blocking: a
    plain copy from pageable memory would make the host wait for the GPU at every step."""
    device = torch.device(device)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class CompiledPerDevice:
    """``fn`` through ``torch.compile(backend=backend, dynamic=False)``; on CUDA with inductor, in the
    ``reduce-overhead`` (CUDA graph) mode. The device is the one of the first tensor argument."""

    def __init__(self, fn: Callable[..., Any], backend: str | Callable[..., object] = "inductor") -> None:
        self.fn, self.backend = fn, backend
        self._fns: dict[str, Callable[..., Any]] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kind = _device_type(args)
        graphs = kind == "cuda" and self.backend == "inductor"
        compiled = self._fns.get(kind)
        if compiled is None:
            mode = "reduce-overhead" if graphs else None
            compiled = self._fns[kind] = torch.compile(self.fn, backend=self.backend, dynamic=False, mode=mode)
        out = compiled(*args, **kwargs)
        if graphs and not torch.is_grad_enabled():
            # Without a pending backward, every call starts a new CUDA-graph iteration that reuses the previous
            # call's output memory: copy the outputs out before the next call (evaluation only).
            out = _clone(out)
        return out


__all__ = ["CELLS", "OLD_CELL_NAMES", "CompiledPerDevice", "check_cell_options", "to_device"]
