"""Side-by-side throughput benchmarks of the paper spaces (`enas bench`), reported as ratios.

For one space, every workload is built once and then timed **interleaved, step by step** (A, B, C, A, B, C, ...),
so that the drift of a shared machine falls on both sides of each ratio; a ratio is computed per round and the
median and the spread (quartiles) over the rounds are reported. The archs come from a fixed, seeded draw (the same
in every run). A step is forward + backward + SGD update of one minibatch at the sizes below.

Workloads per space: the supernet with a fresh arch per step; the supernet on arch k and the standalone child of
arch k (search-time layers, the supernet's weights), cycling over a few archs, for the step-time ratio (target
<= 1.15); the plain references (recurrent: a tied 2-layer ``nn.LSTM`` language model; micro: the plain CNN of the
speed targets and, as an extra row, our 4-conv CNN); the supernet with the arch as data (``model.cell=graph``:
the same kernels for every arch), eager and, with ``compile``, compiled. Then, timed on their own: a controller
step (sample + REINFORCE update at the paper's controller settings), an eval forward (what derive and validation
cost per batch), a final-training step of the child (final layers), the FLOPs of each workload's step
(`torch.utils.flop_counter`), the aten kernels dispatched per supernet step (forward + backward + optimizer; a
machine-independent measure of launch overhead) and the peak memory. FLOPs, kernels and launches are counted with
the CPU-only paths off (`enas.kernels.packed`, `enas.kernels.batch_norm`), as a GPU would run the step.
"""

from __future__ import annotations

import contextlib
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from enas import kernels
from enas.bench.launches import count_launches, graph_note, profile_compiled_kernels
from enas.bench.models import FourConvCNN, LSTMLanguageModel, PlainCNN
from enas.presets import make_config
from enas.runs.environment import resolve_device
from enas.runs.progress import Progress
from enas.search.controller import Controller, UniformSampler
from enas.search.reinforce import ReinforceTrainer
from enas.spaces.base import TaskInfo
from enas.spaces.macro.space import MacroSpace, MacroSpaceConfig
from enas.spaces.micro.space import MicroSpace, MicroSpaceConfig
from enas.spaces.rnn.space import RnnSpace, RnnSpaceConfig

SIZES = {
    "target": {"rnn": dict(hidden=1000, batch=64, bptt=35, vocab=10000, num_nodes=12),
               "micro": dict(channels=20, num_layers=6, batch=128, image=32),
               "macro": dict(channels=36, num_layers=12, batch=128, image=32)},
    "small": {"rnn": dict(hidden=64, batch=8, bptt=10, vocab=200, num_nodes=6),
              "micro": dict(channels=8, num_layers=3, batch=8, image=16),
              "macro": dict(channels=8, num_layers=6, batch=8, image=16)},
}
ARCH_SEED = 2018  # the fixed draw of benchmark archs
FIXED_ARCHS = 4  # archs cycled for the supernet-vs-child ratio
GRAPH_WORKLOADS = {False: "supernet, graph cell (fresh arch)", True: "supernet, graph cell compiled (fresh arch)"}
LAUNCH_NOTE = ("forward + backward + optimizer, from a profile: device kernels on a GPU; on the CPU the top-level "
               "aten operators that run a kernel plus compiled kernels")


@dataclass
class Workload:
    name: str
    step: Callable[[int], None]  # step(i): one forward + backward + update, round i
    items: int  # tokens or images per step
    forward: Callable[[int], Any] | None = None  # forward(i): the step's forward alone (for its FLOPs)
    uncounted_flops: float = 0.0  # forward FLOPs the counter cannot see (`_flops`)


