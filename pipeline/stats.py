"""Paired statistics for comparing two models over seeds: mean and spread, a bootstrap confidence
interval of the mean paired difference, and the verdict it supports.

The interval is the percentile bootstrap of the mean of the per-seed differences: resample the ``n``
differences with replacement, take each resample's mean, and report the ``(1 - confidence) / 2`` and
``(1 + confidence) / 2`` quantiles of those means (numpy's linear interpolation between order
statistics). For small ``n`` every one of the ``n ** n`` resamples is enumerated (the exact bootstrap
distribution, no randomness); beyond ``resamples`` of them, ``resamples`` are drawn from a generator
seeded with ``seed``. Either way the same differences give the same interval.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.errors import FdposeError


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for one value); ``(None, None)`` when empty."""
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if array.size == 0:
        return None, None
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def bootstrap_means(differences: Sequence[float], resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """The means of the bootstrap resamples of ``differences``: all ``n ** n`` when that is at most
    ``resamples``, else ``resamples`` seeded draws."""
    values = np.asarray(differences, dtype=np.float64)
    n = values.size
    if n == 0:
        raise FdposeError("no paired differences to bootstrap")
    if n ** n <= resamples:
        indices = np.array(list(itertools.product(range(n), repeat=n)))
    else:
        indices = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    return values[indices].mean(axis=1)


def bootstrap_ci(differences: Sequence[float], confidence: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences`` at ``confidence``."""
    if not 0 < confidence < 1:
        raise FdposeError(f"confidence must be in (0, 1), got {confidence}")
    means = bootstrap_means(differences, resamples, seed)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


@dataclass
class PairedComparison:
    """One metric of model A against model B over paired seeds: A - B per seed, its mean and interval."""

    metric: str
    a: str
    b: str
    seeds: list[int]
    differences: list[float]
    mean: float
    ci_low: float | None  # None with a single seed: no interval
    ci_high: float | None
    confidence: float

    @property
    def significant(self) -> bool:
        """Whether the interval excludes zero."""
        return self.ci_low is not None and (self.ci_low > 0 or self.ci_high < 0)

    def verdict(self) -> str:
        """One sentence; says "no significant difference" whenever the interval contains zero."""
        level = f"{self.confidence:.0%}"
        if self.ci_low is None:
            return (f"{self.metric}: {self.a} - {self.b} = {self.mean:+.4f} on a single seed: no confidence "
                    f"interval, so no significant difference can be claimed; run more seeds.")
        interval = f"{level} CI [{self.ci_low:+.4f}, {self.ci_high:+.4f}] over {len(self.seeds)} seeds"
        if not self.significant:
            return (f"{self.metric}: no significant difference between {self.a} and {self.b} "
                    f"(mean difference {self.mean:+.4f}, {interval} contains zero).")
        direction = "higher" if self.mean > 0 else "lower"
        return (f"{self.metric}: {self.a} is significantly {direction} than {self.b} "
                f"(mean difference {self.mean:+.4f}, {interval} excludes zero).")

    def to_dict(self) -> dict:
        """A JSON-ready dict, the verdict included."""
        return {**asdict(self), "significant": self.significant, "verdict": self.verdict()}


def paired_comparison(metric: str, a: str, b: str, pairs: dict[int, tuple[float, float]],
                      confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> PairedComparison:
    """Compare ``a`` with ``b`` on ``metric`` from ``pairs``: seed -> (value of a, value of b)."""
    seeds = sorted(seed_ for seed_, (x, y) in pairs.items() if x is not None and y is not None)
    if not seeds:
        raise FdposeError(f"no seed has {metric} for both {a} and {b}")
    differences = [float(pairs[s][0] - pairs[s][1]) for s in seeds]
    low = high = None
    if len(seeds) > 1:
        low, high = bootstrap_ci(differences, confidence, resamples, seed)
    mean = math.fsum(differences) / len(differences)
    return PairedComparison(metric, a, b, seeds, differences, mean, low, high, confidence)
