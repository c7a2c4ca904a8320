"""`cto train` fits with the backtest's scheme and refits on every labelled row up to the cut."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from training.schemes import Scheme
from training.tasks import fit_binary


def _frame(n: int, seed: int) -> pl.DataFrame:
    """Rows in time order over 100 days; train < day 70 <= valid < day 85 <= test."""
    rng = np.random.default_rng(seed)
    day = np.sort(rng.uniform(0, 100, n))
    x1 = rng.normal(size=n)
    y = rng.random(n) < 1 / (1 + np.exp(-(1.5 * x1 - 1.5)))
    split = np.where(day < 70, "train", np.where(day < 85, "valid", "test"))
    # A feature only the later rows carry (say, a field added to the CRM in the validation
    # window): a model that never trained on those rows cannot split on it.
    late = np.where(split == "train", np.nan, y + rng.normal(0, 0.3, n))
    start = datetime(2026, 1, 1)
    return pl.DataFrame(
        {
            "contact_id": [f"c{i}" for i in range(n)],
            "started_at": [start + timedelta(days=float(d)) for d in day],
            "x1": x1,
            "late": late,
            "converted": y,
            "split": split,
        }
    )


@pytest.fixture(scope="module")
def settings():
    from features.settings import get_settings

    return get_settings(num_threads=1, seed=3)


def test_refit_model_is_trained_on_the_later_rows(settings):
    frame = _frame(4000, seed=1)
    fit = fit_binary("table", frame, ["x1", "late"], [], "converted", settings=settings)
    training = fit.extra["training"]
    rows = frame.group_by("split").len().to_dict(as_series=False)
    counts = dict(zip(rows["split"], rows["len"], strict=True))
    assert training["refit_rows"] == counts["train"] + counts["valid"]
    assert fit.train_frame.height == counts["train"] + counts["valid"]
    gain = dict(
        zip(fit.booster.feature_name(), fit.booster.feature_importance("gain"), strict=True)
    )
    assert gain["late"] > 0  # learnt from the validation rows
    assert training["refit_trees"] == fit.booster.num_trees()
    assert training["scheme"] == "expanding"


def test_window_and_half_life_choose_and_weigh_the_rows(settings):
    frame = _frame(4000, seed=2)
    windowed = fit_binary(
        "table", frame, ["x1"], [], "converted", settings=settings, scheme=Scheme(window=40)
    )
    days = (
        frame.filter(pl.col("split").is_in(["train", "valid"]))
        .select((pl.col("started_at") >= datetime(2026, 1, 1) + timedelta(days=85 - 40)).sum())
        .item()
    )
    assert windowed.extra["training"]["refit_rows"] == days
    assert windowed.params["window"] == 40
    decayed = fit_binary(
        "table", frame, ["x1"], [], "converted", settings=settings, scheme=Scheme(half_life=5)
    )
    assert decayed.params["half_life"] == 5
    assert decayed.extra["training"]["refit_rows"] > days
    # weights change the fit: the same rows, a different model
    plain = fit_binary("table", frame, ["x1"], [], "converted", settings=settings)
    x = np.linspace(-2, 2, 9).reshape(-1, 1)
    assert not np.allclose(decayed.booster.predict(x), plain.booster.predict(x))


def test_cto_train_uses_the_scheme_the_backtest_chose(tmp_path, monkeypatch, capsys):
    import json

    import mlflow

    from cto.cli import main

    monkeypatch.setenv("CTO_TRACKING_URI", f"sqlite:///{tmp_path / 'schemes.db'}")
    monkeypatch.setenv("CTO_ARTIFACT_LOCATION", str(tmp_path / "mlruns"))
    monkeypatch.setenv("CTO_NUM_THREADS", "1")
    table = tmp_path / "contacts.csv"
    _frame(3000, seed=4).drop("split", "contact_id").write_csv(table)
    common = ["--table", str(table), "--label", "converted", "--time-column", "started_at"]
    out = tmp_path / "bt"
    args = ["backtest", *common, "--folds", "2", "--bootstrap", "30", "--quiet", "--out", str(out)]
    assert main(args) == 0
    backtest = json.loads((out / "backtest.json").read_text())
    chosen = backtest["chosen"]["lightgbm"]
    capsys.readouterr()

    assert main(["train", *common, "--quiet", "--model-name", "schemes-test"]) == 0
    client = mlflow.MlflowClient()
    version = client.get_model_version("schemes-test", "1")
    params = client.get_run(version.run_id).data.params
    assert params["scheme_source"] == f"backtest run {backtest['run_id']}"
    assert params["scheme"] == chosen["scheme"]
    assert params["window"] == str(chosen["window"])
    assert params["half_life"] == str(chosen["half_life"])

    # explicit flags win over the backtest
    assert (
        main(["train", *common, "--quiet", "--model-name", "schemes-test", "--window", "30"]) == 0
    )
    params = client.get_run(client.get_model_version("schemes-test", "2").run_id).data.params
    assert params["scheme_source"] == "flags" and params["window"] == "30.0"
