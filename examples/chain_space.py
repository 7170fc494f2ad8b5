"""A search space of your own in one file: a chain of convolutional layers, each choosing one op.

Nothing inside the enas package changes; the registry finds this space by reference:

    enas search --space examples/chain_space.py:SPACE --data fashion-mnist --preset demo
    enas show runs/search-chain-.../arch.json -o chain.png     # the arch file remembers where the space lives
    enas train runs/search-chain-.../arch.json --preset demo

A space is four things (docs/spaces.md): an `Arch` (plain data with its JSON and integer codecs), a `Space` (the
controller's decision list, the codec from actions to an Arch, the weight-sharing supernet and the standalone
child), presets, and the `SpaceEntry` that names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from enas.arch import Arch, parse_ints
from enas.config import Config, OptimConfig, SearchConfig, TrainConfig
from enas.errors import ArchError
from enas.registry import SpaceEntry
from enas.search.controller import ControllerConfig
from enas.spaces.base import Decision, Space, TaskInfo
from enas.tasks.images import ImageTaskConfig

OPS = ("conv3x3", "conv5x5", "maxpool3x3", "identity")


@dataclass(frozen=True)
class ChainArch(Arch):
    space: ClassVar[str] = "chain"
    ops: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"ops": list(self.ops)}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ChainArch:
        ops = body.get("ops")
        if not isinstance(ops, list) or not ops or any(op not in OPS for op in ops):
            raise ArchError(f"a chain arch needs 'ops': a non-empty list of {', '.join(OPS)}")
        return cls(tuple(ops))

    def to_fixed_arc(self) -> str:
        return " ".join(str(OPS.index(op)) for op in self.ops)

    @classmethod
    def from_fixed_arc(cls, text: str) -> ChainArch:
        ints = parse_ints(text)
        if not ints or max(ints) >= len(OPS):
            raise ArchError(f"a chain fixed_arc is one op index (0..{len(OPS) - 1}) per layer")
        return cls(tuple(OPS[i] for i in ints))

    def describe(self) -> str:
        return "\n".join(f"layer {i}: {op}" for i, op in enumerate(self.ops))


@dataclass
class ChainConfig:
    num_layers: int = 4
    channels: int = 16

    def validate(self) -> None:
        if self.num_layers < 1 or self.channels < 1:
            raise ValueError("model.num_layers and model.channels must be positive")


def _op(name: str, c: int) -> nn.Module:
    if name == "maxpool3x3":
        return nn.MaxPool2d(3, 1, 1)
    if name == "identity":
        return nn.Identity()
    k = int(name[-1])
    return nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, bias=False), nn.BatchNorm2d(c), nn.ReLU())


class ChainNet(nn.Module):
    """The supernet holds every op of every layer (``ops=None``); a child holds one op per layer."""

    def __init__(self, cfg: ChainConfig, info: TaskInfo, ops: tuple[str, ...] | None = None):
        super().__init__()
        c = cfg.channels
        self.fixed = ops
        self.stem = nn.Sequential(nn.Conv2d(info.in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        choices = [OPS if ops is None else (ops[i],) for i in range(cfg.num_layers)]
        self.layers = nn.ModuleList(nn.ModuleDict({op: _op(op, c) for op in names}) for names in choices)
        self.head = nn.Linear(c, info.num_classes)

    def forward(self, images: torch.Tensor, arch: ChainArch | None = None) -> tuple[torch.Tensor, None]:
        ops = self.fixed or arch.ops  # the supernet runs only the sampled path
        x = self.stem(images)
        for layer, op in zip(self.layers, ops):
            x = layer[op](x)
        return self.head(x.mean((2, 3))), None


class ChainSpace(Space):
    name = "chain"
    arch_cls = ChainArch

    def __init__(self, config: ChainConfig | None = None):
        self.config = config or ChainConfig()

    def decisions(self) -> list[Decision]:
        return [Decision("op", f"layer{i}", size=len(OPS), vocab="ops") for i in range(self.config.num_layers)]

    def vocabularies(self) -> dict[str, list[str]]:
        return {"ops": list(OPS)}

    def decode(self, actions: list[Any]) -> ChainArch:
        return ChainArch(tuple(OPS[a] for a in actions))

    def encode(self, arch: ChainArch) -> list[Any]:
        if not isinstance(arch, ChainArch) or len(arch.ops) != self.config.num_layers:
            raise ArchError(f"this chain space has {self.config.num_layers} layers")
        return [OPS.index(op) for op in arch.ops]

    def build_supernet(self, info: TaskInfo) -> nn.Module:
        return ChainNet(self.config, info)

    def build_child(self, arch: ChainArch, info: TaskInfo, final: bool = True) -> nn.Module:
        return ChainNet(self.config, info, arch.ops)

    def child_state_from_supernet(self, supernet: nn.Module, arch: ChainArch) -> dict[str, Any]:
        state = {}
        for key, value in supernet.state_dict().items():
            parts = key.split(".")
            if parts[0] == "layers" and arch.ops[int(parts[1])] != parts[2]:
                continue  # an op the arch does not use
            state[key] = value
        return state


def presets(preset: str, command: str) -> Config:
    """paper = quick = demo here: a small chain on a CPU."""
    model = ChainConfig(num_layers=4, channels=16 if command == "search" else 24)
    task = ImageTaskConfig(valid_size=1000 if command == "search" else 0, batch_size=64, reward_batch_size=64,
                           eval_batch_size=500, augment=False, cutout=0, train_subset=5000, test_subset=1000)
    controller = ControllerConfig(lstm_size=32, train_steps=10, num_aggregate=5, adam_eps=1e-8, adam_tf_eps=False,
                                  baseline_start="first")
    search = SearchConfig(epochs=3, derive_samples=8, optim=OptimConfig(lr=0.05, t0=3))
    train = TrainConfig(epochs=3, optim=OptimConfig(lr=0.05, t0=3))
    return Config(model=model, task=task, controller=controller, search=search, train=train)


def fit_config(model: ChainConfig, arch: ChainArch) -> None:
    model.num_layers = len(arch.ops)


SPACE = SpaceEntry("chain", "images", ChainSpace, ChainArch, presets, fit_config=fit_config,
                   size_keys=("channels", "num_layers"), description="a chain of convolutions, one op per layer")
