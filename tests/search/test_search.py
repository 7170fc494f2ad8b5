"""End-to-end searches on tiny data: files written, exact resume, NaN handling, derive."""

import csv
import json

import pytest

from enas.arch import load_arch
from enas.errors import TrainingDiverged
from enas.runs.rundir import RunDir
from enas.search.loop import Search
from tests.conftest import tiny_image_config, tiny_rnn_config


def _epoch_lines(run_dir):
    lines = RunDir(run_dir, resume=True).read_metrics()
    keep = [r for r in lines if r["kind"] in ("epoch", "arch")]
    return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in keep]


@pytest.mark.slow
def test_rnn_search_writes_the_run_directory(corpus_dir, tmp_path):
    cfg = tiny_rnn_config(corpus_dir)
    summary = Search(cfg, tmp_path / "run", progress=False).run()
    run = tmp_path / "run"
    arch = load_arch(run / "arch.json")
    assert arch.space == "rnn" and arch.to_fixed_arc() == summary["best"]["fixed_arc"]
    assert summary["kernels"] == {"packed": True, "bn_products": True, "cell": "path"}
    rows = list(csv.DictReader(open(run / "candidates.csv")))
    assert 1 <= len(rows) <= 3 and rows[0]["fixed_arc"] == arch.to_fixed_arc()
    assert float(rows[0]["score"]) >= float(rows[-1]["score"])
    epochs = RunDir(run, resume=True).read_metrics("epoch")
    assert [e["epoch"] for e in epochs] == [1, 2]
    for key in ("train_loss", "valid_ppl", "controller_reward", "controller_entropy", "seconds_shared"):
        assert key in epochs[-1], key
    assert (run / "arch.png").stat().st_size > 1000
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.pt").is_file()
    summary_file = json.loads((run / "summary.json").read_text())
    assert set(summary_file["seconds"]) == {"shared", "controller", "eval"}


@pytest.mark.slow
@pytest.mark.parametrize("space", ["rnn", "micro"])
def test_resume_gives_the_same_run(space, corpus_dir, npz_path, tmp_path, interrupted_after_checkpoint):
    make = (lambda: tiny_rnn_config(corpus_dir)) if space == "rnn" else (lambda: tiny_image_config(space, npz_path))
    Search(make(), tmp_path / "full", progress=False).run()

    with interrupted_after_checkpoint():
        Search(make(), tmp_path / "stopped", progress=False).run()
    assert [e["epoch"] for e in RunDir(tmp_path / "stopped", resume=True).read_metrics("epoch")] == [1]
    Search.resume(tmp_path / "stopped", progress=False).run()

    assert _epoch_lines(tmp_path / "stopped") == _epoch_lines(tmp_path / "full")
    assert (tmp_path / "stopped" / "candidates.csv").read_text() == (tmp_path / "full" / "candidates.csv").read_text()
    assert load_arch(tmp_path / "stopped" / "arch.json") == load_arch(tmp_path / "full" / "arch.json")


@pytest.mark.slow
def test_nan_loss_stops_with_a_user_error_and_keeps_the_checkpoint(corpus_dir, tmp_path, monkeypatch):
    cfg = tiny_rnn_config(corpus_dir)
    search = Search(cfg, tmp_path / "run", progress=False)
    search.cfg.search.epochs = 1
    search.run()
    search.cfg.search.epochs = 2
    real = search.task.shared_loss

    def nan_loss(model, batch, arch=None):
        loss, stats = real(model, batch, arch)
        return loss * float("nan"), stats

    monkeypatch.setattr(search.task, "shared_loss", nan_loss)
    with pytest.raises(TrainingDiverged, match="intact: resume it with a lower learning rate: --resume --out"):
        search.run()
    assert RunDir(tmp_path / "run", resume=True).load_checkpoint()["epoch"] == 1


def test_nan_in_the_first_epoch_says_there_is_nothing_to_resume(corpus_dir, tmp_path, monkeypatch):
    search = Search(tiny_rnn_config(corpus_dir), tmp_path / "run", progress=False)
    real = search.task.shared_loss
    monkeypatch.setattr(search.task, "shared_loss", lambda m, b, a=None: (real(m, b, a)[0] * float("inf"), {}))
    with pytest.raises(TrainingDiverged, match="before the first checkpoint \\(nothing to resume\\): start again"):
        search.run()


@pytest.mark.slow
@pytest.mark.parametrize("space", ["macro", "micro"])
def test_image_search_end_to_end(space, npz_path, tmp_path):
    summary = Search(tiny_image_config(space, npz_path), tmp_path / "run", progress=False).run()
    arch = load_arch(tmp_path / "run" / "arch.json")
    assert arch.space == space
    assert 0.0 <= summary["best"]["score"] <= 1.0
    assert (tmp_path / "run" / "arch.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("space", ["macro", "micro"])
def test_image_search_with_the_arch_as_data(space, npz_path, tmp_path):
    """``model.cell=graph``: the same search loop over the arch-as-data supernet; its checkpoint is the ordinary
    one (the sampled-path supernet loads it)."""
    import torch

    from enas.build import build_space

    cfg = tiny_image_config(space, npz_path)
    cfg.model.cell = "graph"
    cfg.search.epochs = 1
    summary = Search(cfg, tmp_path / "run", progress=False).run()
    assert 0.0 <= summary["best"]["score"] <= 1.0
    assert load_arch(tmp_path / "run" / "arch.json").space == space
    state = RunDir(tmp_path / "run", resume=True).load_checkpoint()["supernet"]
    cfg.model.cell = "path"
    info = Search(cfg, tmp_path / "run2", progress=False).task.info
    build_space(cfg).build_supernet(info).load_state_dict(state)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.slow
def test_derive_again_from_a_run_directory(corpus_dir, tmp_path):
    Search(tiny_rnn_config(corpus_dir), tmp_path / "run", progress=False).run()
    summary = Search.resume(tmp_path / "run", progress=False).derive(samples=2)
    assert summary["candidates"] <= 2
    assert len(list(csv.DictReader(open(tmp_path / "run" / "candidates.csv")))) == summary["candidates"]


def test_a_nan_in_the_middle_of_an_epoch_is_reported_at_its_step(corpus_dir, tmp_path, monkeypatch):
    """Losses are checked a window at a time (no device read per step); the message still names the first bad
    step, and the run stops before the epoch's checkpoint."""
    search = Search(tiny_rnn_config(corpus_dir), tmp_path / "run", progress=False)
    real, calls = search.task.shared_loss, []

    def nan_at_3(model, batch, arch=None):
        loss, stats = real(model, batch, arch)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), stats

    monkeypatch.setattr(search.task, "shared_loss", nan_at_3)
    with pytest.raises(TrainingDiverged, match=r"in shared training \(epoch 1, step 3\)"):
        search.run()
    assert len(calls) > 3  # the steps after it in the window ran, and were thrown away
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
