"""The tabular-classification task: the .npz checks, splits, standardisation, batches, reward, evaluation,
checkpointing, and a tiny user space searched and trained on a table."""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from enas import registry
from enas.arch import Arch
from enas.errors import ConfigError, DataError, UserError
from enas.spaces.base import Decision, Space, TaskInfo
from enas.tasks.tabular import TabularClassificationTask, TabularTaskConfig, load_tabular_npz

N_TRAIN, N_TEST, FEATURES, K = 200, 60, 6, 3


def tabular_arrays(n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0) -> dict[str, np.ndarray]:
    """Column 0 is the row's index (to trace batches back), columns 1-3 are class-dependent (learnable), column 4 is
    constant and column 5 has a large offset and scale."""
    rng = np.random.default_rng(seed)

    def table(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, K, n)
        x = np.empty((n, FEATURES))
        x[:, 0] = np.arange(n)
        x[:, 1:4] = rng.normal(size=(n, 3)) + 2.5 * np.eye(K)[y]
        x[:, 4] = 7.0
        x[:, 5] = 5e5 + 1000 * rng.normal(size=n)
        return x, y

    x_train, y_train = table(n_train)
    x_test, y_test = table(n_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def write_table(path, **changes):
    arrays = {**tabular_arrays(), **changes}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.fixture
def table_path(tmp_path):
    return write_table(tmp_path / "table.npz")


def make_task(path, seed: int = 0, **overrides) -> TabularClassificationTask:
    cfg = TabularTaskConfig(**{"dataset": str(path), "valid_size": 50, "batch_size": 32, "reward_batch_size": 16,
                               "eval_batch_size": 25, **overrides})  # fmt: skip
    return TabularClassificationTask(cfg, seed=seed)


def rows(task: TabularClassificationTask, x: torch.Tensor) -> list[int]:
    """Row indices (column 0 of the raw table) of standardised features."""
    return torch.round(x[:, 0].double() * task.std[0] + task.mean[0]).long().tolist()


class Linear(nn.Module):
    """A tabular model: features (B, F) -> (logits (B, K), None)."""

    def __init__(self, features: int = FEATURES, classes: int = K):
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor, arch: Any = None) -> tuple[torch.Tensor, None]:
        return self.fc(x), None


# ------------------------------------------------------------------------------------------- splits, statistics


def test_info_splits_and_training_batches(table_path):
    task = make_task(table_path)
    assert (task.info.in_features, task.info.num_classes) == (FEATURES, K)
    assert (task.info.in_channels, task.info.image_size, task.info.vocab_size) == (0, 0, 0)
    assert [task.split_size(s) for s in ("train", "valid", "test")] == [150, 50, 60]
    assert task.num_train_batches() == 150 // 32
    seen = []
    for x, y in task.train_batches():
        assert x.shape == (32, FEATURES) and x.dtype == torch.float32 and y.shape == (32,) and y.dtype == torch.int64
        seen += rows(task, x)
    assert len(seen) == 4 * 32 == len(set(seen)) and set(seen) <= set(range(150))  # full batches, training part
    # an epoch skips the remainder, a different one each time
    second = [r for x, _ in task.train_batches() for r in rows(task, x)]
    assert len(second) == 128 and set(second) != set(seen)
    labels = tabular_arrays()["y_train"]
    x, y = next(task.train_batches())
    assert y.tolist() == labels[rows(task, x)].tolist()


def test_features_are_standardised_with_the_training_rows_only(table_path):
    raw = tabular_arrays()["x_train"]
    task = make_task(table_path, train_subset=180, valid_size=40)
    train = raw[:140]  # the first train_subset rows, less the last valid_size: the statistics' rows
    np.testing.assert_allclose(task.mean.numpy(), train.mean(axis=0), rtol=1e-12)
    expected_std = train.std(axis=0)
    expected_std[4] = 1.0  # the constant feature
    np.testing.assert_allclose(task.std.numpy(), expected_std, rtol=1e-10)
    x, _ = task._split("train")
    torch.testing.assert_close(x.mean(0)[[0, 1, 2, 3, 5]], torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0, correction=0)[[0, 1, 2, 3, 5]], torch.ones(5), atol=1e-5, rtol=0)
    for split, source in (("valid", raw[140:180]), ("test", tabular_arrays()["x_test"])):
        x, _ = task._split(split)
        assert (x[:, 4] == 0).all()  # the constant feature becomes 0, not NaN
        expected = torch.from_numpy((source - task.mean.numpy()) / task.std.numpy()).float()
        torch.testing.assert_close(x, expected)
    assert rows(task, task._split("valid")[0]) == list(range(140, 180))  # validation = the last rows

    plain = make_task(table_path, standardize=False, test_subset=7)
    assert plain.split_size("test") == 7
    torch.testing.assert_close(plain._split("train")[0], torch.from_numpy(raw[:150]).float())


