"""The macro space: decisions and codec, supernet vs search-mode child, the final child, the op registry."""

from __future__ import annotations

import random

import pytest
import torch

from enas.errors import ArchError, ConfigError
from enas.spaces.base import TaskInfo
from enas.spaces.macro.arch import MACRO_OPS, MacroArch, MacroLayer
from enas.spaces.macro.layers import FINAL_OPS, SEARCH_OPS
from enas.spaces.macro.space import MacroFinalNet, MacroSearchNet, MacroSpace, MacroSpaceConfig, reduction_keep
from enas.spaces.ops import FactorizedReduce

CIFAR = TaskInfo(in_channels=3, image_size=32, num_classes=10)
FASHION = TaskInfo(in_channels=1, image_size=28, num_classes=10)
PUBLISHED = (
    "0 3 0 0 1 0 2 0 0 1 2 0 0 0 0 3 1 1 0 1 0 2 0 0 0 0 0 1 2 0 1 1 0 1 1 1 1 0 1 1 1 0 1 0 1 0 0 0 0 0 0 0 0 0 0 "
    "2 0 0 0 0 0 1 0 0 0 0 0 1 0 0 1 1 0 0 0 0 1 1 2 0 1 0 0 0 0 0 1 0 1 1 0 1 0 0 1 0 0 0 1 1 1 0 1 0 1 0 1 1 0 1 0 "
    "1 0 0 0 0 0 1 0 0 2 0 0 1 0 0 0 0 0 0 0 1 0 1 0 1 2 0 1 0 0 0 1 0 0 1 1 1 1 0 0 1 0 2 0 0 0 0 1 0 1 0 1 0 0 1 0 "
    "1 0 0 1 3 0 1 1 0 1 0 0 0 0 0 1 0 1 0 1 0 0 0 3 0 1 1 0 0 0 0 0 0 0 0 0 1 1 0 0 0 0 1 0 1 0 0 1 0 1 1 0 0 0 1 0 "
    "0 0 0 0 1 1 0 0 3 0 1 0 1 1 0 0 1 0 1 1 0 1 1 0 1 0 0 1 0 0 0 1 0 1 0 1 0 0 0 0 0 0 0 0 1 0 1 0 0 1 0 0 0 0 1 1 "
    "0 0 0 1 1 1 0 1 0 0 0 1 0 1 0 0 1 1 0 0 0"
)




def space(num_layers=4, channels=4, keep_prob=1.0, ops=MACRO_OPS) -> MacroSpace:
    return MacroSpace(MacroSpaceConfig(num_layers=num_layers, channels=channels, keep_prob=keep_prob, ops=ops))


def random_actions(sp: MacroSpace, rng: random.Random) -> list:
    actions: list = []
    for d in sp.decisions():
        actions.append(rng.randrange(d.size) if d.kind == "op" else [rng.randint(0, 1) for _ in range(d.size)])
    return actions


def layer_outputs(model: torch.nn.Module, images: torch.Tensor, arch: MacroArch | None = None) -> list[torch.Tensor]:
    """Outputs of every layer module of ``model`` in call order."""
    outs: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outs.append(o)) for layer in model.layers]
    try:
        model(images, arch=arch)
    finally:
        for h in hooks:
            h.remove()
    return outs


# ---- decisions and codec --------------------------------------------------------------------------------------


def test_decisions_follow_the_controller_order():
    sp = space(num_layers=3, ops=("conv3x3", "maxpool3x3"))
    ds = sp.decisions()
    assert [(d.kind, d.name, d.size) for d in ds] == [
        ("op", "layer0.op", 2), ("skips", "layer0.skips", 0), ("op", "layer1.op", 2), ("skips", "layer1.skips", 1),
        ("op", "layer2.op", 2), ("skips", "layer2.skips", 2)]
    assert all(d.vocab == "macro_op" and not d.new_anchor for d in ds[::2])
    assert all(d.new_anchor for d in ds[1::2])
    assert [d.feed for d in ds[1::2]] == ["start", "skip_mean", "skip_mean"]
    assert sp.vocabularies() == {"macro_op": ["conv3x3", "maxpool3x3"]}


