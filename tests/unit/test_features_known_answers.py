"""Each feature on a hand-made history whose answers were worked out by hand (times in UTC).

Customer u1 (customers.first_seen_at 2026-02-01 00:00, segment small_business):
    c1  Mar 1 09:00  phone  agent a1  wait 60   handle 300  1 transfer   unresolved
    c2  Mar 2 09:00  chat   bot       wait 30   handle 60   abandoned    unresolved
    c3  Mar 3 09:00  chat   agent a2  wait 120  handle 200  2 transfers  resolved
    o1  Mar 4 09:00  order 100.0      (same instant as c4/c5: their outcome, not their history)
    c4  Mar 4 09:00  email  agent a1  reply after 2 days (known Mar 6 09:01:40)  unresolved
    c5  Mar 4 09:00  phone  agent a1  wait 10   handle 50   resolved (tied with c4)
    c6  Mar 5 12:00  phone  agent a2  wait 20   handle 100  resolved (o1 ended the journey)
    c7  Apr 20 09:00 web_form                                         (46 days later: new journey)
Customer u2 (no customers row): o2 Feb 20 00:00 (50.0), then c8 Mar 1 10:00 chat.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from features.pipeline import build_features
from features.schema import CONTACTS, CUSTOMERS, ORDERS


def at(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


_FIELDS = (
    "contact_id",
    "customer_id",
    "started_at",
    "channel",
    "handled_by",
    "agent_id",
    "wait_seconds",
    "handle_seconds",
    "transfers",
    "abandoned",
    "resolved",
)


def _contact(*values) -> dict:
    fixed = {"direction": "inbound", "intent": "pricing", "callback_offered": False}
    return (
        fixed
        | {"follow_up_sent": True, "dropoff_reason": None}
        | dict(zip(_FIELDS, values, strict=True))
    )


CONTACT_ROWS = [
    _contact("c1", "u1", at(3, 1, 9), "phone", "agent", "a1", 60.0, 300.0, 1, False, False),
    _contact("c2", "u1", at(3, 2, 9), "chat", "bot", None, 30.0, 60.0, 0, True, False),
    _contact("c3", "u1", at(3, 3, 9), "chat", "agent", "a2", 120.0, 200.0, 2, False, True),
    _contact("c4", "u1", at(3, 4, 9), "email", "agent", "a1", 172_800.0, 100.0, 0, False, False),
    _contact("c5", "u1", at(3, 4, 9), "phone", "agent", "a1", 10.0, 50.0, 0, False, True),
    _contact("c6", "u1", at(3, 5, 12), "phone", "agent", "a2", 20.0, 100.0, 0, False, True),
    _contact("c7", "u1", at(4, 20, 9), "web_form", "agent", "a2", 3_600.0, 100.0, 0, False, True),
    _contact("c8", "u2", at(3, 1, 10), "chat", "agent", "a1", 5.0, 100.0, 0, False, True),
]


@pytest.fixture(scope="module")
def features() -> dict[str, dict]:
    contacts = pl.DataFrame(CONTACT_ROWS, schema=CONTACTS.polars_schema)
    orders = pl.DataFrame(
        [
            {
                "order_id": "o1",
                "customer_id": "u1",
                "ordered_at": at(3, 4, 9),
                "amount": 100.0,
                "contact_id": None,
            },
            {
                "order_id": "o2",
                "customer_id": "u2",
                "ordered_at": at(2, 20),
                "amount": 50.0,
                "contact_id": None,
            },
        ],
        schema=ORDERS.polars_schema,
    )
    customers = pl.DataFrame(
        [
            {
                "customer_id": "u1",
                "segment": "small_business",
                "region": "north",
                "first_seen_at": at(2, 1),
            }
        ],
        schema=CUSTOMERS.polars_schema,
    )
    frame = build_features(
        contacts, orders, customers, moment="after_contact", journey_gap_days=14, horizon_days=7
    )
    return {row["contact_id"]: row for row in frame.iter_rows(named=True)}


def test_first_contact(features):
    c1 = features["c1"]
    assert c1["contacts_lifetime"] == 0
    assert c1["days_since_last_contact"] is None
    assert c1["days_since_last_order"] is None
    assert c1["prev_unresolved"] is None
    assert c1["wait_mean_90d"] is None and c1["wait_max_90d"] is None
    assert c1["contacts_90d"] == 0 and c1["channels_used_90d"] == 0
    assert c1["journey_contacts"] == 0 and c1["journey_age_hours"] == 0.0
    assert c1["channel_switch"] is None
    assert c1["tenure_days"] == pytest.approx(28 + 9 / 24)
    assert c1["segment"] == "small_business"
    assert (c1["hour_of_day"], c1["day_of_week"]) == (9, 7)  # Sunday


def test_window_and_switches(features):
    c3 = features["c3"]
    assert c3["contacts_1d"] == 1 and c3["contacts_7d"] == 2
    assert c3["channels_used_1d"] == 1 and c3["channels_used_7d"] == 2
    assert c3["channel_switches_7d"] == 1  # c2 switched phone -> chat
    assert c3["wait_mean_7d"] == pytest.approx(45.0) and c3["wait_max_7d"] == 60.0
    assert c3["abandons_7d"] == 1 and c3["transfers_7d"] == 1
    assert c3["unresolved_7d"] == 2 and c3["bot_only_7d"] == 1
    assert c3["prev_unresolved"] == 1
    assert c3["channel_switch"] == 0 and c3["journey_contacts"] == 2
    assert c3["journey_age_hours"] == pytest.approx(48.0)


def test_same_instant_excludes_ties_and_orders(features):
    for cid in ("c4", "c5"):
        row = features[cid]
        assert row["contacts_lifetime"] == 3  # c4 and c5 do not see each other
        assert row["orders_lifetime"] == 0 and row["days_since_last_order"] is None
        assert row["journey_contacts"] == 3
        assert row["journey_age_hours"] == pytest.approx(72.0)
        assert row["channel_switch"] == 1  # both differ from c3 (chat)
        assert row["days_since_last_contact"] == pytest.approx(1.0)


def test_after_an_order(features):
    c6 = features["c6"]
    assert c6["contacts_lifetime"] == 5 and c6["contacts_7d"] == 5 and c6["contacts_1d"] == 0
    assert c6["channels_used_7d"] == 3  # phone, chat, email
    assert c6["channel_switches_7d"] == 3  # c2, c4, c5 (c5's previous contact is c3)
    # c4's reply only comes on Mar 6: its wait and unresolved outcome are not known yet.
    assert c6["wait_mean_7d"] == pytest.approx((60 + 30 + 120 + 10) / 4)
    assert c6["wait_max_7d"] == 120.0
    assert c6["unresolved_7d"] == 2 and c6["transfers_7d"] == 3 and c6["bot_only_7d"] == 1
    assert c6["wait_max_1d"] is None  # c5 ended Mar 4 09:01, outside [Mar 4 12:00, Mar 5 12:00)
    assert c6["prev_unresolved"] == 0  # latest known outcome: c5, resolved
    assert c6["orders_lifetime"] == 1 and c6["spend_lifetime"] == 100.0
    assert c6["orders_7d"] == 1 and c6["spend_7d"] == 100.0
    assert c6["days_since_last_order"] == pytest.approx(27 / 24)
    assert c6["days_since_last_contact"] == pytest.approx(27 / 24)
    # o1 came within 7 days of c5 and before c6: the journey ended, c6 starts a new one.
    assert c6["journey_contacts"] == 0 and c6["channel_switch"] is None


def test_long_gap(features):
    c7 = features["c7"]
    assert c7["contacts_30d"] == 0 and c7["contacts_90d"] == 6 and c7["contacts_lifetime"] == 6
    assert c7["unresolved_90d"] == 3  # c1, c2 and (now known) c4
    assert c7["wait_max_90d"] == 172_800.0
    assert c7["orders_30d"] == 0 and c7["orders_90d"] == 1
    assert c7["days_since_last_order"] == pytest.approx(47.0)
    assert c7["journey_contacts"] == 0
    assert c7["channels_used_90d"] == 3


def test_customer_without_customers_row(features):
    c8 = features["c8"]
    assert c8["segment"] is None
    assert c8["tenure_days"] == pytest.approx(9 + 10 / 24)  # first seen at its order
    assert c8["orders_lifetime"] == 1 and c8["spend_lifetime"] == 50.0
    assert c8["orders_7d"] == 0 and c8["orders_30d"] == 1


def test_after_contact_fields(features):
    c2 = features["c2"]
    assert c2["wait_seconds"] == 30.0 and c2["handle_seconds"] == 60.0
    assert (c2["abandoned"], c2["resolved"], c2["follow_up_sent"]) == (1, 0, 1)
    assert c2["handled_by"] == "bot"
    assert c2["agent_conversion_rate"] is None  # no rate tables given


def test_unknown_categories_become_other():
    row = dict(CONTACT_ROWS[0], channel="carrier_pigeon", intent="gossip")
    contacts = pl.DataFrame([row]).with_columns(
        pl.col("started_at").cast(CONTACTS.column("started_at").dtype)
    )
    frame = build_features(contacts, pl.DataFrame(schema=ORDERS.polars_schema), moment="arrival")
    assert frame["channel"].to_list() == ["other"] and frame["intent"].to_list() == ["other"]
    assert frame.schema["channel"] == CONTACTS.column("channel").dtype
