"""Several seeds of one run (`--seeds`): OUT/seed-N run directories, seeds.csv, seeds.json, resume."""

import csv
import json
import statistics

import pytest

from enas.cli.main import main
from enas.errors import UserError
from enas.runs.rundir import RunDir
from enas.search.seeds import aggregate, parse_seeds, run_seeds, seed_dir

PTB_CELL = "0 0 0 1 1 2 1 2 0 2 0 5 1 1 0 6 1 8 1 8 1 8 1"


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds(" 7 , 3") == [7, 3]
    assert parse_seeds(str(2**32 - 1)) == [2**32 - 1]
    for bad, needle in (("1,1", "twice"), ("a,1", "not an integer"), ("1,,2", "not an integer"),
                        ("-1", "out of range"), (str(2**32), "out of range"), ("", "not an integer")):
        with pytest.raises(UserError, match=needle) as e:
            parse_seeds(bad)
        assert str(e.value).startswith("--seeds") and "\n" not in str(e.value)


def _fake_runner(calls, figures):
    """A run_one that writes a search-like summary.json (and a checkpoint) without training anything."""

    def run_one(seed, run_dir, resume):
        calls.append((seed, resume))
        RunDir(run_dir, resume=resume).save_checkpoint({"epoch": 1})
        summary = {"command": "search", "seed": seed, "best": {
            "score": figures[seed], "valid_loss": 1.0 + seed, "valid_score": figures[seed], "valid_ppl": 10.0 * seed,
            "valid_tokens": 100, "fixed_arc": f"arc {seed}", "arch": {}}}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return summary

    return run_one


def test_run_seeds_writes_the_table_and_the_statistics(tmp_path):
    calls = []
    figures = {0: 0.5, 3: 0.7, 5: 0.6}
    result = run_seeds([0, 3, 5], tmp_path / "out", _fake_runner(calls, figures), log=None)
    assert calls == [(0, False), (3, False), (5, False)]
    assert result["seeds"] == [0, 3, 5]
    assert set(result["metrics"]) == {"score", "valid_loss", "valid_ppl"}  # no duplicate score, no counts
    score = result["metrics"]["score"]
    assert score["values"] == [0.5, 0.7, 0.6]
    assert score["mean"] == pytest.approx(0.6) and score["std"] == pytest.approx(statistics.stdev([0.5, 0.7, 0.6]))
    assert json.loads((tmp_path / "out" / "seeds.json").read_text()) == result

    rows = list(csv.DictReader(open(tmp_path / "out" / "seeds.csv")))
    assert [r["seed"] for r in rows] == ["0", "3", "5"]
    assert rows[1]["run_dir"] == str(seed_dir(tmp_path / "out", 3)) and rows[1]["fixed_arc"] == "arc 3"
    assert float(rows[1]["score"]) == 0.7 and float(rows[2]["valid_ppl"]) == 50.0

    one = aggregate([4], [{"seed": 4, "run_dir": "r", "fixed_arc": "a", "test_ppl": 80.0, "params": 12}])
    assert one["metrics"] == {"test_ppl": {"mean": 80.0, "std": None, "values": [80.0]},
                              "params": {"mean": 12, "std": None, "values": [12]}}


def test_run_seeds_resume_skips_finished_seeds(tmp_path):
    out = tmp_path / "out"
    figures = {0: 0.5, 1: 0.7, 2: 0.6}
    with pytest.raises(UserError, match="nothing to resume"):
        run_seeds([0, 1, 2], out, _fake_runner([], figures), resume=True, log=None)
    run_seeds([0], out, _fake_runner([], figures), log=None)  # seed 0 finished
    RunDir(seed_dir(out, 1)).save_checkpoint({"epoch": 1})  # seed 1 stopped after a checkpoint; seed 2 not started
    calls = []
    result = run_seeds([0, 1, 2], out, _fake_runner(calls, figures), resume=True, log=None)
    assert calls == [(1, True), (2, False)]
    assert result["metrics"]["score"]["values"] == [0.5, 0.7, 0.6]


@pytest.mark.parametrize("args,needle", [
    (["search", "--space", "rnn", "--seeds", "0,1", "--seed", "3"], "not both"),
    (["search", "--space", "rnn", "--seeds", "0,0"], "--seeds"),
    (["search", "--space", "rnn", "--seeds", "one"], "--seeds"),
    (["train", "--fixed-arc", PTB_CELL, "--space", "rnn", "--seeds", "4294967296"], "--seeds"),
    (["search", "--seeds", "0,1", "--resume", "--out", "OUT"], "nothing to resume"),
])
def test_bad_seed_lists_are_one_line_user_errors(args, needle, tmp_path, capsys):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("enas: error:") and needle in lines[0]


def _common(corpus_dir):
    return ["--preset", "demo", "--device", "cpu", "--no-progress", "--set", f"task.root={corpus_dir}",
            "--set", "task.max_tokens=null", "--set", "model.hidden=16", "--set", "model.num_nodes=4",
            "--set", "task.batch_size=4", "--set", "task.bptt=8", "--set", "task.eval_batch_size=4",
            "--set", "task.reward_batch_size=4"]


def _stop_after_first_checkpoint(monkeypatch):
    original = RunDir.save_checkpoint

    def stop(self, state):
        original(self, state)
        monkeypatch.setattr(RunDir, "save_checkpoint", original)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "save_checkpoint", stop)


