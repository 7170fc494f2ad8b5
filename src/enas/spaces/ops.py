"""Convolutional building blocks shared by the supernets and the children of the CNN spaces.

Layer order follows the authors' code (spec section 8.3): ReLU -> conv -> BN in the micro space.
Initialisation (spec 8.1): He-normal (fan-in) for convs and linear layers, no biases; BN scale 1, offset 0.

`MICRO_OPS` is the op registry of the micro space: for each op name the child's module factory and the supernet's
shared-weight factory, which compute through the same functions so that a child loaded with supernet weights gives
the supernet's output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from enas.kernels.batch_norm import BatchNorm2d, batch_norm
from enas.kernels.graph_ops import pick as pick_by_index
from enas.kernels.graph_ops import select_row

BN_MOMENTUM = 0.1  # TF decay 0.9
BN_EPS = 1e-5


def bn(channels: int, affine: bool = True, track_running_stats: bool = True) -> nn.BatchNorm2d:
    return BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM, affine=affine,
                       track_running_stats=track_running_stats)


class ReLUConvBN(nn.Module):
    """ReLU -> k x k conv (no bias) -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, stride: int = 1, track_running_stats: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = bn(c_out, track_running_stats=track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(F.relu(x)))


class FactorizedReduce(nn.Module):
    """Halve the spatial size without losing the odd pixels (spec 8.4).

    Two paths, each a 1x1 average pool of stride 2 then a 1x1 conv to c_out/2; the second path first shifts the map
    by one pixel; the halves are concatenated and batch-normalised. With ``relu=True`` a ReLU comes first.
    ``track_running_stats=False`` makes the BN use batch statistics in eval mode too (micro search, spec 8.2).
    """

    def __init__(self, c_in: int, c_out: int, relu: bool = False, track_running_stats: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"factorized reduction needs an even number of output channels, got {c_out}")
        self.relu = relu
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.bn = bn(c_out, track_running_stats=track_running_stats)

    def near_identity_(self, noise: float = 0.1) -> None:
        """Output channel o starts as input channel o (near-identity 1x1 convs, see `near_identity_`)."""
        near_identity_(self.conv1.weight, noise)
        near_identity_(self.conv2.weight, noise, offset=self.conv1.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, c_out, ceil(H/2), ceil(W/2))
        return self.bn(factorized_halves(x, self.conv1.weight, self.conv2.weight, self.relu))


def factorized_halves(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, relu: bool) -> torch.Tensor:
    """The two paths of a factorized reduction, concatenated, before its BN: (B, C, H, W) -> (B, 2 c_half, ceil(H/2),
    ceil(W/2)) with 1x1 kernels ``w1``, ``w2`` (c_half, C, 1, 1)."""
    if relu:
        x = F.relu(x)
    path1 = x[:, :, ::2, ::2]  # a 1x1 avg-pool of stride 2 is a strided slice
    shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]  # pad right/bottom, crop first row/column
    path2 = shifted[:, :, ::2, ::2]
    return torch.cat([F.conv2d(path1, w1), F.conv2d(path2, w2)], dim=1)


def batch_norm_batch_stats(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """BN with the batch's statistics and no running statistics (the micro search's BNs, spec 8.2)."""
    return batch_norm(x, None, None, weight, bias, 0.0, BN_EPS)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) in the channels-last memory layout, the layout every CNN of this package computes in:
    depthwise convolutions and pooling run several times faster in it on the CPU (oneDNN) and no slower on the GPU.
    The networks call it on their stem's output, because a batch with one input channel (grey images) cannot carry
    the layout in by itself; results never depend on the layout."""
    return x.contiguous(memory_format=torch.channels_last)


def drop_path(x: torch.Tensor, keep_prob: float, training: bool) -> torch.Tensor:
    """Zero whole examples of ``x`` with probability 1 - keep_prob and rescale the rest; ``x`` is not modified."""
    if not training or keep_prob >= 1.0:
        return x
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep_prob)
    return x * mask / keep_prob


def near_identity_(weight: torch.Tensor, noise: float = 0.1, offset: int = 0) -> torch.Tensor:
    """Initialise a conv weight (C_out, C_in / groups, k, k) in place as a Dirac (output channel o reads input
    channel (o + offset) mod C_in/groups at the kernel centre) plus ``noise`` times a He-normal (fan-in) draw.

    The supernets' choice-consistent initialisation (docs/fidelity.md): alternatives that stand in for one another
    start computing nearly the same channels, so that the weights downstream of a choice see similar features
    whatever the sampled arch."""
    c_out, c_in, kh, kw = weight.shape
    with torch.no_grad():
        weight.normal_(0.0, noise * (2.0 / (c_in * kh * kw)) ** 0.5)
        rows = torch.arange(c_out)
        weight[rows, (rows + offset) % c_in, kh // 2, kw // 2] += 1.0
    return weight


def he_init_(module: nn.Module) -> None:
    """He-normal (fan-in) init of every conv/linear weight below ``module``; BN to scale 1, offset 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------------------------------