def test_reward_batches_cycle_through_the_validation_rows(table_path):
    task = make_task(table_path)
    ids = []
    for _ in range(3):  # 3 x 16 of the 50 validation rows, then a new permutation
        x, y = task.reward_batch()
        assert x.shape == (16, FEATURES)
        ids += rows(task, x)
    assert len(set(ids)) == 48 and set(ids) <= set(range(150, 200))
    assert make_task(table_path, reward_batch_size=500).reward_batch()[0].shape == (50, FEATURES)
    no_valid = make_task(table_path, valid_size=0)
    assert no_valid.split_size("train") == 200
    with pytest.raises(ConfigError, match="no validation split"):
        no_valid.reward_batch()
    with pytest.raises(ConfigError, match="no validation split"):
        no_valid.evaluate(Linear(), "valid")


# ---------------------------------------------------------------------------------------- determinism, state


def _draw(task: TabularClassificationTask, batches: int) -> list[list[int]]:
    out, it = [], task.train_batches()
    for _ in range(batches):
        out.append(rows(task, next(it)[0]))
        out.append(rows(task, task.reward_batch()[0]))
    return out


def test_batches_depend_on_the_seed_only_and_survive_a_checkpoint(table_path):
    assert _draw(make_task(table_path, seed=3), 3) == _draw(make_task(table_path, seed=3), 3)
    assert _draw(make_task(table_path, seed=3), 3) != _draw(make_task(table_path, seed=4), 3)

    task = make_task(table_path, seed=1)
    _draw(task, 2)  # half an epoch and two reward batches
    buffer = io.BytesIO()
    torch.save(task.state_dict(), buffer)
    expected = _draw(task, 2) + _draw(task, 4)  # the rest of the epoch, then a new one
    restored = make_task(table_path, seed=99)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    assert _draw(restored, 2) + _draw(restored, 4) == expected

    with pytest.raises(ConfigError, match="resume with the same dataset"):
        make_task(table_path, valid_size=40).load_state_dict(task.state_dict())


# ------------------------------------------------------------------------------------------- loss, metrics


def test_reward_evaluate_and_loss_match_a_written_out_reference(table_path):
    task = make_task(table_path)
    torch.manual_seed(0)
    model = Linear().eval()
    x, y = task.reward_batch()
    assert task.reward(model, (x, y)) == pytest.approx((model.fc(x).argmax(1) == y).float().mean().item())

    calls = []
    metrics = task.evaluate(model, "test", arch_fn=lambda: calls.append(1))
    assert len(calls) == math.ceil(60 / 25)  # one arch per eval_batch_size chunk
    features, labels = task._split("test")
    logits = model.fc(features)
    assert metrics["n"] == 60
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert metrics["acc"] == metrics["score"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())

    loss, stats = task.shared_loss(model, next(task.train_batches()))
    assert loss.requires_grad and set(stats) == {"loss", "acc"} and stats["loss"] == pytest.approx(loss.item())

    model.train()  # the table is learnable: a few epochs of SGD on the shared loss
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(10):
        for batch in task.train_batches():
            opt.zero_grad()
            task.shared_loss(model, batch)[0].backward()
            opt.step()
    assert task.evaluate(model.eval(), "test")["acc"] > 0.8


# ------------------------------------------------------------------------------------------------ bad files


def _not_zip(path):
    path.write_text("x_train,y_train\n1,2\n")


def _npy(path):
    with open(path, "wb") as f:
        np.save(f, np.zeros((3, 2)))


def _corrupt_member(path):
    with zipfile.ZipFile(path, "w") as z:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            z.writestr(f"{key}.npy", b"not an array")


