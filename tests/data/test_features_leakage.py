"""Leakage: a contact's features use only what was known at its scoring moment.

A random, simulator-like history (many customers, ties at the same instant, written channels with
long reply times, orders between contacts) is perturbed in ways that must not matter, and the
features are compared before and after. Batch and online paths must agree row for row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from features.labels import label_contacts
from features.pipeline import build_features, online_features
from features.rates import compute_rates
from features.registry import feature_names
from features.schema import (
    AFTER_CONTACT_COLUMNS,
    CHANNELS,
    CONTACTS,
    INTENTS,
    ORDERS,
    SEGMENTS,
    UTC_TIME,
)

START = datetime(2026, 1, 5, tzinfo=UTC)
HORIZON = 7
OUTCOME_FIELDS = [c for c in AFTER_CONTACT_COLUMNS if c != "dropoff_reason"]


def random_history(n_contacts: int, n_customers: int, seed: int) -> tuple[pl.DataFrame, ...]:
    """Contacts, orders and customers in the contract dtypes; start times rounded to the hour so
    that one customer has several events at the same instant."""
    rng = np.random.default_rng(seed)
    customer = rng.integers(0, n_customers, n_contacts)
    hours = rng.integers(0, 24 * 90, n_contacts)
    channel = rng.choice(CHANNELS, n_contacts, p=[0.35, 0.2, 0.2, 0.1, 0.05, 0.05, 0.05])
    written = np.isin(channel, ["email", "web_form", "social", "sms"])
    bot = rng.random(n_contacts) < 0.2
    wait = np.where(written, rng.exponential(40_000, n_contacts), rng.exponential(120, n_contacts))
    contacts = pl.DataFrame(
        {
            "contact_id": [f"c-{i:06d}" for i in range(n_contacts)],
            "customer_id": [f"u-{c:05d}" for c in customer],
            "started_at": [START + timedelta(hours=int(h)) for h in hours],
            "channel": channel,
            "direction": rng.choice(["inbound", "outbound"], n_contacts, p=[0.8, 0.2]),
            "intent": rng.choice(INTENTS, n_contacts),
            "handled_by": np.where(bot, "bot", "agent"),
            "agent_id": [
                None if b else f"a-{a:02d}"
                for b, a in zip(bot, rng.integers(0, 12, n_contacts), strict=True)
            ],
            "wait_seconds": np.round(wait, 1),
            "handle_seconds": np.round(rng.exponential(300, n_contacts), 1),
            "transfers": rng.poisson(0.4, n_contacts),
            "abandoned": rng.random(n_contacts) < 0.1,
            "resolved": rng.random(n_contacts) < 0.6,
            "callback_offered": rng.random(n_contacts) < 0.1,
            "follow_up_sent": rng.random(n_contacts) < 0.4,
            "dropoff_reason": [None] * n_contacts,
        }
    ).with_columns(pl.col(c.name).cast(c.dtype) for c in CONTACTS.columns)
    n_orders = n_contacts // 6
    orders = pl.DataFrame(
        {
            "order_id": [f"o-{i:06d}" for i in range(n_orders)],
            "customer_id": [f"u-{c:05d}" for c in rng.integers(0, n_customers, n_orders)],
            # Some orders land exactly on a contact's hour: ties with contact starts.
            "ordered_at": [
                START + timedelta(hours=int(h)) for h in rng.integers(0, 24 * 90, n_orders)
            ],
            "amount": np.round(rng.gamma(2, 60, n_orders), 2),
            "contact_id": [None] * n_orders,
        }
    ).with_columns(pl.col(c.name).cast(c.dtype) for c in ORDERS.columns)
    customers = pl.DataFrame(
        {
            "customer_id": [f"u-{c:05d}" for c in range(n_customers)],
            "segment": rng.choice(SEGMENTS, n_customers),
            "region": rng.choice(["north", "south"], n_customers),
            "first_seen_at": [
                START - timedelta(days=int(d)) for d in rng.integers(0, 400, n_customers)
            ],
        }
    ).with_columns(
        pl.col("segment").cast(pl.Enum(SEGMENTS)), pl.col("first_seen_at").cast(UTC_TIME)
    )
    return contacts, orders, customers


@pytest.fixture(scope="module")
def history():
    return random_history(n_contacts=4_000, n_customers=400, seed=11)


@pytest.fixture(scope="module")
def rates(history):
    contacts, orders, _ = history
    return compute_rates(
        label_contacts(contacts, orders, horizon_days=HORIZON), horizon_days=HORIZON
    )


def _features(contacts, orders, customers, rates, moment):
    return build_features(contacts, orders, customers, rates, moment, horizon_days=HORIZON)


def _scramble_outcomes(contacts: pl.DataFrame, mask: pl.Expr, seed: int) -> pl.DataFrame:
    """New random after-contact values (and dropoff reasons) for the rows matching ``mask``."""
    rng = np.random.default_rng(seed)
    n = contacts.height
    noise = pl.DataFrame(
        {
            "wait_seconds": rng.exponential(5_000, n),
            "handle_seconds": rng.exponential(900, n),
            "transfers": rng.integers(0, 5, n).astype(np.int32),
            "abandoned": rng.random(n) < 0.5,
            "resolved": rng.random(n) < 0.5,
            "callback_offered": rng.random(n) < 0.5,
            "follow_up_sent": rng.random(n) < 0.5,
            "handled_by": rng.choice(["agent", "bot"], n),
            "agent_id": [f"a-{a:02d}" for a in rng.integers(50, 60, n)],
            "dropoff_reason": rng.choice(["price", "long_wait"], n),
        }
    ).with_columns(pl.col(c).cast(CONTACTS.column(c).dtype) for c in AFTER_CONTACT_COLUMNS)
    return (
        contacts.hstack(noise.rename(lambda c: f"_new_{c}"))
        .with_columns(
            pl.when(mask).then(pl.col(f"_new_{c}")).otherwise(pl.col(c)).alias(c)
            for c in AFTER_CONTACT_COLUMNS
        )
        .select(contacts.columns)
    )


def test_arrival_ignores_own_outcome(history, rates):
    """Every customer's latest contacts get new outcome fields: no arrival feature moves."""
    contacts, orders, customers = history
    latest = pl.col("started_at") == pl.col("started_at").max().over("customer_id")
    scrambled = _scramble_outcomes(contacts, latest, seed=1)
    assert not scrambled.equals(contacts)
    before = _features(contacts, orders, customers, rates, "arrival")
    after = _features(scrambled, orders, customers, rates, "arrival")
    assert before.equals(after)
    # The after-contact moment does see them: the perturbation is real.
    assert not _features(contacts, orders, customers, rates, "after_contact").equals(
        _features(scrambled, orders, customers, rates, "after_contact")
    )


