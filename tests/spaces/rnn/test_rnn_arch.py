"""RnnArch: validation, JSON, the authors' integer notations and the published cells."""

import json

import pytest

from enas.arch import arch_class, arch_from_json, load_arch, parse_fixed_arc, save_arch
from enas.errors import ArchError
from enas.spaces.rnn.arch import RnnArch, RnnNode

PTB_CELL = "0 0 0 1 1 2 1 2 0 2 0 5 1 1 0 6 1 8 1 8 1 8 1"
CORRECTED_CELL = "0 2 1 0 2 1 2 2 4 0 5 0 3 2 6 2"


def cell(*nodes, output="loose_ends"):
    return RnnArch(tuple(RnnNode(i, a) for i, a in nodes), output)


def test_published_ptb_cell_decodes_as_the_spec_says():
    arch = RnnArch.from_fixed_arc(PTB_CELL)
    expected = [(None, "tanh"), (0, "tanh"), (1, "relu"), (2, "relu"), (2, "tanh"), (2, "tanh"), (5, "relu"),
                (1, "tanh"), (6, "relu"), (8, "relu"), (8, "relu"), (8, "relu")]
    assert [(n.input, n.act) for n in arch.nodes] == expected
    assert arch.output == "loose_ends"
    assert arch.loose_ends() == (3, 4, 7, 9, 10, 11)
    assert arch.output_nodes() == (3, 4, 7, 9, 10, 11)
    assert arch.to_fixed_arc() == PTB_CELL


def test_corrected_cell_decodes_with_its_own_activation_order():
    arch = RnnArch.from_fixed_arc(CORRECTED_CELL)
    assert len(arch.nodes) == 9 and arch.output == "mean"
    assert arch.nodes[0] == RnnNode(None, "tanh")
    # corrected order: 0 tanh, 1 relu, 2 sigmoid, 3 identity
    assert arch.nodes[1] == RnnNode(0, "sigmoid")
    assert arch.nodes[3] == RnnNode(2, "relu")
    assert arch.nodes[8] == RnnNode(6, "sigmoid")
    assert arch.output_nodes() == tuple(range(1, 9))
    assert arch.to_fixed_arc() == CORRECTED_CELL


def test_activation_orders_differ_between_notations():
    assert RnnArch.from_fixed_arc("2 0 2").nodes[1].act == "identity"  # odd: first code
    assert RnnArch.from_fixed_arc("0 2").nodes[1].act == "sigmoid"  # even: corrected code
    assert RnnArch.from_fixed_arc("3 0 3").to_fixed_arc() == "3 0 3"


@pytest.mark.parametrize("text", [PTB_CELL, CORRECTED_CELL])
def test_json_round_trip(text, tmp_path):
    arch = RnnArch.from_fixed_arc(text)
    obj = json.loads(json.dumps(arch.to_json()))
    assert obj["space"] == "rnn"
    assert obj["nodes"][0] == {"act": "tanh"} and "input" in obj["nodes"][1]
    assert arch_from_json(obj) == arch
    save_arch(arch, tmp_path / "a.json")
    assert load_arch(tmp_path / "a.json") == arch
    assert parse_fixed_arc(text, "rnn") == arch
    assert arch_class("rnn") is RnnArch


def test_loose_ends_and_mean():
    arch = cell((None, "relu"), (0, "tanh"), (0, "sigmoid"), (1, "identity"))
    assert arch.loose_ends() == (2, 3)
    assert cell((None, "tanh")).loose_ends() == (0,)
    mean = cell((None, "tanh"), (0, "tanh"), (1, "relu"), output="mean")
    assert mean.output_nodes() == (1, 2)


def test_describe_names_every_node():
    text = RnnArch.from_fixed_arc(PTB_CELL).describe()
    assert "12 nodes" in text and "{3, 4, 7, 9, 10, 11}" in text
    assert "node 0: tanh(x_t, h_{t-1})" in text and "node 11: relu(node 8)" in text


@pytest.mark.parametrize(
    "nodes, output, message",
    [
        ((), "loose_ends", "at least one node"),
        (((None, "gelu"),), "loose_ends", "tanh, relu, identity, sigmoid"),
        (((None, "tanh"), (1, "tanh")), "loose_ends", "earlier node (0..0)"),
        (((None, "tanh"), (None, "tanh")), "loose_ends", "earlier node"),
        (((0, "tanh"),), "loose_ends", "node 0"),
        (((None, "tanh"), (0, "tanh")), "max", "loose_ends, mean"),
        (((None, "tanh"),), "mean", "at least two nodes"),
    ],
)
def test_validation_messages(nodes, output, message):
    with pytest.raises(ArchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cell(*nodes, output=output)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"nodes": "x"}, "needs 'nodes'"),
        ({"nodes": [{"act": "tanh"}], "extra": 1}, "unknown field"),
        ({"nodes": [{"act": "tanh"}, {"act": "relu"}]}, "node 1 has no 'input'"),
        ({"nodes": [{"act": "tanh"}, {"input": 0, "act": "relu", "op": 1}]}, "unknown field"),
        ({"nodes": [{"input": 0}]}, "'act'"),
        ({"nodes": [{"act": "tanh"}, {"input": "0", "act": "relu"}]}, "earlier node"),
    ],
)
def test_from_dict_errors(body, message):
    with pytest.raises(ArchError, match=message):
        RnnArch.from_dict(body)


def test_from_dict_defaults_to_loose_ends():
    assert RnnArch.from_dict({"nodes": [{"act": "relu"}]}).output == "loose_ends"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("0 1 0", "not earlier"),
        ("4", "valid codes are 0 tanh"),
        ("0 0 7", "activation code 7"),
        ("0 a", "integers"),
    ],
)
def test_fixed_arc_errors(text, message):
    with pytest.raises(ArchError, match=message):
        RnnArch.from_fixed_arc(text)


def test_mean_output_needs_tanh_node0_for_integer_form():
    arch = cell((None, "relu"), (0, "tanh"), output="mean")
    with pytest.raises(ArchError, match="fixes node 0 to tanh"):
        arch.to_fixed_arc()
    assert cell((None, "relu"), (0, "tanh")).to_fixed_arc() == "1 0 0"
