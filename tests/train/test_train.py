"""Final training on tiny data: model file, summary, evaluation from the saved model, resume."""

import json
import math
import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from enas.arch import parse_fixed_arc
from enas.errors import UserError
from enas.runs.rundir import RunDir
from enas.train.final import FinalTraining, WeightAverage, evaluate_model
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


@pytest.mark.slow
def test_train_resume_matches_uninterrupted(corpus_dir, tmp_path, interrupted_after_checkpoint):
    arch = parse_fixed_arc(RNN_ARC, "rnn")
    full = FinalTraining(tiny_rnn_config(corpus_dir, "train"), arch, tmp_path / "full", progress=False).run()
    with interrupted_after_checkpoint():
        FinalTraining(tiny_rnn_config(corpus_dir, "train"), arch, tmp_path / "part", progress=False).run()
    resumed = FinalTraining.resume(tmp_path / "part", progress=False).run()
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


# ---------------------------------------------------------------------------------------------------------------------
# Weight averaging of the final recurrent training: the corrected code's start rule and mean (spec 6.1)
# ---------------------------------------------------------------------------------------------------------------------


def _corrected_code_start(ppls, threshold):
    """Index of the validation at which the corrected LM code (fixed.py) starts averaging, or None."""
    best_valid_ppl = []
    for i, valid_ppl in enumerate(ppls):
        if len(best_valid_ppl) > threshold and valid_ppl > min(best_valid_ppl[:-threshold]):
            return i
        best_valid_ppl.append(valid_ppl)
    return None


def _our_start(losses, patience):
    run = SimpleNamespace(cfg=SimpleNamespace(train=SimpleNamespace(averaging=True, averaging_patience=patience)),
                          average=None, valid_history=[], model=nn.Linear(2, 2))
    for i, loss in enumerate(losses):
        FinalTraining._maybe_start_averaging(run, {"loss": loss})
        if run.average is not None:
            return i
    return None


@pytest.mark.parametrize("losses,patience,start", [
    # the best (3.0) is 4 validations old at index 6, but only there does it fall out of the 3-validation window
    # ("no improvement for 3 validations" would start at index 5)
    ([5.0, 4.0, 3.0, 3.5, 3.4, 3.3, 3.2], 3, 6),
    # an improvement inside the window does not delay the start
    ([3.0, 2.0, 2.5, 1.9, 2.6], 2, 4),
    # a loss equal to the old best is not worse: no start
    ([2.0, 2.0, 2.0, 2.0, 2.0, 2.0], 1, None),
    # at least patience + 1 earlier validations are needed
    ([1.0, 2.0, 3.0], 2, None),
    ([1.0, 2.0, 3.0, 4.0], 2, 3),
])
def test_averaging_starts_by_the_corrected_code_rule(losses, patience, start):
    assert _corrected_code_start(losses, patience) == start
    assert _our_start(losses, patience) == start


def test_averaging_start_matches_the_corrected_code_on_random_curves():
    rng = random.Random(0)
    for _ in range(200):
        patience = rng.choice([1, 2, 3, 10])
        loss, curve = 6.0, []
        for _ in range(rng.randint(1, 40)):
            loss += rng.uniform(-0.3, 0.2)
            curve.append(loss)
        ppls = [math.exp(v) for v in curve]  # the corrected code compares perplexities, we compare losses
        assert _our_start(curve, patience) == _corrected_code_start(ppls, patience)


def test_weight_average_is_the_mean_of_the_weights_after_each_step():
    model = nn.Linear(3, 2, bias=False)
    start = model.weight.detach().clone()
    average = WeightAverage(model)
    average.swap()  # before any step the average holds the weights it started from
    assert torch.equal(model.weight, start)
    average.swap()
    steps = [torch.randn(2, 3) for _ in range(3)]
    for w in steps:
        with torch.no_grad():
            model.weight.copy_(w)
        average.update()
    average.swap()
    assert torch.allclose(model.weight, torch.stack(steps).mean(0), atol=1e-6)  # the starting weights are not in it
    average.swap()
    assert torch.equal(model.weight, steps[-1])


