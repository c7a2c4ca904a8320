"""Population stability index (PSI): how far this period's feature mix moved from the training data.

PSI = sum over bins of (actual - expected) * ln(actual / expected), with bins fixed by the
training data. Rules of thumb: below 0.1 little change, 0.1-0.2 moderate, above 0.2 a large
shift worth a look (the model may be scoring contacts unlike the ones it learnt from).

Numeric features: each value's position in the training distribution is read off the card's
reference quantiles and the positions are binned in deciles, which hold 10% each if nothing moved.
A value the quantile function is flat at (0 transfers for most contacts) spreads over the levels
it covers, so discrete and zero-heavy features work too, as accurately as the card's quantile
levels are fine.
Categorical features compare level shares directly. Missing values form a bin of their own when
the reference says how often they occurred.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

PSI_ALERT = 0.2
PSI_WATCH = 0.1
# Empty bins would make ln(actual / expected) infinite; a small floor keeps PSI finite and
# comparable across features (the usual convention).
SHARE_FLOOR = 1e-4
PSI_BINS = 10


def psi(expected: Sequence[float], actual: Sequence[float], floor: float = SHARE_FLOOR) -> float:
    """PSI between two share vectors over the same bins (each renormalised to sum to 1)."""
    expected = np.clip(np.asarray(expected, dtype=float), 0, None)
    actual = np.clip(np.asarray(actual, dtype=float), 0, None)
    if expected.shape != actual.shape or expected.size == 0:
        raise ValueError("expected and actual shares need the same, non-empty bins")
    if expected.sum() <= 0 or actual.sum() <= 0:
        return float("nan")
    expected = np.clip(expected / expected.sum(), floor, None)
    actual = np.clip(actual / actual.sum(), floor, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def reference_positions(
    values: np.ndarray, levels: Sequence[float], quantiles: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Where each value sits in the training distribution: (share below, share at or below).

    Read off the card's quantile function. Between quantiles the position is interpolated; a
    value the quantile function is flat at (ties: 0 transfers for most contacts) gets the whole
    range of levels it covers, from the last level below it to the last level at it.
    """
    levels = np.asarray(levels, dtype=float)
    quantiles = np.asarray(quantiles, dtype=float)
    keep = np.isfinite(quantiles)
    levels, quantiles = levels[keep], quantiles[keep]
    values = np.asarray(values, dtype=float)
    # Interpolate on the distinct quantile values, each at the last level it holds: above a tie,
    # the position starts where the tie ends (np.interp needs strictly increasing points).
    distinct, last_index = np.unique(quantiles[::-1], return_index=True)
    distinct_levels = levels[::-1][last_index]
    position = np.interp(values, distinct, distinct_levels, left=0.0, right=1.0)
    first = np.searchsorted(quantiles, values, side="left")
    last = np.searchsorted(quantiles, values, side="right")
    tied = last > first
    padded = np.concatenate([[0.0], levels, [1.0]])
    below = np.where(tied, padded[first], position)  # padded[first] == levels[first - 1]
    at = np.where(tied, np.where(last < len(levels), padded[last], 1.0), position)
    return below, np.maximum(at, below)


