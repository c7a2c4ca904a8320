"""The report's uncertainty: intervals for rates, tests for changes, shrunk observed/expected ratios.

Managers read shares of small groups (an agent with 200 contacts, a channel with 70) as if they were
exact. Every rate in the report therefore carries a 95% interval, a change is called a change only
when a test says so, and agents are compared on observed against expected orders, shrunk towards
"as expected" in proportion to how little data each one has.

- Rates: the Jeffreys interval (Beta(k + 1/2, n - k + 1/2) quantiles, the usual ends at 0 and n),
  which keeps close to its nominal 95% coverage even for small groups and rates near 0 or 1
  (Brown, Cai and DasGupta 2001); tests/unit/test_report_stats.py measures the coverage.
- Changes: the two-sided two-proportion z-test with a pooled rate; a change is marked when p < 0.05.
- Observed/expected: orders of a group are Poisson with mean ``theta * expected``, the groups'
  ``theta`` Gamma(alpha, alpha) around 1 (mean 1: "as an average group would do with these
  contacts"). ``alpha`` is fitted by maximum marginal (negative-binomial) likelihood over the groups;
  each group's ratio is then its posterior mean (alpha + O) / (alpha + E) with a 95% credible
  interval, so a small group is pulled towards 1 and a big one keeps its own ratio. When the data
  cannot tell the groups apart the fit would make alpha huge and every interval a point at 1, so
  alpha is capped at the median group's expected orders (no typical group is pulled more than
  halfway). With fewer than 8 groups nothing is shrunk: the raw ratio with the exact Poisson
  interval of the observed count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

LEVEL = 0.95
ALPHA_TEST = 0.05
# The shrinkage prior's strength is searched in this range (in expected orders): a very large value
# means "all groups are alike", a very small one "no pooling".
PRIOR_STRENGTH_RANGE = (1e-2, 1e6)
# With few groups the spread between them cannot be estimated: no shrinkage below this many.
MIN_GROUPS_TO_SHRINK = 8


def rate_interval(
    successes: Sequence[float] | np.ndarray | float,
    trials: Sequence[float] | np.ndarray | float,
    level: float = LEVEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Jeffreys interval of ``successes / trials``, elementwise; NaN where ``trials`` is 0."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    tail = (1 - level) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        low = stats.beta.ppf(tail, k + 0.5, n - k + 0.5)
        high = stats.beta.ppf(1 - tail, k + 0.5, n - k + 0.5)
    low = np.where(k <= 0, 0.0, low)
    high = np.where(k >= n, 1.0, high)
    empty = n <= 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def two_proportion_p_value(
    successes_a: np.ndarray | Sequence[float],
    trials_a: np.ndarray | Sequence[float],
    successes_b: np.ndarray | Sequence[float],
    trials_b: np.ndarray | Sequence[float],
) -> np.ndarray:
    """Two-sided p-value of 'the two rates are equal' (pooled z-test), elementwise; NaN if undefined."""
    ka, na = np.asarray(successes_a, dtype=float), np.asarray(trials_a, dtype=float)
    kb, nb = np.asarray(successes_b, dtype=float), np.asarray(trials_b, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (ka + kb) / (na + nb)
        se = np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
        z = (ka / na - kb / nb) / se
        p = 2 * stats.norm.sf(np.abs(z))
        # Both rates 0 (or both 1): no evidence of a change.
        same = (se == 0) & (ka / na == kb / nb)
    p = np.where(same, 1.0, p)
    return np.where((na > 0) & (nb > 0), p, np.nan)


def versus_reference(low: np.ndarray, high: np.ndarray, reference: float) -> list[str]:
    """'above' / 'below' where the interval excludes ``reference``, else 'within'."""
    return [
        "above" if lo > reference else "below" if hi < reference else "within"
        for lo, hi in zip(np.asarray(low, float), np.asarray(high, float), strict=True)
    ]


@dataclass(frozen=True)
class ShrunkRatios:
    """Observed/expected per group: raw, and shrunk towards 1 with 95% credible intervals."""

    observed: np.ndarray
    expected: np.ndarray
    raw: np.ndarray
    shrunk: np.ndarray
    low: np.ndarray
    high: np.ndarray
    prior_strength: float  # alpha: a group counts like alpha expected orders of "as expected"

    @property
    def verdict(self) -> list[str]:
        """'above' / 'below' where the credible interval excludes 1, else 'within'."""
        return versus_reference(self.low, self.high, 1.0)


def _negative_log_marginal(log_alpha: float, observed: np.ndarray, expected: np.ndarray) -> float:
    # O ~ Poisson(theta E), theta ~ Gamma(a, a): O is negative binomial; terms in O alone dropped.
    a = np.exp(log_alpha)
    log_likelihood = (
        special.gammaln(a + observed)
        - special.gammaln(a)
        + a * np.log(a / (a + expected))
        + observed * np.log(expected / (a + expected))
    )
    return -float(np.sum(log_likelihood))


def shrink_ratios(
    observed: Sequence[float] | np.ndarray,
    expected: Sequence[float] | np.ndarray,
    level: float = LEVEL,
) -> ShrunkRatios:
    """Empirical-Bayes observed/expected ratios (Poisson-Gamma, prior mean 1), see the module doc."""
    observed = np.asarray(observed, dtype=float)
    expected = np.asarray(expected, dtype=float)
    if observed.shape != expected.shape or observed.size == 0:
        raise ValueError("observed and expected need the same, non-empty length")
    if np.any(expected <= 0):
        raise ValueError("expected orders must be positive")
    low_bound, high_bound = np.log(PRIOR_STRENGTH_RANGE)
    fit = optimize.minimize_scalar(
        _negative_log_marginal,
        bounds=(low_bound, high_bound),
        args=(observed, expected),
        method="bounded",
    )
    tail = (1 - level) / 2
    if observed.size < MIN_GROUPS_TO_SHRINK:
        # Exact (Garwood) Poisson interval of the count, divided by the expected count.
        low = np.where(observed > 0, stats.gamma.ppf(tail, np.maximum(observed, 1e-9)), 0.0)
        high = stats.gamma.ppf(1 - tail, observed + 1)
        return ShrunkRatios(
            observed=observed,
            expected=expected,
            raw=observed / expected,
            shrunk=observed / expected,
            low=low / expected,
            high=high / expected,
            prior_strength=0.0,
        )
    alpha = min(float(np.exp(fit.x)), float(np.median(expected)))
    shape = alpha + observed
    rate = alpha + expected
    return ShrunkRatios(
        observed=observed,
        expected=expected,
        raw=observed / expected,
        shrunk=shape / rate,
        low=stats.gamma.ppf(tail, shape) / rate,
        high=stats.gamma.ppf(1 - tail, shape) / rate,
        prior_strength=alpha,
    )


def bootstrap_sum_range(
    values: np.ndarray, level: float = LEVEL, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap range of ``values.sum()`` over resamples of the rows (e.g. contacts)."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        total = float(values.sum())
        return total, total
    result = stats.bootstrap(
        (values,),
        np.sum,
        n_resamples=resamples,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
