"""Building blocks of the macro CNN (spec 2.2, 8.3): the per-op branches and the layers that merge skips.

Two families, following the authors' code:

* search mode (supernet, and a child built with ``final=False``): post-activation branches. Conv branch
  ``1x1 conv -> BN -> ReLU -> kxk conv (or depthwise kxk + pointwise) -> BN -> ReLU``; pool branch
  ``1x1 conv -> BN -> ReLU -> 3x3 pool (stride 1)``. Skips are merged by a sum followed by BN.
* final mode (a child built with ``final=True``): pre-activation ops ``ReLU -> 1x1 conv -> BN -> ReLU -> op -> BN``;
  skips are merged by ``concat -> ReLU -> 1x1 conv -> BN``. Unlike the authors' fixed-arc code (which builds plain
  convs for the separable ops and cannot build the pooling ops, spec 8.6 item 3), separable convs are separable here
  and pooling ops work.

Every op keeps the spatial size (stride 1, "same" padding) and maps ``c_in`` to ``c_out`` channels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from enas.spaces.ops import BN_MOMENTUM, bn, near_identity_

# The authors' search-mode conv branch normalises its kxk output with a channel-masked BN whose epsilon is 1e-3
# (spec 8.2); every other BN of the network uses ops.BN_EPS.
MASKED_BN_EPS = 1e-3

# op name -> (kind, kernel size); kind is "conv", "sep", "avg" or "max".
OP_SPECS: dict[str, tuple[str, int]] = {
    "conv3x3": ("conv", 3),
    "sep3x3": ("sep", 3),
    "conv5x5": ("conv", 5),
    "sep5x5": ("sep", 5),
    "avgpool3x3": ("avg", 3),
    "maxpool3x3": ("max", 3),
}


def spatial_op(kind: str, kernel: int, channels: int) -> nn.Module:
    """The op proper at stride 1 with "same" padding: a conv, a separable conv (depthwise then pointwise, no
    nonlinearity in between, as TF's separable_conv2d) or a pool (the average excludes the padding, as TF's SAME)."""
    pad = kernel // 2
    if kind == "conv":
        return nn.Conv2d(channels, channels, kernel, padding=pad, bias=False)
    if kind == "sep":
        return nn.Sequential(
            nn.Conv2d(channels, channels, kernel, padding=pad, groups=channels, bias=False),  # depthwise
            nn.Conv2d(channels, channels, 1, bias=False),  # pointwise
        )
    if kind == "avg":
        return nn.AvgPool2d(kernel, stride=1, padding=pad, count_include_pad=False)
    if kind == "max":
        return nn.MaxPool2d(kernel, stride=1, padding=pad)
    raise ValueError(f"unknown op kind {kind!r}")


def conv_bn_relu_1x1(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), bn(c_out), nn.ReLU())


class SearchBranch(nn.Module):
    """Search-mode branch of one op (post-activation). (B, c_in, H, W) -> (B, c_out, H, W)."""

    def __init__(self, op: str, c_in: int, c_out: int):
        super().__init__()
        kind, kernel = OP_SPECS[op]
        self.inp = conv_bn_relu_1x1(c_in, c_out)
        self.op = spatial_op(kind, kernel, c_out)
        if kind in ("conv", "sep"):
            self.out = nn.Sequential(nn.BatchNorm2d(c_out, eps=MASKED_BN_EPS, momentum=BN_MOMENTUM), nn.ReLU())
        else:
            self.out = nn.Identity()  # pool branches end with the pool

    def near_identity_(self, noise: float = 0.1) -> None:
        """Start the 1x1 input conv and the op's kernels near the identity (choice-consistent initialisation,
        docs/fidelity.md): every branch of a layer then first passes on the same channels."""
        for m in (*self.inp.modules(), *self.op.modules()):
            if isinstance(m, nn.Conv2d):
                near_identity_(m.weight, noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.op(self.inp(x)))


class FinalOp(nn.Module):
    """Final-mode op (pre-activation): ReLU -> 1x1 conv -> BN -> ReLU -> op -> BN.
    (B, c_in, H, W) -> (B, c_out, H, W)."""

    def __init__(self, op: str, c_in: int, c_out: int):
        super().__init__()
        kind, kernel = OP_SPECS[op]
        self.conv1x1 = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn1 = bn(c_out)
        self.op = spatial_op(kind, kernel, c_out)
        self.bn2 = bn(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1x1(F.relu(x)))
        return self.bn2(self.op(F.relu(x)))


# The op registry of the macro space: name -> factory(c_in, c_out) for each mode. Supernet and search-mode child
# build their branches from SEARCH_OPS, the final child from FINAL_OPS.
SEARCH_OPS: dict[str, Callable[[int, int], nn.Module]] = {
    name: (lambda c_in, c_out, name=name: SearchBranch(name, c_in, c_out)) for name in OP_SPECS
}
FINAL_OPS: dict[str, Callable[[int, int], nn.Module]] = {
    name: (lambda c_in, c_out, name=name: FinalOp(name, c_in, c_out)) for name in OP_SPECS
}


class SearchLayer(nn.Module):
    """One search-mode layer: a branch per op in ``ops`` (own weights each) and, for k >= 1, the BN after the
    skip sum. Only the branch named in `forward` runs; the others get no gradient and no BN statistics."""

    def __init__(self, index: int, ops: Sequence[str], channels: int):
        super().__init__()
        self.branches = nn.ModuleDict({op: SEARCH_OPS[op](channels, channels) for op in ops})
        self.merge_bn = bn(channels) if index > 0 else None

    def forward(self, x: torch.Tensor, op: str, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        out = self.branches[op](x)  # (B, C, H, W)
        if self.merge_bn is None:  # layer 0 has no skip merge
            return out
        for s in skips:
            out = out + s
        return self.merge_bn(out)


class FinalLayer(nn.Module):
    """One final-mode layer: the op, then (k >= 1) concat[selected skips, op output] -> ReLU -> 1x1 conv -> BN.

    ``num_skips`` is the number of selected skip inputs, each of ``channels`` channels like the op output.
    """

    def __init__(self, index: int, op: str, num_skips: int, c_in: int, channels: int):
        super().__init__()
        self.op = FINAL_OPS[op](c_in, channels)
        if index > 0:
            self.merge = nn.Conv2d((num_skips + 1) * channels, channels, 1, bias=False)
            self.merge_bn = bn(channels)
        else:
            self.merge = self.merge_bn = None

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        out = self.op(x)  # (B, C, H, W)
        if self.merge is None:
            return out
        cat = torch.cat([*skips, out], dim=1) if skips else out  # (B, (n + 1) C, H, W)
        return self.merge_bn(self.merge(F.relu(cat)))


__all__ = ["FINAL_OPS", "MASKED_BN_EPS", "OP_SPECS", "SEARCH_OPS", "FinalLayer", "FinalOp", "SearchBranch",
           "SearchLayer", "spatial_op"]