def test_arrival_with_outcome_columns_null_or_absent(history, rates):
    """The online case: the scored contacts' after-contact fields are not known yet."""
    contacts, orders, customers = history
    latest = pl.col("started_at") == pl.col("started_at").max().over("customer_id")
    nulled = contacts.with_columns(
        pl.when(~latest).then(pl.col(c)).alias(c) for c in AFTER_CONTACT_COLUMNS
    )
    before = _features(contacts, orders, customers, rates, "arrival")
    assert before.equals(_features(nulled, orders, customers, rates, "arrival"))
    # Without any after-contact column the history features lose their outcome inputs, but the
    # frame still has every arrival feature, in order and with nulls/zeros, not an error.
    bare = contacts.select(
        "contact_id", "customer_id", "started_at", "channel", "direction", "intent"
    )
    no_outcomes = _features(bare, orders, customers, rates, "arrival")
    assert no_outcomes.columns == before.columns
    assert no_outcomes["contacts_30d"].equals(before["contacts_30d"])
    assert no_outcomes["wait_max_30d"].null_count() == no_outcomes.height


@pytest.mark.parametrize("cutoff_day", [20, 45, 80])
@pytest.mark.parametrize("moment", ["arrival", "after_contact"])
def test_later_events_do_not_matter(history, cutoff_day, moment):
    """Change, delete and add everything after a cutoff: contacts up to it keep their features,
    including the point-in-time rates recomputed from the changed data."""
    contacts, orders, customers = history
    cutoff = START + timedelta(days=cutoff_day, hours=5)
    later = pl.col("started_at") > cutoff
    changed_contacts = (
        _scramble_outcomes(contacts, later, seed=cutoff_day)
        .with_columns(
            # Later contacts switch channel and intent, some move even later.
            pl.when(later)
            .then(pl.lit("social"))
            .otherwise(pl.col("channel"))
            .cast(pl.Enum(CHANNELS))
            .alias("channel"),
            pl.when(later)
            .then(pl.col("started_at") + timedelta(hours=3))
            .otherwise(pl.col("started_at"))
            .alias("started_at"),
        )
        .filter(~later | (pl.int_range(pl.len()) % 3 != 0))
    )
    extra_orders = orders.head(200).with_columns(
        pl.col("order_id") + "-late", pl.lit(cutoff).cast(UTC_TIME).alias("ordered_at")
    )
    changed_orders = pl.concat(
        [
            orders.filter(pl.col("ordered_at") < cutoff),
            orders.filter(pl.col("ordered_at") >= cutoff).with_columns(pl.col("amount") * 3),
            extra_orders,
        ]
    )
    base_rates = compute_rates(label_contacts(contacts, orders, horizon_days=HORIZON), HORIZON)
    changed_rates = compute_rates(
        label_contacts(changed_contacts, changed_orders, horizon_days=HORIZON), HORIZON
    )
    kept = pl.col("started_at") <= cutoff
    before = _features(contacts, orders, customers, base_rates, moment).filter(kept)
    after = _features(changed_contacts, changed_orders, customers, changed_rates, moment).filter(
        kept
    )
    assert before.height > 500
    assert before.equals(after)
    assert before["intent_conversion_rate"].null_count() < before.height


