"""The controller policy and the uniform sampler, on small fake spaces (no real space is imported)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from enas.errors import ArchError, ConfigError
from enas.search.controller import Controller, ControllerConfig, UniformSampler, check_actions
from enas.spaces.base import Decision, Space
from tests.fakes import FakeSpace


def rnn_space(nodes: int = 5, prior: bool = True) -> FakeSpace:
    """Recurrent-cell shape: node 0 is an anchor step, every later node a scaled pointer with a distance prior."""
    d = [Decision("anchor", "n0", new_anchor=True, feed="start"), Decision("op", "f0", size=4, vocab="act")]
    for l in range(1, nodes):
        d.append(Decision("pointer", f"p{l}", size=l, new_anchor=True, feed="anchor_scaled", distance_prior=prior))
        d.append(Decision("op", f"f{l}", size=4, vocab="act"))
    return FakeSpace(d, {"act": ["tanh", "relu", "identity", "sigmoid"]})


def macro_space(layers: int = 4) -> FakeSpace:
    """Macro shape: op, then skips over all earlier layers (size 0 for the first layer)."""
    d = []
    for k in range(layers):
        d.append(Decision("op", f"op{k}", size=6, vocab="conv"))
        d.append(Decision("skips", f"skip{k}", size=k, new_anchor=True, feed="skip_mean"))
    return FakeSpace(d, {"conv": [f"c{i}" for i in range(6)]})


def micro_space(nodes: int = 3) -> FakeSpace:
    """Micro shape: two cells (groups) with zero-valued input anchors and a fixed op bias in the first cell."""
    d = []
    for g in range(2):
        d += [
            Decision("anchor", f"g{g}in{i}", new_anchor=True, zero_anchor=True, feed="start", group=g) for i in (0, 1)
        ]
        for i in range(2, 2 + nodes):
            d += [Decision("pointer", f"g{g}n{i}x{j}", size=i, feed="anchor", group=g) for j in (0, 1)]
            bias = (0.25, 0.25, -0.25, -0.25, -0.25) if g == 0 else None
            d += [Decision("op", f"g{g}n{i}op{j}", size=5, vocab="ops", fixed_bias=bias, group=g) for j in (0, 1)]
            d.append(Decision("anchor", f"g{g}n{i}out", new_anchor=True, feed="start", group=g))
    return FakeSpace(d, {"ops": list("abcde")})


SPACES = {"rnn": rnn_space, "macro": macro_space, "micro": micro_space}


def small(**kw) -> ControllerConfig:
    return ControllerConfig(lstm_size=kw.pop("lstm_size", 16), **kw)


def choice_decisions(space: Space) -> list[Decision]:
    return [d for d in space.decisions() if d.kind != "anchor"]


def recompute(sample, decisions, mode: str) -> tuple[float, float]:
    """Log-probability and entropy of a sample, from its stored shaped logits."""
    lp = ent = 0.0
    for d, a, logits in zip(decisions, sample.actions, sample.logits):
        if d.kind == "skips":
            if d.size == 0:
                continue
            logp = F.log_softmax(logits, 1)  # (l, 2)
            picked = logp[torch.arange(d.size), torch.tensor(a)]
        else:
            logp = F.log_softmax(logits, 0)
            picked = logp[a : a + 1]
        lp += picked.sum().item()
        ent += (-(logp.exp() * logp).sum() if mode == "full" else -(picked * picked.exp()).sum()).item()
    return lp, ent


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_sampled_actions_are_valid(kind):
    torch.manual_seed(0)
    space = SPACES[kind]()
    for sampler in (Controller(space, small()), UniformSampler(space)):
        for _ in range(20):
            s = sampler.sample()
            check_actions(space.decisions(), s.actions)  # raises on a bad action
            assert s.arch == s.actions
            for d, a in zip(choice_decisions(space), s.actions):
                if d.kind == "skips":
                    assert len(a) == d.size and set(a) <= {0, 1}
                else:
                    assert isinstance(a, int) and 0 <= a < d.size


@pytest.mark.parametrize("kind", sorted(SPACES))
@pytest.mark.parametrize("mode", ["sampled", "full"])
def test_log_prob_and_entropy_match_logits_and_teacher_forcing(kind, mode):
    torch.manual_seed(1)
    space = SPACES[kind]()
    ctl = Controller(space, small(temperature=2.0, tanh_constant=1.5, entropy_mode=mode))
    s = ctl.sample()
    lp, ent = recompute(s, choice_decisions(space), mode)
    assert s.log_prob.item() == pytest.approx(lp, abs=1e-5)
    assert s.entropy.item() == pytest.approx(ent, abs=1e-5)
    tf_lp, tf_ent = ctl.log_prob(s.actions)
    assert tf_lp.item() == pytest.approx(s.log_prob.item(), abs=1e-5)
    assert tf_ent.item() == pytest.approx(s.entropy.item(), abs=1e-5)
    tf_lp.backward()  # differentiable
    assert ctl.g_emb.grad is not None and ctl.g_emb.grad.abs().sum() > 0


@pytest.mark.parametrize("tie", [False, True])
def test_single_op_decision_by_hand(tie):
    """One op decision, recomputed from the raw weights with the LSTM equations written out."""
    space = FakeSpace([Decision("op", "only", size=3, vocab="v", fixed_bias=(0.3, 0.0, -0.3))], {"v": ["a", "b", "c"]})
    cfg = small(
        temperature=1.7,
        tanh_constant=2.0,
        op_tanh_reduce=2.5,
        op_bias_init=[1.0, 0.0, -1.0],
        tie_op_embedding=tie,
        entropy_mode="full",
    )
    ctl = Controller(space, cfg)
    cell = ctl.cells[0]
    x, h0 = ctl.g_emb, torch.zeros(1, 16)
    gates = x @ cell.weight_ih.T + h0 @ cell.weight_hh.T
    i, f, g, o = gates.chunk(4, 1)  # PyTorch's gate order
    c1 = torch.sigmoid(i) * torch.tanh(g)
    h1 = torch.sigmoid(o) * torch.tanh(c1)
    w = ctl.embedding["v"] if tie else ctl.softmax["v"]
    logits = (h1 @ w.T).view(-1) + torch.tensor([1.0, 0.0, -1.0])
    logits = (2.0 / 2.5) * torch.tanh(logits / 1.7) + torch.tensor([0.3, 0.0, -0.3])
    logp = F.log_softmax(logits, 0)
    for a in range(3):
        lp, ent = ctl.log_prob([a])
        assert lp.item() == pytest.approx(logp[a].item(), abs=1e-6)
        assert ent.item() == pytest.approx((-(logp.exp() * logp).sum()).item(), abs=1e-6)
    assert ("softmax.v" in dict(ctl.named_parameters())) is not tie


def test_greedy_is_deterministic_argmax():
    space = macro_space(5)
    torch.manual_seed(2)
    ctl = Controller(space, small())
    torch.manual_seed(3)
    a = ctl.sample(greedy=True)
    torch.manual_seed(4)
    b = ctl.sample(greedy=True)
    assert a.actions == b.actions
    for d, act, logits in zip(choice_decisions(space), a.actions, a.logits):
        if d.kind == "skips":
            assert act == (logits[:, 1] > logits[:, 0]).long().tolist()
        else:
            assert act == int(logits.argmax())


def test_sampling_uses_global_rng():
    ctl = Controller(micro_space(), small())
    torch.manual_seed(5)
    a = ctl.sample().actions
    torch.manual_seed(5)
    assert ctl.sample().actions == a


def test_temperature_and_tanh_shape_logits():
    space = macro_space(5)
    torch.manual_seed(6)
    raw = Controller(space, small(tanh_constant=None))
    s = raw.sample()
    shaped = Controller(space, small(tanh_constant=0.5, op_tanh_reduce=2.0))
    shaped.load_state_dict(raw.state_dict())
    s2 = shaped.sample()
    for d, logits in zip(choice_decisions(space), s2.logits):
        bound = 0.25 if d.kind == "op" else 0.5  # ops use tanh_constant / op_tanh_reduce
        assert logits.numel() == 0 or logits.abs().max() <= bound + 1e-6
    halved = Controller(space, small(tanh_constant=None, temperature=2.0))
    halved.load_state_dict(raw.state_dict())
    torch.manual_seed(7)
    greedy_raw = raw.sample(greedy=True)
    greedy_half = halved.sample(greedy=True)
    for l1, l2 in zip(greedy_raw.logits, greedy_half.logits):  # greedy paths agree: temperature keeps the argmax
        torch.testing.assert_close(l2, l1 / 2.0)
    # c * tanh(x / c) -> x: a huge constant and temperature together leave the logits unchanged
    limit = Controller(space, small(tanh_constant=1e5, temperature=1e5))
    limit.load_state_dict(raw.state_dict())
    assert limit.log_prob(s.actions)[0].item() == pytest.approx(s.log_prob.item(), abs=1e-4)


def test_distance_prior_subtracts_squared_distance_and_favours_recent():
    torch.manual_seed(8)
    plain = Controller(rnn_space(6, prior=False), small())
    prior = Controller(rnn_space(6, prior=True), small())
    prior.load_state_dict(plain.state_dict())
    actions = plain.sample().actions
    a, b = plain.score(actions), prior.score(actions)  # same actions and weights: only the prior differs
    for d, la, lb in zip(choice_decisions(plain.space), a.logits, b.logits):
        if d.kind == "pointer":
            l = d.size
            expected = -((l - torch.arange(l, dtype=torch.float32)) ** 2) / 6  # -(l - j)^2 / 6
            torch.testing.assert_close(lb - la, expected)
        else:
            torch.testing.assert_close(lb, la)
    last = len(actions) - 2  # the last pointer chooses among 5 nodes
    mean_plain = sum(plain.sample().actions[last] for _ in range(200)) / 200
    mean_prior = sum(prior.sample().actions[last] for _ in range(200)) / 200
    assert mean_prior > mean_plain + 1.0 and mean_prior > 3.0


def test_distance_prior_switch_turns_the_spaces_prior_off():
    torch.manual_seed(8)
    space = rnn_space(6, prior=True)
    with_prior = Controller(space, small())
    without = Controller(space, small(distance_prior=False))
    without.load_state_dict(with_prior.state_dict())
    reference = Controller(rnn_space(6, prior=False), small())  # a space that never asks for the prior
    reference.load_state_dict(with_prior.state_dict())
    actions = with_prior.sample().actions
    for b, c in zip(without.score(actions).logits, reference.score(actions).logits):
        torch.testing.assert_close(b, c)
    assert any(not torch.allclose(a, b) for a, b in zip(with_prior.score(actions).logits,
                                                        without.score(actions).logits))
    with pytest.raises(ConfigError, match="distance_prior"):
        ControllerConfig(distance_prior="no").validate()


def test_feeds_anchors_groups_and_state():
    """Record every LSTM step's input and state, and check each against the rule of the previous decision."""
    d = [
        Decision("anchor", "in0", new_anchor=True, zero_anchor=True, feed="start"),  # 0: anchor 0 = zeros
        Decision("anchor", "in1", new_anchor=True, feed="start"),  # 1: anchor 1 = h1
        Decision("pointer", "p2", size=2, new_anchor=True, feed="anchor"),  # 2: anchor 2 = h2
        Decision("op", "o3", size=3, vocab="v"),  # 3
        Decision("pointer", "p4", size=3, feed="anchor_scaled", distance_prior=True),  # 4
        Decision("skips", "s5", size=3, new_anchor=True, feed="skip_mean"),  # 5: anchor 3 = h5
        Decision("op", "o6", size=3, vocab="v", feed="start"),  # 6
        Decision("anchor", "g1in", new_anchor=True, feed="start", group=1),  # 7: anchors reset
        Decision("skips", "g1s", size=1, feed="skip_mean", group=1),  # 8
        Decision("op", "g1o", size=3, vocab="v", group=1),  # 9
    ]
    ctl = Controller(FakeSpace(d, {"v": ["a", "b", "c"]}), small(tanh_constant=None))
    inputs, states, outputs = [], [], []

    def record(module, args, out):
        inputs.append(args[0])
        states.append(args[1])
        outputs.append(out)

    ctl.cells[0].register_forward_hook(record)
    for seed in range(6):
        torch.manual_seed(seed)
        inputs.clear(), states.clear(), outputs.clear()
        with torch.no_grad():
            s = ctl.sample()
        p2, o3, p4, s5, _o6, s8, _o9 = s.actions
        h = [o[0] for o in outputs]
        assert len(inputs) == len(d)
        torch.testing.assert_close(inputs[0], ctl.g_emb)
        assert states[0][0].abs().sum() == 0 and states[0][1].abs().sum() == 0
        for t in range(1, len(d)):  # the LSTM state always carries over, across groups too
            torch.testing.assert_close(states[t][0], outputs[t - 1][0])
            torch.testing.assert_close(states[t][1], outputs[t - 1][1])
        g0 = [torch.zeros(1, 16), h[1], h[2], h[5]]
        torch.testing.assert_close(inputs[1], ctl.g_emb)
        torch.testing.assert_close(inputs[2], ctl.g_emb)
        torch.testing.assert_close(inputs[3], g0[p2])  # zero when the zero anchor is chosen
        torch.testing.assert_close(inputs[4], ctl.embedding["v"][o3 : o3 + 1])
        torch.testing.assert_close(inputs[5], g0[p4] / (0.1 + (3 - p4)))
        mean = sum((b * g0[j] for j, b in enumerate(s5)), torch.zeros(1, 16)) / (1 + sum(s5))
        torch.testing.assert_close(inputs[6], mean)
        torch.testing.assert_close(inputs[7], ctl.g_emb)
        torch.testing.assert_close(inputs[8], ctl.g_emb)
        torch.testing.assert_close(inputs[9], s8[0] * h[7] / (1 + s8[0]))
        assert s.logits[5].shape == (1, 2)  # group 1's skips see only its own anchor


