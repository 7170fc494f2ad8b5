"""`enas.oracle.run`: every policy on a toy table whose optimum is known, budgets, seeds, bad rewards."""

from __future__ import annotations

import statistics

import pytest
import torch

from enas.errors import ConfigError
from enas.oracle import POLICIES, run
from enas.presets import make_config
from enas.spaces.base import Decision
from tests.fakes import FakeSpace

TARGET = (3, 1, 2)


class ToySpace(FakeSpace):
    """Three ops of four choices (64 archs); archs are tuples."""

    def __init__(self):
        super().__init__([Decision("op", f"o{i}", size=4, vocab="v") for i in range(3)], {"v": list("abcd")})

    def decode(self, actions):
        return tuple(actions)


def reward(arch) -> float:
    """Highest (0) at TARGET only."""
    return -float(sum((a - t) ** 2 for a, t in zip(arch, TARGET)))


def demo_controller():
    return make_config("macro", "demo", "search", "fashion-mnist").controller


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_finds_the_known_optimum(policy):
    result = run(ToySpace(), reward, 300, policy=policy, seed=0, controller=demo_controller())
    assert len(result) == 300
    assert result.archs[result.best_index()] == TARGET
    assert result.best_so_far()[-1] == 0.0


def test_the_demo_controller_learns_and_random_does_not():
    """The controller's last 100 samples are much better than uniform ones (mean reward of a uniform arch: -6.5),
    and than its own first 10 (a fresh controller samples nearly uniformly)."""
    enas = run(ToySpace(), reward, 400, policy="enas", seed=0, controller=demo_controller())
    rand = run(ToySpace(), reward, 400, policy="random", seed=0)
    late, early = statistics.fmean(enas.rewards[-100:]), statistics.fmean(enas.rewards[:10])
    assert late > early + 1.5
    assert late > statistics.fmean(rand.rewards[-100:]) + 3
    assert len(enas.controller_stats) == 400 // demo_controller().num_aggregate


def test_budget_is_exact_with_a_partial_last_update():
    cfg = demo_controller()
    cfg.num_aggregate = 7
    result = run(ToySpace(), reward, 30, policy="enas", seed=3, controller=cfg)
    assert len(result) == 30 and len(result.controller_stats) == 4  # the fifth update was cut short


@pytest.mark.parametrize("policy", POLICIES)
def test_same_seed_same_trace_and_global_rng_untouched(policy):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = run(ToySpace(), reward, 60, policy=policy, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    b = run(ToySpace(), reward, 60, policy=policy, seed=5)
    c = run(ToySpace(), reward, 60, policy=policy, seed=6)
    assert a.archs == b.archs
    assert a.archs != c.archs


def test_best_index_prefix_and_ties():
    result = run(ToySpace(), lambda arch: 1.0, 5, policy="random")
    assert result.best_index() == 0 and result.best_index(3) == 0
    with pytest.raises(ValueError):
        result.best_index(0)


def test_bad_inputs():
    with pytest.raises(ConfigError, match="policy"):
        run(ToySpace(), reward, 10, policy="bayes")
    with pytest.raises(ConfigError, match="evaluations"):
        run(ToySpace(), reward, 0)
    with pytest.raises(ValueError, match="finite"):
        run(ToySpace(), lambda arch: float("nan"), 10, policy="random")
    with pytest.raises(ConfigError, match="space"):
        run(42, reward, 10)


def test_a_registered_space_by_name():
    result = run("macro", lambda arch: float(len(arch.to_fixed_arc())), 12, policy="evolution", population=4)
    assert len(result) == 12 and type(result.archs[0]).__name__ == "MacroArch"
