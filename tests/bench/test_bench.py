import json
import re

import pytest
import torch

from enas import kernels
from enas.bench.harness import Workload, _KernelCount, _quartiles, interleave, run_benchmarks
from enas.cli.main import main

ROW_KEYS = {"space", "workload", "value", "unit", "reference", "reference_value", "ratio"}


@pytest.mark.slow
@pytest.mark.parametrize("space", ["rnn", "macro", "micro"])
def test_benchmark_rows_are_complete(space):
    result = run_benchmarks([space], device="cpu", size="small", verbose=False, warmup=1, steps=3)
    rows = {r["workload"] + " / " + str(r["reference"]): r for r in result["rows"]}
    for r in result["rows"]:
        assert ROW_KEYS <= set(r) and r["space"] == space and r["value"] > 0
    pair = rows["supernet (arch k) / child (arch k)"]
    assert pair["unit"] == "s/step" and pair["rounds"] == 3 and pair["ratio_q1"] <= pair["ratio"] <= pair["ratio_q3"]
    assert pair["flops"] > 0 and pair["reference_flops"] > 0
    kernels = next(r for r in result["rows"] if r["workload"] == "kernels per supernet step")
    assert kernels["value"] > 50  # forward + backward + optimizer of a real network
    for workload in ("controller step", "eval forward (derive, validation)", "final-training step", "peak memory"):
        assert workload + " / None" in rows
    if space == "rnn":
        assert rows["supernet (fresh arch) / 2-layer nn.LSTM LM"]["flop_parity_ratio"] > 0
        graph = "supernet, graph cell (fresh arch)"
        assert rows[f"{graph} / 2-layer nn.LSTM LM"]["ratio"] > 0
        assert rows[f"{graph} / supernet (fresh arch)"]["unit"] == "s/step"
        launches = rows[f"kernel launches per step, {graph} / None"]["value"]
        assert launches > rows["kernel launches per step, supernet (fresh arch) / None"]["value"] > 50
    if space == "micro":
        assert {"supernet (fresh arch) / plain CNN", "supernet (fresh arch) / 4-conv CNN"} <= set(rows)


def test_interleaving_runs_the_workloads_round_by_round():
    calls = []
    workloads = [Workload(n, lambda i, n=n: calls.append((n, i)), 1) for n in "AB"]
    times = interleave(workloads, torch.device("cpu"), warmup=1, steps=3)
    assert calls == [("A", 0), ("B", 0), ("A", 1), ("B", 1), ("A", 2), ("B", 2), ("A", 3), ("B", 3)]
    assert [len(t) for t in times.values()] == [3, 3]


def test_quartiles_and_kernel_count():
    assert _quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)
    with _KernelCount() as counter:
        a = torch.ones(3)
        (a + a).sum()
    assert counter.count == 3  # ones, add, sum


@pytest.mark.slow
def test_bench_cli_writes_rows_and_checks_the_json_path_first(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--space", "macro", "--size", "small", "--steps", "2", "--warmup", "0", "--device", "cpu",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows and all(ROW_KEYS <= set(r) for r in rows)
    (tmp_path / "file").write_text("x")
    assert main(["bench", "--size", "small", "--json", str(tmp_path / "file" / "b.json")]) == 2
    assert "cannot write --json" in capsys.readouterr().err


def test_step_flops_are_three_forwards_and_include_the_fused_lstm():
    from enas.bench.harness import LSTMLanguageModel, _flops

    depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    x = torch.randn(2, 8, 5, 5)
    forward = 2 * 2 * 25 * 8 * 1 * 9  # 2 x batch x pixels x C_out x C_in/groups x k^2
    assert _flops(lambda i: depthwise(x)) == 3 * forward  # not the counter's groups-blind backward
    lm = LSTMLanguageModel(vocab=50, hidden=16)
    tokens = torch.randint(0, 50, (7, 3))
    decoder = 2 * 21 * 16 * 50
    lstm = 2 * 21 * 2 * 4 * 16 * (16 + 16)  # layers x tokens x 2 x 4H x (H_in + H)
    assert lm.uncounted_flops(21) == lstm
    assert _flops(lambda i: lm(tokens), 0, lm.uncounted_flops(21)) == 3 * (decoder + lstm)


def test_profile_script_groups_the_step_by_kind_of_work():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "profile_step.py"
    spec = importlib.util.spec_from_file_location("profile_step", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows, kinds, total = module.profile_space("micro", steps=1, warmup=0, size="small")
    assert total > 0 and sum(kinds.values()) == pytest.approx(total)
    assert kinds.get("convolutions", 0) > 0 and kinds.get("batch norm", 0) > 0
    assert module.kind_of("aten::mm") == "matrix products" and module.kind_of("aten::relu") == "elementwise and other"


@pytest.mark.parametrize("script,args", [("packed_products.py", ["--size", "small", "--rounds", "1"]),
                                         ("batch_norm.py", ["--rounds", "1"]),
                                         ("batch_norm.py", ["--step", "micro", "--size", "small", "--rounds", "2"])])
@pytest.mark.slow
def test_side_by_side_scripts_print_their_table(script, args):
    import subprocess
    import sys
    from pathlib import Path

    from enas.kernels.packed import packing_enabled

    if script == "packed_products.py" and not packing_enabled(torch.zeros(1)):
        pytest.skip("no MKL packing on this build")
    path = Path(__file__).resolve().parents[2] / "benchmarks" / script
    out = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=300, check=True)
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and re.search(r"\d m?s \|", line)]
    assert len(rows) >= (1 if "--step" in args else 3), out.stdout


def test_counts_see_the_model_as_a_gpu_runs_it(monkeypatch):
    from enas.bench.harness import _as_on_gpu
    from enas.kernels.batch_norm import applies
    from enas.kernels.packed import packing_enabled

    x = torch.zeros(8, 20, 32, 32).contiguous(memory_format=torch.channels_last)
    with _as_on_gpu():
        assert not packing_enabled(torch.zeros(1)) and not applies(x)
    assert kernels.enabled("packed") and kernels.enabled("bn_products")
    assert applies(x)


@pytest.mark.slow
def test_controller_start_script_measures_the_fresh_policy():
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "controller_start.py"
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300, check=True)
    shares = [float(x) for x in re.findall(r"previous node (\d\.\d+)", out.stdout)]
    uniform = float(re.search(r"uniform sampling (\d\.\d+)", out.stdout).group(1))
    assert len(shares) == 2 and 0.2 < uniform < 0.35  # 1 / (mean number of earlier nodes) for 8 nodes
    demo, paper = shares
    assert abs(demo - uniform) < 0.05  # the demo preset drops the distance prior: pointers start uniform
    assert paper > uniform + 0.15  # the paper's prior favours chains (0.53 against 0.26)