def test_empty_skips_feeds_start_vector():
    ctl = Controller(macro_space(2), small())
    inputs = []
    ctl.cells[0].register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    s = ctl.sample()
    assert s.actions[1] == []
    torch.testing.assert_close(inputs[2], ctl.g_emb)


def test_skip_penalty_and_rate():
    space = macro_space(4)
    torch.manual_seed(9)
    ctl = Controller(space, small(skip_target=0.4))
    s = ctl.sample()
    target = torch.tensor([0.6, 0.4])
    pens = []
    for d, logits in zip(choice_decisions(space), s.logits):
        if d.kind == "skips" and d.size:
            p = torch.sigmoid(logits)  # element-wise, both columns
            pens.append((p * (p / target).log()).sum().item())
    assert s.skip_penalty.item() == pytest.approx(sum(pens) / len(pens), abs=1e-6)
    bits = [b for a in s.actions if isinstance(a, list) for b in a]
    assert s.skip_rate == pytest.approx(sum(bits) / len(bits))
    assert s.skip_penalty.requires_grad
    # q = 0 everywhere: sigmoid probabilities (0.5, 0.5) equal a target of 0.5, so the penalty vanishes
    balanced = Controller(space, small(skip_target=0.5))
    with torch.no_grad():
        balanced.v_attn.weight.zero_()
    assert balanced.sample().skip_penalty.item() == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        ctl.v_attn.weight.zero_()
    per_anchor = 0.5 * math.log(0.5 / 0.6) + 0.5 * math.log(0.5 / 0.4)
    assert ctl.sample().skip_penalty.item() == pytest.approx(per_anchor * (1 + 2 + 3) / 3, abs=1e-6)


