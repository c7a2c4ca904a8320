"""Behavioural tests of the registered champion models: SHAP additivity, monotone direction,
invariance, unseen categories, reproducibility and quality against baselines and the oracle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from features.encoding import FeatureEncoding, encode
from training.scoring import predict
from training.tracking import use_store

AFTER = "conversion-after-contact"
ARRIVAL = "conversion-arrival"
REASON = "dropoff-reason"


@pytest.fixture(scope="module")
def champions(trained, mlflow_settings):
    """task -> (booster, card, test frame), loaded back from the registry by alias."""
    import mlflow

    use_store(mlflow_settings)
    loaded = {}
    for task, name in trained.model_names.items():
        uri = f"models:/{name}@{mlflow_settings.champion_alias}"
        booster = mlflow.lightgbm.load_model(uri)
        model_dir = Path(mlflow.artifacts.download_artifacts(uri))
        card = json.loads((model_dir / "model_card.json").read_text())
        test = pl.read_parquet(
            mlflow.artifacts.download_artifacts(
                run_id=trained.run_ids[task], artifact_path="test_set.parquet"
            )
        )
        loaded[task] = (booster, card, test)
    return loaded


@pytest.mark.parametrize("task", [ARRIVAL, AFTER, REASON, "contacts-to-order"])
def test_shap_contributions_add_up_to_the_raw_score(champions, task):
    booster, card, test = champions[task]
    x = encode(test.head(2000), FeatureEncoding.from_dict(card))
    raw = np.asarray(booster.predict(x, raw_score=True, num_threads=1)).reshape(len(x), -1)
    contrib = np.asarray(booster.predict(x, pred_contrib=True, num_threads=1))
    per_class = contrib.reshape(len(x), raw.shape[1], len(card["feature_names"]) + 1)
    assert np.max(np.abs(per_class.sum(axis=2) - raw)) < 1e-6


def _scores_over_grid(
    booster, card, rows: pl.DataFrame, feature: str, grid: list[float]
) -> np.ndarray:
    """(rows, grid) probabilities with ``feature`` set to each grid value, all else equal."""
    columns = [
        predict(
            booster,
            card,
            rows.with_columns(pl.lit(value).cast(rows.schema[feature]).alias(feature)),
        )
        for value in grid
    ]
    return np.column_stack(columns)


def test_monotone_hints_are_enforced_in_the_after_contact_model(champions):
    booster, card, test = champions[AFTER]
    constraints = card["monotone_constraints"]
    # The registry declares these directions; the card must carry them to LightGBM.
    assert constraints.get("wait_seconds") == -1
    assert constraints.get("transfers") == -1
    assert constraints.get("follow_up_sent") == 1
    rows = test.sample(400, seed=3)
    grids = {
        "wait_seconds": [
            0,
            15,
            30,
            60,
            90,
            180,
            300,
            600,
            1200,
            3600,
            4 * 3600,
            24 * 3600,
            3 * 86400,
        ],
        "transfers": [0, 1, 2, 3, 4, 6, 10],
    }
    for feature, direction in constraints.items():
        grid = grids.get(feature, [0, 1])
        scores = _scores_over_grid(booster, card, rows, feature, grid)
        steps = np.diff(scores, axis=1) * direction
        assert steps.min() >= -1e-12, f"{feature} moved the score against its declared direction"
    # And the constraint is not vacuous: waiting longer does lower the score for most rows.
    wait = _scores_over_grid(booster, card, rows, "wait_seconds", grids["wait_seconds"])
    assert np.mean(wait[:, -1] < wait[:, 0]) > 0.5


def test_scores_ignore_ids_and_extra_columns(champions):
    booster, card, test = champions[AFTER]
    rows = test.head(500)
    baseline = predict(booster, card, rows)
    changed = rows.with_columns(
        pl.format("other-{}", pl.col("contact_id")).alias("contact_id"),
        pl.lit("irrelevant").alias("free_text_note"),
        pl.lit(123.0).alias("an_extra_number"),
    ).select(["free_text_note", *rows.columns, "an_extra_number"])  # column order shuffled too
    assert np.array_equal(baseline, predict(booster, card, changed))


def test_unseen_category_scores_as_missing_instead_of_failing(champions):
    booster, card, test = champions[AFTER]
    rows = test.head(200).with_columns(pl.col("channel").cast(pl.String))
    unseen = predict(booster, card, rows.with_columns(pl.lit("carrier_pigeon").alias("channel")))
    missing = predict(booster, card, rows.with_columns(pl.lit(None, pl.String).alias("channel")))
    assert np.isfinite(unseen).all()
    assert np.array_equal(unseen, missing)


def test_same_data_and_seed_give_the_same_metrics(trained, sim_dir, mlflow_settings, tmp_path):
    from features.settings import get_settings
    from training.pipeline import run_training

    fresh = get_settings(
        tracking_uri=f"sqlite:///{tmp_path / 'again.db'}",
        artifact_location=str(tmp_path / "mlruns"),
        seed=mlflow_settings.seed,
    )
    again = run_training(sim_dir, fresh, promote=False, progress=False, tasks=[AFTER])
    first = {k: v for k, v in trained.metrics[AFTER].items() if not k.startswith("explain_cost")}
    second = {k: v for k, v in again.metrics[AFTER].items() if not k.startswith("explain_cost")}
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert second[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_after_contact_model_beats_every_baseline_and_nears_the_oracle(trained):
    m = trained.metrics[AFTER]
    for baseline in ("baseline_base_rate", "baseline_logistic", "baseline_one_rule"):
        assert m["test_roc_auc"] > m.get(f"{baseline}_test_roc_auc", 0.5), baseline
        assert m["test_lift_top10"] > m[f"{baseline}_test_lift_top10"], baseline
        assert m["test_log_loss"] < m[f"{baseline}_test_log_loss"], baseline
    # The full oracle knows hidden customer traits no feature carries; against the oracle without
    # them (truth p_convert_observable) the model must come close. docs/training.md states 3% for
    # the 200k-contact report card; this 40k-contact set trains on 5x fewer rows and a smaller
    # test window (measured 3.4% here), so it is held to 4%.
    assert m["oracle_test_roc_auc"] > m["oracle_p_convert_observable_roc_auc"]
    assert m["test_roc_auc"] >= 0.96 * m["oracle_p_convert_observable_roc_auc"]
    assert m["test_ece"] < 0.02  # the documented line
    # After the contact the model knows more than at arrival.
    assert m["test_roc_auc"] > trained.metrics[ARRIVAL]["test_roc_auc"]


def test_explanations_name_the_planted_driver(trained):
    share = trained.metrics[AFTER]["driver_recovery_share"]
    assert share >= 0.8  # the documented line (docs/training.md, Measured)


def test_reason_model_beats_the_class_prior(trained):
    m = trained.metrics[REASON]
    assert m["test_macro_f1"] > m["baseline_base_rate_test_macro_f1"]
    assert m["test_log_loss"] < m["baseline_base_rate_test_log_loss"]


def test_contacts_to_order_beats_the_mean(trained):
    m = trained.metrics["contacts-to-order"]
    assert m["test_poisson_deviance"] < m["baseline_mean_test_poisson_deviance"]
