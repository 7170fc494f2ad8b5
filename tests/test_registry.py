"""The space registry: built-in entries, references, entry points, and a user space searched from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from enas import registry
from enas.arch import arch_class, arch_from_json
from enas.cli.main import main
from enas.errors import ArchError, ConfigError
from enas.presets import make_config

ROOT = Path(__file__).resolve().parents[1]
CHAIN = ROOT / "examples" / "chain_space.py"
TINY = ["--preset", "demo", "--device", "cpu", "--set", "task.train_subset=null", "--set", "task.test_subset=null",
        "--set", "task.batch_size=16", "--set", "task.reward_batch_size=16", "--set", "task.eval_batch_size=32",
        "--set", "model.channels=4", "--no-progress"]


pytestmark = pytest.mark.usefixtures("clean_registry")  # tests/conftest.py


def test_the_paper_spaces_are_registry_entries():
    assert registry.names()[:3] == ["rnn", "macro", "micro"]
    assert arch_class("micro").__name__ == "MicroArch"
    assert registry.text_space("rnn") and not registry.text_space("macro")
    cfg = make_config("macro", "demo", "search", "fashion-mnist")
    assert cfg.space == "macro" and cfg.space_source == "" and type(cfg.model).__name__ == "MacroSpaceConfig"


@pytest.mark.parametrize("ref, fragment", [
    ("cnn", "unknown space 'cnn'"),
    ("examples.no_such_module:SPACE", "cannot import examples.no_such_module"),
    ("examples.chain_space:NOPE", "has no attribute 'NOPE'"),
    ("examples.chain_space:OPS", "not an enas.registry.SpaceEntry"),
    ("examples.chain_space:", "package.module:NAME"),
    (f"{ROOT}/missing.py:SPACE", "does not exist"),
])
def test_bad_space_references_are_config_errors(ref, fragment):
    with pytest.raises(ConfigError, match=fragment):
        registry.get(ref)


def test_register_refuses_a_taken_name_and_bad_entries():
    entry = registry.get("examples.chain_space:SPACE")
    assert entry.name == "chain" and entry.source == "examples.chain_space:SPACE"
    assert registry.get("chain") is entry  # registered under its own name
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(registry.SpaceEntry("rnn", "text", "x:Y", "x:Y", "x:Y"))
    with pytest.raises(ConfigError, match="task must be one of"):
        registry.register(registry.SpaceEntry("audio", "sound", "x:Y", "x:Y", "x:Y"))
    with pytest.raises(ConfigError, match="SpaceEntry"):
        registry.register("chain")


def test_a_space_name_is_found_through_the_source_an_arch_file_names():
    body = {"format": "enas-arch", "version": 1, "space": "chain", "ops": ["conv3x3", "identity"]}
    with pytest.raises(ArchError, match="unknown space 'chain'"):
        arch_from_json(body)
    arch = arch_from_json({**body, "space_source": f"{CHAIN}:SPACE"})
    assert arch.ops == ("conv3x3", "identity") and arch.to_json()["space_source"] == f"{CHAIN}:SPACE"


def test_entry_point_group_registers_installed_spaces(monkeypatch):
    ep = metadata.EntryPoint(name="chain", value="examples.chain_space:SPACE", group=registry.ENTRY_POINT_GROUP)
    broken = metadata.EntryPoint(name="broken", value="examples.no_such_module:SPACE",
                                 group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [ep, broken] if group == ep.group else [])
    assert "chain" in registry.names() and "broken" not in registry.names()
    assert registry.get("chain").source == "examples.chain_space:SPACE"
    cfg = make_config("chain", "demo", "search", "fashion-mnist")
    assert cfg.space == "chain" and cfg.model.num_layers == 4


@pytest.mark.slow
def test_a_user_space_in_one_file_is_searched_shown_trained_and_resumed_from_the_cli(npz_path, tmp_path):
    search, train = tmp_path / "search", tmp_path / "train"
    assert main(["search", "--space", f"{CHAIN}:SPACE", "--data", str(npz_path), "--out", str(search), *TINY,
                 "--set", "task.valid_size=40", "--set", "search.epochs=1", "--set", "search.derive_samples=3"]) == 0
    arch = json.loads((search / "arch.json").read_text())
    assert arch["space"] == "chain" and arch["space_source"] == f"{CHAIN}:SPACE" and len(arch["ops"]) == 4
    assert (search / "arch.png").stat().st_size > 1000

    # a fresh process knows nothing of the space: the arch file and the run's config say where it lives
    def fresh(*argv):
        return subprocess.run([sys.executable, "-m", "enas", *argv], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)

    # ... and imports that code only when asked (a file from elsewhere could name any code)
    refused = fresh("show", str(search / "arch.json"), "--json")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        f"enas: error: the space 'chain' is code that a file names ({CHAIN}:SPACE); enas "
        f"imports it only when asked: add --trust-space {CHAIN}:SPACE if you trust it"]
    trust = ("--trust-space", f"{CHAIN}:SPACE")
    shown = fresh("show", str(search / "arch.json"), "--json", *trust)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["params"] > 0
    resumed = fresh("search", "--resume", "--out", str(search), "--set", "search.epochs=2", "--no-progress", *trust)
    assert resumed.returncode == 0, resumed.stderr
    epochs = [json.loads(line) for line in (search / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [1, 2]

    assert main(["train", str(search / "arch.json"), "--data", str(npz_path), "--out", str(train), *TINY,
                 "--set", "train.epochs=1"]) == 0
    evaluated = fresh("eval", str(train), *trust)
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads((train / "summary.json").read_text())
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["test_acc"] == pytest.approx(summary["test_acc"])

    # and its trained child exports like a paper space's (enas export), with the same outputs
    import torch

    from enas.export.model import export_model, load_child

    path = export_model(train, "torch-export", data=False)
    child, raw, _, _ = load_child(train)
    info = raw["task_info"]
    images = torch.randn(3, info["in_channels"], info["image_size"], info["image_size"])
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(path).module()(images), child(images)[0], rtol=1e-4, atol=1e-5)


def test_the_user_space_supernet_equals_its_child_with_the_same_weights():
    import torch

    from enas.build import build_space
    from enas.search.controller import UniformSampler
    from enas.spaces.base import TaskInfo

    cfg = make_config(f"{CHAIN}:SPACE", "demo", "search", "fashion-mnist")
    space = build_space(cfg)
    info = TaskInfo(in_channels=1, image_size=12, num_classes=5)
    supernet = space.build_supernet(info).eval()
    images = torch.randn(3, 1, 12, 12)
    for _ in range(4):
        arch = UniformSampler(space).sample().arch
        child = space.build_child(arch, info, final=False).eval()
        child.load_state_dict(space.child_state_from_supernet(supernet, arch))
        torch.testing.assert_close(child(images)[0], supernet(images, arch)[0])
