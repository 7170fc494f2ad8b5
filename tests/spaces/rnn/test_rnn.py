"""The recurrent space: decisions and codec, supernet == child, path-only gradients, locked dropout, hidden carry."""

import random

import pytest
import torch

from enas import kernels
from enas.errors import ArchError, ConfigError
from enas.kernels.packed import packing_enabled
from enas.spaces.base import TaskInfo
from enas.spaces.rnn.arch import RnnArch, RnnNode
from enas.spaces.rnn.space import RnnChild, RnnSpace, RnnSpaceConfig, RnnSupernet

V, H, T, B = 50, 16, 6, 5
INFO = TaskInfo(vocab_size=V)
NO_DROPOUT = dict(dropout_word=0.0, dropout_emb=0.0, dropout_x=0.0, dropout_h=0.0, dropout_out=0.0)
PTB_CELL = "0 0 0 1 1 2 1 2 0 2 0 5 1 1 0 6 1 8 1 8 1 8 1"


def space(**kw) -> RnnSpace:
    cfg = dict(hidden=H, num_nodes=6, batch_norm_output=True, **NO_DROPOUT)
    cfg.update(kw)
    return RnnSpace(RnnSpaceConfig(**cfg))


def random_actions(sp: RnnSpace, rng: random.Random) -> list[int]:
    return [rng.randrange(d.size) for d in sp.decisions() if d.kind != "anchor"]


