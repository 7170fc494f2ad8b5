"""Factories: a space and a task from a resolved `Config`. No training logic lives here."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch

from enas.config import Config
from enas.errors import UserError
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


# The settings that decide a model's memory, per space (the batch size is added for all).
SIZE_KEYS = {"rnn": ("hidden", "num_nodes"), "macro": ("channels", "num_layers"),
             "micro": ("channels", "num_layers", "num_nodes")}


def is_out_of_memory(error: BaseException) -> bool:
    """True for the CPU and CUDA allocators' out-of-memory errors (both are RuntimeErrors) and MemoryError."""
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "not enough memory"))


@contextlib.contextmanager
def explain_out_of_memory(cfg: Config, what: str) -> Iterator[None]:
    """Turn an allocator's out-of-memory error inside the block into one line naming the settings to lower."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        sizes = [f"model.{k}={getattr(cfg.model, k)}" for k in SIZE_KEYS.get(cfg.space, ()) if hasattr(cfg.model, k)]
        sizes.append(f"task.batch_size={getattr(cfg.task, 'batch_size', '?')}")
        where = "the GPU" if "cuda" in str(e).lower() else "memory"
        raise UserError(f"{what} does not fit in {where} with {', '.join(sizes)}: lower one of them "
                        f"(--set KEY=VALUE)") from None
