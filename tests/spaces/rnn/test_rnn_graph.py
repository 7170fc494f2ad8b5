"""The arch-as-data recurrent cell (`enas.spaces.rnn.graph`): one kernel sequence for every arch, one compiled
artefact for every arch, the arch as index tensors. (Its equality with the plain-autograd reference, outputs,
gradients and running statistics, is tested with the other cells in test_rnn_reference.py.)"""

import copy

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from enas.build import build_space
from enas.errors import ConfigError
from enas.presets import make_config
from enas.spaces.base import TaskInfo
from enas.spaces.rnn.arch import ACTIVATIONS
from enas.spaces.rnn.graph import CellIndex, cell_step
from enas.validate import validate_config
from tests.spaces.graph_checks import OpLog, distinct_archs

V, H, T, B = 40, 8, 4, 3
INFO = TaskInfo(vocab_size=V)


def config(**model):
    cfg = make_config("rnn", "demo", "search", "ptb")
    cfg.model.hidden, cfg.model.num_nodes = H, 5
    cfg.model.batch_norm = True
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return validate_config(cfg)


def step_ops(net, arch, seed=0):
    """The aten ops of one training step of ``net`` on ``arch``: forward, backward, SGD update."""
    net = copy.deepcopy(net).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    torch.manual_seed(seed)
    x = torch.randint(0, V, (T, B))
    with OpLog() as log:
        logits, _, _ = net(x, net.init_hidden(B), arch=arch)
        logits.logsumexp(-1).mean().backward()
        opt.step()
    return log.ops


def test_cell_index_holds_the_arch():
    space = build_space(config())
    for arch in distinct_archs(space, 5):
        index = CellIndex.from_arch(arch)
        outputs = arch.output_nodes()
        assert index.parent.tolist()[1:] == [node.input for node in arch.nodes[1:]]
        assert [ACTIVATIONS[a] for a in index.act.tolist()] == [node.act for node in arch.nodes]
        assert index.out.sum().item() == pytest.approx(1.0)
        assert [l for l, w in enumerate(index.out.tolist()) if w > 0] == sorted(outputs)


def test_graph_cell_dispatches_the_same_ops_for_every_arch():
    space = build_space(config(cell="graph"))
    net = space.build_supernet(INFO)
    archs = distinct_archs(space, 4)
    sequences = [step_ops(net, arch) for arch in archs]
    assert all(ops == sequences[0] for ops in sequences[1:])
    assert "aten.index_select" in sequences[0]  # the arch arrives as index tensors


def test_fast_cell_dispatches_arch_dependent_ops():
    """The control check: the fast cell's kernel sequence follows the arch, so the test above can fail."""
    space = build_space(config(cell="path"))
    net = space.build_supernet(INFO)
    sequences = [step_ops(net, arch) for arch in distinct_archs(space, 4)]
    assert any(ops != sequences[0] for ops in sequences[1:])


@pytest.mark.slow
def test_one_compiled_artefact_serves_every_arch():
    space = build_space(config(cell="graph"))
    eager = space.build_supernet(INFO)
    compiled = copy.deepcopy(eager)
    counter = CompileCounter()
    compiled.set_cell("graph", compiled=True, backend=counter)
    torch._dynamo.reset()
    for i, arch in enumerate(distinct_archs(space, 5, seed=1)):
        torch.manual_seed(i)
        x = torch.randint(0, V, (T, B))
        h0 = torch.randn(B, H)
        torch.manual_seed(100 + i)
        a, ha, _ = eager(x, h0, arch=arch)
        torch.manual_seed(100 + i)
        b, hb, _ = compiled(x, h0, arch=arch)
        torch.testing.assert_close(b, a)
        torch.testing.assert_close(hb, ha)
        for buf_a, buf_b in zip(eager.buffers(), compiled.buffers()):
            torch.testing.assert_close(buf_b, buf_a)
    # One graph for the first time step (h_{t-1} does not require grad) and one for the others, whatever the arch.
    assert counter.frame_count <= 2
    torch._dynamo.reset()


@pytest.mark.slow
def test_inductor_compiled_cell_equals_eager_outputs_and_gradients():
    """The real compiler (C++ kernels on the CPU): outputs and gradients of two archs equal the eager cell's."""
    space = build_space(config(cell="graph", num_nodes=3))  # few nodes: a shorter unrolled graph to compile
    eager = space.build_supernet(INFO)
    compiled = copy.deepcopy(eager)
    compiled.set_cell("graph", compiled=True)
    torch._dynamo.reset()
    try:
        for i, arch in enumerate(distinct_archs(space, 2, seed=2)):
            results = []
            for net in (eager, compiled):
                net.zero_grad()
                torch.manual_seed(i)
                x = torch.randint(0, V, (T, B))
                logits, hidden, _ = net(x, net.init_hidden(B), arch=arch)
                (logits.logsumexp(-1).mean() + hidden.square().sum()).backward()
                results.append((logits, {n: p.grad for n, p in net.named_parameters()}))
            (la, ga), (lb, gb) = results
            torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-5)
            for name, g in ga.items():
                assert (g is None) == (gb[name] is None), name
                if g is not None:
                    torch.testing.assert_close(gb[name], g, rtol=1e-4, atol=1e-5)
    except Exception as e:  # a machine without a C++ compiler cannot build inductor's kernels
        if "compiler" in str(e).lower() or "cpp" in type(e).__name__.lower():
            pytest.skip(f"inductor cannot compile here: {str(e).splitlines()[0]}")
        raise
    finally:
        torch._dynamo.reset()


def test_compile_cell_config_is_checked():
    with pytest.raises(ConfigError, match="set model.cell=graph"):
        config(compile_cell=True)
    with pytest.raises(ConfigError, match="compile_cell must be true or false"):
        config(cell="graph", compile_cell="yes")
    net = build_space(config(cell="graph", compile_cell=True)).build_supernet(INFO)
    assert net.cell == "graph" and net._step is not cell_step  # the compiled step
