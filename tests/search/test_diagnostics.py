"""Controller diagnostics: op histogram, distinct share, entropy per decision type, collapse warnings, and what a
tiny search writes (metrics fields, TensorBoard scalars, ops.png, the epoch line)."""

from __future__ import annotations

import math

import pytest
import torch

import enas.search.diagnostics as diagnostics
from enas.runs.rundir import RunDir
from enas.search.controller import Controller, ControllerConfig, UniformSampler
from enas.search.diagnostics import ArchCounter, CollapseMonitor, EntropyMeter, op_shares_of, reward_trend
from enas.search.diagnostics import epoch_line as _epoch_line
from enas.search.loop import Search
from enas.search.reinforce import ReinforceTrainer
from enas.spaces.base import Decision
from tests.conftest import tiny_rnn_config
from tests.fakes import FakeSpace


def two_vocab_space() -> FakeSpace:
    """Ops of two vocabularies, pointers (sizes 1 and 3) and skips (sizes 0 and 3)."""
    d = [
        Decision("op", "a0", size=3, vocab="act"),
        Decision("skips", "s0", size=0, new_anchor=True, feed="skip_mean"),
        Decision("op", "c1", size=4, vocab="conv"),
        Decision("pointer", "p1", size=1, new_anchor=True, feed="anchor"),
        Decision("anchor", "n2", new_anchor=True, feed="start"),
        Decision("pointer", "p3", size=3, feed="anchor"),
        Decision("op", "a3", size=3, vocab="act"),
        Decision("skips", "s3", size=3, feed="skip_mean"),
    ]
    return FakeSpace(d, {"act": ["tanh", "relu", "id"], "conv": ["c3", "c5", "s3", "s5"]})


def ops_space(n: int = 6, size: int = 4) -> FakeSpace:
    return FakeSpace([Decision("op", f"op{i}", size=size, vocab="v") for i in range(n)],
                     {"v": [f"o{j}" for j in range(size)]})


def test_op_shares_sum_to_one_per_vocabulary():
    space = two_vocab_space()
    counter = ArchCounter(space.decisions(), space.vocabularies())
    # actions: a0, s0, c1, p1, p3, a3, s3 (the anchor takes none)
    counter.add([0, [], 2, 0, 1, 0, [1, 0, 0]])
    counter.add([1, [], 2, 0, 2, 0, [1, 1, 1]], skip_rate=1.0)
    shares = counter.op_shares()
    assert shares == {"act": {"tanh": 0.75, "relu": 0.25, "id": 0.0}, "conv": {"c3": 0, "c5": 0, "s3": 1.0, "s5": 0}}
    fields = counter.fields()
    assert op_shares_of(fields) == shares
    assert fields["op_share/act/tanh"] == 0.75 and fields["skip_density"] == pytest.approx(2 / 3)
    torch.manual_seed(0)
    sampler = UniformSampler(space)
    counter = ArchCounter(space.decisions(), space.vocabularies())
    for _ in range(37):
        s = sampler.sample()
        counter.add(s.actions, s.skip_rate)
    for vocab, ops in counter.op_shares().items():
        assert sum(ops.values()) == pytest.approx(1.0), vocab
    assert counter.samples == 37


def test_distinct_share_counts_the_last_window_of_archs():
    space = ops_space(n=2, size=3)
    counter = ArchCounter(space.decisions(), space.vocabularies(), window=4)
    assert counter.distinct_share() is None and "distinct_share" not in counter.fields()
    for actions in ([0, 0], [0, 1], [0, 0], [2, 2]):
        counter.add(actions)
    assert counter.distinct_share() == 0.75  # 3 distinct of 4
    for actions in ([1, 1], [1, 1], [1, 1]):  # the window keeps [2, 2], [1, 1] x 3
        counter.add(actions)
    assert counter.distinct_share() == 0.5
    assert "skip_density" not in counter.fields()  # no skip decisions


