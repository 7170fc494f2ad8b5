"""Optimizers and learning-rate schedules shared by the search loop and final training."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from enas.config import OptimConfig
from enas.errors import ConfigError, TrainingDiverged


def cosine_restarts_lr(epoch: int, lr_max: float, lr_min: float, t0: int, t_mul: int) -> float:
    """SGDR as the authors coded it (spec 4.2): piecewise constant within an epoch; the first cycle lasts ``t0``
    epochs and each restart multiplies the cycle length by ``t_mul`` (restarts at 10, 30, 70, 150, 310, 630)."""
    start, length = 0, t0
    while epoch - start >= length:
        start += length
        length *= t_mul
    t = epoch - start
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * t / length))


def lr_at(epoch: int, cfg: OptimConfig) -> float:
    """Learning rate of 0-based ``epoch`` under ``cfg``."""
    if cfg.schedule == "cosine":
        return cosine_restarts_lr(epoch, cfg.lr, cfg.lr_min, cfg.t0, cfg.t_mul)
    if cfg.schedule == "decay":
        steps = max(0, epoch - cfg.decay_start + 1)
        return max(cfg.lr * cfg.decay**steps, cfg.decay_min)
    if cfg.schedule == "constant":
        return cfg.lr
    raise ConfigError(f"unknown schedule {cfg.schedule!r}; choose cosine, decay or constant")


def make_sgd(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.SGD:
    # TF's MomentumOptimizer(use_nesterov=True) equals PyTorch SGD(nesterov=True, dampening=0) (spec 8.6 item 8).
    momentum = cfg.momentum if cfg.momentum > 0 else 0.0
    return torch.optim.SGD(list(params), lr=cfg.lr, momentum=momentum, nesterov=cfg.nesterov and momentum > 0,
                           weight_decay=cfg.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def check_finite(loss: torch.Tensor, where: str | Callable[[], str], run_dir: object = None,
                 lr_key: str = "search.optim.lr") -> None:
    """Raise `TrainingDiverged` with a one-line hint when ``loss`` is NaN or infinite. ``where`` may be a callable,
    so that a per-step caller builds its message only when it is needed. The hint depends on whether ``run_dir``
    holds a checkpoint to resume from."""
    if not torch.isfinite(loss).all():
        where = where() if callable(where) else where
        head = f"the loss became {loss.item()} {where}"
        if run_dir is not None and (Path(str(run_dir)) / "checkpoints" / "last.pt").is_file():
            raise TrainingDiverged(f"{head}; the last checkpoint in {run_dir}/checkpoints is intact: resume it with "
                                   f"a lower learning rate: --resume --out {run_dir} --set {lr_key}=...")
        raise TrainingDiverged(f"{head}, before the first checkpoint (nothing to resume): start again with a lower "
                               f"learning rate (--set {lr_key}=...)")


def clip_gradients(params: Iterable[nn.Parameter], max_norm: float | None) -> float | None:
    if max_norm is None or max_norm <= 0:
        return None
    return float(torch.nn.utils.clip_grad_norm_(list(params), max_norm))


def sgd_step(optimizer: torch.optim.Optimizer, model: nn.Module, loss: torch.Tensor, grad_clip: float | None,
             sync: Callable[[], None] | None = None) -> None:
    """Backward ``loss``, ``sync()`` the gradients (data parallelism: average them over the ranks, so that the
    clipping and the step see the gradient of the global batch), clip the global gradient norm of ``model`` (if
    set), and step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if sync is not None:
        sync()
    clip_gradients(model.parameters(), grad_clip)
    optimizer.step()


class StatsMean:
    """Running means of the float stats a task returns per batch."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, stats: dict[str, float]) -> None:
        self.count += 1
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def means(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": v / max(self.count, 1) for k, v in self.sums.items()}
