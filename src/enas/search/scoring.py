"""How a search scores an arch with the shared weights: the controller's reward and the ranking of derive
candidates, both chosen by ``search.score`` (and ``search.score_batches`` for the reward).

* ``"metric"`` (the paper's): the reward is the task's figure on a validation minibatch (images: accuracy; language
  model: ``reward_c`` / perplexity), averaged over ``score_batches`` minibatches (1: the paper's single one);
  derive ranks candidates by the same figure on the whole validation split.
* ``"loss"``: the reward is ``task.score_from_loss`` of the mean cross-entropy over ``score_batches`` validation
  minibatches (images: minus the loss; language model: ``reward_c`` / exp(loss), the perplexity of all those
  tokens together); derive ranks candidates by the same function of the mean validation loss. Accuracy moves in
  steps of one image and saturates for good archs; the loss separates archs that classify the same images with
  different confidence, which is why weight-sharing studies (Ning et al. 2021) find it ranks archs better.

For the language model the whole-split ranking is the same under both (the perplexity is a function of the loss);
its reward differs only by averaging the loss, not the perplexity, over several windows.

With ``search.dedup`` derive and `enas rank` count archs that are the same network once (`Arch.canonical`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from torch import nn

from enas.arch import Arch
from enas.config import SCORES
from enas.runs.progress import Progress
from enas.tasks.base import Task


def reward(task: Task, model: nn.Module, arch: Arch, score: str = "metric", batches: int = 1) -> float:
    """The reward of ``arch`` over the next ``batches`` reward minibatches of ``task`` (the caller sets the module
    mode, as for `Task.reward`)."""
    if score == "metric":
        values = [task.reward(model, task.reward_batch(), arch) for _ in range(batches)]
        return sum(values) / len(values)
    if score == "loss":  # every reward minibatch holds as many rows (tokens): the mean of means is the mean
        losses = [task.batch_loss(model, task.reward_batch(), arch) for _ in range(batches)]
        return task.score_from_loss(sum(losses) / len(losses))
    raise ValueError(f"unknown score {score!r}; choose one of {SCORES}")


def candidate_score(task: Task, metrics: Mapping[str, float], score: str = "metric") -> float:
    """The derive score (higher is better) of a candidate whose whole-split metrics are ``metrics``."""
    if score == "metric":
        return float(metrics["score"])
    if score == "loss":
        return task.score_from_loss(float(metrics["loss"]))
    raise ValueError(f"unknown score {score!r}; choose one of {SCORES}")


def arch_key(arch: Arch, dedup: bool) -> Any:
    """The key that makes two candidates one: the network (`Arch.canonical`) with dedup, else the arch itself."""
    return arch.canonical() if dedup else arch.to_fixed_arc()


def score_archs(task: Task, model: nn.Module, archs: Mapping[Any, Arch], score: str = "metric",
                progress: Progress | None = None, label: str | None = None) -> list[tuple]:
    """(score, fixed_arc, arch, metrics) of each arch on the whole validation split, best first. The caller sets
    the module mode."""
    scored: list[tuple] = []
    if progress is not None and label:
        progress.start(label, len(archs))
    for i, arch in enumerate(archs.values()):
        metrics = task.evaluate(model, "valid", arch_fn=lambda a=arch: a)
        scored.append((candidate_score(task, metrics, score), arch.to_fixed_arc(), arch, metrics))
        if progress is not None and label:
            progress.update(i + 1, {"best": max(s[0] for s in scored)})
    if progress is not None and label:
        progress.end()
    return sorted(scored, key=lambda s: -s[0])


def candidates_csv(scored: list[tuple]) -> str:
    """candidates.csv: rank, score, the validation metrics and the integer notation of each scored arch."""
    buf = io.StringIO()
    metric_keys = sorted({k for s in scored for k in s[3] if k != "score"})
    writer = csv.writer(buf)
    writer.writerow(["rank", "score", *[f"valid_{k}" for k in metric_keys], "fixed_arc"])
    for rank, (score, key, _arch, metrics) in enumerate(scored, 1):
        writer.writerow([rank, f"{score:.6g}", *[f"{metrics.get(k, float('nan')):.6g}" for k in metric_keys], key])
    return buf.getvalue()


__all__ = ["SCORES", "arch_key", "candidate_score", "candidates_csv", "reward", "score_archs"]
