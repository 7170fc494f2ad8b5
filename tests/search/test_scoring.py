"""Search options for ranking (enas.search.scoring, search.warmup_epochs, search.dedup): loss-based rewards equal a
direct computation of the mean cross-entropy, derive ranks by loss, the warm-up leaves the controller alone and
resumes exactly, and equivalent candidates are scored once."""

import copy
import csv
import math

import pytest
import torch
import torch.nn.functional as F

from enas.config import parse_set, set_key
from enas.errors import ConfigError
from enas.presets import make_config
from enas.runs.rundir import RunDir
from enas.search import scoring
from enas.search.loop import Search
from enas.spaces.micro.arch import MicroArch
from enas.validate import validate_config
from tests.conftest import tiny_image_config, tiny_rnn_config


def _image_search(space, npz_path, tmp_path, **search):
    cfg = tiny_image_config(space, npz_path)
    cfg.search.reward_mode = "eval"  # no batch statistics or dropout: the same figure on every call
    for key, value in search.items():
        setattr(cfg.search, key, value)
    return Search(cfg, tmp_path / "run", progress=False)


@pytest.mark.parametrize("space", ["macro", "micro"])
def test_loss_reward_is_minus_the_mean_cross_entropy_of_the_same_batches(space, npz_path, tmp_path):
    s = _image_search(space, npz_path, tmp_path, score="loss", score_batches=3)
    s._reward_mode()
    arch = s.uniform.sample().arch
    state = copy.deepcopy(s.task.state_dict())
    got = s.reward(arch)
    after = s.task.state_dict()["valid_pos"]
    s.task.load_state_dict(state)  # the same three reward batches again
    with torch.no_grad():
        batches = [s.task.reward_batch() for _ in range(3)]
        logits = torch.cat([s.supernet(x, arch=arch)[0] for x, _ in batches])
        direct = F.cross_entropy(logits, torch.cat([y for _, y in batches])).item()
    assert got == pytest.approx(-direct, rel=1e-5)
    assert s.task.state_dict()["valid_pos"] == after  # the reward drew exactly those three batches


def test_metric_reward_averages_the_accuracy_of_several_batches(npz_path, tmp_path):
    s = _image_search("macro", npz_path, tmp_path, score_batches=2)
    s._reward_mode()
    arch = s.uniform.sample().arch
    state = copy.deepcopy(s.task.state_dict())
    got = s.reward(arch)
    s.task.load_state_dict(state)
    accs = [s.task.reward(s.supernet, s.task.reward_batch(), arch) for _ in range(2)]
    assert got == pytest.approx(sum(accs) / 2)


def test_text_loss_reward_is_reward_c_over_the_perplexity_of_all_windows(corpus_dir, tmp_path):
    cfg = tiny_rnn_config(corpus_dir)
    cfg.search.score, cfg.search.score_batches = "loss", 3
    s = Search(cfg, tmp_path / "run", progress=False)
    s._reward_mode()
    arch = s.uniform.sample().arch
    state = copy.deepcopy(s.task.state_dict())
    got = s.reward(arch)
    s.task.load_state_dict(state)
    with torch.no_grad():
        ces = []
        for _ in range(3):
            x, y = s.task.reward_batch()
            logits = s.supernet(x, s.supernet.init_hidden(x.size(1)), arch=arch)[0]
            ces.append(F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item())
    assert got == pytest.approx(cfg.task.reward_c / math.exp(sum(ces) / 3), rel=1e-5)
    # whole split: the loss-based score is the metric itself (reward_c / ppl)
    metrics = s.task.evaluate(s.supernet, "valid", arch_fn=lambda: arch)
    assert scoring.candidate_score(s.task, metrics, "loss") == pytest.approx(metrics["score"])


@pytest.mark.slow
def test_derive_ranks_candidates_by_validation_loss(npz_path, tmp_path):
    s = _image_search("micro", npz_path, tmp_path, score="loss", epochs=1, derive_samples=5)
    summary = s.run()
    rows = list(csv.DictReader(open(tmp_path / "run" / "candidates.csv")))
    losses = [float(r["valid_loss"]) for r in rows]
    assert losses == sorted(losses) and len(rows) == summary["candidates"] > 1
    assert [float(r["score"]) for r in rows] == pytest.approx([-v for v in losses], rel=1e-4)
    assert summary["best"]["score"] == pytest.approx(-summary["best"]["valid_loss"])


def test_metric_and_loss_scores_of_one_candidate(npz_path, tmp_path):
    task = _image_search("macro", npz_path, tmp_path).task
    metrics = {"loss": 0.7, "acc": 0.8, "score": 0.8}
    assert scoring.candidate_score(task, metrics, "metric") == 0.8
    assert scoring.candidate_score(task, metrics, "loss") == -0.7
    with pytest.raises(ValueError, match="unknown score"):
        scoring.candidate_score(task, metrics, "acc")


@pytest.mark.parametrize("key, value", [("score", "accuracy"), ("score_batches", 0), ("warmup_epochs", -1),
                                        ("dedup", "yes")])
def test_bad_values_of_the_new_keys_are_config_errors(key, value, npz_path):
    cfg = tiny_image_config("macro", npz_path)
    setattr(cfg.search, key, value)
    with pytest.raises(ConfigError, match=f"search.{key}"):
        validate_config(cfg)


