"""Several seeds of one search or training: one ordinary run directory per seed, then a table and mean ± std.

Layout::

    OUT/seed-0/ ...   a normal run directory (resumable on its own with ``--resume --out OUT/seed-0``)
    OUT/seed-1/ ...
    OUT/seeds.csv     one row per seed: seed, run_dir, fixed_arc and the final figures
    OUT/seeds.json    {"seeds": [...], "metrics": {name: {"mean": m, "std": s, "values": [...]}}}

A seed is finished when its ``summary.json`` exists; resuming skips finished seeds, continues the ones with a
checkpoint and starts the others. Seeds finished earlier in OUT but not named this time stay in the table and the
statistics (``--seeds 0,1`` then ``--seeds 2`` gives three seeds), unless their configuration differs from this
run's beyond the seed, which is said and leaves them out. The std is the sample standard deviation (ddof=1), null
for one seed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from enas.errors import UserError
from enas.runs.rundir import CHECKPOINT, atomic_write_text

MAX_SEED = 2**32 - 1  # numpy's seed range
COUNT_KEYS = ("n", "tokens")  # sizes of the split scored, not results
# config keys that may differ between seeds of one table: the seed itself and where or how fast it ran
PER_SEED_KEYS = ("seed", "device", "kernels", "resume_new_data")

RunOne = Callable[[int, Path, bool], dict[str, Any]]


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``: distinct integers in 0..2**32-1, comma separated."""
    hint = f"{flag} expects distinct integers in 0..{MAX_SEED} separated by commas, like {flag} 0,1,2"
    items = [item.strip() for item in str(text).split(",")]
    seeds: list[int] = []
    for item in items:
        try:
            seed = int(item)
        except ValueError:
            raise UserError(f"{hint}; {item!r} is not an integer") from None
        if not 0 <= seed <= MAX_SEED:
            raise UserError(f"{hint}; {seed} is out of range")
        if seed in seeds:
            raise UserError(f"{hint}; {seed} is given twice")
        seeds.append(seed)
    return seeds


def seed_dir(out: str | Path, seed: int) -> Path:
    return Path(out) / f"seed-{seed}"


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file()


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / CHECKPOINT).is_file()


def first_checkpointed(out: str | Path, seeds: list[int]) -> Path | None:
    """The run directory of the first seed (in ``seeds`` order) holding a checkpoint: the template of a seed that
    a resumed multi-seed run has to start from scratch."""
    for seed in seeds:
        if has_checkpoint(seed_dir(out, seed)):
            return seed_dir(out, seed)
    return None


