"""The bad-input corpus: every command given a wrong path, a malformed file, a bad value or a forbidden change ends
with exit status 2 and one line on stderr (no traceback), and no file of an existing run changes."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from enas.cli.main import main

RNN_TINY = ["--preset", "demo", "--device", "cpu", "--set", "task.max_tokens=null", "--set", "model.hidden=16",
            "--set", "model.num_nodes=4", "--set", "task.batch_size=4", "--set", "task.bptt=8",
            "--set", "task.eval_batch_size=4", "--set", "task.reward_batch_size=4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished tiny search and a finished tiny training, plus the files the cases need."""
    from tests.conftest import write_corpus, write_npz

    root = tmp_path_factory.mktemp("bad")
    corpus = write_corpus(root / "corpus")
    npz = write_npz(root / "tiny.npz")
    common = [*RNN_TINY, "--set", f"task.root={corpus}"]
    search, train = root / "search", root / "train"
    assert main(["search", "--space", "rnn", "--out", str(search), "--no-progress", *common,
                 "--set", "search.epochs=1", "--set", "controller.train_steps=2", "--set", "search.derive_samples=2",
                 "--set", "search.derive_uniform=0"]) == 0
    assert main(["train", str(search / "arch.json"), "--out", str(train), "--no-progress", *common,
                 "--set", "train.epochs=1"]) == 0
    files = {
        "file": root / "plain.txt",
        "non_utf8": root / "latin1.yaml",
        "bad_yaml": root / "bad.yaml",
        "scalar_section": root / "scalar.yaml",
        "list_yaml": root / "list.yaml",
        "unknown_key_yaml": root / "unknown.yaml",
        "nan_lr_yaml": root / "nan.yaml",
        "bad_json": root / "bad.json",
        "bad_act": root / "act.json",
        "bad_npz": root / "bad.npz",
        "float_npz": root / "float.npz",
        "member_npz": root / "member.npz",
        "binary_metrics_run": root / "binary-metrics",
        "truncated_ckpt_run": root / "truncated",
    }
    files["file"].write_text("not a directory\n")
    files["non_utf8"].write_bytes("search:\n  epochs: 2 # caf\xe9\n".encode("latin-1"))
    files["bad_yaml"].write_text("search: [unclosed\n")
    files["scalar_section"].write_text("search: 5\n")
    files["list_yaml"].write_text("- 1\n- 2\n")
    files["unknown_key_yaml"].write_text("search:\n  epoks: 3\n")
    files["nan_lr_yaml"].write_text("search:\n  optim:\n    lr: .nan\n")
    files["bad_json"].write_text("{not json")
    files["bad_act"].write_text(json.dumps({"space": "rnn", "nodes": [{"act": "swish"}], "output": "loose_ends"}))
    files["bad_npz"].write_bytes(b"PK\x03\x04 this is no zip")
    np.savez(files["float_npz"], x_train=np.zeros((4, 8, 8), np.float32), y_train=np.zeros(4, np.int64),
             x_test=np.zeros((2, 8, 8), np.float32), y_test=np.zeros(2, np.int64))
    import zipfile

    with zipfile.ZipFile(files["float_npz"]) as z, zipfile.ZipFile(files["member_npz"], "w") as w:
        for name in z.namelist():  # x_train.npy that is not a .npy file
            w.writestr(name, b"not an array" if name == "x_train.npy" else z.read(name))
    broken = files["binary_metrics_run"]
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "checkpoints" / "last.pt").write_bytes((search / "checkpoints" / "last.pt").read_bytes())
    (broken / "metrics.jsonl").write_bytes(os.urandom(512))
    truncated = files["truncated_ckpt_run"]
    (truncated / "checkpoints").mkdir(parents=True)
    (truncated / "checkpoints" / "last.pt").write_bytes((search / "checkpoints" / "last.pt").read_bytes()[:300])
    return {"root": root, "corpus": corpus, "npz": npz, "search": search, "train": train, "common": common, **files}