class _KernelCount(TorchDispatchMode):
    """Counts the aten operators dispatched (each is one kernel launch on a GPU, give or take fusions)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _sgd_step(model: nn.Module, loss_fn: Callable[[int], torch.Tensor]) -> Callable[[int], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(i).backward()
        opt.step()

    return step


def interleave(workloads: list[Workload], device: torch.device, warmup: int, steps: int,
               progress: Progress | None = None) -> dict[str, list[float]]:
    """Seconds of each workload's step, timed round by round: round i runs every workload's step i in turn."""
    progress = progress or Progress(enabled=False)
    progress.start(f"{len(workloads)} workloads, warm-up and {steps} rounds", warmup + steps)
    for i in range(warmup):
        for w in workloads:
            w.step(i)
        progress.update(i + 1)
    times: dict[str, list[float]] = {w.name: [] for w in workloads}
    for i in range(warmup, warmup + steps):
        progress.update(i + 1)
        for w in workloads:
            _sync(device)
            t = time.perf_counter()
            w.step(i)
            _sync(device)
            times[w.name].append(time.perf_counter() - t)
    progress.end()
    return times


def _time_alone(fn: Callable[[], Any], device: torch.device, repeats: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t)
    return out


def _flops(forward: Callable[[int], Any], i: int = 0, uncounted: float = 0.0) -> float:
    """FLOPs of one training step, estimated as 3x the forward's (the forward counted by torch's `FlopCounterMode`,
    plus ``uncounted`` forward FLOPs of kernels it cannot see). The counter's own backward count is not used: its
    formula for the backward of grouped (depthwise) convolutions ignores the groups, which put a micro supernet's
    backward at 8-13x its forward."""
    with torch.no_grad(), _as_on_gpu(), FlopCounterMode(display=False) as counter:
        forward(i)
    return 3.0 * (float(counter.get_total_flops()) + uncounted)


def _as_on_gpu() -> contextlib.AbstractContextManager:
    """The CPU-only paths off (`enas.kernels.packed`, `enas.kernels.batch_norm`): counts of FLOPs, kernels and
    launches describe the model as a GPU runs it, the same on every machine."""
    return kernels.switched(packed=False, bn_products=False)


def _kernels(step: Callable[[int], None], i: int = 0) -> int:
    with _as_on_gpu(), _KernelCount() as counter:
        step(i)
    return counter.count


def _launches(w: Workload, device: torch.device) -> float:
    with _as_on_gpu():
        return statistics.fmean(count_launches(lambda i=i: w.step(i), device) for i in range(2))


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, med, q3


def _row(space: str, workload: str, value: float, unit: str, reference: str | None = None,
         reference_value: float | None = None, ratio: float | None = None, **extra: Any) -> dict[str, Any]:
    return {"space": space, "workload": workload, "value": value, "unit": unit, "reference": reference,
            "reference_value": reference_value, "ratio": ratio, **extra}


def _ratio_rows(space: str, times: dict[str, list[float]], items: dict[str, int], flops: dict[str, float],
                pairs: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """One row per (workload, reference, kind): kind "throughput" (ratio = reference time / workload time, higher is
    better) or "step time" (ratio = workload time / reference time)."""
    rows = []
    for name, ref, kind in pairs:
        per_round = [(r / w if kind == "throughput" else w / r) for w, r in zip(times[name], times[ref])]
        q1, med, q3 = _quartiles(per_round)
        if kind == "throughput":
            value, ref_value = items[name] / statistics.median(times[name]), items[ref] / statistics.median(times[ref])
            unit = "tokens/s" if space == "rnn" else "images/s"
        else:
            value, ref_value, unit = statistics.median(times[name]), statistics.median(times[ref]), "s/step"
        parity = flops[ref] / flops[name] if kind == "throughput" and flops.get(name) else None
        rows.append(_row(space, name, value, unit, ref, ref_value, med, ratio_q1=q1, ratio_q3=q3,
                         rounds=len(per_round), flops=flops.get(name), reference_flops=flops.get(ref),
                         flop_parity_ratio=parity))
    return rows


def _archs(space: Any, n: int) -> list[Any]:
    sampler = UniformSampler(space)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ARCH_SEED)
        return [sampler.sample().arch for _ in range(n)]


def _space(name: str, s: dict[str, int]) -> Any:
    if name == "rnn":

        return RnnSpace(RnnSpaceConfig(hidden=s["hidden"], num_nodes=s["num_nodes"]))
    if name == "micro":

        return MicroSpace(MicroSpaceConfig(channels=s["channels"], num_layers=s["num_layers"]))

    return MacroSpace(MacroSpaceConfig(channels=s["channels"], num_layers=s["num_layers"]))


def bench_space(name: str, device: torch.device, size: str = "target", warmup: int = 2,
                steps: int = 20, compile: bool = False, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Every row of one paper space (see the module docstring)."""
    progress = progress or Progress(enabled=False, silent=True)
    progress.line(f"enas bench: {name}: building the supernet, children and references")
    s = SIZES[size][name]
    space = _space(name, s)
    text = name == "rnn"
    g = torch.Generator().manual_seed(0)
    if text:
        info = TaskInfo(vocab_size=s["vocab"])
        x = torch.randint(0, s["vocab"], (s["bptt"], s["batch"]), generator=g).to(device)
        y = torch.randint(0, s["vocab"], (s["bptt"], s["batch"]), generator=g).to(device)
        items = s["bptt"] * s["batch"]

        def loss(model: nn.Module, arch: Any = None) -> torch.Tensor:
            logits = model(x, model.init_hidden(s["batch"]), arch=arch)[0]
            return F.cross_entropy(logits.flatten(0, 1), y.flatten())
    else:
        info = TaskInfo(in_channels=3, image_size=s["image"], num_classes=10)
        x = torch.randn(s["batch"], 3, s["image"], s["image"], generator=g).to(device)
        x = x.contiguous(memory_format=torch.channels_last)  # the layout the image task serves
        y = torch.randint(0, 10, (s["batch"],), generator=g).to(device)
        items = s["batch"]

        def loss(model: nn.Module, arch: Any = None) -> torch.Tensor:
            return F.cross_entropy(model(x, arch=arch)[0], y)

    archs = _archs(space, max(warmup + steps, FIXED_ARCHS))
    fixed = archs[:FIXED_ARCHS]
    supernet = space.build_supernet(info).to(device).train()
    children = []
    for arch in fixed:
        child = space.build_child(arch, info, final=False)
        child.load_state_dict(space.child_state_from_supernet(supernet, arch))
        children.append(child.to(device).train())
    child_steps = [_sgd_step(c, lambda i, c=c: loss(c)) for c in children]
    workloads = [
        Workload("supernet (fresh arch)", _sgd_step(supernet, lambda i: loss(supernet, archs[i])), items,
                 lambda i: loss(supernet, archs[i])),
        Workload("supernet (arch k)", _sgd_step(supernet, lambda i: loss(supernet, fixed[i % FIXED_ARCHS])), items,
                 lambda i: loss(supernet, fixed[i % FIXED_ARCHS])),
        Workload("child (arch k)", lambda i: child_steps[i % FIXED_ARCHS](i), items,
                 lambda i: loss(children[i % FIXED_ARCHS])),
    ]
    # the arch as data, eager and (with ``compile``) compiled, on the same fresh archs
    if compile:
        profile_compiled_kernels()  # before the first call compiles
    for compiled in (False, True) if compile else (False,):
        torch.manual_seed(0)  # the same initial weights for both
        net = space.build_supernet(info).to(device).train()
        net.set_cell("graph", compiled)
        workloads.append(Workload(GRAPH_WORKLOADS[compiled], _sgd_step(net, lambda i, n=net: loss(n, archs[i])),
                                  items, lambda i, n=net: loss(n, archs[i])))
    refs: list[tuple[str, nn.Module]] = []
    if text:
        refs.append(("2-layer nn.LSTM LM", LSTMLanguageModel(s["vocab"], s["hidden"])))
        ref_loss: Callable[[nn.Module], torch.Tensor] = \
            lambda m: F.cross_entropy(m(x).flatten(0, 1), y.flatten())  # noqa: E731
    elif name == "micro":
        refs += [("plain CNN", PlainCNN(3, 10)), ("4-conv CNN", FourConvCNN(3, 10))]
        ref_loss = lambda m: F.cross_entropy(m(x), y)  # noqa: E731
    for ref_name, model in refs:
        model = model.to(device).train()
        if not text:
            model = model.to(memory_format=torch.channels_last)
        uncounted = model.uncounted_flops(items) if isinstance(model, LSTMLanguageModel) else 0.0
        workloads.append(Workload(ref_name, _sgd_step(model, lambda i, m=model: ref_loss(m)), items,
                                  lambda i, m=model: ref_loss(m), uncounted))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    progress.line(f"enas bench: {name}: timing {len(workloads)} workloads interleaved, {warmup} + {steps} rounds")
    times = interleave(workloads, device, warmup, steps, progress)
    progress.line(f"enas bench: {name}: counting launches, FLOPs and kernels; side rows")
    supernets = [w for w in workloads if w.name.startswith("supernet") and "arch k" not in w.name]  # fresh archs
    # launches first: a compiled step once run under a dispatch mode (the FLOP counter below) stays eager
    launch_rows = [_row(name, f"kernel launches per step, {w.name}",
                        _launches(w, device),
                        "launches", note=LAUNCH_NOTE if w is supernets[0] else graph_note("compiled" in w.name, device))
                   for w in supernets]
    flops = {w.name: statistics.fmean(_flops(w.forward, i, w.uncounted_flops)
                                      for i in range(FIXED_ARCHS if "arch" in w.name else 1))
             for w in workloads}
    item_counts = {w.name: w.items for w in workloads}
    pairs = [(w.name, ref, "throughput") for w in supernets for ref, _ in refs]
    pairs += [(w.name, "supernet (fresh arch)", "step time") for w in supernets[1:]]
    pairs.append(("supernet (arch k)", "child (arch k)", "step time"))
    rows = _ratio_rows(name, times, item_counts, flops, pairs)

    kernels = statistics.fmean(_kernels(workloads[0].step, i) for i in range(FIXED_ARCHS))
    rows.append(_row(name, "kernels per supernet step", kernels, "aten ops",
                     note="forward + backward + optimizer, mean over the fixed archs"))
    rows += launch_rows
    rows += _side_rows(name, space, supernet, children[0], fixed[0], info, loss, items, device, steps)
    if device.type == "cuda":
        peak, where = torch.cuda.max_memory_allocated(device) / 2**20, "GPU, this space"
    else:
        peak, where = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process RSS so far"
    rows.append(_row(name, "peak memory", peak, "MiB", note=where))
    return rows