def tokens(seed=0, t=T, b=B):
    return torch.randint(0, V, (t, b), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------------------------
# decisions and codec
# ------------------------------------------------------------------------------------------------------------------
def test_paper_decisions():
    ds = space(num_nodes=4).decisions()
    assert [(d.kind, d.name, d.size) for d in ds] == [
        ("op", "node0.act", 4), ("pointer", "node1.input", 1), ("op", "node1.act", 4),
        ("pointer", "node2.input", 2), ("op", "node2.act", 4), ("pointer", "node3.input", 3), ("op", "node3.act", 4)]
    assert ds[0].new_anchor and ds[0].vocab == "rnn_act"
    pointer = ds[3]
    assert pointer.new_anchor and pointer.feed == "anchor_scaled" and pointer.distance_prior
    assert ds[4].vocab == "rnn_act" and not ds[4].new_anchor


def test_corrected_decisions_start_with_an_anchor():
    ds = space(num_nodes=3, variant="corrected", activations=("tanh", "relu")).decisions()
    assert (ds[0].kind, ds[0].name, ds[0].new_anchor, ds[0].feed) == ("anchor", "node0", True, "start")
    assert [d.kind for d in ds[1:]] == ["pointer", "op", "pointer", "op"]
    assert ds[2].size == 2


def test_vocabularies_follow_the_searched_set():
    assert space(activations=("relu", "tanh")).vocabularies() == {"rnn_act": ["relu", "tanh"]}


@pytest.mark.parametrize("kw", [{}, {"variant": "corrected"}, {"activations": ("tanh", "relu")}, {"num_nodes": 1}])
def test_decode_encode_round_trip(kw):
    sp, rng = space(**kw), random.Random(0)
    for _ in range(50):
        actions = random_actions(sp, rng)
        arch = sp.decode(actions)
        assert isinstance(arch, RnnArch) and len(arch.nodes) == sp.config.num_nodes
        assert sp.encode(arch) == actions
        assert RnnArch.from_fixed_arc(arch.to_fixed_arc()) == arch
        assert arch.output == ("mean" if sp.config.variant == "corrected" else "loose_ends")


def test_paper_actions_are_the_first_codes_notation():
    sp = space(num_nodes=12)
    arch = RnnArch.from_fixed_arc(PTB_CELL)
    assert " ".join(map(str, sp.encode(arch))) == PTB_CELL
    assert sp.decode([int(v) for v in PTB_CELL.split()]) == arch


def test_encode_rejects_archs_that_do_not_fit():
    sp = space(num_nodes=3, activations=("tanh", "relu"))
    with pytest.raises(ArchError, match="has 2 nodes but this space has 3 .set model.num_nodes=2"):
        sp.encode(RnnArch.from_fixed_arc("0 0 1"))
    with pytest.raises(ArchError, match="node 2 uses sigmoid"):
        sp.encode(RnnArch.from_fixed_arc("0 0 0 1 3"))
    with pytest.raises(ArchError, match="outputs 'loose_ends' but the arch outputs 'mean'"):
        sp.encode(RnnArch.from_fixed_arc("0 0 1 1"))
    corrected = space(num_nodes=2, variant="corrected")
    with pytest.raises(ArchError, match="fixes node 0 to tanh"):
        corrected.encode(RnnArch((RnnNode(None, "relu"), RnnNode(0, "tanh")), "mean"))


def test_decode_rejects_bad_actions():
    sp = space(num_nodes=3)
    with pytest.raises(ArchError, match="expects 5 actions"):
        sp.decode([0, 0])
    with pytest.raises(ArchError, match="input action must be in 0..1"):
        sp.decode([0, 0, 0, 2, 0])
    with pytest.raises(ArchError, match="activation action"):
        sp.decode([4, 0, 0, 0, 0])


@pytest.mark.parametrize("kw, key", [
    ({"activations": ("gelu",)}, "activations"), ({"variant": "x"}, "variant"), ({"num_nodes": 0}, "num_nodes"),
    ({"dropout_x": 1.0}, "dropout_x"), ({"hidden": 0}, "hidden"),
    ({"variant": "corrected", "num_nodes": 1}, "num_nodes"),
])
def test_config_errors(kw, key):
    with pytest.raises(ConfigError, match=f"model.{key}"):
        space(**kw)


# ------------------------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------------------------
def child_like(sp, net, arch):
    child = sp.build_child(arch, INFO, final=False)
    child.load_state_dict(sp.child_state_from_supernet(net, arch))
    return child


@pytest.mark.parametrize("kw", [{}, {"variant": "corrected"}, {"weights_per_activation": True},
                                {"variant": "corrected", "weights_per_activation": True, "batch_norm": False}])
def test_supernet_equals_child_in_eval_mode(kw):
    torch.manual_seed(0)
    sp, rng = space(**kw), random.Random(1)
    net = sp.build_supernet(INFO)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for name, p in net.named_parameters():
            if name.startswith(("bn_", "out_bn_")):
                p.uniform_(0.5, 1.5)
        for b in net.buffers():
            b.uniform_(0.1, 1.0)
    net.eval()
    x, h = tokens(), torch.randn(B, H)
    for _ in range(4):
        arch = sp.decode(random_actions(sp, rng))
        child = child_like(sp, net, arch).eval()
        logits, hidden, extras = net(x, h, arch=arch)
        c_logits, c_hidden, c_extras = child(x, h)
        assert torch.allclose(logits, c_logits, atol=1e-6) and torch.allclose(hidden, c_hidden, atol=1e-6)
        assert torch.allclose(extras["outputs"], c_extras["outputs"], atol=1e-6)


def test_supernet_equals_child_in_train_mode_and_running_stats_agree():
    torch.manual_seed(0)
    sp = space()
    net = sp.build_supernet(INFO).train()
    arch = sp.decode(random_actions(sp, random.Random(3)))
    child = child_like(sp, net, arch).train()
    before = net.bn_mean.clone()
    out = net(tokens(), net.init_hidden(B), arch=arch)
    c_out = child(tokens(), child.init_hidden(B))
    assert torch.allclose(out[0], c_out[0], atol=1e-5)
    assert not torch.equal(net.bn_mean, before)
    for name in ("bn_mean", "bn_var", "out_bn_mean", "out_bn_var"):
        assert torch.allclose(getattr(net, name), getattr(child, name), atol=1e-6), name


def test_running_stats_of_absent_nodes_stay_put():
    sp = space(num_nodes=6)
    net = sp.build_supernet(INFO).train()
    small = RnnArch.from_fixed_arc("1 0 0 0 1")  # 3 of the supernet's 6 nodes
    net(tokens(), net.init_hidden(B), arch=small)
    assert not torch.equal(net.bn_mean[:3], torch.zeros(3, 2 * H))
    assert torch.equal(net.bn_mean[3:], torch.zeros(3, 2 * H))


def test_shapes_and_final_child_has_no_batch_norm():
    sp = space(num_nodes=12)
    arch = RnnArch.from_fixed_arc(PTB_CELL)
    child = sp.build_child(arch, INFO)
    assert isinstance(child, RnnChild) and not any("bn" in n for n, _ in child.named_parameters())
    assert len(child.w_nodes) == 11 and child.w_nodes[0].shape == (H, 2 * H)
    logits, hidden, extras = child(tokens(), child.init_hidden(B))
    assert logits.shape == (T, B, V) and hidden.shape == (B, H) and extras["outputs"].shape == (T, B, H)
    assert torch.isfinite(logits).all()
    net = sp.build_supernet(INFO)
    assert isinstance(net, RnnSupernet) and len(net.w_skip) == 66  # one matrix per (node, previous node)
    logits, hidden, _ = net(tokens(), net.init_hidden(B), arch=arch)
    assert logits.shape == (T, B, V) and torch.isfinite(logits).all()


def test_published_cell_runs_with_its_own_activations_searched():
    sp = space(num_nodes=12, activations=("tanh", "relu"), weights_per_activation=True)
    arch = RnnArch.from_fixed_arc(PTB_CELL)
    net = sp.build_supernet(INFO)
    logits, _, _ = net(tokens(), net.init_hidden(B), arch=arch)
    logits.sum().backward()
    assert len(net.w_skip) == 66 * 2 and len(net.w_x) == len(net.w_h) == 2
    with pytest.raises(ArchError, match="not searched"):
        net(tokens(), net.init_hidden(B), arch=RnnArch.from_fixed_arc("0 0 3"))


@pytest.mark.parametrize("kw", [{}, {"weights_per_activation": True}])
def test_only_the_sampled_path_gets_gradients(kw):
    sp = space(num_nodes=5, **kw)
    net = sp.build_supernet(INFO).train()
    arch = RnnArch.from_fixed_arc("1 0 3 0 1 2 2 1 0")  # nodes 1..4 read 0, 0, 2, 1
    logits, _, _ = net(tokens(), net.init_hidden(B), arch=arch)
    logits.logsumexp(-1).mean().backward()
    acts, k = net.activations, net.k
    used = {(l * (l - 1) // 2 + n.input) * k + (acts.index(n.act) if k > 1 else 0)
            for l, n in enumerate(arch.nodes[1:], 1)}
    assert len(used) == 4
    for i, w in enumerate(net.w_skip):
        assert (w.grad is not None and w.grad.abs().sum() > 0) if i in used else w.grad is None, i
    k0 = acts.index("relu") if k > 1 else 0
    for ws in (net.w_x, net.w_h):
        assert [w.grad is not None and bool(w.grad.abs().sum() > 0) for w in ws] == [i == k0 for i in range(len(ws))]
    assert net.emb.grad.abs().sum() > 0 and net.bn_weight.grad.abs().sum() > 0


def test_gradient_reaches_every_child_parameter():
    sp = space(num_nodes=12)
    child = sp.build_child(RnnArch.from_fixed_arc(PTB_CELL), INFO, final=False).train()
    logits, _, _ = child(tokens(), child.init_hidden(B))
    logits.logsumexp(-1).mean().backward()
    for name, p in child.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert (p.grad.flatten(1) if p.dim() > 1 else p.grad[None]).abs().sum(-1).gt(0).all(), name


def test_batched_weight_gradients_equal_plain_autograd():
    sp = space(num_nodes=8, dropout_word=0.1, dropout_emb=0.1, dropout_x=0.3, dropout_h=0.3, dropout_out=0.3)
    net = sp.build_supernet(INFO).double().train()
    arch = sp.decode(random_actions(sp, random.Random(7)))
    grads = []
    for batched in (True, False):
        net.batched_weight_grads = batched
        net.zero_grad()
        torch.manual_seed(1)  # same dropout masks
        logits, hidden, _ = net(tokens(), net.init_hidden(B).double(), arch=arch)
        (logits.logsumexp(-1).mean() + hidden.square().sum()).backward(retain_graph=True)
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 3 + 7 + 4  # emb, w_x, w_h, 7 nodes, 4 BN
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], rtol=1e-9, atol=1e-12), name
        assert g.abs().sum() > 0, name