def _checksums(*dirs: Path) -> dict[str, str]:
    out = {}
    for d in dirs:
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.name != ".lock":
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# (case id, argv with {placeholders}, a fragment the one-line message must contain)
CASES = [
    # --- search: flags and values ---
    ("search-no-space", "search", "--space is required"),
    ("search-bad-space", "search --space cnn", "unknown space 'cnn'"),
    ("search-missing-space-file", "search --space {root}/missing.py:SPACE", "argument --space: cannot import"),
    ("search-bad-precision", "search --space micro --data {npz} --set precision=fp16", "precision must be one of"),
    ("search-missing-npz", "search --space micro --data {root}/missing.npz", "does not exist"),
    ("search-bad-npz", "search --space micro --data {bad_npz} --preset demo", "not a readable .npz"),
    ("search-float-npz", "search --space micro --data {float_npz} --preset demo", "uint8"),
    ("search-npz-member-not-array", "search --space micro --data {member_npz} --preset demo", "not arrays"),
    ("search-space-data-mismatch", "search --space micro --data ptb", "image classifiers"),
    ("search-rnn-on-images", "search --space rnn --data fashion-mnist", "rnn"),
    ("search-missing-config", "search --space rnn --config {root}/missing.yaml", "does not exist"),
    ("search-non-utf8-config", "search --space rnn --config {non_utf8}", "UTF-8"),
    ("search-bad-yaml", "search --space rnn --config {bad_yaml}", "not valid YAML"),
    ("search-scalar-section", "search --space rnn --config {scalar_section} --print-config", "section"),
    ("search-list-yaml", "search --space rnn --config {list_yaml}", "mapping"),
    ("search-unknown-yaml-key", "search --space rnn --config {unknown_key_yaml}", "epoks"),
    ("search-nan-lr-yaml", "search --space rnn --config {nan_lr_yaml}", "search.optim.lr"),
    ("search-unknown-set", "search --space rnn --set search.epoks=3", "did you mean"),
    ("search-set-without-equals", "search --space rnn --set search.epochs", "KEY=VALUE"),
    ("search-negative-lr", "search --space rnn --set search.optim.lr=-1", "search.optim.lr"),
    ("search-nan-lr", "search --space rnn --set search.optim.lr=nan", "search.optim.lr"),
    ("search-inf-lr", "search --space rnn --set search.optim.lr=inf", "search.optim.lr"),
    ("search-zero-lr", "search --space micro --data fashion-mnist --set search.optim.lr=0", "search.optim.lr"),
    ("search-negative-clip", "search --space rnn --set search.optim.grad_clip=-1", "grad_clip"),
    ("search-unknown-cnn-cell", "search --space micro --data {npz} --set model.cell=fast", "model.cell must be one of"),
    ("search-compile-without-graph", "search --space macro --data {npz} --set model.compile_cell=true",
     "set model.cell=graph"),
    ("search-momentum-one", "search --space micro --set search.optim.momentum=1.0", "momentum"),
    ("search-bad-schedule", "search --space rnn --set search.optim.schedule=linear", "schedule"),
    ("search-zero-epochs", "search --space rnn --set search.epochs=0", "search.epochs"),
    ("search-text-epochs", "search --space rnn --set search.epochs=many", "integer"),
    ("search-zero-derive", "search --space rnn --set search.derive_samples=0", "derive_samples"),
    ("search-bad-reward-mode", "search --space rnn --set search.reward_mode=test", "reward_mode"),
    ("search-zero-hidden", "search --space rnn --set model.hidden=0", "model.hidden"),
    ("search-odd-channels", "search --space micro --set model.channels=7", "channels"),
    ("search-dropout-one", "search --space rnn --set model.dropout_x=1.0", "dropout_x"),
    ("search-negative-controller-lr", "search --space rnn --set controller.lr=-0.1", "controller"),
    ("search-nan-entropy", "search --space rnn --set controller.entropy_weight=nan", "entropy_weight"),
    ("search-zero-batch", "search --space micro --set task.batch_size=0", "batch_size"),
    ("search-negative-seed", "search --space rnn --seed -1", "seed"),
    ("search-model-too-large", "search --space rnn --data ptb --set task.root={corpus} --out {root}/big "
     "--set model.hidden=200000", "model.hidden=200000"),
    ("train-model-too-large", "train --space micro --data {npz} --preset demo --out {root}/big-train "
     "--fixed-arc '" + " ".join(["0 0 0 0"] * 10) + "' --set model.channels=100000", "model.channels=100000"),
    ("search-huge-seed", "search --space rnn --seed 4294967296", "seed"),
    ("search-bad-seeds", "search --space rnn --seeds a,b", "--seeds"),
    ("search-duplicate-seeds", "search --space rnn --seeds 1,1", "twice"),
    ("search-seed-and-seeds", "search --space rnn --seed 1 --seeds 1,2", "not both"),
    ("search-bad-controller", "search --space rnn --controller ppo", "invalid choice"),
    ("search-device-mps", "search --space rnn {rnn} --device mps", "not supported"),
    ("search-device-bogus", "search --space rnn {rnn} --device tpu:0", "device"),
    # --- search: output paths and existing runs ---
    ("search-out-is-file", "search --space rnn {rnn} --out {file}", "is a file"),
    ("search-out-under-file", "search --space rnn {rnn} --out {file}/run", "cannot create"),
    ("search-existing-run", "search --space rnn {rnn} --out {search}", "already holds a run"),
    ("search-resume-no-out", "search --resume", "--resume needs --out"),
    ("search-resume-missing", "search --resume --out {root}/nothing", "nothing to resume"),
    ("search-resume-hidden", "search --resume --out {search} --set model.hidden=32", "model.hidden cannot change"),
    ("search-resume-space", "search --resume --out {search} --space micro", "space cannot change"),
    ("search-resume-data", "search --resume --out {search} --data fashion-mnist", "dataset cannot change"),
    ("search-resume-seed", "search --resume --out {search} --seed 5", "seed cannot change"),
    ("search-resume-preset", "search --resume --out {search} --preset quick", "preset cannot change"),
    ("search-resume-policy", "search --resume --out {search} --controller random", "policy"),
    ("search-resume-nan-lr", "search --resume --out {search} --set search.optim.lr=nan", "search.optim.lr"),
    ("search-resume-truncated", "search --resume --out {truncated_ckpt_run}", "cannot be read"),
    ("search-resume-binary-metrics", "search --resume --out {binary_metrics_run} --set search.epochs=1",
     "metrics.jsonl"),
    # --- derive ---
    ("derive-missing", "derive {root}/missing", "not a directory"),
    ("derive-no-checkpoint", "derive {corpus}", "no checkpoint"),
    ("derive-train-run", "derive {train}", "not a search run"),
    ("derive-zero-samples", "derive {search} --samples 0", "--samples"),
    ("derive-truncated", "derive {truncated_ckpt_run}", "cannot be read"),
    # --- train ---
    ("train-no-arch", "train --data ptb", "ARCH.json"),
    ("train-missing-arch", "train {root}/missing.json --data ptb", "missing.json"),
    ("train-bad-json", "train {bad_json} --data ptb", "not valid JSON"),
    ("train-bad-act", "train {bad_act} --data ptb", "swish"),
    ("train-fixed-arc-no-space", "train --fixed-arc '0 1 2'", "--space"),
    ("train-fixed-arc-bad", "train --fixed-arc '0 9 9 x' --space rnn --data ptb", "fixed"),
    ("train-file-and-fixed-arc", "train {search}/arch.json --fixed-arc '0 0' --space rnn", "not both"),
    ("train-space-mismatch", "train {search}/arch.json --space micro", "rnn"),
    ("train-cutout-rnn", "train {search}/arch.json --cutout 8", "cutout"),
    ("train-zero-lr", "train {search}/arch.json --set train.optim.lr=0", "train.optim.lr"),
    ("train-negative-epochs", "train {search}/arch.json --set train.epochs=-3", "train.epochs"),
    ("train-existing-run", "train {search}/arch.json {rnn} --out {train}", "already holds a run"),
    ("train-resume-missing", "train --resume --out {root}/nothing", "nothing to resume"),
    ("train-resume-hidden", "train --resume --out {train} --set model.hidden=8", "model.hidden cannot change"),
    ("train-out-is-file", "train {search}/arch.json {rnn} --out {file}", "is a file"),
    # --- eval ---
    ("eval-missing", "eval {root}/missing", "missing"),
    ("eval-search-run", "eval {search}", "model"),
    ("eval-other-data", "eval {train} --data fashion-mnist", "fashion-mnist"),
    ("eval-bad-split", "eval {train} --split train", "invalid choice"),
    ("eval-device-mps", "eval {train} --device mps", "not supported"),
    # --- show ---
    ("show-missing", "show {root}/missing.json", "missing.json"),
    ("show-bad-json", "show {bad_json}", "not valid JSON"),
    ("show-output-under-file", "show {search}/arch.json -o {file}/arch.png", "plain.txt"),
    ("show-nothing", "show", "ARCH.json"),
    # --- bench, data, rank ---
    ("bench-json-under-file", "bench --size small --space rnn --json {file}/out.json", "plain.txt"),
    ("bench-bad-space", "bench --space cnn", "invalid choice"),
    ("data-missing-npz", "data {root}/missing.npz", "does not exist"),
    ("data-bad-npz", "data {bad_npz}", "not a readable .npz"),
    ("rank-missing", "rank {root}/missing --archs 3 --train-epochs 1", "not a directory"),
    ("rank-one-arch", "rank {search} --archs 1 --train-epochs 1", "--archs"),
    ("rank-zero-epochs", "rank {search} --archs 3 --train-epochs 0", "--train-epochs"),
    ("rank-train-run", "rank {train} --archs 3 --train-epochs 1", "search run"),
    ("no-command", "", "COMMAND"),
    ("unknown-command", "serach --space rnn", "invalid choice"),
]