def run_seeds(seeds: list[int], out: str | Path, run_one: RunOne, resume: bool = False,
              log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run ``run_one(seed, run_dir, resume)`` for every seed into ``OUT/seed-N`` (it returns the run's summary
    dict), then write ``seeds.csv`` and ``seeds.json``; returns the content of ``seeds.json``.

    With ``resume``, finished seeds are read back from their ``summary.json``, seeds with a checkpoint are resumed
    (``resume=True``) and the others are started (``resume=False``)."""
    out = Path(out)
    if not seeds:
        raise UserError("--seeds needs at least one seed, like --seeds 0,1,2")
    if resume and first_checkpointed(out, seeds) is None:
        raise UserError(f"nothing to resume in {out}: no seed-N/checkpoints/{CHECKPOINT} for seeds "
                        f"{','.join(map(str, seeds))}; start without --resume")
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for i, seed in enumerate(seeds, 1):
        run_dir = seed_dir(out, seed)
        if resume and is_finished(run_dir):
            if log:
                log(f"seed {seed} ({i}/{len(seeds)}): finished, {run_dir}")
            summaries.append(json.loads((run_dir / "summary.json").read_text()))
            continue
        again = resume and has_checkpoint(run_dir)
        if log:
            log(f"seed {seed} ({i}/{len(seeds)}): {'resuming' if again else 'running'} in {run_dir}")
        summaries.append(run_one(seed, run_dir, again))
    earlier = earlier_seeds(out, seeds, log)
    seeds = list(seeds) + earlier
    summaries += [json.loads((seed_dir(out, seed) / "summary.json").read_text()) for seed in earlier]
    rows = [seed_row(seed, seed_dir(out, seed), s) for seed, s in zip(seeds, summaries)]
    write_seeds_csv(out / "seeds.csv", rows)
    result = aggregate(seeds, rows)
    write_seeds_json(out / "seeds.json", result)
    return result


def _shared_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's config.yaml without the keys that may differ between seeds (None when it has none)."""
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    return {k: v for k, v in data.items() if k not in PER_SEED_KEYS}


def earlier_seeds(out: Path, seeds: list[int], log: Callable[[str], None] | None = print) -> list[int]:
    """Seeds finished in ``out`` before (``seed-N/summary.json``) that ``seeds`` does not name, in increasing order,
    whose configuration equals the named seeds' beyond the seed; the others are named in the log and left out."""
    reference = next((c for c in (_shared_config(seed_dir(out, s)) for s in seeds) if c is not None), None)
    found = []
    for path in out.glob("seed-*"):
        number = path.name[len("seed-"):]
        if number.isdigit() and str(int(number)) == number and int(number) not in seeds and is_finished(path):
            found.append(int(number))
    kept = []
    for seed in sorted(found):
        config = _shared_config(seed_dir(out, seed))
        if reference is not None and config is not None and config != reference:
            if log:
                log(f"seed {seed}: finished earlier in {out} with another configuration; left out of seeds.csv "
                    "(compare its config.yaml, or use another --out)")
            continue
        if log:
            log(f"seed {seed}: finished earlier in {seed_dir(out, seed)}; kept in seeds.csv")
        kept.append(seed)
    return kept


def final_figures(summary: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(fixed_arc, {name: value}) of a run's summary. Search: the best candidate's score and validation metrics;
    train: the test metrics and the parameter count."""
    if summary.get("command") == "search" or "best" in summary:
        best = summary.get("best") or {}
        figures = {"score": best.get("score")}
        figures.update({k: v for k, v in best.items()
                        if k.startswith("valid_") and k != "valid_score" and k[len("valid_"):] not in COUNT_KEYS})
        return best.get("fixed_arc"), figures
    figures = {k: v for k, v in summary.items() if k.startswith("test_") and k[len("test_"):] not in COUNT_KEYS}
    if "params" in summary:
        figures["params"] = summary["params"]
    return summary.get("fixed_arc"), figures


def seed_row(seed: int, run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    fixed_arc, figures = final_figures(summary)
    return {"seed": seed, "run_dir": str(run_dir), "fixed_arc": fixed_arc, **figures}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def aggregate(seeds: list[int], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"seeds": [...], "metrics": {name: {"mean", "std", "values"}}}`` over the numeric figures of ``rows``; a
    figure missing or not finite in some seed keeps its values but has no mean/std (null)."""
    names: list[str] = []
    for row in rows:
        for k, v in row.items():
            if k not in ("seed", "run_dir", "fixed_arc") and k not in names and (_is_number(v) or v is None):
                names.append(k)
    metrics: dict[str, Any] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        if all(v is None for v in values):
            continue
        finite = all(_is_number(v) and math.isfinite(v) for v in values)
        mean = statistics.fmean(values) if finite else None
        std = statistics.stdev(values) if finite and len(values) > 1 else None  # one seed has no spread
        metrics[name] = {"mean": mean, "std": std, "values": values}
    return {"seeds": list(seeds), "metrics": metrics}


def write_seeds_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    columns = ["seed", "run_dir", "fixed_arc"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    atomic_write_text(Path(path), buf.getvalue())
    return Path(path)


def write_seeds_json(path: str | Path, result: dict[str, Any]) -> Path:
    def clean(v: Any) -> Any:  # JSON has no NaN
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    atomic_write_text(Path(path), json.dumps(clean(result), indent=2) + "\n")
    return Path(path)


def describe(result: dict[str, Any]) -> list[str]:
    """One line per figure: ``name mean ± std (n seeds)``."""
    n = len(result["seeds"])
    lines = []
    for name, m in result["metrics"].items():
        if m["mean"] is None:
            lines.append(f"{name}: not finite in every seed")
        else:
            spread = f" ± {m['std']:.2g}" if m["std"] is not None else ""  # one seed: no standard deviation
            lines.append(f"{name} {m['mean']:.4g}{spread} ({n} seed{'s' if n != 1 else ''})")
    return lines
