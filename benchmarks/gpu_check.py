"""GPU check: how long the paper's search protocols and final trainings take on this machine.

For each space it builds the ordinary `Search` of the ``paper`` preset (``--smoke``: a tiny search on the CPU) over
synthetic data of the paper's sizes (CIFAR-10 shapes: 45,000 + 5,000 training images of 32x32x3 and 10,000 test
images; PTB sizes: 929k / 73k / 82k tokens over 10,000 words), and times through the package's own code:

* a shared-weight step (``Search.train_shared`` over a fixed number of steps, one sampled arch per step);
* a controller update (``ReinforceTrainer.train_epoch``: ``num_aggregate`` samples, each rewarded on a fresh
  validation minibatch, one Adam step);
* one arch scored on the whole validation split (the unit of validation and derive);
* a final-training step of the paper's final model (``FinalTraining``'s model, task and optimiser);

and the shared step with the arch as data, compiled once for every arch (`model.cell=graph`,
`model.compile_cell=true`: CUDA graphs on a GPU; ``--graph-space`` picks the spaces, ``--no-graph`` skips it); then
extrapolates an epoch (steps per
epoch x shared step + controller updates x update + the epoch's validation)
and the whole protocol (epochs x epoch + derive), and reports the peak GPU memory. Every timing runs in the
numerics ``enas search`` uses (``precision=auto``: bf16 autocast for the CNNs on a GPU, `enas.build.autocast`); a
second shared-step row times the CNN step in float32 for comparison. Synthetic data give the speed, not the
accuracy, of a run.

    bash benchmarks/gpu_check.sh                       # on a CUDA machine, about 5 minutes
    bash benchmarks/gpu_check.sh --smoke               # tiny sizes on the CPU (the tests run this)
    python benchmarks/gpu_check.py --space micro --steps 30 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from enas.build import autocast, build_space, uses_bf16
from enas.presets import make_config
from enas.search.controller import UniformSampler
from enas.search.loop import Search
from enas.train.final import FinalTraining

SPACES = ("micro", "macro", "rnn")
# paper-size data: CIFAR-10 (50k train incl. 5k validation, 10k test) and PTB token counts
IMAGES = {"paper": (50_000, 10_000, 32), "smoke": (320, 64, 16)}
TOKENS = {"paper": (929_589, 73_760, 82_430, 10_000), "smoke": (6_000, 2_000, 2_000, 200)}


def write_images(path: Path, size: str) -> Path:
    n_train, n_test, side = IMAGES[size]
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, side, side, 3), dtype=np.uint8),
             y_train=rng.integers(0, 10, n_train), x_test=rng.integers(0, 256, (n_test, side, side, 3), dtype=np.uint8),
             y_test=rng.integers(0, 10, n_test))
    return path


def write_corpus(root: Path, size: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    *counts, vocab = TOKENS[size]
    words = np.array([f"w{i}" for i in range(vocab - 1)])
    for split, n in zip(("train", "valid", "test"), counts):
        ids = rng.zipf(1.3, n) % (vocab - 1)  # a word-frequency-like draw; every sentence 20 words + <eos>
        lines = [" ".join(words[ids[i:i + 20]]) for i in range(0, n, 21)]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def _config(space: str, command: str, data: dict[str, Path], size: str, device: str):
    dataset = "ptb" if space == "rnn" else str(data["images"])
    cfg = make_config(space, "paper" if size == "paper" else "quick", command, dataset)
    cfg.device = device
    if space == "rnn":
        cfg.task.root = str(data["corpus"])
    if size == "smoke":  # a few seconds on a CPU
        if space == "rnn":
            cfg.model.hidden, cfg.model.num_nodes = 16, 4
            cfg.task.batch_size, cfg.task.bptt = 8, 10
        else:
            cfg.model.channels = 4
            cfg.model.num_layers = 2 if space == "micro" else 4
            cfg.task.valid_size, cfg.task.batch_size, cfg.task.reward_batch_size = 64, 32, 32
            cfg.task.eval_batch_size = 64
    return cfg


def check_search(space: str, data: dict[str, Path], out: Path, size: str, device: str, steps: int,
                 ctrl_steps: int, graph: bool = True) -> dict[str, Any]:
    cfg = _config(space, "search", data, size, device)
    search = Search(cfg, out / f"search-{space}", progress=False)
    dev = search.device
    scfg, ccfg = cfg.search, cfg.controller
    steps_per_epoch = search.task.num_train_batches()

    def shared_step() -> float:
        scfg.shared_steps = 3
        search.train_shared(0)  # warm-up: allocator, cuDNN autotuning
        scfg.shared_steps = steps
        return _timed(lambda: search.train_shared(0), dev) / steps

    t_fp32 = shared_step() if uses_bf16(cfg, dev) else None  # outside autocast: float32 (TF32 products)
    with autocast(cfg, dev):  # the numerics of `Search.run`
        t_shared = shared_step()
        search._reward_mode()
        search.trainer.train_epoch(search.reward, steps=1)
        t_ctrl = _timed(lambda: search.trainer.train_epoch(search.reward, steps=ctrl_steps), dev) / ctrl_steps
        arch = UniformSampler(search.space).sample().arch
        search._reward_mode()
        t_valid = _timed(lambda: search.task.evaluate(search.supernet, "valid", arch_fn=lambda: arch), dev)
        t_graph, graph_error = None, None
        if graph:  # the arch as data, compiled once for every arch (CUDA graphs on a GPU)
            net = search.supernet
            before = net.cell
            net.set_cell("graph", compiled=True)
            try:
                t_graph = shared_step()
            except Exception as e:  # report it and go on: the other checks still matter
                graph_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                print(f"gpu_check: the compiled graph {space} supernet failed: {graph_error}", file=sys.stderr,
                      flush=True)
            net.set_cell(before)

    evals = sum(1 for e in range(scfg.epochs) if scfg.eval_every and ((e + 1) % scfg.eval_every == 0
                                                                       or e + 1 == scfg.epochs))
    ctrl_per_epoch = ccfg.train_steps if scfg.controller_every == 1 else ccfg.train_steps / scfg.controller_every
    epoch = steps_per_epoch * t_shared + ctrl_per_epoch * t_ctrl + scfg.log_archs * t_ctrl / ccfg.num_aggregate
    protocol = scfg.epochs * epoch + evals * t_valid + scfg.derive_samples * t_valid
    graph_h = None if t_graph is None else (protocol + scfg.epochs * steps_per_epoch * (t_graph - t_shared)) / 3600
    unit = "tokens" if space == "rnn" else "images"
    batch = cfg.task.batch_size * (cfg.task.bptt if space == "rnn" else 1)
    return {
        "space": space, "sizes": _sizes(cfg), "steps_per_epoch": steps_per_epoch, "epochs": scfg.epochs,
        "shared_step_s": t_shared, f"shared_{unit}_per_s": batch / t_shared,
        "bf16": uses_bf16(cfg, dev), "shared_step_fp32_s": t_fp32, "controller_update_s": t_ctrl,
        "controller_updates_per_epoch": ctrl_per_epoch,
        "valid_pass_s": t_valid, "epoch_s": epoch, "protocol_h": protocol / 3600,
        "shared_step_graph_compiled_s": t_graph, "protocol_graph_compiled_h": graph_h, "graph_error": graph_error,
    }


def check_final(space: str, data: dict[str, Path], out: Path, size: str, device: str, steps: int) -> dict[str, Any]:
    from enas.train.optim import sgd_step

    cfg = _config(space, "train", data, size, device)
    if size == "smoke" and space != "rnn":
        cfg.task.valid_size = 0
    arch = UniformSampler(build_space(cfg)).sample().arch
    run = FinalTraining(cfg, arch, out / f"train-{space}", progress=False)
    dev, model, task = run.device, run.model, run.task
    model.train()
    task.start_epoch(model)
    batches = task.train_batches()

    def go(n: int) -> None:
        for _ in range(n):
            loss, _ = task.shared_loss(model, next(batches))
            sgd_step(run.optimizer, model, loss, cfg.train.optim.grad_clip)

    with autocast(cfg, dev):  # the numerics of `FinalTraining.run`
        go(3)
        t = _timed(lambda: go(steps), dev) / steps
    unit = "tokens" if space == "rnn" else "images"
    batch = cfg.task.batch_size * (cfg.task.bptt if space == "rnn" else 1)
    params = sum(p.numel() for p in model.parameters())
    return {"space": space, "sizes": _sizes(cfg), "params_m": params / 1e6, "train_step_s": t,
            f"train_{unit}_per_s": batch / t, "steps_per_epoch": task.num_train_batches(),
            "epoch_s": task.num_train_batches() * t, "epochs": cfg.train.epochs,
            "protocol_h": cfg.train.epochs * task.num_train_batches() * t / 3600}


def _sizes(cfg) -> dict[str, Any]:
    m = cfg.model
    keys = ("hidden", "num_nodes") if cfg.space == "rnn" else ("channels", "num_layers")
    return {**{k: getattr(m, k) for k in keys}, "batch": cfg.task.batch_size}


def _peak_mb(device: str) -> float | None:
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def _reset_peak(device: str) -> None:
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        torch.cuda.reset_peak_memory_stats()


def _fmt_h(hours: float) -> str:
    return f"{hours * 60:.1f} min" if hours < 2 else f"{hours:.1f} h"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, seconds (the tests run this)")
    p.add_argument("--space", action="append", choices=SPACES)
    p.add_argument("--device", default=None, help="default: cuda, or cpu with --smoke")
    p.add_argument("--steps", type=int, default=None, help="timed shared / final-training steps (default 20)")
    p.add_argument("--controller-steps", type=int, default=None, help="timed controller updates (default 10)")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    p.add_argument("--graph-space", action="append", choices=SPACES,
                   help="time the compiled arch-as-data supernet of this space only (repeatable; default: every "
                        "space checked; each compile takes a minute or more)")
    p.add_argument("--no-graph", action="store_true", help="skip the compiled arch-as-data supernets")
    args = p.parse_args(argv)
    size = "smoke" if args.smoke else "paper"
    device = args.device or ("cpu" if args.smoke else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine, or pass --smoke for the CPU check",
              file=sys.stderr)
        return 2
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    steps = args.steps or (2 if args.smoke else 20)
    ctrl_steps = args.controller_steps or (2 if args.smoke else 10)
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    print(f"gpu_check: device {name}, torch {torch.__version__}, sizes {size}", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t = time.perf_counter()
        data = {"images": write_images(tmp_path / "images.npz", size),
                "corpus": write_corpus(tmp_path / "corpus", size)}
        print(f"synthetic data written in {time.perf_counter() - t:.1f} s", flush=True)
        for space in args.space or SPACES:
            for kind in ("search", "train"):
                _reset_peak(device)
                t = time.perf_counter()
                with contextlib.redirect_stdout(sys.stderr):
                    if kind == "search":
                        row = check_search(space, data, tmp_path, size, device, steps, ctrl_steps,
                                           graph=not args.no_graph and space in (args.graph_space or SPACES))
                    else:
                        row = check_final(space, data, tmp_path, size, device, steps)
                row.update(kind=kind, peak_mb=_peak_mb(device), check_s=time.perf_counter() - t)
                rows.append(row)
                print(_line(row), flush=True)
    print(summary_table(rows, name))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "size": size,
                                               "rows": rows}, indent=2) + "\n")
    return 0


def _line(r: dict[str, Any]) -> str:
    peak = f", peak {r['peak_mb']:.0f} MiB" if r.get("peak_mb") is not None else ""
    if r["kind"] == "search":
        amp = f" (bf16 autocast; fp32 {r['shared_step_fp32_s'] * 1e3:.1f} ms)" if r.get("shared_step_fp32_s") else ""
        return (f"{r['space']} search {r['sizes']}: shared step {r['shared_step_s'] * 1e3:.1f} ms{amp}, controller "
                f"update {r['controller_update_s'] * 1e3:.1f} ms, validation pass {r['valid_pass_s']:.2f} s, epoch "
                f"{r['epoch_s']:.1f} s -> {r['epochs']} epochs + derive: {_fmt_h(r['protocol_h'])}{peak}"
                + (f"; graph cell compiled: shared step {r['shared_step_graph_compiled_s'] * 1e3:.1f} ms -> "
                   f"{_fmt_h(r['protocol_graph_compiled_h'])}" if r.get("shared_step_graph_compiled_s") else ""))
    unit = "tokens" if r["space"] == "rnn" else "images"
    return (f"{r['space']} final training {r['sizes']} ({r['params_m']:.2f} M params): "
            f"{r[f'train_{unit}_per_s']:.0f} {unit}/s, epoch {r['epoch_s']:.1f} s -> {r['epochs']} epochs: "
            f"{_fmt_h(r['protocol_h'])}{peak}")


def summary_table(rows: list[dict[str, Any]], device: str) -> str:
    lines = [f"device: {device}", "| space | what | sizes | per step | epoch | whole protocol | peak GPU memory |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = f"{r['peak_mb']:.0f} MiB" if r.get("peak_mb") is not None else "n/a"
        step = r["shared_step_s"] if r["kind"] == "search" else r["train_step_s"]
        what = "search" if r["kind"] == "search" else "final training"
        lines.append(f"| {r['space']} | {what} | {r['sizes']} | {step * 1e3:.1f} ms | {r['epoch_s']:.1f} s | "
                     f"{_fmt_h(r['protocol_h'])} ({r['epochs']} epochs) | {peak} |")
        if r.get("shared_step_graph_compiled_s"):
            lines.append(f"| {r['space']} | search, graph cell compiled | {r['sizes']} | "
                         f"{r['shared_step_graph_compiled_s'] * 1e3:.1f} ms | | "
                         f"{_fmt_h(r['protocol_graph_compiled_h'])} ({r['epochs']} epochs) | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

