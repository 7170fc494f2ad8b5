"""Choice modules (enas.nn): discovery into the paper controller's decisions, the arch codec, supernet == child, and
the two examples searched end to end from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from enas import registry
from enas.cli.main import main
from enas.errors import ArchError, ConfigError
from enas.nn import ChoiceSpace, InputChoice, OpChoice, ValueChoice, choice_space
from enas.search.controller import Controller, ControllerConfig, UniformSampler
from enas.spaces.base import TaskInfo

ROOT = Path(__file__).resolve().parents[3]
CNN = ROOT / "examples" / "cnn_choices.py"
MLP = ROOT / "examples" / "mlp_choices.py"


pytestmark = pytest.mark.usefixtures("clean_registry")  # tests/conftest.py


class Toy(nn.Module):
    def __init__(self, cfg, info):
        super().__init__()
        self.a = OpChoice([nn.Linear(4, 4), nn.Identity()])
        self.b = OpChoice({"x": nn.Linear(4, 4), "y": nn.Tanh()}, label="shared")
        self.c = OpChoice({"x": nn.Linear(4, 4), "y": nn.Tanh()}, label="shared")  # same decision as b
        self.k = ValueChoice([1, 2, 3])
        self.pick = InputChoice(3, n_chosen=1)
        self.pair = InputChoice(3, n_chosen=2, reduction="mean")
        self.any = InputChoice(2, n_chosen=None)

    def forward(self, x):
        a, b = self.a(x), self.c(self.b(x))
        y = self.pick([x, a, b]) + self.pair([x, a, b]) * self.k.value
        return y + self.any([a, b])


def _toy_space():
    return ChoiceSpace(None, "toy", choice_space("toy", "images", Toy, lambda p, c: None).arch_class,
                       lambda cfg, info: Toy(cfg, info))


def test_choices_become_the_paper_controllers_decisions():
    space = _toy_space()
    kinds = [(d.kind, d.name) for d in space.decisions()]
    assert [k for k in kinds if k[0] != "anchor"] == [
        ("op", "a"), ("op", "shared"), ("op", "k"), ("pointer", "pick"), ("pointer", "pair"), ("pointer", "pair"),
        ("skips", "any")]
    assert sum(k[0] == "anchor" for k in kinds) == 3 + 3 + 2  # one anchor step per input candidate
    assert space.vocabularies() == {"a": ["linear", "identity"], "shared": ["x", "y"], "k": ["1", "2", "3"]}
    controller = Controller(space, ControllerConfig(lstm_size=16))
    for _ in range(5):
        sample = controller.sample()
        arch = sample.arch
        assert space.decode(space.encode(arch)) == arch
        log_prob, _ = controller.log_prob(space.encode(arch))
        torch.testing.assert_close(log_prob, sample.log_prob)
        assert len(arch.get("pair")) == 2 and set(arch.get("any")) <= {0, 1}


def test_the_arch_codec_and_its_errors():
    space = _toy_space()
    arch = space.decode([1, 0, 2, 2, 0, 1, [1, 1]])
    assert arch.to_fixed_arc() == "a=identity shared=x k=3 pick=2 pair=0,1 any=0,1"
    assert space.decode([1, 0, 2, 2, 0, 1, [0, 1]]).to_fixed_arc().endswith("any=1,")
    cls = space.arch_cls
    assert cls.from_fixed_arc(arch.to_fixed_arc()) == arch
    assert cls.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
    assert space.encode(cls.from_fixed_arc("a=identity shared=x k=3 pick=2 pair=0,1 any=")) == [1, 0, 2, 2, 0, 1,
                                                                                                [0, 0]]
    for text, fragment in [("a=identity", "sets the choices"), ("a=conv shared=x k=3 pick=2 pair=0,1 any=0", "conv"),
                           ("a=identity shared=x k=3 pick=5 pair=0,1 any=0", "indices in 0..2"),
                           ("a=identity shared=x k=3 pick=2 pair=0 any=0", "choose 2")]:
        with pytest.raises(ArchError, match=fragment):
            space.encode(cls.from_fixed_arc(text))
    with pytest.raises(ArchError, match="label=value"):
        cls.from_fixed_arc("identity")
    with pytest.raises(ArchError, match="choices"):
        cls.from_dict({"ops": []})


@pytest.mark.parametrize("make, fragment", [
    (lambda: OpChoice([nn.ReLU()]), "at least two"),
    (lambda: ValueChoice([1, 1]), "two distinct"),
    (lambda: ValueChoice([1, [2]]), "numbers, strings"),
    (lambda: InputChoice(0), "n_candidates"),
    (lambda: InputChoice(2, n_chosen=0), "n_chosen"),
    (lambda: OpChoice([nn.ReLU(), nn.Tanh()], label="a.b"), "label"),
])
def test_bad_choices_are_config_errors(make, fragment):
    with pytest.raises(ConfigError, match=fragment) as e:
        make()
    assert "test_nn.py:" in str(e.value) and "\n" not in str(e.value)  # the user's file and line


def test_a_one_candidate_choice_names_its_label_and_the_users_line():
    with pytest.raises(ConfigError) as e:
        OpChoice({"only": nn.ReLU()}, label="act")
    line = e.value.__traceback__.tb_lineno  # the line of the call above
    assert str(e.value).startswith(f"OpChoice 'act' at test_nn.py:{line}: needs at least two")


def test_a_module_without_choices_or_with_conflicting_labels_is_refused():
    with pytest.raises(ConfigError, match="nothing to search"):
        ChoiceSpace(None, "plain", object, lambda cfg, info: nn.Linear(2, 2))

    class Clash(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = ValueChoice([1, 2], label="x")
            self.b = ValueChoice([1, 3], label="x")

    with pytest.raises(ConfigError, match=r"share the label 'x' .* at test_nn.py:\d+ .* at test_nn.py:\d+"):
        ChoiceSpace(None, "clash", object, lambda cfg, info: Clash())


@pytest.mark.parametrize("example", ["cnn", "mlp"])
def test_the_example_supernets_equal_their_children_with_the_same_weights(example):
    from enas.presets import make_config

    if example == "cnn":
        entry = registry.get(f"{CNN}:SPACE")
        info, x = TaskInfo(in_channels=1, image_size=12, num_classes=5), torch.randn(3, 1, 12, 12)
    else:
        pytest.importorskip("enas.tasks.tabular")
        entry = registry.get(f"{MLP}:SPACE")
        info, x = TaskInfo(in_features=6, num_classes=3), torch.randn(5, 6)
    space = entry.build(make_config(entry.name, "demo", "search", "x.npz").model)
    supernet = space.build_supernet(info).eval()
    params = sum(p.numel() for p in supernet.parameters())
    torch.manual_seed(0)
    for _ in range(5):
        arch = UniformSampler(space).sample().arch
        child = space.build_child(arch, info, final=False).eval()
        child.load_state_dict(space.child_state_from_supernet(supernet, arch))  # strict: the same names
        torch.testing.assert_close(child(x)[0], supernet(x, arch)[0])
        assert sum(p.numel() for p in child.parameters()) <= params


TINY_CNN = ["--preset", "demo", "--device", "cpu", "--set", "task.train_subset=null", "--set", "task.test_subset=null",
            "--set", "task.batch_size=16", "--set", "task.reward_batch_size=16", "--set", "task.eval_batch_size=32",
            "--set", "model.channels=4", "--set", "model.layers=3", "--no-progress"]


@pytest.mark.slow
def test_the_cnn_example_is_searched_shown_and_trained_from_the_cli(npz_path, tmp_path):
    search, train = tmp_path / "search", tmp_path / "train"
    assert main(["search", "--space", f"{CNN}:SPACE", "--data", str(npz_path), "--out", str(search), *TINY_CNN,
                 "--set", "task.valid_size=40", "--set", "search.epochs=1", "--set", "search.derive_samples=3"]) == 0
    arch = json.loads((search / "arch.json").read_text())
    assert arch["space"] == "cnn-choices" and set(arch["choices"]) == {"ops/0", "ops/1", "ops/2", "skips/0",
                                                                        "skips/1"}
    shown = subprocess.run([sys.executable, "-m", "enas", "show", str(search / "arch.json"), "-o",
                            str(tmp_path / "arch.png"), "--trust-space", f"{CNN}:SPACE"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "ops/0:" in shown.stdout and (tmp_path / "arch.png").stat().st_size > 1000
    assert main(["train", str(search / "arch.json"), "--data", str(npz_path), "--out", str(train), *TINY_CNN,
                 "--set", "train.epochs=1"]) == 0
    assert 0.0 <= json.loads((train / "summary.json").read_text())["test_acc"] <= 1.0


@pytest.mark.slow
def test_the_mlp_example_is_searched_and_trained_on_a_table_from_the_cli(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)  # 3 learnable classes
    table = tmp_path / "table.npz"
    np.savez(table, x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    search, train = tmp_path / "search", tmp_path / "train"
    tiny = ["--preset", "demo", "--device", "cpu", "--no-progress", "--set", "task.batch_size=32"]
    assert main(["search", "--space", f"{MLP}:SPACE", "--data", str(table), "--out", str(search), *tiny,
                 "--set", "task.valid_size=100", "--set", "search.epochs=2", "--set", "search.derive_samples=3"]) == 0
    arch = json.loads((search / "arch.json").read_text())
    assert arch["space"] == "mlp-choices" and arch["choices"]["width"] in (16, 32, 64)
    assert main(["train", str(search / "arch.json"), "--data", str(table), "--out", str(train), *tiny,
                 "--set", "train.epochs=5"]) == 0
    assert json.loads((train / "summary.json").read_text())["test_acc"] > 0.6  # chance is about 1/3


def test_a_value_choice_sizes_the_child_to_the_chosen_width():
    pytest.importorskip("enas.tasks.tabular")
    from enas.presets import make_config

    entry = registry.get(f"{MLP}:SPACE")
    space = entry.build(make_config(entry.name, "demo", "search", "x.npz").model)
    info, x = TaskInfo(in_features=6, num_classes=3), torch.randn(5, 6)
    supernet = space.build_supernet(info).eval()
    assert supernet.net.inp.weight.shape == (64, 6)  # the widest
    base = UniformSampler(space).sample().arch
    counts = {}
    for width in (16, 32, 64):
        arch = type(base)(tuple((k, width if k == "width" else v) for k, v in base.choices))
        child = space.build_child(arch, info).eval()
        assert child.net.inp.weight.shape == (width, 6) and child.net.out.weight.shape == (3, width)
        child.load_state_dict(space.child_state_from_supernet(supernet, arch))  # cut to the leading entries
        torch.testing.assert_close(child(x)[0], supernet(x, arch)[0])
        counts[width] = sum(p.numel() for p in child.parameters())
    assert counts[16] < counts[32] < counts[64] == sum(p.numel() for p in supernet.parameters())


def test_value_choice_size_is_the_largest_value_outside_a_child_and_needs_integers():
    assert ValueChoice([8, 32, 16], label="w").size == 32
    with pytest.raises(ConfigError, match="integer"):
        _ = ValueChoice(["a", "b"]).size
