"""MacroArch: validation, JSON, the authors' integer notation, the published 24-layer arc."""

from __future__ import annotations

import json
import random

import pytest

from enas.arch import arch_class, arch_from_json, load_arch, parse_fixed_arc, save_arch
from enas.errors import ArchError
from enas.spaces.macro.arch import MACRO_OPS, MacroArch, MacroLayer, reduction_layers, tensor_name

# The released final macro arc (authors' final-training script), one line per layer.
PUBLISHED_MACRO_ARC = """
0
3 0
0 1 0
2 0 0 1
2 0 0 0 0
3 1 1 0 1 0
2 0 0 0 0 0 1
2 0 1 1 0 1 1 1
1 0 1 1 1 0 1 0 1
0 0 0 0 0 0 0 0 0 0
2 0 0 0 0 0 1 0 0 0 0
0 1 0 0 1 1 0 0 0 0 1 1
2 0 1 0 0 0 0 0 1 0 1 1 0
1 0 0 1 0 0 0 1 1 1 0 1 0 1
0 1 1 0 1 0 1 0 0 0 0 0 1 0 0
2 0 0 1 0 0 0 0 0 0 0 1 0 1 0 1
2 0 1 0 0 0 1 0 0 1 1 1 1 0 0 1 0
2 0 0 0 0 1 0 1 0 1 0 0 1 0 1 0 0 1
3 0 1 1 0 1 0 0 0 0 0 1 0 1 0 1 0 0 0
3 0 1 1 0 0 0 0 0 0 0 0 0 1 1 0 0 0 0 1
0 1 0 0 1 0 1 1 0 0 0 1 0 0 0 0 0 1 1 0 0
3 0 1 0 1 1 0 0 1 0 1 1 0 1 1 0 1 0 0 1 0 0
0 1 0 1 0 1 0 0 0 0 0 0 0 0 1 0 1 0 0 1 0 0 0
0 1 1 0 0 0 1 1 1 0 1 0 0 0 1 0 1 0 0 1 1 0 0 0
"""
PUBLISHED_OPS = [0, 3, 0, 2, 2, 3, 2, 2, 1, 0, 2, 0, 2, 1, 0, 2, 2, 2, 3, 3, 0, 3, 0, 0]


def random_arch(num_layers: int, rng: random.Random) -> MacroArch:
    return MacroArch(tuple(MacroLayer(rng.choice(MACRO_OPS), tuple(rng.randint(0, 1) for _ in range(k)))
                           for k in range(num_layers)))


def test_published_arc_loads_and_round_trips():
    arch = MacroArch.from_fixed_arc(PUBLISHED_MACRO_ARC)
    assert arch.num_layers == 24
    assert [MACRO_OPS.index(layer.op) for layer in arch.layers] == PUBLISHED_OPS
    # layer 5 is "3 1 1 0 1 0": sep5x5 with skips from the stem, layer0 and layer2
    assert arch.layers[5] == MacroLayer("sep5x5", (1, 1, 0, 1, 0))
    assert arch.layers[5].skip_sources == (0, 1, 3)
    assert arch.to_fixed_arc() == " ".join(PUBLISHED_MACRO_ARC.split())
    assert MacroArch.from_fixed_arc(arch.to_fixed_arc()) == arch
    assert parse_fixed_arc(PUBLISHED_MACRO_ARC, "macro") == arch
    assert arch_from_json(json.loads(json.dumps(arch.to_json()))) == arch


def test_registered_and_json_shape(tmp_path):
    assert arch_class("macro") is MacroArch
    arch = MacroArch((MacroLayer("conv3x3"), MacroLayer("sep5x5", (1,)), MacroLayer("maxpool3x3", (0, 1))))
    assert arch.to_json() == {"format": "enas-arch", "version": 1, "space": "macro", "layers": [
        {"op": "conv3x3", "skips": []}, {"op": "sep5x5", "skips": [1]}, {"op": "maxpool3x3", "skips": [0, 1]}]}
    assert arch.to_fixed_arc() == "0 3 1 5 0 1"
    save_arch(arch, tmp_path / "a.json")
    assert load_arch(tmp_path / "a.json") == arch
    assert hash(arch) == hash(MacroArch.from_fixed_arc("0 3 1 5 0 1"))


