"""Training into a real MLflow store: registration, the champion alias, the model card, the run
record and the promotion gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from training.tracking import use_store

pytestmark = pytest.mark.integration

AFTER = "conversion-after-contact"
CARD_KEYS = {
    "task",
    "feature_set",
    "feature_names",
    "categorical_features",
    "category_levels",
    "class_names",
    "calibration",
    "test_metrics",
    "data_windows",
    "reference_quantiles",
    "feature_descriptions",
}


def test_every_model_is_registered_as_champion_with_card_and_rates(trained, mlflow_settings):
    import mlflow
    from mlflow.models import Model

    client = use_store(mlflow_settings)
    prefix = mlflow_settings.model_prefix
    expected = {
        "conversion-arrival": f"{prefix}-conversion-arrival",
        AFTER: f"{prefix}-conversion-after-contact",
        "dropoff-reason": f"{prefix}-dropoff-reason",
        "contacts-to-order": f"{prefix}-contacts-to-order",
    }
    assert trained.model_names == expected
    for task, name in expected.items():
        champion = client.get_model_version_by_alias(name, mlflow_settings.champion_alias)
        assert str(champion.version) == trained.versions[task]
        assert trained.promoted[task].promoted
        uri = f"models:/{name}@{mlflow_settings.champion_alias}"
        booster = mlflow.lightgbm.load_model(uri)
        model_dir = Path(mlflow.artifacts.download_artifacts(uri))
        card = json.loads((model_dir / "model_card.json").read_text())
        assert CARD_KEYS <= card.keys(), CARD_KEYS - card.keys()
        assert card["task"] == task
        assert card["feature_names"] == booster.feature_name()
        assert set(card["reference_quantiles"]) == set(card["feature_names"])
        assert set(card["feature_descriptions"]) == set(card["feature_names"])
        for windows in card["data_windows"].values():
            assert windows["from"] < windows["until"]
        rates = pl.read_parquet(model_dir / "rates.parquet")
        assert {"agent", "intent", "channel", "global"} <= set(rates["rate_table"].unique())
        assert rates["rate"].is_between(0, 1).all()
        model = Model.load(str(model_dir))
        assert model.signature is not None
        assert model.saved_input_example_info is not None
    reason_card = trained.cards["dropoff-reason"]
    assert reason_card["class_names"] and len(reason_card["class_names"]) >= 3
    channel_levels = trained.cards[AFTER]["category_levels"]["channel"]
    assert "phone" in channel_levels


def test_run_records_params_metrics_baselines_windows_and_plots(trained, mlflow_settings):

    client = use_store(mlflow_settings)
    run = client.get_run(trained.run_ids[AFTER])
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    for key in ("feature_set_version", "feature_set_digest", "data_digest", "window_test_from"):
        assert tags.get(key), key
    for key in (
        "test_roc_auc",
        "test_ece",
        "test_alift",
        "baseline_logistic_test_roc_auc",
        "oracle_test_roc_auc",
    ):
        assert np.isfinite(metrics[key]), key
    assert "monotone_constraints" in params and params["deterministic"] == "True"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {
        "plots/roc.png",
        "plots/reliability.png",
        "plots/lift.png",
        "plots/shap_summary.png",
    } <= artifacts
    root = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model_card.json", "rates.parquet", "test_set.parquet", "feature_list.json"} <= root


@pytest.fixture(scope="module")
def gate(sim_dir, mlflow_settings):
    """Prepared data and settings for a separate model name, so the gate can't disturb `trained`."""
    from features.settings import get_settings
    from training.data import prepare

    settings = get_settings(**(mlflow_settings.model_dump() | {"model_prefix": "gate"}))
    return prepare(sim_dir, settings), settings


def _register(prepared, settings, *, max_rounds: int, shuffle_labels: bool = False):
    from features.registry import categorical_features, feature_names
    from training.pipeline import monotone_hints, register_fit
    from training.tasks import fit_binary

    frame = prepared.frame.filter(pl.col("split").is_not_null())
    if shuffle_labels:
        # Noise in the training rows only: the challenger is then judged on the real test window
        # (shuffling the test labels too would make every model score ~0.5 there, a coin flip).
        is_train = pl.col("split") == "train"
        frame = pl.concat(
            [
                frame.filter(is_train).with_columns(pl.col("converted").shuffle(seed=11)),
                frame.filter(~is_train),
            ]
        )
    fit = fit_binary(
        AFTER,
        frame,
        feature_names("after_contact"),
        categorical_features("after_contact"),
        "converted",
        settings=settings,
        monotone=monotone_hints("after_contact"),
        max_rounds=max_rounds,
    )
    _, version, _ = register_fit(fit, prepared, settings, f"gate-{AFTER}")
    return version


def test_promotion_gate_takes_only_a_better_challenger(gate):

    from training.promote import promote

    prepared, settings = gate
    client = use_store(settings)
    name = f"gate-{AFTER}"

    one_tree = _register(prepared, settings, max_rounds=1)
    first = promote(AFTER, one_tree, settings)
    assert first.promoted and first.champion_version is None

    full = _register(prepared, settings, max_rounds=600)
    better = promote(AFTER, full, settings)
    assert better.promoted, better.reason
    assert better.champion_version == one_tree
    assert better.challenger_score > better.champion_score
    assert str(client.get_model_version_by_alias(name, settings.champion_alias).version) == full

    shuffled = _register(prepared, settings, max_rounds=600, shuffle_labels=True)
    worse = promote(AFTER, shuffled, settings)
    assert not worse.promoted
    assert worse.challenger_score < worse.champion_score
    assert str(client.get_model_version_by_alias(name, settings.champion_alias).version) == full
    # Both scores and the decision are on the challenger's run.
    run = client.get_run(client.get_model_version(name, shuffled).run_id)
    assert run.data.tags["promotion_decision"] == "kept_champion"
    assert run.data.metrics["promotion_challenger_roc_auc"] == pytest.approx(worse.challenger_score)
    assert run.data.metrics["promotion_champion_roc_auc"] == pytest.approx(worse.champion_score)


def test_cto_promote_command_reports_the_decision(gate, monkeypatch, capsys):
    from cto.cli import main

    _, settings = gate
    monkeypatch.setenv("CTO_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("CTO_ARTIFACT_LOCATION", settings.artifact_location)
    monkeypatch.setenv("CTO_MODEL_PREFIX", "gate")
    assert main(["promote", "--task", AFTER, "--version", "999"]) == 2
    assert "version 999" in capsys.readouterr().err
