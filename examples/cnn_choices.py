"""A small CNN for images written as an ordinary module with choices (`enas.nn`): each layer picks its op, and
each layer may add any subset of the earlier layers' outputs (skip connections).

    enas search --space examples/cnn_choices.py:SPACE --data fashion-mnist --preset demo
    enas train runs/.../arch.json --data fashion-mnist --preset demo
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from enas.config import Config, OptimConfig, SearchConfig, TrainConfig
from enas.nn import InputChoice, OpChoice, choice_space
from enas.search.controller import ControllerConfig
from enas.tasks.images import ImageTaskConfig


@dataclass
class CnnConfig:
    layers: int = 4
    channels: int = 16


def conv(c: int, k: int, separable: bool = False) -> nn.Module:
    groups = c if separable else 1
    layers = [nn.Conv2d(c, c, k, padding=k // 2, groups=groups, bias=False)]
    if separable:
        layers.append(nn.Conv2d(c, c, 1, bias=False))
    return nn.Sequential(*layers, nn.BatchNorm2d(c), nn.ReLU())


class Net(nn.Module):
    def __init__(self, cfg: CnnConfig, info):
        super().__init__()
        c = cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(info.in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.ops = nn.ModuleList(
            OpChoice({"conv3x3": conv(c, 3), "conv5x5": conv(c, 5), "sep3x3": conv(c, 3, True),
                      "maxpool": nn.MaxPool2d(3, 1, 1)}) for _ in range(cfg.layers))
        # layer i may add the outputs of layers 0..i-1 (layer 0 has no earlier layer to choose from)
        self.skips = nn.ModuleList(InputChoice(i, n_chosen=None, reduction="mean") for i in range(1, cfg.layers))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(c, info.num_classes)

    def forward(self, x):
        outputs = []
        x = self.stem(x)
        for i, op in enumerate(self.ops):
            x = op(x)
            if i > 0:
                x = x + self.skips[i - 1](outputs)
            outputs.append(x)
            if i == len(self.ops) // 2 - 1:  # halve the resolution once, in the middle
                x = self.pool(x)
                outputs = [self.pool(o) for o in outputs]
        return self.head(x.mean((2, 3)))


def presets(preset: str, command: str) -> Config:
    """One small size for every preset: minutes on a CPU."""
    model = CnnConfig(layers=4, channels=16 if command == "search" else 24)
    task = ImageTaskConfig(valid_size=1000 if command == "search" else 0, batch_size=64, reward_batch_size=64,
                           eval_batch_size=500, augment=False, cutout=0, train_subset=5000, test_subset=1000)
    controller = ControllerConfig(lstm_size=32, train_steps=10, num_aggregate=5, adam_eps=1e-8, adam_tf_eps=False,
                                  baseline_start="first")
    search = SearchConfig(epochs=3, derive_samples=8, optim=OptimConfig(lr=0.05, t0=3))
    train = TrainConfig(epochs=3, optim=OptimConfig(lr=0.05, t0=3))
    return Config(model=model, task=task, controller=controller, search=search, train=train)


def fit_config(model: CnnConfig, arch) -> None:
    """An arch file decides the depth (one ops/i label per layer)."""
    model.layers = sum(label.startswith("ops/") for label, _ in arch.choices)


SPACE = choice_space("cnn-choices", "images", Net, presets, size_keys=("channels", "layers"), fit_config=fit_config,
                     description="a small CNN with op and skip choices (enas.nn)")