BAD_FILES = {
    "missing": (None, "does not exist"),
    "not a zip": (_not_zip, "is not a .npz archive"),
    "a .npy": (_npy, "is not a .npz archive"),
    "corrupt member": (_corrupt_member, "is not a readable .npz of plain arrays"),
    "object array": ({"x_train": np.array([[1, "a"]] * 200, dtype=object)}, "is not a readable .npz of plain arrays"),
    "missing keys": ({"y_test": None, "x_test": None}, r"lacks the array\(s\) x_test, y_test \(found: x_train, y_"),
    "x 1-D": ({"x_train": np.zeros(200)}, r"x_train must have shape \(rows, features\), found \(200,\)"),
    "x 3-D": ({"x_test": np.zeros((60, 2, 3))}, r"x_test must have shape \(rows, features\), found \(60, 2, 3\)"),
    "no features": ({"x_train": np.zeros((200, 0))}, "x_train has no feature columns"),
    "strings": ({"x_train": np.full((200, 6), "1.5")}, "x_train must be numeric .* found dtype <U3"),
    "complex": ({"x_test": np.zeros((60, 6), complex)}, "x_test must be numeric .* found dtype complex128"),
    "nan": ({"x_train": np.where(np.arange(6) == 2, np.nan, np.ones((200, 6)))},
            r"x_train holds 200 NaN or infinite value\(s\) \(first at row 0, column 2\)"),
    "inf": ({"x_test": np.where(np.arange(60)[:, None] == 7, np.inf, np.ones((60, 6)))},
            r"x_test holds 6 NaN or infinite value\(s\) \(first at row 7, column 0\)"),
    "float labels": ({"y_train": np.zeros(200)}, "y_train: labels must be integers 0..K-1, got dtype float64"),
    "negative labels": ({"y_test": np.full(60, -1)}, "y_test: labels must be integers 0..K-1, found -1"),
    "label count": ({"y_train": np.zeros(199, int)}, r"y_train must have shape \(200,\) .* found \(199,\)"),
    "feature counts": ({"x_test": np.zeros((60, 5))}, "x_train has 6 features but x_test has 5"),
    "empty test": ({"x_test": np.zeros((0, 6)), "y_test": np.zeros(0, int)}, "x_test has no rows"),
    "one class": ({"y_train": np.zeros(200, int), "y_test": np.zeros(60, int)}, "at least 2 classes"),
    "class names": ({"class_names": np.array(["a", "b"])}, "y_train holds label 2 but class_names names 2 classes"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_malformed_files_are_one_line_data_errors(tmp_path, case):
    make, fragment = BAD_FILES[case]
    path = tmp_path / "bad.npz"
    if isinstance(make, dict):
        write_table(path, **make)
    elif make is not None:
        make(path)
    with pytest.raises(DataError, match=fragment) as info:
        make_task(path)
    assert "\n" not in str(info.value)


def test_too_few_rows_and_bad_settings(table_path):
    with pytest.raises(DataError, match=r"200 training rows leave 10 for training after valid_size=190, fewer than "
                                        r"one batch \(batch_size=32\)") as info:
        make_task(table_path, valid_size=190)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="leave 0 for training"):
        make_task(table_path, valid_size=500)
    make_task(table_path, valid_size=168)  # exactly one batch is enough
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        make_task(table_path, batch_size=0)
    with pytest.raises(ConfigError, match="pass --data FILE.npz"):
        TabularClassificationTask(TabularTaskConfig())
    data = load_tabular_npz(table_path)
    assert (data.num_classes, data.class_names, data.x_train.shape) == (K, ["0", "1", "2"], (N_TRAIN, FEATURES))


# ------------------------------------------------------------------------------------- a tiny tabular space

ACTS = ("relu", "tanh", "identity")


@dataclass(frozen=True)
class MlpArch(Arch):
    space: ClassVar[str] = "tiny_mlp"
    acts: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"acts": list(self.acts)}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> MlpArch:
        return cls(tuple(body["acts"]))

    def to_fixed_arc(self) -> str:
        return " ".join(str(ACTS.index(a)) for a in self.acts)

    @classmethod
    def from_fixed_arc(cls, text: str) -> MlpArch:
        return cls(tuple(ACTS[int(i)] for i in text.split()))

    def describe(self) -> str:
        return " -> ".join(self.acts)


@dataclass
class MlpConfig:
    hidden: int = 16
    num_layers: int = 2


class Mlp(nn.Module):
    """Shared Linear layers; the arch picks each layer's activation (so the supernet and a child are alike)."""

    def __init__(self, cfg: MlpConfig, info: TaskInfo, acts: tuple[str, ...] | None = None):
        super().__init__()
        widths = [info.in_features] + [cfg.hidden] * cfg.num_layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.head = nn.Linear(cfg.hidden, info.num_classes)
        self.fixed = acts

    def forward(self, x: torch.Tensor, arch: MlpArch | None = None) -> tuple[torch.Tensor, None]:
        for layer, act in zip(self.layers, self.fixed or arch.acts):
            x = layer(x)
            x = torch.relu(x) if act == "relu" else torch.tanh(x) if act == "tanh" else x
        return self.head(x), None