def _argv(template: str, runs: dict) -> list[str]:
    import shlex

    values = {k: str(v) for k, v in runs.items() if isinstance(v, Path)}
    values["rnn"] = " ".join(shlex.quote(a) for a in runs["common"])
    return shlex.split(template.format(**values))


def test_the_corpus_is_large_and_covers_every_command():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    commands = {c[1].split()[0] for c in CASES if c[1]}
    assert {"search", "derive", "train", "eval", "show", "bench", "data", "rank"} <= commands


@pytest.mark.timeout(90)  # a case that wrongly starts a paper-size run fails here instead of running for hours
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, runs, capsys):
    name, template, fragment = case
    if name in ("search-device-mps", "eval-device-mps") and getattr(torch.backends, "mps", None) \
            and torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    before = _checksums(runs["search"], runs["train"])
    try:
        code = main(_argv(template, runs))
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, f"{name}: exit {code}, stderr {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("enas: error:"), f"{name}: {err!r}"
    assert "Traceback" not in err
    assert re.search(re.escape(fragment), lines[0], re.IGNORECASE), f"{name}: {lines[0]!r} lacks {fragment!r}"
    assert _checksums(runs["search"], runs["train"]) == before, f"{name} changed a file of an existing run"


def test_oversized_and_hostile_arch_input_is_refused_before_any_model_is_built(tmp_path, capsys):
    """Sizes are bounded before parsing or building: file size, JSON nesting, huge integers, arch sizes, the
    integer notation's length and export's window."""
    big = tmp_path / "big.json"
    big.write_text('{"space": "rnn", "nodes": [' + ", ".join(['{"act": "tanh"}'] * 80_000) + "]}")
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    digits = tmp_path / "digits.json"
    digits.write_text('{"space": "rnn", "nodes": [{"act": "tanh", "input": ' + "9" * 5000 + "}]}")
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"space": "rnn", "nodes": [{"act": "tanh"}] + [{"input": 0, "act": "relu"}] * 500}))
    cases = [
        (["show", str(big)], "at most 1,048,576"),
        (["show", str(nested)], "nested too deeply"),
        (["show", str(digits)], "number too long"),
        (["show", str(many)], "at most 100 nodes"),
        (["show", "--space", "rnn", "--fixed-arc", "0 " * 60_000], "at most 100,000"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 2, argv[:2]
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], (argv[:2], err)
