"""The presets of the micro (cell) CNN space: ``paper`` (spec 2.3, 3.4, 4.2, 6.2), ``quick`` and ``demo``."""

from __future__ import annotations

from enas.config import Config, OptimConfig, SearchConfig, TrainConfig
from enas.presets import shrink_image_preset
from enas.search.controller import ControllerConfig
from enas.spaces.micro.space import MicroSpaceConfig
from enas.tasks.images import ImageTaskConfig


# Micro CNN (spec 2.3, 3.4, 4.2, 6.2)
def presets(preset: str, command: str) -> Config:
    model = MicroSpaceConfig(num_layers=6, channels=20, keep_prob=0.9, aux_head=True)
    task = ImageTaskConfig(valid_size=5000, batch_size=160, reward_batch_size=160, augment=True, cutout=0,
                           aux_weight=0.4)
    controller = ControllerConfig(lstm_size=64, tanh_constant=1.10, op_tanh_reduce=2.5, temperature=None,
                                  entropy_weight=1e-4, entropy_mode="full", lr=0.0035, skip_weight=0.0,
                                  op_bias_init=[10.0, 10.0, 0.0, 0.0, 0.0], train_steps=30, num_aggregate=10,
                                  baseline_decay=0.99)
    search = SearchConfig(epochs=150, optim=OptimConfig(lr=0.05, lr_min=0.0005, t0=10, t_mul=2,
                                                        weight_decay=2 * 1e-4), derive_samples=100)
    # the authors' micro search graph runs rewards, validation and derive scores in training mode (spec 3.4, 8.2):
    # batch statistics (which the micro supernet always uses) and the dropout before the classifier on
    search.reward_mode = "train"
    train = TrainConfig(epochs=630, optim=OptimConfig(lr=0.05, lr_min=0.0001, t0=10, t_mul=2, weight_decay=2 * 2e-4))
    if command == "train":
        model.num_layers, model.channels, model.keep_prob = 15, 36, 0.8
        model.drop_path_keep = 0.6
        task.valid_size, task.batch_size = 0, 144
        task.cutout = 16  # the paper's 2.89% needs cutout; the authors' final script leaves it off (spec 9 #13)
    cfg = Config(model=model, task=task, controller=controller, search=search, train=train)
    return shrink_image_preset("micro", preset, command, cfg)