def position_shares(below: np.ndarray, at: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Shares of values per equal-width bin of training position (deciles of the training data).

    A value spread over a range of positions (ties) contributes to each bin in proportion to the
    overlap, so an unchanged discrete feature still fills the bins as the training data did.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    width = at - below
    point = width <= 1e-12
    safe_width = np.where(point, 1.0, width)
    # Share of each value's range at or below each edge; a point jumps from 0 to 1 at its position.
    spread = np.clip((edges[None, :] - below[:, None]) / safe_width[:, None], 0.0, 1.0)
    jump = (below[:, None] <= edges[None, :]).astype(float)
    cumulative = np.where(point[:, None], jump, spread)
    cumulative[:, 0] = 0.0
    cumulative[:, -1] = 1.0
    per_bin = np.diff(cumulative, axis=1).sum(axis=0)
    return per_bin / max(len(below), 1)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    kind: str  # numeric | categorical
    detail: str  # plain-language summary of the biggest move

    @property
    def level(self) -> str:
        if not np.isfinite(self.psi):
            return "unknown"
        if self.psi > PSI_ALERT:
            return "large shift"
        if self.psi > PSI_WATCH:
            return "moderate shift"
        return "stable"


def numeric_drift(
    feature: str,
    values: np.ndarray,
    levels: Sequence[float],
    quantiles: Sequence[float],
    *,
    reference_missing_share: float | None = None,
    bins: int = PSI_BINS,
) -> FeatureDrift:
    """PSI over deciles of the training distribution (plus a missing-value bin when known)."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    below, at = reference_positions(finite, levels, quantiles)
    actual = position_shares(below, at, bins)
    expected = np.full(bins, 1.0 / bins)
    missing_now = float(np.mean(~np.isfinite(values))) if values.size else 0.0
    if reference_missing_share is not None:
        # Present values' shares scale to the present part; missing values are a bin of their own.
        expected = np.concatenate(
            [expected * (1 - reference_missing_share), [reference_missing_share]]
        )
        actual = np.concatenate([actual * (1 - missing_now), [missing_now]])
    value = (
        psi(expected, actual)
        if finite.size or reference_missing_share is not None
        else float("nan")
    )
    levels_array = np.asarray(levels, dtype=float)
    quantile_array = np.asarray(quantiles, dtype=float)
    keep = np.isfinite(quantile_array)
    reference_median = float(np.interp(0.5, levels_array[keep], quantile_array[keep]))
    current_median = float(np.median(finite)) if finite.size else float("nan")
    detail = f"median {current_median:,.3g} now vs {reference_median:,.3g} in training"
    return FeatureDrift(feature, value, "numeric", detail)


def categorical_drift(
    feature: str, current_counts: Mapping[str, float], reference_shares: Mapping[str, float]
) -> FeatureDrift:
    levels = sorted(set(reference_shares) | set(current_counts))
    expected = np.array([reference_shares.get(level, 0.0) for level in levels], dtype=float)
    actual = np.array([current_counts.get(level, 0.0) for level in levels], dtype=float)
    value = psi(expected, actual)
    if actual.sum() > 0 and expected.sum() > 0:
        moves = actual / actual.sum() - expected / expected.sum()
        biggest = int(np.argmax(np.abs(moves)))
        detail = (
            f"{levels[biggest]}: {actual[biggest] / actual.sum():.0%} now vs "
            f"{expected[biggest] / expected.sum():.0%} in training"
        )
    else:
        detail = "no data"
    return FeatureDrift(feature, value, "categorical", detail)


@dataclass(frozen=True)
class ExpectedMove:
    """A declared reason why a feature moves after training without anything being wrong."""

    pattern: str  # regular expression on the feature name
    reason: str


# Features declared expected to move: they depend on how much history the data holds, which only
# grows after training. They are drawn grey and never raise the drift warning.
EXPECTED_TO_MOVE = (
    ExpectedMove(r"_lifetime$|^tenure_days$", "lifetime counts and tenure grow with every contact"),
    ExpectedMove(r"_conversion_rate$", "pooled conversion rates settle as outcomes accumulate"),
    ExpectedMove(
        r"^days_since_", "gaps to the previous contact or order lengthen as history grows"
    ),
    ExpectedMove(r"^prev_", "more contacts have a previous one as history grows"),
)
_WINDOW = re.compile(r"_(\d+)d$")


def expected_move(feature: str, warm_up_days: float | None = None) -> str | None:
    """Why ``feature`` is expected to move after training, or None.

    ``warm_up_days``: days of data before the training window began. A feature over an N-day
    window was partly empty for training rows when fewer than N days preceded them (the data had
    no older history), so it is expected to fill up afterwards.
    """
    for move in EXPECTED_TO_MOVE:
        if re.search(move.pattern, feature):
            return move.reason
    window = _WINDOW.search(feature)
    if window and warm_up_days is not None and warm_up_days < int(window.group(1)):
        return (
            f"its {window.group(1)}-day window was not yet full of history when training began "
            f"({warm_up_days:.0f} days of data before it)"
        )
    return None