def test_outcome_known_only_when_contact_ended(history):
    """An email whose reply came after the customer's next contact is not in that contact's waits."""
    contacts, orders, customers = history
    one = contacts.filter(pl.col("customer_id") == contacts["customer_id"][0]).head(1)
    email = one.with_columns(
        pl.lit("email").cast(pl.Enum(CHANNELS)).alias("channel"),
        pl.lit(2 * 86_400.0).alias("wait_seconds"),
        pl.lit(False).alias("resolved"),
    )
    call = one.with_columns(
        pl.lit("x-call").alias("contact_id"),
        pl.col("started_at") + timedelta(hours=5),
        pl.lit("phone").cast(pl.Enum(CHANNELS)).alias("channel"),
    )
    third = call.with_columns(
        pl.lit("x-third").alias("contact_id"), pl.col("started_at") + timedelta(days=3)
    )
    frame = build_features(pl.concat([email, call, third]), orders.clear(), moment="arrival")
    by_id = {row["contact_id"]: row for row in frame.iter_rows(named=True)}
    assert by_id["x-call"]["contacts_1d"] == 1
    assert by_id["x-call"]["wait_max_1d"] is None
    assert by_id["x-call"]["prev_unresolved"] is None
    assert by_id["x-third"]["wait_max_7d"] == 2 * 86_400.0
    assert by_id["x-third"]["unresolved_7d"] == 1


@pytest.mark.parametrize("moment", ["arrival", "after_contact"])
def test_batch_and_online_agree(history, rates, moment):
    contacts, orders, customers = history
    batch = _features(contacts, orders, customers, rates, moment)
    sample = contacts.sample(25, seed=3)
    for contact in sample.iter_rows(named=True):
        customer_id = contact["customer_id"]
        history_contacts = contacts.filter(
            (pl.col("customer_id") == customer_id) & (pl.col("started_at") <= contact["started_at"])
        ).filter(pl.col("contact_id") != contact["contact_id"])
        history_orders = orders.filter(
            (pl.col("customer_id") == customer_id) & (pl.col("ordered_at") <= contact["started_at"])
        )
        new = dict(contact)
        if moment == "arrival":
            for column in AFTER_CONTACT_COLUMNS:
                new.pop(column)
        online = online_features(
            history_contacts,
            history_orders,
            new,
            customers.filter(pl.col("customer_id") == customer_id),
            rates,
            moment,
            horizon_days=HORIZON,
        )
        expected = batch.filter(pl.col("contact_id") == contact["contact_id"])
        assert online.equals(expected), contact["contact_id"]


def test_columns_and_dtypes_follow_registry(history, rates):
    contacts, orders, customers = history
    for moment in ("arrival", "after_contact"):
        frame = _features(contacts, orders, customers, rates, moment)
        assert frame.columns == ["contact_id", "customer_id", "started_at", *feature_names(moment)]
        assert frame.height == contacts.height
        assert frame["contact_id"].n_unique() == contacts.height
        assert "dropoff_reason" not in frame.columns
    arrival = _features(contacts, orders, customers, rates, "arrival")
    assert not set(OUTCOME_FIELDS) & set(arrival.columns)


def test_partitioned_equals_batch(history, rates, tmp_path):
    """Customer-hash partitions, processed one at a time from Parquet, give the batch rows."""
    from features.pipeline import build_features_partitioned

    contacts, orders, customers = history
    contacts.write_parquet(tmp_path / "contacts.parquet")
    orders.write_parquet(tmp_path / "orders.parquet")
    customers.write_parquet(tmp_path / "customers.parquet")
    parts = build_features_partitioned(
        tmp_path, tmp_path / "out", 3, "after_contact", rates, horizon_days=HORIZON
    )
    assert len(parts) == 3
    sizes = [pl.read_parquet(p).height for p in parts]
    assert min(sizes) > 0 and sum(sizes) == contacts.height
    together = pl.read_parquet(parts).sort("contact_id")
    batch = _features(contacts, orders, customers, rates, "after_contact").sort("contact_id")
    assert together.equals(batch)
