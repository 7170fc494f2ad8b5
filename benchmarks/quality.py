"""Quality benchmark: does the ENAS search beat random search with weight sharing and random architectures?

For one space it runs, all at the `demo` sizes unless told otherwise:

* ENAS: `--seeds` searches with the LSTM controller at the preset's settings, each deriving its best arch;
* ENAS with the paper's settings (`--paper-controller`): the controller of the `paper` preset (learning rate, logit
  shaping, baseline, samples per update, entropy weight; the preset's number of controller samples per epoch),
  no warm-up, rewards from one minibatch's metric;
* each `--variant NAME=KEY=VALUE,...`: ENAS with those search keys changed (`controller.distance_prior=true`);
* random search with weight sharing: the same searches with `search.policy=random` (only the policy differs);
* `--random-archs` uniformly sampled archs (no search at all);
* the paper's published arch at the same sizes (rnn and micro; the published macro network has 24 layers and is
  left out of the 6-layer demo space);

then retrains every arch from scratch with the identical final budget (the `demo` train preset, `--train-epochs`)
and reports the test figure (accuracy for images, perplexity for PTB) as mean +- std per method. Every run is an
ordinary run directory under ``--out``; rerunning the same command skips what is finished, so an interrupted
benchmark continues where it stopped.

    python benchmarks/quality.py --space macro --data fashion-mnist --out runs/quality-macro --write-docs

Not part of the tests: about an hour per space on 2 CPU cores at the default sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from docs_block import write_block

from enas.arch import parse_fixed_arc
from enas.build import build_space
from enas.config import set_key
from enas.errors import TrainingDiverged
from enas.presets import make_config
from enas.search.controller import UniformSampler
from enas.search.loop import Search
from enas.train.final import FinalTraining

PUBLISHED = {  # the authors' published archs, in their integer notation
    "rnn": "0 0 0 1 1 2 1 2 0 2 0 5 1 1 0 6 1 8 1 8 1 8 1",
    "micro": "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1",
}
DEFAULT_DATA = {"rnn": "ptb", "macro": "fashion-mnist", "micro": "fashion-mnist"}


def _done(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def _apply(cfg, sets: list[str]) -> None:
    from enas.config import parse_set

    for key, value in parse_set(sets):
        set_key(cfg, key, value)


def paper_controller(space: str, preset_controller: Any) -> Any:
    """The paper preset's controller settings with the preset's number of controller samples per epoch."""
    paper = make_config(space, "paper", "search").controller
    samples = preset_controller.train_steps * preset_controller.num_aggregate
    paper.train_steps = max(1, samples // paper.num_aggregate)
    return paper


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=KEY=VALUE,KEY=VALUE`` -> (NAME, ["KEY=VALUE", ...])."""
    name, _, changes = text.partition("=")
    sets = [c for c in changes.split(",") if c]
    if not name.replace("-", "").isalnum() or name in ("enas", "random", "paper-controller") or not sets \
            or any("=" not in c for c in sets):
        raise SystemExit(f"--variant {text!r}: write NAME=KEY=VALUE[,KEY=VALUE...] with a new name of letters, "
                         "digits and dashes")
    return name, sets


def search(space: str, data: str, policy: str, seed: int, out: Path, args: argparse.Namespace,
           name: str | None = None) -> dict[str, Any]:
    run_dir = out / "search" / f"{name or policy}-seed-{seed}"
    summary = _done(run_dir)
    if summary is None:
        resume = (run_dir / "checkpoints" / "last.pt").exists()
        cfg = None
        if not resume:
            cfg = make_config(space, args.preset, "search", data)
            cfg.seed, cfg.search.policy = seed, policy
            _apply(cfg, args.search_set)
            _apply(cfg, dict(args.variant).get(name, []))
            if name == "paper-controller":  # the paper's search: its controller, no warm-up, one-batch rewards
                cfg.controller = paper_controller(space, cfg.controller)
                cfg.search.warmup_epochs, cfg.search.score, cfg.search.score_batches = 0, "metric", 1
        run = Search.resume(run_dir, progress=False) if resume else Search(cfg, run_dir, progress=False)
        summary = run.run()
    return summary


def train(space: str, data: str, fixed_arc: str, name: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    run_dir = out / "train" / name
    summary = _done(run_dir)
    if summary is None:
        resume = (run_dir / "checkpoints" / "last.pt").exists()
        cfg = None
        if not resume:
            cfg = make_config(space, args.preset, "train", data)
            cfg.seed = args.train_seed
            _apply(cfg, args.train_set)
        arch = parse_fixed_arc(fixed_arc, space)
        try:
            run = FinalTraining.resume(run_dir, progress=False) if resume else FinalTraining(cfg, arch, run_dir,
                                                                                              progress=False)
            summary = run.run()
        except TrainingDiverged as e:  # a finding about this arch at this budget, not the end of the benchmark
            summary = {"diverged": str(e)}
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "summary.json").write_text(json.dumps(summary))
    return summary


def uniform_archs(space: str, data: str, n: int, args: argparse.Namespace) -> list[str]:
    cfg = make_config(space, args.preset, "search", data)
    _apply(cfg, args.search_set)
    sampler = UniformSampler(build_space(cfg))
    archs: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2018)
        while len(archs) < n:
            arc = sampler.sample().arch.to_fixed_arc()
            if arc not in archs:
                archs.append(arc)
    return archs


