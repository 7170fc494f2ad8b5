"""Batch norm by matrix products (`enas.kernels.batch_norm`): the library's values, gradients and running statistics."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from enas.kernels.batch_norm import BatchNorm2d, applies, batch_norm

SHAPE = (8, 20, 64, 64)  # 32,768 rows of 20 channels: the smallest size on the fast path


def channels_last(*shape, mean=0.5, std=2.0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype) * std + mean
    return x.contiguous(memory_format=torch.channels_last)


def test_applies_only_where_measured_faster():
    assert applies(channels_last(*SHAPE))
    assert not applies(channels_last(*SHAPE).contiguous())  # the contiguous layout: the library is fast there
    assert not applies(channels_last(*SHAPE, dtype=torch.float64))
    assert applies(channels_last(16, 36, 16, 16)) and applies(channels_last(16, 8, 16, 16))
    for c in (16, 32, 40, 72, 80):  # channel counts the library's kernel handles well
        assert not applies(channels_last(16, c, 16, 16)), c
    assert not applies(channels_last(16, 100, 16, 16))  # the C x C product grows too large
    assert not applies(channels_last(1, 20, 32, 32))  # small: 1,024 rows
    assert not applies(torch.zeros(8, 20, 64))
    with FlopCounterMode(display=False):  # FLOP and kernel counts see the library's batch norm
        assert not applies(channels_last(*SHAPE))


@pytest.mark.parametrize("running", [False, True])
def test_values_gradients_and_running_statistics_equal_the_library(running):
    x = channels_last(*SHAPE).requires_grad_()
    w = torch.rand(SHAPE[1], generator=torch.Generator().manual_seed(1)).add(0.5).requires_grad_()
    b = torch.randn(SHAPE[1], generator=torch.Generator().manual_seed(2)).requires_grad_()
    dy = channels_last(*SHAPE, mean=0.0, std=1.0, seed=3)
    results = []
    for fn in (batch_norm, None):
        g = torch.Generator().manual_seed(4)  # the same starting statistics for both
        c = SHAPE[1]
        stats = (torch.rand(c, generator=g), torch.rand(c, generator=g) + 0.5) if running else (None, None)
        for p in (x, w, b):
            p.grad = None
        if fn is None:
            y = F.batch_norm(x, *stats, w, b, True, 0.1, 1e-5)
        else:
            y = fn(x, *stats, w, b, 0.1, 1e-5)
            assert type(y.grad_fn).__name__ == "_BatchNormBackward"  # the matrix-product path ran
            assert y.is_contiguous(memory_format=torch.channels_last)
        y.backward(dy)
        results.append([y.detach(), x.grad, w.grad, b.grad, *(s for s in stats if s is not None)])
    for name, fast, ref in zip(("y", "dx", "dw", "db", "running_mean", "running_var"), *results):
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=2e-5 * ref.abs().max().item(), msg=name)


def test_ill_conditioned_channels_run_the_library():
    x = channels_last(*SHAPE, mean=1000.0, std=0.05).requires_grad_()  # E[x^2] / var = 4e8
    w, b = torch.ones(SHAPE[1], requires_grad=True), torch.zeros(SHAPE[1], requires_grad=True)
    y = batch_norm(x, None, None, w, b, 0.1, 1e-5)
    assert type(y.grad_fn).__name__ != "_BatchNormBackward"
    torch.testing.assert_close(y, F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5))


@pytest.mark.parametrize("track", [True, False])
def test_module_is_a_drop_in_for_the_library_module(track):
    torch.manual_seed(0)
    ours, ref = BatchNorm2d(SHAPE[1], track_running_stats=track), nn.BatchNorm2d(SHAPE[1], track_running_stats=track)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
    ref.load_state_dict(ours.state_dict())
    assert ours.state_dict().keys() == ref.state_dict().keys()
    x = channels_last(*SHAPE)
    for mode in ("train", "train", "eval"):
        for m in (ours, ref):
            m.train(mode == "train")
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
        for (name, a), (_, r) in zip(ours.state_dict().items(), ref.state_dict().items()):
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6, msg=name)
    assert isinstance(ours, nn.BatchNorm2d)
