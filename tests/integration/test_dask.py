"""The pipeline on a Dask cluster (LocalCluster, 2 worker processes): `cto features --dask` gives
exactly the single-machine features and rate tables; `cto train --dask` registers a model whose
held-out metric is within a stated tolerance of the single-machine fit; `cto score --dask` (a table,
and contract data) gives exactly the one-process scores."""

from __future__ import annotations

import re

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cto.cli import main
from features.errors import CTOError
from features.labels import label_contacts
from features.pipeline import build_features
from features.rates import RateTables, compute_rates
from features.simulate import simulate
from training.tracking import use_store

pytestmark = pytest.mark.integration
HORIZON, GAP = 7, 14


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as local,
        Client(local) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    sim = simulate(n_contacts=8_000, seed=31)
    data = tmp_path_factory.mktemp("dask_in")
    sim.write(data)
    return sim, data


def test_dask_features_equal_single_machine(cluster, world, tmp_path, monkeypatch, capsys):
    sim, data = world
    out = tmp_path / "features"
    # The CTO_DASK setting picks the cluster (its scheduler address) when --dask is not given.
    monkeypatch.setenv("CTO_DASK", cluster.scheduler.address)
    assert (
        main(
            [
                "features",
                str(data),
                "--out",
                str(out),
                "--partitions",
                "5",
                "--horizon-days",
                str(HORIZON),
                "--journey-gap-days",
                str(GAP),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "dask: tcp://" in printed and "2 workers" in printed
    rates = compute_rates(label_contacts(sim.contacts, sim.orders, HORIZON, GAP), HORIZON)
    written = RateTables.read(out / "rates")
    for name, table in rates.tables.items():
        assert_frame_equal(written.tables[name], table, check_exact=True)
    assert_frame_equal(written.global_rate, rates.global_rate, check_exact=True)
    for moment in ("arrival", "after_contact"):
        parts = sorted((out / moment).glob("part-*.parquet"))
        assert len(parts) == 5
        distributed = pl.concat([pl.read_parquet(p) for p in parts]).sort("contact_id")
        single = build_features(
            sim.contacts,
            sim.orders,
            sim.customers,
            rates,
            moment,
            journey_gap_days=GAP,
            horizon_days=HORIZON,
        ).sort("contact_id")
        assert distributed.height == sim.contacts.height
        assert distributed["intent_conversion_rate"].null_count() < distributed.height
        assert_frame_equal(distributed, single, check_exact=True)
    assert not list(out.glob(".partitions-*")), "the partitioned inputs are cleaned up"


def test_dask_errors_are_clear(world, tmp_path):
    from features.distributed import dask_client

    with pytest.raises(CTOError, match="local:N needs a worker count"):
        with dask_client("local:zero"):
            pass
    with pytest.raises(CTOError, match="cannot reach the Dask scheduler"):
        with dask_client("tcp://127.0.0.1:9", timeout="1s"):
            pass
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    sim, _ = world
    sim.contacts.head(10).write_csv(csv_dir / "contacts.csv")
    from features.distributed import input_files

    with pytest.raises(CTOError, match="the Dask path reads Parquet"):
        input_files(csv_dir)


# Distributed LightGBM builds its histograms on each worker's rows, so it is not bit-identical
# to one machine: the stated tolerance on the held-out ROC-AUC of the conversion model.
ROC_AUC_TOLERANCE = 0.03


def test_dask_training_registers_a_model_within_tolerance(
    cluster, world, tmp_path, monkeypatch, capsys
):
    import mlflow

    from features.settings import get_settings
    from training.data import prepare
    from training.pipeline import fit_task

    sim, data = world
    store = tmp_path / "mlflow"
    env = {
        "CTO_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "CTO_ARTIFACT_LOCATION": str(store / "mlruns"),
        "CTO_SEED": "5",
        "CTO_NUM_THREADS": "1",
        # Dask cannot stop early: it trains every round (a network sync each). On this small set
        # single-machine early stopping ends well before 150 rounds, so the cap keeps the test
        # cheap without changing what is compared (both fits run under it).
        "CTO_MAX_ROUNDS": "150",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    store.mkdir()
    task = "conversion-after-contact"
    assert (
        main(
            [
                "train",
                str(data),
                "--tasks",
                task,
                "--dask",
                cluster.scheduler.address,
            ]
        )
        == 0
    )
    # The training frame came from the Dask feature path (partitions, the global rate step, one
    # feature task per partition), not from one machine; the run records the engine.
    progress = capsys.readouterr().err
    assert "customer-hash partitions" in progress, progress
    assert re.search(r"features: (\d+)/\1 partitions", progress), progress
    settings = get_settings()
    client = use_store(settings)
    name = f"{settings.model_prefix}-{task}"
    version = client.search_model_versions(f"name='{name}'")[0]
    run = client.get_run(version.run_id)
    assert run.data.tags["fit_engine"] == "lightgbm.dask"
    distributed_auc = run.data.metrics["test_roc_auc"]
    booster = mlflow.lightgbm.load_model(f"models:/{name}/{version.version}")
    assert booster.num_trees() >= 1

    single = fit_task(task, prepare(data, settings), settings)
    single_auc = single.metrics["model"]["roc_auc"]
    assert distributed_auc > 0.6, "the distributed model learned the planted effects"
    assert abs(distributed_auc - single_auc) <= ROC_AUC_TOLERANCE, (distributed_auc, single_auc)

    # Batch scoring with the registered model: map_partitions on the cluster (one partition per
    # row group) gives exactly the one-process scores, in input order.
    table = tmp_path / "to_score.parquet"
    single.test_frame.write_parquet(table, row_group_size=500)
    model = f"{name}/{version.version}"
    outputs = {}
    for how, extra in (("one", []), ("dask", ["--dask", cluster.scheduler.address])):
        outputs[how] = tmp_path / f"scores_{how}.parquet"
        score = ["score", "--table", str(table), "--model", model, "--out", str(outputs[how])]
        assert main([*score, "--allow-other-data", "--quiet", *extra]) == 0
    one, dask = (pl.read_parquet(path) for path in outputs.values())
    assert one.height == single.test_frame.height > 1_000
    assert one["p_order"].n_unique() > 100
    assert_frame_equal(dask, one, check_exact=True)

    # Contract data (`cto score DATA_DIR --dask`): rates once on the cluster, then one task per
    # customer-hash partition with the champion broadcast; each contact's row equals the
    # one-process run's (rows come grouped by partition there, by hash chunk here).
    client.set_registered_model_alias(name, settings.champion_alias, version.version)
    scored = {}
    for how, extra in (("one", []), ("dask", ["--dask", cluster.scheduler.address])):
        path = tmp_path / f"contacts_{how}.parquet"
        score = ["score", str(data), "--moment", "after_contact", "--explain", "1", "--out"]
        assert main([*score, str(path), "--since", "2026-03-01", "--quiet", *extra]) == 0
        scored[how] = pl.read_parquet(path).sort("contact_id")
    assert 1_000 < scored["one"].height < sim.contacts.height  # the period, not every contact
    assert scored["one"]["p_order"].n_unique() > 100
    assert_frame_equal(scored["dask"], scored["one"], check_exact=True)


def test_best_round_is_the_early_stopping_rule():
    from training.distributed import best_round

    assert best_round([5.0, 4.0, 3.0, 3.5, 3.6, 3.7], patience=2) == 3
    # A later, lower loss after the patience ran out is not taken (early stopping never saw it).
    assert best_round([5.0, 4.0, 4.5, 4.6, 1.0], patience=2) == 2
    assert best_round([3.0, 2.0, 1.0], patience=40) == 3


def test_dask_backtest_within_tolerance_of_one_process(cluster, world, tmp_path, monkeypatch):
    """`cto backtest --dask`: the frame from the Dask feature path, every LightGBM fit on the
    cluster. The folds and every candidate fitted off the cluster (logistic regression, LightGBM
    with linear leaves, one rule, base rate: they see the same frame) are exactly the one-process
    ones; LightGBM within the stated tolerance."""
    import json

    _, data = world
    env = {
        "CTO_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "CTO_ARTIFACT_LOCATION": str(tmp_path / "mlruns"),
        "CTO_SEED": "5",
        "CTO_NUM_THREADS": "1",
        "CTO_MAX_ROUNDS": "20",  # every Dask fit trains the full budget (no early stopping)
        "CTO_HORIZON_DAYS": str(HORIZON),
        "CTO_JOURNEY_GAP_DAYS": str(GAP),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    results = {}
    for how, extra in (("one", []), ("dask", ["--dask", cluster.scheduler.address])):
        out = tmp_path / how
        args = ["backtest", str(data), "--task", "conversion-arrival", "--folds", "1"]
        assert main([*args, "--bootstrap", "30", "--quiet", "--out", str(out), *extra]) == 0
        results[how] = json.loads((out / "backtest.json").read_text())
    one, dask = results["one"], results["dask"]
    assert dask["folds"] == one["folds"] and len(one["folds"]) == 1
    client_side = ("linear", "lightgbm_linear_tree", "one_rule", "base_rate")
    for key in (f"{family}/expanding" for family in client_side):
        assert dask["overall"][key] == one["overall"][key], key
    lightgbm = [key for key in one["overall"] if key.startswith("lightgbm/")]
    assert "lightgbm/expanding" in lightgbm and len(lightgbm) > 1
    for key in lightgbm:
        ours, theirs = (
            dask["overall"][key]["roc_auc"]["value"],
            one["overall"][key]["roc_auc"]["value"],
        )
        assert abs(ours - theirs) <= ROC_AUC_TOLERANCE, (key, ours, theirs)
    assert one["overall"]["lightgbm/expanding"]["roc_auc"]["value"] > 0.6
    from features.settings import get_settings

    store = use_store(get_settings())
    assert store.get_run(dask["run_id"]).data.tags["fit_engine"] == "lightgbm.dask"
    assert store.get_run(one["run_id"]).data.tags["fit_engine"] == "lightgbm"


def test_dask_table_backtest_on_online_shoppers(cluster, shared_data, tmp_path, monkeypatch):
    """`cto backtest --table --dask` on the public online-shoppers sessions (ordered by month):
    no feature step, the LightGBM fits on the cluster; the folds and the client-side candidates
    are exactly the one-process ones, LightGBM within the stated tolerance."""
    import json

    from benchmarks.backtests import shoppers_with_month_index

    env = {
        "CTO_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "CTO_ARTIFACT_LOCATION": str(tmp_path / "mlruns"),
        "CTO_SEED": "7",
        "CTO_NUM_THREADS": "1",
        "CTO_MAX_ROUNDS": "30",  # every Dask fit trains the full budget (no early stopping)
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    table = shoppers_with_month_index(
        shared_data / "online-shoppers" / "online_shoppers_intention.csv", tmp_path / "shop.csv"
    )
    results = {}
    for how, extra in (("one", []), ("dask", ["--dask", cluster.scheduler.address])):
        out = tmp_path / how
        args = ["backtest", "--table", str(table), "--label", "Revenue", "--exclude", "Month"]
        args += ["--time-column", "month_index", "--time-unit", "months", "--folds", "1"]
        assert main([*args, "--bootstrap", "30", "--quiet", "--out", str(out), *extra]) == 0
        results[how] = json.loads((out / "backtest.json").read_text())
    one, dask = results["one"], results["dask"]
    assert dask["folds"] == one["folds"] and len(one["folds"]) == 1
    for key in ("linear/expanding", "one_rule/expanding", "base_rate/expanding"):
        assert dask["overall"][key] == one["overall"][key], key
    lightgbm = [key for key in one["overall"] if key.startswith("lightgbm/")]
    assert "lightgbm/expanding" in lightgbm
    for key in lightgbm:
        ours, theirs = (
            dask["overall"][key]["roc_auc"]["value"],
            one["overall"][key]["roc_auc"]["value"],
        )
        assert abs(ours - theirs) <= ROC_AUC_TOLERANCE, (key, ours, theirs)
    # Real sessions: the model beats the one-rule baseline on the cluster too.
    assert (
        dask["overall"]["lightgbm/expanding"]["roc_auc"]["value"]
        > dask["overall"]["one_rule/expanding"]["roc_auc"]["value"]
    )
    from features.settings import get_settings

    store = use_store(get_settings())
    assert store.get_run(dask["run_id"]).data.tags["fit_engine"] == "lightgbm.dask"
    assert store.get_run(one["run_id"]).data.tags["fit_engine"] == "lightgbm"
