"""The interface the search loop and the final training use to talk to a task (data + loss + reward).

A task loads its data once onto ``device`` and serves device-resident minibatches. It owns a private
``torch.Generator`` (on the CPU) for shuffling, augmentation and reward-batch selection, so that its randomness is
checkpointed through `state_dict` and a resumed run sees the same batches as one that never stopped.

``arch`` arguments are passed through to the model untouched (``model(x, arch=arch)``); a child model ignores
them, so the same calls serve search (supernet) and final training (child).

Under torchrun (`enas.distributed`) each process calls `Task.shard` once after building the task: from then on
it draws every minibatch exactly as one process would (same generator, same global batch) and keeps only its
rank's share of the rows (text: of the columns); `reward` and `evaluate` all-reduce what they count, so every rank
returns the global figure.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from enas.distributed import all_reduce_sums
from enas.errors import ConfigError
from enas.spaces.base import TaskInfo

Batch = Any  # task-specific tuple of device tensors


def sharded_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, arch: Any) -> float:
    """Accuracy of a classifier (``logits, _ = model(x)``) over every rank's share of one minibatch: the hits and
    rows of all ranks summed, so that each rank returns the accuracy of the global minibatch."""
    hits = 0.0
    if y.numel():
        logits, _ = model(x, arch=arch)
        hits = float((logits.argmax(dim=1) == y).sum())
    total = all_reduce_sums({"hits": hits, "rows": float(y.numel())})
    return total["hits"] / max(total["rows"], 1.0)


class Task(ABC):
    info: TaskInfo
    device: torch.device
    rank, world = 0, 1  # this process's share of every batch (see `shard`); 0, 1: the whole batch

    def shard(self, rank: int, world: int) -> None:
        """Keep rank ``rank``'s share of ``world`` of every batch from now on (data parallelism). A task that
        cannot be split refuses; the built-in ones check that their batch sizes divide among ``world`` ranks."""
        raise ConfigError(f"the {type(self).__name__} task cannot be split across processes; run it as one "
                          "process (without torchrun)")

    def _check_divisible(self, cfg: Any, keys: tuple[str, ...], world: int) -> None:
        for key in keys:
            value = getattr(cfg, key)
            if value % world:
                raise ConfigError(f"task.{key}={value} does not split among {world} processes: it is the global "
                                  f"batch, set it to a multiple of {world}")

    def share(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` rows (balanced; may be empty when n < world)."""
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    @abstractmethod
    def train_batches(self) -> Iterator[Batch]:
        """One epoch of training minibatches (shuffled/augmented with the task's generator)."""

    @abstractmethod
    def num_train_batches(self) -> int:
        """How many batches `train_batches` yields per epoch."""

    @abstractmethod
    def start_epoch(self, model: nn.Module) -> None:
        """Called before each training epoch (e.g. reset the carried hidden state of a language model)."""

    @abstractmethod
    def shared_loss(self, model: nn.Module, batch: Batch, arch: Any = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on one batch (cross-entropy plus the task's regularisers / auxiliary loss) and stats to log
        (floats; e.g. ``{"loss": ..., "ppl": ...}`` or ``{"loss": ..., "acc": ...}``). The caller sets train mode."""

    @abstractmethod
    def reward_batch(self) -> Batch:
        """The next validation minibatch for one controller reward (never from the test split)."""

    @abstractmethod
    @torch.no_grad()
    def reward(self, model: nn.Module, batch: Batch, arch: Any = None) -> float:
        """The reward of ``arch`` on one validation minibatch (LM: c / perplexity; images: accuracy).
        The caller chooses the module mode (eval or train) before calling."""

    @abstractmethod
    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, arch_fn: Callable[[], Any] | None = None) -> dict[str, float]:
        """Metrics over a whole split (``"valid"`` or ``"test"``); ``arch_fn()`` is called once per batch to pick
        the arch (a fresh sample during search, a fixed one when scoring a candidate); None for a child model.
        Returns e.g. ``{"loss": ..., "ppl": ...}`` or ``{"loss": ..., "acc": ...}``; ``"score"`` is always present
        and higher is better (LM: c / ppl with the same c as the reward; images: accuracy)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything random or positional the task keeps (generator state, cursors, carried hidden state)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
