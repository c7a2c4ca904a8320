"""The online store: materialised state, /events updates, request histories and restarts all give
the batch pipeline's features (default settings: no history window cuts lifetime features)."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from features.online import online_values
from features.pipeline import build_features
from features.registry import FEATURE_SET
from features.simulate import simulate
from serving.events import ingest
from serving.schemas import BatchItem, EventsRequest
from serving.scoring import FeatureWindows, prepare_items
from serving.store import EventStore

WINDOWS = FeatureWindows(journey_gap_days=14, horizon_days=7)


@pytest.fixture(scope="module")
def sim():
    return simulate(n_contacts=1500, seed=11)


@pytest.fixture(scope="module")
def sample(sim) -> pl.DataFrame:
    """Late contacts of customers with several earlier contacts (long lifetime histories)."""
    contacts = sim.contacts.sort("started_at")
    nth = contacts.with_columns(pl.int_range(pl.len()).over("customer_id").alias("_n"))
    return nth.filter(pl.col("_n") >= 2).unique("customer_id", keep="last").head(25).drop("_n")


def _batch(sim, moment: str, ids: list[str]) -> dict[str, dict]:
    frame = build_features(sim.contacts, sim.orders, sim.customers, None, moment)
    return {
        row["contact_id"]: row for row in frame.filter(pl.col("contact_id").is_in(ids)).to_dicts()
    }


def _items(rows: list[dict], sim, with_history: bool) -> list[BatchItem]:
    items = []
    for row in rows:
        payload = {"contact": {k: v for k, v in row.items() if k != "dropoff_reason"}}
        if with_history:
            mine = pl.col("customer_id") == row["customer_id"]
            customer = sim.customers.filter(mine).to_dicts()
            payload["history"] = {
                "contacts": sim.contacts.filter(mine).to_dicts(),
                "orders": sim.orders.filter(mine).to_dicts(),
                "customer": customer[0] if customer else None,
            }
        items.append(BatchItem.model_validate(payload))
    return items


def _assert_rows_equal(expected: dict, got: dict, moment: str) -> None:
    for name in [f.name for f in FEATURE_SET.for_moment(moment)]:
        if isinstance(expected[name], float):
            assert got[name] == pytest.approx(expected[name], abs=1e-9), name
        else:
            assert got[name] == expected[name], name


@pytest.mark.parametrize("moment", ["arrival", "after_contact"])
def test_materialized_state_and_request_history_equal_batch(sim, sample, tmp_path, moment):
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}", history_days=120)
    counts = store.materialize(sim.contacts, sim.orders, sim.customers, batch_rows=400)
    assert counts["contacts"] == sim.contacts.height
    assert (
        counts["states"]
        == pl.concat(
            [sim.contacts["customer_id"], sim.orders["customer_id"], sim.customers["customer_id"]]
        ).n_unique()
    )
    rows = sample.to_dicts()
    expected = _batch(sim, moment, [r["contact_id"] for r in rows])
    from_store = prepare_items(_items(rows, sim, False), store, moment, None, WINDOWS)
    from_request = prepare_items(_items(rows, sim, True), store, moment, None, WINDOWS)
    assert any(item.values["contacts_lifetime"] >= 2 for item in from_store)
    for row, stored, given in zip(rows, from_store, from_request, strict=True):
        assert stored.source == "event_store" and given.source == "request"
        _assert_rows_equal(expected[row["contact_id"]], stored.values, moment)
        assert stored.values == given.values
    store.close()


def test_state_survives_a_restart_and_events_update_it(sim, sample, tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    row = sample.row(0, named=True)
    mine = pl.col("customer_id") == row["customer_id"]
    history = sim.contacts.filter(mine & (pl.col("contact_id") != row["contact_id"]))
    first = EventStore(url, history_days=120)
    posted = ingest(
        first,
        EventsRequest.model_validate(
            {
                "contacts": [_jsonable(r) for r in history.to_dicts()],
                "orders": [_jsonable(r) for r in sim.orders.filter(mine).to_dicts()],
            }
        ),
    )
    assert posted.rejected == [] and posted.accepted["contacts"] == history.height
    before = online_values(
        first.state(row["customer_id"]), row, "after_contact", journey_gap_days=14, horizon_days=7
    )
    first.close()
    second = EventStore(url, history_days=120)  # a new process opening the same file
    after = online_values(
        second.state(row["customer_id"]), row, "after_contact", journey_gap_days=14, horizon_days=7
    )
    assert after == before
    assert (
        after["contacts_lifetime"]
        == history.filter(pl.col("started_at") < row["started_at"]).height
    )
    # A new contact just before the scored one is in the state as soon as /events answers.
    earlier = history.row(0, named=True) | {
        "contact_id": "c-new",
        "started_at": row["started_at"] - timedelta(hours=1),
    }
    ingest(second, EventsRequest.model_validate({"contacts": [_jsonable(earlier)]}))
    updated = online_values(
        second.state(row["customer_id"]), row, "after_contact", journey_gap_days=14, horizon_days=7
    )
    assert updated["contacts_lifetime"] == after["contacts_lifetime"] + 1
    assert updated["contacts_1d"] == after["contacts_1d"] + 1
    second.close()


def _jsonable(row: dict) -> dict:
    return {
        k: (v.isoformat() if hasattr(v, "isoformat") else v)
        for k, v in row.items()
        if k != "dropoff_reason" or v is not None
    }
