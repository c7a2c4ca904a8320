"""What the service refuses to load, and why: checked before anything can take a worker down."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pytest

from features.errors import CTOError
from features.registry import FEATURE_SET
from features.settings import get_settings
from serving.models import (
    check_feature_set,
    check_model_file,
    check_tracking_store,
    check_training_data,
    contract_schema,
    training_data_mismatch,
)
from serving.probes import Readiness


@pytest.fixture
def model_file(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((200, 4)), rng.integers(0, 2, 200)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 4, "verbosity": -1, "num_threads": 1},
        lgb.Dataset(x, y),
        num_boost_round=5,
    )
    path = tmp_path / "model.lgb"
    booster.save_model(str(path))
    return path


def test_a_whole_model_file_passes_and_a_truncated_one_is_refused(model_file):
    check_model_file("m v1", model_file)
    text = model_file.read_text()
    for cut in (len(text) // 3, len(text) // 2, text.index("end of trees") - 5):
        model_file.write_text(text[:cut])
        # LightGBM itself would abort the process (std::terminate) on some of these.
        with pytest.raises(CTOError, match="m v1: model file truncated or corrupt"):
            check_model_file("m v1", model_file)


def _card(**feature_set) -> dict:
    declared = {
        "name": FEATURE_SET.name,
        "version": FEATURE_SET.version,
        "digest": FEATURE_SET.digest,
    }
    return {"feature_set": declared | feature_set, "feature_names": ["channel", "intent"]}


def test_a_model_of_another_feature_set_is_refused_naming_both():
    check_feature_set("m v1", _card())
    with pytest.raises(CTOError, match=r"v0\.9\.0 .*digest 0000.*this service computes"):
        check_feature_set("m v1", _card(version="0.9.0", digest="0000"))
    unknown = _card() | {"feature_names": ["channel", "not_a_feature"]}
    with pytest.raises(CTOError, match="not_a_feature"):
        check_feature_set("m v1", unknown)


def test_a_tracking_uri_naming_a_missing_file_fails_instead_of_creating_it(tmp_path):
    missing = tmp_path / "typo" / "mlflow.db"
    with pytest.raises(CTOError, match="does not exist"):
        check_tracking_store(f"sqlite:///{missing}")
    assert not missing.exists()
    existing = tmp_path / "mlflow.db"
    existing.write_bytes(b"")
    check_tracking_store(f"sqlite:///{existing}")
    check_tracking_store("postgresql://host/db")  # a server: checked when first used


def _trained_on(kind: str, **changes: dict[str, str]) -> dict:
    schema = {table: dict(columns) for table, columns in contract_schema().items()}
    for table, columns in changes.items():
        schema[table].update(columns)
    return {"data": {"source_kind": kind, "source": f"/data/{kind}", "schema": schema}}


def test_models_that_learnt_from_other_data_than_the_contract_are_refused_naming_the_difference():
    settings = get_settings()
    # Contract tables from the simulator or an importer: served (a table it lacked is fine).
    assert training_data_mismatch(_trained_on("simulator")) is None
    without_customers = _trained_on("tables")
    del without_customers["data"]["schema"]["customers"]
    assert training_data_mismatch(without_customers) is None
    assert training_data_mismatch({"feature_names": []}) is None  # a card from before data blocks
    assert check_training_data(settings, "m v1", _trained_on("olist")) is None

    table = {"data": {"source_kind": "table", "source": "/x/shoppers.csv", "schema": {}}}
    with pytest.raises(CTOError, match=r"m v1: .*one-row-per-contact table \(/x/shoppers\.csv\)"):
        check_training_data(settings, "m v1", table)
    extra = _trained_on("olist", contacts={"origin": "String"})
    with pytest.raises(
        CTOError, match=r"contacts\.origin not in the contract.*CTO_ALLOW_OTHER_DATA"
    ):
        check_training_data(settings, "m v1", extra)
    retyped = _trained_on("tables", orders={"amount": "String"})
    assert "orders.amount typed String, contract Float64" in training_data_mismatch(retyped)

    # Allowed: loaded, and the difference is returned (every answer of the model carries it).
    allowed = get_settings(allow_other_data=True)
    assert "contacts.origin" in check_training_data(allowed, "m v1", extra)


def test_readyz_names_a_refused_set_next_to_the_one_that_keeps_serving():
    state = Readiness()
    state.refused("models not loaded: no champion")
    assert state.answer()[0] == 503 and b"no champion" in state.answer()[1]
    state.serving({"conversion-arrival": "3"}, {"conversion-arrival": "table data"})
    state.refused("models not loaded: m v4: trained on other data")
    status, body = state.answer()
    assert status == 200
    assert json.loads(body) == {
        "ready": True,
        "models": {"conversion-arrival": "3"},
        "data_mismatch": {"conversion-arrival": "table data"},
        "not_loaded": "models not loaded: m v4: trained on other data",
    }
    state.serving({"conversion-arrival": "3"})
    assert json.loads(state.answer()[1]) == {"ready": True, "models": {"conversion-arrival": "3"}}


def test_the_loader_resolves_models_in_its_own_registry_whatever_the_shell_says(
    tmp_path, isolated_mlflow_uris
):
    # A shell may export MLFLOW_TRACKING_URI equal to the service's store but an
    # MLFLOW_REGISTRY_URI naming another one: models:/ URIs must still resolve in ours.
    import mlflow

    from serving.models import champion_versions

    ours = f"sqlite:///{tmp_path / 'ours.db'}"
    mlflow.set_tracking_uri(ours)
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'other.db'}")
    champion_versions(get_settings(tracking_uri=ours))
    assert mlflow.get_tracking_uri() == ours
    assert mlflow.get_registry_uri() == ours
