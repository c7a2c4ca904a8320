"""`cto train --table --treatment` on the randomised Starbucks promotion data, into a real MLflow store."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

REFERENCE_NIR = 189.45  # the exercise's reference solution on test.csv


@pytest.fixture()
def uplift_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CTO_TRACKING_URI", f"sqlite:///{tmp_path / 'uplift.db'}")
    monkeypatch.setenv("CTO_ARTIFACT_LOCATION", str(tmp_path / "mlruns"))
    monkeypatch.setenv("CTO_NUM_THREADS", "1")
    return tmp_path


def test_uplift_on_starbucks_beats_the_t_learner_and_the_reference_nir(
    shared_data, uplift_env, capsys
):
    import mlflow
    import pandas as pd

    from cto.cli import main

    data = shared_data / "starbucks-promotion"
    name = "cto-starbucks-uplift"
    args = ["train", "--table", str(data / "training.csv"), "--label", "purchase"]
    args += ["--treatment", "Promotion", "--test-table", str(data / "test.csv"), "--exclude", "ID"]
    args += ["--learners", "t", "s", "x", "--order-value", "10", "--treatment-cost", "0.15"]
    assert main([*args, "--model-name", name, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "T-learner" in out and "baseline" in out

    client = mlflow.MlflowClient()
    version = client.get_model_version(name, "1")
    run = client.get_run(version.run_id)
    learner = run.data.tags["learner"]
    assert learner != "t"  # chosen on validation rows; the baseline lost there
    m = run.data.metrics
    assert m[f"test_{learner}_qini"] > m["test_t_qini"]
    assert m[f"test_{learner}_qini"] > m["test_random_qini"] + 0.0005
    assert m[f"test_{learner}_nir"] > REFERENCE_NIR
    assert m[f"test_{learner}_irr"] > 0.0188 * 0.95
    report = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/uplift_report.json")
    assert report["treat_everyone"]["nir"] < 0  # promoting everyone loses money

    model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
    scored = model.predict(pd.read_csv(data / "test.csv").head(200))
    assert list(scored.columns) == ["uplift", "p_order_treated", "p_order_control"]
    assert (
        scored["uplift"] - (scored["p_order_treated"] - scored["p_order_control"])
    ).abs().max() < 0.05
    assert scored["uplift"].std() > 0

    # cto score --table knows an uplift model: input columns plus uplift and both arms' P(order).
    import polars as pl

    out = uplift_env / "scores.parquet"
    ref = f"{name}/{version.version}"
    assert (
        main(["score", "--table", str(data / "test.csv"), "--model", ref, "--out", str(out)]) == 0
    )
    table = pl.read_parquet(out)
    assert table.height == 41_650 and table.columns[:3] == ["ID", "Promotion", "purchase"]
    assert {"uplift", "p_order_treated", "p_order_control"} <= set(table.columns)
    assert abs(table["uplift"][:200].to_numpy() - scored["uplift"].to_numpy()).max() < 1e-9


def test_uplift_names_a_bad_treatment_column(shared_data, uplift_env, capsys):
    from cto.cli import main

    path = shared_data / "starbucks-promotion" / "test.csv"
    base = ["train", "--table", str(path), "--label", "purchase", "--quiet"]
    assert main([*base, "--treatment", "V2"]) == 2
    err = capsys.readouterr().err
    assert "treatment column 'V2'" in err and "row 1" in err
    assert main([*base, "--treatment", "Nope"]) == 2
    assert "Nope" in capsys.readouterr().err