def _side_rows(name: str, space: Any, supernet: nn.Module, child: nn.Module, arch: Any, info: TaskInfo,
               loss: Callable[..., torch.Tensor], items: int, device: torch.device, steps: int) -> list[dict]:
    """Controller step, eval forward (derive and validation) and final-training step, each timed on its own."""

    repeats = max(3, steps // 4)
    rows = []
    ccfg = make_config(name, "paper", "search").controller
    controller = Controller(space, ccfg)
    trainer = ReinforceTrainer(controller, ccfg)
    rewards = iter(torch.rand(10_000, generator=torch.Generator().manual_seed(1)).tolist())
    t = statistics.median(_time_alone(lambda: trainer.step(lambda a: next(rewards)), torch.device("cpu"), repeats))
    rows.append(_row(name, "controller step", t, "s/step",
                     note=f"{ccfg.num_aggregate} samples + one REINFORCE update (paper preset), on the CPU"))

    def eval_forward() -> None:
        with torch.no_grad():
            loss(supernet, arch)

    supernet.eval()
    t = statistics.median(_time_alone(eval_forward, device, repeats))
    supernet.train()
    rows.append(_row(name, "eval forward (derive, validation)", items / t,
                     "tokens/s" if name == "rnn" else "images/s", note="supernet, fixed arch, no grad"))
    final = space.build_child(arch, info, final=True).to(device).train()
    if name != "rnn":
        final = final.to(memory_format=torch.channels_last)
    step = _sgd_step(final, lambda i: loss(final))
    t = statistics.median(_time_alone(lambda: step(0), device, repeats))
    rows.append(_row(name, "final-training step", items / t, "tokens/s" if name == "rnn" else "images/s",
                     note="standalone child with its final layers, benchmark sizes"))
    return rows


def run_benchmarks(spaces: list[str], device: str = "auto", size: str = "target", verbose: bool = True,
                   warmup: int = 2, steps: int = 20, compile: bool = False) -> dict[str, Any]:
    """``{"rows": [...], "device", "device_name", "threads", "torch", "size", "steps", "warmup"}``."""
    dev = resolve_device(device)
    rows = []
    progress = Progress(silent=not verbose)  # a line per phase on stderr; a bar too on a terminal
    for name in spaces:
        space_rows = bench_space(name, dev, size, warmup, steps, compile, progress)
        rows += space_rows
        if verbose:
            for r in space_rows:
                print(format_row(r), flush=True)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    return {"rows": rows, "device": str(dev), "device_name": name, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "size": size, "steps": steps, "warmup": warmup, "compile": compile}


def format_row(r: dict[str, Any]) -> str:
    text = f"{r['space']}: {r['workload']} {r['value']:.4g} {r['unit']}"
    if r.get("reference"):
        text += f" | {r['reference']} {r['reference_value']:.4g}: ratio {r['ratio']:.3f}"
        if r.get("ratio_q1") is not None:
            text += f" (quartiles {r['ratio_q1']:.3f}-{r['ratio_q3']:.3f}, {r['rounds']} rounds)"
        if r.get("flop_parity_ratio"):
            text += f", FLOP parity {r['flop_parity_ratio']:.3f}"
    return text
