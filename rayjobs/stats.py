"""Uncertainty for the rates the stages report: Wilson intervals and a paired bootstrap for ratios.

Every rate we publish is k successes out of n prompts, so it carries n and a 95% Wilson score
interval (Wilson 1927; Newcombe 1998 recommends it over the Wald interval, which collapses to a point
at 0% and 100%, exactly where steering results sit). A ratio of two rates measured on the same
prompts (mapped / native) gets a percentile interval from a paired bootstrap over prompts: resampling
prompts keeps the correlation between the two methods, which is strong (same prompts, same model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from rayjobs.errors import UserError

Z95 = 1.959963984540054  # two-sided 95% normal quantile, scipy.stats.norm.ppf(0.975)


def _check_counts(k: int, n: int) -> None:
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise UserError(f"a rate needs whole counts, got k={k!r}, n={n!r}; pass the number of successes and of trials")
    if n <= 0 or not 0 <= k <= n:
        raise UserError(f"a rate needs 0 <= k <= n and n >= 1, got k={k}, n={n}; count at least one completion")


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) Wilson score interval for k successes in n trials (z = 1.96: 95%)."""
    _check_counts(k, n)
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # Clamp float noise: at k = 0 the exact low is 0, at k = n the exact high is 1.
    return max(0.0, centre - half) if k else 0.0, min(1.0, centre + half) if k < n else 1.0


@dataclass(frozen=True)
class Rate:
    """k of n, its share and its 95% Wilson interval."""

    k: int
    n: int
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.k / self.n

    def as_dict(self) -> dict[str, float | int | list[float]]:
        """The form summary.json carries: {"rate", "k", "n", "ci95": [low, high]}."""
        return {"rate": self.rate, "k": self.k, "n": self.n, "ci95": [self.low, self.high]}

    def __str__(self) -> str:
        return f"{100 * self.rate:.0f}% [{100 * self.low:.0f}, {100 * self.high:.0f}] (n={self.n})"


def rate(k: int, n: int) -> Rate:
    """The Rate of k successes in n trials."""
    low, high = wilson(k, n)
    return Rate(int(k), int(n), low, high)


def rate_of(flags: Sequence[bool]) -> Rate:
    """The Rate of the True entries among per-prompt flags."""
    return rate(sum(bool(f) for f in flags), len(flags))


@dataclass(frozen=True)
class Ratio:
    """A ratio of two rates on the same n prompts and its percentile bootstrap interval.

    ``high`` is inf when some resamples have a zero denominator and a non-zero numerator (a rare
    denominator: the ratio is unbounded there, and saying so beats a made-up finite bound)."""

    value: float
    low: float
    high: float
    n: int
    n_boot: int

    def as_dict(self) -> dict[str, float | int | list[float]]:
        return {"ratio": self.value, "n": self.n, "ci95": [self.low, self.high], "n_boot": self.n_boot}


def _paired(num: Sequence[bool], den: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise UserError(f"a paired ratio needs two equal-length, non-empty per-prompt lists, got {x.shape} and {y.shape}; "
                        "score both methods on the same prompts")
    return x, y


def ratio_interval(num: Sequence[bool], den: Sequence[bool], n_boot: int = 4000, seed: int = 0,
                   level: float = 0.95) -> Ratio | None:
    """mean(num) / mean(den) with a paired percentile bootstrap over prompts; None when den is all False.

    num, den: per-prompt success flags of two methods on the same prompts (e.g. mapped, native)."""
    x, y = _paired(num, den)
    if not y.any():
        return None
    gen = np.random.default_rng(seed)
    idx = gen.integers(0, x.size, size=(n_boot, x.size))  # (n_boot, n): prompts drawn per resample
    xs, ys = x[idx].mean(axis=1), y[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(ys > 0, xs / np.where(ys > 0, ys, 1.0), np.where(xs > 0, np.inf, np.nan))
    ratios = ratios[~np.isnan(ratios)]  # 0/0 resamples say nothing about the ratio
    tail = (1 - level) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail], method="inverted_cdf") if ratios.size else (np.nan, np.nan)
    return Ratio(float(x.mean() / y.mean()), float(low), float(high), int(x.size), n_boot)


def rates(counts: Mapping[str, int]) -> dict[str, Rate]:
    """A Rate per category of a partition (e.g. Task.clean_counts), n = the sum of the counts."""
    n = sum(counts.values())
    return {name: rate(k, n) for name, k in counts.items()}
