"""Random search with weight sharing (search.policy = "random", `enas search --controller random`)."""

import json

import pytest
import torch
import yaml

from enas.arch import load_arch
from enas.cli.main import main
from enas.config import set_key
from enas.errors import ConfigError
from enas.presets import checkpoint_config
from enas.runs.rundir import RunDir
from enas.search.controller import UniformSampler
from enas.search.loop import Search
from tests.conftest import tiny_image_config, tiny_rnn_config


def _random(cfg):
    cfg.search.policy = "random"
    return cfg


def _epoch_lines(run_dir):
    lines = RunDir(run_dir, resume=True).read_metrics()
    keep = [r for r in lines if r["kind"] in ("epoch", "arch")]
    return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in keep]


def test_random_policy_never_uses_the_controller(corpus_dir, tmp_path, monkeypatch):
    cfg = _random(tiny_rnn_config(corpus_dir))
    cfg.search.derive_greedy = True  # no most likely arch under the uniform sampler: skipped without an error
    search = Search(cfg, tmp_path / "run", progress=False)
    assert isinstance(search.sampler, UniformSampler)
    before = {k: v.clone() for k, v in search.controller.state_dict().items()}

    def untouched(*args, **kwargs):
        raise AssertionError("the controller was used under the random policy")

    monkeypatch.setattr(search.controller, "sample", untouched)
    monkeypatch.setattr(search.trainer, "step", untouched)
    summary = search.run()

    after = search.controller.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert search.trainer.step_count == 0 and not search.trainer.optimizer.state
    assert summary["policy"] == "random" and summary["candidates"] == cfg.search.derive_samples
    epochs = RunDir(tmp_path / "run", resume=True).read_metrics("epoch")
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert not [k for e in epochs for k in e if k.startswith("controller_")]
    assert "valid_ppl" in epochs[-1] and "train_loss" in epochs[-1]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["policy"] == "random"
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["search"]["policy"] == "random"
    assert checkpoint_config(RunDir(tmp_path / "run", resume=True).load_checkpoint()).search.policy == "random"


def test_enas_policy_is_the_default_and_trains_the_controller(corpus_dir, tmp_path):
    cfg = tiny_rnn_config(corpus_dir)
    cfg.search.epochs = 1
    search = Search(cfg, tmp_path / "run", progress=False)
    assert search.sampler is search.controller
    summary = search.run()
    assert summary["policy"] == "enas" and search.trainer.step_count == cfg.controller.train_steps


@pytest.mark.slow
def test_random_policy_resumes_exactly(npz_path, tmp_path, interrupted_after_checkpoint):
    def make():
        return _random(tiny_image_config("macro", npz_path))

    full = Search(make(), tmp_path / "full", progress=False).run()
    with interrupted_after_checkpoint():
        Search(make(), tmp_path / "stopped", progress=False).run()
    assert [e["epoch"] for e in RunDir(tmp_path / "stopped", resume=True).read_metrics("epoch")] == [1]
    resumed = Search.resume(tmp_path / "stopped", progress=False)
    assert resumed.cfg.search.policy == "random" and isinstance(resumed.sampler, UniformSampler)
    again = resumed.run()

    assert again["policy"] == "random"
    assert again["best"]["fixed_arc"] == full["best"]["fixed_arc"] and again["best"]["score"] == full["best"]["score"]
    assert _epoch_lines(tmp_path / "stopped") == _epoch_lines(tmp_path / "full")
    assert (tmp_path / "stopped" / "candidates.csv").read_text() == (tmp_path / "full" / "candidates.csv").read_text()
    assert load_arch(tmp_path / "stopped" / "arch.json") == load_arch(tmp_path / "full" / "arch.json")


@pytest.mark.slow
def test_policy_is_validated_and_kept_on_resume(corpus_dir, tmp_path):
    cfg = tiny_rnn_config(corpus_dir)
    with pytest.raises(ConfigError, match="search.policy"):
        set_key(cfg, "search.policy", "evolution")
    cfg.search.policy = "greedy"
    with pytest.raises(ConfigError, match="search.policy"):
        Search(cfg, tmp_path / "bad", progress=False)

    cfg = _random(tiny_rnn_config(corpus_dir))
    cfg.search.epochs = 1
    Search(cfg, tmp_path / "run", progress=False).run()
    with pytest.raises(ConfigError, match="keeps it"):
        Search.resume(tmp_path / "run", progress=False, overrides=[("search.policy", "enas")])
    # derive again from the run directory: candidates from the uniform sampler
    summary = Search.resume(tmp_path / "run", progress=False).derive(samples=2)
    assert summary["policy"] == "random" and summary["candidates"] == 2


@pytest.mark.slow
def test_controller_flag(corpus_dir, tmp_path, capsys):
    common = ["--preset", "demo", "--device", "cpu", "--no-progress", "--set", f"task.root={corpus_dir}",
              "--set", "task.max_tokens=null", "--set", "model.hidden=16", "--set", "model.num_nodes=4",
              "--set", "task.batch_size=4", "--set", "task.bptt=8", "--set", "task.eval_batch_size=4",
              "--set", "task.reward_batch_size=4", "--set", "search.epochs=1", "--set", "search.derive_samples=2",
              "--set", "search.log_archs=1"]
    assert main(["search", "--space", "rnn", "--controller", "random", "--print-config", *common]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["search"]["policy"] == "random"
    assert main(["search", "--space", "rnn", "--print-config", *common]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["search"]["policy"] == "enas"

    out = tmp_path / "s"
    assert main(["search", "--space", "rnn", "--controller", "random", "--out", str(out), *common]) == 0
    assert "policy random" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["policy"] == "random"
    # a resumed run keeps its policy: asking for another one is a one-line user error
    assert main(["search", "--resume", "--out", str(out), "--controller", "enas"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("enas: error:") and "--controller" in err[0]
    assert main(["search", "--resume", "--out", str(out), "--controller", "random", "--no-progress"]) == 0