@pytest.mark.slow
def test_averaging_resume_matches_uninterrupted(corpus_dir, tmp_path, interrupted_after_checkpoint, monkeypatch):
    """Averaging starts at the 3rd validation of a scripted loss curve; a run stopped at its epoch-4 checkpoint
    (averaging under way) and resumed ends with the uninterrupted run's averaged weights."""
    scripted = [1.0, 2.0, 3.0, 3.0, 3.0]  # validation loss by 0-based epoch
    original = FinalTraining._evaluate

    def evaluate(self, split):
        if split == "valid":
            return {"loss": scripted[self.epoch], "ppl": math.exp(scripted[self.epoch])}
        return original(self, split)

    monkeypatch.setattr(FinalTraining, "_evaluate", evaluate)

    def config():
        cfg = tiny_rnn_config(corpus_dir, "train")
        cfg.train.epochs, cfg.train.averaging_patience, cfg.train.checkpoint_every = 5, 1, 4
        return cfg

    arch = parse_fixed_arc(RNN_ARC, "rnn")
    full = FinalTraining(config(), arch, tmp_path / "full", progress=False).run()
    epochs = RunDir(tmp_path / "full", resume=True).read_metrics("epoch")
    assert [e["averaging"] for e in epochs] == [False, False, True, True, True]
    with interrupted_after_checkpoint():
        FinalTraining(config(), arch, tmp_path / "part", progress=False).run()
    resumed = FinalTraining.resume(tmp_path / "part", progress=False).run()
    assert resumed["test_ppl"] == pytest.approx(full["test_ppl"], rel=1e-6)
    saved = [torch.load(tmp_path / run / "model.pt", weights_only=False)["state_dict"] for run in ("full", "part")]
    assert all(torch.allclose(saved[0][k], saved[1][k], atol=1e-6) for k in saved[0])


@pytest.mark.slow
@pytest.mark.parametrize("space", ["rnn", "macro"])
def test_compiled_final_training_equals_eager(space, corpus_dir, npz_path, tmp_path):
    """``train.compile``: the same losses and test figure as the eager run (macro: the whole child compiled; rnn:
    the arch-as-data cell's time step compiled), and the model file loads into an eager child."""
    if space == "rnn":
        arch, make = parse_fixed_arc(RNN_ARC, "rnn"), lambda: tiny_rnn_config(corpus_dir, "train")
    else:
        arch, make = parse_fixed_arc("0 3 0 0 1 0", "macro"), lambda: tiny_image_config("macro", npz_path, "train")
    runs = {}
    torch._dynamo.reset()
    try:
        for compiled in (False, True):
            cfg = make()
            cfg.train.compile = compiled
            if space == "macro":  # compiled dropout draws from another random stream: leave it out to compare
                cfg.model.keep_prob = 1.0
            runs[compiled] = FinalTraining(cfg, arch, tmp_path / str(compiled), progress=False).run()
    finally:
        torch._dynamo.reset()
    key = "test_ppl" if space == "rnn" else "test_acc"
    assert runs[True][key] == pytest.approx(runs[False][key], rel=1e-3, abs=1e-3)
    losses = [[e["train_loss"] for e in RunDir(tmp_path / str(c), resume=True).read_metrics("epoch")]
              for c in (False, True)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)
    again = evaluate_model(tmp_path / "True", device="cpu")
    assert again["ppl" if space == "rnn" else "acc"] == pytest.approx(runs[True][key], rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("bounded", [False, True])
def test_diverged_rnn_training_fails_in_one_line_naming_the_bound(bounded, corpus_dir, tmp_path, monkeypatch):
    """A non-finite training loss ends the run with `TrainingDiverged`, one line; without the recurrent bound the
    line names it (`model.final_batch_norm`, docs/results.md)."""
    from enas.errors import TrainingDiverged
    from enas.tasks.text import LanguageModelTask

    shared_loss = LanguageModelTask.shared_loss

    def broken(self, model, batch, arch=None):
        loss, stats = shared_loss(self, model, batch, arch)
        return loss * float("inf"), stats

    monkeypatch.setattr(LanguageModelTask, "shared_loss", broken)
    cfg = tiny_rnn_config(corpus_dir, "train")
    cfg.model.final_batch_norm = bounded
    with pytest.raises(TrainingDiverged) as info:
        FinalTraining(cfg, parse_fixed_arc(RNN_ARC, "rnn"), tmp_path / "run", progress=False).run()
    message = str(info.value)
    assert "\n" not in message and "final training (epoch 1, step 1)" in message
    assert ("model.final_batch_norm=true" in message) is not bounded
