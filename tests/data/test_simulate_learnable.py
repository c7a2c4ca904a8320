"""The planted drivers are learnable from the contract columns: a plain LightGBM on simple
point-in-time features names a contact's strong driver as its most negative SHAP feature.

The features here are deliberately minimal and built from the output tables only (never the truth),
so the test checks the simulator's promise, not the project's feature pipeline.
"""

from __future__ import annotations

from datetime import timedelta

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from features.schema import WRITTEN_CHANNELS
from features.simulate import DRIVER_SIGNALS, STRONG_DRIVER

HORIZON = timedelta(days=7)
GAP = timedelta(days=14)

FEATURES = (
    "queue_wait_seconds",
    "reply_wait_hours",
    "channel",
    "direction",
    "intent",
    "handled_by",
    "transfers",
    "abandoned",
    "resolved",
    "callback_offered",
    "follow_up_sent",
    "hour_of_day",
    "channel_switch",
    "journey_contacts",
    "orders_lifetime",
)
CATEGORICAL = ("channel", "direction", "intent", "handled_by")


def converted_labels(contacts: pl.DataFrame, orders: pl.DataFrame) -> pl.DataFrame:
    """contact_id, converted: an order by the same customer within 7 days at or after the start."""
    next_order = (
        contacts.select("contact_id", "customer_id", "started_at")
        .sort("customer_id", "started_at")
        .join_asof(
            orders.select("customer_id", pl.col("ordered_at").alias("next_order_at")).sort(
                "customer_id", "next_order_at"
            ),
            left_on="started_at",
            right_on="next_order_at",
            by="customer_id",
            strategy="forward",
            check_sortedness=False,
        )
    )
    return next_order.select(
        "contact_id",
        (pl.col("next_order_at") - pl.col("started_at") <= HORIZON)
        .fill_null(False)
        .alias("converted"),
    )


def point_in_time_features(contacts: pl.DataFrame, orders: pl.DataFrame) -> pl.DataFrame:
    """Per contact: its own columns plus history known when it started (journeys, past orders)."""
    ordered = orders.select("customer_id", "ordered_at").sort("customer_id", "ordered_at")
    ordered = ordered.with_columns(
        pl.int_range(1, pl.len() + 1).over("customer_id").alias("orders_lifetime")
    )
    frame = (
        contacts.sort("customer_id", "started_at")
        .join_asof(
            ordered.rename({"ordered_at": "last_order_at"}),
            left_on="started_at",
            right_on="last_order_at",
            by="customer_id",
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .with_columns(
            pl.col("orders_lifetime").fill_null(0),
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
            pl.when(pl.col("new_journey"))
            .then(None)
            .otherwise((pl.col("channel") != pl.col("prev_channel")).cast(pl.Int8))
            .alias("channel_switch"),
            pl.col("started_at").dt.hour().alias("hour_of_day"),
            # wait_seconds means a queue wait on phone and chat, a first reply on written channels.
            pl.when(pl.col("channel").is_in(WRITTEN_CHANNELS))
            .then(None)
            .otherwise(pl.col("wait_seconds"))
            .alias("queue_wait_seconds"),
            pl.when(pl.col("channel").is_in(WRITTEN_CHANNELS))
            .then(pl.col("wait_seconds") / 3600)
            .alias("reply_wait_hours"),
        )
    )
    return frame.select("contact_id", "started_at", *FEATURES)


@pytest.fixture(scope="module")
def explained(sim_data):
    """A model trained on the first 70% (by time), SHAP values of strong-driver contacts after."""
    labels = converted_labels(sim_data.contacts, sim_data.orders)
    frame = (
        point_in_time_features(sim_data.contacts, sim_data.orders)
        .join(labels, on="contact_id")
        .join(
            sim_data.truth.select("contact_id", "planted_driver", "driver_strength"),
            on="contact_id",
        )
        .sort("started_at", "contact_id")
    )
    matrix = frame.select(
        *[
            pl.col(name).to_physical() if name in CATEGORICAL else pl.col(name).cast(pl.Float64)
            for name in FEATURES
        ]
    ).to_numpy()
    target = frame["converted"].to_numpy()
    split = int(len(frame) * 0.7)
    model = lgb.train(
        {
            "objective": "binary",
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_data_in_leaf": 50,
            "num_threads": 1,
            "verbose": -1,
            "seed": 1,
        },
        lgb.Dataset(
            matrix[:split],
            target[:split],
            feature_name=list(FEATURES),
            categorical_feature=list(CATEGORICAL),
        ),
        num_boost_round=200,
    )
    test = frame[split:]
    strong = (test["driver_strength"] <= STRONG_DRIVER).to_numpy()
    contributions = model.predict(matrix[split:][strong], pred_contrib=True)[:, : len(FEATURES)]
    return test.filter(pl.Series(strong)), contributions


def test_strong_drivers_are_the_most_negative_shap_feature(explained):
    strong, contributions = explained
    top = np.array(FEATURES)[np.argmin(contributions, axis=1)]
    drivers = strong["planted_driver"].cast(pl.String).to_list()
    named = np.array(
        [feature in DRIVER_SIGNALS[d] for feature, d in zip(top, drivers, strict=True)]
    )
    by_driver = (
        pl.DataFrame({"driver": drivers, "named": named, "top": top})
        .group_by("driver")
        .agg(pl.len(), pl.col("named").mean())
        .sort("driver")
    )
    assert len(strong) > 2_000
    assert named.mean() >= 0.85, by_driver
    # Every learnable strong driver is recovered on its own, not only on average.
    assert (by_driver.filter(pl.col("len") >= 100)["named"] >= 0.75).all(), by_driver
