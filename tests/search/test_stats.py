"""Kendall's tau-b and Spearman's rho: hand-computed values (with ties), degenerate inputs, and SciPy agreement."""

import math
import random

import pytest

from enas.search.stats import StatsWarning, average_ranks, bootstrap_interval, kendall_tau, spearman_rho


def test_average_ranks_share_tied_ranks():
    assert average_ranks([10, 30, 20]) == [1, 3, 2]
    assert average_ranks([12, 2, 1, 12, 2]) == [4.5, 2.5, 1, 4.5, 2.5]
    assert average_ranks([7, 7, 7]) == [2, 2, 2]
    assert average_ranks([]) == []


def test_perfect_and_reversed_orders():
    x = [0.1, 0.4, 0.2, 0.9, 0.5]
    y = [1, 4, 2, 9, 5]
    assert kendall_tau(x, y) == pytest.approx(1.0)
    assert spearman_rho(x, y) == pytest.approx(1.0)
    assert kendall_tau(x, [-v for v in y]) == pytest.approx(-1.0)
    assert spearman_rho(x, [-v for v in y]) == pytest.approx(-1.0)


def test_hand_computed_values_without_ties():
    x, y = [1, 2, 3, 4], [1, 3, 2, 4]
    # pairs: (1,2) C, (1,3) C, (1,4) C, (2,3) D, (2,4) C, (3,4) C -> (5 - 1) / 6
    assert kendall_tau(x, y) == pytest.approx(4 / 6)
    # sum d^2 = 2 -> 1 - 6 * 2 / (4 * 15)
    assert spearman_rho(x, y) == pytest.approx(1 - 12 / 60)


def test_hand_computed_values_with_ties_in_one_variable():
    x, y = [1, 2, 3, 4, 5], [5, 6, 7, 8, 7]
    # 8 concordant, 1 discordant (4, 5), 1 pair tied in y (3, 5): tau-b = 7 / sqrt(10 * 9)
    assert kendall_tau(x, y) == pytest.approx(7 / math.sqrt(90))
    # ranks of y: 1, 2, 3.5, 5, 3.5; centred products sum to 8, squares to 10 and 9.5
    assert spearman_rho(x, y) == pytest.approx(8 / math.sqrt(10 * 9.5))


def test_hand_computed_values_with_ties_in_both_variables():
    x, y = [12, 2, 1, 12, 2], [1, 4, 7, 1, 0]
    # 2 concordant, 6 discordant; ties: x (0,3), (1,4); y (0,3) -> -4 / sqrt((10 - 2)(10 - 1))
    assert kendall_tau(x, y) == pytest.approx(-4 / math.sqrt(72))
    assert kendall_tau(x, y) == pytest.approx(-0.47140452079103173)  # SciPy's documented value for this example
    # ranks x: 4.5 2.5 1 4.5 2.5; y: 2.5 4 5 2.5 1 -> products -5, squares 9 and 9.5
    assert spearman_rho(x, y) == pytest.approx(-5 / math.sqrt(9 * 9.5))


def test_symmetry():
    x, y = [3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]
    assert kendall_tau(x, y) == pytest.approx(kendall_tau(y, x))
    assert spearman_rho(x, y) == pytest.approx(spearman_rho(y, x))


@pytest.mark.parametrize("x,y", [
    ([], []),
    ([0.5], [0.7]),
    ([0.3, 0.3, 0.3], [1.0, 2.0, 3.0]),
    ([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]),
    ([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0]),
])
def test_degenerate_inputs_give_nan_and_a_warning(x, y):
    for f in (kendall_tau, spearman_rho):
        with pytest.warns(StatsWarning):
            assert math.isnan(f(x, y))


def test_different_lengths_are_an_error():
    with pytest.raises(ValueError, match="same length"):
        kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="same length"):
        spearman_rho([1, 2], [1, 2, 3])


def test_agrees_with_scipy_on_random_data():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for trial in range(40):
        n = rng.randint(2, 40)
        levels = rng.choice([3, 6, 1000])  # few levels: many ties; many levels: almost none
        x = [rng.randrange(levels) / levels for _ in range(n)]
        y = [rng.randrange(levels) / levels + 0.3 * v for v in x]
        if len(set(x)) < 2 or len(set(y)) < 2:
            continue
        assert kendall_tau(x, y) == pytest.approx(scipy_stats.kendalltau(x, y).statistic, abs=1e-12), trial
        assert spearman_rho(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12), trial


# ---- bootstrap interval ------------------------------------------------------------------------------------------
def test_bootstrap_interval_of_a_perfect_order_is_a_point():
    x = list(range(12))
    assert bootstrap_interval(x, [2 * v for v in x], resamples=200) == (1.0, 1.0)
    assert bootstrap_interval(x, [-v for v in x], resamples=200) == (-1.0, -1.0)


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible():
    rng = random.Random(3)
    x = [rng.random() for _ in range(20)]
    y = [v + rng.gauss(0, 0.3) for v in x]
    low, high = bootstrap_interval(x, y, resamples=500, seed=1)
    assert low < kendall_tau(x, y) < high and -1.0 <= low < high <= 1.0
    assert bootstrap_interval(x, y, resamples=500, seed=1) == (low, high)
    assert bootstrap_interval(x, y, resamples=500, seed=2) != (low, high)
    narrow = bootstrap_interval(x, y, level=0.5, resamples=500, seed=1)
    assert low <= narrow[0] < narrow[1] <= high
    rho_low, rho_high = bootstrap_interval(x, y, spearman_rho, resamples=300)
    assert rho_low < spearman_rho(x, y) < rho_high


def test_bootstrap_interval_of_undefined_or_bad_input():
    with pytest.warns(StatsWarning):
        assert all(math.isnan(v) for v in bootstrap_interval([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([1, 2], [1, 2], level=1.0)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval([1, 2], [1, 2], resamples=0)
