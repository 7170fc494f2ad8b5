"""The controller as an optimizer, on ground truth: ENAS's controller, random sampling and regularized evolution on
NAS-Bench-Graph's tables of true scores (`enas.oracle`), many seeds, several budgets.

Each search gets ``reward_fn = validation accuracy`` from the table; after k evaluations the arch with the best
validation accuracy found so far is the search's answer, and its **test** accuracy is what counts. Every (dataset,
policy, seed) search runs to the largest budget once; the smaller budgets read the same trace (the policies do not
know the budget). Reported per budget: mean and standard error over seeds of that test accuracy, and the regret to
the table's highest test accuracy.

Settings are chosen on the two tuning datasets (``--datasets cora,citeseer``) and reported on the other six::

    python benchmarks/oracle.py --datasets cora,citeseer --seeds 20 --variant paper --variant demo
    python benchmarks/oracle.py --seeds 50 --write-docs          # the six report datasets, all policies

``--variant NAME`` picks the controller settings: ``paper`` (the macro ``paper`` preset: the authors' CIFAR
script), ``demo`` (the macro ``demo`` preset, the short-search settings every demo preset uses), or
``NAME=key=value,key=value`` (the ``demo`` settings with controller keys changed, for sweeps). Not part of the
tests: about 4 s per controller search of 500 evaluations on one core.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from docs_block import write_block

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = (50, 100, 200, 500)


def controller_config(variant: str):
    """The `ControllerConfig` of a variant name (see the module docstring)."""
    from enas.config import parse_set
    from enas.presets import make_config

    name, _, changes = variant.partition("=")
    base = "paper" if name == "paper" else "demo"
    cfg = make_config("macro", base, "search", "fashion-mnist").controller
    if changes:
        fields = {f.name: f for f in dataclasses.fields(cfg)}
        for key, value in parse_set(changes.split(",")):
            if key not in fields:
                raise SystemExit(f"--variant {variant}: controller has no key {key!r}")
            setattr(cfg, key, value)
    cfg.check()
    return cfg


def one_search(job: tuple[str, str, str, int, int]) -> dict[str, Any]:
    """One search of one (dataset, policy, variant, seed); the test and validation accuracy of the best-validation
    arch after each budget, and the anytime curve of that test accuracy."""
    import torch

    from enas.oracle import run
    from enas.oracle.nasbench_graph import GraphSpace, GraphTable

    torch.set_num_threads(1)
    dataset, policy, variant, seed, evaluations = job
    table = _table(dataset, GraphTable)
    cfg = controller_config(variant) if policy == "enas" else None
    t = time.perf_counter()
    result = run(GraphSpace(), table.valid, evaluations, policy=policy, seed=seed, controller=cfg)
    curve, valid, best_i = [], [], 0
    for i, r in enumerate(result.rewards):  # the test accuracy of the best-validation arch so far
        if r > result.rewards[best_i]:
            best_i = i
        curve.append(table.test(result.archs[best_i]))
        valid.append(result.rewards[best_i])
    label = f"enas:{variant.partition('=')[0]}" if policy == "enas" else policy
    return {"dataset": dataset, "method": label, "seed": seed, "curve": curve, "valid_curve": valid,
            "distinct": len(set(result.archs)), "seconds": time.perf_counter() - t}


_TABLES: dict[str, Any] = {}


def _table(dataset: str, cls: Any) -> Any:
    if dataset not in _TABLES:
        _TABLES[dataset] = cls(dataset)
    return _TABLES[dataset]


def summarize(rows: list[dict[str, Any]], budgets: tuple[int, ...]) -> dict[str, Any]:
    """Per (dataset, method, budget): n, mean and standard error of the test accuracy, and the regret."""
    from enas.oracle.nasbench_graph import GraphTable

    out: dict[str, Any] = {}
    for row in rows:
        out.setdefault(row["dataset"], {}).setdefault(row["method"], []).append(row)
    summary: dict[str, Any] = {}
    for dataset, methods in out.items():
        best_test = _table(dataset, GraphTable).best()[0]
        summary[dataset] = {"best_test": best_test, "methods": {}}
        for method, runs in methods.items():
            per_budget = {}
            for b in budgets:
                values = [r["curve"][min(b, len(r["curve"])) - 1] for r in runs]
                valid = [r["valid_curve"][min(b, len(r["curve"])) - 1] for r in runs]
                se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
                mean = statistics.fmean(values)
                per_budget[b] = {"n": len(values), "mean": mean, "se": se, "regret": best_test - mean,
                                 "valid": statistics.fmean(valid),
                                 "valid_se": statistics.stdev(valid) / math.sqrt(len(valid)) if len(valid) > 1 else 0}
            summary[dataset]["methods"][method] = per_budget
    return summary


def pooled(summary: dict[str, Any], method: str, budget: int) -> tuple[float, float]:
    """Mean over datasets of a method's mean regret, and its standard error (independent datasets)."""
    cells = [d["methods"][method][budget] for d in summary.values() if method in d["methods"]]
    mean = statistics.fmean(c["regret"] for c in cells)
    se = math.sqrt(sum(c["se"] ** 2 for c in cells)) / len(cells)
    return mean, se


