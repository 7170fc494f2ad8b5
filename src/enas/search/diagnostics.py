"""Controller diagnostics of a search: what the policy samples and how sure it is, per epoch.

* `ArchCounter` counts the archs sampled in the shared phase: the share of each op of each op vocabulary
  (``op_share/VOCAB/OP``), the share of distinct archs among the last ``window`` samples (``distinct_share``) and
  the mean share of skip bits set (``skip_density``, spaces with skip decisions only). It needs only the action
  lists, so it works for the uniform sampler too.
* `EntropyMeter` averages the full entropy of the policy per decision type over the controller's samples, from the
  shaped logits each sample carries: ``entropy_op``, ``entropy_pointer`` (nats per decision), ``entropy_skips``
  (nats per skip bit; the uniform value is log 2), ``entropy_op_VOCAB`` when the space has several op vocabularies,
  and ``entropy_frac``: the entropy of a whole sample as a fraction of the uniform policy's (1 = uniform, 0 = one
  arch). Decisions with a single possible answer count in none of them.
* `CollapseMonitor` turns epoch records into one-line warnings when the policy collapses early (before the last
  third of the search): entropy under 5 % of the uniform policy's, one op over 90 % of a vocabulary's samples, or
  under 5 % distinct archs. Each kind warns once per run; the state is rebuilt from metrics.jsonl on resume.
* `epoch_line` is the one-line epoch summary a search prints, with the reward's trend and the entropy.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from enas.spaces.base import Action, Decision

PHASES = ("shared", "controller", "eval")  # the parts of a search epoch, timed apart

OP_SHARE = "op_share"  # key prefix: op_share/VOCAB/OP
DISTINCT_WINDOW = 100  # distinct_share counts the last this many sampled archs
ENTROPY_FLOOR = 0.05  # warn below this fraction of the uniform policy's entropy
OP_SHARE_CEILING = 0.9  # warn when one op takes more than this share of its vocabulary's samples
DISTINCT_FLOOR = 0.05  # warn below this share of distinct archs
MIN_SAMPLES = 20  # op-share and distinct checks need at least this many archs sampled in the epoch


def _choices(decisions: Iterable[Decision]) -> list[Decision]:
    """The decisions that take an action (one per action), in order."""
    return [d for d in decisions if d.kind != "anchor"]


def op_share_key(vocab: str, op: str) -> str:
    return f"{OP_SHARE}/{vocab}/{op}"


def _arch_key(actions: Sequence[Action]) -> tuple:
    return tuple(tuple(a) if isinstance(a, (list, tuple)) else int(a) for a in actions)


class ArchCounter:
    """Counts sampled archs (their action lists) for the shared-phase fields of an epoch record."""

    def __init__(self, decisions: Iterable[Decision], vocabs: dict[str, list[str]], window: int = DISTINCT_WINDOW):
        choices = _choices(decisions)
        self.vocabs = {v: list(ops) for v, ops in vocabs.items() if any(d.vocab == v for d in choices
                                                                         if d.kind == "op")}
        self._ops = [(i, d.vocab) for i, d in enumerate(choices) if d.kind == "op"]
        self._has_skips = any(d.kind == "skips" and d.size > 0 for d in choices)
        self.counts = {v: [0] * len(ops) for v, ops in self.vocabs.items()}
        self.recent: deque[tuple] = deque(maxlen=window)
        self.samples = 0
        self._skip_sum = 0.0

    def add(self, actions: Sequence[Action], skip_rate: float | None = None) -> None:
        """Count one sampled arch; ``skip_rate`` is `ControllerSample.skip_rate` (computed from the bits if None)."""
        for i, vocab in self._ops:
            self.counts[vocab][int(actions[i])] += 1
        self.recent.append(_arch_key(actions))
        self.samples += 1
        if self._has_skips:
            if skip_rate is None:
                bits = [b for a in actions if isinstance(a, (list, tuple)) for b in a]
                skip_rate = sum(bits) / len(bits) if bits else 0.0
            self._skip_sum += skip_rate

    def op_shares(self) -> dict[str, dict[str, float]]:
        """{vocab: {op: share}}; each vocabulary's shares sum to 1 (empty before any sample)."""
        out = {}
        for vocab, counts in self.counts.items():
            total = sum(counts)
            if total:
                out[vocab] = {op: c / total for op, c in zip(self.vocabs[vocab], counts)}
        return out

    def distinct_share(self) -> float | None:
        """Distinct archs among the last ``window`` samples, as a share of them."""
        return len(set(self.recent)) / len(self.recent) if self.recent else None

    def fields(self) -> dict[str, float]:
        """The epoch-record fields (flat keys, so that every one is also a TensorBoard scalar)."""
        out: dict[str, float] = {}
        for vocab, shares in self.op_shares().items():
            out.update({op_share_key(vocab, op): s for op, s in shares.items()})
        distinct = self.distinct_share()
        if distinct is not None:
            out["distinct_share"] = distinct
        if self._has_skips and self.samples:
            out["skip_density"] = self._skip_sum / self.samples
        return out


