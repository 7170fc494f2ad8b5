"""The micro space: decisions, codec, supernet == child, final children, drop-path, gradient sparsity."""

import random

import pytest
import torch

from enas.errors import ArchError, ConfigError
from enas.spaces.base import TaskInfo
from enas.spaces.micro.arch import MICRO_OP_NAMES, PUBLISHED_MICRO_ARC, MicroArch, loose_ends
from enas.spaces.micro.cells import drop_path_keep_prob
from enas.spaces.micro.space import NORMAL_OP_BIAS, MicroSpace, MicroSpaceConfig

CIFAR = TaskInfo(in_channels=3, image_size=32, num_classes=10)
FMNIST = TaskInfo(in_channels=1, image_size=28, num_classes=10)
SMALL = TaskInfo(in_channels=3, image_size=12, num_classes=4)




def tiny(**overrides):
    return MicroSpace(MicroSpaceConfig(**{"num_layers": 3, "channels": 4, **overrides}))


def random_actions(space, rng):
    return [rng.randrange(d.size) for d in space.decisions() if d.kind != "anchor"]


def images(info, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, info.in_channels, info.image_size, info.image_size, generator=g)


def test_decisions_follow_the_authors_controller():
    space = MicroSpace()
    decisions = space.decisions()
    per_cell = 2 + 5 * 5
    assert len(decisions) == 2 * per_cell
    first = decisions[:2 + 5]
    assert [(d.kind, d.name) for d in first] == [
        ("anchor", "normal.input0"), ("anchor", "normal.input1"),
        ("pointer", "normal.node2.input1"), ("pointer", "normal.node2.input2"),
        ("op", "normal.node2.op1"), ("op", "normal.node2.op2"), ("anchor", "normal.node2")]
    assert all(d.zero_anchor and d.new_anchor and d.feed == "start" for d in first[:2])
    assert first[2].size == 2 and first[2].feed == "anchor"
    assert first[4].vocab == "micro_op" and first[4].size == 5 and first[4].fixed_bias == NORMAL_OP_BIAS
    assert first[6].new_anchor and not first[6].zero_anchor and first[6].feed == "start"
    assert [d.size for d in decisions if d.kind == "pointer"] == [2, 2, 3, 3, 4, 4, 5, 5, 6, 6] * 2
    reduce = decisions[per_cell:]
    assert all(d.group == 1 and d.name.startswith("reduce.") for d in reduce)
    assert all(d.group == 0 for d in decisions[:per_cell])
    assert all(d.fixed_bias is None for d in reduce if d.kind == "op")
    assert space.vocabularies() == {"micro_op": list(MICRO_OP_NAMES)}


def test_decode_encode_round_trips():
    rng = random.Random(0)
    for num_nodes in (1, 5):
        space = MicroSpace(MicroSpaceConfig(num_nodes=num_nodes))
        for _ in range(30):
            actions = random_actions(space, rng)
            arch = space.decode(actions)
            assert arch.num_nodes == num_nodes
            assert space.encode(arch) == actions
    published = MicroArch.from_fixed_arc(PUBLISHED_MICRO_ARC)
    actions = MicroSpace().encode(published)
    assert actions[:4] == [0, 0, 2, 0]  # node 2: inputs 0, 0; ops avg-pool, sep3x3
    assert MicroSpace().decode(actions) == published


def test_codec_errors():
    space = MicroSpace()
    with pytest.raises(ArchError, match="40 integer actions"):
        space.decode([0] * 39)
    with pytest.raises(ArchError, match="out of range"):
        space.decode([0, 0, 5, 0] + [0] * 36)
    with pytest.raises(ArchError, match="num_nodes=5"):
        space.encode(MicroArch.from_fixed_arc("0 0 1 0 0 0 1 0"))


