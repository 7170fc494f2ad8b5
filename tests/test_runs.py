import json
import random

import numpy as np
import pytest
import torch

from enas.errors import UserError
from enas.runs import RunDir, rng_state, set_rng_state


def test_run_dir_refuses_overwrite_and_requires_checkpoint_to_resume(tmp_path):
    run = RunDir(tmp_path / "r")
    with pytest.raises(UserError, match="nothing to resume"):
        RunDir(tmp_path / "other", resume=True)
    run.save_checkpoint({"epoch": 1, "w": torch.ones(2)})
    with pytest.raises(UserError, match="--resume"):
        RunDir(tmp_path / "r")
    again = RunDir(tmp_path / "r", resume=True)
    assert again.load_checkpoint()["epoch"] == 1


def test_checkpoint_is_atomic_and_corruption_is_a_user_error(tmp_path):
    run = RunDir(tmp_path)
    run.save_checkpoint({"epoch": 1})
    assert not [p for p in run.ckpt_dir.iterdir() if p.name.endswith(".tmp")]

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        run.save_checkpoint({"epoch": 2, "bad": Boom()})
    assert run.load_checkpoint()["epoch"] == 1  # the previous checkpoint survives a failed write
    run.checkpoint_path.write_bytes(b"garbage")
    with pytest.raises(UserError, match="truncated"):
        run.load_checkpoint()


def test_metrics_log_and_truncate(tmp_path):
    run = RunDir(tmp_path)
    for e in (1, 2, 3):
        run.log("epoch", epoch=e, loss=float(e), nan=float("nan"))
    lines = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
    assert lines[0]["nan"] is None
    run.truncate_metrics(after_epoch=2)
    assert [r["epoch"] for r in run.read_metrics("epoch")] == [1, 2]


def test_rng_state_round_trip():
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_fresh_run_drops_metrics_of_a_run_that_never_checkpointed(tmp_path):
    RunDir(tmp_path).log("epoch", epoch=1, loss=1.0)
    assert RunDir(tmp_path).read_metrics() == []