@pytest.mark.parametrize("ops", [MACRO_OPS, ("maxpool3x3", "sep3x3", "conv5x5")])
def test_random_decode_encode_round_trip(ops):
    sp, rng = space(num_layers=6, ops=ops), random.Random(0)
    for _ in range(30):
        actions = random_actions(sp, rng)
        arch = sp.decode(actions)
        assert isinstance(arch, MacroArch) and arch.num_layers == 6
        assert all(layer.op in ops for layer in arch.layers)
        assert sp.encode(arch) == actions
        assert MacroArch.from_fixed_arc(arch.to_fixed_arc()) == arch
        sp.check_arch(arch)


def test_decode_and_encode_errors():
    sp = space(num_layers=2, ops=("conv3x3", "sep3x3"))
    with pytest.raises(ArchError, match="takes 4 actions"):
        sp.decode([0, []])
    with pytest.raises(ArchError, match="index in 0..1"):
        sp.decode([2, [], 0, [1]])
    with pytest.raises(ArchError, match="must have exactly 1 skip bits"):
        sp.decode([0, [], 0, []])
    with pytest.raises(ArchError, match="has 3 layers but this macro space has 2"):
        sp.encode(MacroArch.from_fixed_arc("0 0 1 0 1 1"))
    with pytest.raises(ArchError, match="'maxpool3x3' is not in this space's ops"):
        sp.encode(MacroArch.from_fixed_arc("0 5 1"))


