"""Ranking benchmark: does the supernet rank archs the way standalone training does, and which search options help?

For one space, at the `demo` sizes:

1. ``--archs`` K uniformly sampled archs, distinct as networks (`Arch.canonical`), a fixed draw per space;
2. the ground truth: each arch trained from scratch for ``--train-epochs`` E epochs with the demo search sizes
   (as `enas rank` does: same model and data as the supernet), the cosine schedule shortened to E epochs, and its
   final validation accuracy (rnn: ``reward_c`` / perplexity). Trained once, reused by every variant;
3. per variant (``--variants``, see `VARIANTS`): one demo search with that variant's options, then the K archs
   scored with its shared weights on the whole validation split, both by the task metric and by the loss;
4. Kendall's tau between each supernet ranking and the standalone one, with a 95 % percentile bootstrap interval
   over the K archs (`enas.search.stats.bootstrap_interval`), written to ``ranking.json`` and a markdown table.

Every step writes ordinary run directories under ``--out``; rerunning the same command skips what is finished.

    python benchmarks/ranking.py --space macro --out runs/ranking-macro --write-docs

``--stage standalone`` or ``--stage search`` runs one part (two processes can then share the work); the default
``all`` runs everything and writes the table. Not part of the tests.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from docs_block import write_block

from enas.arch import Arch, arch_from_json
from enas.build import autocast, build_space
from enas.config import parse_set, set_key
from enas.errors import TrainingDiverged
from enas.presets import make_config
from enas.search.controller import UniformSampler
from enas.search.loop import Search
from enas.search.scoring import candidate_score
from enas.search.stats import bootstrap_interval, kendall_tau, spearman_rho
from enas.train.final import FinalTraining

DEFAULT_DATA = {"rnn": "ptb", "macro": "fashion-mnist", "micro": "fashion-mnist"}
# search options of each variant; "before" is the demo preset as is
VARIANTS: dict[str, list[str]] = {
    "before": [],
    "loss": ["search.score=loss"],
    "batches4": ["search.score_batches=4"],
    "warmup": ["search.warmup_epochs={warmup}"],
    "loss+batches4": ["search.score=loss", "search.score_batches=4"],
    "loss+warmup": ["search.score=loss", "search.warmup_epochs={warmup}"],
    "loss+batches4+warmup": ["search.score=loss", "search.score_batches=4", "search.warmup_epochs={warmup}"],
}
ARCH_SEED = 20_21  # the draw of the K archs (the same for every variant)


def _apply(cfg: Any, sets: list[str], warmup: int) -> None:
    for key, value in parse_set([s.format(warmup=warmup) for s in sets]):
        set_key(cfg, key, value)


def base_config(args: argparse.Namespace) -> Any:
    cfg = make_config(args.space, "demo", "search", args.data)
    cfg.device = "cpu"
    for key, value in parse_set(args.search_set):
        set_key(cfg, key, value)
    return cfg


def arch_list(args: argparse.Namespace, out: Path) -> list[Arch]:
    path = out / "archs.json"
    if path.exists():
        return [arch_from_json(a) for a in json.loads(path.read_text())["archs"]]
    sampler = UniformSampler(build_space(base_config(args)))
    found: dict[Any, Arch] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ARCH_SEED)
        for _ in range(100 * args.archs):
            arch = sampler.sample().arch
            found.setdefault(arch.canonical(), arch)
            if len(found) == args.archs:
                break
    archs = list(found.values())
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"archs": [a.to_json() for a in archs]}, indent=1))
    return archs


def _last_valid(run_dir: Path) -> dict[str, float]:
    valid: dict[str, float] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "epoch" and rec.get("valid_score") is not None:
            valid = {k[len("valid_"):]: v for k, v in rec.items() if k.startswith("valid_")}
    return valid


def standalone(args: argparse.Namespace, out: Path, archs: list[Arch]) -> list[dict[str, float]]:
    """Final validation metrics of each arch trained from scratch for E epochs ({} for a diverged one)."""
    cfg = base_config(args)
    cfg.train.epochs = cfg.train.eval_every = args.train_epochs
    cfg.train.optim.t0 = args.train_epochs  # the cosine schedule ends with the short training
    part, parts = (int(v) for v in args.part.split("/"))
    results = []
    for i, arch in enumerate(archs):
        d = out / "standalone" / f"arch-{i}"
        if not (d / "summary.json").exists():
            if i % parts != part:  # another process's share
                results.append({})
                continue
            t = time.perf_counter()
            resume = (d / "checkpoints" / "last.pt").exists()
            try:
                run = (FinalTraining.resume(d, progress=False) if resume
                       else FinalTraining(copy.deepcopy(cfg), arch, d, progress=False))
                run.run()
            except TrainingDiverged as e:
                (d / "summary.json").write_text(json.dumps({"diverged": str(e)}))
            print(f"standalone arch {i}: {time.perf_counter() - t:.0f} s", flush=True)
        summary = json.loads((d / "summary.json").read_text())
        results.append({} if "diverged" in summary else _last_valid(d))
    return results


def search(args: argparse.Namespace, out: Path, variant: str) -> Path:
    d = out / f"search-{variant}"
    if not (d / "summary.json").exists():
        if (d / "checkpoints" / "last.pt").exists():
            Search.resume(d, progress=False).run()
        else:
            cfg = base_config(args)
            _apply(cfg, VARIANTS[variant], args.warmup)
            cfg.search.derive_samples, cfg.search.derive_uniform = 1, 0  # the K archs are scored below
            Search(cfg, d, progress=False).run()
    return d


def supernet_scores(run_dir: Path, archs: list[Arch]) -> list[dict[str, float]]:
    """Each arch's metrics on the whole validation split with the run's shared weights, as derive scores them,
    plus ``by_metric`` and ``by_loss``: its derive score under ``search.score`` = metric and = loss."""
    path = run_dir / "ranking_scores.json"
    if path.exists():
        return json.loads(path.read_text())
    s = Search.resume(run_dir, progress=False)
    s._reward_mode()
    rows = []
    with autocast(s.cfg, s.device):
        for arch in archs:
            torch.manual_seed(0)  # dropout / random masks: the same draw for every arch
            m = s.task.evaluate(s.supernet, "valid", arch_fn=lambda a=arch: a)
            rows.append({**m, "by_metric": candidate_score(s.task, m, "metric"),
                         "by_loss": candidate_score(s.task, m, "loss")})
    s.run_dir.close()
    path.write_text(json.dumps(rows, indent=1))
    return rows


def correlate(xs: list[float], ys: list[float], resamples: int) -> dict[str, Any]:
    pairs = [(x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        tau = kendall_tau(a, b)
        low, high = bootstrap_interval(a, b, kendall_tau, resamples=resamples, seed=0)
        rho = spearman_rho(a, b)
    return {"tau": tau, "low": low, "high": high, "rho": rho, "pairs": len(pairs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", required=True, choices=("rnn", "macro", "micro"))
    p.add_argument("--data", default=None)
    p.add_argument("--archs", type=int, default=20)
    p.add_argument("--train-epochs", type=int, default=2)
    p.add_argument("--warmup", type=int, default=4, help="search.warmup_epochs of the warm-up variants")
    p.add_argument("--variants", default="before,loss,batches4,warmup", help=f"comma list of {list(VARIANTS)}")
    p.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of every search (e.g. search.epochs=8)")
    p.add_argument("--stage", default="all", choices=("all", "standalone", "search"))
    p.add_argument("--part", default="0/1", metavar="I/N",
                   help="standalone stage: train only the archs whose index is I modulo N (N processes share it)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--out", required=True)
    p.add_argument("--write-docs", action="store_true", help="put the table into docs/results.md")
    args = p.parse_args(argv)
    args.data = args.data or DEFAULT_DATA[args.space]
    torch.set_num_threads(1)
    out = Path(args.out)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    archs = arch_list(args, out)
    if args.stage in ("all", "standalone"):
        truth = standalone(args, out, archs)
    if args.stage in ("all", "search"):
        for v in variants:
            search(args, out, v)
    if args.stage != "all":
        return 0

    truth_score = [t.get("score", math.nan) for t in truth]
    truth_loss = [-t.get("loss", math.nan) for t in truth]  # a second ground truth, less grainy than accuracy
    rows = []
    for v in variants:
        d = search(args, out, v)
        scores = supernet_scores(d, archs)
        wall = sum(json.loads((d / "summary.json").read_text())["seconds"].values())  # all epochs, across resumes
        for by in ("metric", "loss"):
            xs = [s[f"by_{by}"] for s in scores]
            c = correlate(xs, truth_score, args.resamples)
            c_loss = correlate(xs, truth_loss, args.resamples)
            rows.append({"variant": v, "options": [s.format(warmup=args.warmup) for s in VARIANTS[v]],
                         "ranked_by": by, "search_seconds": wall, **c,
                         **{f"{k}_vs_loss": c_loss[k] for k in ("tau", "low", "high")}})
    command = "python benchmarks/ranking.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"space": args.space, "dataset": args.data, "archs": len(archs), "train_epochs": args.train_epochs,
              "standalone": truth, "rows": rows, "command": command}
    (out / "ranking.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    print(table)
    if args.write_docs:
        write_docs(args.space, table)
    return 0


def markdown(result: dict[str, Any]) -> str:
    lines = [f"`{result['command']}`", "",
             "| variant (search options) | supernet ranks by | Kendall tau | 95 % bootstrap interval | Spearman rho "
             "| tau against the standalone loss [95 %] | K | E | search time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        options = ", ".join(f"`{o}`" for o in r["options"]) or "demo preset as is"
        by = "validation loss" if r["ranked_by"] == "loss" else "validation accuracy" if result["space"] != "rnn" \
            else "validation perplexity"
        wall = f"{r['search_seconds'] / 60:.1f} min" if math.isfinite(r["search_seconds"]) else "?"
        lines.append(f"| {r['variant']}: {options} | {by} | {r['tau']:.3f} | [{r['low']:.3f}, {r['high']:.3f}] | "
                     f"{r['rho']:.3f} | {r['tau_vs_loss']:.3f} [{r['low_vs_loss']:.2f}, {r['high_vs_loss']:.2f}] | "
                     f"{r['pairs']} | {result['train_epochs']} | {wall} |")
    return "\n".join(lines)


def write_docs(space: str, table: str) -> None:
    write_block(f"ranking:{space}", table, f"#### Ranking: {space}")


if __name__ == "__main__":
    sys.exit(main())
