"""`enas export`: tiny trained children of the three spaces exported with torch.export (and ONNX when installed),
loaded by a Python that cannot import enas, and compared with the eager children; the inputs it refuses."""

import argparse
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from enas.arch import parse_fixed_arc
from enas.errors import UserError
from enas.export.model import add_parser, cmd_export, export_model, load_child
from enas.search.loop import Search
from enas.train.final import FinalTraining
from tests.conftest import tiny_image_config, tiny_rnn_config, write_corpus, write_npz

ARCS = {
    "rnn": "0 0 1 1 2 1 1",
    "macro": "0 3 0 0 1 0",
    "micro": "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny training run (one epoch) per space: space -> run directory."""
    root = tmp_path_factory.mktemp("export")
    corpus, npz = write_corpus(root / "corpus"), write_npz(root / "tiny.npz")
    out = {}
    for space, arc in ARCS.items():
        cfg = tiny_rnn_config(corpus, "train") if space == "rnn" else tiny_image_config(space, npz, "train")
        cfg.train.epochs = 1
        FinalTraining(cfg, parse_fixed_arc(arc, space), root / f"train-{space}", progress=False).run()
        out[space] = root / f"train-{space}"
    return out


def _inputs(space, child, raw, cfg, batch):
    g = torch.Generator().manual_seed(batch)
    info = raw["task_info"]
    if space == "rnn":
        return (torch.randint(0, info["vocab_size"], (cfg.task.bptt, batch), generator=g),
                torch.randn(batch, child.hidden_size, generator=g))
    size = info["image_size"]
    return (torch.randn(batch, info["in_channels"], size, size, generator=g),)


@torch.no_grad()
def _eager(space, child, inputs):
    out = child(*inputs)
    return [out[0], out[1]] if space == "rnn" else [out[0]]


# A fresh interpreter (-I: no PYTHONPATH, no user site, no script directory on the path) in which any import of enas
# fails: the exported files must load and run with torch alone.
LOADER = textwrap.dedent("""
    import sys
    sys.modules["enas"] = None  # the package is installed (editable) in this environment: make it unimportable
    try:
        import enas  # noqa: F401
        raise SystemExit("enas is importable")
    except ImportError:
        pass
    import torch
    torch.set_num_threads(1)
    cases = torch.load(sys.argv[1])
    results = {}
    for space, case in cases.items():
        extra = {"enas.json": ""}
        module = torch.export.load(case["path"], extra_files=extra).module()
        with torch.no_grad():
            outs = [module(*inputs) for inputs in case["inputs"]]
        results[space] = {"outputs": [list(o) if isinstance(o, tuple) else [o] for o in outs],
                          "metadata": extra["enas.json"]}
    assert not [m for m in sys.modules if m.startswith("enas.")], "an enas module was loaded"
    torch.save(results, sys.argv[2])
""")


@pytest.mark.slow
def test_torch_export_loads_and_matches_without_enas(runs, tmp_path):
    cases, expected, children = {}, {}, {}
    for space, run in runs.items():
        path = export_model(run, "torch-export")
        assert path == run / "model.pt2" and path.is_file()
        child, raw, cfg, _ = load_child(run)
        children[space] = (child, raw, cfg)
        inputs = [_inputs(space, child, raw, cfg, batch) for batch in (1, 5)]  # the batch dimension is dynamic
        cases[space] = {"path": str(path), "inputs": inputs}
        expected[space] = [_eager(space, child, x) for x in inputs]
    torch.save(cases, tmp_path / "cases.pt")
    env = {"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-I", "-c", LOADER, str(tmp_path / "cases.pt"), str(tmp_path / "out.pt")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(tmp_path / "out.pt")
    for space, exp in expected.items():
        for got_outs, exp_outs in zip(results[space]["outputs"], exp):
            assert len(got_outs) == len(exp_outs)
            for got, want in zip(got_outs, exp_outs):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

    for space, (child, raw, cfg) in children.items():
        meta = json.loads(results[space]["metadata"])
        assert meta["space"] == space and meta["fixed_arc"] == ARCS[space] and meta["arch"]["space"] == space
        info = raw["task_info"]
        if space == "rnn":
            assert meta["vocab_size"] == info["vocab_size"] and len(meta["vocab"]) == info["vocab_size"]
            assert meta["inputs"][0]["shape"] == [cfg.task.bptt, "batch"] and meta["inputs"][0]["dtype"] == "int64"
            assert meta["hidden_size"] == child.hidden_size
        else:
            assert meta["num_classes"] == info["num_classes"]
            assert meta["inputs"][0]["shape"] == ["batch", info["in_channels"], info["image_size"],
                                                  info["image_size"]]
            norm = meta["normalisation"]
            assert norm["in_model"] is False and len(norm["mean"]) == len(norm["std"]) == info["in_channels"]
            assert all(0 < m < 1 for m in norm["mean"]) and all(s > 0 for s in norm["std"])


@pytest.mark.slow
def test_language_model_window_length_and_no_data(runs, tmp_path):
    """--seq-len fixes another window length; without the data the metadata says the vocabulary is missing."""
    path = export_model(runs["rnn"], "torch-export", tmp_path / "sub" / "lm.pt2", seq_len=3, data=False)
    extra = {"enas.json": ""}
    module = torch.export.load(path, extra_files=extra).module()
    meta = json.loads(extra["enas.json"])
    assert meta["seq_len"] == 3 and meta["vocab"] is None
    child, raw, cfg, _ = load_child(runs["rnn"])
    tokens, hidden = torch.randint(0, raw["task_info"]["vocab_size"], (3, 2)), torch.zeros(2, child.hidden_size)
    with torch.no_grad():
        got, want = module(tokens, hidden), child(tokens, hidden)
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-5)


def test_cli_default_output_and_message(runs, capsys):
    parser = argparse.ArgumentParser(prog="enas")
    add_parser(parser.add_subparsers(dest="command", required=True))
    model = runs["macro"] / "model.pt"
    args = parser.parse_args(["export", str(model), "-o", str(runs["macro"] / "cli.pt2")])
    assert cmd_export(args) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "cli.pt2" in line and "torch.export.load(" in line and "(images)" in line
    args = parser.parse_args(["export", str(model)])
    assert args.fmt == "torch-export" and args.output is None and args.device == "cpu"


@pytest.mark.slow
@pytest.mark.parametrize("space", ["macro", "rnn"])
def test_onnx_export_matches(runs, tmp_path, space):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    path = export_model(runs[space], "onnx", tmp_path / "model.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert json.loads({p.key: p.value for p in model.metadata_props}["enas"])["space"] == space
    ort = pytest.importorskip("onnxruntime")
    child, raw, cfg, _ = load_child(runs[space])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        inputs = _inputs(space, child, raw, cfg, batch)
        got = session.run(None, {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)})
        for g, want in zip(got, _eager(space, child, inputs)):
            torch.testing.assert_close(torch.from_numpy(g), want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# refused inputs: one line each, before any work
# ---------------------------------------------------------------------------------------------------------------------


def test_missing_path_and_directory_without_model(tmp_path):
    with pytest.raises(UserError, match="does not exist; pass a run directory of `enas train`"):
        export_model(tmp_path / "nowhere", "torch-export")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no model at .*model.pt"):
        export_model(tmp_path / "empty", "torch-export")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(UserError, match="junk.pt cannot be read as a model file"):
        export_model(tmp_path / "junk.pt", "torch-export")


def test_search_run_is_refused(tmp_path):
    cfg = tiny_image_config("macro", write_npz(tmp_path / "tiny.npz"), "search")
    cfg.search.epochs = 1
    Search(cfg, tmp_path / "search", progress=False).run()
    with pytest.raises(UserError, match=r"is a search run.*enas train .*arch.json"):
        export_model(tmp_path / "search", "torch-export")


def test_bad_format_and_missing_onnx(runs, monkeypatch):
    with pytest.raises(UserError, match="unknown export format 'tflite'; use torch-export or onnx"):
        export_model(runs["macro"], "tflite")
    monkeypatch.setattr("enas.export.model._importable", lambda name: False)
    with pytest.raises(UserError, match="pip install onnx"):
        export_model(runs["macro"], "onnx")


def test_bad_output_paths(runs, tmp_path):
    model = runs["macro"] / "model.pt"
    with pytest.raises(UserError, match="is a file, not a directory"):
        export_model(model, "torch-export", model / "x.pt2")
    with pytest.raises(UserError, match="is a directory; give a file to write"):
        export_model(model, "torch-export", tmp_path)
    with pytest.raises(UserError, match="is the model file itself"):
        export_model(runs["macro"], "torch-export", model)
    with pytest.raises(UserError, match="--seq-len applies to language models"):
        export_model(model, "torch-export", tmp_path / "m.pt2", seq_len=4)
    assert not (tmp_path / "m.pt2").exists()
    with pytest.raises(UserError, match=r"--seq-len must be an integer in 1\.\.100000"):
        export_model(runs["rnn"], "torch-export", tmp_path / "m.pt2", seq_len=10**9)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only directories")
def test_unwritable_output_directory(runs, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError, match="not writable"):
            export_model(runs["macro"], "torch-export", locked / "m.pt2")
    finally:
        locked.chmod(0o700)