@pytest.mark.parametrize("space, data", [("rnn", "ptb"), ("macro", "cifar10"), ("micro", "cifar10")])
@pytest.mark.parametrize("preset", ["paper", "quick", "demo"])
def test_presets_set_the_options_where_measured_and_set_turns_them_on(space, data, preset):
    cfg = make_config(space, preset, "search", data)
    s = cfg.search
    # the macro demo warms up for a quarter of its epochs (Kendall tau 0.04 -> 0.27, docs/results.md)
    warmup = s.epochs // 4 if (space, preset) == ("macro", "demo") else 0
    assert (s.score, s.score_batches, s.warmup_epochs, s.dedup) == ("metric", 1, warmup, False)
    for key, value in parse_set(["search.score=loss", "search.score_batches=4", "search.warmup_epochs=2",
                                 "search.dedup=true"]):
        set_key(cfg, key, value)
    assert (s.score, s.score_batches, s.warmup_epochs, s.dedup) == ("loss", 4, 2, True)
    validate_config(cfg)
    with pytest.raises(ConfigError, match="search.score"):
        set_key(cfg, "search.score", "accuracy")


# ---- warm-up ------------------------------------------------------------------------------------------------------
def test_warmup_trains_the_shared_weights_and_leaves_the_controller_alone(npz_path, tmp_path, monkeypatch):
    s = _image_search("macro", npz_path, tmp_path, epochs=2, warmup_epochs=1)
    controller = copy.deepcopy(s.controller.state_dict())
    supernet = copy.deepcopy(s.supernet.state_dict())
    s.cfg.search.epochs = 1  # stop after the warm-up epoch

    def no_controller(*args, **kwargs):
        raise AssertionError("the controller sampled during the warm-up")

    monkeypatch.setattr(s.controller, "sample", no_controller)
    monkeypatch.setattr(s.controller, "forward", no_controller)
    monkeypatch.setattr(s, "derive", lambda: None)
    s.run()
    assert all(torch.equal(v, s.controller.state_dict()[k]) for k, v in controller.items())
    assert any(not torch.equal(v, s.supernet.state_dict()[k]) for k, v in supernet.items() if v.is_floating_point())
    epoch = RunDir(tmp_path / "run", resume=True).read_metrics("epoch")[0]
    assert epoch["warmup"] is True and "controller_reward" not in epoch and epoch["steps"] > 0


def test_after_the_warmup_the_controller_trains(npz_path, tmp_path):
    _image_search("macro", npz_path, tmp_path, epochs=2, warmup_epochs=1).run()
    epochs = RunDir(tmp_path / "run", resume=True).read_metrics("epoch")
    assert [e.get("warmup", False) for e in epochs] == [True, False]
    assert "controller_reward" in epochs[1]


@pytest.mark.slow
def test_resume_in_the_middle_of_the_warmup_gives_the_same_run(npz_path, tmp_path, interrupted_after_checkpoint):
    def make(out):
        cfg = tiny_image_config("macro", npz_path)
        cfg.search.epochs, cfg.search.warmup_epochs = 3, 2
        return Search(cfg, tmp_path / out, progress=False)

    make("full").run()
    with interrupted_after_checkpoint():
        make("stopped").run()
    Search.resume(tmp_path / "stopped", progress=False).run()

    def lines(out):
        keep = RunDir(tmp_path / out, resume=True).read_metrics()
        return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in keep
                if r["kind"] in ("epoch", "arch")]

    assert lines("stopped") == lines("full")
    assert (tmp_path / "stopped" / "candidates.csv").read_text() == (tmp_path / "full" / "candidates.csv").read_text()


# ---- de-duplication -----------------------------------------------------------------------------------------------
A = "0 0 1 1 1 2 0 4 0 0 1 1 1 2 0 4"  # normal cell: n2 = sep3(0) + sep5(1), n3 = avg(1) + id(0); same reduce
A_SWAPPED = "1 1 0 0 0 4 1 2 1 1 0 0 0 4 1 2"  # the same adds with their operands in the other order
B = "0 0 1 1 1 3 0 4 0 0 1 1 1 3 0 4"  # max instead of avg: another network


def test_derive_scores_equivalent_archs_once_with_dedup(npz_path, tmp_path, monkeypatch):
    cfg = tiny_image_config("micro", npz_path)
    cfg.model.num_nodes = 2
    cfg.search.epochs, cfg.search.derive_samples = 1, 3
    draws = [MicroArch.from_fixed_arc(a) for a in (A, A_SWAPPED, B, A, B, A_SWAPPED)]
    for dedup, expected in ((False, 3), (True, 2)):
        cfg.search.dedup = dedup
        s = Search(copy.deepcopy(cfg), tmp_path / f"run-{dedup}", progress=False)
        sequence = iter(draws * 20)
        monkeypatch.setattr(s, "sample_arch", lambda seq=sequence: next(seq))
        assert s.derive()["candidates"] == expected
        fixed = [r["fixed_arc"] for r in csv.DictReader(open(tmp_path / f"run-{dedup}" / "candidates.csv"))]
        assert sorted(fixed) == sorted([A, A_SWAPPED, B] if not dedup else [A, B])
