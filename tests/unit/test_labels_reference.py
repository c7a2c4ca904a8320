"""Labels agree with a plain, loop-by-loop reading of the definitions on random histories, and with
themselves when the data is processed in customer partitions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from features.labels import attribute_orders, journeys_from_labels, label_contacts
from features.schema import UTC_TIME

T0 = datetime(2026, 1, 5, tzinfo=UTC)
H = timedelta(days=7)
G = timedelta(days=14)


def random_history(
    seed: int, customers: int = 30, grid_hours: int = 6
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Contacts and orders on a coarse time grid, so exact ties and boundaries happen often."""
    rng = random.Random(seed)
    contacts, orders = [], []
    for customer_number in range(customers):
        customer = f"u{customer_number:03d}"
        for _ in range(rng.randint(0, 8)):
            contacts.append(
                (
                    f"c{len(contacts):04d}",
                    customer,
                    T0 + timedelta(hours=grid_hours * rng.randint(0, 1440 // grid_hours)),
                )
            )
        for _ in range(rng.randint(0, 3)):
            orders.append(
                (
                    f"o{len(orders):04d}",
                    customer,
                    T0 + timedelta(hours=grid_hours * rng.randint(0, 1440 // grid_hours)),
                )
            )
    contact_frame = pl.DataFrame(
        contacts,
        schema={"contact_id": pl.String, "customer_id": pl.String, "started_at": UTC_TIME},
        orient="row",
    )
    order_frame = pl.DataFrame(
        orders,
        schema={"order_id": pl.String, "customer_id": pl.String, "ordered_at": UTC_TIME},
        orient="row",
    )
    return contact_frame, order_frame


def reference_labels(
    contacts: pl.DataFrame, orders: pl.DataFrame, observed_until: datetime
) -> dict[str, dict]:
    """The definitions of docs/labels.md, one contact and one order at a time."""
    result: dict[str, dict] = {}
    for customer in contacts["customer_id"].unique().to_list():
        mine = sorted(
            (row["started_at"], row["contact_id"])
            for row in contacts.filter(customer_id=customer).iter_rows(named=True)
        )
        order_times = sorted(orders.filter(customer_id=customer)["ordered_at"].to_list())
        # Each order belongs to the latest contact at or before it (last in sort order), if within H.
        attributed = {contact_id: [] for _, contact_id in mine}
        for ordered_at in order_times:
            before = [(start, cid) for start, cid in mine if start <= ordered_at]
            if before and ordered_at - before[-1][0] <= H:
                attributed[before[-1][1]].append(ordered_at)
        journey_number, journey_members, previous_start, previous_ended = 0, {}, None, False
        for start, contact_id in mine:
            if previous_start is None or start - previous_start >= G or previous_ended:
                journey_number += 1
            journey_members.setdefault(journey_number, []).append(contact_id)
            window = [t for t in order_times if start <= t <= start + H]
            # The journey ends here if this contact is the latest before an order within H.
            previous_ended = bool(attributed[contact_id])
            result[contact_id] = {
                "converted": bool(window),
                "order_at": window[0] if window else None,
                "orders_attributed": len(attributed[contact_id]),
                "journey_number": journey_number,
                "journey_order_at": min(attributed[contact_id]) if attributed[contact_id] else None,
                "started_at": start,
            }
            previous_start = start
        for number, members in journey_members.items():
            order_at = result[members[-1]]["journey_order_at"]
            last_start = result[members[-1]]["started_at"]
            is_last_journey = number == journey_number
            for position, contact_id in enumerate(members, start=1):
                row = result[contact_id]
                row["journey_order_at"] = order_at
                row["journey_contact_number"] = position
                row["contacts_to_order"] = len(members) - position + 1 if order_at else None
                row["journey_open"] = (
                    order_at is None and is_last_journey and last_start + max(G, H) > observed_until
                )
    return result


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("grid_hours", [6, 24])
def test_labels_match_the_reference_reading(seed, grid_hours):
    contacts, orders = random_history(seed, grid_hours=grid_hours)
    observed_until = T0 + timedelta(days=55)
    labeled = label_contacts(contacts, orders, 7, 14, observed_until=observed_until)
    expected = reference_labels(contacts, orders, observed_until)
    assert labeled.height == contacts.height
    for row in labeled.iter_rows(named=True):
        want = expected[row["contact_id"]]
        for column in (
            "converted",
            "order_at",
            "orders_attributed",
            "journey_number",
            "journey_order_at",
            "journey_contact_number",
            "contacts_to_order",
            "journey_open",
        ):
            assert row[column] == want[column], (row["contact_id"], column)


@pytest.mark.parametrize("seed", range(4))
def test_every_order_is_attributed_once_and_consistently(seed):
    contacts, orders = random_history(seed)
    labeled = label_contacts(contacts, orders, 7, 14)
    attributed = attribute_orders(contacts, orders, 7)
    per_contact = (
        attributed.drop_nulls("attributed_contact_id").group_by("attributed_contact_id").len()
    )
    counts = dict(zip(per_contact["attributed_contact_id"], per_contact["len"], strict=True))
    assert {cid: counts.get(cid, 0) for cid in labeled["contact_id"]} == dict(
        zip(labeled["contact_id"], labeled["orders_attributed"], strict=True)
    )
    # Invariants that tie the columns together.
    assert labeled.filter(pl.col("converted") & ~pl.col("journey_converted")).is_empty()
    assert labeled.filter(
        pl.col("converted") & (pl.col("order_at") != pl.col("journey_order_at"))
    ).is_empty()
    assert labeled.filter(pl.col("journey_converted") & pl.col("journey_open")).is_empty()
    assert (labeled["contacts_to_order"].is_null() == ~labeled["journey_converted"]).all()


def test_labelling_customer_partitions_gives_the_same_result():
    contacts, orders = random_history(seed=99, customers=40)
    end = T0 + timedelta(days=60)
    whole = label_contacts(contacts, orders, 7, 14, observed_until=end)
    bucket = pl.col("customer_id").hash(seed=0) % 3
    parts = [
        label_contacts(
            contacts.filter(bucket == b), orders.filter(bucket == b), 7, 14, observed_until=end
        )
        for b in range(3)
    ]
    stitched = pl.concat(parts).sort("customer_id", "started_at", "contact_id")
    assert stitched.equals(whole)


def test_journey_table_agrees_with_contact_labels():
    contacts, orders = random_history(seed=3)
    labeled = label_contacts(contacts, orders, 7, 14)
    table = journeys_from_labels(labeled)
    assert table["journey_id"].n_unique() == labeled["journey_id"].n_unique() == table.height
    assert table["contacts"].sum() == labeled.height
    converted = table.filter("converted")
    assert (converted["contacts_to_order"] == converted["contacts"]).all()
    assert (converted["time_to_order_hours"] >= 0).all()
    assert (
        table.filter(~pl.col("converted"))["contacts_to_order"].null_count()
        == table.filter(~pl.col("converted")).height
    )
