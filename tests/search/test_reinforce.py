"""REINFORCE: baseline, aggregation, TF-style Adam epsilon, a toy problem with a known optimum, checkpoints."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from enas.errors import TrainingDiverged
from enas.search.controller import Controller, ControllerConfig, UniformSampler
from enas.search.reinforce import STAT_KEYS, ReinforceTrainer
from enas.spaces.base import Decision
from tests.fakes import FakeSpace


def toy_space() -> FakeSpace:
    """Op, pointer and skips decisions (sizes 0 to 3)."""
    d = [
        Decision("op", "op0", size=4, vocab="v"),
        Decision("skips", "s0", size=0, new_anchor=True, feed="skip_mean"),
        Decision("op", "op1", size=4, vocab="v"),
        Decision("skips", "s1", size=1, new_anchor=True, feed="skip_mean"),
        Decision("pointer", "p2", size=2, new_anchor=True, feed="anchor"),
        Decision("op", "op3", size=4, vocab="v"),
        Decision("skips", "s3", size=3, feed="skip_mean"),
    ]
    return FakeSpace(d, {"v": ["a", "b", "c", "d"]})


TARGET = [2, [], 1, [1], 1, 3, [0, 1, 1]]  # distinct ops per position, mixed skip bits


def match_fraction(actions) -> float:
    """Fraction of the 8 choices (ops, pointer, skip bits) equal to TARGET."""
    hits = total = 0
    for a, t in zip(actions, TARGET):
        a, t = (a, t) if isinstance(t, list) else ([a], [t])
        hits += sum(x == y for x, y in zip(a, t))
        total += len(t)
    return hits / total


def cfg(**kw) -> ControllerConfig:
    base = dict(lstm_size=16, entropy_weight=0.0, skip_weight=0.0, num_aggregate=3, train_steps=2)
    return ControllerConfig(**{**base, **kw})


def test_toy_reward_reaches_optimum_and_entropy_falls():
    torch.manual_seed(0)
    c = cfg(lstm_size=32, tanh_constant=2.5, lr=0.01, init_range=0.5, baseline_decay=0.9, num_aggregate=5)
    ctl = Controller(toy_space(), c)
    trainer = ReinforceTrainer(ctl)
    first = trainer.train_epoch(match_fraction, steps=5)
    assert first["reward"] < 0.7
    for _ in range(40):
        last = trainer.train_epoch(match_fraction, steps=5)
        if last["reward"] >= 0.95:
            break
    assert last["reward"] >= 0.9
    assert last["entropy"] < 0.5 * first["entropy"]
    assert ctl.sample(greedy=True).actions == TARGET


def test_baseline_moves_before_the_advantage_and_gradients_are_averaged():
    """Recompute the aggregated gradient by hand from the same samples (same RNG) and compare."""
    torch.manual_seed(1)
    c = cfg(num_aggregate=3, entropy_weight=0.1, skip_weight=0.5, baseline_decay=0.8)
    ctl = Controller(toy_space(), c)
    initial = {k: v.clone() for k, v in ctl.state_dict().items()}  # the weights before the Adam step
    trainer = ReinforceTrainer(ctl)
    rewards = iter([0.3, 0.9, 0.5])
    state = torch.get_rng_state()
    stats = trainer.step(lambda arch: next(rewards))
    got = {n: p.grad for n, p in ctl.named_parameters()}

    ref = Controller(toy_space(), c)
    ref.load_state_dict(initial)
    torch.set_rng_state(state)
    b, loss = 0.0, 0.0
    for r in (0.3, 0.9, 0.5):
        s = ref.sample()
        big_r = r + 0.1 * s.entropy.item()
        b = b - (1 - 0.8) * (b - big_r)  # the baseline moves first ...
        loss = loss + (-s.log_prob * (big_r - b) + 0.5 * s.skip_penalty) / 3  # ... then the advantage uses it
    loss.backward()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-7)
    assert stats["baseline"] == pytest.approx(b)
    assert stats["loss"] == pytest.approx(loss.item(), abs=1e-6)
    assert stats["reward"] == pytest.approx((0.3 + 0.9 + 0.5) / 3)
    assert set(stats) == set(STAT_KEYS)


def test_one_adam_step_per_num_aggregate_samples():
    ctl = Controller(toy_space(), cfg(num_aggregate=4))
    trainer = ReinforceTrainer(ctl)
    calls, steps = [], []
    original = trainer.optimizer.step

    def counted_step(*args, **kwargs):
        steps.append(len(calls))
        return original(*args, **kwargs)

    trainer.optimizer.step = counted_step
    seen = []
    trainer.train_epoch(lambda arch: calls.append(arch) or 0.5, steps=3, callback=lambda i, s: seen.append(i))
    assert steps == [4, 8, 12]  # one step after every 4 rewards
    assert seen == [0, 1, 2] and trainer.step_count == 3
    assert trainer.train_epoch(lambda arch: 0.5)["reward"] == pytest.approx(0.5)  # default: cfg.train_steps
    assert trainer.step_count == 5


def test_adam_epsilon_follows_tensorflow():
    """With beta1 = 0, one TF Adam step moves each weight by lr * sqrt(1 - b2) * g / (sqrt((1 - b2) g^2) + eps)."""
    for tf_eps in (True, False):
        torch.manual_seed(2)
        ctl = Controller(toy_space(), cfg(lr=0.01, adam_eps=1e-3, adam_tf_eps=tf_eps))
        before = ctl.g_emb.detach().clone()
        trainer = ReinforceTrainer(ctl)
        trainer.step(lambda arch: match_fraction(arch))
        g = ctl.g_emb.grad
        root = math.sqrt(1 - 0.999)
        if tf_eps:
            expected = before - 0.01 * root * g / ((root * g.abs()) + 1e-3)
        else:  # PyTorch: eps added after the bias correction
            expected = before - 0.01 * g / (g.abs() + 1e-3)
        torch.testing.assert_close(ctl.g_emb.detach(), expected, rtol=1e-5, atol=1e-8)


def test_non_finite_reward_raises():
    trainer = ReinforceTrainer(Controller(toy_space(), cfg()))
    with pytest.raises(TrainingDiverged, match="reward is nan"):
        trainer.step(lambda arch: float("nan"))
    with pytest.raises(TrainingDiverged, match="reward is inf"):
        trainer.step(lambda arch: math.inf)
    assert trainer.step_count == 0


def test_state_dict_round_trip_resumes_identically():
    torch.manual_seed(3)
    c = cfg(lr=0.01, entropy_weight=1e-2, skip_weight=0.8)
    ctl = Controller(toy_space(), c)
    trainer = ReinforceTrainer(ctl)
    trainer.train_epoch(match_fraction, steps=2)
    saved = copy.deepcopy((ctl.state_dict(), trainer.state_dict(), torch.get_rng_state()))
    cont = trainer.step(match_fraction)
    cont_next = ctl.sample().actions

    torch.manual_seed(99)  # a fresh process: different weights and RNG until restored
    ctl2 = Controller(toy_space(), c)
    trainer2 = ReinforceTrainer(ctl2)
    ctl2.load_state_dict(saved[0])
    trainer2.load_state_dict(saved[1])
    torch.set_rng_state(saved[2])
    assert trainer2.baseline == saved[1]["baseline"] and trainer2.step_count == 2
    resumed = trainer2.step(match_fraction)
    assert resumed == cont
    assert ctl2.sample().actions == cont_next
    for (n, p), p2 in zip(ctl.named_parameters(), ctl2.parameters()):
        assert torch.equal(p, p2), n


def test_works_under_no_grad_and_rejects_parameterless_samplers():
    trainer = ReinforceTrainer(Controller(toy_space(), cfg()))
    with torch.no_grad():
        stats = trainer.step(match_fraction)
    assert math.isfinite(stats["loss"])
    with pytest.raises(ValueError, match="no trainable parameters"):
        ReinforceTrainer(UniformSampler(toy_space()), cfg())


def test_baseline_can_start_at_the_first_reward():
    torch.manual_seed(2)
    c = cfg(num_aggregate=2, baseline_decay=0.5, baseline_start="first")
    trainer = ReinforceTrainer(Controller(toy_space(), c))
    rewards = iter([0.4, 0.8])
    stats = trainer.step(lambda arch: next(rewards))
    # first sample: b = R1 = 0.4 (advantage 0); second: b = 0.4 - 0.5 * (0.4 - 0.8) = 0.6, advantage 0.2
    assert stats["baseline"] == pytest.approx(0.6)
    assert stats["advantage"] == pytest.approx((0.0 + 0.2) / 2)
    stats = trainer.step(lambda arch: 1.0)  # later steps never reset it
    assert stats["baseline"] == pytest.approx(0.6 + 0.5 * 0.4 + 0.5 * 0.2)
    with pytest.raises(Exception, match="baseline_start"):
        ReinforceTrainer(Controller(toy_space(), cfg(baseline_start="mean")))


def _demo_share(**overrides) -> float:
    """The rnn demo's controller, 240 updates on a synthetic reward in the demo's regime (80 / ppl ~ 0.17, archs
    differ by ~0.02): reward rises with the share of relu nodes. Returns the relu share of the trained policy."""
    import random

    from enas.build import build_space
    from enas.config import set_key
    from enas.presets import make_config

    torch.manual_seed(0)
    rng = random.Random(0)
    conf = make_config("rnn", "demo", "search", "ptb")
    for key, value in overrides.items():
        set_key(conf, f"controller.{key}", value)
    ctl = Controller(build_space(conf), conf.controller)
    trainer = ReinforceTrainer(ctl)

    def reward(arch) -> float:
        relu = sum(n.act == "relu" for n in arch.nodes) / len(arch.nodes)
        return 0.17 + 0.02 * relu + 0.01 * rng.gauss(0, 1)

    trainer.train_epoch(reward, steps=240)
    with torch.no_grad():
        archs = [ctl.sample().arch for _ in range(100)]
    return sum(n.act == "relu" for a in archs for n in a.nodes) / sum(len(a.nodes) for a in archs)


@pytest.mark.slow
def test_demo_controller_learns_a_small_noisy_preference():
    """The short-search settings of the demo presets (without the elite term, which costs ten more walks per update)
    find a preference worth 0.0025 of reward per node under noise of 0.01 per sample: the relu share rises from
    chance (0.25) to 0.44 in 240 updates (docs/fidelity.md)."""
    assert _demo_share(elite_size=0) > 0.35


def test_elite_keeps_the_best_distinct_archs():
    trainer = ReinforceTrainer(Controller(toy_space(), cfg(elite_size=2, elite_weight=1.0)))
    for reward, actions in [(0.1, [0]), (0.5, [1]), (0.5, [1]), (0.3, [2]), (0.5, [3]), (0.9, [4])]:
        trainer._remember(reward, actions)
    assert trainer.elite == [(0.9, [4]), (0.5, [1])]  # the repeat of [1] is not kept twice; [3] came later
    off = ReinforceTrainer(Controller(toy_space(), cfg()))
    off._remember(1.0, [0])
    assert off.elite == []


def test_elite_term_is_the_mean_negative_log_likelihood_of_the_elite():
    """With a constant reward (advantage 0 from a baseline started at the first reward) and no entropy or skip
    terms, an update's gradient is exactly that of elite_weight * mean(-log pi(elite))."""
    torch.manual_seed(0)
    c = cfg(elite_size=3, elite_weight=0.7, baseline_start="first", entropy_weight=0.0, skip_weight=0.0, lr=0.0,
            num_aggregate=2)
    ctrl = Controller(toy_space(), c)
    trainer = ReinforceTrainer(ctrl)
    elite = [[0, [], 1, [1], 0, 2, [0, 0, 1]], [3, [], 3, [0], 1, 0, [1, 1, 1]]]
    trainer.elite = [(2.0, elite[0]), (1.5, elite[1])]
    trainer.step(lambda arch: 1.0)
    assert len(trainer.elite) == 3 and trainer.elite[:2] == [(2.0, elite[0]), (1.5, elite[1])]
    elite.append(trainer.elite[2][1])  # the first sample joined before the update (the second ties it: not kept)
    got = [p.grad.clone() for p in ctrl.parameters()]
    ctrl.zero_grad()
    (0.7 * -torch.stack([ctrl.score(a).log_prob for a in elite]).mean()).backward()
    for g, p in zip(got, ctrl.parameters()):
        want = p.grad if p.grad is not None else torch.zeros_like(p)
        assert torch.allclose(g, want, atol=1e-6)


def test_elite_survives_a_checkpoint():
    trainer = ReinforceTrainer(Controller(toy_space(), cfg(elite_size=4, elite_weight=1.0)))
    trainer.train_epoch(lambda arch: float(match_fraction(arch)), steps=3)
    state = copy.deepcopy(trainer.state_dict())
    other = ReinforceTrainer(Controller(toy_space(), cfg(elite_size=4, elite_weight=1.0)))
    other.load_state_dict(state)
    assert other.elite == trainer.elite and len(other.elite) == 4
    del state["elite"]  # a checkpoint written before the option existed
    other.load_state_dict(state)
    assert other.elite == []
