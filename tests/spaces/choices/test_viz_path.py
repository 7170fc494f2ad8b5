"""Pictures of a chosen path through a module written with choices (enas.spaces.choices.draw): the traced child's data
flow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from enas import registry
from enas.arch import save_arch
from enas.cli.main import main
from enas.nn import ChoiceSpace, InputChoice, OpChoice, choice_space
from enas.spaces.base import TaskInfo
from enas.spaces.choices.draw import draw_choice_path, trace_path
from enas.viz.arch import draw_arch

ROOT = Path(__file__).resolve().parents[3]
CNN = ROOT / "examples" / "cnn_choices.py"
INFO = TaskInfo(in_channels=1, image_size=8, num_classes=3, in_features=4)


pytestmark = pytest.mark.usefixtures("clean_registry")  # tests/conftest.py


class Branchy(nn.Module):
    def __init__(self, cfg, info):
        super().__init__()
        self.first = OpChoice({"lin": nn.Linear(4, 4), "tanh": nn.Tanh()})
        self.second = OpChoice({"lin": nn.Linear(4, 4), "relu": nn.ReLU()})
        self.unused = nn.Linear(4, 4)
        self.pick = InputChoice(3, n_chosen=None)

    def forward(self, x):
        a = self.first(x)
        b = self.second(a)
        dead = self.unused(x)  # computed, never reaches the output  # noqa: F841
        return self.pick([x, a, b])


class Untraceable(Branchy):
    def forward(self, x):
        if x.sum() > 0:  # control flow on a tensor value
            return self.first(x)
        return self.second(x)


def _space(model):
    entry = choice_space("branchy", "tabular", model, lambda p, c: None)
    return ChoiceSpace(None, "branchy", entry.arch_class, model)


def _child(space, fixed_arc):
    arch = space.arch_cls.from_fixed_arc(fixed_arc)
    with torch.device("meta"):
        return arch, space.build_child(arch, INFO)


def test_the_traced_path_holds_the_chosen_ops_and_inputs_only():
    space = _space(Branchy)
    _, child = _child(space, "first=tanh second=lin pick=0,2")
    nodes = trace_path(child.net)
    texts = [t for t, _, _ in nodes]
    assert texts[0] == "input" and texts[-1] == "output"
    assert "tanh\nfirst" in texts and "lin\nsecond" in texts
    assert not any(t.startswith(("relu", "lin\nfirst")) for t in texts)  # unchosen candidates
    assert "Linear" not in texts  # the dead branch is left out
    # the skip choice adds input 0 (x) and input 2 (second's output): one sum labelled with the choice
    (merge,) = [i for i, (t, _, _) in enumerate(nodes) if t == "+\npick"]
    assert sorted(texts[i] for i in nodes[merge][2]) == ["input", "lin\nsecond"]
    # every edge goes forward (topological order), and every node but the input has an input
    assert all(src < i for i, (_, _, ins) in enumerate(nodes) for src in ins)
    assert all(ins for _, _, ins in nodes[1:])


def test_the_same_op_name_gets_the_same_colour():
    space = _space(Branchy)
    _, child = _child(space, "first=lin second=lin pick=2,")
    fills = {t: f for t, f, _ in trace_path(child.net)}
    assert fills["lin\nfirst"] == fills["lin\nsecond"]


def test_draw_choice_path_draws_the_graph_and_falls_back_to_text_when_untraceable():
    for model, expect in ((Branchy, "the chosen path"), (Untraceable, None)):
        space = _space(model)
        arch, _ = _child(space, "first=tanh second=lin pick=0,2")
        d = {"format": "enas-arch", "version": 1, "space": "branchy", **arch.to_dict()}
        registry.register(choice_space("branchy", "tabular", model, lambda p, c: None), replace=True)
        fig = draw_choice_path(space, d, None)
        title = fig._suptitle.get_text() if fig._suptitle else ""
        if expect:
            assert expect in title
        else:  # the text picture: the arch's summary, no title
            assert title == "" and "first: tanh" in fig.axes[0].texts[0].get_text()


def test_show_writes_the_path_picture_of_an_example_space(tmp_path):
    entry = registry.load_reference(f"{CNN}:SPACE")
    space = entry.load("space")(entry.load("presets")("demo", "search").model)
    arch = space.arch_cls.from_fixed_arc("ops/0=sep3x3 ops/1=conv3x3 ops/2=conv5x5 ops/3=maxpool "
                                         "skips/0= skips/1=0, skips/2=0,1,2")
    path = tmp_path / "arch.json"
    save_arch(arch, path)
    assert main(["show", str(path), "-o", str(tmp_path / "arch.png"), "--json"]) == 0
    png = tmp_path / "arch.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a path picture is tall (one row per layer), the text box is not
    import matplotlib.image

    h, w = matplotlib.image.imread(png).shape[:2]
    assert h > 2 * w
    assert json.loads(path.read_text())["space"] == "cnn-choices"
    # the same through draw_arch directly
    assert draw_arch(arch, tmp_path / "direct.png").exists()
