"""Rank correlations without SciPy: Kendall's tau-b and Spearman's rho, both handling ties.

* `kendall_tau`: tau-b = (C - D) / sqrt((n0 - n1) (n0 - n2)) over all n0 = n (n - 1) / 2 pairs, where C and D count
  concordant and discordant pairs, n1 the pairs tied in x and n2 the pairs tied in y (a pair tied in both counts in
  both). Equal to ``scipy.stats.kendalltau`` (its default variant "b").
* `spearman_rho`: the Pearson correlation of the average ranks (tied values share the mean of the ranks they span).
  Equal to ``scipy.stats.spearmanr``.

* `bootstrap_interval`: a percentile bootstrap confidence interval of such a statistic, resampling the pairs.

Degenerate inputs (fewer than two pairs, all x or all y equal, a NaN) give NaN and a `StatsWarning` instead of an
exception; inputs of different lengths are a `ValueError`. Ties are exact float equality.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Sequence

__all__ = ["StatsWarning", "average_ranks", "bootstrap_interval", "kendall_tau", "spearman_rho"]


class StatsWarning(RuntimeWarning):
    """A correlation is undefined for the given input (it returned NaN)."""


def _check(x: Sequence[float], y: Sequence[float], name: str) -> tuple[list[float], list[float]] | None:
    """The inputs as float lists, or None (after a warning) when ``name`` is undefined for them."""
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    if len(xs) != len(ys):
        raise ValueError(f"{name}: x and y must have the same length, got {len(xs)} and {len(ys)}")
    if len(xs) < 2:
        warnings.warn(f"{name} needs at least 2 pairs, got {len(xs)}; the result is NaN", StatsWarning, stacklevel=3)
        return None
    if any(math.isnan(v) for v in xs + ys):
        warnings.warn(f"{name} of values containing NaN is NaN", StatsWarning, stacklevel=3)
        return None
    for label, vs in (("x", xs), ("y", ys)):
        if all(v == vs[0] for v in vs):
            warnings.warn(f"{name} is undefined when all {label} values are equal; the result is NaN", StatsWarning,
                          stacklevel=3)
            return None
    return xs, ys


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of ``values`` in increasing order; tied values get the mean of the ranks they span."""
    vs = [float(v) for v in values]
    order = sorted(range(len(vs)), key=lambda i: vs[i])
    ranks = [0.0] * len(vs)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and vs[order[end + 1]] == vs[order[start]]:
            end += 1
        mean_rank = (start + end) / 2 + 1  # ranks start+1 .. end+1
        for k in range(start, end + 1):
            ranks[order[k]] = mean_rank
        start = end + 1
    return ranks


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of paired samples ``x`` and ``y`` (NaN with a `StatsWarning` when undefined)."""
    checked = _check(x, y, "Kendall's tau")
    if checked is None:
        return math.nan
    xs, ys = checked
    n = len(xs)
    concordant = discordant = tied_x = tied_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            sx = (xs[i] > xs[j]) - (xs[i] < xs[j])  # signs by comparison: exact for infinities too
            sy = (ys[i] > ys[j]) - (ys[i] < ys[j])
            tied_x += sx == 0
            tied_y += sy == 0
            if sx * sy > 0:
                concordant += 1
            elif sx * sy < 0:
                discordant += 1
    n0 = n * (n - 1) // 2
    # both factors are > 0: _check refused constant inputs
    return (concordant - discordant) / math.sqrt((n0 - tied_x) * (n0 - tied_y))


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho of paired samples ``x`` and ``y`` (NaN with a `StatsWarning` when undefined)."""
    checked = _check(x, y, "Spearman's rho")
    if checked is None:
        return math.nan
    rx, ry = average_ranks(checked[0]), average_ranks(checked[1])
    n = len(rx)
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    rho = sxy / math.sqrt(sxx * syy)
    return max(-1.0, min(1.0, rho))  # rounding can step just outside [-1, 1]


def bootstrap_interval(x: Sequence[float], y: Sequence[float],
                       statistic: Callable[[Sequence[float], Sequence[float]], float] = kendall_tau,
                       level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(x, y)``: ``resamples`` times, draw n pairs with replacement
    (a `random.Random` of ``seed``, so the interval is reproducible) and take the statistic; return the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those values (linear interpolation). Resamples where
    the statistic is undefined (all x or all y equal) are left out; (NaN, NaN) with a `StatsWarning` when the
    statistic of the sample itself is undefined. With 20 archs a tau's interval is wide (about +-0.3): say so
    rather than read the point value alone."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    checked = _check(x, y, "a bootstrap interval")
    if checked is None:
        return math.nan, math.nan
    xs, ys = checked
    n, rng, values = len(xs), random.Random(seed), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatsWarning)  # degenerate resamples are expected and skipped
        for _ in range(resamples):
            idx = [rng.randrange(n) for _ in range(n)]
            v = statistic([xs[i] for i in idx], [ys[i] for i in idx])
            if not math.isnan(v):
                values.append(v)
    if not values:
        warnings.warn("every bootstrap resample was degenerate; the interval is NaN", StatsWarning, stacklevel=2)
        return math.nan, math.nan
    values.sort()

    def quantile(q: float) -> float:
        pos = q * (len(values) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(values) - 1)
        return values[lo] + (values[hi] - values[lo]) * (pos - lo)

    return quantile((1 - level) / 2), quantile((1 + level) / 2)
