"""The report's uncertainty: interval coverage, the change test, shrinkage, bootstrap ranges."""

from __future__ import annotations

import numpy as np
import pytest

from reports import stats


@pytest.mark.parametrize("trials", [20, 60, 250, 1000])
@pytest.mark.parametrize("rate", [0.03, 0.12, 0.4])
def test_rate_intervals_cover_a_known_rate_95_percent_of_the_time(trials, rate):
    """Simulated groups with a known rate: the 95% interval holds it in about 95% of groups."""
    rng = np.random.default_rng(trials * 1000 + int(rate * 100))
    groups = 4000
    successes = rng.binomial(trials, rate, groups)
    low, high = stats.rate_interval(successes, np.full(groups, trials))
    coverage = np.mean((low <= rate) & (rate <= high))
    # Binomial coverage oscillates with n and p; Jeffreys stays near 95% (never below 88% here).
    assert 0.88 <= coverage <= 0.99, coverage
    assert np.all(low <= successes / trials) and np.all(successes / trials <= high)


def test_rate_intervals_average_95_percent_over_many_groups_of_mixed_size():
    rng = np.random.default_rng(1)
    trials = rng.integers(15, 2000, 20_000)
    rates = rng.uniform(0.02, 0.5, trials.size)
    low, high = stats.rate_interval(rng.binomial(trials, rates), trials)
    coverage = np.mean((low <= rates) & (rates <= high))
    assert coverage == pytest.approx(0.95, abs=0.01)


def test_rate_interval_of_an_empty_group_is_undefined_and_of_extremes_touches_the_bound():
    low, high = stats.rate_interval([0, 10, 0], [10, 10, 0])
    assert low[0] == 0.0 and high[1] == 1.0
    assert np.isnan(low[2]) and np.isnan(high[2])


def test_change_test_fires_about_5_percent_under_no_change_and_mostly_on_a_real_one():
    rng = np.random.default_rng(2)
    n = 2000
    before = rng.binomial(n, 0.15, 5000)
    same = rng.binomial(n, 0.15, 5000)
    moved = rng.binomial(n, 0.20, 5000)
    false_alarms = np.mean(stats.two_proportion_p_value(same, n, before, n) < stats.ALPHA_TEST)
    power = np.mean(stats.two_proportion_p_value(moved, n, before, n) < stats.ALPHA_TEST)
    assert 0.035 <= false_alarms <= 0.065
    assert power > 0.9
    assert np.isnan(stats.two_proportion_p_value(3, 10, 0, 0))


def test_shrunk_ratios_beat_raw_ones_and_their_intervals_cover_the_truth():
    """Groups with planted ratios: shrinkage lowers the error, 95% intervals hold ~95%."""
    rng = np.random.default_rng(3)
    errors_raw, errors_shrunk, covered = [], [], []
    for _ in range(40):
        truth = rng.gamma(20.0, 1 / 20.0, 60)  # ratios around 1, sd ~0.22
        expected = rng.uniform(5, 80, 60)
        observed = rng.poisson(truth * expected)
        result = stats.shrink_ratios(observed, expected)
        errors_raw.append(np.mean((result.raw - truth) ** 2))
        errors_shrunk.append(np.mean((result.shrunk - truth) ** 2))
        covered.append(np.mean((result.low <= truth) & (truth <= result.high)))
    assert np.mean(errors_shrunk) < 0.7 * np.mean(errors_raw)
    assert np.mean(covered) == pytest.approx(0.95, abs=0.03)


def test_identical_groups_are_not_called_different_and_intervals_keep_a_width():
    rng = np.random.default_rng(4)
    expected = rng.uniform(10, 60, 50)
    result = stats.shrink_ratios(rng.poisson(expected), expected)
    assert sum(v != "within" for v in result.verdict) <= 2
    assert np.all(result.high - result.low > 0.05)


def test_few_groups_are_not_shrunk_and_get_exact_poisson_intervals():
    result = stats.shrink_ratios([110, 246, 53], [95.0, 237.2, 49.4])
    np.testing.assert_allclose(result.shrunk, result.raw)
    assert result.prior_strength == 0.0
    assert np.all(result.low < result.raw) and np.all(result.raw < result.high)


def test_bootstrap_range_of_a_sum_brackets_it_and_narrows_with_more_rows():
    rng = np.random.default_rng(5)
    small = rng.normal(0.01, 0.05, 500)
    large = rng.normal(0.01, 0.05, 5000)
    low_s, high_s = stats.bootstrap_sum_range(small)
    low_l, high_l = stats.bootstrap_sum_range(large)
    assert low_s < small.sum() < high_s and low_l < large.sum() < high_l
    # A sum's sd grows like sqrt(n): 10x rows, ~3.2x width.
    assert (high_l - low_l) / (high_s - low_s) == pytest.approx(np.sqrt(10), rel=0.25)
