"""The presets of the macro CNN space: ``paper`` (spec 2.2, 3.3, 4.2, 6.2), ``quick`` and ``demo``."""

from __future__ import annotations

from enas.config import Config, OptimConfig, SearchConfig, TrainConfig
from enas.presets import shrink_image_preset
from enas.search.controller import ControllerConfig
from enas.spaces.macro.space import MacroSpaceConfig
from enas.tasks.images import ImageTaskConfig


# Macro CNN (spec 2.2, 3.3, 4.2, 6.2): the authors' scripts, since the paper's CIFAR training paragraph is unconfirmed
def presets(preset: str, command: str) -> Config:
    model = MacroSpaceConfig(num_layers=12, channels=36, keep_prob=0.9)
    task = ImageTaskConfig(valid_size=5000, batch_size=128, reward_batch_size=128, augment=True, cutout=0)
    controller = ControllerConfig(lstm_size=64, tanh_constant=1.5, temperature=None, entropy_weight=1e-4,
                                  entropy_mode="sampled", lr=0.001, skip_target=0.4, skip_weight=0.8,
                                  train_steps=50, num_aggregate=20, baseline_decay=0.99)
    search = SearchConfig(epochs=310, optim=OptimConfig(lr=0.05, lr_min=0.0005, t0=10, t_mul=2,
                                                        weight_decay=2 * 2.5e-4), derive_samples=100)
    train = TrainConfig(epochs=310, optim=OptimConfig(lr=0.05, lr_min=0.001, t0=10, t_mul=2, weight_decay=2 * 2e-4))
    if command == "train":
        model.channels, model.keep_prob = 96, 0.5  # the released 24-layer network's script
        task.valid_size, task.batch_size = 0, 100
    cfg = Config(model=model, task=task, controller=controller, search=search, train=train)
    return shrink_image_preset("macro", preset, command, cfg)
