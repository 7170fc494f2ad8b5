"""Factories of enas.build: the numerics a run's forward passes use (precision / autocast)."""

from __future__ import annotations

import pytest
import torch

from enas.build import autocast, uses_bf16
from enas.errors import ConfigError
from enas.presets import make_config
from enas.search.loop import Search
from enas.validate import validate_config
from tests.conftest import conv_output_dtypes, tiny_image_config


@pytest.mark.parametrize("space, precision, device, expected", [
    ("micro", "auto", "cpu", False),
    ("micro", "auto", "cuda", True),  # convolutional networks on a GPU
    ("macro", "auto", "cuda", True),
    ("rnn", "auto", "cuda", False),  # the recurrent cell stays float32
    ("micro", "fp32", "cuda", False),
    ("rnn", "bf16", "cpu", True),  # asked for explicitly
])
def test_auto_precision_is_bf16_only_for_cnns_on_a_gpu(space, precision, device, expected):
    cfg = make_config(space, "demo", "search", "ptb" if space == "rnn" else "fashion-mnist")
    cfg.precision = precision
    assert uses_bf16(cfg, torch.device(device)) is expected


def test_an_unknown_precision_is_refused():
    cfg = make_config("micro", "demo", "search", "fashion-mnist")
    cfg.precision = "fp16"
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16"):
        validate_config(cfg)


def test_a_bf16_search_runs_its_convolutions_in_bf16_and_keeps_float32_weights(npz_path, tmp_path):
    cfg = tiny_image_config("macro", npz_path)
    cfg.search.epochs = 1
    cfg.precision = "bf16"
    search = Search(cfg, tmp_path / "run", progress=False)
    dtypes = conv_output_dtypes(search.supernet)
    summary = search.run()
    assert dtypes == {torch.bfloat16}
    assert {p.dtype for p in search.supernet.parameters()} == {torch.float32}
    assert 0.0 <= summary["best"]["score"] <= 1.0
    with autocast(cfg, torch.device("cpu")):  # the context itself
        assert torch.is_autocast_enabled("cpu")
    cfg.precision = "fp32"
    with autocast(cfg, torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
