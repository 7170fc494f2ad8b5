"""Regularized evolution against a trace computed by hand, and its mutation operator."""

from __future__ import annotations

import random

import pytest

from enas.oracle.evolution import RegularizedEvolution, mutate, random_actions
from enas.spaces.base import Decision
from tests.fakes import FakeSpace


class Scripted:
    """An rng whose ``randrange(n)`` returns the next scripted value (checked to lie below n)."""

    def __init__(self, values: list[int]):
        self.values = list(values)

    def randrange(self, n: int) -> int:
        v = self.values.pop(0)
        assert 0 <= v < n, f"scripted {v} outside randrange({n})"
        return v


def two_ops() -> FakeSpace:
    return FakeSpace([Decision("op", "a", size=3, vocab="v"), Decision("op", "b", size=3, vocab="v")],
                     {"v": ["x", "y", "z"]})


def test_trace_by_hand():
    # population 3, tournament 2, reward 10 * a + b (best: [2, 2] = 22)
    draws = [0, 1, 1, 0, 0, 0,  # the initial population: [0, 1], [1, 0], [0, 0]
             0, 2, 0, 1,  # members 0 and 2 -> parent [0, 1]; mutate decision 0: draw 1 skips the current 0 -> 2
             1, 0, 1, 0,  # members [0, 0] and [1, 0] -> parent [1, 0]; decision 1: draw 0, current 0 -> 1
             1, 1, 1, 1]  # member [2, 1] twice; decision 1: draw 1, current 1 -> 2
    rng = Scripted(draws)
    evo = RegularizedEvolution(two_ops(), population=3, tournament=2, rng=rng)
    history = evo.run(lambda a: 10 * a[0] + a[1], 6)
    assert [h[0] for h in history] == [[0, 1], [1, 0], [0, 0], [2, 1], [1, 1], [2, 2]]
    assert [h[1] for h in history] == [1, 10, 0, 21, 11, 22]
    # aging: the oldest members died, whatever their reward ([1, 0] scored 10 and is gone)
    assert list(evo.population) == [([2, 1], 21), ([1, 1], 11), ([2, 2], 22)]
    assert rng.values == []


def test_mutate_changes_exactly_one_decision_to_another_value():
    ds = [Decision("anchor", "in", new_anchor=True, feed="start"), Decision("op", "one", size=1, vocab="u"),
          Decision("pointer", "p", size=1), Decision("op", "o", size=5, vocab="v"),
          Decision("skips", "s", size=3, new_anchor=True, feed="skip_mean")]
    rng = random.Random(0)
    parent = [0, 0, 2, [1, 0, 1]]
    for _ in range(200):
        child = mutate(ds, parent, rng)
        diff = [i for i, (a, b) in enumerate(zip(parent, child)) if a != b]
        assert len(diff) == 1 and diff[0] in (2, 3)  # size-1 op and pointer have no other value
        if diff[0] == 3:
            assert sum(x != y for x, y in zip(parent[3], child[3])) == 1
    assert parent == [0, 0, 2, [1, 0, 1]]  # the parent is not modified


def test_random_actions_cover_every_choice():
    rng = random.Random(1)
    seen = {tuple(random_actions(two_ops().decisions(), rng)) for _ in range(300)}
    assert len(seen) == 9


def test_bad_sizes_refused():
    with pytest.raises(ValueError):
        RegularizedEvolution(two_ops(), population=0)