@pytest.mark.parametrize("overrides, message", [
    ({"channels": 5}, "even"), ({"num_layers": 0}, "num_layers"), ({"num_nodes": 0}, "num_nodes"),
    ({"keep_prob": 0.0}, "keep_prob"), ({"drop_path_keep": 1.5}, "drop_path_keep"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        MicroSpaceConfig(**overrides)


def test_layout():
    cfg = MicroSpaceConfig()
    assert cfg.num_cells == 8 and cfg.reduction_positions == (2, 5)
    assert MicroSpaceConfig(num_layers=15).reduction_positions == (5, 11)
    net = MicroSpace(MicroSpaceConfig(channels=4)).build_supernet(CIFAR)
    assert [c.reduction for c in net.cells] == [False, False, True, False, False, True, False, False]
    assert [c.c for c in net.cells] == [4, 4, 8, 8, 8, 16, 16, 16]


@pytest.mark.parametrize("info", [CIFAR, FMNIST], ids=["32x32x3", "28x28x1"])
def test_supernet_equals_child_in_eval_mode(info):
    torch.manual_seed(0)
    rng = random.Random(1)
    space = tiny()
    supernet = space.build_supernet(info).eval()
    x = images(info)
    for _ in range(2):
        arch = space.decode(random_actions(space, rng))
        child = space.build_child(arch, info, final=False).eval()
        child.load_state_dict(space.child_state_from_supernet(supernet, arch))
        logits, aux = supernet(x, arch)
        assert aux is None
        torch.testing.assert_close(child(x)[0], logits, rtol=1e-5, atol=1e-5)


def test_supernet_equals_child_on_the_matrix_product_batch_norm(monkeypatch):
    """At 32 images of 32x32 the first cells' batch norms take `enas.kernels.batch_norm`'s path, in supernet and
    child."""
    import enas.kernels.batch_norm

    calls = []
    apply = enas.kernels.batch_norm._BatchNorm.apply
    monkeypatch.setattr(enas.kernels.batch_norm._BatchNorm, "apply", lambda *a: calls.append(1) or apply(*a))
    torch.manual_seed(0)
    space = tiny()
    supernet = space.build_supernet(CIFAR).eval()
    x = images(CIFAR, batch=32)
    arch = space.decode(random_actions(space, random.Random(2)))
    child = space.build_child(arch, CIFAR, final=False).eval()
    child.load_state_dict(space.child_state_from_supernet(supernet, arch))
    logits = supernet(x, arch)[0]
    used = len(calls)
    torch.testing.assert_close(child(x)[0], logits, rtol=1e-4, atol=1e-4)
    assert used > 0 and len(calls) > used


def test_supernet_bn_uses_batch_statistics_in_eval_mode():
    space = tiny(keep_prob=1.0)
    supernet = space.build_supernet(SMALL)
    arch = MicroArch.from_fixed_arc(PUBLISHED_MICRO_ARC)
    x = images(SMALL)
    train_out = supernet.train()(x, arch)[0]
    torch.testing.assert_close(supernet.eval()(x, arch)[0], train_out)
    assert not list(supernet.buffers())


@pytest.mark.parametrize("info", [CIFAR, FMNIST], ids=["32x32x3", "28x28x1"])
def test_final_children_train_with_aux_head(info):
    torch.manual_seed(0)
    space = tiny(channels=6, aux_head=True, drop_path_keep=0.6)
    archs = [MicroArch.from_fixed_arc(PUBLISHED_MICRO_ARC), space.decode(random_actions(space, random.Random(2)))]
    for arch in archs:
        child = space.build_child(arch, info, final=True).train()
        logits, aux = child(images(info, batch=2), None)
        assert logits.shape == aux.shape == (2, 10)
        (logits.logsumexp(1).mean() + 0.4 * aux.logsumexp(1).mean()).backward()
        grads = [p.grad for p in child.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert all(p.grad.abs().sum() > 0 for p in child.aux_head.parameters())  # the aux head is trained
        child.eval()
        logits, aux = child(images(info, batch=2))
        assert aux is None and torch.isfinite(logits).all()


def test_final_cell_output_is_the_concat_of_loose_ends():
    arch = MicroArch.from_fixed_arc(PUBLISHED_MICRO_ARC)
    child = tiny().build_child(arch, CIFAR, final=True)
    normal, reduce = child.cells[0], child.cells[1]
    assert normal.c_out == 5 * 4 and reduce.c_out == len(loose_ends(arch.reduce)) * 8


def test_drop_path_schedule():
    # p_l = 1 - (l + 1) / cells * (1 - keep), annealed linearly with training progress
    assert drop_path_keep_prob(7, 8, 0.6, 1.0) == pytest.approx(0.6)
    assert drop_path_keep_prob(0, 8, 0.6, 1.0) == pytest.approx(0.95)
    assert drop_path_keep_prob(3, 8, 0.6, 0.5) == pytest.approx(1 - 0.5 * 0.2)
    assert drop_path_keep_prob(7, 8, 0.6, 0.0) == 1.0
    assert drop_path_keep_prob(7, 8, 0.6, 2.0) == pytest.approx(0.6)
    assert drop_path_keep_prob(4, 8, 1.0, 1.0) == 1.0


def test_drop_path_is_applied_in_training_only():
    arch = MicroArch.from_fixed_arc(PUBLISHED_MICRO_ARC)
    x = images(SMALL, batch=4)
    child = tiny(keep_prob=1.0, drop_path_keep=0.5).build_child(arch, SMALL).train()
    torch.manual_seed(0)
    a = child(x)[0]
    torch.manual_seed(1)
    assert not torch.allclose(a, child(x)[0])
    child.drop_path_progress = 0.0  # start of training: nothing dropped
    torch.manual_seed(1)
    b = child(x)[0]
    torch.manual_seed(2)
    torch.testing.assert_close(child(x)[0], b)


def test_only_the_sampled_path_gets_gradients():
    torch.manual_seed(0)
    space = tiny()
    supernet = space.build_supernet(SMALL).train()
    arch = space.decode(random_actions(space, random.Random(3)))
    supernet(images(SMALL), arch)[0].square().sum().backward()
    for cell in supernet.cells:
        cell_arch = arch.reduce if cell.reduction else arch.normal
        for k, node in enumerate(cell.nodes):
            chosen = {(slot, op): j for slot, (j, op) in enumerate(zip(cell_arch[k].inputs, cell_arch[k].ops))}
            for slot, ops in enumerate(node):
                for name, module in ops.items():
                    j = chosen.get((slot, name))
                    if name == "identity":  # reduction cells: one factorized reduction per cell input
                        for i, reduce in enumerate(module.reduce):
                            assert all((p.grad is not None) == (i == j) for p in reduce.parameters())
                        continue
                    for p in module.parameters():  # stacked rows: only the sampled input's row
                        assert (p.grad is not None) == (j is not None)
                        if j is not None:
                            rows = p.grad.flatten(1).abs().sum(1)
                            assert rows[j] > 0 and (rows.nonzero().flatten() == j).all()
        loose = loose_ends(cell_arch)
        blocks = cell.out_weight.grad.abs().sum(dim=(0, 2))
        assert set(blocks.nonzero().flatten().tolist()) == set(loose)


def test_supernet_needs_an_arch():
    supernet = tiny().build_supernet(SMALL)
    with pytest.raises(TypeError, match="MicroArch"):
        supernet(images(SMALL))
    with pytest.raises(ArchError, match="nodes"):
        supernet(images(SMALL), MicroArch.from_fixed_arc("0 0 1 0 0 0 1 0"))
