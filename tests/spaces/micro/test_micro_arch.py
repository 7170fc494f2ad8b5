"""MicroArch: validation, JSON, the authors' integer notation, the published cells."""

import random

import pytest

from enas.arch import arch_from_json, load_arch, parse_fixed_arc, save_arch
from enas.errors import ArchError
from enas.spaces.micro.arch import MICRO_OP_NAMES, PUBLISHED_MICRO_ARC, MicroArch, MicroNode, loose_ends

SHORT = {"sep3x3": "sep3", "sep5x5": "sep5", "avgpool3x3": "avg", "maxpool3x3": "max", "identity": "id"}


def spec_text(cell):
    """A cell in the notation of the spec's text, e.g. 'avg(0)+sep3(0)' per node."""
    return ["+".join(f"{SHORT[op]}({i})" for i, op in zip(n.inputs, n.ops)) for n in cell]


def random_arch(rng, num_nodes=5):
    def cell():
        return tuple(MicroNode((rng.randrange(k + 2), rng.randrange(k + 2)),
                               (rng.choice(MICRO_OP_NAMES), rng.choice(MICRO_OP_NAMES))) for k in range(num_nodes))
    return MicroArch(normal=cell(), reduce=cell())


def test_published_arc_decodes_as_the_spec_describes():
    arch = parse_fixed_arc(PUBLISHED_MICRO_ARC, "micro")
    assert isinstance(arch, MicroArch) and arch.num_nodes == 5
    assert spec_text(arch.normal) == ["avg(0)+sep3(0)", "id(0)+sep5(0)", "id(0)+sep5(1)", "sep3(1)+sep5(0)",
                                      "avg(0)+sep5(1)"]
    assert spec_text(arch.reduce) == ["sep3(1)+sep3(1)", "max(0)+avg(0)", "sep5(1)+sep5(3)", "sep3(1)+id(0)",
                                      "max(0)+sep5(1)"]
    assert loose_ends(arch.normal) == (2, 3, 4, 5, 6)
    assert loose_ends(arch.reduce) == (2, 4, 5, 6)
    assert arch.to_fixed_arc() == PUBLISHED_MICRO_ARC


def test_json_and_file_round_trip(tmp_path):
    arch = MicroArch.from_fixed_arc(PUBLISHED_MICRO_ARC)
    obj = arch.to_json()
    assert obj["space"] == "micro"
    assert obj["normal"][0] == {"inputs": [0, 0], "ops": ["avgpool3x3", "sep3x3"]}
    assert arch_from_json(obj) == arch
    save_arch(arch, tmp_path / "arch.json")
    assert load_arch(tmp_path / "arch.json") == arch


@pytest.mark.parametrize("num_nodes", [1, 3, 5, 7])
def test_random_round_trips(num_nodes):
    rng = random.Random(num_nodes)
    for _ in range(20):
        arch = random_arch(rng, num_nodes)
        text = arch.to_fixed_arc()
        assert len(text.split()) == 8 * num_nodes
        assert MicroArch.from_fixed_arc(text) == arch
        assert MicroArch.from_dict(arch.to_dict()) == arch


def test_loose_ends_include_unused_inputs():
    cell = (MicroNode((1, 1), ("sep3x3", "identity")), MicroNode((2, 2), ("maxpool3x3", "sep5x5")))
    assert loose_ends(cell) == (0, 3)


@pytest.mark.parametrize("text, message", [
    ("", "multiple of 8"),
    ("0 0 1 0 0 0 1", "multiple of 8"),
    ("0 5 1 0 0 0 1 0", "op id 5"),
    ("2 0 1 0 0 0 1 0", "indices 0..1"),
    ("0 0 1 0 0 0 x 0", "integers"),
    ("0 0 1 0 0 0 -1 0", "negative"),
])
def test_bad_fixed_arcs(text, message):
    with pytest.raises(ArchError, match=message):
        MicroArch.from_fixed_arc(text)


def body(normal=None, reduce=None):
    node = {"inputs": [0, 1], "ops": ["sep3x3", "identity"]}
    return {"normal": normal if normal is not None else [node], "reduce": reduce if reduce is not None else [node]}


@pytest.mark.parametrize("obj, message", [
    ({"normal": []}, "exactly the fields"),
    (body(normal=[]), "no nodes"),
    (body(normal=[{"inputs": [0, 1], "ops": ["conv3x3", "identity"]}]), "'conv3x3'"),
    (body(reduce=[{"inputs": [0, 2], "ops": ["sep3x3", "identity"]}]), r"reduce cell node 2 input 2 is 2"),
    (body(normal=[{"inputs": [0], "ops": ["sep3x3", "identity"]}]), "two integers"),
    (body(normal=[{"inputs": [0, 1], "ops": "sep3x3"}]), "two op names"),
    (body(normal=[{"inputs": [0, 1]}]), "exactly the keys"),
    (body(normal="x"), "list of nodes"),
    (body(normal=[{"inputs": [0, 1], "ops": ["sep3x3", "identity"]}] * 2), "same number of nodes"),
])
def test_bad_bodies(obj, message):
    with pytest.raises(ArchError, match=message):
        MicroArch.from_dict(obj)


def test_error_messages_are_one_line():
    with pytest.raises(ArchError) as info:
        MicroArch.from_dict(body(normal=[{"inputs": [0, 5], "ops": ["sep3x3", "identity"]}]))
    assert "\n" not in str(info.value)


def test_describe():
    text = MicroArch.from_fixed_arc(PUBLISHED_MICRO_ARC).describe()
    assert "n2 = avgpool3x3(0) + sep3x3(0)" in text
    assert "output = concat(n2, n4, n5, n6)" in text
    assert text.index("normal cell") < text.index("reduction cell")