def markdown(summary: dict[str, Any], budgets: tuple[int, ...], command: str, seconds: float) -> str:
    methods = list(dict.fromkeys(m for d in summary.values() for m in d["methods"]))
    lines = [f"`{command}` ({seconds / 60:.0f} min on 2 cores)", "",
             "Mean regret over the datasets below, in accuracy points (the table's best test accuracy minus the test "
             "accuracy of the best-validation arch found; lower is better), ± standard error:", "",
             "| method | " + " | ".join(f"{b} evals" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for m in methods:
        cells = []
        for b in budgets:
            mean, se = pooled(summary, m, b)
            cells.append(f"{100 * mean:.2f} ± {100 * se:.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "The optimizer's own objective, the best validation accuracy found (%), mean over the datasets "
              "± standard error:", "", "| method | " + " | ".join(f"{b} evals" for b in budgets) + " |",
              "|---|" + "---|" * len(budgets)]
    for m in methods:
        cells = []
        for b in budgets:
            cs = [d["methods"][m][b] for d in summary.values() if m in d["methods"]]
            mean = statistics.fmean(c["valid"] for c in cs)
            se = math.sqrt(sum(c["valid_se"] ** 2 for c in cs)) / len(cs)
            cells.append(f"{100 * mean:.2f} ± {100 * se:.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "Test accuracy (%) of the best-validation arch found, mean ± standard error over seeds:", "",
              "| dataset (best in table) | method | n | " + " | ".join(f"{b}" for b in budgets) + " |",
              "|---|---|---|" + "---|" * len(budgets)]
    for dataset, d in summary.items():
        for m in methods:
            cells = d["methods"].get(m)
            if cells is None:
                continue
            n = cells[budgets[-1]]["n"]
            values = " | ".join(f"{100 * cells[b]['mean']:.2f} ± {100 * cells[b]['se']:.2f}" for b in budgets)
            lines.append(f"| {dataset} ({100 * d['best_test']:.2f}) | {m} | {n} | {values} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    """Anytime plot: pooled mean regret against evaluations, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from enas.oracle.nasbench_graph import GraphTable

    curves: dict[str, dict[str, list[list[float]]]] = {}
    for row in rows:
        curves.setdefault(row["method"], {}).setdefault(row["dataset"], []).append(row["curve"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, per_dataset in curves.items():
        n = min(len(c) for cs in per_dataset.values() for c in cs)
        regret = []
        for k in range(n):
            per = [_table(ds, GraphTable).best()[0] - statistics.fmean(c[k] for c in cs)
                   for ds, cs in per_dataset.items()]
            regret.append(100 * statistics.fmean(per))
        ax.plot(range(1, n + 1), regret, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("mean regret (test accuracy points)")
    ax.set_title(f"NAS-Bench-Graph, {len(next(iter(curves.values())))} datasets")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_docs(text: str) -> None:
    write_block("oracle", text, "### The controller alone, on ground truth (NAS-Bench-Graph)")


def main(argv: list[str] | None = None) -> int:
    from enas.oracle.nasbench_graph import REPORT_DATASETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(REPORT_DATASETS))
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    p.add_argument("--policies", default="enas,random,evolution")
    p.add_argument("--variant", action="append", help="controller settings (repeatable): paper, demo, NAME=k=v,...")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--json", type=Path, help="write every search's curve and the summary here")
    p.add_argument("--plot", type=Path, help="write the anytime plot here")
    p.add_argument("--write-docs", action="store_true", help="the table into docs/results.md, the plot into docs/")
    args = p.parse_args(argv)
    budgets = tuple(sorted(int(b) for b in args.budgets.split(",")))
    variants = args.variant or ["demo", "paper"]
    for v in variants:
        controller_config(v)  # refuse a bad variant before any work
    jobs = []
    for dataset in args.datasets.split(","):
        for policy in args.policies.split(","):
            for variant in variants if policy == "enas" else [""]:
                jobs += [(dataset, policy, variant, seed, budgets[-1]) for seed in range(args.seeds)]
    t = time.perf_counter()
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for i, row in enumerate(pool.map(one_search, jobs, chunksize=4)):
            rows.append(row)
            if (i + 1) % 50 == 0 or i + 1 == len(jobs):
                print(f"oracle: {i + 1}/{len(jobs)} searches, {time.perf_counter() - t:.0f} s", file=sys.stderr,
                      flush=True)
    seconds = time.perf_counter() - t
    summary = summarize(rows, budgets)
    command = "python benchmarks/oracle.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = markdown(summary, budgets, command, seconds)
    print(text)
    if args.json:
        compact = [{k: v for k, v in r.items() if k not in ("curve", "valid_curve")}
                   | {"test_at": {b: r["curve"][b - 1] for b in budgets},
                      "valid_at": {b: r["valid_curve"][b - 1] for b in budgets}} for r in rows]
        args.json.write_text(json.dumps({"summary": summary, "rows": compact, "seconds": seconds}))
    if args.plot or args.write_docs:
        plot(summary, rows, args.plot or ROOT / "docs" / "oracle.png")
    if args.write_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
