"""benchmarks/gpu_check.py --smoke: the GPU check's code path on tiny sizes on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_space(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--json", str(out),
                           "--graph-space", "rnn"],  # the CNN graph supernets take minutes to compile on a CPU
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["space"], r["kind"]) for r in rows] == [(s, k) for s in ("micro", "macro", "rnn")
                                                        for k in ("search", "train")]
    for r in rows:
        assert r["epoch_s"] > 0 and r["protocol_h"] > 0
        if r["kind"] == "search":
            assert r["steps_per_epoch"] > 0 and r["shared_step_s"] > 0 and r["controller_update_s"] > 0
            if r["space"] == "rnn":  # the compiled arch-as-data cell, timed beside the fast one
                assert r["shared_step_graph_compiled_s"] > 0 and r["protocol_graph_compiled_h"] > 0
    assert "| micro | search |" in proc.stdout and "| rnn | search, graph cell compiled |" in proc.stdout


@pytest.mark.slow
def test_gpu_check_refuses_cuda_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        return
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--smoke" in proc.stderr
