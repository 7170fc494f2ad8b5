"""Final training on tiny data: model file, summary, evaluation from the saved model, resume."""

import json

import pytest

from enas.arch import parse_fixed_arc
from enas.errors import UserError
from enas.runs import RunDir
from enas.train import FinalTraining, evaluate_model
from tests.conftest import tiny_image_config, tiny_rnn_config

RNN_ARC = "0 0 1 1 2 1 1"  # 4 nodes: tanh, relu(n0), relu(n1), relu(n1)


def test_rnn_final_training_and_eval(corpus_dir, tmp_path):
    cfg = tiny_rnn_config(corpus_dir, "train")
    cfg.train.averaging_patience = 1
    arch = parse_fixed_arc(RNN_ARC, "rnn")
    summary = FinalTraining(cfg, arch, tmp_path / "run", progress=False).run()
    assert summary["test_ppl"] > 1.0 and summary["params"] > 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["test_ppl"] == pytest.approx(summary["test_ppl"])
    again = evaluate_model(tmp_path / "run", device="cpu")
    assert again["ppl"] == pytest.approx(summary["test_ppl"], rel=1e-5)
    epochs = RunDir(tmp_path / "run", resume=True).read_metrics("epoch")
    assert [e["epoch"] for e in epochs] == [1, 2] and "valid_ppl" in epochs[0]


def test_train_resume_matches_uninterrupted(corpus_dir, tmp_path, interrupted_after_checkpoint):
    arch = parse_fixed_arc(RNN_ARC, "rnn")
    full = FinalTraining(tiny_rnn_config(corpus_dir, "train"), arch, tmp_path / "full", progress=False).run()
    with interrupted_after_checkpoint():
        FinalTraining(tiny_rnn_config(corpus_dir, "train"), arch, tmp_path / "part", progress=False).run()
    resumed = FinalTraining(None, None, tmp_path / "part", resume=True, progress=False).run()
    assert resumed["test_ppl"] == pytest.approx(full["test_ppl"], rel=1e-6)


@pytest.mark.parametrize("space,arc", [
    ("micro", "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1"),
    ("macro", "0 3 0 0 1 0"),
])
def test_image_final_training(space, arc, npz_path, tmp_path):
    cfg = tiny_image_config(space, npz_path, "train")
    cfg.task.cutout = 4
    arch = parse_fixed_arc(arc, space)
    summary = FinalTraining(cfg, arch, tmp_path / "run", progress=False).run()
    assert 0.0 <= summary["test_acc"] <= 1.0
    again = evaluate_model(tmp_path / "run" / "model.pt", device="cpu")
    assert again["acc"] == pytest.approx(summary["test_acc"])


def test_arch_of_the_wrong_space_is_refused(npz_path, tmp_path):
    cfg = tiny_image_config("micro", npz_path, "train")
    with pytest.raises(UserError, match="macro arch"):
        FinalTraining(cfg, parse_fixed_arc("0 3 0 0 1 0", "macro"), tmp_path / "run", progress=False)
