"""Factories: a space and a task from a resolved `Config`. No training logic lives here."""

from __future__ import annotations

import dataclasses

import torch

from enas.config import Config
from enas.spaces.base import Space
from enas.tasks.base import Task


def build_space(cfg: Config) -> Space:
    if cfg.space == "rnn":
        from enas.spaces.rnn import RnnSpace

        return RnnSpace(cfg.model)
    if cfg.space == "macro":
        from enas.spaces.macro import MacroSpace

        return MacroSpace(cfg.model)
    if cfg.space == "micro":
        from enas.spaces.micro import MicroSpace

        return MicroSpace(cfg.model)
    raise ValueError(f"unknown space {cfg.space!r}")


def build_task(cfg: Config, device: torch.device, seed: int | None = None) -> Task:
    seed = cfg.seed if seed is None else seed
    if cfg.space == "rnn":
        from enas.tasks.text import LanguageModelTask

        return LanguageModelTask(cfg.task, device=device, seed=seed)
    from enas.tasks.images import ImageClassificationTask

    task_cfg = dataclasses.replace(cfg.task, dataset=cfg.dataset)
    return ImageClassificationTask(task_cfg, device=device, seed=seed)


def fit_model_to_arch(cfg: Config, arch) -> None:
    """Set the size fields an arch determines (number of recurrent nodes or macro layers) on ``cfg.model``."""
    body = arch.to_dict()
    if cfg.space == "rnn" and "nodes" in body:
        cfg.model.num_nodes = len(body["nodes"])
        cfg.model.variant = "corrected" if body.get("output") == "mean" else "paper"
    elif cfg.space == "macro" and "layers" in body:
        cfg.model.num_layers = len(body["layers"])
    elif cfg.space == "micro" and "normal" in body:
        cfg.model.num_nodes = len(body["normal"])
