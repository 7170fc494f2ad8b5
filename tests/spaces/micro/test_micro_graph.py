"""The arch-as-data micro supernet (`enas.spaces.micro.graph`, ``model.cell=graph``): equal to the sampled-path
supernet in outputs, gradients and statistics for random archs; one kernel sequence and one compiled artefact for
every arch."""

import pytest
import torch

from enas.errors import ConfigError
from enas.spaces.micro.arch import MICRO_OP_NAMES, MicroArch, MicroNode, loose_ends
from enas.spaces.micro.graph import FROM_CELL_INPUT, INPUT, NODE, OP, arch_index
from enas.spaces.micro.space import MicroSpace, MicroSpaceConfig
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
    # 3 layers: 5 cells, two of them reduction cells; no classifier dropout, so that two runs can be compared
    return MicroSpace(MicroSpaceConfig(**{"num_layers": 3, "channels": 4, "num_nodes": 4, "keep_prob": 1.0,
                                          **overrides}))


def test_arch_index_holds_the_arch():
    sp = space()
    for arch in distinct_archs(sp, 4):
        slots, loose = arch_index(arch, torch.device("cpu"))
        for c, cell in enumerate((arch.normal, arch.reduce)):
            for k, node in enumerate(cell):
                assert slots[c, k, :, INPUT].tolist() == list(node.inputs)
                assert [MICRO_OP_NAMES[o] for o in slots[c, k, :, OP]] == list(node.ops)
                assert slots[c, k, :, FROM_CELL_INPUT].tolist() == [int(j < 2) for j in node.inputs]
                assert slots[c, k, :, NODE].tolist() == [max(j - 2, 0) for j in node.inputs]
            assert [i for i, m in enumerate(loose[c].tolist()) if m] == list(loose_ends(cell))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_graph_supernet_equals_the_path_supernet(seed):
    """Outputs and gradients (an unsampled weight's none = zeros) over random archs, in training and eval mode."""
    sp = space()
    path, graph = path_and_graph(sp)
    images, labels = image_batch(dtype=torch.float64, seed=seed)
    for arch in distinct_archs(sp, 3, seed=seed):
        assert_steps_equal(step(path, images, labels, arch), step(graph, images, labels, arch))
    path.eval(), graph.eval()
    with torch.no_grad():
        torch.testing.assert_close(graph(images, arch=arch)[0], path(images, arch=arch)[0])


def test_graph_supernet_equals_the_path_supernet_in_float32():
    sp = space(num_nodes=5)
    path, graph = path_and_graph(sp, torch.float32)
    images, labels = image_batch()
    for arch in distinct_archs(sp, 2, seed=5):
        assert_steps_equal(step(path, images, labels, arch), step(graph, images, labels, arch),
                           rtol=1e-4, atol=1e-5)


def test_drop_path_spares_the_identity():
    """With drop-path on, a cell of identities only is untouched, and other cells are dropped per example."""
    ident = tuple(MicroNode((0, 1), ("identity", "identity")) for _ in range(4))
    sep = tuple(MicroNode((0, 1), ("sep3x3", "sep3x3")) for _ in range(4))
    images, labels = image_batch()
    _, off = path_and_graph(space(), torch.float32)
    _, on = path_and_graph(space(drop_path_keep=0.3), torch.float32)
    for net in (off, on):
        net.drop_path_progress = 1.0
    torch.manual_seed(3)
    arch = MicroArch(normal=ident, reduce=ident)
    torch.testing.assert_close(on(images, arch=arch)[0], off(images, arch=arch)[0])
    arch = MicroArch(normal=sep, reduce=sep)
    assert not torch.allclose(on(images, arch=arch)[0], off(images, arch=arch)[0])


def test_graph_supernet_dispatches_the_same_ops_for_every_arch():
    sp = space(num_nodes=3)
    _, graph = path_and_graph(sp, torch.float32)
    images, labels = image_batch()
    sequences = [step_ops(graph, images, labels, arch) for arch in distinct_archs(sp, 4, seed=1)]
    assert all(ops == sequences[0] for ops in sequences[1:])
    assert "aten.where" in sequences[0]  # the arch arrives as index tensors, choices are selections


def test_path_supernet_dispatches_arch_dependent_ops():
    """The control check: the sampled-path supernet's kernel sequence follows the arch."""
    sp = space(num_nodes=3)
    path, _ = path_and_graph(sp, torch.float32)
    images, labels = image_batch()
    sequences = [step_ops(path, images, labels, arch) for arch in distinct_archs(sp, 4, seed=1)]
    assert any(ops != sequences[0] for ops in sequences[1:])


@pytest.mark.slow
def test_one_compiled_artefact_serves_every_arch():
    sp = space(num_layers=1, num_nodes=2)  # three cells (two reduction cells): a short graph to trace
    check_one_compiled_artefact(sp, distinct_archs(sp, 4, seed=2))


def test_cell_options_are_checked():
    with pytest.raises(ConfigError, match="model.cell must be one of path, graph"):
        MicroSpaceConfig(cell="fast")
    with pytest.raises(ConfigError, match="set model.cell=graph"):
        MicroSpaceConfig(compile_cell=True)
    net = space(cell="graph").build_supernet(IMAGES)
    assert net.cell == "graph"
    assert net.state_dict().keys() == space().build_supernet(IMAGES).state_dict().keys()  # one checkpoint format
