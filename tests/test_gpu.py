"""Checks that need a CUDA device (skipped without one): each space on the GPU, and a tiny search whose supernet
lives on the GPU while the controller stays on the CPU."""

import pytest
import torch

from enas import registry
from enas.search.controller import UniformSampler
from enas.spaces.base import TaskInfo
from tests.conftest import conv_output_dtypes, tiny_image_config, tiny_rnn_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _spaces():
    from enas.spaces.macro.space import MacroSpace, MacroSpaceConfig
    from enas.spaces.micro.space import MicroSpace, MicroSpaceConfig
    from enas.spaces.rnn.space import RnnSpace, RnnSpaceConfig

    return {
        "rnn": (RnnSpace(RnnSpaceConfig(hidden=32, num_nodes=5)), TaskInfo(vocab_size=50)),
        "macro": (MacroSpace(MacroSpaceConfig(num_layers=4, channels=8)),
                  TaskInfo(in_channels=3, image_size=16, num_classes=10)),
        "micro": (MicroSpace(MicroSpaceConfig(num_layers=3, channels=8)),
                  TaskInfo(in_channels=3, image_size=16, num_classes=10)),
    }


@pytest.mark.parametrize("name", registry.names())  # every registered space
def test_supernet_equals_child_on_cuda(name):
    space, info = _spaces()[name]
    supernet = space.build_supernet(info).cuda().eval()
    for _ in range(3):
        arch = UniformSampler(space).sample().arch
        child = space.build_child(arch, info, final=False).cuda().eval()
        child.load_state_dict(space.child_state_from_supernet(supernet, arch))
        with torch.no_grad():
            if name == "rnn":
                x = torch.randint(0, 50, (6, 4), device="cuda")
                h = supernet.init_hidden(4)
                a, b = supernet(x, h, arch=arch)[0], child(x, h)[0]
            else:
                x = torch.randn(4, 3, 16, 16, device="cuda")
                a, b = supernet(x, arch=arch)[0], child(x)[0]
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("space", ["rnn", "micro"])
def test_tiny_search_on_cuda(space, corpus_dir, npz_path, tmp_path):
    from enas.search.loop import Search

    cfg = tiny_rnn_config(corpus_dir) if space == "rnn" else tiny_image_config(space, npz_path)
    cfg.device = "cuda"
    summary = Search(cfg, tmp_path / "run", progress=False).run()
    assert summary["best"]["score"] > 0
    resumed = Search.resume(tmp_path / "run", progress=False)
    assert next(resumed.supernet.parameters()).is_cuda


def test_cnn_search_on_cuda_runs_in_bf16_by_default(npz_path, tmp_path):
    from enas.search.loop import Search

    cfg = tiny_image_config("macro", npz_path)
    cfg.device = "cuda"
    search = Search(cfg, tmp_path / "run", progress=False)
    dtypes = conv_output_dtypes(search.supernet)
    assert search.run()["best"]["score"] > 0
    assert dtypes == {torch.bfloat16}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", ["rnn", "micro", "macro"])
def test_compiled_graph_supernet_equals_eager_on_cuda(name, training):
    """The arch-as-data supernet compiled with CUDA graphs (reduce-overhead) equals the eager sampled-path
    supernet for several archs served by the same compiled artefact: outputs and gradients in training; outputs
    under no_grad, where every call starts a new CUDA-graph iteration and the copied outputs must keep the state."""
    import copy

    space, info = _spaces()[name]
    if name != "rnn":
        space.config.keep_prob = 1.0  # no classifier dropout: compiled and eager draw different masks
    eager = space.build_supernet(info).cuda().train(training)
    compiled = copy.deepcopy(eager)
    compiled.set_cell("graph", compiled=True)
    torch._dynamo.reset()
    try:
        for i in range(4):
            torch.manual_seed(i)
            arch = UniformSampler(space).sample().arch
            results = []
            for net in (eager, compiled):
                net.zero_grad()
                torch.manual_seed(100 + i)  # the same dropout masks (recurrent space: drawn outside the cell)
                with torch.set_grad_enabled(training):
                    if name == "rnn":
                        x = torch.randint(0, 50, (6, 4), device="cuda")
                        logits = net(x, net.init_hidden(4), arch=arch)[0]
                    else:
                        x = torch.randn(4, 3, 16, 16, device="cuda")
                        logits = net(x, arch=arch)[0]
                if training:
                    logits.logsumexp(-1).mean().backward()
                results.append((logits.detach().clone(), {n: p.grad for n, p in net.named_parameters()}))
            (la, ga), (lb, gb) = results
            torch.testing.assert_close(lb, la, rtol=1e-3, atol=1e-3)
            for pname, g in ga.items():
                if g is not None:
                    torch.testing.assert_close(gb[pname], g, rtol=1e-2, atol=1e-3)
    finally:
        torch._dynamo.reset()
