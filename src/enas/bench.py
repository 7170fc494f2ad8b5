"""Throughput benchmarks, reported as ratios (absolute times depend on the machine).

* recurrent: the supernet (a uniformly sampled arch per step) against a plain 2-layer ``nn.LSTM`` language model of
  the same width, both trained with tied embeddings on random tokens; target >= 0.75 (tokens/s ratio).
* micro: the supernet against a plain 4-conv CNN (conv-BN-ReLU at 32, 64, 128, 256 channels, the last three with
  stride 2, global pooling, linear); target >= 0.4 (images/s ratio).
* every space: a supernet step against the step of the standalone child of the same arch (built with the
  search-time layers); target <= 1.15 (time ratio).
A step is forward + backward + SGD update. Each measurement takes the median of several timed steps after warm-up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from enas.runs import resolve_device
from enas.spaces.base import TaskInfo

SIZES = {
    "target": {"rnn": dict(hidden=1000, batch=64, bptt=35, vocab=10000, num_nodes=12),
               "micro": dict(channels=20, num_layers=6, batch=128, image=32),
               "macro": dict(channels=36, num_layers=12, batch=128, image=32)},
    "small": {"rnn": dict(hidden=64, batch=8, bptt=10, vocab=200, num_nodes=6),
              "micro": dict(channels=8, num_layers=3, batch=8, image=16),
              "macro": dict(channels=8, num_layers=6, batch=8, image=16)},
}


class LSTMLanguageModel(nn.Module):
    """The baseline: embedding -> 2-layer nn.LSTM -> tied decoder."""

    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, B) -> (T, B, V)
        out, _ = self.lstm(self.embedding(x))
        return out @ self.embedding.weight.t()


class FourConvCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        widths, layers, c = (32, 64, 128, 256), [], in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, 1 if i == 0 else 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))


def _time_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    """Median seconds per call of ``step``."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _sgd_step(model: nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()

    return step


def bench_rnn(device: torch.device, size: str, warmup: int = 2, steps: int = 5) -> dict[str, Any]:
    from enas.controller import UniformSampler
    from enas.spaces.rnn import RnnSpace, RnnSpaceConfig

    s = SIZES[size]["rnn"]
    info = TaskInfo(vocab_size=s["vocab"])
    x = torch.randint(0, s["vocab"], (s["bptt"], s["batch"]), device=device)
    y = torch.randint(0, s["vocab"], (s["bptt"], s["batch"]), device=device)
    space = RnnSpace(RnnSpaceConfig(hidden=s["hidden"], num_nodes=s["num_nodes"]))
    sampler = UniformSampler(space)
    archs = [sampler.sample().arch for _ in range(warmup + steps)]

    base = LSTMLanguageModel(s["vocab"], s["hidden"]).to(device)
    t_base = _time_steps(_sgd_step(base, lambda: F.cross_entropy(base(x).flatten(0, 1), y.flatten())), device,
                         warmup, steps)

    supernet = space.build_supernet(info).to(device).train()
    hidden = supernet.init_hidden(s["batch"])
    it = iter(archs * 2)

    def super_loss() -> torch.Tensor:
        logits, _, _ = supernet(x, hidden, arch=next(it))
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    t_super = _time_steps(_sgd_step(supernet, super_loss), device, warmup, steps)
    arch = archs[0]
    child = space.build_child(arch, info, final=False).to(device).train()
    child.load_state_dict(space.child_state_from_supernet(supernet, arch))

    def child_loss() -> torch.Tensor:
        logits, _, _ = child(x, hidden)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    def super_fixed_loss() -> torch.Tensor:
        logits, _, _ = supernet(x, hidden, arch=arch)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    t_child = _time_steps(_sgd_step(child, child_loss), device, warmup, steps)
    t_super_fixed = _time_steps(_sgd_step(supernet, super_fixed_loss), device, warmup, steps)
    tokens = s["bptt"] * s["batch"]
    return {"space": "rnn", "sizes": s, "supernet_tokens_per_s": tokens / t_super,
            "lstm_tokens_per_s": tokens / t_base, "supernet_vs_lstm": t_base / t_super, "target_vs_lstm": 0.75,
            "supernet_vs_child_step": t_super_fixed / t_child, "target_vs_child": 1.15}


def bench_cnn(space_name: str, device: torch.device, size: str, warmup: int = 2, steps: int = 5) -> dict[str, Any]:
    from enas.controller import UniformSampler
    from enas.spaces.macro import MacroSpace, MacroSpaceConfig
    from enas.spaces.micro import MicroSpace, MicroSpaceConfig

    s = SIZES[size][space_name]
    info = TaskInfo(in_channels=3, image_size=s["image"], num_classes=10)
    x = torch.randn(s["batch"], 3, s["image"], s["image"], device=device)
    x = x.contiguous(memory_format=torch.channels_last)  # the layout the image task serves
    y = torch.randint(0, 10, (s["batch"],), device=device)
    if space_name == "micro":
        space = MicroSpace(MicroSpaceConfig(channels=s["channels"], num_layers=s["num_layers"]))
    else:
        space = MacroSpace(MacroSpaceConfig(channels=s["channels"], num_layers=s["num_layers"]))
    sampler = UniformSampler(space)
    archs = [sampler.sample().arch for _ in range(warmup + steps)]
    supernet = space.build_supernet(info).to(device).train()
    it = iter(archs * 2)
    t_super = _time_steps(_sgd_step(supernet, lambda: F.cross_entropy(supernet(x, arch=next(it))[0], y)), device,
                          warmup, steps)
    arch = archs[0]
    child = space.build_child(arch, info, final=False).to(device).train()
    child.load_state_dict(space.child_state_from_supernet(supernet, arch))
    t_child = _time_steps(_sgd_step(child, lambda: F.cross_entropy(child(x)[0], y)), device, warmup, steps)
    t_fixed = _time_steps(_sgd_step(supernet, lambda: F.cross_entropy(supernet(x, arch=arch)[0], y)), device,
                          warmup, steps)
    out = {"space": space_name, "sizes": s, "supernet_images_per_s": s["batch"] / t_super,
           "supernet_vs_child_step": t_fixed / t_child, "target_vs_child": 1.15}
    if space_name == "micro":
        base = FourConvCNN(3, 10).to(device).train()
        t_base = _time_steps(_sgd_step(base, lambda: F.cross_entropy(base(x), y)), device, warmup, steps)
        out.update({"cnn4_images_per_s": s["batch"] / t_base, "supernet_vs_cnn4": t_base / t_super,
                    "target_vs_cnn4": 0.4})
    return out


def run_benchmarks(spaces: list[str], device: str = "auto", size: str = "target", verbose: bool = True,
                   warmup: int = 2, steps: int = 5) -> list[dict[str, Any]]:
    dev = resolve_device(device)
    results = []
    for name in spaces:
        if name == "rnn":
            r = bench_rnn(dev, size, warmup, steps)
        else:
            r = bench_cnn(name, dev, size, warmup, steps)
        r["device"] = str(dev)
        r["threads"] = torch.get_num_threads()
        results.append(r)
        if verbose:
            ratios = {k: round(v, 3) for k, v in r.items() if "_vs_" in k}
            print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in ratios.items()), flush=True)
    return results
