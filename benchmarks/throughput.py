"""Throughput ratios of the supernets (see `enas.bench.harness`), written to benchmarks/results/throughput-DEVICE.json.

    python benchmarks/throughput.py                 # all spaces at the target sizes, default device
    python benchmarks/throughput.py --device cuda --steps 20
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from enas.bench.harness import run_benchmarks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", action="append", choices=("rnn", "macro", "micro"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", default="target", choices=("target", "small"))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=None, help="result file (default benchmarks/results/throughput-DEVICE.json)")
    args = parser.parse_args()
    results = run_benchmarks(args.space or ["rnn", "macro", "micro"], device=args.device, size=args.size,
                             warmup=args.warmup, steps=args.steps)
    device = results["device"].split(":")[0]
    out = Path(args.out or Path(__file__).parent / "results" / f"throughput-{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