class EntropyMeter:
    """Mean policy entropy per decision type over the samples added, from `ControllerSample.logits`."""

    def __init__(self, decisions: Iterable[Decision]):
        choices = _choices(decisions)
        self._kinds = [d.kind for d in choices]
        self._vocab = [d.vocab for d in choices]
        vocabs = list(dict.fromkeys(d.vocab for d in choices if d.kind == "op"))
        self._per_vocab = len(vocabs) > 1
        # Decisions with a choice, grouped for one batched computation per sample.
        self._op_groups = {v: [i for i, d in enumerate(choices) if d.kind == "op" and d.vocab == v and d.size > 1]
                           for v in vocabs}
        self._pointers = [i for i, d in enumerate(choices) if d.kind == "pointer" and d.size > 1]
        self._skips = [i for i, d in enumerate(choices) if d.kind == "skips" and d.size > 0]
        # counts per key (decisions or skip bits), and the uniform policy's entropy of one sample
        self._counts: dict[str, int] = {}
        for v, idx in self._op_groups.items():
            if idx:
                self._counts["op"] = self._counts.get("op", 0) + len(idx)
                if self._per_vocab:
                    self._counts[f"op_{v}"] = len(idx)
        if self._pointers:
            self._counts["pointer"] = len(self._pointers)
        if self._skips:
            self._counts["skips"] = sum(choices[i].size for i in self._skips)
        self._uniform = (sum(math.log(choices[i].size) for idx in self._op_groups.values() for i in idx)
                         + sum(math.log(choices[i].size) for i in self._pointers)
                         + self._counts.get("skips", 0) * math.log(2.0))
        self.reset()

    def reset(self) -> None:
        self._sums = dict.fromkeys(self._counts, 0.0)
        self.samples = 0

    def add(self, logits: Sequence[Tensor]) -> None:
        """Add one sample's shaped logits (one tensor per non-anchor decision); ignored when empty (no policy)."""
        if not logits or not self._counts:
            return
        with torch.no_grad():
            for v, idx in self._op_groups.items():
                if idx:
                    h = float(torch.special.entr(torch.softmax(torch.stack([logits[i].detach() for i in idx]),
                                                               -1)).sum())
                    self._sums["op"] += h
                    if self._per_vocab:
                        self._sums[f"op_{v}"] += h
            if self._pointers:
                padded = torch.nn.utils.rnn.pad_sequence([logits[i].detach() for i in self._pointers],
                                                         batch_first=True, padding_value=-math.inf)
                self._sums["pointer"] += float(torch.special.entr(torch.softmax(padded, -1)).sum())
            if self._skips:
                bits = torch.cat([logits[i].detach() for i in self._skips])  # (bits, 2)
                self._sums["skips"] += float(torch.special.entr(torch.softmax(bits, -1)).sum())
        self.samples += 1

    def means(self) -> dict[str, float]:
        """``entropy_KIND`` (per decision, per skip bit) and ``entropy_frac``; empty before any sample."""
        if not self.samples:
            return {}
        out = {f"entropy_{k}": s / (self.samples * self._counts[k]) for k, s in self._sums.items()}
        if self._uniform > 0:
            total = sum(s for k, s in self._sums.items() if not k.startswith("op_"))
            out["entropy_frac"] = total / (self.samples * self._uniform)
        return out