@pytest.mark.parametrize("training", [True, False])
def test_packed_products_equal_plain_products(monkeypatch, training):
    """float32 on the CPU: the products on packed weights (`enas.kernels.packed`) give the plain products' values and
    grads."""
    sp = space(num_nodes=8, dropout_x=0.3, dropout_h=0.3, hidden=128)  # H = 128: large enough to pack
    net = sp.build_supernet(INFO).train(training)
    arch = sp.decode(random_actions(sp, random.Random(3)))
    results = []
    for flag in (True, False):
        net.zero_grad()
        torch.manual_seed(1)  # same dropout masks
        with kernels.switched(packed=flag), torch.profiler.profile() as prof:
            logits, hidden, _ = net(tokens(), net.init_hidden(B), arch=arch)
            if training:
                (logits.logsumexp(-1).mean() + hidden.square().sum()).backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        results.append((logits.detach(), hidden.detach(), grads, {e.name for e in prof.events()}))
    (l1, h1, g1, ops1), (l0, h0, g0, ops0) = results
    assert "mkl::_mkl_linear" not in ops0
    if packing_enabled(l1):
        assert "mkl::_mkl_linear" in ops1
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h1, h0, rtol=1e-5, atol=1e-5)
    assert g1.keys() == g0.keys() and len(g1) == (3 + 7 + 4 if training else 0)
    for name, g in g1.items():
        torch.testing.assert_close(g, g0[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("build", ["supernet", "child"])
def test_hidden_state_is_carried(build):
    sp = space(variant="corrected")
    arch = sp.decode(random_actions(sp, random.Random(5)))
    net = sp.build_supernet(INFO) if build == "supernet" else sp.build_child(arch, INFO, final=False)
    net.eval()
    x = tokens(t=8)
    full, h_full, _ = net(x, net.init_hidden(B), arch=arch)
    first, h1, _ = net(x[:3], net.init_hidden(B), arch=arch)
    second, h2, _ = net(x[3:], h1, arch=arch)
    assert torch.allclose(torch.cat([first, second]), full, atol=1e-5)
    assert torch.allclose(h2, h_full, atol=1e-6)
    assert torch.equal(net.init_hidden(3), torch.zeros(3, H))


def test_supernet_needs_an_arch_that_fits():
    sp = space(num_nodes=3)
    net = sp.build_supernet(INFO)
    with pytest.raises(ValueError, match="needs the arch"):
        net(tokens(), net.init_hidden(B))
    with pytest.raises(ArchError, match="4 nodes"):
        net(tokens(), net.init_hidden(B), arch=RnnArch.from_fixed_arc("0 0 0 1 0 2 0"))


# ------------------------------------------------------------------------------------------------------------------
# locked dropout
# ------------------------------------------------------------------------------------------------------------------
def test_input_masks_are_locked_per_sequence():
    sp = space(dropout_word=0.5, dropout_emb=0.3, dropout_x=0.5, dropout_h=0.4, dropout_out=0.5)
    net = sp.build_supernet(INFO).train()
    x_tokens = torch.tensor([[1, 2, 3, 4]] * 10)  # (T=10, B=4); every sequence repeats one word
    x_tokens[::2] = torch.tensor([5, 6, 7, 8])  # ... and alternates with a second word
    emb = torch.nn.functional.embedding(x_tokens, net.emb.detach())
    dropped, mask_h, out_mask = net._dropout(x_tokens, emb)
    scale = dropped / emb  # (T, B, H)
    for t in range(2, 10):
        assert torch.equal(scale[t], scale[t - 2])  # same word, same sequence -> same mask at every step
    zero_dims = (scale == 0).float().mean()
    assert 0.5 < zero_dims < 0.95  # the three masks drop 1 - 0.5 * 0.7 * 0.5 = 82.5% of the entries
    assert mask_h.shape == (4, H) and out_mask.shape == (4, H)
    assert torch.isclose(mask_h, torch.tensor(1 / 0.6)).logical_or(mask_h == 0).all()
    net.eval()
    same, none_h, none_out = net._dropout(x_tokens, emb)
    assert same is emb and none_h is None and none_out is None


def test_output_mask_is_the_same_at_every_step():
    torch.manual_seed(0)
    sp = space(dropout_out=0.5, batch_norm=False)
    child = sp.build_child(RnnArch.from_fixed_arc("0 0 1 1 2"), INFO).train()
    logits, _, extras = child(tokens(t=8), child.init_hidden(B))
    # logits = (outputs * mask) @ emb^T; recover outputs * mask by least squares (emb has full column rank)
    top = torch.linalg.lstsq(child.emb.detach(), logits.detach().reshape(-1, V).T).solution.T.reshape(8, B, H)
    mask = top / extras["outputs"].detach()
    assert torch.allclose(mask, mask[0].expand_as(mask), atol=1e-3)
    assert ((mask[0] - 2.0).abs() < 1e-3).logical_or(mask[0].abs() < 1e-3).all()
    assert 0 < (mask[0].abs() < 1e-3).float().mean() < 1


def test_supernet_equals_child_without_output_batch_norm():
    sp = space(batch_norm_output=False)
    net = sp.build_supernet(TaskInfo(vocab_size=V))
    assert not hasattr(net, "out_bn_weight")
    net.train()
    x = tokens()
    net(x, net.init_hidden(B), arch=sp.decode(random_actions(sp, random.Random(0))))  # move the running stats
    net.eval()
    for seed in range(3):
        arch = sp.decode(random_actions(sp, random.Random(seed)))
        child = sp.build_child(arch, TaskInfo(vocab_size=V), final=False).eval()
        child.load_state_dict(sp.child_state_from_supernet(net, arch))
        a, b = net(x, net.init_hidden(B), arch=arch), child(x, child.init_hidden(B))
        assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)
