"""The fast online path: cached plans, the snapshot rate lookup and the batched entry point.

Speed itself is shown by benchmarks/online_features.py; these tests pin down that the shortcuts
give exactly what the general path gives.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from features.errors import CTOError
from features.labels import label_contacts
from features.pipeline import build_features, online_features, online_features_many
from features.rates import RateTables, compute_rates, join_rates
from features.schema import AFTER_CONTACT_COLUMNS, CONTACTS, ORDERS

START = datetime(2026, 3, 2, tzinfo=UTC)
HORIZON = 7
CHANNELS = ("phone", "email", "chat")
INTENTS = ("pricing", "delivery", "complaint")


def _contacts(n_customers: int = 6, per_customer: int = 5) -> pl.DataFrame:
    rows = []
    for c in range(n_customers):
        for i in range(per_customer):
            k = c * per_customer + i
            rows.append(
                {
                    "contact_id": f"c{c}-{i}",
                    "customer_id": f"u{c}",
                    "started_at": START + timedelta(hours=30 * i + 5 * c, minutes=k % 7),
                    "channel": CHANNELS[k % 3],
                    "direction": "inbound",
                    "intent": INTENTS[(k // 2) % 3],
                    "handled_by": "bot" if k % 4 == 0 else "agent",
                    "agent_id": None if k % 4 == 0 else f"a{k % 3}",
                    "wait_seconds": float(30 + 11 * k),
                    "handle_seconds": float(100 + 7 * k),
                    "transfers": k % 2,
                    "abandoned": k % 5 == 0,
                    "resolved": k % 3 != 0,
                    "callback_offered": False,
                    "follow_up_sent": k % 2 == 0,
                    "dropoff_reason": None,
                }
            )
    return pl.DataFrame(rows).with_columns(pl.col(c.name).cast(c.dtype) for c in CONTACTS.columns)


def _orders(contacts: pl.DataFrame) -> pl.DataFrame:
    picked = contacts.filter(pl.col("contact_id").str.ends_with("-1"))
    return pl.DataFrame(
        {
            "order_id": [f"o-{i}" for i in range(picked.height)],
            "customer_id": picked["customer_id"],
            "ordered_at": picked["started_at"] + timedelta(hours=3),
            "amount": [10.5 * (i + 1) for i in range(picked.height)],
            "contact_id": [None] * picked.height,
        }
    ).with_columns(pl.col(c.name).cast(c.dtype) for c in ORDERS.columns)


@pytest.fixture(scope="module")
def data():
    contacts = _contacts()
    orders = _orders(contacts)
    rates = compute_rates(
        label_contacts(contacts, orders, horizon_days=HORIZON), horizon_days=HORIZON
    )
    return contacts, orders, rates


def _last_contacts(contacts: pl.DataFrame) -> pl.DataFrame:
    return contacts.filter(pl.col("contact_id").str.ends_with("-4"))


@pytest.mark.parametrize("moment", ["arrival", "after_contact"])
def test_many_equals_one_by_one_in_input_order(data, moment):
    contacts, orders, rates = data
    scored = _last_contacts(contacts).reverse()  # input order differs from the pipeline's
    many = online_features_many(
        contacts, orders, scored, None, rates, moment, journey_gap_days=14, horizon_days=HORIZON
    )
    one_by_one = pl.concat(
        [
            online_features(
                contacts,
                orders,
                contact,
                None,
                rates,
                moment,
                journey_gap_days=14,
                horizon_days=HORIZON,
            )
            for contact in scored.iter_rows(named=True)
        ]
    )
    assert many["contact_id"].to_list() == scored["contact_id"].to_list()
    assert many.equals(one_by_one)
    # And both are the batch rows of those contacts (history = everything before them here).
    batch = build_features(
        contacts, orders, None, rates, moment, journey_gap_days=14, horizon_days=HORIZON
    )
    expected = scored.select("contact_id").join(batch, on="contact_id", how="left")
    assert many.equals(expected)


def test_many_rejects_two_contacts_of_one_customer(data):
    contacts, orders, rates = data
    two = contacts.filter(pl.col("customer_id") == "u1").head(2)
    with pytest.raises(CTOError, match="one contact per customer"):
        online_features_many(contacts, orders, two, None, rates, "arrival", horizon_days=HORIZON)


def test_repeated_calls_do_not_mix_moments_or_options(data):
    """Cached plans are keyed by moment and journey settings: interleaved calls stay correct."""
    contacts, orders, rates = data
    scored = _last_contacts(contacts).row(0, named=True)
    history = contacts.filter(pl.col("contact_id") != scored["contact_id"])
    results = {}
    for moment, gap in [("arrival", 14), ("after_contact", 14), ("arrival", 1), ("arrival", 14)]:
        frame = online_features(
            history,
            orders,
            scored,
            None,
            rates,
            moment,
            journey_gap_days=gap,
            horizon_days=HORIZON,
        )
        results.setdefault((moment, gap), []).append(frame)
    assert results[("arrival", 14)][0].equals(results[("arrival", 14)][1])
    assert "wait_seconds" in results[("after_contact", 14)][0].columns
    assert "wait_seconds" not in results[("arrival", 14)][0].columns
    # A 1-day journey gap splits the 30-hour-spaced contacts' journeys differently.
    short, long = results[("arrival", 1)][0], results[("arrival", 14)][0]
    assert short["journey_contacts"].item() == 0 < long["journey_contacts"].item()
    assert not short.equals(long)


def test_uncast_input_gives_the_contract_result(data):
    """Strings for enums and times (a client's JSON) conform to the same features."""
    contacts, orders, rates = data
    scored = _last_contacts(contacts).head(1)
    plain = scored.with_columns(
        pl.col("channel", "direction", "intent", "handled_by").cast(pl.String),
        pl.col("started_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ"),
    )
    history = contacts.filter(pl.col("contact_id") != scored["contact_id"][0])
    typed = online_features(history, orders, scored, None, rates, "after_contact", horizon_days=7)
    loose = online_features(history, orders, plain, None, rates, "after_contact", horizon_days=7)
    assert typed.equals(loose)


def _snapshot(rates: RateTables, valid_from: datetime) -> RateTables:
    """Each key's latest row and the latest global rate, valid from ``valid_from``."""

    def latest(table: pl.DataFrame, by: list[str]) -> pl.DataFrame:
        last = table.group_by(by).agg(pl.all().last()) if by else table.tail(1)
        known_at = pl.lit(valid_from).cast(table.schema["label_known_at"])
        return last.with_columns(known_at.alias("label_known_at"))

    return RateTables(
        horizon_days=rates.horizon_days,
        prior_strength=rates.prior_strength,
        tables={name: latest(t, ["key"]).sort("key") for name, t in rates.tables.items()},
        global_rate=latest(rates.global_rate, []),
    )


def test_snapshot_lookup_equals_the_as_of_join(data):
    """The hash-join shortcut for one-rate-per-key tables answers what join_asof answers.

    The same snapshot plus an older row per key (and an older global row) is no longer a snapshot,
    so it goes through join_asof; for contacts after the snapshot time the older rows lose.
    """
    contacts, _, rates = data
    valid_from = START + timedelta(days=1)
    snapshot = _snapshot(rates, valid_from)
    older = {
        name: table.with_columns(
            pl.col("label_known_at") - timedelta(hours=1),
            pl.col("outcomes") * 3 + 1,
            pl.col("conversions") * 2,
        )
        for name, table in snapshot.tables.items()
    }
    general = RateTables(
        horizon_days=snapshot.horizon_days,
        prior_strength=snapshot.prior_strength,
        tables={name: pl.concat([older[name], t]) for name, t in snapshot.tables.items()},
        global_rate=pl.concat(
            [
                snapshot.global_rate.with_columns(
                    pl.col("label_known_at") - timedelta(hours=1), pl.lit(0.9).alias("rate")
                ),
                snapshot.global_rate,
            ]
        ),
    )
    # Contacts before, exactly at and after the snapshot time, including unseen keys and bots.
    probe = contacts.with_columns(
        pl.when(pl.col("contact_id").str.ends_with("-0"))
        .then(pl.lit(valid_from).cast(contacts.schema["started_at"]))
        .otherwise(pl.col("started_at") + timedelta(days=2))
        .alias("started_at"),
        pl.when(pl.col("contact_id").str.ends_with("-2"))
        .then(pl.lit("never-seen"))
        .otherwise(pl.col("agent_id"))
        .alias("agent_id"),
    )
    fast = join_rates(probe, snapshot)
    slow = join_rates(probe, general)
    columns = ["contact_id", *[c for c in fast.columns if c.startswith("_rate_")]]
    columns = [c for c in columns if not c.startswith("_rate_key") and "conversions" not in c]
    after = pl.col("started_at") > valid_from
    assert fast.filter(after).select(columns).equals(slow.filter(after).select(columns))
    assert fast.filter(after).height == 24
    at_snapshot_time = fast.filter(pl.col("contact_id").str.ends_with("-0"))
    assert at_snapshot_time["_rate_intent"].is_null().all()  # known strictly before, not at
    assert (at_snapshot_time["_rate_intent_outcomes"] == 0).all()
    unseen = fast.filter(pl.col("contact_id").str.ends_with("-2"))
    assert (unseen["_rate_agent_outcomes"] == 0).all()
    assert unseen["_rate_agent"].is_not_null().all()  # the global rate, smoothed


def test_online_with_snapshot_rates_equals_batch_with_them(data):
    """The service's snapshot rates give the same row online as in a batch run."""
    contacts, orders, rates = data
    snapshot = _snapshot(rates, datetime(1970, 1, 1, tzinfo=UTC))
    scored = _last_contacts(contacts).head(1)
    history = contacts.filter(pl.col("started_at") < scored["started_at"][0])
    arrival_fields = scored.drop(*[c for c in AFTER_CONTACT_COLUMNS if c in scored.columns])
    online = online_features(
        history, orders, arrival_fields, None, snapshot, "arrival", horizon_days=7
    )
    batch = build_features(
        pl.concat([history, scored]), orders, None, snapshot, "arrival", horizon_days=7
    ).filter(pl.col("contact_id") == scored["contact_id"][0])
    assert online.equals(batch)
    assert online["intent_conversion_rate"].is_not_null().all()
