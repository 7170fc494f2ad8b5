"""Batch norm with batch statistics for channels-last CPU tensors with few channels, by matrix products.

The CNN spaces compute in the channels-last layout (`enas.ops.channels_last`). There, the CPU kernel of a training
batch norm vectorises over the channels, the innermost dimension; with the micro space's 20 channels at 32x32 (or the
demo's 8 at 28x28) it runs 3-10x slower than in the contiguous layout, and converting the layout costs as much as it
saves. Viewing the tensor as a (N*H*W, C) matrix instead, every reduction a batch norm needs is a matrix product
that the BLAS runs at memory speed: the per-channel sums are ``x^T 1``, the sums of squares the diagonal of
``x^T x`` and, in the backward pass, the sums of ``dy * x`` the diagonal of ``dy^T x``. The rest is one fused
multiply-add per pass. Measured on a 2-core Xeon (forward + backward, docs/benchmarks.md "Batch norm"): 1.8x faster
at 128x20x32x32, 2.4x at 64x8x28x28; slower from 40 channels and on small maps, hence the bounds in `applies`.

The variance comes from the sums of squares (E[x^2] - E[x]^2). Where that loses precision (a channel whose mean is
large against its spread) the library's kernel runs instead: the check costs one read of C values (the tensors are
on the CPU, so reading them does not wait for a device). Values and gradients equal ``F.batch_norm``'s up to float32
rounding (tests/test_batch_norm.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_CHANNELS = 24  # measured: faster up to 20 channels, slower from 40
MIN_ROWS = 1 << 15  # N*H*W; below it the fixed costs dominate (measured slower at 64x16x14x14)
CONDITION = 1e3  # E[x^2] / (var + eps) above this: the one-pass variance may lose 1e-4 of its value; use the library


def applies(x: Tensor) -> bool:
    """Whether ``x`` takes the matrix-product path (float32 CPU, channels-last, few channels, large enough)."""
    return (x.dim() == 4 and x.device.type == "cpu" and x.dtype == torch.float32
            and x.shape[1] <= MAX_CHANNELS and x.shape[0] * x.shape[2] * x.shape[3] >= MIN_ROWS
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing())


class _BatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, rows: Tensor, ones: Tensor, mean: Tensor,
                invstd: Tensor) -> Tensor:
        n, c, h, w = x.shape
        scale = weight * invstd
        y = torch.addcmul(torch.addcmul(bias, mean, scale, value=-1), rows, scale)  # (N*H*W, C)
        ctx.save_for_backward(rows, ones, mean, invstd, scale)
        ctx.shape = (n, h, w, c)
        return y.view(n, h, w, c).permute(0, 3, 1, 2)  # channels-last (N, C, H, W)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: Tensor):
        rows, ones, mean, invstd, scale = ctx.saved_tensors
        n, h, w, c = ctx.shape
        m = rows.shape[0]
        dy = dy.permute(0, 2, 3, 1).reshape(m, c)  # a view when dy is channels-last
        d_bias = torch.mv(dy.t(), ones)
        d_weight = (torch.mm(dy.t(), rows).diagonal() - mean * d_bias) * invstd  # sum of dy * normalised x
        # dx = scale * (dy - mean(dy) - x_hat * mean(dy * x_hat)) = scale * dy + b * x + a
        b = scale * invstd * d_weight / -m
        a = torch.addcmul(scale * d_bias / -m, b, mean, value=-1)
        dx = torch.addcmul(a, dy, scale).addcmul_(rows, b)
        return dx.view(n, h, w, c).permute(0, 3, 1, 2), d_weight, d_bias, None, None, None, None


def batch_norm(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor, bias: Tensor,
               momentum: float, eps: float) -> Tensor:
    """``F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps)`` (training: batch
    statistics; running statistics, if given, updated in place), on the matrix-product path where `applies`."""
    if not applies(x):
        return F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps)
    c = x.shape[1]
    rows = x.detach().permute(0, 2, 3, 1).reshape(-1, c)  # a view: (N*H*W, C)
    m = rows.shape[0]
    ones = rows.new_ones(m)
    mean = torch.mv(rows.t(), ones) / m
    square = torch.mm(rows.t(), rows).diagonal() / m
    var = (square - mean * mean).clamp_min_(0)
    if bool((square > CONDITION * (var + eps)).any()):  # ill-conditioned: the library's two-pass statistics
        return F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps)
    if running_mean is not None:
        with torch.no_grad():
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(var * (m / (m - 1)), momentum)
    return _BatchNorm.apply(x, weight, bias, rows, ones, mean, torch.rsqrt(var + eps))


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that takes the matrix-product path of `batch_norm` where it applies (same parameters,
    buffers and state dict; any other case runs the library's module)."""

    def forward(self, x: Tensor) -> Tensor:
        batch_stats = self.training or self.running_mean is None
        if not (batch_stats and self.affine and self.momentum is not None and applies(x)):
            return super().forward(x)
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        stats = (self.running_mean, self.running_var) if self.training else (None, None)
        return batch_norm(x, *stats, self.weight, self.bias, self.momentum, self.eps)
