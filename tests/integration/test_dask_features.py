"""`cto features` on a Dask cluster (LocalCluster, 2 worker processes) gives exactly the
single-machine features and rate tables."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cto.cli import main
from features.errors import CTOError
from features.labels import label_contacts
from features.pipeline import build_features
from features.rates import RateTables, compute_rates
from features.simulate import simulate

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
