"""Word-level language modelling (Penn Treebank): device-resident batches, loss with regularisers, the controller's
reward ``c / perplexity`` and whole-split evaluation.

Each split is cut into ``B`` equal columns once and kept on the device as an ``(N, B)`` tensor ("batchified");
a minibatch is a window of rows ``x = data[i : i + T]`` with targets ``y = data[i + 1 : i + 1 + T]``, both views.
Training runs the columns top to bottom once per epoch and carries the recurrent state from one window to the next
(detached, so gradients are truncated at ``T`` steps). The window length is ``bptt`` or, with ``variable_bptt``,
drawn per window as in the authors' corrected LM code. The lengths of a whole epoch are drawn at once from the
task's generator, so the number of batches is known in advance and a resumed run replays the same windows.

Models follow the language-model interface of `enas.spaces.base`:
``logits, hidden, extras = model(x, hidden, arch=arch)`` with ``x`` (T, B) int64 and ``logits`` (T, B, V);
``model.init_hidden(batch_size)`` gives the initial state; ``extras["outputs"]`` (T, B, H), the cell outputs, is
needed only by the activation and temporal regularisers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from enas.errors import ConfigError, DataError
from enas.runs.distributed import all_gather_rows, all_reduce_sums
from enas.spaces.base import TaskInfo
from enas.tasks.base import Task
from enas.tasks.datasets.ptb import PTB_CACHE_DIR, PTB_URL, Corpus, load_ptb

# Random window length of the corrected LM code: a truncated normal (cut at 2 std) around `bptt`, or around
# `bptt / 2` with probability 0.05, with std 5, truncated to an integer and capped at `bptt + 20`.
VARIABLE_BPTT_STD = 5.0
VARIABLE_BPTT_HALF_PROB = 0.05
VARIABLE_BPTT_EXTRA = 20

EVAL_SPLITS = ("train", "valid", "test")


@dataclass
class TextTaskConfig:
    """Data, batching, reward and regularisers of the language-modelling task (spec 3.2, 4.1, 6.1)."""

    root: str | None = None  # directory with ptb.{train,valid,test}.txt or {train,valid,test}.txt; None: PTB
    url: str = PTB_URL  # base URL of the three PTB files, used when neither root nor the treebank package has them
    cache_dir: str = PTB_CACHE_DIR  # where downloaded files are kept and reused
    batch_size: int = 64  # training columns (paper 64; old code 20; corrected code 128)
    bptt: int = 35  # training window length (truncated back-propagation through time)
    variable_bptt: bool = False  # corrected code's random window length instead of a fixed bptt
    eval_batch_size: int = 10  # columns for whole-split evaluation (the old code tested with 1)
    reward_batch_size: int = 64  # columns of the validation minibatch behind one reward (bptt rows)
    reward_c: float = 80.0  # reward = reward_c / perplexity; also the evaluation score
    activation_reg: float = 0.0  # alpha: alpha * mean(outputs ** 2) added to the training loss
    temporal_reg: float = 0.0  # beta (slowness): beta * mean((outputs[t] - outputs[t-1]) ** 2)
    max_tokens: int | None = None  # keep only the first max_tokens tokens of each split (demos, tests)

    def validate(self) -> None:
        """Raise `ConfigError` on a value that cannot work."""
        for name in ("batch_size", "bptt", "eval_batch_size", "reward_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("activation_reg", "temporal_reg"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.reward_c <= 0:
            raise ConfigError(f"reward_c must be > 0, got {self.reward_c!r}")
        if self.max_tokens is not None and (isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int)
                                            or self.max_tokens < 2):
            raise ConfigError(f"max_tokens must be an integer >= 2 or null, got {self.max_tokens!r}")


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N,) -> (N // batch_size, batch_size): column b is the b-th contiguous slice; the remainder is dropped."""
    rows = data.numel() // batch_size
    return data[: rows * batch_size].view(batch_size, rows).t().contiguous()


