"""The report's model-based numbers on a real trained MLflow store: drivers, reasons, levers, drift."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from features.pipeline import build_features
from features.rates import compute_rates
from reports import explain, health, whatif
from reports.driver import _history_for, load_report_data
from reports.kpis import resolve_period
from reports.models import load_champions

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def setup(sim_dir, mlflow_settings, trained):
    data = load_report_data(sim_dir, mlflow_settings)
    period = resolve_period(
        None, None, data.observed_from, data.observed_until, mlflow_settings.horizon_days
    )
    models = load_champions(mlflow_settings)
    rates = compute_rates(data.labeled, mlflow_settings.horizon_days)
    contacts, orders = _history_for(data, period)
    features = build_features(
        contacts, orders, data.customers, rates, moment="after_contact"
    ).filter(period.contains())
    return {
        "data": data,
        "period": period,
        "models": models,
        "rates": rates,
        "contacts": contacts,
        "orders": orders,
        "features": features,
    }


def test_all_four_champions_load_with_their_cards(setup, trained):
    models = setup["models"]
    assert models.missing == {}
    for task, champion in models.champions.items():
        assert champion.version == trained.versions[task]
        assert champion.card["feature_names"]


def test_drivers_are_ranked_by_their_effect_in_points_and_add_up(setup):
    champion = setup["models"].get("conversion-after-contact")
    sample = setup["features"].head(2_000)
    analysis = explain.conversion_drivers(champion, sample, top=len(champion.feature_names))
    # Ranked by the one number the list and the chart print: mean |effect| in points.
    importance = [d.mean_abs_effect for d in analysis.drivers]
    assert importance == sorted(importance, reverse=True)
    assert len(importance) == len(champion.feature_names)
    for driver in analysis.drivers:
        assert explain.points_text(driver.mean_abs_effect) in driver.sentence
    # TreeSHAP adds up to the raw score, so the per-contact probability effects are consistent.
    x = champion.matrix(sample)
    contributions = champion.contributions(x)
    np.testing.assert_allclose(contributions.sum(axis=1), champion.raw_score(x), atol=1e-6)
    assert analysis.effects.shape == (sample.height, len(champion.feature_names))
    # The simulator plants long waits as a conversion killer: longer waits must read "lowers".
    waits = [d for d in analysis.drivers if d.feature == "wait_seconds"]
    assert waits and waits[0].direction == "lowers", [d.sentence for d in analysis.drivers]


def test_estimated_reasons_account_for_every_unrecorded_contact(setup):
    champion = setup["models"].get("dropoff-reason")
    data, period = setup["data"], setup["period"]
    unrecorded = data.labeled.filter(
        period.contains() & ~pl.col("converted") & pl.col("dropoff_label").is_null()
    ).select("contact_id")
    frame = setup["features"].join(unrecorded, on="contact_id")
    estimated = explain.estimated_reasons(champion, frame)
    assert estimated["contacts"].sum() == pytest.approx(frame.height, rel=1e-6)
    assert estimated["share"].sum() == pytest.approx(1.0)
    assert set(estimated["reason"]) == set(champion.card["class_names"])


def test_levers_change_only_the_contacts_they_name(setup):
    champion = setup["models"].get("conversion-after-contact")
    period, features = setup["period"], setup["features"]
    estimates = {
        e.lever.key: e
        for e in whatif.estimate_levers(
            champion,
            period,
            features,
            contacts=setup["contacts"],
            orders=setup["orders"],
            customers=setup["data"].customers,
            rates=setup["rates"],
            horizon_days=7,
            journey_gap_days=14,
        )
    }
    in_period = setup["contacts"].filter(period.contains())
    inquiries = in_period.filter(
        pl.col("intent").cast(pl.String).is_in(list(whatif.INQUIRY_INTENTS))
        & ~pl.col("follow_up_sent")
    )
    assert estimates["follow_up"].contacts_changed == inquiries.height > 0
    assert (
        estimates["channel_switch"].contacts_changed
        == features.filter(pl.col("channel_switch") == 1).height
    )
    assert estimates["waits"].baseline_orders == pytest.approx(
        champion.probability(champion.matrix(features)).sum(), rel=1e-9
    )
    # A lever that changes nothing adds nothing.
    nothing = whatif.Lever(
        key="none",
        title="none",
        explanation="",
        selects=lambda: pl.lit(False),
        changes=lambda: [pl.lit(0.0).alias("wait_seconds")],
    )
    (unchanged,) = whatif.estimate_levers(
        champion,
        period,
        features,
        contacts=setup["contacts"],
        orders=setup["orders"],
        customers=setup["data"].customers,
        rates=setup["rates"],
        horizon_days=7,
        journey_gap_days=14,
        levers=(nothing,),
    )
    assert unchanged.contacts_changed == 0 and unchanged.extra_orders == pytest.approx(
        0.0, abs=1e-9
    )


def test_drift_is_small_on_the_training_window_itself(setup, sim_dir, mlflow_settings):
    """PSI of the model's own test rows against its training reference stays low for own-contact fields."""
    champion = setup["models"].get("conversion-after-contact")
    test_rows = champion.test_set()
    assert test_rows is not None and test_rows.height > 1000
    drifts = {d.feature: d for d in health.feature_drift(champion, test_rows)}
    for feature in ("wait_seconds", "handle_seconds", "transfers", "channel", "intent"):
        assert drifts[feature].psi < 0.1, drifts[feature]
    reliability = health.held_out_reliability(champion)
    assert reliability is not None and len(reliability.predicted) == health.RELIABILITY_BINS
    # Calibrated on held-out data: predicted and observed shares agree within a few points per band.
    assert np.max(np.abs(reliability.predicted - reliability.observed)) < 0.1
