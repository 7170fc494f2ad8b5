"""The arch-as-data macro supernet (`enas.spaces.macro.graph`, ``model.cell=graph``): equal to the sampled-path
supernet in outputs, gradients and running statistics for random archs; one kernel sequence and one compiled
artefact for every arch."""

import pytest
import torch

from enas.errors import ConfigError
from enas.spaces.macro.graph import arch_index
from enas.spaces.macro.space import MacroSpace, MacroSpaceConfig, reduction_keep
from tests.spaces.graph_checks import (
    IMAGES,
    assert_steps_equal,
    check_one_compiled_artefact,
    distinct_archs,
    image_batch,
    path_and_graph,
    step,
    step_ops,
)


def space(**overrides):
    # 6 layers: reductions after layers 1 and 3; no classifier dropout, so that two runs can be compared
    return MacroSpace(MacroSpaceConfig(**{"num_layers": 6, "channels": 4, "keep_prob": 1.0, **overrides}))


def test_arch_index_holds_the_arch():
    sp = space()
    for arch in distinct_archs(sp, 4):
        keep = reduction_keep(arch)
        op, skips, reduced = arch_index(arch, sp.config.ops, keep, torch.device("cpu"))
        assert [sp.config.ops[i] for i in op] == [layer.op for layer in arch.layers]
        for k, layer in enumerate(arch.layers):
            assert [i for i, bit in enumerate(skips[k].tolist()) if bit] == list(layer.skip_sources)
        assert [{i for i, m in enumerate(row.tolist()) if m} for row in reduced] == [set(kept) for kept in keep]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_graph_supernet_equals_the_path_supernet(seed):
    """Outputs, gradients (an unsampled weight's none = zeros) and BN running statistics over random archs in
    training mode, then outputs in eval mode (running statistics)."""
    sp = space()
    path, graph = path_and_graph(sp)
    images, labels = image_batch(dtype=torch.float64, seed=seed)
    for arch in distinct_archs(sp, 4, seed=seed):
        assert_steps_equal(step(path, images, labels, arch), step(graph, images, labels, arch))
    path.eval(), graph.eval()
    with torch.no_grad():
        torch.testing.assert_close(graph(images, arch=arch)[0], path(images, arch=arch)[0])


def test_graph_supernet_keeps_the_ops_of_a_smaller_vocabulary():
    sp = space(ops=("conv3x3", "maxpool3x3", "sep5x5"))
    path, graph = path_and_graph(sp, torch.float32)
    images, labels = image_batch()
    for arch in distinct_archs(sp, 3, seed=4):
        assert_steps_equal(step(path, images, labels, arch), step(graph, images, labels, arch),
                           rtol=1e-4, atol=1e-5)


def test_graph_supernet_dispatches_the_same_ops_for_every_arch():
    sp = space()
    path, graph = path_and_graph(sp, torch.float32)
    images, labels = image_batch()
    archs = distinct_archs(sp, 4, seed=1)
    sequences = [step_ops(graph, images, labels, arch) for arch in archs]
    assert all(ops == sequences[0] for ops in sequences[1:])
    assert "aten.where" in sequences[0]  # the arch arrives as index tensors, choices are selections
    # the control check: the sampled-path supernet's sequence follows the arch
    sequences = [step_ops(path, images, labels, arch) for arch in archs]
    assert any(ops != sequences[0] for ops in sequences[1:])


@pytest.mark.slow
def test_one_compiled_artefact_serves_every_arch():
    sp = space()
    check_one_compiled_artefact(sp, distinct_archs(sp, 4, seed=2))


def test_cell_options_are_checked():
    with pytest.raises(ConfigError, match="model.cell must be one of path, graph"):
        MacroSpaceConfig(cell="graf")
    with pytest.raises(ConfigError, match="set model.cell=graph"):
        MacroSpaceConfig(compile_cell=True)
    sp = space(cell="graph")
    net = sp.build_supernet(IMAGES)
    assert net.cell == "graph"
    assert net.state_dict().keys() == space().build_supernet(IMAGES).state_dict().keys()  # one checkpoint format
    child = sp.build_child(distinct_archs(sp, 1)[0], IMAGES, final=False)
    assert child.cell == "path"
    with pytest.raises(ValueError, match="applies to the supernet"):
        child.set_cell("graph")