def test_entropy_meter_per_decision_type():
    space = two_vocab_space()
    meter = EntropyMeter(space.decisions())
    uniform = [torch.zeros(3), torch.zeros(0, 2), torch.zeros(4), torch.zeros(1), torch.zeros(3), torch.zeros(3),
               torch.zeros(3, 2)]
    meter.add(uniform)
    meter.add([])  # a sampler without logits adds nothing
    got = meter.means()
    assert got["entropy_op"] == pytest.approx((2 * math.log(3) + math.log(4)) / 3)
    assert got["entropy_op_act"] == pytest.approx(math.log(3)) and got["entropy_op_conv"] == pytest.approx(math.log(4))
    assert got["entropy_pointer"] == pytest.approx(math.log(3))  # the size-1 pointer has no choice: not counted
    assert got["entropy_skips"] == pytest.approx(math.log(2))  # per skip bit
    assert got["entropy_frac"] == pytest.approx(1.0)
    meter.reset()
    assert meter.means() == {}

    # the per-type sums add up to the controller's own full entropy of the sample
    torch.manual_seed(0)
    ctl = Controller(space, ControllerConfig(lstm_size=8, entropy_mode="full", init_range=1.0))
    s = ctl.sample()
    meter.add(s.logits)
    got = meter.means()
    total = got["entropy_op"] * 3 + got["entropy_pointer"] * 1 + got["entropy_skips"] * 3
    assert total == pytest.approx(float(s.entropy.detach()), rel=1e-5)
    assert 0.0 < got["entropy_frac"] < 1.0


def test_train_epoch_reports_advantage_baseline_and_entropy_per_type():
    torch.manual_seed(0)
    ctl = Controller(two_vocab_space(), ControllerConfig(lstm_size=8, num_aggregate=3, train_steps=2))
    stats = ReinforceTrainer(ctl).train_epoch(lambda arch: 0.5)
    for key in ("advantage", "baseline_mean", "entropy_op", "entropy_op_act", "entropy_pointer", "entropy_skips",
                "entropy_frac"):
        assert math.isfinite(stats[key]), key
    assert stats["reward"] == pytest.approx(0.5) and 0.0 < stats["baseline_mean"] < stats["baseline"] < 0.5
    assert stats["advantage"] > 0  # the baseline starts at 0 and trails a constant reward


def epoch_record(policy, space: FakeSpace, samples: int = 100) -> dict:
    """The diagnostics fields of one epoch in which ``policy`` sampled ``samples`` archs."""
    counter = ArchCounter(space.decisions(), space.vocabularies())
    meter = EntropyMeter(space.decisions())
    with torch.no_grad():
        for _ in range(samples):
            s = policy.sample()
            counter.add(s.actions, s.skip_rate)
            meter.add(s.logits)
    return {"steps": samples, **counter.fields(), **{f"controller_{k}": v for k, v in meter.means().items()}}


def test_collapse_warning_fires_on_a_collapsed_policy_and_not_on_a_uniform_one():
    torch.manual_seed(0)
    space = ops_space()
    collapsed = Controller(space, ControllerConfig(lstm_size=8, tanh_constant=None, op_bias_init=[40.0, 0, 0, 0]))
    record = epoch_record(collapsed, space)
    monitor = CollapseMonitor(total_epochs=30)
    warnings = dict(monitor.check(1, record))
    assert set(warnings) == {"entropy", "op_share", "distinct"}
    assert "'o0' takes 100% of the v samples" in warnings["op_share"]
    assert all("\n" not in m and "epoch 1/30" in m for m in warnings.values())
    assert monitor.check(2, record) == []  # once per kind

    for policy in (UniformSampler(space), Controller(space, ControllerConfig(lstm_size=8))):
        record = epoch_record(policy, space)
        assert max(op_shares_of(record)["v"].values()) < 0.5 and record["distinct_share"] > 0.9
        assert CollapseMonitor(total_epochs=30).check(1, record) == []
    assert "controller_entropy_frac" not in epoch_record(UniformSampler(space), space)