@pytest.mark.parametrize("num_layers", [1, 2, 5, 12])
def test_random_round_trips(num_layers):
    rng = random.Random(num_layers)
    for _ in range(20):
        arch = random_arch(num_layers, rng)
        assert MacroArch.from_fixed_arc(arch.to_fixed_arc()) == arch
        assert MacroArch.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
        assert len(arch.to_fixed_arc().split()) == num_layers * (num_layers + 1) // 2


@pytest.mark.parametrize("text, message", [
    ("", "fits no whole number of layers"),
    ("0 1", "fits no whole number of layers"),
    ("0 1 0 0", "fits no whole number of layers"),
    ("6", "op index 6"),
    ("0 3 2", "skip bit 0 is 2"),
    ("0 x", "integers"),
    ("0 -1 0", "negative"),
])
def test_fixed_arc_errors(text, message):
    with pytest.raises(ArchError, match=message):
        MacroArch.from_fixed_arc(text)


@pytest.mark.parametrize("body, message", [
    ({}, "needs a \"layers\" list"),
    ({"layers": "conv3x3"}, "must be a list"),
    ({"layers": []}, "at least one layer"),
    ({"layers": [{"op": "conv3x3", "skips": []}], "normal": []}, "unexpected field"),
    ({"layers": [{"op": "conv7x7", "skips": []}]}, "unknown op 'conv7x7'"),
    ({"layers": [{"op": "conv3x3"}]}, "exactly the keys"),
    ({"layers": [{"op": 0, "skips": []}]}, "'op' must be a string"),
    ({"layers": [{"op": "conv3x3", "skips": [0]}]}, "layer 0 must have exactly 0 skip bits"),
    ({"layers": [{"op": "conv3x3", "skips": []}, {"op": "sep3x3", "skips": []}]}, "layer 1 must have exactly 1"),
    ({"layers": [{"op": "conv3x3", "skips": []}, {"op": "sep3x3", "skips": [2]}]}, "must be 0 or 1"),
    ({"layers": [{"op": "conv3x3", "skips": []}, {"op": "sep3x3", "skips": [True]}]}, "must be 0 or 1"),
    ({"layers": [{"op": "conv3x3", "skips": []}, {"op": "sep3x3", "skips": 1}]}, "'skips' must be a list"),
])
def test_dict_errors(body, message):
    with pytest.raises(ArchError, match=message):
        MacroArch.from_dict(body)


def test_error_messages_are_one_line():
    for bad in ("0 1", "7", "0 0 5"):
        with pytest.raises(ArchError) as info:
            MacroArch.from_fixed_arc(bad)
        assert "\n" not in str(info.value)


def test_reduction_layers_follow_the_authors_positions():
    assert reduction_layers(12) == (3, 7)
    assert reduction_layers(24) == (7, 15)
    assert reduction_layers(6) == (1, 3)
    assert reduction_layers(3) == (0, 1)
    assert reduction_layers(2) == ()
    assert tensor_name(0) == "stem" and tensor_name(3) == "layer2"


def test_describe_names_ops_skips_and_reductions():
    arch = MacroArch.from_fixed_arc(PUBLISHED_MACRO_ARC)
    text = arch.describe()
    lines = text.splitlines()
    assert "24 layers" in lines[0] and "reductions after layers 7, 15" in lines[0]
    assert sum("reduction" in line for line in lines[1:]) == 2
    layer5 = next(line for line in lines if line.strip().startswith("layer5 "))
    assert "sep5x5" in layer5 and "<- layer4" in layer5 and "stem, layer0, layer2" in layer5
