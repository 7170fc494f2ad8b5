"""`enas rank` end to end on tiny search runs: files and columns, resume, reuse, degenerate samples, user errors."""

import csv
import json
import math
import shutil

import pytest
import torch

from enas.arch import parse_fixed_arc
from enas.cli.main import main
from enas.search.controller import UniformSampler
from enas.search.loop import Search
from enas.search.rank import rank_run
from enas.train.final import FinalTraining
from tests.conftest import tiny_image_config, tiny_rnn_config, write_npz


@pytest.fixture(scope="module")
def macro_search(tmp_path_factory):
    """A one-epoch tiny macro search run (copied by each test that changes it)."""
    root = tmp_path_factory.mktemp("macro")
    cfg = tiny_image_config("macro", write_npz(root / "tiny.npz"))
    cfg.search.epochs, cfg.search.derive_samples = 1, 1
    Search(cfg, root / "run", progress=False).run()
    return root


@pytest.fixture
def macro_run(macro_search, tmp_path):
    return shutil.copytree(macro_search / "run", tmp_path / "run")


def _rows(run):
    return list(csv.DictReader(open(run / "rank.csv")))


@pytest.mark.slow
def test_macro_rank_files_resume_and_reuse(macro_run, capsys, interrupted_after_checkpoint):
    with interrupted_after_checkpoint():  # stopped after the first epoch of the first arch
        rank_run(macro_run, 3, 2, progress=False)
    assert (macro_run / "rank" / "archs.json").is_file() and not (macro_run / "rank.json").exists()

    assert main(["rank", str(macro_run), "--archs", "3", "--train-epochs", "2", "--no-progress"]) == 0
    summary_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary_line.startswith("Kendall tau ") and "Spearman rho" in summary_line and "rank.png" in summary_line

    info = json.loads((macro_run / "rank.json").read_text())
    assert info["archs"] == 3 and info["train_epochs"] == 2 and info["policy"] == "controller"
    assert "accuracy" in info["score"]
    for key in ("kendall_tau", "spearman_rho"):
        assert info[key] is None or -1.0 <= info[key] <= 1.0
    rows = _rows(macro_run)
    assert [r["index"] for r in rows] == ["0", "1", "2"]
    for col in ("fixed_arc", "supernet_score", "standalone_score", "supernet_rank", "standalone_rank",
                "standalone_valid_acc", "standalone_test_acc", "params", "status", "run_dir"):
        assert col in rows[0], col
    assert [r["status"] for r in rows] == ["resumed", "trained", "trained"]
    for r in rows:
        assert 0.0 <= float(r["supernet_score"]) <= 1.0 and 0.0 <= float(r["standalone_score"]) <= 1.0
        assert float(r["standalone_score"]) == float(r["standalone_valid_acc"])
        child = macro_run / r["run_dir"]
        assert (child / "model.pt").is_file() and (child / "config.yaml").is_file()
        assert json.loads((child / "summary.json").read_text())["epochs"] == 2
        assert parse_fixed_arc(r["fixed_arc"], "macro")
    sampled = json.loads((macro_run / "rank" / "archs.json").read_text())
    assert sampled["fixed_arcs"] == [r["fixed_arc"] for r in rows] and len(set(sampled["fixed_arcs"])) == 3
    assert (macro_run / "rank.png").stat().st_size > 1000

    # a smaller sample with the same seed is a prefix of the first one: every standalone run is reused
    assert main(["rank", str(macro_run), "--archs", "2", "--train-epochs", "2", "--no-progress"]) == 0
    rows2 = _rows(macro_run)
    assert [r["status"] for r in rows2] == ["reused", "reused"]
    assert [r["fixed_arc"] for r in rows2] == [r["fixed_arc"] for r in rows[:2]]

    # other epochs than the finished runs: a one-line user error before any work
    capsys.readouterr()
    assert main(["rank", str(macro_run), "--archs", "2", "--train-epochs", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--train-epochs 2" in err[0]


@pytest.mark.slow
def test_rnn_run_of_the_random_policy_samples_uniformly(corpus_dir, tmp_path):
    cfg = tiny_rnn_config(corpus_dir)
    cfg.search.epochs, cfg.search.derive_samples = 1, 1
    cfg.search.policy = "random"
    Search(cfg, tmp_path / "run", progress=False).run()
    info = rank_run(tmp_path / "run", 2, 1, uniform=False, progress=False)
    assert info["policy"] == "uniform" and info["archs"] == 2 and "ppl" in info["score"]
    rows = _rows(tmp_path / "run")
    assert len(rows) == 2 and "standalone_valid_ppl" in rows[0]
    c = cfg.task.reward_c
    for r in rows:  # the score is reward_c / ppl for both
        assert float(r["standalone_score"]) == pytest.approx(c / float(r["standalone_valid_ppl"]), rel=1e-4)
        assert float(r["supernet_score"]) == pytest.approx(c / float(r["supernet_valid_ppl"]), rel=1e-4)


@pytest.mark.slow
def test_one_distinct_arch_gives_undefined_correlations(macro_run, monkeypatch, capsys):
    original = UniformSampler.sample

    def always_the_same(self, greedy=False):
        torch.manual_seed(0)
        return original(self, greedy)

    monkeypatch.setattr(UniformSampler, "sample", always_the_same)
    assert main(["rank", str(macro_run), "--archs", "3", "--train-epochs", "1", "--uniform", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "only 1 distinct arch" in out.out and "undefined" in out.out.strip().splitlines()[-1]
    assert "warning" in out.err
    info = json.loads((macro_run / "rank.json").read_text())
    assert info["kendall_tau"] is None and info["spearman_rho"] is None
    assert info["archs"] == 1 and info["archs_requested"] == 3 and info["policy"] == "uniform"
    assert any("only 1 distinct" in n for n in info["notes"])
    assert len(_rows(macro_run)) == 1 and (macro_run / "rank.png").is_file()
    result = rank_run(macro_run, 3, 1, uniform=True, progress=False)  # reused, still NaN rather than a crash
    assert math.isnan(result["kendall_tau"])


def test_user_errors(macro_search, tmp_path, capsys):
    cfg = tiny_image_config("macro", macro_search / "tiny.npz", "train")
    cfg.train.epochs = 1
    FinalTraining(cfg, parse_fixed_arc("0 3 0 0 1 0", "macro"), tmp_path / "train", progress=False).run()
    (tmp_path / "empty").mkdir()
    for args, needle in (
        ([str(macro_search / "run"), "--archs", "1"], "--archs must be at least 2"),
        ([str(tmp_path / "empty"), "--archs", "2"], "no checkpoint"),
        ([str(tmp_path / "nowhere"), "--archs", "2"], "not a directory"),
        ([str(tmp_path / "train"), "--archs", "2"], "not a search run"),
    ):
        capsys.readouterr()
        assert main(["rank", *args, "--train-epochs", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("enas: error:") and needle in err[0], err