def test_collapse_warnings_only_before_the_last_third_and_restored_on_resume():
    record = {"steps": 100, "controller_entropy_frac": 0.01, "distinct_share": 0.5, "op_share/v/a": 0.5,
              "op_share/v/b": 0.5}
    assert CollapseMonitor(total_epochs=3).check(3, record) == []  # the last third: a converged policy is fine
    assert [k for k, _ in CollapseMonitor(total_epochs=3).check(2, record)] == ["entropy"]
    few = {"steps": 5, "distinct_share": 0.01, "op_share/v/a": 1.0, "op_share/v/b": 0.0}
    assert CollapseMonitor(total_epochs=30).check(1, few) == []  # too few samples to tell
    records = [{"kind": "epoch", "epoch": 1, "controller_entropy_frac": 0.9, "controller_reward": 0.25},
               {"kind": "warning", "epoch": 1, "warning": "entropy", "message": "..."}]
    monitor = CollapseMonitor.from_records(records, total_epochs=30)
    assert monitor.first_entropy == 0.9 and monitor.warned == {"entropy"} and monitor.last is records[0]
    assert monitor.check(2, record) == []


def test_epoch_line_shows_entropy_and_reward_trend():
    r = {"train_loss": 1.5, "controller_reward": 0.5, "controller_entropy": 3.0, "controller_entropy_frac": 0.42}
    line = _epoch_line(2, 10, r, {"controller_reward": 0.25})
    assert "reward 0.5 (+0.25)" in line and "entropy 42% of uniform" in line
    assert "reward 0.5 |" in _epoch_line(1, 10, r)
    assert reward_trend({"train_loss": 1.0}, None) is None
    assert "reward" not in _epoch_line(1, 10, {"train_loss": 1.0}) and "entropy" not in _epoch_line(1, 10, {})


class FakeWriter:
    """Stands in for TensorBoard's SummaryWriter (the tensorboard package is optional)."""

    def __init__(self):
        self.tags: dict[str, list[float]] = {}

    def add_scalar(self, tag, value, step):
        self.tags.setdefault(tag, []).append(value)

    def flush(self):
        pass


@pytest.mark.slow
def test_tiny_search_writes_the_diagnostics(corpus_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(diagnostics, "DISTINCT_FLOOR", 1.01)  # every run "collapses": the warning path runs
    monkeypatch.setattr(diagnostics, "MIN_SAMPLES", 1)
    search = Search(tiny_rnn_config(corpus_dir), tmp_path / "run", progress=False)
    writer = search.run_dir._tb = FakeWriter()
    search.run()
    run = RunDir(tmp_path / "run", resume=True)
    epochs = run.read_metrics("epoch")
    for rec in epochs:
        for key in ("distinct_share", "controller_entropy_op", "controller_entropy_pointer", "controller_entropy_frac",
                    "controller_advantage", "controller_baseline_mean", "controller_reward"):
            assert isinstance(rec[key], float), key
        assert sum(v for v in op_shares_of(rec)["rnn_act"].values()) == pytest.approx(1.0)
        assert "skip_density" not in rec  # the rnn space has no skips
    assert len(writer.tags["op_share/rnn_act/tanh"]) == 2 and len(writer.tags["controller_entropy_frac"]) == 2
    warnings = run.read_metrics("warning")
    assert [(w["epoch"], w["warning"]) for w in warnings] == [(1, "distinct")]  # once, and only early
    err = capsys.readouterr().err
    assert err.count("warning: policy collapse") == 1 and "entropy " in err and "% of uniform" in err
    assert (tmp_path / "run" / "ops.png").stat().st_size > 5000
    assert (tmp_path / "run" / "curves.png").is_file()


def test_random_policy_search_has_the_sampling_diagnostics(corpus_dir, tmp_path):
    cfg = tiny_rnn_config(corpus_dir)
    cfg.search.policy = "random"
    cfg.search.epochs = 1
    Search(cfg, tmp_path / "run", progress=False).run()
    (rec,) = RunDir(tmp_path / "run", resume=True).read_metrics("epoch")
    assert sum(op_shares_of(rec)["rnn_act"].values()) == pytest.approx(1.0) and rec["distinct_share"] > 0.5
    assert not any(k.startswith("controller_") for k in rec)
    assert (tmp_path / "run" / "ops.png").is_file()