# Micro-space ops (spec 2.3): one registry, a child-side factory and a supernet-side (shared-weight) factory per op.
# ---------------------------------------------------------------------------------------------------------------------


def _sep_conv(x: torch.Tensor, stride: int, stacks) -> torch.Tensor:
    """The separable conv of the micro space, applied twice: per stack ReLU -> depthwise k x k -> pointwise 1x1 ->
    BN. ``stacks`` yields (depthwise weight (C, 1, k, k), pointwise weight (C_out, C, 1, 1), norm); only the first
    depthwise conv is strided. Child and supernet both compute through this function."""
    for s, (dw, pw, norm) in enumerate(stacks):
        x = F.conv2d(F.relu(x), dw, None, stride if s == 0 else 1, dw.shape[-1] // 2, 1, dw.shape[0])
        x = norm(F.conv2d(x, pw))
    return x


class SepConv(nn.Module):
    """(ReLU -> depthwise k x k -> pointwise 1x1 -> BN) x 2; the first depthwise conv has the stride."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, track_running_stats: bool = True):
        super().__init__()
        self.stride = stride
        for s, c in enumerate((c_in, c_out)):
            setattr(self, f"dw{s}", nn.Conv2d(c, c, kernel_size, padding=kernel_size // 2, groups=c, bias=False))
            setattr(self, f"pw{s}", nn.Conv2d(c, c_out, 1, bias=False))
            setattr(self, f"bn{s}", bn(c_out, track_running_stats=track_running_stats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, H, W) -> (B, c_out, ceil(H/s), ceil(W/s))
        return _sep_conv(x, self.stride, ((self.dw0.weight, self.pw0.weight, self.bn0),
                                          (self.dw1.weight, self.pw1.weight, self.bn1)))


def pool3x3(kind: str, stride: int) -> nn.Module:
    """3x3 pooling with SAME padding; the average excludes the padding (as TF's SAME pooling does)."""
    if kind == "avg":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    return nn.MaxPool2d(3, stride, 1)


def identity(c: int, stride: int, track_running_stats: bool = True) -> nn.Module:
    """The identity op; with stride 2 (reduction cells) a factorized reduction, as in the authors' code."""
    if stride == 1:
        return nn.Identity()
    return FactorizedReduce(c, c, track_running_stats=track_running_stats)


class SharedSepConv(nn.Module):
    """Shared weights of one separable-conv op for every input a node slot may read (spec 2.3).

    ``weight`` is one Parameter of shape (num_inputs, P), indexed by the sampled input id: row j holds, flattened,
    the depthwise and pointwise kernels and the BN scale and offset of both stacks for input j (layout:
    `ROW_LAYOUT`). One Parameter per op keeps the step cheap: a forward takes a view of one row and splits it into
    views, so its backward is one concatenation plus one scatter into the row. BN always uses batch statistics
    (spec 8.2). Rows are He-normal initialised with the fan-in of one conv, as a child's conv would be (not the
    authors' TF fan-in of the stacked 2-D tensor, spec 8.1).
    """

    ROW_LAYOUT = ("dw0.weight", "pw0.weight", "bn0.weight", "bn0.bias", "dw1.weight", "pw1.weight", "bn1.weight",
                  "bn1.bias")

    def __init__(self, num_inputs: int, c: int, kernel_size: int):
        super().__init__()
        k = kernel_size
        self.shapes = ((c, 1, k, k), (c, c, 1, 1), (c,), (c,)) * 2
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.weight = nn.Parameter(torch.empty(num_inputs, sum(self.sizes)))
        with torch.no_grad():
            dw0, pw0, g0, b0, dw1, pw1, g1, b1 = self.weight.split(self.sizes, dim=1)
            for dw, pw, g, b in ((dw0, pw0, g0, b0), (dw1, pw1, g1, b1)):
                dw.normal_(0.0, (2 / (k * k)) ** 0.5)  # fan-in of a depthwise filter: k * k
                pw.normal_(0.0, (2 / c) ** 0.5)
                g.fill_(1.0)
                b.zero_()

    def near_identity_(self, noise: float = 0.1) -> None:
        """Every row (input) starts near the identity: Dirac depthwise and identity pointwise kernels plus ``noise``
        times a He draw (`near_identity_`); BN scale 1, offset 0."""
        with torch.no_grad():
            for row in range(self.weight.shape[0]):
                dw0, pw0, _, _, dw1, pw1, _, _ = self._row(row)
                for w in (dw0, pw0, dw1, pw1):
                    near_identity_(w, noise)

    def _row(self, input_id: int) -> list[torch.Tensor]:
        """Views of row ``input_id`` in `ROW_LAYOUT` order, with the child's shapes."""
        return [w.view(shape) for w, shape in zip(self.weight[input_id].split(self.sizes), self.shapes)]

    def forward(self, x: torch.Tensor, input_id: int, stride: int) -> torch.Tensor:
        return self._run(x, self._row(input_id), stride)

    def forward_graph(self, x: torch.Tensor, input_id: torch.Tensor, stride: int) -> torch.Tensor:
        """`forward` with the input id as a 0-d device tensor (the arch-as-data path, `enas.spaces.micro.graph`):
        the row is gathered on the device, so the same kernels run whatever the id."""
        row = select_row(self.weight, input_id)
        return self._run(x, [w.view(shape) for w, shape in zip(row.split(self.sizes), self.shapes)], stride)

    @staticmethod
    def _run(x: torch.Tensor, row: list[torch.Tensor], stride: int) -> torch.Tensor:
        dw0, pw0, g0, b0, dw1, pw1, g1, b1 = row
        return _sep_conv(x, stride, ((dw0, pw0, lambda y: batch_norm_batch_stats(y, g0, b0)),
                                     (dw1, pw1, lambda y: batch_norm_batch_stats(y, g1, b1))))

    def child_state(self, input_id: int, stride: int) -> dict[str, torch.Tensor]:
        """The state of a ``SepConv(c, c, k, stride, track_running_stats=False)`` holding row ``input_id``."""
        return {name: w.detach().clone() for name, w in zip(self.ROW_LAYOUT, self._row(input_id))}


class SharedParameterFree(nn.Module):
    """A parameter-free op (pooling, stride-1 identity) in the supernet: one module serves every input."""

    def __init__(self, build):
        super().__init__()
        self.stride1, self.stride2 = build(1), build(2)

    def forward(self, x: torch.Tensor, input_id: int, stride: int) -> torch.Tensor:
        return (self.stride1 if stride == 1 else self.stride2)(x)

    def forward_graph(self, x: torch.Tensor, input_id: torch.Tensor, stride: int) -> torch.Tensor:
        return self.forward(x, 0, stride)

    def child_state(self, input_id: int, stride: int) -> dict[str, torch.Tensor]:
        return {}


class SharedIdentity(nn.Module):
    """The identity op in the supernet; in a reduction cell, reading input 0 or 1 means a factorized reduction with
    its own weights per input."""

    def __init__(self, num_inputs: int, c: int, reduction: bool):
        super().__init__()
        n = min(num_inputs, 2) if reduction else 0
        self.reduce = nn.ModuleList(FactorizedReduce(c, c, track_running_stats=False) for _ in range(n))

    def near_identity_(self, noise: float = 0.1) -> None:
        for reduce in self.reduce:
            reduce.near_identity_(noise)

    def forward(self, x: torch.Tensor, input_id: int, stride: int) -> torch.Tensor:
        return x if stride == 1 else self.reduce[input_id](x)

    def forward_graph(self, x: torch.Tensor, input_id: torch.Tensor, stride: int) -> torch.Tensor:
        """`forward` with the input id as a 0-d device tensor: the reduction's weights are gathered by it."""
        if stride == 1:
            return x
        def pick(name: str) -> torch.Tensor:
            return pick_by_index([r.get_parameter(name) for r in self.reduce], input_id)

        y = factorized_halves(x, pick("conv1.weight"), pick("conv2.weight"), relu=False)
        return batch_norm_batch_stats(y, pick("bn.weight"), pick("bn.bias"))

    def child_state(self, input_id: int, stride: int) -> dict[str, torch.Tensor]:
        if stride == 1:
            return {}
        return {k: v.detach().clone() for k, v in self.reduce[input_id].state_dict().items()}


@dataclass(frozen=True)
class MicroOp:
    """One op of the micro space.

    build(c, stride, track_running_stats) -> the child's module (C -> C channels).
    build_shared(num_inputs, c, reduction) -> the supernet's module: ``forward(x, input_id, stride)``,
        ``forward_graph(x, input_id, stride)`` (the same with the id as a 0-d device tensor, for the arch-as-data
        path) and ``child_state(input_id, stride)`` (the state_dict of the child module for that input).
    drop_path: whether drop-path applies to its output (every op but identity, as in the authors' code).
    """

    name: str
    build: Callable[[int, int, bool], nn.Module]
    build_shared: Callable[[int, int, bool], nn.Module]
    drop_path: bool = True


def _pool_op(name: str, kind: str) -> MicroOp:
    return MicroOp(name, lambda c, stride, track=True: pool3x3(kind, stride),
                   lambda n, c, reduction: SharedParameterFree(lambda stride: pool3x3(kind, stride)))


def _sep_op(name: str, k: int) -> MicroOp:
    return MicroOp(name, lambda c, stride, track=True: SepConv(c, c, k, stride, track),
                   lambda n, c, reduction: SharedSepConv(n, c, k))


#: Micro ops by name, in the authors' id order (0 sep3x3, 1 sep5x5, 2 avg-pool, 3 max-pool, 4 identity).
MICRO_OPS: dict[str, MicroOp] = {
    op.name: op
    for op in (
        _sep_op("sep3x3", 3),
        _sep_op("sep5x5", 5),
        _pool_op("avgpool3x3", "avg"),
        _pool_op("maxpool3x3", "max"),
        MicroOp("identity", lambda c, stride, track=True: identity(c, stride, track),
                lambda n, c, reduction: SharedIdentity(n, c, reduction), drop_path=False),
    )
}
