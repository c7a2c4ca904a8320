"""The service's batched feature path answers what each contact gets alone."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.simulate import simulate
from serving.scoring import (
    FeatureWindows,
    PreparedItem,
    customer_rounds,
    feature_rows,
)
from serving.store import CustomerHistory

WINDOWS = FeatureWindows(journey_gap_days=14, horizon_days=7)


@pytest.fixture(scope="module")
def items() -> list[PreparedItem]:
    sim = simulate(n_contacts=600, seed=11)
    contacts, orders, customers = sim.contacts, sim.orders, sim.customers
    repeat = (
        contacts.group_by("customer_id").len().filter(pl.col("len") >= 3)["customer_id"].head(3)
    )
    chosen = pl.concat(
        [
            contacts.filter(pl.col("customer_id").is_in(repeat.implode())).head(6),
            contacts.filter(~pl.col("customer_id").is_in(repeat.implode())).tail(5),
        ]
    ).sample(fraction=1.0, shuffle=True, seed=2)
    prepared = []
    for row in chosen.to_dicts():
        mine = pl.col("customer_id") == row["customer_id"]
        prepared.append(
            PreparedItem(
                row,
                CustomerHistory(
                    # Other customers' rows in the history must not leak into this contact.
                    contacts.filter(pl.col("started_at") < row["started_at"]).head(400),
                    orders.filter(mine & (pl.col("ordered_at") < row["started_at"])),
                    customers.filter(mine),
                ),
                "request",
            )
        )
    return prepared


def test_rounds_never_hold_a_customer_twice():
    rounds = customer_rounds(["a", "b", "a", "c", "a", "b"])
    assert rounds == [[0, 1, 3], [2, 5], [4]]


@pytest.mark.parametrize("moment", ["arrival", "after_contact"])
def test_batch_rows_equal_each_contact_scored_alone(items, moment):
    together = feature_rows(items, moment, None, WINDOWS)
    assert together.height == len(items)
    assert together["contact_id"].to_list() == [item.contact["contact_id"] for item in items]
    alone = pl.concat(
        [feature_rows([item], moment, None, WINDOWS) for item in items], how="vertical_relaxed"
    )
    assert_frame_equal(together, alone)


def test_history_contacts_answer_equals_contacts_lifetime(items):
    """/score answers `history_contacts` from the contacts_lifetime feature: the two must agree."""
    from serving.scoring import _history_counts

    counts = _history_counts(items)
    assert any(count > 0 for count in counts)  # vacuous if every history were empty
    features = feature_rows(items, "arrival", None, WINDOWS)
    assert features["contacts_lifetime"].to_list() == counts
