"""PSI as the report computes it: zero for the training mix, large for a real shift."""

from __future__ import annotations

import numpy as np
import pytest

from reports.drift import (
    PSI_ALERT,
    categorical_drift,
    numeric_drift,
    position_shares,
    psi,
    reference_positions,
)

PROBS = np.linspace(0, 1, 11)
PERCENTILES = np.linspace(0, 1, 101)


def test_psi_is_zero_for_identical_shares_and_grows_with_the_shift():
    base = [0.25, 0.25, 0.25, 0.25]
    assert psi(base, base) == pytest.approx(0.0)
    small = psi(base, [0.28, 0.24, 0.24, 0.24])
    large = psi(base, [0.55, 0.15, 0.15, 0.15])
    assert 0 < small < 0.02 < PSI_ALERT < large


def test_psi_stays_finite_when_a_bin_empties():
    assert np.isfinite(psi([0.5, 0.5], [1.0, 0.0]))


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng, n: rng.normal(300, 60, n),
        lambda rng, n: np.where(rng.random(n) < 0.6, 0.0, rng.exponential(100, n)),  # mostly zero
        lambda rng, n: rng.poisson(3, n).astype(float),  # discrete counts
        lambda rng, n: (rng.random(n) < 0.05).astype(float),  # a rare flag
    ],
    ids=["continuous", "zero-heavy", "counts", "rare-flag"],
)
def test_an_unchanged_feature_fills_the_training_deciles_evenly(draw):
    rng = np.random.default_rng(0)
    quantiles = np.quantile(draw(rng, 50_000), PERCENTILES)
    below, at = reference_positions(draw(rng, 5_000), PERCENTILES, quantiles)
    shares = position_shares(below, at)
    assert shares.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(shares, 0.1, atol=0.025)
    assert psi(np.full(10, 0.1), shares) < 0.02


def test_a_rare_flag_becoming_common_is_a_large_shift():
    rng = np.random.default_rng(3)
    quantiles = np.quantile((rng.random(50_000) < 0.05).astype(float), PERCENTILES)
    moved = numeric_drift(
        "abandoned", (rng.random(5_000) < 0.5).astype(float), PERCENTILES, quantiles
    )
    assert moved.psi > PSI_ALERT


def test_numeric_drift_same_distribution_is_stable_shifted_alerts():
    rng = np.random.default_rng(1)
    training = rng.normal(300, 60, 50_000)
    quantiles = np.quantile(training, PROBS)
    same = numeric_drift("wait_seconds", rng.normal(300, 60, 5_000), PROBS, quantiles)
    shifted = numeric_drift("wait_seconds", rng.normal(420, 60, 5_000), PROBS, quantiles)
    assert same.psi < 0.02 and same.level == "stable"
    assert shifted.psi > PSI_ALERT and shifted.level == "large shift"
    assert "median" in shifted.detail


def test_numeric_drift_counts_a_jump_in_missing_values():
    rng = np.random.default_rng(2)
    training = rng.normal(0, 1, 10_000)
    quantiles = np.quantile(training, PROBS)
    now = rng.normal(0, 1, 4_000)
    now[:2_000] = np.nan
    without_missing_bin = numeric_drift("x", now, PROBS, quantiles)
    with_missing_bin = numeric_drift("x", now, PROBS, quantiles, reference_missing_share=0.05)
    assert without_missing_bin.psi < 0.02
    assert with_missing_bin.psi > PSI_ALERT


def test_categorical_drift_names_the_level_that_moved():
    reference = {"phone": 0.5, "chat": 0.3, "email": 0.2}
    stable = categorical_drift("channel", {"phone": 500, "chat": 300, "email": 200}, reference)
    moved = categorical_drift("channel", {"phone": 200, "chat": 300, "email": 500}, reference)
    assert stable.psi == pytest.approx(0.0, abs=1e-9)
    assert moved.psi > PSI_ALERT
    assert moved.detail.startswith("email") or moved.detail.startswith("phone")
    new_level = categorical_drift("channel", {"phone": 500, "sms": 500}, reference)
    assert new_level.psi > PSI_ALERT


def test_features_declared_expected_to_move_never_alert_and_windows_warm_up():
    from reports.drift import expected_move

    for feature in ("contacts_lifetime", "tenure_days", "agent_conversion_rate"):
        assert expected_move(feature) is not None
    assert expected_move("days_since_last_order") is not None
    assert expected_move("wait_seconds") is None and expected_move("channel") is None
    # A 90-day window of training rows that began 40 days into the data was not full yet.
    assert "90-day window" in expected_move("contacts_90d", warm_up_days=40)
    assert expected_move("contacts_7d", warm_up_days=40) is None
    assert expected_move("contacts_90d", warm_up_days=120) is None
