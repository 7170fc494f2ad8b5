"""The interface the search loop and the final training use to talk to a task (data + loss + reward).

A task loads its data once onto ``device`` and serves device-resident minibatches. It owns a private
``torch.Generator`` (on the CPU) for shuffling, augmentation and reward-batch selection, so that its randomness is
checkpointed through `state_dict` and a resumed run sees the same batches as one that never stopped.

``arch`` arguments are passed through to the model untouched (``model(x, arch=arch)``); a child model ignores
them, so the same calls serve search (supernet) and final training (child).

Under torchrun (`enas.runs.distributed`) each process calls `Task.shard` once after building the task: from then on
it draws every minibatch exactly as one process would (same generator, same global batch) and keeps only its
rank's share of the rows (text: of the columns); `reward` and `evaluate` all-reduce what they count, so every rank
returns the global figure.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from enas.errors import ConfigError, UserError
from enas.runs.distributed import all_reduce_sums
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

    def batch_loss(self, model: nn.Module, batch: Batch, arch: Any = None) -> float:
        """The mean cross-entropy of ``arch`` on one reward minibatch (sharded: of the global minibatch), the
        material of loss-based rewards (``search.score=loss``, `enas.search.scoring`). The caller chooses the mode."""
        raise ConfigError(f"the {type(self).__name__} task has no loss-based score; set search.score=metric")

    def score_from_loss(self, loss: float) -> float:
        """A score (higher is better) that is a decreasing function of a mean cross-entropy: minus the loss here;
        the language model maps it as its metric does (``reward_c`` / perplexity)."""
        return -loss

    @abstractmethod
    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, arch_fn: Callable[[], Any] | None = None) -> dict[str, float]:
        """Metrics over a whole split (``"valid"`` or ``"test"``); ``arch_fn()`` is called once per batch to pick
        the arch (a fresh sample during search, a fixed one when scoring a candidate); None for a child model.
        Returns e.g. ``{"loss": ..., "ppl": ...}`` or ``{"loss": ..., "acc": ...}``; ``"score"`` is always present
        and higher is better (LM: c / ppl with the same c as the reward; images: accuracy)."""

    def data_tensors(self) -> dict[str, torch.Tensor]:
        """The data this task reads, by name (features, labels, tokens of each split): what `fingerprint` hashes."""
        return {}

    def fingerprint(self) -> str:
        """SHA-256 of `data_tensors` (computed once): a run records it, and resume refuses other data."""
        if getattr(self, "_fingerprint", None) is None:
            h = hashlib.sha256()
            for name, t in sorted(self.data_tensors().items()):
                t = t.detach().cpu().contiguous().reshape(-1)
                h.update(f"{name}:{t.dtype}:{t.numel()};".encode())
                h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def check_same_data(self, recorded: str | None, allow_new: bool) -> None:
        """Refuse to resume on data other than the run's (``recorded``: the checkpoint's fingerprint; None for a
        checkpoint written before fingerprints)."""
        if recorded is not None and recorded != self.fingerprint() and not allow_new:
            raise UserError("the data differ from the data this run started on (their fingerprint changed): resume "
                            "on the same files, or pass --set resume_new_data=true to continue on these")

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything random or positional the task keeps (generator state, cursors, carried hidden state)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ClassificationTask(Task):
    """Shared by the image and tabular tasks: whole-split evaluation in ``eval_batch_size`` chunks, and the
    checkpoint of the shuffling state (the generator and the train/validation permutations with their cursors).

    Subclasses set ``cfg``, ``device``, ``generator``, ``world``, ``_y`` (split -> labels), ``_train_perm``,
    ``_train_pos``, ``_valid_perm`` and ``_valid_pos``, and give `_split` and `_eval_inputs`."""

    cfg: Any
    generator: torch.Generator
    world: int
    _y: dict[str, torch.Tensor]

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of ``split``; a clear error for an unknown or empty split."""
        raise NotImplementedError

    def _eval_inputs(self, split: str, rows: slice) -> torch.Tensor:
        """The model inputs of ``rows`` of ``split`` (a slice view, no index tensor)."""
        raise NotImplementedError

    @torch.no_grad()
    def batch_loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], arch: Any = None) -> float:
        """Mean cross-entropy of ``arch`` (``logits, _ = model(x)``) on one minibatch; sharded, every rank's sum
        and rows together, so that each rank returns the figure of the global minibatch."""

        x, y = batch
        ce = 0.0
        if y.numel():
            logits, _ = model(x, arch=arch)
            ce = float(F.cross_entropy(logits.float(), y, reduction="sum"))
        rows = float(y.numel())
        if self.world > 1:
            ce, rows = all_reduce_sums({"ce": ce, "rows": rows}).values()
        return ce / max(rows, 1.0)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, arch_fn: Callable[[], Any] | None = None) -> dict[str, float]:
        """Mean CE and accuracy over the whole split in ``eval_batch_size`` chunks (no augmentation);
        ``arch_fn()`` picks the arch of each chunk. Returns ``{"loss", "acc", "score" (= acc), "n"}``."""

        _, labels = self._split(split)  # checks the split's name and size
        n = labels.shape[0]
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for start in range(0, n, self.cfg.eval_batch_size):
            rows = slice(start, start + self.cfg.eval_batch_size)
            arch = arch_fn() if arch_fn is not None else None  # drawn by every rank, even one with no rows
            if self.world > 1:
                part = self.share(min(self.cfg.eval_batch_size, n - start))
                if part.start == part.stop:
                    continue
                rows = slice(start + part.start, start + part.stop)
            y = labels[rows]
            logits, _ = model(self._eval_inputs(split, rows), arch=arch)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(dim=1) == y).sum()
        loss, hits = torch.stack([loss_sum, correct.double()]).tolist()  # one device sync
        if self.world > 1:
            loss, hits = all_reduce_sums({"loss": loss, "hits": hits}).values()
        acc = hits / max(n, 1)
        return {"loss": loss / max(n, 1), "acc": acc, "score": acc, "n": n}

    def data_tensors(self) -> dict[str, torch.Tensor]:
        return {**{f"x_{k}": v for k, v in self._x.items()}, **{f"y_{k}": v for k, v in self._y.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "train_perm": None if self._train_perm is None else self._train_perm.cpu(),
            "train_pos": self._train_pos,
            "valid_perm": None if self._valid_perm is None else self._valid_perm.cpu(),
            "valid_pos": self._valid_pos,
            "sizes": {k: int(v.shape[0]) for k, v in self._y.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sizes = {k: int(v.shape[0]) for k, v in self._y.items()}
        if state["sizes"] != sizes:
            raise ConfigError(
                f"the checkpoint's data splits {state['sizes']} differ from this task's {sizes}; resume with the "
                "same dataset, valid_size and subsets"
            )
        self.generator.set_state(state["generator"])
        self._train_perm = None if state["train_perm"] is None else state["train_perm"].to(self.device)
        self._train_pos = int(state["train_pos"])
        self._valid_perm = None if state["valid_perm"] is None else state["valid_perm"].to(self.device)
        self._valid_pos = int(state["valid_pos"])
