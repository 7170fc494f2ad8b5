"""The search without a supernet: a space's decisions run against any ``reward_fn(arch) -> float`` (a table of
true scores, a cheap proxy, a synthetic function) for a fixed number of evaluations, under one of three policies:

* ``enas``: the paper's LSTM controller trained by REINFORCE, the same `Controller` and `ReinforceTrainer` code a
  search runs, with the `ControllerConfig` given (e.g. a preset's ``cfg.controller``);
* ``random``: uniform archs (`UniformSampler`, what random search with weight sharing samples);
* ``evolution``: regularized evolution (`enas.oracle.evolution`), the strong black-box reference.

Every call of ``reward_fn`` is one evaluation, repeats included: a search pays for a repeated arch's minibatch too.
The controller takes an Adam step after every ``num_aggregate`` evaluations; an update cut short by the budget is
not taken (it could not change any arch already evaluated).

    from enas.oracle import run
    result = run(space, lambda arch: table[arch], evaluations=200, policy="enas", seed=0, controller=cfg)
    best_arch = result.archs[result.best_index()]
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from enas import registry
from enas.arch import Arch
from enas.errors import ConfigError
from enas.oracle.evolution import RegularizedEvolution
from enas.presets import make_config
from enas.search.controller import Controller, ControllerConfig, UniformSampler
from enas.search.reinforce import ReinforceTrainer
from enas.spaces.base import Space

POLICIES = ("enas", "random", "evolution")


@dataclass
class OracleResult:
    """Every evaluation of one oracle search, in order."""

    policy: str
    seed: int
    archs: list[Arch] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    controller_stats: list[dict[str, float]] = field(default_factory=list)  # one per Adam step (policy enas)

    def __len__(self) -> int:
        return len(self.rewards)

    def best_index(self, evaluations: int | None = None) -> int:
        """Index of the highest reward among the first ``evaluations`` (all by default); the first one on ties."""
        n = len(self.rewards) if evaluations is None else min(evaluations, len(self.rewards))
        if n <= 0:
            raise ValueError("no evaluation to choose from")
        return max(range(n), key=lambda i: (self.rewards[i], -i))

    def best_so_far(self) -> list[float]:
        """The running maximum of the reward after each evaluation (the anytime curve)."""
        out, best = [], -math.inf
        for r in self.rewards:
            best = max(best, r)
            out.append(best)
        return out


class _BudgetSpent(Exception):
    """Raised inside the controller's update when the evaluation budget is used up."""


def run(space: Space | str, reward_fn: Callable[[Arch], float], evaluations: int, policy: str = "enas",
        seed: int = 0, controller: ControllerConfig | None = None, population: int = 50,
        tournament: int = 10) -> OracleResult:
    """Search ``space`` for ``evaluations`` calls of ``reward_fn`` with ``policy``; higher rewards are better.

    ``space`` is a `Space` or a registered space name (built with its paper preset's model sizes). ``controller``
    (policy ``enas``) defaults to `ControllerConfig()`, the authors' macro settings. ``population`` and
    ``tournament`` are regularized evolution's. The torch RNG (policies ``enas`` and ``random``) and Python's
    (``evolution``) are seeded with ``seed`` inside the call and restored afterwards."""
    if policy not in POLICIES:
        raise ConfigError(f"unknown oracle policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if isinstance(evaluations, bool) or not isinstance(evaluations, int) or evaluations < 1:
        raise ConfigError(f"evaluations must be a positive integer, got {evaluations!r}")
    space = _space(space)
    result = OracleResult(policy, seed)

    def evaluate(arch: Arch) -> float:
        if len(result.rewards) >= evaluations:
            raise _BudgetSpent
        reward = float(reward_fn(arch))
        if not math.isfinite(reward):
            name = arch.to_fixed_arc() if isinstance(arch, Arch) else repr(arch)
            raise ValueError(f"reward_fn returned {reward} for {name}; rewards must be finite")
        result.archs.append(arch)
        result.rewards.append(reward)
        return reward

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if policy == "enas":
            trainer = ReinforceTrainer(Controller(space, controller if controller is not None else ControllerConfig()))
            try:
                while True:
                    result.controller_stats.append(trainer.step(evaluate))
            except _BudgetSpent:
                pass
        elif policy == "random":
            sampler = UniformSampler(space)
            for _ in range(evaluations):
                evaluate(sampler.sample().arch)
        else:
            evo = RegularizedEvolution(space, population, tournament, rng=random.Random(seed))
            evo.run(lambda actions: evaluate(space.decode(actions)), evaluations)
    return result


def _space(space: Space | str) -> Space:
    if isinstance(space, Space):
        return space
    if isinstance(space, str):
        entry = registry.get(space)
        return entry.build(make_config(entry.name, "paper").model)
    raise ConfigError(f"space must be an enas Space or a registered space name, got {type(space).__name__}")