@pytest.mark.slow
def test_search_seeds_stop_and_resume(corpus_dir, tmp_path, capsys, monkeypatch):
    search = ["search", "--space", "rnn", "--seeds", "0,1", *_common(corpus_dir), "--set", "search.epochs=2",
              "--set", "controller.train_steps=2", "--set", "search.derive_samples=2", "--set", "search.log_archs=1"]
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert main([*search, "--out", str(full)]) == 0
    out = capsys.readouterr().out
    assert "score" in out and "seeds.json" in out
    result = json.loads((full / "seeds.json").read_text())
    assert result["seeds"] == [0, 1] and {"score", "valid_ppl", "valid_loss"} <= set(result["metrics"])
    for seed in (0, 1):
        summary = json.loads((full / f"seed-{seed}" / "summary.json").read_text())
        assert summary["seed"] == seed and (full / f"seed-{seed}" / "arch.json").is_file()
    rows = list(csv.DictReader(open(full / "seeds.csv")))
    assert [r["fixed_arc"] for r in rows] == [
        json.loads((full / f"seed-{s}" / "summary.json").read_text())["best"]["fixed_arc"] for s in (0, 1)]

    _stop_after_first_checkpoint(monkeypatch)  # Ctrl-C after seed 0's first epoch
    assert main([*search, "--out", str(stopped)]) == 130
    assert not (stopped / "seed-1").exists() and not (stopped / "seeds.json").exists()
    # one seed directory resumes on its own; a plain --resume of OUT says how to resume all of them
    assert main(["search", "--resume", "--out", str(stopped / "seed-0"), "--no-progress"]) == 0
    assert main(["search", "--resume", "--out", str(stopped)]) == 2
    assert "--seeds" in capsys.readouterr().err
    # seed 0 is finished and skipped, seed 1 starts from seed 0's config with its own seed
    assert main(["search", "--seeds", "0,1", "--resume", "--out", str(stopped), "--no-progress"]) == 0
    assert "seed 0 (1/2): finished" in capsys.readouterr().out
    assert json.loads((stopped / "seeds.json").read_text())["metrics"] == result["metrics"]
    assert main(["search", "--seeds", "0,1", "--resume", "--out", str(stopped), "--no-progress"]) == 0
    assert json.loads((stopped / "seeds.json").read_text())["metrics"] == result["metrics"]


@pytest.mark.slow
def test_train_seeds(corpus_dir, tmp_path, capsys):
    out = tmp_path / "t"
    args = ["train", "--fixed-arc", "0 0 0 1 1 2 1", "--space", "rnn", "--seeds", "2,5", "--out", str(out),
            *_common(corpus_dir), "--set", "train.epochs=1"]
    assert main(args) == 0
    assert "test_ppl" in capsys.readouterr().out
    result = json.loads((out / "seeds.json").read_text())
    assert result["seeds"] == [2, 5]
    assert {"test_ppl", "test_loss", "params"} <= set(result["metrics"])
    assert result["metrics"]["params"]["std"] == 0.0
    assert len(set(result["metrics"]["test_ppl"]["values"])) == 2  # the seeds differ
    rows = list(csv.DictReader(open(out / "seeds.csv")))
    assert [r["seed"] for r in rows] == ["2", "5"] and rows[0]["fixed_arc"] == "0 0 0 1 1 2 1"
    assert json.loads((out / "seed-5" / "summary.json").read_text())["seed"] == 5
    # all finished: a resume only rewrites the table
    assert main(["train", "--seeds", "2,5", "--resume", "--out", str(out)]) == 0
    assert json.loads((out / "seeds.json").read_text()) == result


def test_later_seeds_merge_with_the_ones_already_there(tmp_path):
    """--seeds 0,1 then --seeds 2 into the same folder: the table keeps all three (it used to keep only seed 2)."""
    out = tmp_path / "out"
    figures = {0: 0.5, 1: 0.7, 2: 0.6, 3: 0.9}
    run_seeds([0, 1], out, _fake_runner([], figures), log=None)
    for seed in (0, 1):
        (seed_dir(out, seed) / "config.yaml").write_text(f"seed: {seed}\nspace: macro\nsearch: {{epochs: 2}}\n")
    calls, lines = [], []

    def run_two(seed, run_dir, resume):
        summary = _fake_runner(calls, figures)(seed, run_dir, resume)
        (run_dir / "config.yaml").write_text(f"seed: {seed}\nspace: macro\nsearch: {{epochs: 2}}\n")
        return summary

    result = run_seeds([2], out, run_two, log=lines.append)
    assert calls == [(2, False)]  # the earlier seeds are read back, not rerun
    assert result["seeds"] == [2, 0, 1]
    assert result["metrics"]["score"]["values"] == [0.6, 0.5, 0.7]
    assert result["metrics"]["score"]["mean"] == pytest.approx(0.6)
    assert [r["seed"] for r in csv.DictReader(open(out / "seeds.csv"))] == ["2", "0", "1"]
    assert any("seed 0: finished earlier" in line for line in lines)

    # a seed run with another configuration is named and left out, never averaged in
    run_seeds([3], out, _fake_runner([], figures), log=None)
    (seed_dir(out, 3) / "config.yaml").write_text("seed: 3\nspace: macro\nsearch: {epochs: 9}\n")
    lines.clear()
    result = run_seeds([2], out, run_two, resume=True, log=lines.append)
    assert result["seeds"] == [2, 0, 1]
    assert any("seed 3" in line and "another configuration" in line for line in lines)
