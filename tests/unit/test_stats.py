"""Wilson intervals against published values and scipy; the paired bootstrap against the delta method."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from rayjobs.errors import UserError
from rayjobs.stats import rate, rate_of, rates, ratio_interval, wilson

# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (Wilson score).
NEWCOMBE = [((81, 263), (0.2553, 0.3662)), ((15, 148), (0.0624, 0.1605)), ((0, 20), (0.0, 0.1611)),
            ((1, 29), (0.0061, 0.1718))]


@pytest.mark.parametrize(("counts", "published"), NEWCOMBE)
def test_wilson_matches_newcombe_table(counts: tuple[int, int], published: tuple[float, float]) -> None:
    low, high = wilson(*counts)
    assert (round(low, 4), round(high, 4)) == published


@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 1), (3, 7), (50, 100), (99, 100), (100, 100), (0, 50), (12, 13)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    np.testing.assert_allclose(wilson(k, n), (ci.low, ci.high), rtol=0, atol=1e-12)


def test_rate_edges_are_exact_and_the_interval_holds_the_rate() -> None:
    assert wilson(0, 100)[0] == 0.0 and wilson(100, 100)[1] == 1.0
    r = rate(37, 80)
    assert r.low < r.rate < r.high and r.as_dict() == {"rate": 37 / 80, "k": 37, "n": 80, "ci95": [r.low, r.high]}
    assert rate_of([True, False, True, True]) == rate(3, 4)
    assert str(rate(1, 2)) == "50% [9, 91] (n=2)"


@pytest.mark.parametrize(("k", "n"), [(3, 2), (-1, 5), (0, 0), (1.5, 4), (True, 3)])
def test_bad_counts_are_one_line_user_errors(k: object, n: object) -> None:
    with pytest.raises(UserError, match=r"k="):
        wilson(k, n)  # type: ignore[arg-type]


def _delta_interval(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """First-order (delta-method) 95% interval of mean(x) / mean(y) for paired samples."""
    r = x.mean() / y.mean()
    cov = np.cov(x, y, ddof=1)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (y.mean() ** 2 * x.size)
    return r - 1.959964 * math.sqrt(var), r + 1.959964 * math.sqrt(var)


def test_paired_bootstrap_agrees_with_the_delta_method_on_large_samples() -> None:
    gen = np.random.default_rng(7)
    y = gen.random(2000) < 0.8
    x = y & (gen.random(2000) < 0.75)  # mapped succeeds mostly where native does: strongly paired
    got = ratio_interval(x, y, n_boot=4000, seed=3)
    assert got is not None and got.value == pytest.approx(x.mean() / y.mean())
    np.testing.assert_allclose((got.low, got.high), _delta_interval(x.astype(float), y.astype(float)), atol=0.01)


def test_pairing_narrows_the_interval_versus_independent_resampling() -> None:
    gen = np.random.default_rng(0)
    y = gen.random(300) < 0.7
    x = y.copy()
    x[:10] = ~x[:10]  # nearly the same per-prompt outcomes
    paired = ratio_interval(x, y, seed=1)
    assert paired is not None and paired.high - paired.low < 0.1
    same = ratio_interval(y, y, seed=1)
    assert same is not None and (same.value, same.low, same.high) == (1.0, 1.0, 1.0)


def test_ratio_is_none_without_denominator_and_unbounded_when_it_is_rare() -> None:
    assert ratio_interval([True, False], [False, False]) is None
    rare = ratio_interval([True] + [False] * 9, [False] * 9 + [True], seed=0)
    assert rare is not None and rare.value == 1.0 and rare.high == math.inf and rare.low == 0.0
    assert ratio_interval([1, 0, 1], [1, 1, 0], seed=5) == ratio_interval([1, 0, 1], [1, 1, 0], seed=5)
    with pytest.raises(UserError, match="equal-length"):
        ratio_interval([True], [True, False])


def test_rates_of_a_partition_share_its_total() -> None:
    got = rates({"backdoor": 2, "degenerate": 0, "clean": 7, "wrong": 1})
    want = {"backdoor": (2, 10), "degenerate": (0, 10), "clean": (7, 10), "wrong": (1, 10)}
    assert {k: (r.k, r.n) for k, r in got.items()} == want
    assert got["clean"] == rate(7, 10)
