"""KPIs on a hand-made history with known answers (the KPI example of docs/labels.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from features.errors import CTOError
from features.kpis import KPI_COLUMNS, kpi_table, unattributed_orders
from features.labels import label_contacts
from features.schema import UTC_TIME, Channel

MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(days: float) -> datetime:
    return MONDAY + timedelta(days=days)


CONTACTS = pl.DataFrame(
    [
        ("a1", "A", at(0), "phone"),
        ("a2", "A", at(2), "chat"),
        ("b1", "B", at(1), "phone"),
        ("c1", "C", at(8), "chat"),
        ("d1", "D", at(8), "phone"),
    ],
    schema={
        "contact_id": pl.String,
        "customer_id": pl.String,
        "started_at": UTC_TIME,
        "channel": Channel,
    },
    orient="row",
)
ORDERS = pl.DataFrame(
    [
        ("oA", "A", at(3)),  # a1 and a2 converted; attributed to a2 (chat, week 1)
        ("oC1", "C", at(9)),  # c1 converted; attributed to c1 (chat, week 2)
        ("oC2", "C", at(10)),  # a repeat order, also attributed to c1
        ("oD", "D", at(20)),  # 12 days after d1: unattributed
        ("oE", "E", at(4)),  # customer E never contacted us: unattributed
    ],
    schema={"order_id": pl.String, "customer_id": pl.String, "ordered_at": UTC_TIME},
    orient="row",
)


@pytest.fixture(scope="module")
def labeled() -> pl.DataFrame:
    return label_contacts(CONTACTS, ORDERS, horizon_days=7, journey_gap_days=14)


def test_overall_kpis(labeled):
    overall = kpi_table(labeled).row(0, named=True)
    assert overall == {
        "contacts": 5,
        "converted_contacts": 3,
        "orders": 3,
        "contact_to_order_ratio": pytest.approx(3 / 5),
        "contacts_per_order": pytest.approx(5 / 3),
        # a1 -> 72 h, a2 -> 24 h, c1 -> 24 h
        "median_time_to_order_hours": 24.0,
    }
    assert unattributed_orders(labeled, ORDERS) == 2


def test_kpis_by_channel(labeled):
    table = kpi_table(labeled, by=["channel"])
    assert table.columns == ["channel", *KPI_COLUMNS]
    rows = {row["channel"]: row for row in table.iter_rows(named=True)}
    assert set(rows) == {"phone", "chat"}
    assert rows["phone"]["contacts"] == 3
    assert rows["phone"]["converted_contacts"] == 1
    assert rows["phone"]["contact_to_order_ratio"] == pytest.approx(1 / 3)
    # The only phone contact that converted handed the order over to the chat that followed.
    assert rows["phone"]["orders"] == 0
    assert rows["phone"]["contacts_per_order"] is None
    assert rows["phone"]["median_time_to_order_hours"] == 72.0
    assert rows["chat"]["contacts"] == 2
    assert rows["chat"]["orders"] == 3
    assert rows["chat"]["contacts_per_order"] == pytest.approx(2 / 3)
    # Groups partition the contacts and the attributed orders.
    assert table["contacts"].sum() == 5
    assert table["orders"].sum() == 3


def test_kpis_by_week(labeled):
    table = kpi_table(labeled, period="1w")
    assert table.columns == ["period_start", *KPI_COLUMNS]
    assert table["period_start"].to_list() == [
        datetime(2026, 3, 2, tzinfo=UTC),
        datetime(2026, 3, 9, tzinfo=UTC),
    ]
    assert table["contacts"].to_list() == [3, 2]
    assert table["converted_contacts"].to_list() == [2, 1]
    assert table["orders"].to_list() == [1, 2]
    assert table["contacts_per_order"].to_list() == pytest.approx([3.0, 1.0])
    assert table["median_time_to_order_hours"].to_list() == [48.0, 24.0]


def test_kpis_by_channel_and_week(labeled):
    table = kpi_table(labeled, by=["channel"], period="1w")
    assert table.columns == ["period_start", "channel", *KPI_COLUMNS]
    cells = {
        (row["period_start"].day, row["channel"]): row["orders"]
        for row in table.iter_rows(named=True)
    }
    assert cells == {(2, "phone"): 0, (2, "chat"): 1, (9, "phone"): 0, (9, "chat"): 2}
    monthly = kpi_table(labeled, by="channel", period="1mo")
    assert monthly["period_start"].unique().to_list() == [datetime(2026, 3, 1, tzinfo=UTC)]
    assert monthly["contacts"].sum() == 5


def test_kpi_table_rejects_unknown_dimensions_and_periods(labeled):
    with pytest.raises(CTOError, match="cannot group KPIs by region"):
        kpi_table(labeled, by=["region"])
    with pytest.raises(CTOError, match="period must be"):
        kpi_table(labeled, period="weekly")
    with pytest.raises(CTOError, match="needs labelled contacts"):
        kpi_table(CONTACTS)


def test_empty_input_gives_zero_contacts():
    empty = label_contacts(CONTACTS.clear(), ORDERS.clear(), 7, 14)
    overall = kpi_table(empty).row(0, named=True)
    assert overall["contacts"] == 0
    assert overall["contacts_per_order"] is None
    assert overall["contact_to_order_ratio"] is None
    assert kpi_table(empty, by=["channel"], period="1w").is_empty()
