"""Pictures of training runs, written as PNG files: the curves of the epoch records of a metrics.jsonl
(`plot_curves`) and the heat map of the ops sampled in each epoch (`plot_op_shares`)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from matplotlib.ticker import LogFormatter, MaxNLocator

from enas.errors import DataError
from enas.viz.dag import OP_TEXT, new_figure, save_figure


def _read_epochs(path: Path) -> dict[str, dict[float, float]]:
    """field -> {epoch: value} from the "epoch" lines of a metrics.jsonl; a re-logged epoch (resume) keeps its last
    value. Malformed lines, non-numeric and non-finite values are skipped."""
    series: dict[str, dict[float, float]] = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(rec, dict) or rec.get("kind") != "epoch":
                continue
            epoch = rec.get("epoch")
            if not isinstance(epoch, (int, float)) or isinstance(epoch, bool) or not math.isfinite(epoch):
                continue
            for key, v in rec.items():
                if key != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    series.setdefault(key, {})[epoch] = float(v)
    return series


_OP_SHARE = "op_share/"  # flat keys of the op histogram (enas.search.diagnostics)
_UNIT_RANGE = ("controller_entropy_frac", "distinct_share", "skip_density", "controller_skip_rate")
_LINE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
# Panels that hold several related series: (title, selector of the member fields, label of a member).
_REWARD_GROUP = ("controller_reward", "controller_baseline_mean", "controller_advantage")
_GROUPS: tuple[tuple[str, Any, Any], ...] = (
    ("controller reward, baseline, advantage", lambda k: k in _REWARD_GROUP, lambda k: k.removeprefix("controller_")),
    ("policy entropy per decision (nats)",
     lambda k: k.startswith("controller_entropy_") and k != "controller_entropy_frac",
     lambda k: k.removeprefix("controller_entropy_")),
)


def _panels(series: dict[str, dict[float, float]]) -> list[tuple[str, dict[str, dict[float, float]]]]:
    """(title, {label: points}) per panel: grouped series share one panel, every other field has its own, in the
    order of first appearance. ``controller_baseline`` (the final value) goes when its epoch mean is there."""
    if "controller_baseline_mean" in series:
        series = {k: v for k, v in series.items() if k != "controller_baseline"}
    panels: dict[str, dict[str, dict[float, float]]] = {}
    labels = {}
    for key, points in series.items():
        for title, member, label in _GROUPS:
            if member(key):
                panels.setdefault(title, {})[key] = points
                labels[key] = label(key)
                break
        else:
            panels[key] = {key: points}
    if len(panels.get(_GROUPS[0][0], ())) > 1:  # reward, baseline, advantage in this order
        panels[_GROUPS[0][0]] = {k: panels[_GROUPS[0][0]][k] for k in _REWARD_GROUP if k in panels[_GROUPS[0][0]]}
    # a group with one member present is an ordinary panel named after its field
    return [(title, {labels[k]: p for k, p in lines.items()}) if len(lines) > 1 else (next(iter(lines)), lines)
            for title, lines in panels.items()]


def plot_curves(metrics_path: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Plot every numeric field of the epoch records of a metrics.jsonl (or a run directory holding one) against
    the epoch, one small panel per field, and write the PNG to `path`. Raises `DataError` when there is nothing
    to plot."""
    src = Path(metrics_path)
    if src.is_dir():
        src = src / "metrics.jsonl"
    if not src.is_file():
        raise DataError(f"metrics file {src} does not exist; pass a run directory or its metrics.jsonl")
    # Op shares have their own picture (plot_op_shares).
    series = {k: v for k, v in _read_epochs(src).items() if not k.startswith(_OP_SHARE)}
    # Bookkeeping fields (cumulative seconds, batch and token counts) and constant series make no useful panel.
    informative = {k: v for k, v in series.items()
                   if not k.startswith("seconds") and k not in ("steps", "averaging")
                   and not k.endswith(("_tokens", "_n")) and len({round(y, 12) for y in v.values()}) > 1}
    series = informative or series
    if not series:
        raise DataError(f"{src} has no epoch records with numeric fields; plot a run that finished an epoch")
    panels = _panels(series)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fw, fh = 3.4 * ncols, 2.5 * nrows + 0.8
    fig = new_figure(fw, fh)
    # Fixed margins in inches: much faster than a constrained or tight layout, which draw the figure twice.
    fig.subplots_adjust(left=0.6 / fw, right=1 - 0.15 / fw, bottom=0.45 / fh, top=1 - 0.85 / fh, wspace=0.32,
                        hspace=0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, lines) in zip(axes, panels):
        for (label, points), color in zip(lines.items(), _LINE_COLORS):
            xs = sorted(points)
            ys = [points[e] for e in xs]
            ax.plot(xs, ys, color=color, lw=1.4, marker="o" if len(xs) <= 30 else None, ms=3, label=label)
        if len(lines) > 1:
            ax.legend(fontsize=7, frameon=False)
        elif ("ppl" in name or "perplexity" in name) and min(ys) > 0 and max(ys) > 3 * min(ys):
            ax.set_yscale("log")  # perplexities fall by orders of magnitude early on
            for axis_fmt in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis_fmt(LogFormatter(minor_thresholds=(2, 0.5)))  # plain numbers (600) instead of 6x10^2
        if name in _UNIT_RANGE:  # shares: the whole range, so that a collapse towards 0 or 1 shows as one
            ax.set_ylim(-0.03, 1.03)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(which="both", labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"training curves: {src.parent.name or src.name}", fontsize=11)
    return save_figure(fig, path, 150, tight=False)


