"""The commands register into, and load from, the store the settings name, whatever registry URI
the process or its environment held before (MLflow resolves the registry separately from
tracking: ``set_registry_uri``, then ``MLFLOW_REGISTRY_URI``, only then the tracking URI)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from cto.cli import main

pytestmark = pytest.mark.integration


def _table(path, n: int = 1_500) -> None:
    rng = np.random.default_rng(3)
    visits = rng.integers(0, 10, n)
    bought = rng.random(n) < 0.05 + 0.04 * visits  # learnable: more visits, more orders
    pl.DataFrame(
        {"visits": visits, "kind": rng.choice(["new", "returning"], n), "bought": bought}
    ).write_csv(path)


def test_train_and_score_use_the_configured_registry_not_the_environments(
    tmp_path, monkeypatch, isolated_mlflow_uris, capsys
):
    import mlflow

    configured = f"sqlite:///{tmp_path / 'configured.db'}"
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("CTO_TRACKING_URI", configured)
    monkeypatch.setenv("CTO_ARTIFACT_LOCATION", str(tmp_path / "mlruns"))
    monkeypatch.setenv("CTO_SEED", "3")
    monkeypatch.setenv("CTO_NUM_THREADS", "1")
    monkeypatch.setenv("CTO_MAX_ROUNDS", "20")
    # A registry left in the environment (and in the process, as an earlier in-process caller
    # would leave it) must not receive this project's registrations.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", elsewhere)
    mlflow.set_registry_uri(elsewhere)
    table = tmp_path / "sessions.csv"
    _table(table)
    name = "store-test-conversion"
    assert main(["train", "--table", str(table), "--label", "bought", "--model-name", name,
                 "--promote", "--quiet"]) == 0  # fmt: skip

    ours = mlflow.MlflowClient(tracking_uri=configured, registry_uri=configured)
    champion = ours.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == "1"
    assert ours.get_run(champion.run_id).info.run_id == champion.run_id
    other = mlflow.MlflowClient(tracking_uri=elsewhere, registry_uri=elsewhere)
    assert other.search_registered_models() == []

    # Scoring resolves NAME@champion in the configured registry too, with the registry URI
    # pointed elsewhere again in between.
    mlflow.set_registry_uri(elsewhere)
    out = tmp_path / "scores.parquet"
    capsys.readouterr()
    assert main(["score", "--table", str(table), "--model", name, "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    assert pl.read_parquet(out)["p_order"].is_between(0, 1).all()
