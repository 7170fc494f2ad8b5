"""Shared fixtures: tiny corpora and image sets in the formats users bring, and tiny configs over them."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from enas.presets import make_config

# Tiny tensors gain nothing from intra-op threads, and busy-waiting threads slow everything down on a shared
# machine; the tests run single-threaded.
torch.set_num_threads(1)

WORDS = [f"w{i}" for i in range(40)]


def write_corpus(root, lines=(120, 30, 30), seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "valid", "test"), lines):
        text = "".join(" " + " ".join(rng.choice(WORDS, size=rng.integers(3, 12))) + " \n" for _ in range(n))
        (root / f"ptb.{split}.txt").write_text(text)
    return root


def write_npz(path, n_train=160, n_test=48, size=16, channels=3, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y_train = rng.integers(0, classes, n_train)
    y_test = rng.integers(0, classes, n_test)

    def images(y):  # class-dependent brightness so that something is learnable
        base = rng.integers(0, 120, (len(y), size, size, channels))
        return (base + 60 * y[:, None, None, None]).clip(0, 255).astype(np.uint8)

    np.savez(path, x_train=images(y_train), y_train=y_train, x_test=images(y_test), y_test=y_test)
    return path


@pytest.fixture
def corpus_dir(tmp_path):
    return write_corpus(tmp_path / "corpus")


@pytest.fixture
def npz_path(tmp_path):
    return write_npz(tmp_path / "tiny.npz")


def tiny_rnn_config(corpus_dir, command="search"):
    cfg = make_config("rnn", "demo", command, "ptb")
    cfg.device = "cpu"
    cfg.model.hidden, cfg.model.num_nodes = 16, 4
    cfg.task.root = str(corpus_dir)
    cfg.task.max_tokens = None
    cfg.task.batch_size = cfg.task.reward_batch_size = cfg.task.eval_batch_size = 4
    cfg.task.bptt = 8
    cfg.search.epochs, cfg.train.epochs = 2, 2
    cfg.search.eval_every = 1
    cfg.search.log_archs = 2
    cfg.search.derive_samples = 3
    cfg.controller.train_steps, cfg.controller.num_aggregate = 3, 2
    cfg.search.optim.lr = cfg.train.optim.lr = 1.0
    return cfg


def tiny_image_config(space, npz_path, command="search"):
    cfg = make_config(space, "demo", command, str(npz_path))
    cfg.device = "cpu"
    cfg.model.channels = 4
    cfg.model.num_layers = 3
    cfg.task.train_subset = cfg.task.test_subset = None
    cfg.task.valid_size = 40 if command == "search" else 0
    cfg.task.batch_size = cfg.task.reward_batch_size = 16
    cfg.task.eval_batch_size = 32
    cfg.search.epochs, cfg.train.epochs = 2, 2
    cfg.search.log_archs = 2
    cfg.search.derive_samples = 3
    cfg.controller.train_steps, cfg.controller.num_aggregate = 2, 2
    return cfg



@pytest.fixture
def interrupted_after_checkpoint(monkeypatch):
    """``with interrupted_after_checkpoint(): run()`` stops the run with KeyboardInterrupt right after its first
    checkpoint is written (a real interruption) and expects that interruption."""
    from enas.runs.rundir import RunDir

    original = RunDir.save_checkpoint

    def stop(self, state):
        original(self, state)
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def interrupted():
        monkeypatch.setattr(RunDir, "save_checkpoint", stop)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(RunDir, "save_checkpoint", original)

    return interrupted


def conv_output_dtypes(model: torch.nn.Module) -> set:
    """The set that collects the output dtype of every Conv2d of ``model`` at each forward (autocast checks)."""
    dtypes: set = set()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda mod, args, out: dtypes.add(out.dtype))
    return dtypes


@pytest.fixture
def clean_registry(monkeypatch):
    """The test sees the built-in spaces only (and whatever it registers itself)."""
    from enas import registry

    monkeypatch.setattr(registry, "_ENTRIES", {e.name: e for e in registry._BUILTIN})
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
