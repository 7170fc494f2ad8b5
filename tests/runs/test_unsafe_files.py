"""Files from elsewhere never run code: checkpoints and model files load as tensors and plain values only."""

import os

import pytest
import torch

from enas.cli.main import main
from enas.runs.rundir import RunDir, UnsafeFileError, load_tensors
from tests.conftest import tiny_rnn_config


class Payload:
    """What a hostile file holds: unpickling it would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def finished(corpus_dir, tmp_path):
    from enas import FinalTraining, Search, load_arch

    Search(tiny_rnn_config(corpus_dir), tmp_path / "search", progress=False).run()
    arch = load_arch(tmp_path / "search" / "arch.json")
    FinalTraining(tiny_rnn_config(corpus_dir, "train"), arch, tmp_path / "train", progress=False).run()
    return tmp_path


def test_the_files_enas_writes_load_without_code(finished):
    ckpt = load_tensors(finished / "search" / "checkpoints" / "last.pt")
    assert isinstance(ckpt["config"], dict) and "supernet" in ckpt
    assert load_tensors(finished / "train" / "model.pt")["format"]


@pytest.mark.slow  # six end-to-end runs (setup) of a few seconds each
@pytest.mark.parametrize("command, target", [
    (["derive", "{run}"], "search/checkpoints/last.pt"),
    (["search", "--resume", "--out", "{run}", "--no-progress"], "search/checkpoints/last.pt"),
    (["train", "--resume", "--out", "{run}", "--no-progress"], "train/checkpoints/last.pt"),
    (["eval", "{run}"], "train/model.pt"),
    (["export", "{run}", "-o", "{tmp}/m.pt2"], "train/model.pt"),
])
def test_a_pickle_payload_is_refused_and_never_runs(finished, command, target, capsys):
    path = finished / target
    state = load_tensors(path)
    marker = finished / "payload-ran"
    state["config"] = Payload(marker)  # a plausible place: the stored config
    torch.save(state, path)
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    argv = [a.format(run=run, tmp=finished) for a in command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not load files that could run code" in err[0] and "system" in err[0]
    assert not marker.exists()


def test_a_checkpoint_that_pickled_objects_is_refused(corpus_dir, tmp_path):
    """The first checkpoint layout pickled the Config dataclass itself; such files are refused, not unpickled."""
    from enas import Search

    Search(tiny_rnn_config(corpus_dir), tmp_path / "run", progress=False).run()
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt = load_tensors(path)
    ckpt["config"] = tiny_rnn_config(corpus_dir)
    torch.save(ckpt, path)
    with pytest.raises(UnsafeFileError, match="enas.config.Config"):
        RunDir(tmp_path / "run", resume=True, lock=False).load_checkpoint()


def test_a_lock_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, capsys):
    target = tmp_path / "elsewhere.txt"
    target.write_text("the user's file\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(target)
    assert main(["search", "--space", "rnn", "--preset", "demo", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "symbolic link" in err[0]
    assert target.read_text() == "the user's file\n"


def test_a_folder_with_other_files_is_not_overwritten(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "arch.json").write_text("my notes\n")
    assert main(["search", "--space", "rnn", "--preset", "demo", "--out", str(folder), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run directory" in err[0]
    assert sorted(p.name for p in folder.iterdir()) == ["arch.json"]
    assert (folder / "arch.json").read_text() == "my notes\n"


def test_results_are_written_under_the_users_umask(tmp_path):
    from enas.runs.rundir import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}\n")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.json", "{}\n")
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
