import math

import pytest
import torch

from enas.config import OptimConfig
from enas.errors import TrainingDiverged
from enas.optim import check_finite, cosine_restarts_lr, lr_at


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
