"""Tensor helpers of the arch-as-data supernet paths (`enas.spaces.micro_graph`, `enas.spaces.macro_graph`):
choices made by index tensors, with the same kernels whatever the index."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pick(tensors: list[Tensor], index: Tensor) -> Tensor:
    """``tensors[index]`` for a 0-d index tensor: one gather from their stack (the others get a zero gradient).
    The stack is taken over the NHWC views, so channels-last tensors give a channels-last result."""
    if len(tensors) == 1:
        return tensors[0]
    stacked = torch.stack([t.permute(0, 2, 3, 1) for t in tensors])  # (n, B, H, W, C)
    return stacked.index_select(0, index.view(1))[0].permute(0, 3, 1, 2)


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


__all__ = ["pick", "select_batch_norm"]
