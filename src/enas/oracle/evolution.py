"""Regularized evolution (Real et al., 2019, "Regularized Evolution for Image Classifier Architecture Search"):
the strong black-box baseline the controller is measured against on tables of true scores (`enas.oracle`).

Over any space's decision list: the first ``population`` evaluations are uniform archs; after that each cycle draws
``tournament`` members of the population uniformly (with replacement, as in the paper's pseudo-code), mutates the
best of them in one decision and evaluates the child, which replaces the *oldest* member (aging, not the worst).
A mutation changes one choosing decision to another value: an op or a pointer to a different index, a skips
decision by flipping one bit. NAS-Bench-201's baseline uses population 50 and tournament 10, the defaults here.

The random numbers come from one `random.Random` (or any object with its ``randrange``), so a run is
reproducible from its seed and a test can script every draw.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

from enas.spaces.base import Action, Decision, Space


def choosing(decisions: list[Decision]) -> list[Decision]:
    """The decisions that make an action (every kind but ``anchor``), in action order."""
    return [d for d in decisions if d.kind != "anchor"]


def random_actions(decisions: list[Decision], rng: Any) -> list[Action]:
    """Uniform actions: each op or pointer uniform over its ``size`` choices, each skip bit a fair coin."""
    out: list[Action] = []
    for d in choosing(decisions):
        if d.kind == "skips":
            out.append([rng.randrange(2) for _ in range(d.size)])
        else:
            out.append(rng.randrange(d.size))
    return out


def mutate(decisions: list[Decision], actions: list[Action], rng: Any) -> list[Action]:
    """A copy of ``actions`` with one decision changed: a uniformly drawn decision among those that have another
    value (ops and pointers of size > 1, skips of size > 0) gets a uniformly drawn *different* index, or one of
    its bits flipped. Actions of a space with nothing to mutate are returned unchanged."""
    ds = choosing(decisions)
    mutable = [i for i, d in enumerate(ds) if (d.size > 0 if d.kind == "skips" else d.size > 1)]
    child = [list(a) if isinstance(a, list) else a for a in actions]
    if not mutable:
        return child
    i = mutable[rng.randrange(len(mutable))]
    d = ds[i]
    if d.kind == "skips":
        j = rng.randrange(d.size)
        child[i][j] = 1 - child[i][j]
    else:
        new = rng.randrange(d.size - 1)  # a different index: skip over the current one
        child[i] = new + int(new >= child[i])
    return child


class RegularizedEvolution:
    """Ask/tell regularized evolution over ``space.decisions()``.

    ``ask()`` returns the next actions to evaluate, ``tell(actions, reward)`` records their reward; the two
    alternate. ``history`` holds every (actions, reward) told, in order."""

    def __init__(self, space: Space, population: int = 50, tournament: int = 10, rng: Any = None):
        if population < 1 or tournament < 1:
            raise ValueError(f"population and tournament must be positive, got {population} and {tournament}")
        self.decisions = list(space.decisions())
        self.population_size, self.tournament = population, tournament
        self.rng = rng if rng is not None else random.Random(0)
        self.population: deque[tuple[list[Action], float]] = deque()
        self.history: list[tuple[list[Action], float]] = []

    def ask(self) -> list[Action]:
        if len(self.history) < self.population_size:  # the initial population: uniform archs
            return random_actions(self.decisions, self.rng)
        members = list(self.population)
        drawn = [members[self.rng.randrange(len(members))] for _ in range(self.tournament)]
        parent = max(drawn, key=lambda m: m[1])  # the first best one on ties
        return mutate(self.decisions, parent[0], self.rng)

    def tell(self, actions: list[Action], reward: float) -> None:
        self.history.append((actions, reward))
        self.population.append((actions, reward))
        if len(self.population) > self.population_size:
            self.population.popleft()  # aging: the oldest member dies, whatever its reward

    def run(self, reward_fn: Callable[[list[Action]], float], evaluations: int) -> list[tuple[list[Action], float]]:
        """Ask, evaluate and tell ``evaluations`` times; the history."""
        for _ in range(evaluations):
            actions = self.ask()
            self.tell(actions, reward_fn(actions))
        return self.history
