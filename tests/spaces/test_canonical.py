"""Arch.canonical: hand-built archs that are the same network share a key, different networks do not."""

import itertools
import random

import pytest

from enas.spaces.macro.arch import MacroArch
from enas.spaces.micro.arch import PUBLISHED_MICRO_ARC, MicroArch, MicroNode, loose_ends
from enas.spaces.rnn.arch import RnnArch, RnnNode


def micro(normal, reduce=None):
    def cell(nodes):
        return tuple(MicroNode(inputs=(a, b), ops=(oa, ob)) for (a, oa), (b, ob) in nodes)

    return MicroArch(normal=cell(normal), reduce=cell(reduce if reduce is not None else normal))


def test_micro_operands_of_an_add_in_either_order():
    a = micro([((0, "sep3x3"), (1, "identity")), ((2, "avgpool3x3"), (0, "sep5x5"))])
    b = micro([((1, "identity"), (0, "sep3x3")), ((0, "sep5x5"), (2, "avgpool3x3"))])
    assert a != b and a.to_fixed_arc() != b.to_fixed_arc()  # the notation keeps them apart
    assert a.canonical() == b.canonical() and hash(a.canonical()) == hash(b.canonical())


def test_micro_nodes_numbered_in_another_valid_order():
    # n2 = sep3(0) + sep3(1), n3 = max(1) + id(1), n4 = id(2) + sep5(3); the same with n2 and n3 swapped
    a = micro([((0, "sep3x3"), (1, "sep3x3")), ((1, "maxpool3x3"), (1, "identity")), ((2, "identity"), (3, "sep5x5"))])
    b = micro([((1, "maxpool3x3"), (1, "identity")), ((0, "sep3x3"), (1, "sep3x3")), ((3, "identity"), (2, "sep5x5"))])
    assert a.canonical() == b.canonical()
    assert loose_ends(a.normal) == loose_ends(b.normal) == (4,)


def test_micro_different_networks_stay_apart():
    base = [((0, "sep3x3"), (1, "sep3x3")), ((1, "maxpool3x3"), (1, "identity")), ((2, "identity"), (3, "sep5x5"))]
    other_op = [((0, "sep3x3"), (1, "sep3x3")), ((1, "avgpool3x3"), (1, "identity")), ((2, "identity"), (3, "sep5x5"))]
    # the same ops, but node 4 reads node 2 with sep5 and node 3 with identity: another network
    rewired = [((0, "sep3x3"), (1, "sep3x3")), ((1, "maxpool3x3"), (1, "identity")), ((2, "sep5x5"), (3, "identity"))]
    # node 4 reads node 2 twice: node 3 becomes a loose end
    loose = [((0, "sep3x3"), (1, "sep3x3")), ((1, "maxpool3x3"), (1, "identity")), ((2, "identity"), (2, "sep5x5"))]
    keys = {micro(c).canonical() for c in (base, other_op, rewired, loose)}
    assert len(keys) == 4
    # the two cells are not interchangeable: normal and reduce keep their places
    assert micro(base, other_op).canonical() != micro(other_op, base).canonical()


def test_micro_every_relabelling_of_a_random_cell_has_its_key():
    rng = random.Random(0)
    ops = ["sep3x3", "sep5x5", "avgpool3x3", "maxpool3x3", "identity"]
    for _ in range(20):
        nodes = [((rng.randrange(2 + k), rng.choice(ops)), (rng.randrange(2 + k), rng.choice(ops))) for k in range(4)]
        arch = micro(nodes)
        for perm in itertools.permutations(range(4)):
            pos = {old: new for new, old in enumerate(perm)}
            where = {i: i for i in range(2)} | {old + 2: pos[old] + 2 for old in range(4)}
            if any(where[i] >= where[k + 2] for k, node in enumerate(nodes) for i, _ in node):
                continue  # not an order that computes every node after its inputs
            moved = [None] * 4
            for old, node in enumerate(nodes):
                moved[pos[old]] = tuple(reversed([(where[i], op) for i, op in node]))
            assert micro(moved).canonical() == arch.canonical()


def test_micro_published_cell_has_a_key():
    arch = MicroArch.from_fixed_arc(PUBLISHED_MICRO_ARC)
    assert arch.canonical() == MicroArch.from_fixed_arc(arch.to_fixed_arc()).canonical()


def rnn(*parents_acts, output="loose_ends"):
    nodes = [RnnNode(None, parents_acts[0])] + [RnnNode(p, a) for p, a in parents_acts[1:]]
    return RnnArch(tuple(nodes), output)


def test_rnn_isomorphic_cells_share_a_key():
    # node 0 tanh; two readers of node 0 (relu, sigmoid), a reader of the relu node: in either numbering
    a = rnn("tanh", (0, "relu"), (0, "sigmoid"), (1, "identity"))
    b = rnn("tanh", (0, "sigmoid"), (0, "relu"), (2, "identity"))
    assert a != b and a.canonical() == b.canonical()
    c = rnn("tanh", (0, "relu"), (0, "sigmoid"), (2, "identity"))  # the identity node reads the sigmoid one
    assert c.canonical() != a.canonical()


def test_rnn_output_mode_and_activations_matter():
    a = rnn("tanh", (0, "relu"), (1, "relu"))
    assert a.canonical() != rnn("tanh", (0, "relu"), (1, "relu"), output="mean").canonical()
    assert a.canonical() != rnn("tanh", (0, "relu"), (0, "relu")).canonical()  # a chain is not a fork
    assert a.canonical() != rnn("relu", (0, "relu"), (1, "relu")).canonical()


@pytest.mark.parametrize("fixed", ["0 1 1 0 0 1", "5 0 1 4 1 0"])
def test_macro_archs_have_no_equivalents(fixed):
    arch = MacroArch.from_fixed_arc(fixed)
    assert arch.canonical() == arch.to_fixed_arc()