@pytest.mark.parametrize("kwargs, message", [
    ({"num_layers": 0}, "num_layers"),
    ({"channels": 5}, "even"),
    ({"keep_prob": 0.0}, "keep_prob"),
    ({"ops": ("conv3x3", "conv3x3")}, "distinct"),
    ({"ops": ("conv7x7",)}, "distinct"),
    ({"ops": ()}, "distinct"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MacroSpaceConfig(**kwargs)


# ---- supernet and search-mode child ---------------------------------------------------------------------------


@pytest.mark.parametrize("info", [CIFAR, FASHION], ids=["32x32x3", "28x28x1"])
def test_supernet_equals_search_child(info):
    torch.manual_seed(0)
    sp, rng = space(num_layers=6, channels=4, keep_prob=1.0), random.Random(1)
    supernet = sp.build_supernet(info)
    x = torch.randn(3, info.in_channels, info.image_size, info.image_size)
    with torch.no_grad():  # move the BN running statistics away from their initial values
        for _ in range(4):
            supernet(x, arch=sp.decode(random_actions(sp, rng)))
    for _ in range(5):
        arch = sp.decode(random_actions(sp, rng))
        child = sp.build_child(arch, info, final=False)
        assert isinstance(child, MacroSearchNet)
        child.load_state_dict(sp.child_state_from_supernet(supernet, arch))  # strict: same keys exactly
        assert sum(p.numel() for p in child.parameters()) < sum(p.numel() for p in supernet.parameters())
        for train in (False, True):
            supernet.train(train)
            child.train(train)
            with torch.no_grad():
                expected, aux = supernet(x, arch=arch)
                got, _ = child(x)
            assert aux is None and expected.shape == (3, 10)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_supernet_trains_only_the_sampled_path():
    torch.manual_seed(0)
    sp = space(num_layers=6, channels=4)
    supernet = sp.build_supernet(CIFAR)
    # Reductions follow layers 1 and 3. The stem is read by layer 2 only (kept at the first reduction, dropped at
    # the second); out_0 only by layer 1 (dropped at both); out_1 by layers 2 and 4 (kept at both).
    arch = MacroArch.from_fixed_arc("0 1 0 2 1 0 3 0 0 0 4 0 0 1 0 5 0 0 0 0 0")
    assert reduction_keep(arch) == (frozenset({0, 2}), frozenset({2, 4}))
    calls: list[str] = []
    for name, module in supernet.named_modules():
        if isinstance(module, FactorizedReduce):
            module.register_forward_hook(lambda m, i, o, name=name: calls.append(name))
    logits, _ = supernet(torch.randn(2, 3, 32, 32), arch=arch)
    logits.sum().backward()
    assert sorted(calls) == ["reductions.0.0", "reductions.0.2", "reductions.1.2", "reductions.1.4"]
    used = sp.child_state_from_supernet(supernet, arch)
    for name, p in supernet.named_parameters():
        assert (p.grad is not None) == (name in used), name
    # every layer ran exactly its sampled op
    for k, layer in enumerate(arch.layers):
        for op, branch in supernet.layers[k].branches.items():
            assert all((p.grad is not None) == (op == layer.op) for p in branch.parameters())


def test_reduction_positions_and_constant_search_width():
    sp = space(num_layers=6, channels=4)
    arch = sp.decode(random_actions(sp, random.Random(3)))
    for info, sizes in ((CIFAR, [32, 32, 16, 16, 8, 8]), (FASHION, [28, 28, 14, 14, 7, 7])):
        for model in (sp.build_supernet(info), sp.build_child(arch, info, final=False)):
            outs = layer_outputs(model, torch.randn(2, info.in_channels, info.image_size, info.image_size), arch)
            assert [o.shape[-1] for o in outs] == sizes
            assert {o.shape[1] for o in outs} == {4}


def test_supernet_rejects_archs_that_do_not_fit():
    sp = space(num_layers=3, ops=("conv3x3", "sep3x3"))
    supernet = sp.build_supernet(CIFAR)
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ArchError, match="has 2 layers but the supernet has 3"):
        supernet(x, arch=MacroArch.from_fixed_arc("0 0 1"))
    with pytest.raises(ArchError, match="not among this space's ops"):
        supernet(x, arch=MacroArch.from_fixed_arc("0 4 1 0 0 0"))
    with pytest.raises(ArchError, match="has 2 layers but this macro space has 3"):
        sp.build_child(MacroArch.from_fixed_arc("0 0 1"), CIFAR, final=False)


# ---- final child ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("info", [CIFAR, FASHION], ids=["32x32x3", "28x28x1"])
def test_final_child_forward_backward(info):
    torch.manual_seed(0)
    sp, rng = space(num_layers=5, channels=4, keep_prob=0.5), random.Random(2)
    archs = [sp.decode(random_actions(sp, rng)) for _ in range(2)]
    archs.append(MacroArch(tuple(MacroLayer(op, (1,) * k) for k, op in enumerate(MACRO_OPS[:5]))))  # all ops, skips
    archs.append(MacroArch.from_fixed_arc(PUBLISHED))  # 24 layers: depth comes from the arch
    for arch in archs:
        model = sp.build_child(arch, info, final=True)
        assert isinstance(model, MacroFinalNet) and len(model.layers) == arch.num_layers
        model.train()
        x = torch.randn(2, info.in_channels, info.image_size, info.image_size)
        logits, aux = model(x, arch=None)
        assert logits.shape == (2, 10) and aux is None and torch.isfinite(logits).all()
        logits.sum().backward()
        assert all(p.grad is not None for p in model.parameters())


def test_final_child_doubles_channels_at_each_reduction():
    sp = space(num_layers=6, channels=4)
    arch = MacroArch(tuple(MacroLayer(op, (1,) * k) for k, op in enumerate(MACRO_OPS)))
    model = sp.build_child(arch, CIFAR, final=True).eval()
    outs = layer_outputs(model, torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outs] == [(4, 32, 32), (4, 32, 32), (8, 16, 16), (8, 16, 16), (16, 8, 8),
                                                  (16, 8, 8)]
    assert model.fc.in_features == 16 and model.fc.bias is None
    # layer 5 concatenates its 5 skips (stem, out_0..out_3, all reduced to 16 channels) with its op output
    assert model.layers[5].merge.in_channels == 6 * 16
    # separable ops are separable in the final child (the authors' fixed-arc code built plain convs)
    sep = model.layers[3].op.op
    assert sep[0].groups == sep[0].in_channels == 8 and sep[1].kernel_size == (1, 1)


def test_final_child_skips_unused_reductions():
    sp = space(num_layers=6, channels=4)
    arch = MacroArch.from_fixed_arc("0 1 0 2 1 0 3 0 0 0 4 0 0 1 0 5 0 0 0 0 0")
    model = sp.build_child(arch, CIFAR, final=True)
    assert sorted(model.reductions[0].keys()) == ["0", "2"] and sorted(model.reductions[1].keys()) == ["2", "4"]


# ---- op registry ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, registry", [("search", SEARCH_OPS), ("final", FINAL_OPS)])
@pytest.mark.parametrize("op", MACRO_OPS)
def test_op_registry(mode, registry, op):
    torch.manual_seed(0)
    block = registry[op](3, 6)
    x = torch.randn(2, 3, 7, 7, requires_grad=True)  # odd size: every op must keep it (stride 1, same padding)
    y = block(x)
    assert y.shape == (2, 6, 7, 7)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters()), op
