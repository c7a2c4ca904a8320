"""`cto summary` run in-process on tiny CSV and Parquet directories with known KPIs."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from cto.cli import main
from features.schema import CONTACTS, ORDERS

MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

# The KPI example of docs/labels.md: (contact_id, customer_id, day, channel, intent).
CONTACT_ROWS = [
    ("a1", "A", 0, "phone", "pricing"),
    ("a2", "A", 2, "chat", "pricing"),
    ("b1", "B", 1, "phone", "delivery"),
    ("c1", "C", 8, "chat", "pricing"),
    ("d1", "D", 8, "phone", "delivery"),
]
ORDER_ROWS = [("oA", "A", 3), ("oC1", "C", 9), ("oC2", "C", 10), ("oD", "D", 20), ("oE", "E", 4)]


def tiny_tables() -> tuple[pl.DataFrame, pl.DataFrame]:
    contacts = pl.DataFrame(
        {
            "contact_id": [row[0] for row in CONTACT_ROWS],
            "customer_id": [row[1] for row in CONTACT_ROWS],
            "started_at": [MONDAY + timedelta(days=row[2]) for row in CONTACT_ROWS],
            "channel": [row[3] for row in CONTACT_ROWS],
            "direction": "inbound",
            "intent": [row[4] for row in CONTACT_ROWS],
            "handled_by": "agent",
            "agent_id": "a-001",
            "wait_seconds": 30.0,
            "handle_seconds": 200.0,
            "transfers": 0,
            "abandoned": False,
            "resolved": True,
            "callback_offered": False,
            "follow_up_sent": False,
            "dropoff_reason": [None, None, "price", None, None],
        }
    ).cast(CONTACTS.polars_schema)
    orders = pl.DataFrame(
        {
            "order_id": [row[0] for row in ORDER_ROWS],
            "customer_id": [row[1] for row in ORDER_ROWS],
            "ordered_at": [MONDAY + timedelta(days=row[2]) for row in ORDER_ROWS],
            "amount": 10.0,
            "contact_id": None,
        }
    ).cast(ORDERS.polars_schema)
    return contacts, orders


@pytest.fixture(params=["csv", "parquet"])
def data_dir(request, tmp_path) -> Path:
    contacts, orders = tiny_tables()
    for name, frame in (("contacts", contacts), ("orders", orders)):
        path = tmp_path / f"{name}.{request.param}"
        frame.write_csv(path) if request.param == "csv" else frame.write_parquet(path)
    return tmp_path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["summary", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_summary_prints_overall_then_groups(data_dir, capsys):
    code, out, _ = run_cli(capsys, str(data_dir), "--by", "channel", "--period", "1w")
    assert code == 0
    lines = out.splitlines()
    assert "5 contacts from 2026-03-02 to 2026-03-10, 5 orders" in lines[0]
    overall = lines.index("overall")
    heading = lines[overall + 1].split()
    assert heading[:4] == ["contacts", "converted", "orders", "contact->order"]
    # 5 contacts, 3 converted, 3 attributed orders, 60%, 1.67 contacts per order, median 24 h.
    assert lines[overall + 3].split() == ["5", "3", "3", "60.0%", "1.67", "24.0"]
    assert "(unattributed): 2 (40.0%)" in out
    assert "journeys: 4; ended in an order 2 (50.0%)" in out
    grouped = lines.index("by channel per 1w")
    rows = [line.split() for line in lines[grouped + 3 :]]
    assert rows == [
        ["2026-03-02", "phone", "2", "1", "0", "50.0%", "-", "72.0"],
        ["2026-03-02", "chat", "1", "1", "1", "100.0%", "1.00", "24.0"],
        ["2026-03-09", "phone", "1", "0", "0", "0.0%", "-", "-"],
        ["2026-03-09", "chat", "1", "1", "2", "100.0%", "0.50", "24.0"],
    ]


def test_summary_csv_and_json_give_the_grouped_kpis(data_dir, capsys):
    code, out, _ = run_cli(capsys, str(data_dir), "--by", "channel,intent", "--format", "csv")
    assert code == 0
    table = pl.read_csv(io.StringIO(out))
    assert table.columns[:2] == ["channel", "intent"]
    assert table["contacts"].sum() == 5
    assert table["orders"].sum() == 3
    phone_delivery = table.filter(channel="phone", intent="delivery").row(0, named=True)
    assert phone_delivery["contacts"] == 2
    assert phone_delivery["converted_contacts"] == 0

    code, out, _ = run_cli(capsys, str(data_dir), "--format", "json")
    assert code == 0
    (overall,) = json.loads(out)
    assert overall["contacts"] == 5
    assert overall["contact_to_order_ratio"] == pytest.approx(0.6)


def test_summary_horizon_option_changes_the_labels(data_dir, capsys):
    # With H = 14 days, d1's order 12 days later converts it and is attributed to it.
    code, out, _ = run_cli(capsys, str(data_dir), "--horizon-days", "14", "--format", "json")
    assert code == 0
    (overall,) = json.loads(out)
    assert overall["converted_contacts"] == 4
    assert overall["orders"] == 4


def test_summary_errors_are_one_clear_line(data_dir, capsys, tmp_path):
    code, _, err = run_cli(capsys, str(data_dir), "--by", "region")
    assert code == 2
    assert "--by region: not a contacts column" in err
    code, _, err = run_cli(capsys, str(data_dir), "--period", "weekly")
    assert code == 2
    assert "period must be" in err
    code, _, err = run_cli(capsys, str(tmp_path / "nowhere"))
    assert code == 2
    assert "no such directory" in err


def test_summary_warns_about_rejected_rows_and_uses_the_rest(tmp_path, capsys):
    contacts, orders = tiny_tables()
    broken = contacts.vstack(contacts.head(1))  # a second row with contact_id a1
    broken.write_csv(tmp_path / "contacts.csv")
    orders.write_csv(tmp_path / "orders.csv")
    code, out, err = run_cli(capsys, str(tmp_path), "--format", "json")
    assert code == 0
    assert "warning: 1 row(s) failed the data contract" in err
    (overall,) = json.loads(out)
    assert overall["contacts"] == 5  # the first row with an id is kept, the later copy rejected
