"""Every planted mechanism shows in the OUTPUT tables (never read from the truth table).

Conversion here is "an order by the same customer within 7 days at or after the contact started",
computed with a join_asof, independent of features.labels.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

HORIZON = timedelta(days=7)
GAP = timedelta(days=14)


@pytest.fixture(scope="module")
def labelled(sim_data) -> pl.DataFrame:
    """Contacts with `converted`, `past_orders`, `journey_contacts` and `channel_switch`."""
    orders = sim_data.orders.select("customer_id", "ordered_at").sort("customer_id", "ordered_at")
    past = orders.with_columns(
        pl.int_range(1, pl.len() + 1).over("customer_id").alias("past_orders"),
        pl.col("ordered_at").alias("last_order_at"),
    )
    return (
        sim_data.contacts.sort("customer_id", "started_at")
        .join_asof(
            orders.rename({"ordered_at": "next_order_at"}),
            left_on="started_at",
            right_on="next_order_at",
            by="customer_id",
            strategy="forward",
            check_sortedness=False,
        )
        .join_asof(
            past.drop("ordered_at"),
            left_on="started_at",
            right_on="last_order_at",
            by="customer_id",
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .with_columns(
            (pl.col("next_order_at") - pl.col("started_at") <= HORIZON)
            .fill_null(False)
            .alias("converted"),
            pl.col("past_orders").fill_null(0),
            pl.col("started_at").shift(1).over("customer_id").alias("prev_at"),
            pl.col("channel").shift(1).over("customer_id").alias("prev_channel"),
        )
        .with_columns(
            (
                pl.col("prev_at").is_null()
                | (pl.col("started_at") - pl.col("prev_at") >= GAP)
                | (pl.col("last_order_at") > pl.col("prev_at")).fill_null(False)
            ).alias("new_journey")
        )
        .with_columns(pl.col("new_journey").cum_sum().over("customer_id").alias("journey"))
        .with_columns(
            pl.int_range(pl.len()).over("customer_id", "journey").alias("journey_contacts"),
            (~pl.col("new_journey") & (pl.col("channel") != pl.col("prev_channel"))).alias(
                "channel_switch"
            ),
        )
    )


def rate(frame: pl.DataFrame, condition: pl.Expr, column: str = "converted") -> float:
    return float(frame.filter(condition)[column].mean())


AGENT_SERVED = (pl.col("handled_by") == "agent") & ~pl.col("abandoned")
INBOUND = pl.col("direction") == "inbound"


def test_contact_to_order_ratio_is_10_to_15_percent(labelled):
    assert 0.10 <= labelled["converted"].mean() <= 0.15


def test_conversion_falls_as_the_queue_wait_rises(labelled):
    queued = labelled.filter(
        pl.col("channel").is_in(["phone", "chat"]) & (pl.col("handled_by") == "agent") & INBOUND
    )
    by_bucket = (
        queued.with_columns(
            pl.col("wait_seconds")
            .bin_intervals([90, 180, 360], labels=["a", "b", "c", "d"])
            .alias("bucket")
        )
        .group_by("bucket")
        .agg(pl.col("converted").mean(), pl.len())
        .sort("bucket")
    )
    rates = by_bucket["converted"].to_list()
    assert by_bucket["len"].min() >= 200, by_bucket
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False)), by_bucket
    assert rates[-1] < 0.5 * rates[0], by_bucket


def test_long_waits_raise_abandonment_and_callbacks_cut_it(labelled):
    phone = labelled.filter(
        (pl.col("channel") == "phone") & (pl.col("handled_by") == "agent") & INBOUND
    )
    short = rate(phone, pl.col("wait_seconds") < 60, "abandoned")
    long = rate(phone, pl.col("wait_seconds") > 300, "abandoned")
    assert long > 3 * short
    waited = phone.filter(pl.col("wait_seconds") > 300)
    with_callback = rate(waited, pl.col("callback_offered"), "abandoned")
    without = rate(waited, ~pl.col("callback_offered"), "abandoned")
    assert with_callback < 0.75 * without


def test_slow_first_replies_on_email_lower_conversion(labelled):
    email = labelled.filter((pl.col("channel") == "email") & (pl.col("handled_by") == "agent"))
    fast = rate(email, pl.col("wait_seconds") < 4 * 3600)
    slow = rate(email, pl.col("wait_seconds") > 24 * 3600)
    assert email.filter(pl.col("wait_seconds") > 24 * 3600).height >= 100
    assert slow < 0.6 * fast


def test_follow_ups_raise_conversion_of_inquiries(labelled):
    inquiries = labelled.filter(
        AGENT_SERVED & pl.col("intent").is_in(["product_inquiry", "pricing", "availability"])
    )
    assert rate(inquiries, pl.col("follow_up_sent")) > 1.5 * rate(
        inquiries, ~pl.col("follow_up_sent")
    )


def test_switching_channel_within_a_journey_lowers_conversion(labelled):
    later = labelled.filter(~pl.col("new_journey") & INBOUND)
    assert later.filter(pl.col("channel_switch")).height >= 300
    assert rate(later, pl.col("channel_switch")) < 0.7 * rate(later, ~pl.col("channel_switch"))


def test_more_transfers_lower_conversion(labelled):
    served = labelled.filter(AGENT_SERVED & INBOUND)
    none, one, more = (
        rate(served, pl.col("transfers") == 0),
        rate(served, pl.col("transfers") == 1),
        rate(served, pl.col("transfers") >= 2),
    )
    assert none > one > more


def test_each_extra_journey_contact_lowers_own_conversion(labelled):
    # Later contacts are also selected (earlier ones failed), so compare within journeys that
    # reached the third contact: the effort penalty still shows from the first to the third.
    first, third = (
        rate(labelled, pl.col("journey_contacts") == 0),
        rate(labelled, pl.col("journey_contacts") >= 2),
    )
    assert third < first


def test_bots_resolve_simple_intents_and_fail_complex_ones(labelled):
    bots = labelled.filter(pl.col("handled_by") == "bot")
    simple = rate(bots, pl.col("intent").is_in(["order_status", "delivery"]), "resolved")
    complex_ = rate(bots, pl.col("intent").is_in(["pricing", "complaint", "technical"]), "resolved")
    assert simple > 0.8 and complex_ < 0.3
    assert rate(bots, ~pl.col("resolved")) < 0.6 * rate(bots, pl.col("resolved"))
    assert bots.filter(pl.col("agent_id").is_not_null()).height == 0


def test_repeat_customers_convert_more(labelled):
    assert rate(labelled, pl.col("past_orders") >= 1) > 1.2 * rate(
        labelled, pl.col("past_orders") == 0
    )


def test_night_contacts_convert_less(labelled):
    hour = pl.col("started_at").dt.hour()
    assert rate(labelled, (hour >= 22) | (hour < 6)) < rate(labelled, (hour >= 9) & (hour < 18))


def test_stockouts_lower_availability_conversion_and_raise_its_volume(sim_data, labelled):
    during = pl.lit(False)
    for period in sim_data.scenario["stockouts"]:
        begin, end = (pl.lit(period[k]).str.to_datetime(time_zone="UTC") for k in ("start", "end"))
        during = during | ((pl.col("started_at") >= begin) & (pl.col("started_at") < end))
    availability = pl.col("intent") == "availability"
    marked = labelled.with_columns(during.alias("stockout"))
    assert rate(marked, pl.col("stockout") & availability) < 0.8 * rate(
        marked, ~pl.col("stockout") & availability
    )
    share_during = marked.filter(pl.col("stockout")).select(availability.mean()).item()
    share_outside = marked.filter(~pl.col("stockout")).select(availability.mean()).item()
    assert share_during > 1.5 * share_outside


def test_staffing_change_raises_waits_after_the_change_week(sim_data):
    change = pl.lit(sim_data.scenario["staffing_change_at"]).str.to_datetime(time_zone="UTC")
    phone = sim_data.contacts.filter(
        (pl.col("channel") == "phone") & (pl.col("handled_by") == "agent") & INBOUND
    )
    before = phone.filter(pl.col("started_at") < change)["wait_seconds"].median()
    after = phone.filter(pl.col("started_at") >= change)["wait_seconds"].median()
    assert 1.25 < after / before < 1.6


def test_only_a_noisy_share_of_non_converters_has_a_recorded_reason(sim_data, labelled):
    converted = labelled.filter(pl.col("converted"))
    assert converted["dropoff_reason"].null_count() == converted.height
    lost = labelled.filter(~pl.col("converted"))
    recorded = lost["dropoff_reason"].is_not_null().mean()
    assert 0.25 <= recorded <= 0.35
    agreement = (
        lost.filter(pl.col("dropoff_reason").is_not_null())
        .join(sim_data.truth.select("contact_id", "true_dropoff_reason"), on="contact_id")
        .select((pl.col("dropoff_reason") == pl.col("true_dropoff_reason")).mean())
        .item()
    )
    assert 0.8 <= agreement <= 0.9


def test_some_orders_come_without_a_contact_and_some_contacts_are_outbound(sim_data, labelled):
    orders = sim_data.orders.sort("customer_id", "ordered_at").join_asof(
        sim_data.contacts.select("customer_id", pl.col("started_at").alias("contact_at")).sort(
            "customer_id", "contact_at"
        ),
        left_on="ordered_at",
        right_on="contact_at",
        by="customer_id",
        strategy="backward",
        check_sortedness=False,
    )
    start = pl.lit(sim_data.scenario["start"]).str.to_datetime(time_zone="UTC")
    without_contact = (
        orders.filter(pl.col("ordered_at") >= start)
        .select(
            (
                pl.col("contact_at").is_null()
                | (pl.col("ordered_at") - pl.col("contact_at") > HORIZON)
            ).mean()
        )
        .item()
    )
    # Most shop orders never involve the contact centre; the orders table holds them all.
    assert 0.2 < without_contact < 0.8
    # A year of order history before the first contact, for point-in-time features.
    assert orders.filter(pl.col("ordered_at") < start).height > 0
    outbound = labelled.filter(pl.col("direction") == "outbound")
    assert 0.01 < outbound.height / labelled.height < 0.1
    assert (outbound["wait_seconds"] == 0).all()


def test_agents_differ_in_conversion(sim_data, labelled):
    agents = sim_data.contacts["agent_id"].drop_nulls().unique()
    assert 60 <= agents.len() <= 120
    per_agent = (
        labelled.filter(AGENT_SERVED)
        .group_by("agent_id")
        .agg(pl.col("converted").mean(), pl.len())
        .filter(pl.col("len") >= 200)
    )
    assert per_agent["converted"].quantile(0.9) - per_agent["converted"].quantile(0.1) > 0.03


def test_first_success_ends_the_journey(sim_data):
    """No contact of the customer between an attributed contact and the order it drove."""
    attributed = sim_data.orders.filter(pl.col("contact_id").is_not_null()).join(
        sim_data.contacts.select("contact_id", pl.col("started_at").alias("driver_at")),
        on="contact_id",
    )
    assert attributed.height > 1_000
    between = attributed.join(
        sim_data.contacts.select("customer_id", "started_at"), on="customer_id"
    ).filter(
        (pl.col("started_at") > pl.col("driver_at")) & (pl.col("started_at") < pl.col("ordered_at"))
    )
    assert between.height == 0
    assert (attributed["ordered_at"] - attributed["driver_at"] <= HORIZON).all()
