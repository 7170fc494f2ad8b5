"""Tensor helpers of the arch-as-data supernet paths (`enas.spaces.micro.graph`, `enas.spaces.macro.graph`):
choices made by index tensors, with the same kernels whatever the index.

Choices are elementwise selections (``where``), not gathers: inductor's C++ backend miscompiled the backward of a
gather by a 0-d index inside a large graph (a crash in the fused kernel), and selections fuse into the neighbouring
kernels anyway."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pick(tensors: list[Tensor], index: Tensor) -> Tensor:
    """``tensors[index]`` for a 0-d index tensor, as a chain of ``where``: elementwise (a compiler fuses it into one
    kernel, with no indirect indexing), exact, and the others get a zero gradient (never NaN, whatever they hold)."""
    out = tensors[0]
    for i, t in enumerate(tensors[1:], start=1):
        out = torch.where(index == i, t, out)
    return out


def select_row(weight: Tensor, index: Tensor) -> Tensor:
    """``weight[index]`` (a row) for a 0-d index tensor, without indirect indexing: the masked sum of the rows."""
    rows = torch.arange(weight.shape[0], device=weight.device)
    return torch.where((rows == index)[:, None], weight, weight.new_zeros(())).sum(0)


def select_batch_norm(x: Tensor, norm: nn.BatchNorm2d, selected: Tensor) -> Tensor:
    """``norm(x)``, except that in training mode its running statistics (and batch count) move only where the 0-d
    float ``selected`` is 1: a BN of an op the arch did not sample computes but keeps its statistics, as if it had
    not run. Without running statistics, or in eval mode, plain ``norm(x)``."""
    if not (norm.training and norm.track_running_stats):
        return norm(x)
    mean, var = norm.running_mean.clone(), norm.running_var.clone()
    y = F.batch_norm(x, mean, var, norm.weight, norm.bias, True, norm.momentum, norm.eps)  # updates the clones
    with torch.no_grad():
        keep = selected.bool()
        norm.running_mean.copy_(torch.where(keep, mean, norm.running_mean))
        norm.running_var.copy_(torch.where(keep, var, norm.running_var))
        norm.num_batches_tracked.add_(keep.long())
    return y


__all__ = ["pick", "select_batch_norm", "select_row"]