def plot_op_shares(metrics_path: str | os.PathLike, path: str | os.PathLike, required: bool = True) -> Path | None:
    """Heat map of the ``op_share/VOCAB/OP`` fields of the epoch records of a metrics.jsonl (or a run directory
    holding one): the share of each op among the archs sampled in each epoch's shared phase, epochs along x, ops
    along y, one panel per op vocabulary; writes the PNG to `path`. Without op shares: `DataError`, or None when
    ``required`` is false."""
    src = Path(metrics_path)
    if src.is_dir():
        src = src / "metrics.jsonl"
    if not src.is_file():
        raise DataError(f"metrics file {src} does not exist; pass a run directory or its metrics.jsonl")
    vocabs: dict[str, dict[str, dict[float, float]]] = {}
    for key, points in _read_epochs(src).items():
        parts = key.split("/")
        if len(parts) == 3 and key.startswith(_OP_SHARE):
            vocabs.setdefault(parts[1], {})[parts[2]] = points
    if not vocabs:
        if not required:
            return None
        raise DataError(f"{src} has no op shares (op_share/... fields); plot a search run that finished an epoch")
    epochs = sorted({e for ops in vocabs.values() for points in ops.values() for e in points})
    n_ops = sum(len(ops) for ops in vocabs.values())
    fw = min(max(5.0, 2.5 + 0.25 * len(epochs)), 14.0)
    fh = 0.9 + 0.8 * len(vocabs) + 0.3 * n_ops
    fig = new_figure(fw, fh)
    axes = fig.subplots(len(vocabs), 1, squeeze=False,
                        gridspec_kw={"height_ratios": [len(ops) for ops in vocabs.values()]}).ravel()
    fig.subplots_adjust(left=1.2 / fw, right=1 - 1.1 / fw, bottom=0.5 / fh, top=1 - 0.55 / fh, hspace=0.9)
    image = None
    for ax, (vocab, ops) in zip(axes, vocabs.items()):
        names = list(ops)
        grid = [[ops[op].get(e, math.nan) for e in epochs] for op in names]  # ops x epochs
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest",
                          extent=(epochs[0] - 0.5, epochs[-1] + 0.5, len(names) - 0.5, -0.5))
        ax.set_yticks(range(len(names)), [OP_TEXT.get(op, op) for op in names], fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(vocab, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        if len(epochs) * len(names) <= 150:  # small grids get the numbers too
            for i, row in enumerate(grid):
                for e, v in zip(epochs, row):
                    if math.isfinite(v):
                        ax.text(e, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                                color="white" if v < 0.6 else "black")
    bar = fig.colorbar(image, ax=list(axes), fraction=0.04, pad=0.02)
    bar.set_label("share of the vocabulary's samples", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(f"sampled ops per epoch: {src.parent.name or src.name}", fontsize=11)
    return save_figure(fig, path, 150, tight=False)


__all__ = ["plot_curves", "plot_op_shares"]
