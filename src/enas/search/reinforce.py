"""REINFORCE for the controller (spec 3.1, 3.3): moving-average baseline, entropy bonus added to the reward, skip
penalty added to the loss, gradients averaged over ``num_aggregate`` sampled architectures per Adam step.

With ``elite_size`` K > 0 (not in the paper), the trainer also keeps the K best distinct archs rewarded so far and
adds ``elite_weight * mean_k(-log pi(elite_k))`` to each update's loss: a maximum-likelihood pull towards the best
finds (priority-queue training, Abolafia et al. 2018), which the objective of a search, its *best* arch, rewards.

For each sample: ``R = reward + entropy_weight * H`` (H under stop-gradient); the baseline starts at 0 (or, with
``baseline_start="first"``, at the first sample's R) and moves first,
``b <- b - (1 - decay)(b - R)``, and the advantage uses the moved baseline; the loss is
``-log pi(a) * (R - b) + skip_weight * skip_penalty``.

Adam follows the authors' TensorFlow optimiser: beta1 = 0 by default, and (with ``adam_tf_eps``) epsilon added to
sqrt(v) before the bias correction. PyTorch adds it after, so the equivalent PyTorch epsilon at step t is
``eps / sqrt(1 - beta2^t)`` (spec 8.6 item 7); it is set on the optimiser before every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from enas.arch import Arch
from enas.errors import TrainingDiverged
from enas.search.controller import Controller, ControllerConfig
from enas.search.diagnostics import EntropyMeter

# Per step: means over the num_aggregate samples, except ``baseline`` (its value after the last sample);
# ``advantage`` is R - b as used in the loss, ``baseline_mean`` the mean of the b it used.
STAT_KEYS = ("reward", "baseline", "entropy", "skip_rate", "loss", "log_prob", "advantage", "baseline_mean")


class ReinforceTrainer:
    """Trains a `Controller` with REINFORCE. ``cfg`` defaults to the controller's own config."""

    def __init__(self, controller: Controller, cfg: ControllerConfig | None = None):
        cfg = cfg if cfg is not None else controller.cfg
        cfg.validate()
        params = [p for p in controller.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the controller has no trainable parameters (a uniform sampler is not trained)")
        self.controller, self.cfg = controller, cfg
        b1, b2 = (float(b) for b in cfg.adam_betas)
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=(b1, b2), eps=cfg.adam_eps)
        self.baseline = 0.0  # moving average of the reward (entropy bonus included), starts at 0 as in the code
        self.step_count = 0  # Adam steps taken
        self.elite: list[tuple[float, list]] = []  # (reward, actions) of the best distinct archs, best first
        # full policy entropy per decision type over the samples of the current train_epoch (diagnostics only)
        self.decision_entropy = EntropyMeter(controller.decisions)

    def _set_eps(self) -> None:
        """Translate TensorFlow's epsilon into PyTorch's for the coming step (t = step_count + 1)."""
        eps = self.cfg.adam_eps
        if self.cfg.adam_tf_eps:
            eps /= math.sqrt(1.0 - float(self.cfg.adam_betas[1]) ** (self.step_count + 1))
        for group in self.optimizer.param_groups:
            group["eps"] = eps

    def step(self, reward_fn: Callable[[Arch], float]) -> dict[str, float]:
        """One controller update: sample ``num_aggregate`` architectures, score each with ``reward_fn(arch)``, average
        their REINFORCE gradients, take one Adam step. Returns the means over the samples (``reward`` is the task
        reward without the entropy bonus; ``baseline`` is its value after the last sample)."""
        self.controller.train()
        with torch.enable_grad():  # callers may hold no_grad around the search loop
            return self._step(reward_fn)

    def _step(self, reward_fn: Callable[[Arch], float]) -> dict[str, float]:
        cfg, n = self.cfg, self.cfg.num_aggregate
        losses = []
        rewards = entropies = skip_rates = log_probs = advantages = baselines = 0.0
        for _ in range(n):
            s = self.controller.sample()
            reward = float(reward_fn(s.arch))
            if not math.isfinite(reward):
                raise TrainingDiverged(
                    f"the controller reward is {reward} at controller step {self.step_count + 1}; "
                    "the shared weights have diverged: lower the shared learning rate or resume from a checkpoint"
                )
            entropy = float(s.entropy.detach())
            total = reward + cfg.entropy_weight * entropy
            if self.step_count == 0 and not losses and cfg.baseline_start == "first":
                self.baseline = total  # the very first sample of the search: its advantage is 0
            self.baseline -= (1.0 - cfg.baseline_decay) * (self.baseline - total)  # before the advantage
            advantage = total - self.baseline
            loss = -s.log_prob * advantage
            if cfg.skip_weight:
                loss = loss + cfg.skip_weight * s.skip_penalty
            losses.append(loss)
            rewards += reward
            entropies += entropy
            skip_rates += s.skip_rate
            log_probs += float(s.log_prob.detach())
            advantages += advantage
            baselines += self.baseline
            self.decision_entropy.add(s.logits)
            self._remember(reward, s.actions)
        mean_loss = torch.stack(losses).mean()  # one backward over all samples: the averaged gradient
        if self.elite and cfg.elite_weight:
            elite_nll = -torch.stack([self.controller.score(a).log_prob for _, a in self.elite]).mean()
            mean_loss = mean_loss + cfg.elite_weight * elite_nll
        if not torch.isfinite(mean_loss):
            raise TrainingDiverged(
                f"the controller loss is {float(mean_loss)} at controller step {self.step_count + 1}; "
                "lower controller.lr or resume from a checkpoint"
            )
        self.optimizer.zero_grad(set_to_none=True)
        mean_loss.backward()
        self._set_eps()
        self.optimizer.step()
        self.step_count += 1
        return {
            "reward": rewards / n,
            "baseline": self.baseline,
            "entropy": entropies / n,
            "skip_rate": skip_rates / n,
            "loss": float(mean_loss.detach()),
            "log_prob": log_probs / n,
            "advantage": advantages / n,
            "baseline_mean": baselines / n,
        }

    def _remember(self, reward: float, actions: list) -> None:
        """Keep ``actions`` among the ``elite_size`` best distinct archs if its reward earns it a place."""
        k = self.cfg.elite_size
        if k <= 0 or any(a == actions for _, a in self.elite):
            return
        if len(self.elite) < k or reward > self.elite[-1][0]:
            self.elite.append((reward, actions))
            self.elite.sort(key=lambda e: -e[0])  # stable: an earlier arch stays ahead of a later equal one
            del self.elite[k:]

    def train_epoch(
        self,
        reward_fn: Callable[[Arch], float],
        steps: int | None = None,
        callback: Callable[[int, dict[str, float]], None] | None = None,
    ) -> dict[str, float]:
        """``steps`` updates (default ``cfg.train_steps``); ``callback(i, stats)`` after each. Returns the mean of
        each statistic over the updates, except ``baseline``, which is its final value, and the policy's full
        entropy per decision type over the epoch's samples (``entropy_op``, ``entropy_frac``, ...; see
        `enas.search.diagnostics.EntropyMeter`)."""
        steps = self.cfg.train_steps if steps is None else steps
        self.decision_entropy.reset()
        totals = dict.fromkeys(STAT_KEYS, 0.0)
        stats: dict[str, float] = {}
        for i in range(steps):
            stats = self.step(reward_fn)
            for key in STAT_KEYS:
                totals[key] += stats[key]
            if callback is not None:
                callback(i, stats)
        entropy = self.decision_entropy.means()
        if steps <= 0:
            return {**totals, "baseline": self.baseline, **entropy}
        return {**{k: v / steps for k, v in totals.items()}, "baseline": self.baseline, **entropy}

    def state_dict(self) -> dict[str, Any]:
        """Optimiser state, baseline and step counter (the controller's weights are saved by the caller)."""
        return {"optimizer": self.optimizer.state_dict(), "baseline": self.baseline, "step_count": self.step_count,
                "elite": [[r, a] for r, a in self.elite]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = float(state["baseline"])
        self.step_count = int(state["step_count"])
        self.elite = [(float(r), list(a)) for r, a in state.get("elite", [])]  # absent in older checkpoints
        for group in self.optimizer.param_groups:  # the current config decides the learning rate and betas
            group["lr"] = self.cfg.lr
            group["betas"] = tuple(float(b) for b in self.cfg.adam_betas)
