import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from enas.errors import UserError
from enas.presets import checkpoint_config
from enas.runs.environment import rng_state, set_rng_state
from enas.runs.rundir import RunDir


def test_run_dir_refuses_overwrite_and_requires_checkpoint_to_resume(tmp_path):
    run = RunDir(tmp_path / "r")
    with pytest.raises(UserError, match="nothing to resume"):
        RunDir(tmp_path / "other", resume=True)
    run.save_checkpoint({"epoch": 1, "w": torch.ones(2)})
    with pytest.raises(UserError, match="--resume"):
        RunDir(tmp_path / "r")
    again = RunDir(tmp_path / "r", resume=True)
    assert again.load_checkpoint()["epoch"] == 1


def test_checkpoint_is_atomic_and_corruption_is_a_user_error(tmp_path):
    run = RunDir(tmp_path)
    run.save_checkpoint({"epoch": 1})
    assert not [p for p in run.ckpt_dir.iterdir() if p.name.endswith(".tmp")]

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        run.save_checkpoint({"epoch": 2, "bad": Boom()})
    assert run.load_checkpoint()["epoch"] == 1  # the previous checkpoint survives a failed write
    run.checkpoint_path.write_bytes(b"garbage")
    with pytest.raises(UserError, match="truncated"):
        run.load_checkpoint()


def test_metrics_log_and_truncate(tmp_path):
    run = RunDir(tmp_path)
    for e in (1, 2, 3):
        run.log("epoch", epoch=e, loss=float(e), nan=float("nan"))
    lines = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
    assert lines[0]["nan"] is None
    run.truncate_metrics(after_epoch=2)
    assert [r["epoch"] for r in run.read_metrics("epoch")] == [1, 2]


def test_rng_state_round_trip():
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_fresh_run_drops_metrics_of_a_run_that_never_checkpointed(tmp_path):
    RunDir(tmp_path).log("epoch", epoch=1, loss=1.0)
    assert RunDir(tmp_path).read_metrics() == []


def _hold_lock_in_child(path, ready):
    """A second process that takes the run directory's lock and waits to be killed."""
    import subprocess
    import sys

    code = (f"from enas.runs.rundir import RunDir; r = RunDir({str(path)!r}); open({str(ready)!r}, 'w').write('1'); "
            "import time; time.sleep(120)")
    return subprocess.Popen([sys.executable, "-c", code])


def _wait_for(path, timeout=60.0):
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, "the child never took the lock"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_second_process_is_refused_and_a_dead_holder_leaves_no_stale_lock(tmp_path):
    import signal
    import subprocess
    import sys

    run_dir, ready = tmp_path / "run", tmp_path / "ready"
    child = _hold_lock_in_child(run_dir, ready)
    try:
        _wait_for(ready)
        with pytest.raises(UserError, match=rf"in use by another enas process \(pid {child.pid}\)"):
            RunDir(run_dir)
        cli = subprocess.run([sys.executable, "-m", "enas", "search", "--space", "rnn", "--data", "ptb",
                              "--out", str(run_dir)], capture_output=True, text=True, timeout=120)
        assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and "in use" in cli.stderr
        (run_dir / ".lock").unlink()  # deleting the pid file does not let a second process in
        with pytest.raises(UserError, match="in use by another enas process"):
            RunDir(run_dir)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    RunDir(run_dir).close()  # the kernel released the dead holder's lock


def test_one_process_may_open_its_run_twice_and_close_releases(tmp_path):
    first = RunDir(tmp_path / "r")
    second = RunDir(tmp_path / "r")  # same process: re-entrant (a search then its derive)
    second.close()
    first.close()
    first.close()  # idempotent


def test_leftover_checkpoint_temp_files_are_removed_on_start(tmp_path):
    run = RunDir(tmp_path / "r")
    run.save_checkpoint({"epoch": 1})
    run.close()
    leftover = run.ckpt_dir / ".last.pt1234abcd.tmp"  # a process killed while saving
    leftover.write_bytes(b"partial")
    again = RunDir(tmp_path / "r", resume=True)
    assert not leftover.exists() and again.load_checkpoint()["epoch"] == 1


