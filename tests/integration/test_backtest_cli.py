"""`cto backtest --table` on the public online-shoppers data (ordered by month) into real MLflow."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def test_cto_backtest_table_on_online_shoppers_logs_folds_and_a_verdict(
    shared_data, tmp_path, monkeypatch, capsys
):
    import mlflow

    from benchmarks.backtests import shoppers_with_month_index
    from cto.cli import main

    monkeypatch.setenv("CTO_TRACKING_URI", f"sqlite:///{tmp_path / 'bt.db'}")
    monkeypatch.setenv("CTO_ARTIFACT_LOCATION", str(tmp_path / "mlruns"))
    monkeypatch.setenv("CTO_SEED", "7")
    table = shoppers_with_month_index(
        shared_data / "online-shoppers" / "online_shoppers_intention.csv", tmp_path / "shop.csv"
    )
    out_dir = tmp_path / "out"
    args = ["backtest", "--table", str(table), "--label", "Revenue"]
    args += ["--time-column", "month_index", "--exclude", "Month", "--time-unit", "months"]
    args += ["--folds", "2", "--bootstrap", "50", "--quiet", "--out", str(out_dir)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "logistic-regression baseline" in out and "retrain" in out

    result = json.loads((out_dir / "backtest.json").read_text())
    assert (out_dir / "backtest.png").stat().st_size > 10_000
    assert len(result["folds"]) == 2 and result["unit"] == "months"
    for fold in result["folds"]:
        # the December sessions are tested, never trained on by the fold that tests them
        assert fold["origin"] <= 12
    lgbm = result["overall"]["lightgbm/expanding"]["roc_auc"]
    assert lgbm["low"] <= lgbm["value"] <= lgbm["high"]
    assert lgbm["value"] > result["overall"]["one_rule/expanding"]["roc_auc"]["value"]

    client = mlflow.MlflowClient()
    parent = client.get_run(result["run_id"])
    assert parent.data.tags["kind"] == "backtest"
    assert parent.data.params["chosen_window"] in ("none", *[str(x) for x in range(1, 20)])
    children = mlflow.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        output_format="list",
    )
    assert len(children) == 2
    assert all("lightgbm.expanding.roc_auc_low" in c.data.metrics for c in children)

    # `cto train --table --family auto` follows this backtest's verdict (same file, same digest).
    from features.settings import get_settings
    from training.table import resolve_family

    family, why = resolve_family(get_settings(), parent.data.tags["data_digest"], "auto")
    assert family == parent.data.tags["recommended_family"]
    assert parent.info.run_id in why
    assert resolve_family(get_settings(), "no-such-digest", "auto")[0] == "lightgbm"


def test_cto_backtest_table_needs_a_time_column(shared_data, capsys):
    from cto.cli import main

    path = shared_data / "online-shoppers" / "online_shoppers_intention.csv"
    assert main(["backtest", "--table", str(path), "--label", "Revenue"]) == 2
    assert "--time-column" in capsys.readouterr().err