def sample_bptt_lengths(count: int, bptt: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random window lengths (int64, in [1, bptt + 20]) following the corrected LM code."""
    half = torch.rand(count, generator=generator) < VARIABLE_BPTT_HALF_PROB
    base = torch.where(half, bptt / 2.0, float(bptt))
    z = nn.init.trunc_normal_(torch.empty(count), 0.0, 1.0, -2.0, 2.0, generator=generator)
    lengths = (base + VARIABLE_BPTT_STD * z).long()  # like TF's cast: rounds toward zero
    return lengths.clamp_(1, bptt + VARIABLE_BPTT_EXTRA)


def _map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], obj: Any) -> Any:
    """Apply ``fn`` to every tensor of a (possibly nested) tuple/list/dict hidden state."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(fn, o) for o in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(fn, v) for k, v in obj.items()}
    return obj


def _token_ce(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of (T, B, V) logits against (T, B) targets."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)


class LanguageModelTask(Task):
    """Language modelling on a word-level corpus (PTB by default). See the module docstring."""

    def __init__(self, cfg: TextTaskConfig, device: torch.device | str = "cpu", seed: int = 0,
                 corpus: Corpus | None = None):
        cfg.validate()
        self.cfg = cfg
        self.device = torch.device(device)
        self.corpus = corpus if corpus is not None else load_ptb(cfg.root, cfg.url, cfg.cache_dir)
        self.info = TaskInfo(vocab_size=self.corpus.vocab_size)
        self._generator = torch.Generator().manual_seed(seed)  # CPU; only variable_bptt draws from it

        splits = {s: self.corpus.split(s)[: cfg.max_tokens] for s in EVAL_SPLITS}
        self._train = self._columns(splits["train"], cfg.batch_size, "train", "batch_size")  # (N, B)
        self._reward_data = self._columns(splits["valid"], cfg.reward_batch_size, "valid", "reward_batch_size")
        self._eval_data = {s: self._columns(splits[s], cfg.eval_batch_size, s, "eval_batch_size")
                           for s in ("valid", "test")}  # the train split is batchified for evaluation on demand

        self._plan: torch.Tensor | None = None  # window lengths of the current epoch (CPU int64)
        self._next_batch = 0  # index in the plan of the next training window
        self._hidden: Any = None  # recurrent state carried across training windows
        self._reward_pos = 0  # row of the next reward window in the validation stream

    def _columns(self, data: torch.Tensor, batch_size: int, split: str, key: str) -> torch.Tensor:
        if data.numel() // batch_size < 2:
            raise DataError(f"the {split} split has {data.numel()} tokens, too few for {key}={batch_size} (each "
                            f"column needs 2); lower {key} or raise max_tokens")
        return self._local(batchify(data, batch_size)).to(self.device)

    def _local(self, columns: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous block of the (N, B) columns (all of them in one process)."""
        return columns if self.world == 1 else columns[:, self.share(columns.size(1))].contiguous()

    def shard(self, rank: int, world: int) -> None:
        """Keep rank ``rank``'s block of the columns of every stream (training, reward, evaluation). A column is
        one sequence read top to bottom, so each rank carries the recurrent state of its own columns and the
        truncated back-propagation is the same as in one process."""
        self._check_divisible(self.cfg, ("batch_size", "reward_batch_size", "eval_batch_size"), world)
        self.rank, self.world = rank, world
        self._train, self._reward_data = self._local(self._train), self._local(self._reward_data)
        self._eval_data = {s: self._local(d) for s, d in self._eval_data.items()}

    # ---- training ------------------------------------------------------------------------------------------------

    def _ensure_plan(self) -> torch.Tensor:
        """Draw the window lengths of the epoch (once per epoch): they cover all N - 1 positions of the columns."""
        if self._plan is None:
            n, bptt = self._train.size(0) - 1, self.cfg.bptt
            if self.cfg.variable_bptt:
                lengths = sample_bptt_lengths(n, bptt, self._generator)  # n draws always suffice (lengths >= 1)
            else:
                lengths = torch.full((math.ceil(n / bptt),), bptt, dtype=torch.long)
            ends = lengths.cumsum(0)
            count = int(torch.searchsorted(ends, n)) + 1  # first window whose end reaches n
            lengths = lengths[:count].clone()
            lengths[-1] -= int(ends[count - 1]) - n  # the last window stops at the end of the data
            self._plan = lengths
        return self._plan

    def num_train_batches(self) -> int:
        return len(self._ensure_plan())

    def start_epoch(self, model: nn.Module) -> None:
        """Reset the carried state to ``model.init_hidden``; begin a fresh epoch unless the current one is
        untouched (its plan may have been drawn by `num_train_batches`). A resumed run that continues a
        half-finished epoch simply does not call this."""
        self._hidden = model.init_hidden(self._train.size(1))  # cfg.batch_size, or this rank's columns
        if self._next_batch > 0:
            self._plan, self._next_batch = None, 0

    def train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The remaining training windows ``(x, y)`` of the epoch, each (T, batch_size) int64 on the device."""
        lengths = self._ensure_plan().tolist()
        starts = [0]
        for length in lengths[:-1]:
            starts.append(starts[-1] + length)
        for k in range(self._next_batch, len(lengths)):
            i, t = starts[k], lengths[k]
            # Advance the cursor before yielding: a checkpoint taken while the caller works on this window
            # resumes at the next one. After the last window the next epoch starts from a fresh plan.
            self._next_batch = k + 1
            if self._next_batch == len(lengths):
                self._plan, self._next_batch = None, 0
            yield self._train[i : i + t], self._train[i + 1 : i + 1 + t]

    def _regularisers(self, extras: dict[str, Any]) -> torch.Tensor | None:
        alpha, beta = self.cfg.activation_reg, self.cfg.temporal_reg
        if alpha == 0 and beta == 0:
            return None
        outputs = extras.get("outputs") if isinstance(extras, dict) else None
        if outputs is None:
            raise ConfigError("activation_reg/temporal_reg need a model that returns extras['outputs']; set them to 0")
        reg = outputs.new_zeros(())
        if alpha > 0:
            reg = reg + alpha * outputs.pow(2).mean()  # outputs: (T, B, H)
        if beta > 0 and outputs.size(0) > 1:
            reg = reg + beta * (outputs[1:] - outputs[:-1]).pow(2).mean()
        return reg

    def shared_loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                    arch: Any = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean token cross-entropy (+ regularisers) on one window; the state is carried to the next window.
        Stats (0-dim tensors, read once per epoch): ``loss`` (cross-entropy, nats/token), ``ppl``, and ``reg``
        when a regulariser is on."""
        x, y = batch  # (T, B) each
        hidden = self._hidden if self._hidden is not None else model.init_hidden(x.size(1))
        logits, hidden, extras = model(x, hidden, arch=arch)  # logits: (T, B, V)
        self._hidden = _map_tensors(torch.Tensor.detach, hidden)  # truncate back-propagation at the window
        ce = _token_ce(logits, y)
        reg = self._regularisers(extras)
        value = ce.detach()
        stats = {"loss": value, "ppl": value.double().exp()}  # float64: no overflow to inf before exp(709)
        if reg is None:
            return ce, stats
        return ce + reg, {**stats, "reg": reg.detach()}

    # ---- reward --------------------------------------------------------------------------------------------------

    def reward_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (T, reward_batch_size) window of the validation stream, T = bptt (or the whole stream if
        shorter). Windows are consecutive and wrap to the top when the next full window does not fit, so every
        reward is measured on the same number of tokens."""
        data = self._reward_data
        t = min(self.cfg.bptt, data.size(0) - 1)
        if self._reward_pos + t > data.size(0) - 1:
            self._reward_pos = 0
        i = self._reward_pos
        self._reward_pos += t
        return data[i : i + t], data[i + 1 : i + 1 + t]

    @torch.no_grad()
    def reward(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], arch: Any = None) -> float:
        """``reward_c / perplexity`` on one validation window, starting from ``model.init_hidden``."""
        x, y = batch
        logits, _, _ = model(x, model.init_hidden(x.size(1)), arch=arch)
        if self.world > 1:  # the perplexity of the global window: every rank's cross-entropy sum and tokens
            total = all_reduce_sums({"ce": _token_ce(logits, y, reduction="sum").item(), "tokens": float(y.numel())})
            return self.cfg.reward_c * math.exp(-total["ce"] / total["tokens"])
        return self.cfg.reward_c * math.exp(-_token_ce(logits, y).item())

    @torch.no_grad()
    def batch_loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], arch: Any = None) -> float:
        """Mean cross-entropy (nats/token) of ``arch`` on one validation window from ``model.init_hidden``, as
        `reward` computes it (sharded: of the global window)."""
        x, y = batch
        logits, _, _ = model(x, model.init_hidden(x.size(1)), arch=arch)
        if self.world > 1:
            total = all_reduce_sums({"ce": _token_ce(logits, y, reduction="sum").item(), "tokens": float(y.numel())})
            return total["ce"] / total["tokens"]
        return _token_ce(logits, y).item()

    def score_from_loss(self, loss: float) -> float:
        """``reward_c`` / perplexity: the reward's and the validation score's own function of the loss."""
        return self.cfg.reward_c / _ppl(loss)

    # ---- evaluation ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str,
                 arch_fn: Callable[[], Any] | None = None) -> dict[str, float]:
        """Perplexity over a whole split in ``eval_batch_size`` columns, the state carried from window to window.
        ``arch_fn()`` picks the arch of each window. The caller chooses the module mode, as for `reward`.
        Returns ``loss`` (nats/token), ``ppl``, ``score`` (= reward_c / ppl) and ``tokens`` (targets scored)."""
        if split not in EVAL_SPLITS:
            raise ConfigError(f"cannot evaluate on split {split!r}; choose one of {', '.join(EVAL_SPLITS)}")
        if split not in self._eval_data:
            data = self.corpus.train[: self.cfg.max_tokens]
            self._eval_data[split] = self._columns(data, self.cfg.eval_batch_size, split, "eval_batch_size")
        data = self._eval_data[split]  # (N, B)
        n, bptt = data.size(0) - 1, self.cfg.bptt
        hidden = model.init_hidden(data.size(1))
        sums = []
        for i in range(0, n, bptt):
            t = min(bptt, n - i)
            arch = arch_fn() if arch_fn is not None else None
            logits, hidden, _ = model(data[i : i + t], hidden, arch=arch)
            sums.append(_token_ce(logits, data[i + 1 : i + 1 + t], reduction="sum"))
        tokens = n * data.size(1)
        if self.world > 1:  # every rank's columns
            total = all_reduce_sums({"ce": torch.stack(sums).double().sum().item(), "tokens": float(tokens)})
            tokens = int(total["tokens"])
            loss = total["ce"] / tokens
        else:
            loss = torch.stack(sums).double().sum().item() / tokens  # one device sync for the whole split
        ppl = _ppl(loss)
        return {"loss": loss, "ppl": ppl, "score": self.cfg.reward_c / ppl, "tokens": tokens}

    # ---- checkpointing -------------------------------------------------------------------------------------------

    def data_tensors(self) -> dict[str, torch.Tensor]:
        return {s: self.corpus.split(s)[: self.cfg.max_tokens] for s in EVAL_SPLITS}

    def state_dict(self) -> dict[str, Any]:
        """The task's state, the same whatever the number of ranks: sharded, the carried state of every rank's
        columns is gathered (a collective: every rank must call this)."""
        hidden = self._hidden
        if self.world > 1:  # (B/world, H) per rank -> (B, H), the layout of one process (spaces.base)
            hidden = _map_tensors(all_gather_rows, hidden)
        return {
            "generator": self._generator.get_state(),
            "plan": None if self._plan is None else self._plan.clone(),
            "next_batch": self._next_batch,
            "hidden": _map_tensors(lambda h: h.detach().cpu(), hidden),
            "reward_pos": self._reward_pos,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._generator.set_state(state["generator"])
        self._plan = None if state["plan"] is None else state["plan"].clone()
        self._next_batch = int(state["next_batch"])
        hidden = state["hidden"]
        if self.world > 1:  # this rank's columns of the global state
            hidden = _map_tensors(lambda h: h[self.share(h.size(0))] if h.size(0) == self.cfg.batch_size else h,
                                  hidden)
        self._hidden = _map_tensors(lambda h: h.to(self.device), hidden)
        self._reward_pos = int(state["reward_pos"])


def _ppl(loss: float) -> float:
    """exp(loss), inf instead of an OverflowError for a diverged model (the NaN/inf check then reports it)."""
    return math.exp(loss) if loss < 700 else float("inf")


__all__ = ["LanguageModelTask", "TextTaskConfig", "batchify", "sample_bptt_lengths"]