def test_output_paths_that_cannot_be_run_directories(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        RunDir(a_file)
    with pytest.raises(UserError, match="cannot create the run directory"):
        RunDir(a_file / "under")


def _stopped_search(corpus_dir, out, interrupted_after_checkpoint):
    from enas.search.loop import Search
    from tests.conftest import tiny_rnn_config

    with interrupted_after_checkpoint():
        Search(tiny_rnn_config(corpus_dir), out, progress=False).run()
    return out / "checkpoints" / "last.pt"


def _final_lines(run_dir):
    keep = [r for r in RunDir(run_dir, resume=True, lock=False).read_metrics() if r["kind"] in ("epoch", "arch")]
    return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in keep]


def test_checkpoints_store_the_config_as_a_plain_dict(corpus_dir, tmp_path, interrupted_after_checkpoint):
    path = _stopped_search(corpus_dir, tmp_path / "run", interrupted_after_checkpoint)
    raw = torch.load(path, weights_only=False)
    assert raw["command"] == "search" and isinstance(raw["config"], dict)
    assert raw["config"]["search"]["optim"]["lr"] == 1.0 and raw["config"]["model"]["hidden"] == 16
    cfg = checkpoint_config(RunDir(tmp_path / "run", resume=True, lock=False).load_checkpoint())
    assert cfg.model.hidden == 16 and cfg.task.bptt == 8 and isinstance(cfg.model.activations, tuple)


def test_a_renamed_config_key_is_migrated_on_load(corpus_dir, tmp_path, monkeypatch, interrupted_after_checkpoint):
    import enas.config

    path = _stopped_search(corpus_dir, tmp_path / "run", interrupted_after_checkpoint)
    ckpt = torch.load(path, weights_only=False)
    ckpt["config"]["search"]["samples_logged"] = ckpt["config"]["search"].pop("log_archs")  # its old name
    ckpt["config"]["search"]["samples_logged"] = 1
    del ckpt["config"]["controller"]["entropy_weight"]  # a key added later: the preset's value
    del ckpt["sha256"]  # as written before checkpoints carried checksums
    torch.save(ckpt, path)
    monkeypatch.setitem(enas.config.RENAMED, "search.samples_logged", "search.log_archs")
    cfg = checkpoint_config(RunDir(tmp_path / "run", resume=True, lock=False).load_checkpoint())
    assert cfg.search.log_archs == 1 and cfg.controller.entropy_weight == 1e-4


def test_kernel_switches_are_recorded_and_old_cell_names_still_load(corpus_dir, tmp_path, interrupted_after_checkpoint):
    path = _stopped_search(corpus_dir, tmp_path / "run", interrupted_after_checkpoint)
    assert "kernels:\n  packed: true\n  bn_products: true" in (tmp_path / "run" / "config.yaml").read_text()
    ckpt = torch.load(path, weights_only=False)
    ckpt["config"]["model"]["cell"] = "fast"  # the recurrent space's name for "path" before the names were unified
    del ckpt["config"]["kernels"]  # a checkpoint from before the section: the defaults, as it ran
    del ckpt["sha256"]  # nor had it a checksum
    torch.save(ckpt, path)
    cfg = checkpoint_config(RunDir(tmp_path / "run", resume=True, lock=False).load_checkpoint())
    assert cfg.model.cell == "path" and cfg.kernels.packed and cfg.kernels.bn_products


def test_a_checkpoint_that_is_not_a_dict_is_one_user_error(tmp_path):
    run = RunDir(tmp_path / "r")
    run.save_checkpoint([1, 2, 3])
    with pytest.raises(UserError, match="not a checkpoint written by enas"):
        run.load_checkpoint()


