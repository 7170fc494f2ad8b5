"""`enas rank`: does the supernet rank architectures the way standalone training does?

For a finished (or stopped) search run, `rank_run` samples K distinct archs from the trained policy (or uniformly),
scores each with the shared weights on the whole validation split exactly as `Search.derive` does, trains each one
from scratch with the run's own ``train`` section (same space, model sizes and task as the search, so the comparison
is like for like; ``train.epochs`` replaced by E) and takes the final validation score of that training. Both
scores are the task's ``score`` (higher is better: accuracy for images, ``reward_c / ppl`` for the language model);
under ``search.score=loss`` the supernet's is derive's loss-based score instead (images: minus the validation
cross-entropy; `enas.search.scoring`). Under ``search.dedup`` the sampled archs are distinct networks
(`Arch.canonical`).

Files, all in the search run directory::

    rank/archs.json   the sampled list (reused by a rerun with the same options, so the rank resumes)
    rank/arch-I/      an ordinary `enas train` run directory per arch (finished ones are skipped on a rerun)
    rank.csv          one row per arch: both scores, both ranks, the other metrics
    rank.json         Kendall's tau-b, Spearman's rho, K, E, policy, what the score is
    rank.png          scatter of supernet against standalone score, tau and rho in the title
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from enas.arch import Arch, arch_from_json, load_arch
from enas.build import autocast
from enas.errors import ArchError, TrainingDiverged, UserError
from enas.registry import text_space
from enas.runs.environment import seed_everything
from enas.runs.rundir import CHECKPOINT, atomic_write_text
from enas.search import scoring
from enas.search.controller import UniformSampler
from enas.search.loop import Search
from enas.search.stats import average_ranks, kendall_tau, spearman_rho
from enas.train.final import FinalTraining

RANK_DIR = "rank"
ARCHS_FORMAT = "enas-rank-archs"
TRIES_PER_ARCH = 50  # sampling attempts per requested arch before settling for fewer distinct ones


def rank_run(run_dir: str | Path, archs: int, train_epochs: int, uniform: bool = False, seed: int | None = None,
             progress: bool | None = None, stream: TextIO | None = None) -> dict[str, Any]:
    """Rank ``archs`` sampled archs of the search run in ``run_dir`` by supernet score and by standalone training
    for ``train_epochs`` epochs; write rank.csv, rank.json and rank.png there and return rank.json's content."""
    out = stream or sys.stdout

    def say(text: str) -> None:
        print(f"enas rank: {text}", file=out, flush=True)

    if isinstance(archs, bool) or not isinstance(archs, int) or archs < 2:
        raise UserError(f"--archs must be at least 2 (a rank correlation compares two or more archs), got {archs}")
    if isinstance(train_epochs, bool) or not isinstance(train_epochs, int) or train_epochs < 1:
        raise UserError(f"--train-epochs must be at least 1, got {train_epochs}")
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run} is not a directory; pass the run directory of `enas search`")
    if not (run / "checkpoints" / CHECKPOINT).is_file():
        raise UserError(f"{run} has no checkpoint (checkpoints/{CHECKPOINT}); pass a search run that finished at "
                        "least one epoch")

    try:
        search = Search.resume(run, progress=progress)
    except KeyError as e:  # e.g. the checkpoint of `enas train`, which has no supernet
        raise UserError(f"{run} is not a search run (its checkpoint has no {e.args[0]!r}); pass a directory "
                        "written by `enas search`") from e
    cfg = search.cfg
    if not text_space(cfg.space) and getattr(cfg.task, "valid_size", 0) <= 0:
        raise UserError(f"{run} has no validation split (task.valid_size is 0); rank needs one to score archs")
    seed = cfg.seed if seed is None else seed
    uniform = uniform or getattr(cfg.search, "policy", "enas") == "random"
    policy = "uniform" if uniform else "controller"
    rank_dir = run / RANK_DIR
    key = {"policy": policy, "seed": seed, "archs_requested": archs, "search_epoch": search.epoch}

    # --- the sampled list: reused when the options and the checkpoint are the same --------------------------------
    stored = _read_archs_file(rank_dir / "archs.json")
    notes: list[str] = []
    if stored is not None and all(stored.get(k) == v for k, v in key.items()):
        arch_list = [arch_from_json(a) for a in stored["archs"]]
        say(f"reusing the {len(arch_list)} archs of {rank_dir / 'archs.json'}")
        if len(arch_list) < archs:
            notes.append(f"only {len(arch_list)} distinct archs were found for the {policy} policy (asked for "
                         f"{archs}); ranking those")
    else:
        seed_everything(seed)
        sampler = UniformSampler(search.space) if uniform else search.controller
        found: dict[Any, Arch] = {}
        tries = 0
        with torch.no_grad():
            while len(found) < archs and tries < TRIES_PER_ARCH * archs:
                arch = sampler.sample().arch
                found.setdefault(scoring.arch_key(arch, cfg.search.dedup), arch)
                tries += 1
        arch_list = list(found.values())
        if len(arch_list) < archs:
            notes.append(f"only {len(arch_list)} distinct archs in {tries} samples of the {policy} policy "
                         f"(asked for {archs}); ranking those")
            say(notes[-1])
        _check_existing(rank_dir, arch_list)
        rank_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(rank_dir / "archs.json", json.dumps(
            {"format": ARCHS_FORMAT, "version": 1, **key, "fixed_arcs": [a.to_fixed_arc() for a in arch_list],
             "archs": [a.to_json() for a in arch_list]}, indent=2) + "\n")

    for i in range(len(arch_list)):  # before any work: finished runs must match E and the seed
        _check_finished(rank_dir / f"arch-{i}", train_epochs, seed)

    # --- supernet scores, exactly as derive computes them ---------------------------------------------------------
    say(f"scoring {len(arch_list)} archs ({policy} policy) with the supernet of epoch {search.epoch} on the "
        "validation split")
    seed_everything(seed)
    search._reward_mode()
    with autocast(search.cfg, search.device):
        supernet_metrics = [search.task.evaluate(search.supernet, "valid", arch_fn=lambda a=a: a) for a in arch_list]
    supernet_metrics = [{**m, "score": scoring.candidate_score(search.task, m, cfg.search.score)}
                        for m in supernet_metrics]
    score_name, score_label = _score_name(cfg), _score_label(cfg)
    del search  # free the supernet (and its data) before the standalone trainings
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    # --- standalone training of each arch ---------------------------------------------------------------------------
    child_cfg = copy.deepcopy(cfg)
    child_cfg.seed = seed
    child_cfg.train.epochs = train_epochs
    if not child_cfg.train.eval_every:
        child_cfg.train.eval_every = train_epochs  # the final epoch must be evaluated on the validation split
    rows = []
    for i, (arch, sm) in enumerate(zip(arch_list, supernet_metrics)):
        d = rank_dir / f"arch-{i}"
        status = _train(arch, d, child_cfg, train_epochs, seed, progress, say, f"arch {i + 1}/{len(arch_list)}")
        valid, test, summary = _standalone_metrics(d) if status != "diverged" else ({}, {}, {})
        rows.append({"index": i, "fixed_arc": arch.to_fixed_arc(), "supernet": sm, "valid": valid, "test": test,
                     "params": summary.get("params"), "seconds": sum((summary.get("seconds") or {}).values()),
                     "status": status, "run_dir": str(d.relative_to(run))})
        say(f"arch {i + 1}/{len(arch_list)}: supernet {sm['score']:.4g}, standalone "
            f"{valid.get('score', math.nan):.4g} ({status})")

    # --- correlations and files -------------------------------------------------------------------------------------
    xs = [r["supernet"]["score"] for r in rows]
    ys = [r["valid"].get("score", math.nan) for r in rows]
    pairs = [(x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < len(rows):
        notes.append(f"{len(rows) - len(pairs)} arch(s) without a finite score left out of the correlations")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tau = kendall_tau([p[0] for p in pairs], [p[1] for p in pairs])
        rho = spearman_rho([p[0] for p in pairs], [p[1] for p in pairs])
    for w in caught:
        notes.append(str(w.message))
        print(f"enas rank: warning: {w.message}", file=sys.stderr, flush=True)

    atomic_write_text(run / "rank.csv", _rank_csv(rows, xs, ys))
    picture = None
    try:
        picture = str(plot_rank(xs, ys, run / "rank.png", tau, rho, score_label=score_label,
                                subtitle=f"{cfg.space}, {policy} policy, {len(rows)} archs, "
                                         f"{train_epochs} epoch{'s' * (train_epochs != 1)}"))
    except ImportError:  # matplotlib missing: the numbers are what matters
        pass
    result = {
        "kendall_tau": tau, "spearman_rho": rho, "archs": len(rows), "archs_requested": archs,
        "pairs": len(pairs), "train_epochs": train_epochs, "policy": policy, "score": score_name,
        "seed": seed, "space": cfg.space, "dataset": cfg.dataset, "preset": cfg.preset,
        "search_epoch": key["search_epoch"], "run_dir": str(run), "csv": str(run / "rank.csv"), "picture": picture,
        "notes": notes,
    }
    atomic_write_text(run / "rank.json", json.dumps(_finite(result), indent=2) + "\n")
    return result


# ------------------------------------------------------------------------------------------------------- helpers
def _score_name(cfg: Any) -> str:
    if cfg.search.score == "loss" and not text_space(cfg.space):
        return "supernet: minus the valid cross-entropy; standalone: valid accuracy (higher is better)"
    if text_space(cfg.space):
        return f"valid reward_c / ppl with reward_c = {cfg.task.reward_c:g} (higher is better)"
    return "valid accuracy (higher is better)"


def _score_label(cfg: Any) -> str:
    return f"{cfg.task.reward_c:g} / validation perplexity" if text_space(cfg.space) else "validation accuracy"


def _read_archs_file(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("format") != ARCHS_FORMAT:
            raise ValueError("wrong format")
        [arch_from_json(a) for a in data["archs"]]
    except (ValueError, KeyError, TypeError, AttributeError, ArchError) as e:
        raise UserError(f"{path} is not a rank arch list ({e}); delete {path.parent} to start the rank over") from e
    return data


def _check_existing(rank_dir: Path, arch_list: list[Arch]) -> None:
    """Refuse a new sample whose arch-I directories already hold other archs (another sample's runs)."""
    for i, arch in enumerate(arch_list):
        path = rank_dir / f"arch-{i}" / "arch.json"
        if path.is_file():
            try:
                same = load_arch(path) == arch
            except ArchError:
                same = False
            if not same:
                raise UserError(f"{rank_dir} holds the runs of another sample (different --archs, --seed, --uniform "
                                f"or a continued search); rerun with the first options or delete {rank_dir}")


def _check_finished(d: Path, epochs: int, seed: int) -> bool:
    """Whether ``d`` holds a finished training; `UserError` if it was trained for other epochs or another seed."""
    summary_path = d / "summary.json"
    if not summary_path.is_file():
        return False
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{summary_path} is not valid JSON; delete {d} to train that arch again") from e
    if summary.get("epochs") != epochs or summary.get("seed") != seed:
        raise UserError(f"{d} holds a training of {summary.get('epochs')} epoch(s) with seed {summary.get('seed')}; "
                        f"rerun with --train-epochs {summary.get('epochs')} --seed {summary.get('seed')} or delete "
                        f"{d.parent}")
    return True


def _train(arch: Arch, d: Path, child_cfg: Any, epochs: int, seed: int, progress: bool | None, say: Any,
           label: str) -> str:
    """Train ``arch`` in ``d`` unless that run finished; returns "reused", "resumed", "trained" or "diverged"."""

    if _check_finished(d, epochs, seed):
        return "reused"
    try:
        if (d / "checkpoints" / CHECKPOINT).is_file():
            say(f"{label}: resuming the standalone training in {d}")
            FinalTraining.resume(d, progress=progress, overrides=[("train.epochs", epochs)]).run()
            return "resumed"
        say(f"{label}: training {arch.to_fixed_arc()!r} for {epochs} epoch{'s' * (epochs != 1)} in {d}")
        FinalTraining(copy.deepcopy(child_cfg), arch, d, progress=progress).run()
        return "trained"
    except TrainingDiverged as e:
        print(f"enas rank: warning: {label} diverged ({e}); it is left out of the correlations", file=sys.stderr,
              flush=True)
        return "diverged"


def _standalone_metrics(d: Path) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """(validation metrics of the last evaluated epoch, test metrics, summary) of a finished train run."""
    summary = json.loads((d / "summary.json").read_text())
    valid: dict[str, float] = {}
    with open(d / "metrics.jsonl") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("kind") == "epoch" and rec.get("valid_score") is not None:
                valid = {k[len("valid_"):]: v for k, v in rec.items() if k.startswith("valid_")}
    test = {k[len("test_"):]: v for k, v in summary.items() if k.startswith("test_")}
    return valid, test, summary


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "nan" if isinstance(v, float) else ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _rank_csv(rows: list[dict[str, Any]], xs: list[float], ys: list[float]) -> str:
    def ranks(values: list[float]) -> list[float]:  # 1 = best; NaN scores rank last together
        return average_ranks([-v if math.isfinite(v) else math.inf for v in values])

    extra = sorted({k for r in rows for k in r["supernet"] if k not in ("score", "n", "tokens")})
    test_keys = sorted({k for r in rows for k in r["test"] if k not in ("score", "n", "tokens")})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["index", "fixed_arc", "supernet_score", "standalone_score", "supernet_rank", "standalone_rank",
                     *[f"supernet_valid_{k}" for k in extra], *[f"standalone_valid_{k}" for k in extra],
                     *[f"standalone_test_{k}" for k in test_keys], "params", "train_seconds", "status", "run_dir"])
    for r, rs, rt in zip(rows, ranks(xs), ranks(ys)):
        writer.writerow([r["index"], r["fixed_arc"], _fmt(r["supernet"]["score"]),
                         _fmt(r["valid"].get("score", math.nan)), _fmt(rs), _fmt(rt),
                         *[_fmt(r["supernet"].get(k)) for k in extra], *[_fmt(r["valid"].get(k)) for k in extra],
                         *[_fmt(r["test"].get(k)) for k in test_keys], _fmt(r["params"]), _fmt(float(r["seconds"])),
                         r["status"], r["run_dir"]])
    return buf.getvalue()


def _finite(value: Any) -> Any:
    """JSON has no NaN: write undefined numbers as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _corr_text(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else "undefined"


def plot_rank(supernet: list[float], standalone: list[float], path: str | Path, tau: float, rho: float,
              score_label: str = "score", subtitle: str = "") -> Path:
    """Scatter of supernet scores (x) against standalone scores (y), each point labelled with its arch index;
    Kendall's tau and Spearman's rho in the title. Writes a PNG to ``path`` and returns the path."""

    fig = Figure(figsize=(5.2, 4.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = [(i, x, y) for i, (x, y) in enumerate(zip(supernet, standalone)) if math.isfinite(x) and math.isfinite(y)]
    ax.scatter([p[1] for p in points], [p[2] for p in points], s=28, color="#1f77b4", edgecolor="#333333", lw=0.6,
               zorder=3)
    for i, x, y in points:
        ax.annotate(str(i), (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7.5, color="#555555")
    ax.set_xlabel(f"supernet: {score_label}", fontsize=9)
    ax.set_ylabel(f"standalone training: {score_label}", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(f"Kendall τ = {_corr_text(tau)}, Spearman ρ = {_corr_text(rho)}", fontsize=11)
    if subtitle:
        fig.suptitle(f"supernet vs standalone: {subtitle}", fontsize=9, color="#555555")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, format="png", facecolor="white", bbox_inches="tight", pad_inches=0.15)
    return path


__all__ = ["plot_rank", "rank_run"]