class CollapseMonitor:
    """Early-collapse warnings from epoch records; each kind ("entropy", "op_share", "distinct") fires once."""

    def __init__(self, total_epochs: int):
        self.total_epochs = total_epochs
        self.first_entropy: float | None = None  # entropy_frac of the first epoch with a controller phase
        self.warned: set[str] = set()
        self.last: dict[str, Any] | None = None  # the previous epoch record

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]], total_epochs: int) -> CollapseMonitor:
        """The monitor's state after the records of a run's metrics.jsonl (resume)."""
        monitor = cls(total_epochs)
        for rec in records:
            if rec.get("kind") == "epoch":
                monitor._remember(rec)
            elif rec.get("kind") == "warning" and isinstance(rec.get("warning"), str):
                monitor.warned.add(rec["warning"])
        return monitor

    def _remember(self, record: dict[str, Any]) -> None:
        frac = record.get("controller_entropy_frac")
        if self.first_entropy is None and isinstance(frac, (int, float)):
            self.first_entropy = float(frac)
        self.last = record

    def early(self, epoch: int) -> bool:
        """Whether ``epoch`` (1-based) lies before the last third of the search."""
        return 3 * epoch <= 2 * self.total_epochs

    def check(self, epoch: int, record: dict[str, Any]) -> list[tuple[str, str]]:
        """(kind, one-line message) for each new warning at this epoch; remembers the record."""
        self._remember(record)
        if not self.early(epoch):
            return []
        found = []
        where = f"policy collapse at epoch {epoch}/{self.total_epochs}"
        frac = record.get("controller_entropy_frac")
        if isinstance(frac, (int, float)):
            if frac < ENTROPY_FLOOR:  # entropy_frac <= 1, so this also covers 5 % of the epoch-1 value
                first = "" if self.first_entropy is None else f" (first epoch: {self.first_entropy:.0%})"
                found.append(("entropy", f"{where}: the policy entropy is {frac:.1%} of the uniform policy's{first}; "
                                         "raise controller.entropy_weight or lower controller.lr"))
        steps = record.get("steps")
        enough = not isinstance(steps, (int, float)) or steps >= MIN_SAMPLES
        if enough:
            for vocab, shares in op_shares_of(record).items():
                op, share = max(shares.items(), key=lambda kv: kv[1])
                if share > OP_SHARE_CEILING:
                    found.append(("op_share", f"{where}: op {op!r} takes {share:.0%} of the {vocab} samples"))
                    break
            distinct = record.get("distinct_share")
            if isinstance(distinct, (int, float)) and distinct < DISTINCT_FLOOR:
                found.append(("distinct", f"{where}: only {distinct:.0%} of the recently sampled archs are "
                                          "distinct"))
        new = [(kind, msg) for kind, msg in found if kind not in self.warned]
        self.warned.update(kind for kind, _ in new)
        return new


def op_shares_of(record: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{vocab: {op: share}} from the flat ``op_share/VOCAB/OP`` fields of an epoch record."""
    out: dict[str, dict[str, float]] = {}
    for key, value in record.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == OP_SHARE and isinstance(value, (int, float)):
            out.setdefault(parts[1], {})[parts[2]] = float(value)
    return out


def reward_trend(record: dict[str, Any], previous: dict[str, Any] | None) -> str | None:
    """"0.4312 (+0.0120)": the controller reward and its change since the previous epoch record."""
    reward = record.get("controller_reward")
    if not isinstance(reward, (int, float)):
        return None
    before = (previous or {}).get("controller_reward")
    if isinstance(before, (int, float)):
        return f"{reward:.4g} ({reward - before:+.2g})"
    return f"{reward:.4g}"


def epoch_line(epoch: int, total: int, r: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    """The epoch summary; ``previous`` (the last epoch's record) adds the change of the controller reward."""
    parts = [f"epoch {epoch}/{total}"]
    for key, label in (("train_loss", "loss"), ("train_ppl", "ppl"), ("train_acc", "acc"),
                       ("controller_reward", "reward"), ("controller_entropy", "entropy"),
                       ("valid_ppl", "valid_ppl"), ("valid_acc", "valid_acc")):
        if key == "controller_reward" and key in r:
            trend = reward_trend(r, previous)
            if trend is not None:
                parts.append(f"{label} {trend}")
        elif key == "controller_entropy" and isinstance(r.get("controller_entropy_frac"), (int, float)):
            parts.append(f"{label} {r['controller_entropy_frac']:.0%} of uniform")
        elif key in r and isinstance(r[key], (int, float)):
            parts.append(f"{label} {r[key]:.4g}")
    parts.append("time " + "/".join(f"{r.get(f'seconds_{p}', 0):.0f}s" for p in PHASES) + " (shared/ctrl/eval)")
    return " | ".join(parts)
