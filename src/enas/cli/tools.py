"""The `enas` commands that read, convert or measure: eval, show, export, bench, data and rank."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from enas import registry
from enas.bench.harness import run_benchmarks
from enas.build import build_space, build_task, fit_model_to_arch
from enas.cli.runs import load_arch_arg
from enas.config import parse_set, set_key
from enas.errors import UserError
from enas.export.model import cmd_export as run
from enas.presets import default_dataset, make_config
from enas.registry import text_space
from enas.search.rank import rank_run
from enas.spaces.base import TaskInfo
from enas.tasks import datasets
from enas.tasks.datasets.images import load_image_dataset
from enas.train.final import evaluate_model
from enas.viz.arch import draw_arch

PAPER_SPACES = ("rnn", "macro", "micro")  # the spaces `enas bench` measures


def cmd_eval(args: argparse.Namespace) -> int:
    metrics = evaluate_model(args.model, args.data, args.device, parse_set(args.sets), split=args.split)
    print(json.dumps({f"{args.split}_{k}": v for k, v in metrics.items()}))
    return 0


def show_info(arch, args: argparse.Namespace) -> dict[str, Any]:
    """The JSON object of `enas show --json`: space, arch, fixed_arc, params and the sizes assumed."""

    dataset = args.data or default_dataset(arch.space)
    cfg = make_config(arch.space, args.preset, "train", dataset)
    for key, value in parse_set(args.sets):
        set_key(cfg, key, value)
    fit_model_to_arch(cfg, arch)
    if dataset in datasets.DATASETS:  # the shapes a named dataset has, without loading it
        info = TaskInfo(**datasets.DATASETS[dataset].info)
    else:

        info = build_task(cfg, torch.device("cpu")).info
    with torch.device("meta"):  # count parameters without allocating them
        model = build_space(cfg).build_child(arch, info, final=True)
    params = sum(p.numel() for p in model.parameters())
    out: dict[str, Any] = {"space": arch.space, "arch": arch.to_json(), "fixed_arc": arch.to_fixed_arc(),
                           "params": params, "preset": args.preset, "dataset": dataset}
    out["sizes"] = {k: getattr(cfg.model, k) for k in registry.get(arch.space).size_keys if hasattr(cfg.model, k)}
    if text_space(arch.space):
        out["hidden"] = getattr(cfg.model, "hidden", None)
        out["vocab_size"] = info.vocab_size
    elif registry.get(arch.space).task == "tabular":
        out["in_features"], out["num_classes"] = info.in_features, info.num_classes
    else:
        out["channels"], out["layers"] = getattr(cfg.model, "channels", None), getattr(cfg.model, "num_layers", None)
    return out


def cmd_show(args: argparse.Namespace) -> int:
    arch = load_arch_arg(args)
    info = show_info(arch, args)
    picture = None
    if args.output:

        picture = str(draw_arch(arch, args.output))
        info["picture"] = picture
    if args.json:
        print(json.dumps(info))
        return 0
    print(arch.describe())
    sizes = ", ".join(f"{k} {v}" for k, v in info["sizes"].items()) or "default sizes"
    print(f"fixed_arc: {info['fixed_arc']}")
    print(f"final model ({args.preset} preset, {sizes}, {info['dataset']}): {info['params']:,} parameters")
    if picture:
        print(f"picture: {picture}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.warmup < 0:
        raise UserError("--steps must be at least 1 and --warmup at least 0")
    out = Path(args.json_out) if args.json_out else None
    if out is not None:  # find out now, not after minutes of benchmarking
        existed = out.exists()
        try:
            with out.open("a"):
                pass
        except OSError as e:
            raise UserError(f"cannot write --json {out} ({e.strerror or e}); pass a writable path") from None
        if not existed:
            out.unlink()
    results = run_benchmarks(args.space or list(PAPER_SPACES), device=args.device, size=args.size,
                             warmup=args.warmup, steps=args.steps, compile=args.compile)
    if out is not None:
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"written: {out}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.name in datasets.names("text"):
        corpus = datasets.load(args.name, root=args.root)
        print(json.dumps({"dataset": args.name, "vocab": len(corpus.vocab),
                          **{f"{s}_tokens": len(getattr(corpus, s)) for s in ("train", "valid", "test")}}))
        return 0

    ds = load_image_dataset(args.name, root=args.root)
    print(json.dumps({"dataset": ds.name, "train": tuple(ds.train_images.shape), "test": tuple(ds.test_images.shape),
                      "classes": ds.num_classes}))
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    r = rank_run(args.run_dir, args.archs, args.train_epochs, uniform=args.uniform, seed=args.seed,
                 progress=not args.no_progress and None)

    def fmt(v: float) -> str:
        return "undefined" if v != v else f"{v:.3f}"  # NaN: degenerate scores

    written = ", ".join(str(Path(args.run_dir) / f) for f in ("rank.csv", "rank.json", "rank.png")
                        if f != "rank.png" or r["picture"])
    print(f"Kendall tau {fmt(r['kendall_tau'])}, Spearman rho {fmt(r['spearman_rho'])} over {r['pairs']} archs "
          f"({r['policy']} policy, {r['train_epochs']} epochs each); written: {written}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    return run(args)
