"""Optimizers and learning-rate schedules shared by the search loop and final training."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

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
                 lr_key: str = "search.optim.lr", hint: str = "") -> None:
    """Raise `TrainingDiverged` with a one-line hint when ``loss`` is NaN or infinite. ``where`` may be a callable,
    so that a per-step caller builds its message only when it is needed. The hint depends on whether ``run_dir``
    holds a checkpoint to resume from; ``hint`` (e.g. "; or ...") ends the line with another remedy."""
    if not torch.isfinite(loss).all():
        where = where() if callable(where) else where
        head = f"the loss became {loss.item()} {where}"
        if run_dir is not None and (Path(str(run_dir)) / "checkpoints" / "last.pt").is_file():
            raise TrainingDiverged(f"{head}; the last checkpoint in {run_dir}/checkpoints is intact: resume it with "
                                   f"a lower learning rate: --resume --out {run_dir} --set {lr_key}=...{hint}")
        raise TrainingDiverged(f"{head}, before the first checkpoint (nothing to resume): start again with a lower "
                               f"learning rate (--set {lr_key}=...){hint}")


def clip_gradients(params: Iterable[nn.Parameter], max_norm: float | None) -> torch.Tensor | None:
    """Clip the global gradient norm in place; returns the norm before clipping (a tensor: reading it is left to
    the caller, so that a training step does not wait for the device)."""
    if max_norm is None or max_norm <= 0:
        return None
    return torch.nn.utils.clip_grad_norm_(list(params), max_norm)


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
    """Running means of the stats a task returns per batch: floats, or 0-dim tensors that stay on their device (the
    sums too), so that adding a step's stats never waits for the device; `means` reads them all at once."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.count = 0

    def add(self, stats: dict[str, Any]) -> None:
        self.count += 1
        for k, v in stats.items():
            if isinstance(v, torch.Tensor):
                v = v.detach()
            self.sums[k] = v if k not in self.sums else self.sums[k] + v

    def means(self, prefix: str = "") -> dict[str, float]:
        keys = [k for k, v in self.sums.items() if isinstance(v, torch.Tensor)]
        values = {k: float(v) for k, v in self.sums.items() if k not in keys}
        if keys:  # one device read for all tensor sums
            values.update(zip(keys, torch.stack([self.sums[k].double() for k in keys]).tolist()))
        return {f"{prefix}{k}": values[k] / max(self.count, 1) for k in self.sums}


class DivergenceWatch:
    """Notices a NaN or infinite training loss without a device read per step: the losses of the last ``every``
    steps are checked together (one read), and `check` at the end of an epoch checks the rest. A loss that is
    not finite raises `TrainingDiverged` naming its step, as `check_finite` does (the steps after it in the same
    window have run on broken weights, which are dropped with the epoch; the checkpoint is not touched)."""

    def __init__(self, where: Callable[[int], str], run_dir: object = None, lr_key: str = "search.optim.lr",
                 every: int = 32, hint: str = ""):
        self.where, self.run_dir, self.lr_key, self.every, self.hint = where, run_dir, lr_key, every, hint
        self.pending: list[torch.Tensor] = []
        self.steps = 0  # steps seen, checked or not

    def add(self, loss: torch.Tensor) -> None:
        self.steps += 1
        self.pending.append(loss.detach().reshape(()))
        if len(self.pending) >= self.every:
            self.check()

    def check(self) -> None:
        if not self.pending:
            return
        losses, first = torch.stack(self.pending), self.steps - len(self.pending) + 1
        self.pending = []
        bad = ~torch.isfinite(losses)
        if bad.any():
            i = int(bad.nonzero()[0, 0])
            check_finite(losses[i], self.where(first + i), self.run_dir, self.lr_key, self.hint)
