"""The paired statistics of ``fdpose compare``: the t interval and the sign-flip test against hand-computed
cases, their coverage over simulated experiments, power, and the verdict sentence."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import FdposeError
from pipeline.stats import (
    detectable_in_sd,
    mean_std,
    paired_comparison,
    seeds_needed,
    sign_flip_p,
    t_interval,
)


def test_mean_and_sample_std():
    assert mean_std([0.2, 0.4, 0.9]) == pytest.approx((0.5, np.sqrt(((0.3 ** 2) + 0.1 ** 2 + 0.4 ** 2) / 2)))
    assert mean_std([0.3]) == (0.3, 0.0)
    assert mean_std([]) == (None, None)


def test_t_interval_by_hand():
    # (1, 3): mean 2, sd sqrt(2), se 1; t(0.975, 1 df) = 12.7062 -> 2 ± 12.7062.
    assert t_interval([1.0, 3.0]) == pytest.approx((2 - 12.7062047, 2 + 12.7062047))
    # (0, 0, 3): mean 1, sd sqrt(3), se 1; t(0.975, 2 df) = 4.302653.
    assert t_interval([0.0, 0.0, 3.0]) == pytest.approx((1 - 4.3026527, 1 + 4.3026527))
    with pytest.raises(FdposeError, match="at least 2"):
        t_interval([1.0])


def test_sign_flip_p_by_hand():
    # (1, 2, 3): of the 8 sign patterns only +++ and --- reach |mean| 2 -> p = 2/8.
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(0.25)
    # (1, -1, 3), |sums| by pattern: +++ 3, ++- 3, +-+ 5, +-- 1, -++ 1, -+- 5, --+ 3, --- 3: six of the
    # eight reach the observed 3 -> p = 0.75.
    assert sign_flip_p([1.0, -1.0, 3.0]) == pytest.approx(0.75)
    assert sign_flip_p([0.0, 0.0]) == 1.0  # no difference at all: every pattern reaches it
    assert sign_flip_p([0.1] * 6) == pytest.approx(2 / 64)  # the smallest p with 6 pairs


def test_sampled_sign_flip_is_seeded_and_close_to_the_exact_one():
    differences = list(np.random.default_rng(3).normal(0.3, 1.0, 14))  # 2^14 = 16384 patterns
    exact = sign_flip_p(differences)
    first = sign_flip_p(differences, permutations=4000, seed=7)
    assert sign_flip_p(differences, permutations=4000, seed=7) == first
    assert first == pytest.approx(exact, abs=0.02)


def test_two_seeds_sharing_a_sign_are_no_significant_difference():
    # The case: the old bootstrap interval called it "significantly higher".
    comparison = paired_comparison("oks_map", "A", "B", {0: (0.51, 0.50), 1: (0.52, 0.50)})
    assert not comparison.significant
    assert comparison.ci_low < 0 < comparison.ci_high and comparison.p_value == 0.5
    verdict = comparison.verdict()
    assert "no significant difference" in verdict and "cannot reach p < 0.05" in verdict
    assert "run at least 6 seeds" in verdict


def _null_rate(n: int, effect: float = 0.0, experiments: int = 2000, seed: int = 0) -> float:
    rng = np.random.default_rng([seed, n])
    hits = 0
    for differences in rng.normal(effect, 1.0, size=(experiments, n)):
        pairs = {i: (0.5 + d, 0.5) for i, d in enumerate(differences)}
        hits += paired_comparison("m", "a", "b", pairs).significant
    return hits / experiments


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_false_positive_rate_under_no_difference(n):
    """2,000 simulated experiments with normal paired differences of mean zero: "significant" in at
    most 7% of them; at 10 seeds between 3% and 7% (the t-test's 5%, the permutation test's too)."""
    rate = _null_rate(n)
    assert rate <= 0.07
    if n < 6:  # the permutation test cannot reach p < 0.05 with fewer than 6 pairs
        assert rate == 0.0
    if n == 10:
        assert 0.03 <= rate <= 0.07


def test_power_for_an_effect_of_one_and_a_half_sd_at_ten_seeds():
    # Theory (noncentral t, 9 df, shift 1.5 * sqrt(10)): about 0.98. Measured over 2,000 experiments.
    rate = _null_rate(10, effect=1.5)
    assert rate >= 0.9, rate


def test_minimum_detectable_effect_and_seeds_needed():
    assert detectable_in_sd(5, 0.05) is None  # the permutation test cannot reach 0.05
    ten = detectable_in_sd(10, 0.05)
    assert 0.95 < ten < 1.05  # textbook: about 1.0 sd for a paired t-test with 10 pairs, 80% power
    # sd 0.024 (the hard preset's OKS mAP): 8 seeds detect about 0.03; an effect of 0.01 needs ~47.
    assert 0.02 < detectable_in_sd(8, 0.05) * 0.024 < 0.04
    needed = seeds_needed(0.01, 0.024)
    assert 40 <= needed <= 55
    assert seeds_needed(0.1, 0.024) == 6  # at least what the permutation test needs
    assert seeds_needed(0.01, 0.0) is None


def test_identical_models_are_no_significant_difference():
    same = paired_comparison("OKS mAP", "a", "b", {0: (0.61, 0.61), 1: (0.55, 0.55), 2: (0.58, 0.58)})
    assert (same.ci_low, same.ci_high) == (0.0, 0.0) and not same.significant
    assert "no significant difference" in same.verdict()


def test_verdicts():
    pairs = {s: (0.70 + 0.01 * (s % 3), 0.60 + 0.005 * (s % 2)) for s in range(8)}
    better = paired_comparison("OKS mAP", "fd", "stock", pairs, effect=0.01)
    assert better.significant and better.ci_low > 0 and better.p_value == pytest.approx(2 / 256)
    assert "fd is significantly higher than stock" in better.verdict()
    assert better.seeds_for_effect is not None and "detect a difference of 0.01" in better.verdict()
    mixed = {s: (0.6 + (0.05 if s % 2 else -0.04), 0.6) for s in range(8)}
    unclear = paired_comparison("OKS mAP", "fd", "stock", mixed)
    assert not unclear.significant and "no significant difference" in unclear.verdict()
    assert f"±{unclear.detectable:.4f} with 80% power" in unclear.verdict()
    single = paired_comparison("OKS mAP", "fd", "stock", {0: (0.7, 0.6)})
    assert single.ci_low is None and "no significant difference" in single.verdict()
    assert single.to_dict()["verdict"] == single.verdict()


def test_only_paired_seeds_count():
    comparison = paired_comparison("m", "a", "b", {0: (0.5, 0.4), 1: (0.6, None), 2: (0.7, 0.5)})
    assert comparison.seeds == [0, 2] and comparison.differences == pytest.approx([0.1, 0.2])
    with pytest.raises(FdposeError, match="no seed"):
        paired_comparison("m", "a", "b", {0: (0.5, None)})
