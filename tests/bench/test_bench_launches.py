"""Kernel launches counted from a profile, the same way for eager and compiled steps (`enas.bench.launches`)."""

import pytest
import torch

from enas.bench.harness import SIZES, run_benchmarks
from enas.bench.launches import count_launches

CPU = torch.device("cpu")


def test_eager_launches_leave_out_views_and_nested_ops():
    a = torch.ones(4, 3)

    def step():
        b = a + 1  # one kernel
        c = b.t().unsqueeze(0).view(3, 4)  # views: none
        torch.nn.functional.linear(c, a.t())  # one top-level op; its nested mm / t are not counted again
    assert count_launches(step, CPU) == 2


@pytest.mark.slow
def test_bench_times_the_compiled_graph_cell_and_counts_its_launches(monkeypatch):
    small = {**SIZES["small"]["rnn"], "num_nodes": 3, "bptt": 6}  # a short unrolled graph: a quicker compile
    monkeypatch.setitem(SIZES["small"], "rnn", small)
    torch._dynamo.reset()
    try:
        rows = run_benchmarks(["rnn"], device="cpu", size="small", verbose=False, warmup=1, steps=2,
                              compile=True)["rows"]
    finally:
        torch._dynamo.reset()
    launches = {r["workload"].removeprefix("kernel launches per step, "): r["value"] for r in rows
                if r["workload"].startswith("kernel launches")}
    compiled = launches["supernet, graph cell compiled (fresh arch)"]
    eager = launches["supernet, graph cell (fresh arch)"]
    assert 0 < compiled * 5 < eager  # fused: the same graph launches far fewer kernels compiled
    assert compiled < launches["supernet (fresh arch)"]  # and fewer than the fast eager cell
    timed = {r["workload"] for r in rows if r.get("reference") == "2-layer nn.LSTM LM"}
    assert "supernet, graph cell compiled (fresh arch)" in timed