def test_no_skips_gives_zero_penalty_and_rate():
    s = Controller(rnn_space(), small()).sample()
    assert s.skip_penalty.item() == 0.0 and s.skip_rate == 0.0


def test_op_bias_initial_values_and_micro_shape():
    ctl = Controller(micro_space(), small(op_bias_init=[10, 10, 0, 0, 0], tanh_constant=1.1, op_tanh_reduce=2.5))
    torch.testing.assert_close(ctl.op_bias["ops"].detach(), torch.tensor([10.0, 10, 0, 0, 0]))
    s = ctl.sample()
    decisions = choice_decisions(micro_space())
    for d, logits in zip(decisions, s.logits):
        if d.kind == "op" and d.group == 0:  # tanh(10 + small) ~ 1, plus the fixed bias
            assert logits[0].item() == pytest.approx(0.44 + 0.25, abs=1e-3)
        if d.kind == "op" and d.group == 1:
            assert logits[0].item() == pytest.approx(0.44, abs=1e-3)
    assert all(p.abs().max() <= 0.1 for n, p in ctl.named_parameters() if not n.startswith("op_bias"))


def test_bad_config_and_actions_raise_clear_errors():
    with pytest.raises(ConfigError, match="entropy_mode"):
        Controller(macro_space(), small(entropy_mode="mean"))
    with pytest.raises(ConfigError, match="op_bias_init"):
        Controller(macro_space(), small(op_bias_init=[1.0, 2.0]))
    with pytest.raises(ConfigError, match="temperature"):
        Controller(macro_space(), small(temperature=0.0))
    ctl = Controller(macro_space(3), small())
    with pytest.raises(ArchError, match="expected 6 actions"):
        ctl.log_prob([0, []])
    with pytest.raises(ArchError, match="list of 2 bits"):
        ctl.log_prob([0, [], 1, [1], 2, [1]])
    with pytest.raises(ArchError, match=r"integer in \[0, 6\)"):
        ctl.log_prob([6, [], 1, [1], 2, [1, 0]])
    bad = FakeSpace([Decision("pointer", "p", size=1, feed="anchor")], {})
    with pytest.raises(ValueError, match="0 anchors precede"):
        Controller(bad, small())
    with pytest.raises(ValueError, match="does not fit"):
        o = Decision("op", "o", size=2, vocab="v", feed="anchor")
        Controller(FakeSpace([o, o], {"v": ["a", "b"]}), small())


