"""Uplift meta-learners on synthetic data whose per-row treatment effect is known."""

from __future__ import annotations

import numpy as np
import pytest

from training.uplift import (
    LEARNERS,
    UpliftParams,
    fit_uplift,
    qini_coefficient,
    random_qini,
    targeting_value,
)

PARAMS = UpliftParams(rounds=80, num_threads=1, seed=3)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def known_effect(n: int, seed: int, confounded: bool):
    """Outcome logit -1.5 + x0; treatment adds 1.5 where x1 > 0.5 and -0.3 elsewhere."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4))
    base = -1.5 + 1.0 * x[:, 0]
    lift = np.where(x[:, 1] > 0.5, 1.5, -0.3)
    p0, p1 = _sigmoid(base), _sigmoid(base + lift)
    # Confounded: rows likely to order anyway are treated more often (like better agents sending
    # more follow-ups), so the raw treated-vs-control difference overstates the effect.
    e = _sigmoid(3.0 * (x[:, 0] - 0.5) + 1.0 * (x[:, 1] - 0.5)) if confounded else np.full(n, 0.5)
    t = rng.random(n) < e
    y = rng.random(n) < np.where(t, p1, p0)
    return x, y.astype(float), t, p1 - p0


@pytest.fixture(scope="module")
def randomised():
    return known_effect(24_000, seed=1, confounded=False), known_effect(
        12_000, seed=2, confounded=False
    )


@pytest.mark.parametrize("learner", LEARNERS)
def test_learner_recovers_the_known_effect_on_randomised_data(randomised, learner):
    (x, y, t, _), (xt, yt, tt, tau) = randomised
    model = fit_uplift(x, y, t, learner=learner, params=PARAMS)
    uplift, p1, p0 = model.predict(xt)
    assert np.corrcoef(uplift, tau)[0, 1] > 0.8
    assert abs(uplift.mean() - tau.mean()) < 0.03
    assert np.all((p1 >= 0) & (p1 <= 1) & (p0 >= 0) & (p0 <= 1))
    floor_mean, floor_sd = random_qini(yt, tt, seed=4)
    assert qini_coefficient(uplift, yt, tt) > floor_mean + 5 * floor_sd
    # The true effect is the ceiling: a learner cannot rank better than it by much.
    assert qini_coefficient(uplift, yt, tt) < qini_coefficient(tau, yt, tt) * 1.15


def test_propensity_aware_learner_corrects_confounding():
    x, y, t, tau = known_effect(30_000, seed=5, confounded=True)
    naive = y[t].mean() - y[~t].mean()
    truth = tau.mean()
    assert naive - truth > 0.04  # the confounding is real
    dr = fit_uplift(x, y, t, learner="dr", propensity="model", params=PARAMS)
    estimate = dr.predict(x)[0].mean()
    assert abs(estimate - truth) < 0.02
    assert abs(estimate - truth) < abs(naive - truth) / 3
    assert np.corrcoef(dr.predict(x)[0], tau)[0, 1] > 0.8


def test_qini_of_perfect_and_random_scores():
    x, y, t, tau = known_effect(20_000, seed=6, confounded=False)
    floor_mean, floor_sd = random_qini(y, t, seed=1)
    assert abs(floor_mean) < 3 * floor_sd + 1e-4
    assert qini_coefficient(tau, y, t) > floor_mean + 10 * floor_sd
    assert qini_coefficient(-tau, y, t) < floor_mean - 10 * floor_sd


def test_targeting_value_by_hand():
    target = np.array([1, 1, 1, 1, 0, 0], bool)
    treated = np.array([1, 1, 0, 0, 1, 0], bool)
    bought = np.array([1, 0, 0, 0, 1, 1], float)
    v = targeting_value(target, bought, treated, value_per_order=10, cost_per_treatment=0.15)
    assert v["irr"] == pytest.approx(0.5)  # 1/2 treated targeted bought, 0/2 control targeted
    assert v["nir"] == pytest.approx(10 * 1 - 0.15 * 2 - 10 * 0)
    assert v["targeted_share"] == pytest.approx(4 / 6)


def test_learner_rejects_a_single_arm():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="treated and control"):
        fit_uplift(x, np.zeros(10), np.ones(10, bool))
    with pytest.raises(ValueError, match="learner"):
        fit_uplift(x, np.zeros(10), np.arange(10) % 2 == 0, learner="z")
