"""Labels and journeys on hand-made histories with known answers (the worked examples of docs/labels.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from features.errors import CTOError
from features.labels import (
    LABEL_COLUMNS,
    attribute_orders,
    journeys,
    journeys_from_labels,
    label_contacts,
)
from features.schema import UTC_TIME, DropoffReason

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(days: float = 0, hours: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours, seconds=seconds)


def make_contacts(rows: list[tuple]) -> pl.DataFrame:
    """rows: (contact_id, customer_id, started_at[, dropoff_reason])."""
    padded = [row if len(row) == 4 else (*row, None) for row in rows]
    return pl.DataFrame(
        padded,
        schema={
            "contact_id": pl.String,
            "customer_id": pl.String,
            "started_at": UTC_TIME,
            "dropoff_reason": DropoffReason,
        },
        orient="row",
    )


def make_orders(rows: list[tuple]) -> pl.DataFrame:
    """rows: (order_id, customer_id, ordered_at)."""
    return pl.DataFrame(
        rows,
        schema={"order_id": pl.String, "customer_id": pl.String, "ordered_at": UTC_TIME},
        orient="row",
    )


def by_contact(labeled: pl.DataFrame, column: str) -> dict[str, object]:
    return dict(zip(labeled["contact_id"], labeled[column], strict=True))


def test_order_inside_horizon_converts_and_outside_does_not():
    contacts = make_contacts([("a1", "A", at(0)), ("b1", "B", at(0))])
    orders = make_orders([("o1", "A", at(3)), ("o2", "B", at(8))])
    labeled = label_contacts(contacts, orders, horizon_days=7, journey_gap_days=14)
    assert by_contact(labeled, "converted") == {"a1": True, "b1": False}
    assert by_contact(labeled, "order_at") == {"a1": at(3), "b1": None}
    assert by_contact(labeled, "label_known_at") == {"a1": at(7), "b1": at(7)}


@pytest.mark.parametrize(
    ("order_offset", "expected"),
    [
        (timedelta(0), True),  # at the very start of the contact: its outcome, never its history
        (timedelta(days=7), True),  # exactly H days later: inside
        (timedelta(days=7, seconds=1), False),  # one second past H: outside
        (timedelta(seconds=-1), False),  # just before the contact: history, not outcome
    ],
)
def test_horizon_boundaries(order_offset, expected):
    contacts = make_contacts([("a1", "A", at(0))])
    orders = make_orders([("o1", "A", at(0) + order_offset)])
    labeled = label_contacts(contacts, orders, horizon_days=7, journey_gap_days=14)
    assert labeled["converted"].to_list() == [expected]
    assert labeled["journey_converted"].to_list() == [expected]
    assert labeled["orders_attributed"].to_list() == [1 if expected else 0]


def test_horizon_follows_the_argument():
    contacts = make_contacts([("a1", "A", at(0))])
    orders = make_orders([("o1", "A", at(10))])
    assert (
        label_contacts(contacts, orders, horizon_days=7, journey_gap_days=14)["converted"].item()
        is False
    )
    assert (
        label_contacts(contacts, orders, horizon_days=10, journey_gap_days=14)["converted"].item()
        is True
    )


def test_interleaved_customers_do_not_see_each_others_orders():
    contacts = make_contacts(
        [("a1", "A", at(0)), ("b1", "B", at(1)), ("a2", "A", at(2)), ("b2", "B", at(3))]
    )
    orders = make_orders([("oB", "B", at(4))])
    labeled = label_contacts(contacts, orders, 7, 14)
    assert by_contact(labeled, "converted") == {"a1": False, "a2": False, "b1": True, "b2": True}
    assert by_contact(labeled, "journey_id") == {"a1": "A:1", "a2": "A:1", "b1": "B:1", "b2": "B:1"}
    assert by_contact(labeled, "contacts_to_order") == {"a1": None, "a2": None, "b1": 2, "b2": 1}


def test_gap_of_g_days_or_more_starts_a_new_journey():
    # 13.9 days apart: same journey; exactly 14 days apart: new journey.
    contacts = make_contacts(
        [("a1", "A", at(0)), ("a2", "A", at(13, hours=21.6)), ("a3", "A", at(27, hours=21.6))]
    )
    labeled = label_contacts(contacts, make_orders([]), 7, 14)
    assert by_contact(labeled, "journey_number") == {"a1": 1, "a2": 1, "a3": 2}
    assert by_contact(labeled, "journey_contact_number") == {"a1": 1, "a2": 2, "a3": 1}
    assert by_contact(labeled, "journey_contacts") == {"a1": 2, "a2": 2, "a3": 1}


def test_order_ends_a_journey_and_the_next_contact_starts_a_new_one():
    contacts = make_contacts([("a1", "A", at(0)), ("a2", "A", at(3)), ("a3", "A", at(4))])
    orders = make_orders([("o1", "A", at(2))])
    labeled = label_contacts(contacts, orders, 7, 14)
    # a2 is one day after a1, well inside the gap: only the order splits them.
    assert by_contact(labeled, "journey_id") == {"a1": "A:1", "a2": "A:2", "a3": "A:2"}
    assert by_contact(labeled, "journey_converted") == {"a1": True, "a2": False, "a3": False}
    assert by_contact(labeled, "converted") == {"a1": True, "a2": False, "a3": False}


def test_contacts_to_order_and_time_to_order():
    # The journey ends in the order although only its last contact is within H of it.
    contacts = make_contacts([("a1", "A", at(0)), ("a2", "A", at(4)), ("a3", "A", at(10))])
    orders = make_orders([("o1", "A", at(12))])
    labeled = label_contacts(contacts, orders, 7, 14)
    assert by_contact(labeled, "converted") == {"a1": False, "a2": False, "a3": True}
    assert set(labeled["journey_converted"]) == {True}
    assert by_contact(labeled, "contacts_to_order") == {"a1": 3, "a2": 2, "a3": 1}
    assert by_contact(labeled, "time_to_order_hours") == {"a1": 288.0, "a2": 192.0, "a3": 48.0}
    assert set(labeled["journey_order_at"]) == {at(12)}

    journey = journeys(contacts, orders, journey_gap_days=14, horizon_days=7).row(0, named=True)
    assert journey["contacts"] == 3
    assert journey["contacts_to_order"] == 3
    assert journey["time_to_order_hours"] == 288.0
    assert journey["ended_by"] == "order"
    assert (journey["first_contact_id"], journey["last_contact_id"]) == ("a1", "a3")


def test_an_order_later_than_h_after_the_last_contact_does_not_end_the_journey():
    # The order at day 10 is 10 days after a1: unattributed, and a2 (day 12) continues the journey.
    contacts = make_contacts([("a1", "A", at(0)), ("a2", "A", at(12))])
    orders = make_orders([("o1", "A", at(10))])
    labeled = label_contacts(contacts, orders, 7, 14)
    assert by_contact(labeled, "journey_number") == {"a1": 1, "a2": 1}
    assert set(labeled["journey_converted"]) == {False}
    assert labeled["orders_attributed"].sum() == 0
    assert attribute_orders(contacts, orders, 7)["attributed_contact_id"].to_list() == [None]


def test_open_journeys_are_censored_at_the_end_of_the_data():
    contacts = make_contacts(
        [
            ("a1", "A", at(0)),  # closed by the gap: a2 comes 20 days later
            ("a2", "A", at(20)),  # open: data ends 10 days later, before the gap closes
            ("b1", "B", at(5)),  # closed: 25 days of silence before the data ends
            ("c1", "C", at(28)),  # ends in an order: never open
        ]
    )
    orders = make_orders([("o1", "C", at(29))])
    end = at(30)
    labeled = label_contacts(contacts, orders, 7, 14, observed_until=end)
    assert by_contact(labeled, "journey_open") == {
        "a1": False,
        "a2": True,
        "b1": False,
        "c1": False,
    }
    table = journeys(contacts, orders, 14, 7, observed_until=end)
    assert dict(zip(table["journey_id"], table["ended_by"], strict=True)) == {
        "A:1": "gap",
        "A:2": "open",
        "B:1": "gap",
        "C:1": "order",
    }
    # Without an explicit end, the data ends at its latest event (the order at day 29).
    assert label_contacts(contacts, orders, 7, 14).equals(labeled)
    # Seen from much later, nothing is open any more.
    later = label_contacts(contacts, orders, 7, 14, observed_until=at(60))
    assert not later["journey_open"].any()


def test_no_orders_at_all():
    contacts = make_contacts([("a1", "A", at(0), "price"), ("a2", "A", at(1)), ("b1", "B", at(2))])
    labeled = label_contacts(contacts, make_orders([]), 7, 14)
    assert not labeled["converted"].any()
    assert labeled["order_at"].null_count() == 3
    assert labeled["contacts_to_order"].null_count() == 3
    assert labeled["orders_attributed"].sum() == 0
    assert by_contact(labeled, "dropoff_label") == {"a1": "price", "a2": None, "b1": None}


def test_orders_without_contacts_label_nothing_and_stay_unattributed():
    contacts = make_contacts([("a1", "A", at(0))])
    orders = make_orders([("oZ", "Z", at(1)), ("oA", "A", at(1))])
    labeled = label_contacts(contacts, orders, 7, 14)
    assert labeled["contact_id"].to_list() == ["a1"]
    assert labeled["orders_attributed"].to_list() == [1]
    attributed = attribute_orders(contacts, orders, 7)
    assert dict(zip(attributed["order_id"], attributed["attributed_contact_id"], strict=True)) == {
        "oA": "a1",
        "oZ": None,
    }


def test_every_order_is_attributed_to_the_latest_contact_before_it_within_h():
    contacts = make_contacts([("a1", "A", at(0)), ("a2", "A", at(3)), ("a3", "A", at(20))])
    orders = make_orders(
        [
            ("o1", "A", at(1)),  # -> a1, ends journey 1
            ("o2", "A", at(2)),  # -> a1 too (repeat order): counted, ends nothing
            ("o3", "A", at(3)),  # at the very start of a2 -> a2
            ("o4", "A", at(15)),  # 12 days after a2: unattributed
        ]
    )
    labeled = label_contacts(contacts, orders, 7, 14)
    assert by_contact(labeled, "orders_attributed") == {"a1": 2, "a2": 1, "a3": 0}
    attributed = attribute_orders(contacts, orders, 7)
    assert attributed["attributed_contact_id"].to_list() == ["a1", "a1", "a2", None]
    assert by_contact(labeled, "journey_id") == {"a1": "A:1", "a2": "A:2", "a3": "A:3"}
    assert by_contact(labeled, "order_at") == {"a1": at(1), "a2": at(3), "a3": None}


def test_dropoff_label_is_null_for_converted_contacts():
    contacts = make_contacts([("a1", "A", at(0), "price"), ("b1", "B", at(0), "long_wait")])
    orders = make_orders([("o1", "A", at(1))])
    labeled = label_contacts(contacts, orders, 7, 14)
    assert by_contact(labeled, "dropoff_label") == {"a1": None, "b1": "long_wait"}
    # The recorded reason itself is kept untouched.
    assert by_contact(labeled, "dropoff_reason") == {"a1": "price", "b1": "long_wait"}
    assert labeled.schema["dropoff_label"] == DropoffReason


def test_keeps_input_columns_accepts_lazy_frames_and_ignores_input_order():
    contacts = make_contacts(
        [("a2", "A", at(3)), ("b1", "B", at(1)), ("a1", "A", at(0))]
    ).with_columns(pl.Series("channel", ["chat", "phone", "email"]))
    orders = make_orders([("o1", "A", at(4))])
    labeled = label_contacts(contacts.lazy(), orders.lazy(), 7, 14)
    assert isinstance(labeled, pl.DataFrame)
    assert labeled.columns == [*contacts.columns, *LABEL_COLUMNS]
    assert labeled["contact_id"].to_list() == ["a1", "a2", "b1"]
    assert by_contact(labeled, "channel") == {"a1": "email", "a2": "chat", "b1": "phone"}
    reordered = label_contacts(contacts.reverse(), orders, 7, 14)
    assert reordered.equals(labeled)


def test_contacts_without_dropoff_reason_get_a_null_dropoff_label():
    contacts = make_contacts([("a1", "A", at(0))]).drop("dropoff_reason")
    labeled = label_contacts(contacts, make_orders([]), 7, 14)
    assert labeled["dropoff_label"].to_list() == [None]


def test_defaults_come_from_the_settings(monkeypatch):
    contacts = make_contacts([("a1", "A", at(0))])
    orders = make_orders([("o1", "A", at(9))])
    assert label_contacts(contacts, orders)["converted"].item() is False
    monkeypatch.setenv("CTO_HORIZON_DAYS", "10")
    assert label_contacts(contacts, orders)["converted"].item() is True


def test_missing_column_is_named():
    contacts = make_contacts([("a1", "A", at(0))]).drop("started_at")
    with pytest.raises(CTOError, match="contacts: missing column.*started_at"):
        label_contacts(contacts, make_orders([]), 7, 14)
    with pytest.raises(CTOError, match="horizon_days"):
        label_contacts(make_contacts([("a1", "A", at(0))]), make_orders([]), 0, 14)


def test_journey_table_keeps_the_last_recorded_dropoff_reason_of_its_own_journey():
    contacts = make_contacts(
        [
            ("a1", "A", at(0), "price"),
            ("a2", "A", at(2), "long_wait"),
            ("a3", "A", at(3)),
            ("a4", "A", at(30)),  # a new journey (gap) with no reason of its own
            ("b1", "B", at(0), "price"),  # converted: no drop-off reason
        ]
    )
    orders = make_orders([("o1", "B", at(1))])
    labeled = label_contacts(contacts, orders, 7, 14, observed_until=at(90))
    table = journeys_from_labels(labeled)
    assert dict(zip(table["journey_id"], table["dropoff_reason"], strict=True)) == {
        "A:1": "long_wait",
        "A:2": None,
        "B:1": None,
    }
    assert dict(zip(table["journey_id"], table["contacts"], strict=True)) == {
        "A:1": 3,
        "A:2": 1,
        "B:1": 1,
    }
    # The journey table does not depend on the row order it is given.
    assert journeys_from_labels(labeled.sample(fraction=1.0, shuffle=True, seed=1)).equals(table)
