"""Data parallelism: `enas search` and `enas train` under torchrun (2 CPU processes, gloo) against one process, resume
across process counts, a rank killed mid-run, ranks that diverge; and the tasks' shards against the global batches."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from enas.build import build_task
from enas.cli.main import main
from enas.errors import ConfigError
from tests.conftest import tiny_image_config, tiny_rnn_config, write_npz

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

MLP = str(Path(__file__).resolve().parents[2] / "examples" / "mlp_choices.py") + ":SPACE"  # no BN, no dropout
# Each rank is one thread; a dead rank is noticed within seconds, not the default 300.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ENAS_DIST_TIMEOUT": "20"}


def _table(path: Path) -> Path:
    rng = np.random.default_rng(0)

    def rows(n):
        x = rng.normal(size=(n, 6))
        return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)

    (x_train, y_train), (x_test, y_test) = rows(320), rows(64)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def _mlp_args(table: Path, command: str = "search") -> list[str]:
    sizes = ["task.valid_size=64", "task.batch_size=32", "task.reward_batch_size=32", "task.eval_batch_size=32",
             "search.epochs=3", "controller.train_steps=3", "controller.num_aggregate=2", "search.derive_samples=3",
             "train.epochs=3"]
    space = ["--space", MLP] if command == "search" else []
    return [*space, "--trust-space", MLP, "--data", str(table), "--preset", "demo", "--device", "cpu", "--no-progress",
            *[a for s in sizes for a in ("--set", s)]]


def _torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "enas", *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _close(a: dict, b: dict, keys: tuple[str, ...], rel: float = 1e-5) -> None:
    for key in keys:
        if key in a or key in b:
            assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-7), key


FIGURES = ("train_loss", "train_acc", "controller_reward", "controller_loss", "valid_loss", "valid_acc")


# ---- end to end under torchrun -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_search_on_two_processes_equals_one_process(tmp_path):
    """Without BN and dropout the global batch's gradient is the mean of the shards' gradients: the two runs agree
    to rounding, arch for arch. Only rank 0 writes, one run directory; a second start into it fails on both ranks
    at once (no rank left waiting)."""
    table = _table(tmp_path / "table.npz")
    assert main(["search", *_mlp_args(table), "--out", str(tmp_path / "one")]) == 0
    done = _torchrun("search", *_mlp_args(table), "--out", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "table.npz", "two"]
    assert done.stdout.count("best arch") == 1 and "rank 1" not in done.stderr  # rank 0 alone reports
    one, two = tmp_path / "one", tmp_path / "two"
    assert len(_records(two, "epoch")) == 3
    for a, b in zip(_records(one, "epoch"), _records(two, "epoch"), strict=True):
        _close(a, b, FIGURES)
    assert [r["fixed_arc"] for r in _records(one, "arch")] == [r["fixed_arc"] for r in _records(two, "arch")]
    rows = [list(csv.DictReader(open(r / "candidates.csv"))) for r in (one, two)]
    assert [r["fixed_arc"] for r in rows[0]] == [r["fixed_arc"] for r in rows[1]]
    for a, b in zip(*rows, strict=True):
        _close({k: float(v) for k, v in a.items() if k != "fixed_arc"},
               {k: float(v) for k, v in b.items() if k != "fixed_arc"}, tuple(a))
    assert json.loads((one / "arch.json").read_text()) == json.loads((two / "arch.json").read_text())
    ckpt_one, ckpt_two = (torch.load(r / "checkpoints" / "last.pt", weights_only=False) for r in (one, two))
    assert list(ckpt_one["supernet"]) == list(ckpt_two["supernet"])  # no "module." prefix: the same layout
    assert ckpt_one["task"]["train_pos"] == ckpt_two["task"]["train_pos"]

    started = time.perf_counter()
    again = _torchrun("search", *_mlp_args(table), "--out", str(two))
    assert again.returncode != 0 and "already holds a run" in again.stderr
    assert "enas: error (rank 1): " in again.stderr  # told by rank 0 through a broadcast, not by a timeout
    assert time.perf_counter() - started < 60


@pytest.mark.slow
def test_cnn_search_on_two_processes_then_resumed_by_one(tmp_path):
    """A macro CNN (BN statistics per rank, so no exact comparison) searched by 2 processes, then continued by one
    process from the checkpoint the two wrote. 119 training images: the last batch of 7 is cut to 6; 41 validation
    images: the last evaluation chunk splits 4 + 5, with dropout on (rewards in train mode), and the ranks still
    sample the same archs (their dropout masks come from their own streams)."""
    npz = write_npz(tmp_path / "tiny.npz")
    sets = ["model.channels=4", "model.num_layers=3", "task.augment=false", "task.train_subset=null",
            "task.test_subset=null", "task.valid_size=41", "search.reward_mode=train", "model.keep_prob=0.5",
            "task.batch_size=16", "task.reward_batch_size=16",
            "task.eval_batch_size=32", "search.epochs=1", "search.log_archs=2", "search.derive_samples=2",
            "search.derive_uniform=2", "controller.train_steps=2", "controller.num_aggregate=2"]
    args = ["--space", "macro", "--data", str(npz), "--preset", "demo", "--device", "cpu", "--no-progress",
            *[a for s in sets for a in ("--set", s)]]
    run = tmp_path / "run"
    done = _torchrun("search", *args, "--out", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "arch.json").is_file() and (run / "summary.json").is_file()
    first = _records(run, "epoch")[0]
    assert 0 < first["train_loss"] < 5 and 0 <= first["valid_acc"] <= 1 and first["steps"] == 8

    assert main(["search", "--resume", "--out", str(run), "--no-progress", "--set", "search.epochs=2",
                 "--trust-space", MLP]) == 0
    assert [r["epoch"] for r in _records(run, "epoch")] == [1, 2]


@pytest.mark.slow
def test_training_on_two_processes_equals_one_and_resumes_across(tmp_path):
    """Final training: 2 processes agree with one; a run of one process is continued by two, and agrees too."""
    table = _table(tmp_path / "table.npz")
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"format": "enas-arch", "version": 1, "space": "mlp-choices", "space_source": MLP,
                                "choices": {"width": 32, "acts/0": "tanh", "acts/1": "relu", "acts/2": "gelu",
                                            "skips/0": [0], "skips/1": []}}))
    one, two, mixed = tmp_path / "one", tmp_path / "two", tmp_path / "mixed"
    train = ["train", str(arch), *_mlp_args(table, "train")]
    assert main([*train, "--out", str(one)]) == 0
    done = _torchrun(*train, "--out", str(two))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test_acc") == 1
    assert main([*train, "--out", str(mixed), "--set", "train.epochs=2"]) == 0
    done = _torchrun("train", "--resume", "--out", str(mixed), "--no-progress", "--set", "train.epochs=3",
                     "--trust-space", MLP)
    assert done.returncode == 0, done.stderr[-3000:]
    for run in (two, mixed):
        for a, b in zip(_records(one, "epoch"), _records(run, "epoch"), strict=True):
            _close(a, b, ("train_loss", "train_acc", "valid_loss", "valid_acc"))
        _close(_records(one, "test")[-1], _records(run, "test")[-1], ("test_loss", "test_acc"))
        ref, got = (torch.load(r / "model.pt", weights_only=False)["state_dict"] for r in (one, run))
        assert list(ref) == list(got)
        for key in ref:
            torch.testing.assert_close(got[key], ref[key], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_rnn_search_shards_columns_exactly(tmp_path, corpus_dir):
    """Text: each rank carries the recurrent state of its own columns; without BN and dropout the run equals one
    process's, and the checkpoint holds the state of all the columns, as one process's does."""
    sets = ["task.max_tokens=null", "model.hidden=16", "model.num_nodes=4", "task.batch_size=4", "task.bptt=8",
            "task.eval_batch_size=4", "task.reward_batch_size=4", f"task.root={corpus_dir}", "search.epochs=2",
            "controller.train_steps=2", "search.derive_samples=2", "search.derive_uniform=0", "model.batch_norm=false",
            "model.dropout_word=0", "model.dropout_x=0", "model.dropout_h=0", "model.dropout_out=0"]
    args = ["--space", "rnn", "--preset", "demo", "--device", "cpu", "--no-progress",
            *[a for s in sets for a in ("--set", s)]]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["search", *args, "--out", str(one)]) == 0
    done = _torchrun("search", *args, "--out", str(two))
    assert done.returncode == 0, done.stderr[-3000:]
    for a, b in zip(_records(one, "epoch"), _records(two, "epoch"), strict=True):
        _close(a, b, ("train_loss", "controller_reward", "valid_loss", "valid_ppl"))
    hidden = [torch.load(r / "checkpoints" / "last.pt", weights_only=False)["task"]["hidden"] for r in (one, two)]
    assert hidden[1].shape == hidden[0].shape == (4, 16)
    torch.testing.assert_close(hidden[1], hidden[0], rtol=1e-4, atol=1e-6)


# ---- failures ----------------------------------------------------------------------------------------------------

def _launch(args_of_rank, env: dict) -> list[subprocess.Popen]:
    """Two ranks started by hand (what torchrun's agents do on two machines), so that the test can kill one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for r in range(2):
        rank_env = {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(r), "LOCAL_RANK": str(r),
                    "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
        procs.append(subprocess.Popen([sys.executable, "-m", "enas", *args_of_rank(r)], env=rank_env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


@pytest.mark.slow
def test_a_killed_rank_stops_the_other_with_one_line_and_the_run_resumes(tmp_path):
    table = _table(tmp_path / "table.npz")
    run = tmp_path / "run"
    args = [*_mlp_args(table), "--set", "search.epochs=12", "--out", str(run)]
    procs = _launch(lambda r: ["search", *args], {**ENV, "ENAS_DIST_TIMEOUT": "10"})
    try:
        started = time.perf_counter()
        while not (run / "checkpoints" / "last.pt").is_file():
            assert procs[0].poll() is None and time.perf_counter() - started < 60, procs[0].stderr.read()
            time.sleep(0.02)
        os.kill(procs[1].pid, signal.SIGKILL)
        killed = time.perf_counter()
        _, err = procs[0].communicate(timeout=40)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert time.perf_counter() - killed < 10 + 15  # noticed at once (connection reset) or by the timeout
    assert procs[0].returncode == 2
    assert err.strip().splitlines()[-1].startswith("enas: error: rank 0 lost the other processes")
    assert f"--resume --out {run}" in err and "Traceback" not in err
    assert 1 <= len(_records(run, "epoch")) < 12

    assert main(["search", "--resume", "--out", str(run), "--no-progress", "--trust-space", MLP]) == 0  # one process
    assert [r["epoch"] for r in _records(run, "epoch")] == list(range(1, 13))
    assert (run / "arch.json").is_file()


@pytest.mark.slow
def test_ranks_that_sample_different_archs_are_stopped(tmp_path):
    table = _table(tmp_path / "table.npz")
    procs = _launch(lambda r: ["search", *_mlp_args(table), "--seed", str(r), "--out", str(tmp_path / "run")], ENV)
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [2, 2]
    assert "the ranks sampled different architectures during shared training of epoch 1" in errs[0]
    assert "enas: error (rank 1): the ranks sampled different architectures" in errs[1]


def test_other_commands_refuse_to_run_under_torchrun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["derive", str(tmp_path)]) == 2
    assert "enas derive runs as one process: start it without torchrun" in capsys.readouterr().err


def test_the_collectives_are_identities_in_one_process():
    from enas.runs import distributed as dist

    assert not dist.active() and dist.is_main() and (dist.rank(), dist.world()) == (0, 1)
    t = torch.arange(3.0)
    assert dist.all_reduce_sums({"a": 1.5}) == {"a": 1.5} and dist.all_reduce_mean(2.0) == 2.0
    assert dist.all_reduce_mean(t) is t and dist.all_gather_rows(t) is t and dist.broadcast_object([1]) == [1]
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    dist.average_gradients([p])
    dist.barrier()
    assert p.grad.tolist() == [3.0, 3.0]


COLLECTIVES = """
import torch
from enas.runs import distributed as dist
assert dist.init() and dist.world() == 2
r = dist.rank()
assert dist.all_reduce_sums({"a": r + 1.0, "b": 2.0}) == {"a": 3.0, "b": 4.0}
assert dist.all_reduce_mean(float(r)) == 0.5
assert dist.all_reduce_mean(torch.tensor([2.0 * r])).tolist() == [1.0]
assert dist.all_gather_rows(torch.full((1, 2), float(r))).tolist() == [[0.0, 0.0], [1.0, 1.0]]
assert dist.broadcast_object({"from": r}) == {"from": 0}
p, q = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
p.grad = torch.full((2,), 2.0 * r)  # q has no gradient on either rank and keeps none
dist.average_gradients([p, q])
assert p.grad.tolist() == [1.0, 1.0] and q.grad is None
w = torch.full((3,), float(r))
dist.broadcast_tensors([w])
assert w.tolist() == [0.0, 0.0, 0.0]
dist.barrier()
dist.destroy()
open(__file__ + f".ok{r}", "w").close()
"""


@pytest.mark.slow
def test_the_collectives_on_two_processes(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("*.ok*")) == ["collectives.py.ok0", "collectives.py.ok1"]


# ---- the tasks' shards -------------------------------------------------------------------------------------------

def _shards(make, world=2):
    tasks = [make() for _ in range(world)]
    for r, task in enumerate(tasks):
        task.shard(r, world)
    return make(), tasks


def test_image_shards_split_the_global_augmented_batches(npz_path):
    cfg = tiny_image_config("macro", npz_path)
    cfg.task.valid_size, cfg.task.cutout = 41, 4  # 119 training images: a last batch of 7, cut to 6
    make = lambda: build_task(cfg, torch.device("cpu"))  # noqa: E731
    whole, (rank0, rank1) = _shards(make)
    assert rank0.num_train_batches() == rank1.num_train_batches() == whole.num_train_batches() == 8
    for (x, y), (x0, y0), (x1, y1) in zip(whole.train_batches(), rank0.train_batches(), rank1.train_batches(),
                                          strict=True):
        rows = len(y) - len(y) % 2
        assert len(y0) == len(y1) == rows // 2
        torch.testing.assert_close(torch.cat([x0, x1]), x[:rows], rtol=0, atol=0)
        assert torch.equal(torch.cat([y0, y1]), y[:rows])
    for _ in range(4):  # reward batches: one permutation, cycled alike
        (x, y), (x0, y0), (x1, y1) = whole.reward_batch(), rank0.reward_batch(), rank1.reward_batch()
        torch.testing.assert_close(torch.cat([x0, x1]), x, rtol=0, atol=0)
    assert rank0.state_dict()["train_pos"] == whole.state_dict()["train_pos"]


def test_tabular_and_text_shards(tmp_path, corpus_dir):
    from enas.presets import make_config

    cfg = make_config(MLP, "demo", "search", str(_table(tmp_path / "t.npz")))
    cfg.task.batch_size = cfg.task.reward_batch_size = 32
    cfg.task.valid_size = 64
    whole, (rank0, rank1) = _shards(lambda: build_task(cfg, torch.device("cpu")))
    for (x, _), (x0, _), (x1, _) in zip(whole.train_batches(), rank0.train_batches(), rank1.train_batches(),
                                        strict=True):
        assert torch.equal(torch.cat([x0, x1]), x)

    rnn = tiny_rnn_config(corpus_dir)
    rnn.task.variable_bptt = True  # window lengths drawn from the task's generator: the same on every rank
    whole, (rank0, rank1) = _shards(lambda: build_task(rnn, torch.device("cpu")))
    for (x, y), (x0, y0), (x1, y1) in zip(whole.train_batches(), rank0.train_batches(), rank1.train_batches(),
                                          strict=True):
        assert x0.shape[1] == x1.shape[1] == 2
        assert torch.equal(torch.cat([x0, x1], dim=1), x) and torch.equal(torch.cat([y0, y1], dim=1), y)


def test_batch_sizes_must_split_among_the_ranks(npz_path, corpus_dir):
    cfg = tiny_image_config("macro", npz_path)
    cfg.task.reward_batch_size = 15
    with pytest.raises(ConfigError, match=r"task.reward_batch_size=15 does not split among 2 processes"):
        build_task(cfg, torch.device("cpu")).shard(0, 2)
    rnn = tiny_rnn_config(corpus_dir)
    with pytest.raises(ConfigError, match=r"task.batch_size=4 does not split among 3 processes"):
        build_task(rnn, torch.device("cpu")).shard(0, 3)
