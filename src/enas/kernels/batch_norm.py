"""Batch norm with batch statistics for channels-last CPU tensors, by matrix products, where the library is slow.

The CNN spaces compute in the channels-last layout (`enas.spaces.ops.channels_last`). There, the CPU kernel of a
training
batch norm vectorises over the channels, the innermost dimension, and runs 2-3x slower than it could when their
number is not a multiple of the vector width: the micro space's 20 channels (60 in its stem), the final networks'
36, the demo's 8 and 24 (measured on a 2-core AVX-512 Xeon; converting the layout costs as much as it saves).
Viewing the tensor as a (N*H*W, C) matrix instead, every reduction a batch norm needs is a matrix product that the
BLAS runs at memory speed: the per-channel sums are ``x^T 1``, the sums of squares the diagonal of ``x^T x`` and,
in the backward pass, the sums of ``dy * x`` the diagonal of ``dy^T x``. The rest is one fused multiply-add per
pass. Forward + backward, side by side (``python benchmarks/batch_norm.py``; docs/benchmarks.md "Batch norm by
matrix products"): 2.5x at 128x20x32x32, 2.1x at 128x36x32x32, 3.0x at 64x8x28x28; slower where the library's kernel
vectorises well (16, 32, 40, 72, 80 channels: 0.5-0.9x) and on small maps, hence the bounds in `applies`.

The variance comes from the sums of squares (E[x^2] - E[x]^2). Where that loses precision (a channel whose mean is
large against its spread) the library's kernel runs instead: the check costs one read of C values (the tensors are
on the CPU, so reading them does not wait for a device). Values and gradients equal ``F.batch_norm``'s up to float32
rounding (tests/kernels/test_batch_norm.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from enas import kernels

MAX_CHANNELS = 64  # the sums of squares cost 2 C^2 FLOPs per row as one product (C x C, of which C are used)
MIN_ROWS = 1 << 12  # N*H*W; below it the fixed costs of a few small products dominate
CONDITION = 1e3  # E[x^2] / (var + eps) above this: the one-pass variance may lose 1e-4 of its value; use the library


def _library_is_slow(channels: int) -> bool:
    """Measured: the library's channels-last kernel is fast for 16, 32, 40, 72 and 80 channels, slow for 8, 20, 24,
    36 and 60."""
    return channels % 8 != 0 or (channels % 16 != 0 and channels < 40)


def applies(x: Tensor) -> bool:
    """Whether ``x`` takes the matrix-product path: float32 on the CPU, channels-last, a channel count the library
    handles slowly, large enough; not under compilation, tracing or a dispatch mode, nor with
    ``kernels.bn_products=false`` in the run's config (to compare, or to rule it out)."""
    return (x.dim() == 4 and x.device.type == "cpu" and x.dtype == torch.float32
            and x.shape[1] <= MAX_CHANNELS and _library_is_slow(x.shape[1])
            and x.shape[0] * x.shape[2] * x.shape[3] >= MIN_ROWS
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing() and not _dispatch_mode()
            and kernels.enabled("bn_products"))


def _dispatch_mode() -> bool:
    """Whether a dispatch mode watches the operators (`enas bench`'s FLOP and kernel counters): these count the model
    as a GPU runs it, with the library's batch norm, not this path's products."""
    stack_depth = getattr(torch._C, "_len_torch_dispatch_stack", None)
    return bool(stack_depth and stack_depth())


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
