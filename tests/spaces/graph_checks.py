"""Shared checks of the arch-as-data supernet paths: distinct random archs, the aten op sequence of a step, and
for the CNN spaces one training step of the path and graph supernets compared."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from enas.search.controller import UniformSampler
from enas.spaces.base import TaskInfo

#: the small image task of the CNN graph tests
IMAGES = TaskInfo(in_channels=3, image_size=8, num_classes=5)


def distinct_archs(space, n, seed=0):
    torch.manual_seed(seed)
    sampler = UniformSampler(space)
    found = []
    while len(found) < n:
        arch = sampler.sample().arch
        if arch not in found:
            found.append(arch)
    return found


class OpLog(TorchDispatchMode):
    """Records every aten op dispatched (forward, backward, optimizer)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def step(net, images, labels, arch):
    """One forward + backward of ``net`` on ``arch``: (logits, {name: grad, None as zeros}, {name: buffer})."""
    net.zero_grad(set_to_none=True)
    logits = net(images, arch=arch)[0]
    F.cross_entropy(logits, labels).backward()
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)).clone() for n, p in net.named_parameters()}
    return logits.detach(), grads, {n: b.clone() for n, b in net.named_buffers()}


def assert_steps_equal(a, b, **tol):
    (la, ga, ba), (lb, gb, bb) = a, b
    torch.testing.assert_close(lb, la, **tol)
    assert ga.keys() == gb.keys() and ba.keys() == bb.keys()
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], **tol, msg=lambda m, name=name: f"grad of {name}: {m}")
    for name in ba:
        torch.testing.assert_close(bb[name], ba[name], **tol, msg=lambda m, name=name: f"buffer {name}: {m}")


def step_ops(net, images, labels, arch):
    """The aten ops of one training step of a copy of ``net`` on ``arch``: forward, backward, SGD update."""
    net = copy.deepcopy(net).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with OpLog() as log:
        F.cross_entropy(net(images, arch=arch)[0], labels).backward()
        opt.step()
    return log.ops


def image_batch(n=6, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g, dtype=dtype), torch.randint(0, 5, (n,), generator=g)


def path_and_graph(space, dtype=torch.float64):
    """The space's supernet on `IMAGES` (sampled path) and a copy running the arch as data, same weights."""
    torch.manual_seed(0)
    path = space.build_supernet(IMAGES).to(dtype)
    graph = copy.deepcopy(path)
    graph.set_cell("graph")
    return path, graph


def check_one_compiled_artefact(space, archs):
    """Compiled (dynamo, eager backend) and path supernets take equal steps on ``archs``, one graph for all."""
    from torch._dynamo.testing import CompileCounter

    path, graph = path_and_graph(space, torch.float32)
    counter = CompileCounter()
    graph.set_cell("graph", compiled=True, backend=counter)
    torch._dynamo.reset()
    try:
        images, labels = image_batch()
        for arch in archs:
            assert_steps_equal(step(path, images, labels, arch), step(graph, images, labels, arch),
                               rtol=1e-4, atol=1e-5)
        assert counter.frame_count == 1  # training mode: one graph for every arch
    finally:
        torch._dynamo.reset()
