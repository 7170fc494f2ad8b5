"""The library's training batch norm against `enas.kernels.batch_norm`'s matrix-product path, side by side,
channels-last.

For each shape, forward + backward of both, interleaved over ``--rounds`` rounds. The shapes are the micro space's
at the speed targets' sizes (20 channels at 32x32, 40 at 16x16, 80 at 8x8, the stem's 60 at 32x32), the final
network's (36 channels) and the demo's (8 channels at 28x28, its stem's 24, and after); and 16 and 32 channels.
The matrix-product path is forced on every shape, also those where `enas.kernels.batch_norm.applies` leaves it to the
library, so that the table shows why the bounds sit where they do.

With ``--step SPACE``, a whole supernet training step (forward + backward + SGD) instead, with the matrix-product
path on and off in turn on the same arch, in one process (``--size demo``: the demo preset's sizes, Fashion-MNIST's
28x28 grey images).

    python benchmarks/batch_norm.py
    python benchmarks/batch_norm.py --step micro --rounds 8
    python benchmarks/batch_norm.py --step macro --size demo
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import enas.kernels.batch_norm as ebn
from enas import kernels
from enas.bench.harness import SIZES, _archs, _quartiles, _space
from enas.spaces.base import TaskInfo

DEMO = {"micro": dict(channels=8, num_layers=3, batch=64, image=28),  # the demo presets' supernets
        "macro": dict(channels=16, num_layers=6, batch=64, image=28)}

SHAPES = ((128, 20, 32, 32), (128, 40, 16, 16), (128, 80, 8, 8), (128, 60, 32, 32),  # micro, target sizes
          (144, 36, 32, 32), (144, 72, 16, 16),  # final micro network (36 channels, batch 144)
          (64, 8, 28, 28), (64, 24, 28, 28), (64, 16, 14, 14), (64, 32, 7, 7),  # micro demo (8 channels, 28x28)
          (128, 16, 32, 32), (128, 32, 32, 32))


def _time(fn, repeat: int = 10) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def steps(name: str, size: str, rounds: int) -> None:
    s = DEMO[name] if size == "demo" else SIZES[size][name]
    in_channels = 1 if size == "demo" else 3
    space = _space(name, s)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(s["batch"], in_channels, s["image"], s["image"], generator=g)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (s["batch"],), generator=g)
    net = space.build_supernet(TaskInfo(in_channels=in_channels, image_size=s["image"], num_classes=10)).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    archs = _archs(space, 4)
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(rounds + 1):  # round 0 warms up
        for on in (False, True):
            start = time.perf_counter()
            with kernels.switched(bn_products=on):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(x, arch=archs[i % len(archs)])[0], y).backward()
                opt.step()
            if i:
                times[on].append(time.perf_counter() - start)
    q1, med, q3 = _quartiles([a / b for a, b in zip(times[False], times[True])])
    print(f"| {name} supernet step, {size} sizes {s} | {statistics.median(times[False]):.3f} s "
          f"| {statistics.median(times[True]):.3f} s | {med:.3f} ({q1:.3f}-{q3:.3f}) |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--step", choices=("micro", "macro"), help="time a supernet step instead of the norms alone")
    p.add_argument("--size", default="target", choices=(*SIZES, "demo"))
    args = p.parse_args()
    if args.step:
        print(f"{torch.get_num_threads()} threads, torch {torch.__version__}")
        print("| workload | library | matrix products where they apply | library / with (quartiles) |")
        print("|---|---|---|---|")
        steps(args.step, args.size, args.rounds)
        return
    taken = {shape: ebn.applies(torch.empty(*shape).contiguous(memory_format=torch.channels_last)) for shape in SHAPES}
    ebn.MAX_CHANNELS, ebn.MIN_ROWS = 1 << 30, 0  # force the matrix-product path on every shape
    ebn._library_is_slow = lambda channels: True
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| shape (N, C, H, W) | path taken | library | matrix products | library / matrix products (quartiles) |")
    print("|---|---|---|---|---|")
    for shape in SHAPES:
        g = torch.Generator().manual_seed(0)
        x = (torch.randn(*shape, generator=g) * 2 + 0.5).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        w = torch.ones(shape[1], requires_grad=True)
        b = torch.zeros(shape[1], requires_grad=True)
        dy = torch.randn(*shape, generator=g).contiguous(memory_format=torch.channels_last)
        library = lambda: F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5).backward(dy)  # noqa: B023, E731
        ours = lambda: ebn.batch_norm(x, None, None, w, b, 0.1, 1e-5).backward(dy)  # noqa: B023, E731
        library(), ours()
        a, m = [], []
        for _ in range(args.rounds):
            a.append(_time(library))
            m.append(_time(ours))
        q1, med, q3 = _quartiles([i / j for i, j in zip(a, m)])
        path = "matrix products" if taken[shape] else "library"
        lib_ms, ours_ms = statistics.median(a) * 1e3, statistics.median(m) * 1e3
        print(f"| {shape} | {path} | {lib_ms:.2f} ms | {ours_ms:.2f} ms | {med:.2f} ({q1:.2f}-{q3:.2f}) |")


if __name__ == "__main__":
    main()
