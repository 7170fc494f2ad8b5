"""What packing the recurrent cell's weights buys (`enas.kernels.packed`), measured side by side in one process.

Two interleaved comparisons, plain (``kernels.packed=false``) against packed, each round timing both in turn so that the
drift of a shared machine falls on both sides of the ratio:

* one per-step product (B, H) @ (H, 2kH) at the recurrent target sizes, for k = 1 and k = 3 nodes in a group
  (the packing cost is timed apart: it is paid once per forward pass, not per step);
* a whole supernet training step (forward + backward + SGD) on the benchmark's fixed archs.

    python benchmarks/packed_products.py               # target sizes, 10 rounds
    python benchmarks/packed_products.py --size demo       # the recurrent demo's sizes
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from enas import kernels
from enas.bench.harness import SIZES, _archs, _quartiles, _space
from enas.kernels.packed import Operand, packing_enabled
from enas.spaces.base import TaskInfo

# the recurrent demo preset's sizes (hidden 64, 8 nodes, batch 32, BPTT 35, PTB's 10k words), beside the bench's
SIZES_HERE = {**{k: v["rnn"] for k, v in SIZES.items()},
              "demo": dict(hidden=64, batch=32, bptt=35, vocab=10000, num_nodes=8)}


def _time(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def _report(name: str, plain: list[float], packed: list[float]) -> None:
    q1, med, q3 = _quartiles([a / b for a, b in zip(plain, packed)])
    print(f"| {name} | {statistics.median(plain) * 1e3:.2f} ms | {statistics.median(packed) * 1e3:.2f} ms "
          f"| {med:.3f} ({q1:.3f}-{q3:.3f}) |")


def products(s: dict[str, int], rounds: int) -> None:
    hidden, batch = s["hidden"], s["batch"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, hidden, generator=g)
    for k in (1, 3):
        w = torch.randn(hidden, 2 * k * hidden, generator=g)
        w_t = w.t().contiguous()
        op = Operand(w_t, batch)
        pack = _time(lambda: Operand(w_t, batch), 3)  # noqa: B023
        plain, packed = [], []
        for _ in range(rounds):
            plain.append(_time(lambda: x @ w_t.t(), 20))  # noqa: B023
            packed.append(_time(lambda: op(x), 20))  # noqa: B023
        how = f"packing {pack * 1e3:.1f} ms" if op.packed is not None else "too small to pack: both plain"
        _report(f"product ({batch}, {hidden}) @ ({hidden}, {2 * k * hidden}); {how}", plain, packed)


def steps(s: dict[str, int], rounds: int) -> None:
    space = _space("rnn", s)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, s["vocab"], (s["bptt"], s["batch"]), generator=g)
    y = torch.randint(0, s["vocab"], (s["bptt"], s["batch"]), generator=g)
    net = space.build_supernet(TaskInfo(vocab_size=s["vocab"])).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    archs = _archs(space, 4)

    def step(arch) -> None:
        opt.zero_grad(set_to_none=True)
        out = net(x, net.init_hidden(s["batch"]), arch=arch)[0]
        F.cross_entropy(out.flatten(0, 1), y.flatten()).backward()
        opt.step()

    times: dict[str, list[float]] = {"0": [], "1": []}
    for i in range(rounds + 1):  # round 0 warms up
        for flag in ("0", "1"):
            with kernels.switched(packed=flag == "1"):
                t = _time(lambda: step(archs[i % len(archs)]))  # noqa: B023
            if i:
                times[flag].append(t)
    _report("supernet step (fwd + bwd + SGD)", times["0"], times["1"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--size", default="target", choices=tuple(SIZES_HERE))
    args = p.parse_args()
    if not packing_enabled(torch.zeros(1)):
        raise SystemExit("packing does not apply on this build (no MKL, or kernels.packed=false): nothing to compare")
    s = SIZES_HERE[args.size]
    print(f"rnn sizes {args.size}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| workload | plain (median) | packed (median) | plain / packed per round (quartiles) |\n|---|---|---|---|")
    products(s, args.rounds)
    steps(s, args.rounds)


if __name__ == "__main__":
    main()