def _stats(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", required=True, choices=("rnn", "macro", "micro"))
    p.add_argument("--data", default=None)
    p.add_argument("--preset", default="demo")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--random-archs", type=int, default=5)
    p.add_argument("--paper-controller", action="store_true",
                   help="also search with the paper preset's controller settings")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE,...",
                   help="also search with ENAS with these search keys changed (repeatable)")
    p.add_argument("--train-seed", type=int, default=0, help="seed of every final training (identical budgets)")
    p.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE", help="override a search key")
    p.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE", help="override a train key")
    p.add_argument("--out", required=True)
    p.add_argument("--write-docs", action="store_true", help="put the table into docs/results.md")
    args = p.parse_args(argv)
    args.variant = [parse_variant(v) for v in args.variant]
    space, data = args.space, args.data or DEFAULT_DATA[args.space]
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()

    methods: dict[str, list[tuple[str, str]]] = {}  # method -> [(run name, fixed_arc)]
    search_scores: dict[str, list[float]] = {}
    searches = [("enas", None, "ENAS")]
    for name, sets in args.variant:
        searches.append(("enas", name, f"ENAS, {', '.join(f'`{c}`' for c in sets)}"))
    if args.paper_controller:
        searches.append(("enas", "paper-controller", "ENAS, paper controller settings"))
    searches.append(("random", None, "random search + weight sharing"))
    for policy, name, label in searches:
        for seed in seeds:
            summary = search(space, data, policy, seed, out, args, name)
            methods.setdefault(label, []).append((f"{name or policy}-seed-{seed}", summary["best"]["fixed_arc"]))
            search_scores.setdefault(label, []).append(summary["best"]["score"])
            print(f"[{time.perf_counter() - started:.0f}s] {label} seed {seed}: supernet score "
                  f"{summary['best']['score']:.4g}", flush=True)
    methods[f"{args.random_archs} uniformly random archs"] = [
        (f"uniform-{i}", arc) for i, arc in enumerate(uniform_archs(space, data, args.random_archs, args))]
    if space in PUBLISHED:
        methods["published ENAS arch"] = [("published", PUBLISHED[space])]

    key = "test_ppl" if space == "rnn" else "test_acc"
    rows = []
    for label, runs in methods.items():
        figures = []
        for name, arc in runs:
            summary = train(space, data, arc, name, out, args)
            figures.append(summary.get(key, float("nan")))  # nan: the training diverged
            print(f"[{time.perf_counter() - started:.0f}s] {label} {name}: {key} {figures[-1]:.4g}", flush=True)
        mean, std = _stats(figures)
        smean, sstd = _stats(search_scores.get(label, []))
        rows.append({"method": label, "n": len(figures), key: figures, "mean": mean, "std": std,
                     "supernet_score_mean": smean, "supernet_score_std": sstd})
    command = "python benchmarks/quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"space": space, "dataset": data, "metric": key, "rows": rows, "command": command,
              "seconds": time.perf_counter() - started}
    (out / "quality.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    print(table)
    if args.write_docs:
        write_docs(space, table)
    return 0


def markdown(result: dict[str, Any]) -> str:
    key = result["metric"]
    fmt = "{:.1f}" if key == "test_ppl" else "{:.2%}"
    lines = [f"`{result['command']}` ({result['seconds'] / 60:.0f} min on this machine)", "",
             f"| method | archs | {key} (mean ± std) | each | supernet score of the derived arch |",
             "|---|---|---|---|---|"]
    rows = result["rows"]
    for r in rows:
        each = ", ".join(fmt.format(v) if math.isfinite(v) else "diverged" for v in r[key])
        sup = "" if math.isnan(r["supernet_score_mean"]) else \
            f"{r['supernet_score_mean']:.4g} ± {r['supernet_score_std']:.2g}"
        lines.append(f"| {r['method']} | {r['n']} | {fmt.format(r['mean'])} ± {fmt.format(r['std'])} | {each} | "
                     f"{sup} |")
    first = rows[0]
    diffs = [f"{first['method']} minus {r['method']}: {_difference(first[key], r[key], fmt)}" for r in rows[1:]
             if len(r[key]) > 1]
    if diffs:
        lines += ["", "Differences of the means ± their standard error (" + ("lower" if key == "test_ppl" else
                  "higher") + " is better for the first): " + "; ".join(diffs) + "."]
    return "\n".join(lines)


def _difference(a: list[float], b: list[float], fmt: str) -> str:
    """Difference of two means with the standard error sqrt(s_a^2/n_a + s_b^2/n_b); diverged runs left out."""
    a = [v for v in a if math.isfinite(v)]
    b = [v for v in b if math.isfinite(v)]
    if len(a) < 2 or len(b) < 2:
        return "n/a"
    diff = statistics.fmean(a) - statistics.fmean(b)
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return f"{fmt.format(diff)} ± {fmt.format(se)} ({diff / se:+.1f} SE)" if se > 0 else f"{fmt.format(diff)}"


def write_docs(space: str, table: str) -> None:
    write_block(f"quality:{space}", table, f"### Quality benchmark: {space}")


if __name__ == "__main__":
    sys.exit(main())
