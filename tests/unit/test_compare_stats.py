"""The paired statistics of ``fdpose compare``: bootstrap intervals against hand-computed cases, their
reproducibility, and the verdict sentence."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import FdposeError
from pipeline.stats import bootstrap_ci, bootstrap_means, mean_std, paired_comparison


def test_mean_and_sample_std():
    assert mean_std([0.2, 0.4, 0.9]) == pytest.approx((0.5, np.sqrt(((0.3 ** 2) + 0.1 ** 2 + 0.4 ** 2) / 2)))
    assert mean_std([0.3]) == (0.3, 0.0)
    assert mean_std([]) == (None, None)


def test_exact_bootstrap_of_two_differences_by_hand():
    # Resamples of (1, 3): (1,1) (1,3) (3,1) (3,3) -> means 1, 2, 2, 3. Quantile 0.025 of [1, 2, 2, 3] by
    # linear interpolation sits at position 0.025 * 3 = 0.075: 1 + 0.075 * (2 - 1); quantile 0.975 at
    # position 2.925: 2 + 0.925 * (3 - 2).
    assert sorted(bootstrap_means([1.0, 3.0])) == [1.0, 2.0, 2.0, 3.0]
    low, high = bootstrap_ci([1.0, 3.0], confidence=0.95)
    assert low == pytest.approx(1.075) and high == pytest.approx(2.925)


def test_exact_bootstrap_of_three_differences_by_hand():
    # 27 resamples of (0, 0, 3): the mean is k (the count of 3s drawn), k = 0..3 with counts 8, 12, 6, 1.
    # Sorted: eight 0s, twelve 1s, six 2s, one 3. Quantile 0.025 at position 0.65 -> 0; 0.975 at 25.35,
    # between sorted[25] = 2 and sorted[26] = 3 -> 2.35. Confidence 0.5: positions 6.5 (two 0s) -> 0 and
    # 19.5 (between sorted[19] = 1 and sorted[20] = 2) -> 1.5.
    means = bootstrap_means([0.0, 0.0, 3.0])
    assert len(means) == 27 and sorted(np.round(means, 9)).count(1.0) == 12
    assert bootstrap_ci([0.0, 0.0, 3.0]) == pytest.approx((0.0, 2.35))
    assert bootstrap_ci([0.0, 0.0, 3.0], confidence=0.5) == pytest.approx((0.0, 1.5))


def test_sampled_bootstrap_is_seeded_and_close_to_the_exact_one():
    differences = [0.01, -0.02, 0.03, 0.015, 0.0, 0.04]  # 6 ** 6 = 46656 resamples: sampled below that
    first = bootstrap_ci(differences, resamples=20_000, seed=7)
    assert bootstrap_ci(differences, resamples=20_000, seed=7) == first
    assert bootstrap_ci(differences, resamples=20_000, seed=8) != first
    exact = bootstrap_ci(differences, resamples=6 ** 6)
    assert first == pytest.approx(exact, abs=2e-3)


def test_identical_models_are_no_significant_difference():
    same = paired_comparison("OKS mAP", "a", "b", {0: (0.61, 0.61), 1: (0.55, 0.55), 2: (0.58, 0.58)})
    assert (same.ci_low, same.ci_high) == (0.0, 0.0) and not same.significant
    assert "no significant difference" in same.verdict()


def test_verdicts():
    better = paired_comparison("OKS mAP", "fd", "stock", {0: (0.70, 0.60), 1: (0.72, 0.61), 2: (0.69, 0.60)})
    assert better.significant and better.ci_low > 0
    assert "fd is significantly higher than stock" in better.verdict()
    mixed = paired_comparison("OKS mAP", "fd", "stock", {0: (0.70, 0.60), 1: (0.50, 0.61), 2: (0.66, 0.60)})
    assert mixed.ci_low < 0 < mixed.ci_high and "no significant difference" in mixed.verdict()
    single = paired_comparison("OKS mAP", "fd", "stock", {0: (0.7, 0.6)})
    assert single.ci_low is None and "no significant difference" in single.verdict()
    assert single.to_dict()["verdict"] == single.verdict()


def test_only_paired_seeds_count():
    comparison = paired_comparison("m", "a", "b", {0: (0.5, 0.4), 1: (0.6, None), 2: (0.7, 0.5)})
    assert comparison.seeds == [0, 2] and comparison.differences == pytest.approx([0.1, 0.2])
    with pytest.raises(FdposeError, match="no seed"):
        paired_comparison("m", "a", "b", {0: (0.5, None)})