def test_uniform_sampler_covers_all_choices():
    space = macro_space(3)
    sampler = UniformSampler(space)
    assert list(sampler.parameters()) == []
    torch.manual_seed(10)
    seen_ops, bit_counts, n = set(), [0, 0], 600
    for _ in range(n):
        s = sampler.sample()
        seen_ops.add(s.actions[0])
        for j, b in enumerate(s.actions[5]):
            bit_counts[j] += b
        assert s.log_prob.item() == s.entropy.item() == s.skip_penalty.item() == 0.0
    assert seen_ops == set(range(6))
    assert all(abs(c / n - 0.5) < 0.1 for c in bit_counts)
    pointer = UniformSampler(rnn_space(4))
    assert {pointer.sample().actions[5] for _ in range(200)} == {0, 1, 2}
    lp, ent = sampler.log_prob(s.actions)
    assert lp.item() == 0.0 and ent.item() == 0.0
    with pytest.raises(ValueError, match="greedy"):
        sampler.sample(greedy=True)


def test_stacked_lstm_layers():
    torch.manual_seed(11)
    ctl = Controller(micro_space(2), small(lstm_layers=2))
    assert len(ctl.cells) == 2
    s = ctl.sample()
    lp, ent = recompute(s, choice_decisions(micro_space(2)), "sampled")
    assert s.log_prob.item() == pytest.approx(lp, abs=1e-5)
    assert ctl.log_prob(s.actions)[0].item() == pytest.approx(lp, abs=1e-5)
    s.log_prob.backward()
    assert all(p.grad is not None for p in ctl.cells[0].parameters())
