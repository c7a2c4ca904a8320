"""The feature registry: stable names and order, moments, JSON description, digest, generated docs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import polars as pl
import pytest

from features.registry import (
    FEATURE_SET,
    FeatureDef,
    FeatureSet,
    categorical_features,
    feature_names,
    feature_schema,
    features_markdown,
    monotone_constraints,
)
from features.schema import AFTER_CONTACT_COLUMNS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "features.md"


def test_after_contact_extends_arrival_in_order():
    arrival, after = feature_names("arrival"), feature_names("after_contact")
    assert after[: len(arrival)] == arrival
    own_outcome = {c for c in AFTER_CONTACT_COLUMNS if c not in ("agent_id", "dropoff_reason")}
    assert own_outcome <= set(after) - set(arrival)
    assert "agent_conversion_rate" in after and "agent_conversion_rate" not in arrival
    assert not own_outcome & set(arrival)
    assert "dropoff_reason" not in after
    assert len(after) == len(set(after))


def test_required_history_features_exist():
    names = set(feature_names("arrival"))
    for window in ("1d", "7d", "30d", "90d"):
        for stem in (
            "contacts",
            "channels_used",
            "channel_switches",
            "wait_mean",
            "wait_max",
            "abandons",
            "transfers",
            "unresolved",
            "bot_only",
        ):
            assert f"{stem}_{window}" in names
    for window in ("7d", "30d", "90d", "lifetime"):
        assert f"orders_{window}" in names and f"spend_{window}" in names
    assert {
        "days_since_last_contact",
        "days_since_last_order",
        "journey_contacts",
        "journey_age_hours",
        "channel_switch",
        "prev_unresolved",
        "intent_conversion_rate",
        "channel_conversion_rate",
        "tenure_days",
        "segment",
        "hour_of_day",
    } <= names


def test_categoricals_are_enums_and_schema_matches():
    assert categorical_features("arrival") == ["channel", "direction", "intent", "segment"]
    assert categorical_features("after_contact")[-1] == "handled_by"
    schema = feature_schema("after_contact")
    for name in categorical_features("after_contact"):
        assert isinstance(schema[name], pl.Enum)
    assert list(schema)[3:] == feature_names("after_contact")
    assert monotone_constraints("after_contact")[feature_names().index("wait_seconds")] == -1
    assert len(monotone_constraints("arrival")) == len(feature_names("arrival"))


def test_to_dict_is_json_and_complete():
    payload = json.loads(json.dumps(FEATURE_SET.to_dict()))
    assert payload["name"] == "cto_contact_features" and payload["version"]
    assert payload["moments"]["arrival"] == feature_names("arrival")
    described = {f["name"]: f for f in payload["features"]}
    assert set(described) == set(feature_names("after_contact"))
    assert all(f["description"] and f["window"] and f["moment"] for f in described.values())


def test_digest_tracks_definitions():
    changed = dataclasses.replace(FEATURE_SET.features[0], description="something else")
    other = FeatureSet(FEATURE_SET.name, FEATURE_SET.version, (changed, *FEATURE_SET.features[1:]))
    assert other.digest != FEATURE_SET.digest
    same = FeatureSet(FEATURE_SET.name, FEATURE_SET.version, FEATURE_SET.features)
    assert same.digest == FEATURE_SET.digest


def test_bad_definitions_are_rejected():
    with pytest.raises(ValueError, match="window"):
        FeatureDef("x", pl.lit(1), "d", "2w", "arrival")
    with pytest.raises(ValueError, match="moment"):
        FeatureDef("x", pl.lit(1), "d", "7d", "later")
    with pytest.raises(ValueError, match="Enum"):
        FeatureDef("x", pl.lit(1), "d", "7d", "arrival", kind="categorical")
    with pytest.raises(ValueError, match="duplicate"):
        FeatureSet("s", "1", (FEATURE_SET.features[0], FEATURE_SET.features[0]))
    with pytest.raises(ValueError, match="moment"):
        feature_names("whenever")


def test_docs_are_generated_from_registry():
    assert DOCS.read_text() == features_markdown(), (
        "docs/features.md is stale: regenerate it from features.registry.features_markdown()"
    )
    for name in feature_names("after_contact"):
        assert f"| `{name}` |" in DOCS.read_text()
