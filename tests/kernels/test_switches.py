"""The kernel switches: config keys, applied per process, restored by `switched`."""

import pytest
import torch

from enas import kernels, registry
from enas.build import build_space
from enas.config import parse_set, resumable, set_key
from enas.errors import ConfigError
from enas.kernels.batch_norm import applies
from enas.kernels.packed import packing_enabled
from enas.presets import make_config
from enas.validate import validate_config


def test_switched_restores_and_rejects_unknown_names():
    x = torch.zeros(8, 20, 32, 32).contiguous(memory_format=torch.channels_last)
    assert kernels.enabled("bn_products") and applies(x)
    with kernels.switched(bn_products=False):
        assert not applies(x)
    assert applies(x)
    with pytest.raises(ValueError, match="unknown kernel switch"), kernels.switched(fast=True):
        pass


def test_a_run_config_switches_the_paths_when_its_space_is_built():
    cfg = make_config("micro", "demo", "search", "fashion-mnist")
    for key, value in parse_set(["kernels.packed=false", "kernels.bn_products=false"]):
        set_key(cfg, key, value)
    try:
        build_space(cfg)
        assert not kernels.enabled("packed") and not packing_enabled(torch.zeros(1))
        assert not kernels.enabled("bn_products")
    finally:
        kernels.configure(kernels.KernelsConfig())
    assert resumable("kernels.packed") and resumable("kernels.bn_products")


@pytest.mark.parametrize("space", registry.names())  # every registered space
def test_every_space_names_its_cell_paths_alike(space):
    cfg = make_config(space, "demo", "search")
    assert cfg.model.cell == "path"
    cfg.model.cell = "graph"
    validate_config(cfg)
    cfg.model.cell = "fast"
    with pytest.raises(ConfigError, match="model.cell must be one of path, graph"):
        validate_config(cfg)
