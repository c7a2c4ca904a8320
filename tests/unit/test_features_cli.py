"""`cto features`: one file, both moments into a directory, partitions, and clear errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from cto.cli import main
from features.registry import FEATURE_SET, feature_names
from features.schema import CONTACTS, ORDERS


@pytest.fixture()
def data_dir(tmp_path):
    start = datetime(2026, 3, 2, 9, tzinfo=UTC)
    rows = []
    for i in range(60):
        rows.append(
            {
                "contact_id": f"c-{i:03d}",
                "customer_id": f"u-{i % 9}",
                "started_at": start + timedelta(hours=7 * i),
                "channel": ["phone", "email", "chat"][i % 3],
                "direction": "inbound",
                "intent": "pricing",
                "handled_by": "agent",
                "agent_id": f"a-{i % 4}",
                "wait_seconds": float(10 * i),
                "handle_seconds": 100.0,
                "transfers": i % 2,
                "abandoned": False,
                "resolved": i % 3 == 0,
                "callback_offered": False,
                "follow_up_sent": True,
                "dropoff_reason": None,
            }
        )
    contacts = pl.DataFrame(rows, schema=CONTACTS.polars_schema)
    orders = pl.DataFrame(
        [
            {
                "order_id": f"o-{i}",
                "customer_id": f"u-{i % 9}",
                "ordered_at": start + timedelta(hours=7 * i + 30),
                "amount": 10.0 * i,
                "contact_id": None,
            }
            for i in range(0, 60, 7)
        ],
        schema=ORDERS.polars_schema,
    )
    directory = tmp_path / "in"
    directory.mkdir()
    contacts.write_parquet(directory / "contacts.parquet")
    orders.write_parquet(directory / "orders.parquet")
    return directory


def test_single_file(data_dir, tmp_path):
    out = tmp_path / "arrival.parquet"
    assert main(["features", str(data_dir), "--out", str(out), "--moment", "arrival"]) == 0
    frame = pl.read_parquet(out)
    assert frame.columns == ["contact_id", "customer_id", "started_at", *feature_names("arrival")]
    assert frame.height == 60


def test_both_moments_and_partitions_agree(data_dir, tmp_path, capsys):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["features", str(data_dir), "--out", str(whole)]) == 0
    assert main(["features", str(data_dir), "--out", str(parts), "--partitions", "3"]) == 0
    for moment in ("arrival", "after_contact"):
        a = pl.read_parquet(whole / f"features_{moment}.parquet").sort("contact_id")
        b = pl.read_parquet(parts / moment).sort("contact_id")
        assert a.equals(b), moment
    # --partitions builds its rate tables by the time-sharded step: the one-process job's files.
    from features.rates import RateTables

    one, partitioned = RateTables.read(whole / "rates"), RateTables.read(parts / "rates")
    assert partitioned.global_rate.height > 0
    assert partitioned.global_rate.equals(one.global_rate)
    for name, table in one.tables.items():
        assert partitioned.tables[name].equals(table), name
    described = json.loads((whole / "feature_set.json").read_text())
    assert described["digest"] == FEATURE_SET.digest
    assert "partition 3/3" in capsys.readouterr().out


def test_errors_name_the_problem(data_dir, tmp_path, capsys):
    assert main(["features", str(data_dir), "--out", str(tmp_path / "x.parquet")]) == 2
    assert "one moment" in capsys.readouterr().err
    assert main(["features", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "not a directory" in capsys.readouterr().err
