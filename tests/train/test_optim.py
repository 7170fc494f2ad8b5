import math

import pytest
import torch

from enas.config import OptimConfig
from enas.errors import TrainingDiverged
from enas.train.optim import DivergenceWatch, StatsMean, check_finite, cosine_restarts_lr, lr_at


def test_cosine_restarts_match_the_authors_schedule():
    # cycles of 10, 20, 40 epochs: restarts at 10, 30, 70 (spec 4.2)
    assert cosine_restarts_lr(0, 0.05, 0.0005, 10, 2) == pytest.approx(0.05)
    for restart in (10, 30, 70, 150, 310):
        assert cosine_restarts_lr(restart, 0.05, 0.0005, 10, 2) == pytest.approx(0.05)
        assert cosine_restarts_lr(restart - 1, 0.05, 0.0005, 10, 2) < 0.002
    mid = cosine_restarts_lr(5, 0.05, 0.0, 10, 2)
    assert mid == pytest.approx(0.025)
    assert cosine_restarts_lr(20, 1.0, 0.0, 10, 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 10 / 20)))


def test_decay_and_constant():
    cfg = OptimConfig(lr=20.0, schedule="decay", decay=0.96, decay_start=15, decay_min=1.0)
    assert lr_at(14, cfg) == 20.0
    assert lr_at(15, cfg) == pytest.approx(20 * 0.96)
    assert lr_at(1000, cfg) == 1.0
    assert lr_at(99, OptimConfig(lr=3.0, schedule="constant")) == 3.0


def test_nan_loss_raises_user_error():
    with pytest.raises(TrainingDiverged, match="start again with a lower learning rate"):
        check_finite(torch.tensor(float("nan")), "at step 3")
    check_finite(torch.tensor(1.0), "fine")


def test_divergence_watch_reads_the_losses_once_per_window_and_names_the_first_bad_step():
    watch = DivergenceWatch(lambda step: f"at step {step}", every=4)
    reads = []
    real_isfinite = torch.isfinite
    try:  # every check is one isfinite over the stacked window
        torch.isfinite = lambda t: reads.append(t.numel()) or real_isfinite(t)
        for _ in range(8):
            watch.add(torch.tensor(1.0))
        assert reads == [4, 4]  # two windows of four, not eight single reads
        watch.add(torch.tensor(2.0))
        watch.add(torch.tensor(float("nan")))  # step 10: noticed when its window is checked, not at once
        watch.add(torch.tensor(float("inf")))
        assert reads == [4, 4]
        with pytest.raises(TrainingDiverged, match=r"the loss became nan at step 10, before the first checkpoint"):
            watch.check()
    finally:
        torch.isfinite = real_isfinite
    watch.check()  # the window was consumed
    empty = DivergenceWatch(lambda step: "", every=4)
    empty.check()


def test_stats_mean_keeps_tensor_sums_on_their_device_and_reads_them_at_the_end():
    mean = StatsMean()
    for loss, acc in ((1.0, 0.5), (3.0, 0.25)):
        mean.add({"loss": torch.tensor(loss, requires_grad=True) * 1, "acc": acc})
    assert isinstance(mean.sums["loss"], torch.Tensor) and not mean.sums["loss"].requires_grad
    means = mean.means("train_")
    assert means == {"train_loss": 2.0, "train_acc": 0.375}
    assert all(type(v) is float for v in means.values())
