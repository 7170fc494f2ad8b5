"""Does a demo search's derived arch retrain better than uniformly sampled ones?

Retrains the arch a finished search derived (``RUN/arch.json``) and ``--uniform`` N uniformly sampled archs (the
quality benchmark's fixed draw) with the same final-training preset, as ``enas train ARCH --preset demo`` does, and
reports each test figure, the uniform median and where the derived arch falls among them.

    enas search --space rnn --data ptb --preset demo --out runs/demo
    python benchmarks/demo_retrain.py --run runs/demo --out runs/demo-retrain

Every training is an ordinary run directory under ``--out``; rerunning skips what is finished, and ``--part I/N``
lets N processes share the trainings. Not part of the tests: each recurrent demo training takes minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from quality import DEFAULT_DATA, train, uniform_archs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a finished search run directory")
    p.add_argument("--uniform", type=int, default=5)
    p.add_argument("--preset", default="demo")
    p.add_argument("--part", default="0/1", metavar="I/N", help="train only the archs whose index is I modulo N")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    args.train_seed, args.train_set, args.search_set = 0, [], []
    summary = json.loads((Path(args.run) / "summary.json").read_text())
    space = summary["space"]
    data = summary.get("dataset") or DEFAULT_DATA[space]
    archs = [("derived", summary["best"]["fixed_arc"])]
    archs += [(f"uniform-{i}", arc) for i, arc in enumerate(uniform_archs(space, data, args.uniform, args))]
    part, parts = (int(v) for v in args.part.split("/"))
    out = Path(args.out)
    key = "test_ppl" if space == "rnn" else "test_acc"
    figures = {}
    for i, (name, arc) in enumerate(archs):
        done = (out / "train" / name / "summary.json").exists()
        if not done and i % parts != part:
            continue
        figures[name] = train(space, data, arc, name, out, args).get(key, float("nan"))
        print(f"{name} ({arc}): {key} {figures[name]:.4g}", flush=True)
    if len(figures) < len(archs):
        return 0
    uniform = [figures[n] for n, _ in archs[1:]]
    median = statistics.median(uniform)
    lower_is_better = key == "test_ppl"
    beaten = sum((figures["derived"] < u) if lower_is_better else (figures["derived"] > u) for u in uniform)
    result = {"space": space, "metric": key, "derived": figures["derived"], "uniform": uniform,
              "uniform_median": median, "uniform_beaten": beaten, "archs": dict(archs)}
    (out / "demo_retrain.json").write_text(json.dumps(result, indent=2))
    print(f"derived {figures['derived']:.4g}; uniform median {median:.4g}; the derived arch beats {beaten} of "
          f"{len(uniform)} uniform archs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
