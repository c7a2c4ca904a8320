"""The event store: round trip with contract dtypes, upsert, window, durability, ingest rejects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from features.schema import CONTACTS, ORDERS
from serving.events import ingest
from serving.schemas import EventsRequest
from serving.store import EventStore

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _contact(contact_id: str, customer_id: str, started_at: datetime, **changes) -> dict:
    row = {
        "contact_id": contact_id,
        "customer_id": customer_id,
        "started_at": started_at,
        "channel": "phone",
        "direction": "inbound",
        "intent": "pricing",
        "handled_by": "agent",
        "agent_id": "a-1",
        "wait_seconds": 95.123456,
        "handle_seconds": 300.0,
        "transfers": 1,
        "abandoned": False,
        "resolved": True,
        "callback_offered": False,
        "follow_up_sent": True,
        "dropoff_reason": None,
    }
    return row | changes


def _contacts(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=CONTACTS.polars_schema)


@pytest.fixture
def store(tmp_path) -> EventStore:
    return EventStore(f"sqlite:///{tmp_path / 'events.db'}", history_days=30)


def test_round_trip_keeps_values_and_contract_dtypes(store):
    stamp = T0 + timedelta(microseconds=123_457)
    frame = _contacts([_contact("c1", "u1", stamp, dropoff_reason="price")])
    orders = pl.DataFrame(
        [
            {
                "order_id": "o1",
                "customer_id": "u1",
                "ordered_at": T0,
                "amount": 10.5,
                "contact_id": None,
            }
        ],
        schema=ORDERS.polars_schema,
    )
    assert store.append({"contacts": frame, "orders": orders}) == {
        "contacts": 1,
        "orders": 1,
        "customers": 0,
    }
    history = store.history("u1", T0 + timedelta(days=1))
    assert history.contacts.schema == frame.schema
    assert history.contacts.equals(frame)
    assert history.orders.equals(orders)
    assert history.customer.height == 0


def test_history_is_strictly_before_the_scoring_time_and_inside_the_window(store):
    rows = [
        _contact("old", "u1", T0 - timedelta(days=31)),
        _contact("inside", "u1", T0 - timedelta(days=29)),
        _contact("now", "u1", T0),
        _contact("later", "u1", T0 + timedelta(hours=1)),
        _contact("other", "u2", T0 - timedelta(days=1)),
    ]
    store.append({"contacts": _contacts(rows)})
    history = store.history("u1", T0)
    assert history.contacts["contact_id"].to_list() == ["inside"]


def test_posting_a_contact_again_replaces_it(store):
    store.append({"contacts": _contacts([_contact("c1", "u1", T0, resolved=False)])})
    store.append({"contacts": _contacts([_contact("c1", "u1", T0, resolved=True)])})
    history = store.history("u1", T0 + timedelta(seconds=1))
    assert history.contacts["resolved"].to_list() == [True]
    assert store.counts()["contacts"] == 1


def test_acknowledged_rows_survive_a_new_process_view(tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    first = EventStore(url, history_days=30)
    first.append({"contacts": _contacts([_contact("c1", "u1", T0)])})
    first.close()
    second = EventStore(url, history_days=30)
    assert second.history("u1", T0 + timedelta(days=1)).contacts["contact_id"].to_list() == ["c1"]


def test_prune_drops_what_left_the_window(store):
    store.append(
        {
            "contacts": _contacts(
                [_contact("old", "u1", T0 - timedelta(days=40)), _contact("new", "u1", T0)]
            )
        }
    )
    assert store.prune(now=T0) == {"contacts": 1, "orders": 0}
    assert store.counts()["contacts"] == 1


def test_prune_measures_the_window_from_the_wall_clock_not_the_newest_row(store):
    """A far-future row once moved "now" to 9999 and the prune deleted every other row."""
    today = datetime.now(UTC)
    store.append(
        {
            "contacts": _contacts(
                [
                    _contact("recent", "u1", today - timedelta(days=2)),
                    _contact("future", "u2", datetime(9999, 12, 31, tzinfo=UTC)),
                ]
            )
        }
    )
    assert store.prune() == {"contacts": 0, "orders": 0}
    assert store.counts()["contacts"] == 2


def _text_row(row: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def test_ingest_rejects_future_rows_beyond_the_skew_allowance(store):
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    rows = [
        _text_row(_contact("c-ok", "u1", now + timedelta(seconds=200))),  # inside 300 s of skew
        _text_row(_contact("c-late", "u1", now + timedelta(seconds=400))),
        _text_row(_contact("c-9999", "u1", now)) | {"started_at": "9999-12-31T00:00:00Z"},
    ]
    order = {
        "order_id": "o-9999",
        "customer_id": "u1",
        "ordered_at": "9999-12-31T00:00:00Z",
        "amount": 5,
    }
    answer = ingest(
        store, EventsRequest(contacts=rows, orders=[order]), max_clock_skew_seconds=300, now=now
    )
    assert answer.accepted["contacts"] == 1 and answer.accepted["orders"] == 0
    found = {(r.table, r.row, r.field, r.rule) for r in answer.rejected}
    assert found == {
        ("contacts", 2, "started_at", "future"),
        ("contacts", 3, "started_at", "future"),
        ("orders", 1, "ordered_at", "future"),
    }


def test_ingest_rejects_times_without_an_offset_as_score_does(store):
    """/score refuses a naive time (AwareDatetime); /events must not read the same text as UTC."""
    naive = _text_row(_contact("c-naive", "u1", T0)) | {"started_at": "2026-03-01T09:00:00"}
    aware = _text_row(_contact("c-aware", "u1", T0)) | {"started_at": "2026-03-01T09:00:00+01:00"}
    answer = ingest(store, EventsRequest(contacts=[naive, aware]), now=T0 + timedelta(days=1))
    assert answer.accepted["contacts"] == 1
    assert [(r.row, r.field, r.rule) for r in answer.rejected] == [(1, "started_at", "timezone")]


def test_ingest_rejects_unknown_and_missing_columns_row_by_row(store):
    good = _text_row(_contact("c-good", "u1", T0))
    misspelt = {k: v for k, v in good.items() if k != "wait_seconds"} | {
        "contact_id": "c-misspelt",
        "wait_secs": 5,
    }
    bare = {"contact_id": "c-bare"}
    huge = good | {"customer_id": "u" * 10_000}
    answer = ingest(store, EventsRequest(contacts=[good, misspelt, bare, huge]), now=T0)
    assert answer.accepted["contacts"] == 1
    found = {(r.row, r.field, r.rule) for r in answer.rejected}
    assert (2, "wait_secs", "unknown_column") in found
    assert (3, "customer_id", "not_null") in found
    assert (4, "customer_id", "max_length") in found
    assert all("uuuu" not in r.message for r in answer.rejected)  # the value is not echoed


def test_ingest_stores_good_rows_and_returns_rejects_with_row_field_rule(store):
    good = {
        k: (v.isoformat() if isinstance(v, datetime) else v)
        for k, v in _contact("c1", "u1", T0).items()
    }
    bad_wait = good | {"contact_id": "c2", "wait_seconds": -5}
    bad_time = good | {"contact_id": "c3", "started_at": "yesterday"}
    answer = ingest(store, EventsRequest(contacts=[good, bad_wait, bad_time]))
    assert answer.accepted["contacts"] == 1
    rejects = {(r.row, r.field, r.rule) for r in answer.rejected}
    assert (2, "wait_seconds", "range") in rejects
    assert (3, "started_at", "type") in rejects
    assert store.history("u1", T0 + timedelta(days=1)).contacts["contact_id"].to_list() == ["c1"]


def test_an_order_for_a_contact_posted_earlier_is_accepted(store):
    contact = {
        k: (v.isoformat() if isinstance(v, datetime) else v)
        for k, v in _contact("c1", "u1", T0).items()
    }
    ingest(store, EventsRequest(contacts=[contact]))
    order = {
        "order_id": "o1",
        "customer_id": "u1",
        "ordered_at": "2026-03-02T10:00:00Z",
        "amount": 5,
        "contact_id": "c1",
    }
    answer = ingest(store, EventsRequest(orders=[order]))
    assert answer.accepted["orders"] == 1
    assert answer.rejected == []


def _open_store(url: str, barrier) -> None:
    barrier.wait()
    EventStore(url, history_days=30).close()


def test_workers_opening_a_new_store_at_once_all_succeed(tmp_path):
    """Two workers starting together once crashed one with "table customers already exists"."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for attempt in range(4):
        url = f"sqlite:///{tmp_path / f'race-{attempt}.db'}"
        barrier = context.Barrier(6)
        workers = [context.Process(target=_open_store, args=(url, barrier)) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert [w.exitcode for w in workers] == [0] * 6


def _stored_contact(store: EventStore, contact_id: str) -> dict:
    import sqlalchemy as sa

    with store.engine.connect() as connection:
        row = connection.execute(
            sa.text("SELECT * FROM contacts WHERE contact_id = :id"), {"id": contact_id}
        ).mappings()
        return dict(next(iter(row)))


@pytest.mark.parametrize(
    "order",
    [
        ("arrival", "ended", "final"),
        ("final", "ended", "arrival"),
        ("ended", "final", "arrival", "ended"),
        ("arrival", "final", "arrival", "ended"),
    ],
)
def test_an_older_contact_version_never_overwrites_a_newer_one(store, order):
    """arrival -> ended -> final (drop-off reason known), posted and retried in any order."""
    ended = _text_row(_contact("c-v", "u-v", T0)) | {"resolved": True, "dropoff_reason": None}
    versions = {
        "arrival": {
            k: ended[k]
            for k in ("contact_id", "customer_id", "started_at", "channel", "direction", "intent")
        },
        "ended": ended | {"resolved": False},
        "final": ended | {"resolved": False, "dropoff_reason": "price"},
    }
    answers = [ingest(store, EventsRequest(contacts=[versions[v]]), now=T0) for v in order]
    stored = _stored_contact(store, "c-v")
    assert stored["dropoff_reason"] == "price" and stored["handled_by"] == "agent"
    for version, answer in zip(order, answers, strict=True):
        superseded = [r.rule for r in answer.rejected] == ["superseded"]
        assert answer.accepted["contacts"] + superseded == 1, (version, answer)
    state = store.state("u-v")
    assert state.contacts["c-v"][8] == "agent"  # handled_by in the online state too


def test_an_arrival_only_contact_is_accepted_and_scored_later(store):
    arrival = {"contact_id": "c-a", "customer_id": "u-a", "started_at": "2026-03-01T09:00:00Z",
               "channel": "chat", "direction": "inbound", "intent": "delivery"}  # fmt: skip
    answer = ingest(store, EventsRequest(contacts=[arrival]), now=T0)
    assert answer.accepted["contacts"] == 1 and answer.rejected == []
    assert _stored_contact(store, "c-a")["handled_by"] is None


def test_an_event_cannot_move_to_another_customer(store):
    contact = _text_row(_contact("c-m", "u-1", T0))
    order = {
        "order_id": "o-m",
        "customer_id": "u-1",
        "ordered_at": "2026-03-01T10:00:00Z",
        "amount": 5,
    }
    ingest(store, EventsRequest(contacts=[contact], orders=[order]), now=T0 + timedelta(days=1))
    moved = ingest(
        store,
        EventsRequest(
            contacts=[contact | {"customer_id": "u-2"}], orders=[order | {"customer_id": "u-2"}]
        ),
        now=T0 + timedelta(days=1),
    )
    assert moved.accepted == {"contacts": 0, "orders": 0, "customers": 0}
    assert {(r.table, r.field, r.rule) for r in moved.rejected} == {
        ("contacts", "customer_id", "customer_changed"),
        ("orders", "customer_id", "customer_changed"),
    }
    assert _stored_contact(store, "c-m")["customer_id"] == "u-1"
    assert "c-m" not in store.state("u-2").contacts


def test_a_request_repeating_an_event_is_told_each_event_once(store):
    ended = _text_row(_contact("c-r", "u-r", T0))
    final = ended | {"dropoff_reason": "price", "resolved": False}
    answer = ingest(store, EventsRequest(contacts=[final, ended]), now=T0)
    assert answer.accepted["contacts"] == 1
    assert [(r.row, r.rule) for r in answer.rejected] == [
        (2, "unique")
    ]  # each event once a request
    assert _stored_contact(store, "c-r")["dropoff_reason"] == "price"
