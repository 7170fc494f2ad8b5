"""Where a supernet step spends its time: the aten operators of one training step, by self time.

Builds the supernet of a space at the sizes of the speed targets (`enas.bench.harness.SIZES`), runs a few warm-up
steps on
the benchmark's fixed archs, then profiles ``--steps`` steps (forward + backward + SGD update, a fresh arch each)
and prints the operators that take the most self CPU time, grouped so that a reader sees which kind of work
dominates (matrix products, convolutions, batch norm, elementwise, ...).

    python benchmarks/profile_step.py --space rnn
    python benchmarks/profile_step.py --space micro --top 15
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from enas.bench.harness import SIZES, _archs, _space
from enas.spaces.base import TaskInfo

# operator name fragments -> kind of work, first match wins
KINDS = (
    ("matrix products", ("mm", "addmm", "bmm", "matmul", "linear", "_WeightProbes", "_Product")),
    ("convolutions", ("conv", "mkldnn")),
    ("batch norm", ("batch_norm",)),
    ("pooling", ("pool",)),
    ("softmax / loss", ("softmax", "nll_loss", "cross_entropy")),
    ("copies and layout", ("copy_", "clone", "cat", "stack", "contiguous", "index", "gather", "scatter")),
    ("optimizer", ("_foreach", "sgd")),
)


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, fragments in KINDS:
        if any(f.lower() in lowered for f in fragments):
            return kind
    return "elementwise and other"


def profile_space(name: str, steps: int, warmup: int, size: str = "target") -> tuple[list[dict], dict[str, float],
                                                                                  float]:
    s = SIZES[size][name]
    space = _space(name, s)
    g = torch.Generator().manual_seed(0)
    if name == "rnn":
        info = TaskInfo(vocab_size=s["vocab"])
        x = torch.randint(0, s["vocab"], (s["bptt"], s["batch"]), generator=g)
        y = torch.randint(0, s["vocab"], (s["bptt"], s["batch"]), generator=g)

        def loss(net, arch):
            return F.cross_entropy(net(x, net.init_hidden(s["batch"]), arch=arch)[0].flatten(0, 1), y.flatten())
    else:
        info = TaskInfo(in_channels=3, image_size=s["image"], num_classes=10)
        x = torch.randn(s["batch"], 3, s["image"], s["image"], generator=g)
        x = x.contiguous(memory_format=torch.channels_last)  # the layout the image task serves
        y = torch.randint(0, 10, (s["batch"],), generator=g)

        def loss(net, arch):
            return F.cross_entropy(net(x, arch=arch)[0], y)

    net = space.build_supernet(info).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    archs = _archs(space, warmup + steps)

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        loss(net, archs[i]).backward()
        opt.step()

    for i in range(warmup):
        step(i)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(warmup, warmup + steps):
            step(i)
    rows = [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6 / steps, "calls": e.count / steps}
            for e in prof.key_averages() if e.self_cpu_time_total > 0]
    rows.sort(key=lambda r: -r["self_s"])
    total = sum(r["self_s"] for r in rows)
    kinds: dict[str, float] = defaultdict(float)
    for r in rows:
        kinds[kind_of(r["op"])] += r["self_s"]
    return rows, dict(sorted(kinds.items(), key=lambda kv: -kv[1])), total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", required=True, choices=("rnn", "macro", "micro"))
    p.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--size", default="target", choices=tuple(SIZES))
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args()
    rows, kinds, total = profile_space(args.space, args.steps, args.warmup, args.size)
    print(f"{args.space} supernet step ({args.size} sizes, {torch.get_num_threads()} threads): {total:.3f} s of "
          f"operator self time per step")
    print("| kind of work | s per step | share |\n|---|---|---|")
    for kind, t in kinds.items():
        print(f"| {kind} | {t:.3f} | {t / total:.0%} |")
    print("\n| operator | s per step | share | calls per step |\n|---|---|---|---|")
    for r in rows[:args.top]:
        print(f"| `{r['op']}` | {r['self_s']:.3f} | {r['self_s'] / total:.0%} | {r['calls']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"space": args.space, "total_s": total, "kinds": kinds,
                                               "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
