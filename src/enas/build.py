"""Factories: a space and a task from a resolved `Config`. No training logic lives here."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch

from enas import kernels
from enas.config import Config
from enas.errors import UserError
from enas.spaces.base import Space
from enas.tasks.base import Task
from enas.tasks.images import ImageClassificationTask
from enas.tasks.tabular import TabularClassificationTask
from enas.tasks.text import LanguageModelTask


def build_space(cfg: Config) -> Space:
    """The `Space` of ``cfg.space`` (any registered space; `enas.registry`) over ``cfg.model``; applies the run's
    kernel switches (``cfg.kernels``) for this process."""
    kernels.configure(cfg.kernels)
    return cfg.entry().build(cfg.model)


#: The task class of each task kind a space entry names (`enas.registry.TASKS`).
TASKS: dict[str, type[Task]] = {"text": LanguageModelTask, "images": ImageClassificationTask,
                                "tabular": TabularClassificationTask}


def build_task(cfg: Config, device: torch.device, seed: int | None = None) -> Task:
    seed = cfg.seed if seed is None else seed
    kind = cfg.entry().task
    task_cfg = cfg.task if kind == "text" else dataclasses.replace(cfg.task, dataset=cfg.dataset)
    return TASKS[kind](task_cfg, device=device, seed=seed)


def autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """The numerics of a run's forward passes: ``precision=bf16`` runs them under bf16 autocast (weights, optimiser
    and losses stay float32), ``fp32`` in float32, ``auto`` in bf16 for convolutional networks (task kind images)
    on a GPU and in float32 otherwise (docs/fidelity.md, "Numerics on a GPU")."""
    if not uses_bf16(cfg, device):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def uses_bf16(cfg: Config, device: torch.device) -> bool:
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"
                                       and cfg.entry().task == "images")


def fit_model_to_arch(cfg: Config, arch) -> None:
    """Set the size fields an arch determines (e.g. number of recurrent nodes or macro layers) on ``cfg.model``."""
    fit = cfg.entry().load("fit_config")
    if fit is not None:
        fit(cfg.model, arch)


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
        keys = cfg.entry().size_keys  # the settings that decide the model's memory
        sizes = [f"model.{k}={getattr(cfg.model, k)}" for k in keys if hasattr(cfg.model, k)]
        sizes.append(f"task.batch_size={getattr(cfg.task, 'batch_size', '?')}")
        where = "the GPU" if "cuda" in str(e).lower() else "memory"
        raise UserError(f"{what} does not fit in {where} with {', '.join(sizes)}: lower one of them "
                        f"(--set KEY=VALUE)") from None
