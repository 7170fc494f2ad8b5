"""Kernel launches per step, counted the same way for eager and compiled code (`enas bench`).

`enas.bench.harness` counts the aten operators an eager step dispatches; a compiled step dispatches few aten operators
and
runs fused kernels instead, which a dispatch count does not see. This module counts **launches** from a profile of
one step: on a GPU, the device kernels the step ran; on the CPU, the compiled (fused) kernels plus the aten
operators called from outside any other aten operator, leaving out the ones that launch nothing (views, metadata).
Both counts are per step, forward + backward + optimizer, and machine-independent for a given graph.

`graph_note` describes the rows of the recurrent supernet with the arch-as-data cell (`enas.spaces.rnn.graph`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

# aten operators that only make views or read metadata: no kernel runs
NO_KERNEL = frozenset(f"aten::{name}" for name in (
    "view", "_unsafe_view", "as_strided", "select", "slice", "detach", "t", "transpose", "permute", "expand",
    "unsqueeze", "squeeze", "reshape", "unbind", "split", "chunk", "narrow", "alias", "resolve_conj", "resolve_neg",
    "lift_fresh", "empty", "empty_like", "empty_strided", "split_with_sizes", "_reshape_alias", "view_as",
    "contiguous", "numpy_T", "flatten", "unflatten", "is_nonzero", "item", "_local_scalar_dense", "result_type",
))


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (some torch builds print a line each time the profiler starts and stops)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _profile(activities: list[ProfilerActivity]) -> Iterator[profile]:
    prof = profile(activities=activities)
    with _quiet_stderr():
        prof.__enter__()
    try:
        yield prof
    finally:
        with _quiet_stderr():
            prof.__exit__(None, None, None)


def _compiled_kernel(name: str) -> bool:
    return "cpp_fused" in name or name.startswith("triton_") or "_triton_" in name


def count_launches(step: Callable[[], Any], device: torch.device) -> int:
    """Kernel launches of one call of ``step`` (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        with _profile([ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize(device)
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                   and not e.name.startswith(("Memcpy", "Memset", "cudaMem")))
    import torch._inductor.config as inductor_config  # on use: loads inductor, which only --compile needs

    with _profile([ProfilerActivity.CPU]) as prof:
        step()
    count = 0
    for e in prof.events():
        if _compiled_kernel(e.name):
            count += 1
        elif e.name.startswith("aten::") and e.name not in NO_KERNEL:
            parent = e.cpu_parent
            while parent is not None and not parent.name.startswith("aten::"):
                parent = parent.cpu_parent
            count += parent is None
    if not inductor_config.cpp.enable_kernel_profile:  # compiled CPU kernels are invisible to the profiler
        count += sum(1 for e in prof.events() if e.name.startswith("## Call CompiledFxGraph"))
    return count


def profile_compiled_kernels() -> None:
    """Make inductor's CPU kernels visible to the profiler (before compiling), so that `count_launches` sees each."""
    import torch._inductor.config as inductor_config  # on use: loads inductor, which only --compile needs

    inductor_config.cpp.enable_kernel_profile = True


def graph_note(compiled: bool, device: torch.device) -> str:
    if not compiled:
        return "arch as index tensors, eager: the same kernel sequence for every arch"
    mode = "inductor, CUDA graphs (reduce-overhead)" if device.type == "cuda" else "inductor C++ kernels"
    return f"arch as index tensors, one torch.compile artefact for every arch ({mode})"


__all__ = ["NO_KERNEL", "count_launches", "graph_note", "profile_compiled_kernels"]