_KILLED_WHILE_SAVING = """
import sys, time
import torch
from enas.runs.rundir import RunDir
from enas.search.loop import Search
from tests.conftest import tiny_rnn_config

corpus, out, ready = sys.argv[1:4]
original, calls = RunDir.save_checkpoint, []

def save(self, state):
    calls.append(1)
    if len(calls) == 1:
        return original(self, state)
    def partial(f):  # the second checkpoint: half written, then the process hangs until it is killed
        f.write(b"half a checkpoint")
        f.flush()
        open(ready, "w").close()
        time.sleep(600)
    from enas.runs.rundir import atomic_write_bytes
    atomic_write_bytes(self.checkpoint_path, partial)

RunDir.save_checkpoint = save
cfg = tiny_rnn_config(__import__("pathlib").Path(corpus))
Search(cfg, out, progress=False).run()
"""


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_loses_nothing(corpus_dir, tmp_path):
    """A process killed while writing a checkpoint leaves the previous one intact; the next start removes the
    half-written temp file and the resumed run ends as an uninterrupted one."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from enas.search.loop import Search
    from tests.conftest import tiny_rnn_config

    out, ready = tmp_path / "killed", tmp_path / "ready"
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WHILE_SAVING, str(corpus_dir), str(out), str(ready)],
                             cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 120
        while not ready.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < end, "the child never reached its second checkpoint"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    ckpt_dir = out / "checkpoints"
    leftovers = list(ckpt_dir.glob(".last.pt*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].read_bytes() == b"half a checkpoint"
    assert torch.load(ckpt_dir / "last.pt", weights_only=False)["epoch"] == 1  # the previous one, intact

    Search.resume(out, progress=False).run()
    assert not list(ckpt_dir.glob(".last.pt*.tmp"))
    Search(tiny_rnn_config(corpus_dir), tmp_path / "full", progress=False).run()
    assert _final_lines(out) == _final_lines(tmp_path / "full")


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_the_resumed_run_equals_an_uninterrupted_one(corpus_dir, tmp_path):
    """What a scheduler sends before preempting a job: one line naming the resume command, exit status 143, the
    last completed epoch kept; resuming gives the records of a run that was never stopped."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from enas.cli.main import main

    args = ["search", "--space", "rnn", "--preset", "demo", "--device", "cpu", "--no-progress",
            "--set", f"task.root={corpus_dir}", "--set", "task.max_tokens=null", "--set", "model.hidden=16",
            "--set", "model.num_nodes=4", "--set", "task.batch_size=4", "--set", "task.bptt=8",
            "--set", "task.eval_batch_size=4", "--set", "task.reward_batch_size=4", "--set", "search.epochs=4",
            "--set", "search.derive_samples=2", "--set", "search.derive_uniform=0"]
    out = tmp_path / "stopped"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same float sums as this process
    child = subprocess.Popen([sys.executable, "-m", "enas", *args, "--out", str(out)], cwd=root, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 120
    while not (out / "checkpoints" / "last.pt").exists():
        assert child.poll() is None, child.stderr.read()[-2000:]
        assert time.monotonic() < end, "no checkpoint within two minutes"
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    err = child.communicate(timeout=120)[1].strip().splitlines()
    assert child.returncode == 143
    assert err[-1] == ("enas: terminated (SIGTERM); the last completed epoch is checkpointed: continue with "
                       f"`enas search --resume --out {out}`")
    assert main(["search", "--resume", "--out", str(out), "--no-progress"]) == 0
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    assert _final_lines(out) == _final_lines(tmp_path / "full")


def test_a_corrupted_checkpoint_is_refused_on_resume(corpus_dir, tmp_path, interrupted_after_checkpoint, capsys):
    """Bits changed in the content (here one controller weight and, separately, the RNG state) fail the checksum
    written with the checkpoint: resume is refused with one line, exit status 2, and the file is left as it is."""
    from enas.cli.main import main

    path = _stopped_search(corpus_dir, tmp_path / "run", interrupted_after_checkpoint)
    capsys.readouterr()
    intact = path.read_bytes()
    for change in ("controller", "rng"):
        ckpt = torch.load(path, weights_only=False)
        if change == "controller":
            weights = ckpt["controller"]["model"] if "model" in ckpt["controller"] else ckpt["controller"]
            name = next(k for k, v in weights.items() if torch.is_tensor(v) and v.is_floating_point())
            weights[name].view(-1)[0] += 1e-3
        else:
            ckpt["rng"]["torch"][100] ^= 1
        torch.save(ckpt, path)
        corrupted = path.read_bytes()
        assert main(["search", "--resume", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "corrupted" in err[0] and "checksum" in err[0]
        assert path.read_bytes() == corrupted
        path.write_bytes(intact)


def test_resume_on_other_data_is_refused_unless_asked(corpus_dir, tmp_path, interrupted_after_checkpoint, capsys):
    from enas.cli.main import main
    from tests.conftest import write_corpus

    path = _stopped_search(corpus_dir, tmp_path / "run", interrupted_after_checkpoint)
    recorded = torch.load(path, weights_only=False)["data"]
    capsys.readouterr()
    write_corpus(corpus_dir, seed=1)  # other text at the same path
    args = ["search", "--resume", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the data differ" in err[0] and "resume_new_data=true" in err[0]
    assert main([*args, "--set", "resume_new_data=true"]) == 0
    assert torch.load(path, weights_only=False)["data"] != recorded


def test_the_resume_hint_is_a_command_that_works(tmp_path):
    """Interrupt and lost-rank messages name the subcommand, and a user space's --trust-space (without it a resume
    of such a run is refused)."""
    from enas.runs import rundir

    built_in, user = tmp_path / "a", tmp_path / "b"
    rundir.open_run_dir(built_in, False, "search").close()
    (built_in / "config.yaml").write_text("space: macro\nspace_source: ''\n")
    assert rundir.resume_command(built_in) == f"`enas search --resume --out {built_in}`"
    rundir.open_run_dir(user, False, "train").close()
    (user / "config.yaml").write_text("space: mlp\nspace_source: examples/mlp_choices.py:SPACE\n")
    assert rundir.resume_command(user) == \
        f"`enas train --resume --out {user} --trust-space examples/mlp_choices.py:SPACE`"
    assert rundir.last_opened() == user
    (user / "checkpoints" / "last.pt").write_bytes(b"x")
    assert rundir.dist.resume_hint() == f"the last checkpoint is intact: rerun with {rundir.resume_command(user)}"


@pytest.mark.slow
def test_a_user_forward_that_fails_leaves_no_run_directory(tmp_path):
    """A user's model that raises in its first step: the error reaches the user, no half-made run stays behind."""
    from enas.presets import resolve
    from enas.search.loop import Search

    space_file = tmp_path / "broken_space.py"
    example = (Path(__file__).resolve().parents[2] / "examples" / "mlp_choices.py").read_text()
    space_file.write_text(example.replace("    def forward(self, x):\n",
                                          "    def forward(self, x):\n        raise RuntimeError('boom')\n", 1)
                          .replace('choice_space("mlp-choices"', 'choice_space("broken-mlp"'))
    rng = np.random.default_rng(0)
    x, xt = rng.normal(size=(200, 6)), rng.normal(size=(40, 6))
    np.savez(tmp_path / "t.npz", x_train=x, y_train=(x[:, 0] > 0).astype(np.int64), x_test=xt,
             y_test=(xt[:, 0] > 0).astype(np.int64))
    cfg = resolve(f"{space_file}:SPACE", "search", preset="demo", dataset=str(tmp_path / "t.npz"),
                  sets=["task.valid_size=40", "search.epochs=1"], device="cpu")
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"):
        Search(cfg, out, progress=False).run()
    assert not out.exists()

    (tmp_path / "mine").mkdir()  # a folder the user made beforehand is not removed
    with pytest.raises(RuntimeError, match="boom"):
        Search(cfg, tmp_path / "mine", progress=False).run()
    assert (tmp_path / "mine").is_dir()
