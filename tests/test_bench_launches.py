"""Kernel launches counted from a profile, the same way for eager and compiled steps (`enas.bench_launches`)."""

import torch

from enas.bench import SIZES, _archs, run_benchmarks
from enas.bench_launches import count_launches, graph_supernet
from enas.spaces.base import TaskInfo
from enas.spaces.rnn import RnnSpace, RnnSpaceConfig

CPU = torch.device("cpu")


def test_eager_launches_leave_out_views_and_nested_ops():
    a = torch.ones(4, 3)

    def step():
        b = a + 1  # one kernel
        c = b.t().unsqueeze(0).view(3, 4)  # views: none
        torch.nn.functional.linear(c, a.t())  # one top-level op; its nested mm / t are not counted again
    assert count_launches(step, CPU) == 2


def test_compiled_graph_cell_launches_far_fewer_kernels_than_eager():
    s = SIZES["small"]["rnn"]
    info = TaskInfo(vocab_size=s["vocab"])
    archs = _archs(RnnSpace(RnnSpaceConfig(hidden=s["hidden"], num_nodes=s["num_nodes"])), 3)
    x = torch.randint(0, s["vocab"], (s["bptt"], s["batch"]), generator=torch.Generator().manual_seed(0))
    counts = {}
    torch._dynamo.reset()
    try:
        for compiled in (False, True):
            net = graph_supernet(s, info, CPU, compiled)
            opt = torch.optim.SGD(net.parameters(), lr=0.1)  # no momentum: no buffers appear with a new path

            def step(i, n=net, opt=opt):
                opt.zero_grad()
                n(x, n.init_hidden(s["batch"]), arch=archs[i])[0].mean().backward()
                opt.step()
            step(0)
            step(1)
            counts[compiled] = [count_launches(lambda i=i, st=step: st(i), CPU) for i in (1, 2)]
    finally:
        torch._dynamo.reset()
    # The cell's kernels are the same for every arch; only the order in which autograd accumulates the gradients
    # of the path's parameters (outside the cell) differs by a few launches.
    assert abs(counts[False][0] - counts[False][1]) <= 0.01 * counts[False][0]
    assert abs(counts[True][0] - counts[True][1]) <= 0.05 * counts[True][0]
    assert counts[True][0] * 5 < counts[False][0]


def test_bench_times_the_compiled_graph_cell():
    torch._dynamo.reset()
    try:
        rows = run_benchmarks(["rnn"], device="cpu", size="small", verbose=False, warmup=1, steps=2,
                              compile=True)["rows"]
    finally:
        torch._dynamo.reset()
    compiled = "supernet, graph cell compiled (fresh arch)"
    names = {r["workload"] for r in rows}
    assert compiled in names and f"kernel launches per step, {compiled}" in names
