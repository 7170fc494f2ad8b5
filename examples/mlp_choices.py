"""An MLP for tabular data (`.npz` with x_train (N, F), y_train, x_test, y_test) written with choices (`enas.nn`):
the width of the hidden layers, each layer's activation, and whether each layer adds the input of the layer before.

    enas search --space examples/mlp_choices.py:SPACE --data my_table.npz --preset demo
    enas train runs/.../arch.json --data my_table.npz --preset demo

Weight sharing across widths: every hidden layer holds the widest weight matrix and the chosen width uses its first
rows (and the next layer its first columns), so all widths train the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from enas.config import Config, OptimConfig, SearchConfig, TrainConfig
from enas.nn import InputChoice, OpChoice, ValueChoice, choice_space
from enas.search.controller import ControllerConfig
from enas.tasks.tabular import TabularTaskConfig

WIDTHS = (16, 32, 64)


@dataclass
class MlpConfig:
    layers: int = 3


class Net(nn.Module):
    def __init__(self, cfg: MlpConfig, info):
        super().__init__()
        self.width = ValueChoice(WIDTHS, label="width")  # one width for every hidden layer
        w = self.width.size  # the widest in the supernet (forward slices it), the chosen one in a child
        self.inp = nn.Linear(info.in_features, w)
        self.hidden = nn.ModuleList(nn.Linear(w, w) for _ in range(cfg.layers - 1))
        self.acts = nn.ModuleList(OpChoice({"relu": nn.ReLU(), "tanh": nn.Tanh(), "gelu": nn.GELU(),
                                            "identity": nn.Identity()}) for _ in range(cfg.layers))
        # residual: layer i may add its own input (candidate 0) or nothing
        self.skips = nn.ModuleList(InputChoice(1, n_chosen=None) for _ in range(cfg.layers - 1))
        self.out = nn.Linear(w, info.num_classes)

    def forward(self, x):
        w = self.width.value
        h = self.acts[0](F.linear(x, self.inp.weight[:w], self.inp.bias[:w]))
        for layer, act, skip in zip(self.hidden, self.acts[1:], self.skips):
            h = act(F.linear(h, layer.weight[:w, :w], layer.bias[:w])) + skip([h])
        return F.linear(h, self.out.weight[:, :w], self.out.bias)


def presets(preset: str, command: str) -> Config:
    """One small size for every preset: seconds to minutes on a CPU."""
    task = TabularTaskConfig(valid_size=500 if command == "search" else 0, batch_size=64, reward_batch_size=128,
                             eval_batch_size=1000)
    controller = ControllerConfig(lstm_size=32, train_steps=20, num_aggregate=5, adam_eps=1e-8, adam_tf_eps=False,
                                  baseline_start="first")
    search = SearchConfig(epochs=5, derive_samples=8, optim=OptimConfig(lr=0.05, t0=5))
    train = TrainConfig(epochs=10, optim=OptimConfig(lr=0.05, t0=10))
    return Config(model=MlpConfig(), task=task, controller=controller, search=search, train=train)


def fit_config(model: MlpConfig, arch) -> None:
    """An arch file decides the depth (one acts/i label per layer)."""
    model.layers = sum(label.startswith("acts/") for label, _ in arch.choices)


SPACE = choice_space("mlp-choices", "tabular", Net, presets, size_keys=("layers",), fit_config=fit_config,
                     description="an MLP with width, activation and residual choices (enas.nn)")
