"""Per-step cost of the ways to average gradients across ranks, for the supernet and for a child network.

    OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/ddp_sync.py
    python benchmarks/ddp_sync.py --space rnn      # (under torchrun as above) macro (default), micro or rnn

Every timed round runs one training step (forward, backward, gradient averaging, SGD step) of each variant on the
same arch and the same rows, one variant after the other, so that a machine shared with other work slows them all
alike; the medians over the rounds are printed by rank 0 as one JSON line per variant. Supernet variants:

* ``ddp-find-unused``: DistributedDataParallel(find_unused_parameters=True), the only DDP setting that accepts a
  path that changes every step (``static_graph=True`` and ``find_unused_parameters=False`` fail at the 2nd step);
* ``allreduce``: `enas.runs.distributed.average_gradients` (one coalesced all-reduce of the gradients that exist);
* ``local``: no averaging at all (the compute alone, the floor of both).

Child variants: ``ddp`` (find_unused_parameters=False: every parameter is used), ``ddp-find-unused``,
``allreduce`` and ``local``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from enas.presets import make_config
from enas.registry import get
from enas.runs import distributed
from enas.search.controller import UniformSampler
from enas.spaces.base import TaskInfo


def _batch(space: str, rows: int, gen: torch.Generator) -> tuple:
    if get(space).task == "text":
        return (torch.randint(0, 200, (20, rows), generator=gen), torch.randint(0, 200, (20, rows), generator=gen))
    x = torch.randn(rows, 3, 16, 16, generator=gen).contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 10, (rows,), generator=gen)


def _loss(space: str, model: torch.nn.Module, batch: tuple, arch) -> torch.Tensor:
    x, y = batch
    if get(space).task == "text":
        net = model.module if isinstance(model, DistributedDataParallel) else model
        logits, _, _ = model(x, net.init_hidden(x.size(1)), arch=arch)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    logits, _ = model(x, arch=arch)
    return torch.nn.functional.cross_entropy(logits, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="macro", choices=("macro", "micro", "rnn"))
    parser.add_argument("--batch", type=int, default=32, help="global batch (rows or columns)")
    parser.add_argument("--channels", type=int, default=16, help="CNN channels / RNN hidden units")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    distributed.init()
    rank, world = distributed.rank(), distributed.world()

    cfg = make_config(args.space, "demo", "search", "ptb" if args.space == "rnn" else "cifar10")
    if args.space == "rnn":
        cfg.model.hidden = args.channels
        info = TaskInfo(vocab_size=200)
    else:
        cfg.model.channels, cfg.model.num_layers = args.channels, 4
        info = TaskInfo(in_channels=3, image_size=16, num_classes=10)
    torch.manual_seed(0)
    space = get(args.space).build(cfg.model)
    sampler = UniformSampler(space)
    supernet = space.build_supernet(info)
    variants = {
        "supernet ddp-find-unused": (DistributedDataParallel(copy.deepcopy(supernet), find_unused_parameters=True,
                                                             broadcast_buffers=False), None),
        "supernet allreduce": (copy.deepcopy(supernet), "average"),
        "supernet local": (copy.deepcopy(supernet), None),
    }
    child_arch = sampler.sample().arch
    child = space.build_child(child_arch, info, final=True)
    variants.update({
        "child ddp": (DistributedDataParallel(copy.deepcopy(child), broadcast_buffers=False), None),
        "child ddp-find-unused": (DistributedDataParallel(copy.deepcopy(child), find_unused_parameters=True,
                                                          broadcast_buffers=False), None),
        "child allreduce": (copy.deepcopy(child), "average"),
        "child local": (copy.deepcopy(child), None),
    })
    optims = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, (m, _) in variants.items()}
    times: dict[str, list[float]] = {k: [] for k in variants}
    gen = torch.Generator().manual_seed(1)
    for step in range(args.warmup + args.rounds):
        arch = sampler.sample().arch
        batch = _batch(args.space, args.batch, gen)
        share = slice(args.batch * rank // world, args.batch * (rank + 1) // world)
        local = tuple(t[share] if t.dim() != 2 or args.space != "rnn" else t[:, share] for t in batch)
        for name, (model, sync) in variants.items():
            use = child_arch if name.startswith("child") else arch
            model.train()
            dist.barrier()
            t = time.perf_counter()
            loss = _loss(args.space, model, local, use)
            optims[name].zero_grad(set_to_none=True)
            loss.backward()
            if sync:
                distributed.average_gradients(model.parameters())
            optims[name].step()
            if step >= args.warmup:
                times[name].append(time.perf_counter() - t)
    if rank == 0:
        params = {"supernet": sum(p.numel() for p in supernet.parameters()),
                  "child": sum(p.numel() for p in child.parameters())}
        for name, ts in times.items():
            print(json.dumps({"space": args.space, "variant": name, "world": world, "global_batch": args.batch,
                              "params": params[name.split()[0]], "median_ms": round(1000 * statistics.median(ts), 2),
                              "q1_ms": round(1000 * statistics.quantiles(ts, n=4)[0], 2),
                              "q3_ms": round(1000 * statistics.quantiles(ts, n=4)[2], 2)}))
    distributed.destroy()


if __name__ == "__main__":
    main()
