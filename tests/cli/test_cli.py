"""The command line: exit codes, one-line errors, show/search/train/eval round trips."""

import json
import subprocess
import sys

import pytest

from enas.cli.main import main

PTB_CELL = "0 0 0 1 1 2 1 2 0 2 0 5 1 1 0 6 1 8 1 8 1 8 1"
MICRO = "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "enas.cli.main", *args], capture_output=True, text=True, timeout=120)


def test_show_json_for_the_published_cells(capsys, tmp_path):
    assert main(["show", "--fixed-arc", PTB_CELL, "--space", "rnn", "--json", "-o", str(tmp_path / "c.png")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["space"] == "rnn" and info["hidden"] == 800 and info["fixed_arc"] == PTB_CELL
    # tied embedding (10000 x 800) + node 0 (2 x 800 x 1600) + 11 nodes (800 x 1600)
    assert info["params"] == 10000 * 800 + 2 * 800 * 1600 + 11 * 800 * 1600
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert main(["show", "--fixed-arc", MICRO, "--space", "micro", "--json", "--set", "model.channels=36"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["channels"] == 36 and info["layers"] == 15 and 2_000_000 < info["params"] < 8_000_000


def test_show_text_prints_params(capsys, tmp_path):
    arch_file = tmp_path / "a.json"
    assert main(["show", "--fixed-arc", PTB_CELL, "--space", "rnn", "--json"]) == 0
    arch_file.write_text(json.dumps(json.loads(capsys.readouterr().out)["arch"]))
    assert main(["show", str(arch_file), "--set", "model.hidden=100"]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "hidden 100" in out


@pytest.mark.parametrize("args,needle", [
    (["show", "missing.json"], "does not exist"),
    (["show", "--fixed-arc", "0 9 9", "--space", "rnn"], ""),
    (["search", "--space", "rnn", "--data", "cifar10"], "--data ptb"),
    (["search", "--space", "micro", "--set", "search.epoch=3"], "did you mean"),
    (["train", "--fixed-arc", MICRO, "--space", "macro"], ""),
    (["eval", "nowhere"], "no model"),
    (["search", "--space", "rnn", "--set", "task.root=/nonexistent/dir", "--out", "OUT"], "/nonexistent/dir"),
])
def test_user_errors_exit_2_with_one_line(args, needle, tmp_path):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("enas: error:") and "Traceback" not in result.stderr
    assert needle in lines[0]


@pytest.mark.slow
def test_malformed_arch_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = run_cli("show", str(bad))
    assert result.returncode == 2 and "not valid JSON" in result.stderr
    bad.write_text(json.dumps({"space": "rnn", "nodes": [{"act": "swish"}], "output": "loose_ends"}))
    result = run_cli("train", str(bad), "--data", "ptb")
    assert result.returncode == 2 and "swish" in result.stderr


def test_print_config_lists_dotted_keys(capsys):
    assert main(["search", "--space", "micro", "--data", "fashion-mnist", "--print-config", "--set",
                 "search.epochs=5"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 5" in out and "controller:" in out and "fashion-mnist" in out


@pytest.mark.slow
def test_search_train_eval_via_the_cli(corpus_dir, tmp_path, capsys):
    common = ["--preset", "demo", "--device", "cpu", "--set", f"task.root={corpus_dir}",
              "--set", "task.max_tokens=null", "--set", "model.hidden=16", "--set", "model.num_nodes=4",
              "--set", "task.batch_size=4",
              "--set", "task.bptt=8", "--set", "task.eval_batch_size=4", "--set", "task.reward_batch_size=4"]
    assert main(["search", "--space", "rnn", "--out", str(tmp_path / "s"), "--no-progress", *common,
                 "--set", "search.epochs=1", "--set", "controller.train_steps=2",
                 "--set", "search.derive_samples=2"]) == 0
    assert "best arch" in capsys.readouterr().out
    assert main(["derive", str(tmp_path / "s"), "--samples", "2"]) == 0
    assert main(["train", str(tmp_path / "s" / "arch.json"), "--out", str(tmp_path / "t"), "--no-progress", *common,
                 "--set", "train.epochs=1"]) == 0
    assert "test_ppl" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "t"), "--set", f"task.root={corpus_dir}", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["test_ppl"] > 1


def test_python_dash_m_enas_runs_the_cli():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "enas", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "search" in proc.stdout


@pytest.mark.slow
def test_resume_applies_what_may_change_and_refuses_the_rest(corpus_dir, tmp_path, capsys):
    import yaml

    common = ["--preset", "demo", "--device", "cpu", "--set", f"task.root={corpus_dir}",
              "--set", "task.max_tokens=null", "--set", "model.hidden=16", "--set", "model.num_nodes=4",
              "--set", "task.batch_size=4", "--set", "task.bptt=8", "--set", "task.eval_batch_size=4",
              "--set", "task.reward_batch_size=4", "--set", "controller.train_steps=2",
              "--set", "search.derive_samples=2", "--set", "search.derive_uniform=0"]
    run = tmp_path / "s"
    assert main(["search", "--space", "rnn", "--out", str(run), "--no-progress", *common,
                 "--set", "search.epochs=1"]) == 0
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}
    capsys.readouterr()
    refusals = [
        (["--set", "model.hidden=32"], "model.hidden cannot change"),
        (["--space", "micro"], "space cannot change"),
        (["--data", "fashion-mnist"], "dataset cannot change"),
        (["--preset", "paper"], "preset cannot change"),
        (["--seed", "7"], "seed cannot change"),
        (["--set", "task.bptt=9"], "task.bptt cannot change"),
    ]
    config = tmp_path / "new.yaml"
    config.write_text(yaml.safe_dump({"model": {"num_nodes": 6}}))
    refusals.append((["--config", str(config)], "model.num_nodes cannot change"))
    for extra, message in refusals:
        result = run_cli("search", "--resume", "--out", str(run), *extra)
        assert result.returncode == 2, (extra, result.stderr)
        assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr
    after = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}
    assert after == before  # a refused resume changes nothing
    # the same values as the run's are not changes; epochs and learning rates are applied
    config.write_text(yaml.safe_dump({"search": {"epochs": 2, "optim": {"lr": 1.5}}, "controller": {"lr": 0.001}}))
    assert main(["search", "--resume", "--out", str(run), "--no-progress", "--preset", "demo", "--seed", "0",
                 "--set", "model.hidden=16", "--config", str(config)]) == 0
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2] and epochs[1]["lr"] == pytest.approx(1.5)  # no decay before 3
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["search"]["epochs"] == 2 and saved["controller"]["lr"] == 0.001
    assert saved["model"]["hidden"] == 16


def test_ctrl_c_in_the_first_epoch_says_nothing_can_be_resumed(corpus_dir, tmp_path, capsys, monkeypatch):
    from enas.search.loop import Search

    def interrupted(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(Search, "train_shared", interrupted)
    out = tmp_path / "run"
    code = main(["search", "--space", "rnn", "--out", str(out), "--no-progress", "--preset", "demo", "--device", "cpu",
                 "--set", f"task.root={corpus_dir}", "--set", "task.max_tokens=null", "--set", "model.hidden=16"])
    err = capsys.readouterr().err.strip()
    assert code == 130 and err.count("\n") == 0
    assert "before the first checkpoint" in err and "--resume" not in err
    assert main(["search", "--space", "rnn", "--out", str(out), "--print-config"]) == 0  # the same --out works again


def test_flag_keys_syntax_errors_and_closed_pipes_are_one_line_or_quiet(tmp_path, capsys):
    from enas.cli.main import main

    assert main(["search", "--space", "rnn", "--preset", "demo", "--set", "space=macro", "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "space is chosen with --space" in err[0]
    (tmp_path / "broken.py").write_text("def broken(:\n")
    with pytest.raises(SystemExit) as e:
        main(["search", "--space", f"{tmp_path / 'broken.py'}:SPACE", "--print-config"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 1: invalid syntax" in err[0]
    shown = subprocess.run(f"{sys.executable} -m enas show --fixed-arc '0 0 0 1 1 2' --space rnn | head -1",
                           shell=True, capture_output=True, text=True, timeout=120)
    assert shown.stdout.startswith("rnn cell") and shown.stderr == ""
