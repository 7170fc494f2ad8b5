"""The fast recurrent cell (`rnn_cell.run_cell`) and the arch-as-data cell (`rnn_graph.run_cell_graph`) equal the
plain-autograd reference (`rnn_reference`): outputs, hidden state, gradients and batch-norm running statistics,
supernet and child, with dropout masks and BN."""

import copy

import pytest
import torch
import torch.nn.functional as F

from enas.build import build_space
from enas.errors import ConfigError
from enas.presets import make_config
from enas.search.controller import UniformSampler
from enas.spaces.base import TaskInfo
from enas.spaces.rnn.space import RnnSpaceConfig
from enas.validate import validate_config

V, H, T, B = 50, 16, 6, 5
INFO = TaskInfo(vocab_size=V)
DROPOUTS = dict(dropout_word=0.2, dropout_emb=0.1, dropout_x=0.3, dropout_h=0.3, dropout_out=0.3)
# Largest difference allowed, relative to each tensor's largest entry: (values and running statistics, gradients).
# In float64 the two cells agree to ~1e-12 everywhere. In float32 the values agree to ~3e-7, the gradients through
# batch norm only to ~1e-3 at worst: with eps 1.0 and few rows, the normalised values and the backward through the
# batch statistics are small differences of large terms, whose rounding the two cells do differently.
TOL = {torch.float32: (1e-5, 5e-3), torch.float64: (1e-12, 1e-10)}


def config(**model):
    cfg = make_config("rnn", "demo", "search", "ptb")
    cfg.model.hidden, cfg.model.num_nodes = H, 6
    for key, value in {**DROPOUTS, **model}.items():
        setattr(cfg.model, key, value)
    return validate_config(cfg)


def tokens(seed=0):
    return torch.randint(0, V, (T, B), generator=torch.Generator().manual_seed(seed))


def archs(space, n, seed):
    torch.manual_seed(seed)
    sampler = UniformSampler(space)
    return [sampler.sample().arch for _ in range(n)]


def run(net, cell, arch, seed=1):
    """One forward and backward with ``cell``; returns outputs, hidden, gradients and buffers."""
    net.cell = cell
    net.zero_grad()
    torch.manual_seed(seed)  # the dropout masks are drawn before the cell: same seed, same masks
    h0 = torch.randn(B, H, dtype=net.emb.dtype)
    logits, hidden, extras = net(tokens(), h0, arch=arch)
    (logits.logsumexp(-1).mean() + hidden.square().sum()).backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    return logits, hidden, extras["outputs"], grads, dict(net.named_buffers())


def assert_close(name, a, b, tol):
    error = ((a - b).abs().max() / a.abs().max()).item()
    assert error <= tol, f"{name}: relative difference {error:.1e} > {tol:.0e}"


def assert_same(fast, ref):
    values_tol, grads_tol = TOL[fast[0].dtype]
    for name, a, b in zip(("logits", "hidden", "outputs"), fast[:3], ref[:3]):
        assert_close(name, a, b, values_tol)
    grads, ref_grads = fast[3], ref[3]
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        assert (g is None) == (ref_grads[name] is None), name  # the same path gets gradients
        if g is not None:
            assert_close(f"{name}.grad", g, ref_grads[name], grads_tol)
    assert fast[4].keys() == ref[4].keys()
    for name, buf in fast[4].items():
        assert_close(name, buf, ref[4][name], values_tol)


@pytest.mark.parametrize("cell", ["path", "graph"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("build", ["supernet", "child"])
@pytest.mark.parametrize("model", [
    dict(batch_norm=False),
    dict(batch_norm=True),
    dict(batch_norm=True, batch_norm_output=True),
    dict(batch_norm=True, batch_norm_output=True, variant="corrected", dropout_h_all_nodes=False),
    dict(batch_norm=False, weights_per_activation=True, dropout_h=0.0),
], ids=["no_bn", "bn", "bn_output", "corrected_bn_h_node0_only", "per_act_no_h_mask"])
def test_cell_equals_reference_in_training_mode(build, model, dtype, cell):
    space = build_space(config(**model))
    supernet = space.build_supernet(INFO).to(dtype)
    for i, arch in enumerate(archs(space, 4, seed=0)):
        if build == "supernet":
            net = supernet
        else:
            net = space.build_child(arch, INFO, final=False).to(dtype)
            net.load_state_dict(space.child_state_from_supernet(supernet, arch))
        net.train()
        if model.get("batch_norm"):
            with torch.no_grad():  # non-trivial BN affine parameters and running statistics
                for name, p in net.named_parameters():
                    if name.startswith(("bn_", "out_bn_")):
                        p.uniform_(0.5, 1.5)
                for b in net.buffers():
                    b.uniform_(0.1, 1.0)
        before = {n: b.clone() for n, b in net.named_buffers()}
        fast = run(copy.deepcopy(net), cell, arch, seed=i)
        ref = run(copy.deepcopy(net), "reference", arch, seed=i)
        assert_same(fast, ref)
        if model.get("batch_norm"):
            assert not torch.equal(fast[4]["bn_mean"], before["bn_mean"])  # the statistics did move


@pytest.mark.parametrize("cell", ["path", "graph"])
@pytest.mark.parametrize("build", ["supernet", "child"])
def test_cell_equals_reference_in_eval_mode(build, cell):
    space = build_space(config(batch_norm=True, batch_norm_output=True))
    net = space.build_supernet(INFO)
    for arch in archs(space, 3, seed=5):
        if build == "child":
            child = space.build_child(arch, INFO, final=False)
            child.load_state_dict(space.child_state_from_supernet(net, arch))
        model = net if build == "supernet" else child
        model.train()
        model(tokens(), model.init_hidden(B), arch=arch)  # move the running statistics away from 0 / 1
        model.eval()
        assert_same(run(copy.deepcopy(model), cell, arch), run(copy.deepcopy(model), "reference", arch))


def test_cell_flag_end_to_end():
    losses = []
    for cell in ("path", "reference", "graph"):
        cfg = config(batch_norm=True, batch_norm_output=True, cell=cell)
        space = build_space(cfg)
        arch = archs(space, 1, seed=3)[0]
        torch.manual_seed(0)  # same initial weights
        child = space.build_child(arch, INFO, final=False).train()
        assert child.cell == cell
        torch.manual_seed(1)  # same dropout masks
        x = tokens(2)
        logits, _, _ = child(x[:-1], child.init_hidden(B))
        loss = F.cross_entropy(logits.reshape(-1, V), x[1:].reshape(-1))
        loss.backward()
        losses.append((loss.detach(), child.w_h.grad, child.bn_mean.clone()))
    (ref_loss, ref_grad, ref_mean) = losses[1]
    values_tol, grads_tol = TOL[torch.float32]
    for loss, grad, mean in (losses[0], losses[2]):
        assert_close("loss", loss, ref_loss, values_tol)
        assert_close("w_h.grad", grad, ref_grad, grads_tol)
        assert_close("bn_mean", mean, ref_mean, values_tol)
    assert build_space(config()).build_supernet(INFO).cell == "path"  # the default


def test_unknown_cell_is_refused():
    with pytest.raises(ConfigError, match="model.cell must be one of path, graph, reference; got 'slow'"):
        config(cell="slow")
    with pytest.raises(ConfigError, match="model.cell"):
        RnnSpaceConfig(cell="").validate()