class MlpSpace(Space):
    name = "tiny_mlp"
    arch_cls = MlpArch

    def __init__(self, config: MlpConfig):
        self.config = config

    def decisions(self) -> list[Decision]:
        return [Decision("op", f"layer{i}", size=len(ACTS), vocab="acts") for i in range(self.config.num_layers)]

    def vocabularies(self) -> dict[str, list[str]]:
        return {"acts": list(ACTS)}

    def decode(self, actions: list[Any]) -> MlpArch:
        return MlpArch(tuple(ACTS[a] for a in actions))

    def encode(self, arch: MlpArch) -> list[Any]:
        return [ACTS.index(a) for a in arch.acts]

    def build_supernet(self, info: TaskInfo) -> nn.Module:
        return Mlp(self.config, info)

    def build_child(self, arch: MlpArch, info: TaskInfo, final: bool = True) -> nn.Module:
        return Mlp(self.config, info, arch.acts)

    def child_state_from_supernet(self, supernet: nn.Module, arch: MlpArch) -> dict[str, Any]:
        return supernet.state_dict()


def mlp_presets(preset: str, command: str):
    from enas.config import Config, OptimConfig, SearchConfig, TrainConfig
    from enas.search.controller import ControllerConfig

    task = TabularTaskConfig(valid_size=50 if command == "search" else 0, batch_size=32, reward_batch_size=32,
                             eval_batch_size=100)
    controller = ControllerConfig(lstm_size=16, train_steps=3, num_aggregate=2, adam_eps=1e-8, adam_tf_eps=False)
    search = SearchConfig(epochs=1, derive_samples=3, log_archs=2, optim=OptimConfig(lr=0.1, t0=1))
    train = TrainConfig(epochs=3, optim=OptimConfig(lr=0.1, t0=3))
    return Config(model=MlpConfig(), task=task, controller=controller, search=search, train=train)


@pytest.fixture
def tiny_mlp(monkeypatch):
    """The space registered for one test only (the registry is restored afterwards)."""
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))
    monkeypatch.setattr(registry, "_entry_points_loaded", True)
    return registry.register(registry.SpaceEntry("tiny_mlp", "tabular", MlpSpace, MlpArch, mlp_presets))


def test_a_tabular_space_needs_a_npz(tiny_mlp, table_path):
    from enas.presets import make_config

    assert "tabular" in registry.TASKS and tiny_mlp.default_dataset == ""
    for data in (None, "cifar10", "ptb"):
        with pytest.raises(ConfigError, match="the tiny_mlp space reads tabular data: pass --data FILE.npz"):
            make_config("tiny_mlp", "demo", "search", data)
    cfg = make_config("tiny_mlp", "demo", "search", str(table_path))
    assert cfg.dataset == cfg.task.dataset == str(table_path)
    with pytest.raises(ConfigError, match="searches image classifiers"):
        make_config("macro", "demo", "search", "ptb")  # the other kinds are unchanged


@pytest.mark.slow
def test_a_tabular_space_is_searched_trained_evaluated_and_exported(tiny_mlp, table_path, tmp_path):
    from enas.arch import load_arch
    from enas.export.model import METADATA_NAME, export_model, load_child
    from enas.presets import make_config
    from enas.search.loop import Search
    from enas.train.final import FinalTraining, evaluate_model

    cfg = make_config("tiny_mlp", "demo", "search", str(table_path))
    cfg.device = "cpu"
    summary = Search(cfg, tmp_path / "search", progress=False).run()
    assert summary["epochs"] == 1 and 0 <= summary["best"]["valid_acc"] <= 1 and summary["best"]["valid_n"] == 50
    arch = load_arch(tmp_path / "search" / "arch.json")
    assert isinstance(arch, MlpArch) and len(arch.acts) == 2

    cfg = make_config("tiny_mlp", "demo", "train", str(table_path))
    cfg.device = "cpu"
    result = FinalTraining(cfg, arch, tmp_path / "train", progress=False).run()
    assert result["test_n"] == N_TEST and result["test_acc"] > 0.7  # chance is 1/3
    assert evaluate_model(tmp_path / "train", device="cpu")["acc"] == pytest.approx(result["test_acc"])
    with pytest.raises(UserError, match="holds a tabular classifier .* use --data FILE.npz"):
        evaluate_model(tmp_path / "train", "cifar10", device="cpu")

    path = export_model(tmp_path / "train", "torch-export")
    extra = {METADATA_NAME: ""}
    program = torch.export.load(path, extra_files=extra)
    meta = json.loads(extra[METADATA_NAME])
    assert meta["kind"] == "tabular classifier" and meta["in_features"] == FEATURES and meta["num_classes"] == K
    assert meta["inputs"][0]["name"] == "features" and meta["class_names"] == ["0", "1", "2"]
    raw = tabular_arrays()["x_train"]  # final training has no validation split: all 200 rows give the statistics
    np.testing.assert_allclose(meta["standardisation"]["mean"], raw.mean(axis=0), rtol=1e-12)
    child, _, _, _ = load_child(tmp_path / "train")
    features = torch.randn(5, FEATURES)  # a batch size other than the example's
    with torch.no_grad():
        torch.testing.assert_close(program.module()(features), child(features)[0])
