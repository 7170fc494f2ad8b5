"""The micro op registry and the conv building blocks."""

import pytest
import torch

from enas.spaces.micro.arch import MICRO_OP_NAMES
from enas.spaces.ops import MICRO_OPS, FactorizedReduce, ReLUConvBN, channels_last, drop_path

C = 6


def test_registry_matches_the_arch_vocabulary():
    assert tuple(MICRO_OPS) == MICRO_OP_NAMES


@pytest.mark.parametrize("name", list(MICRO_OPS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
def test_child_op_shapes_and_gradients(name, stride, size):
    torch.manual_seed(0)
    op = MICRO_OPS[name].build(C, stride, True)
    x = torch.randn(3, C, size, size, requires_grad=True)
    y = op(x)
    out = -(-size // stride)  # ceil
    assert y.shape == (3, C, out, out)
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in op.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", list(MICRO_OPS))
@pytest.mark.parametrize("reduction", [False, True])
def test_shared_op_equals_child_op_for_every_input(name, reduction):
    torch.manual_seed(0)
    num_inputs = 4
    shared = MICRO_OPS[name].build_shared(num_inputs, C, reduction)
    with torch.no_grad():  # make the rows distinguishable
        for p in shared.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, C, 7, 7)
    outputs = []
    for j in range(num_inputs):
        stride = 2 if reduction and j < 2 else 1
        child = MICRO_OPS[name].build(C, stride, False)
        child.load_state_dict(shared.child_state(j, stride))
        y = shared(x, j, stride)
        torch.testing.assert_close(y, child(x))
        outputs.append(y)
    if name.startswith("sep"):  # different input ids use different weights
        assert not torch.allclose(outputs[2], outputs[3])


def test_shared_sep_conv_only_updates_the_sampled_row():
    shared = MICRO_OPS["sep5x5"].build_shared(3, C, False)
    shared(torch.randn(2, C, 5, 5), 1, 1).square().sum().backward()
    for p in shared.parameters():
        assert p.grad[1].abs().sum() > 0
        assert p.grad[0].abs().sum() == 0 and p.grad[2].abs().sum() == 0


@pytest.mark.parametrize("size", [8, 7, 1])
def test_factorized_reduce(size):
    fr = FactorizedReduce(4, 6, relu=True)
    x = torch.randn(2, 4, size, size, requires_grad=True)
    y = fr(x)
    assert y.shape == (2, 6, (size + 1) // 2, (size + 1) // 2)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="even"):
        FactorizedReduce(4, 5)


def test_batch_statistics_bn_has_no_running_stats():
    m = ReLUConvBN(4, 4, track_running_stats=False).eval()
    assert not [name for name, _ in m.named_buffers()]
    x = torch.randn(8, 4, 3, 3)
    torch.testing.assert_close(m(x), m.train()(x))  # batch statistics in eval mode too


def test_drop_path_statistics():
    torch.manual_seed(0)
    x = torch.ones(20000, 2, 3)
    before = x.clone()
    y = drop_path(x, 0.7, training=True)
    assert torch.equal(x, before)  # input unchanged
    kept = y[:, 0, 0] > 0
    assert abs(kept.float().mean().item() - 0.7) < 0.02
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))  # rescaled
    assert (y[~kept] == 0).all()  # whole examples dropped
    assert abs(y.mean().item() - 1.0) < 0.03  # expectation preserved


def test_drop_path_is_identity_in_eval_or_at_keep_one():
    x = torch.randn(4, 3)
    assert drop_path(x, 0.5, training=False) is x
    assert drop_path(x, 1.0, training=True) is x


@pytest.mark.parametrize("space_name", ["macro", "micro"])
def test_grey_images_are_computed_channels_last(space_name):
    """A batch with one channel cannot carry the channels-last layout in (both layouts describe it), so the
    networks put their stem's output into it: depthwise convs and pools run several times faster so on the CPU."""
    from enas.search.controller import UniformSampler
    from enas.spaces.base import TaskInfo
    from enas.spaces.macro.space import MacroSpace, MacroSpaceConfig
    from enas.spaces.micro.space import MicroSpace, MicroSpaceConfig

    space = (MacroSpace(MacroSpaceConfig(num_layers=3, channels=4)) if space_name == "macro"
             else MicroSpace(MicroSpaceConfig(num_layers=1, channels=4, num_nodes=2)))
    info = TaskInfo(in_channels=1, image_size=8, num_classes=3)
    arch = UniformSampler(space).sample().arch
    layouts = []
    for net in (space.build_supernet(info), space.build_child(arch, info, final=True)):
        first = net.cells[0] if space_name == "micro" else net.layers[0]
        seen = []
        handle = first.register_forward_pre_hook(lambda m, args, seen=seen: seen.append(args[0]))
        net(torch.randn(2, 1, 8, 8), arch)
        handle.remove()
        layouts.append(seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous())
    assert layouts == [True, True]
    assert channels_last(torch.randn(2, 3, 4, 4)).is_contiguous(memory_format=torch.channels_last)
