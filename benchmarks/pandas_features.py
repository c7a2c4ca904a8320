"""The baseline for benchmarks/features.py: the history features written the straightforward pandas way.

Same definitions as features.pipeline for the per-customer history features (windows, lifetime
counts, days since the last contact and order): an event stream of contact starts, contact
outcomes (known at ``started_at + wait + handle``) and orders, then ``groupby(customer).rolling(
window, closed="left")`` per window and ``merge_asof`` for the latest order. It leaves out the
journey, channel-recency and rate features, so it computes less than the Polars pipeline does:
the speed ratio is conservative.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

WINDOWS = ("1d", "7d", "30d", "90d")
ORDER_WINDOWS = ("7d", "30d", "90d")
SUMMED = (
    "_is_contact",
    "_wait",
    "_has_wait",
    "_abandoned",
    "_transfers",
    "_unresolved",
    "_bot",
    "_is_order",
    "_amount",
)


def pandas_features(contacts: pd.DataFrame, orders: pd.DataFrame) -> pd.DataFrame:
    """contact_id + the history features (pandas names follow the registry's)."""
    starts = pd.DataFrame(
        {
            "customer_id": contacts["customer_id"],
            "_t": contacts["started_at"],
            "_kind": 0,
            "contact_id": contacts["contact_id"],
            "_is_contact": 1.0,
        }
    )
    duration = contacts["wait_seconds"].fillna(0) + contacts["handle_seconds"].fillna(0)
    outcomes = pd.DataFrame(
        {
            "customer_id": contacts["customer_id"],
            "_t": contacts["started_at"] + pd.to_timedelta(duration, unit="s"),
            "_kind": 1,
            "_wait": contacts["wait_seconds"],
            "_has_wait": contacts["wait_seconds"].notna().astype(float),
            "_abandoned": contacts["abandoned"].astype(float),
            "_transfers": contacts["transfers"].astype(float),
            "_unresolved": (~contacts["resolved"].astype(bool)).astype(float),
            "_bot": (contacts["handled_by"].astype(str) == "bot").astype(float),
        }
    )
    order_events = pd.DataFrame(
        {
            "customer_id": orders["customer_id"],
            "_t": orders["ordered_at"],
            "_kind": 2,
            "_is_order": 1.0,
            "_amount": orders["amount"],
        }
    )
    stream = pd.concat([starts, outcomes, order_events], ignore_index=True)
    stream = stream.sort_values(["customer_id", "_t", "_kind"], kind="stable").reset_index(
        drop=True
    )
    for column in SUMMED:
        stream[column] = stream[column].fillna(0.0) if column != "_wait" else stream[column]
    is_start = (stream["_kind"] == 0).to_numpy()
    result = pd.DataFrame({"contact_id": stream.loc[is_start, "contact_id"].to_numpy()})

    grouped = stream.set_index("_t").groupby("customer_id", sort=False)
    windows = {w: w.upper() for w in WINDOWS} | {"lifetime": "36500D"}
    for window, offset in windows.items():
        rolled = grouped[list(SUMMED)].rolling(offset, closed="left").sum()
        wait_max = grouped["_wait"].rolling(offset, closed="left").max()
        rolled = rolled.reset_index(drop=True)[is_start]
        wait_max = wait_max.reset_index(drop=True)[is_start]
        if window == "lifetime":
            result["contacts_lifetime"] = rolled["_is_contact"].fillna(0).to_numpy()
            result["orders_lifetime"] = rolled["_is_order"].fillna(0).to_numpy()
            result["spend_lifetime"] = rolled["_amount"].fillna(0).to_numpy()
            continue
        known = rolled["_has_wait"].fillna(0).to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(known > 0, rolled["_wait"].fillna(0).to_numpy() / known, np.nan)
        result[f"contacts_{window}"] = rolled["_is_contact"].fillna(0).to_numpy()
        result[f"wait_mean_{window}"] = mean
        result[f"wait_max_{window}"] = wait_max.to_numpy()
        result[f"abandons_{window}"] = rolled["_abandoned"].fillna(0).to_numpy()
        result[f"transfers_{window}"] = rolled["_transfers"].fillna(0).to_numpy()
        result[f"unresolved_{window}"] = rolled["_unresolved"].fillna(0).to_numpy()
        result[f"bot_only_{window}"] = rolled["_bot"].fillna(0).to_numpy()
        if window in ORDER_WINDOWS:
            result[f"orders_{window}"] = rolled["_is_order"].fillna(0).to_numpy()
            result[f"spend_{window}"] = rolled["_amount"].fillna(0).to_numpy()

    by_time = contacts[["contact_id", "customer_id", "started_at"]].sort_values("started_at")
    last_order = pd.merge_asof(
        by_time,
        orders[["customer_id", "ordered_at"]].sort_values("ordered_at"),
        left_on="started_at",
        right_on="ordered_at",
        by="customer_id",
        allow_exact_matches=False,
    )
    last_order["days_since_last_order"] = (
        last_order["started_at"] - last_order["ordered_at"]
    ).dt.total_seconds() / 86_400
    ordered = contacts.sort_values(["customer_id", "started_at"])
    previous = ordered.groupby("customer_id")["started_at"].shift(1)
    since_contact = pd.DataFrame(
        {
            "contact_id": ordered["contact_id"],
            "days_since_last_contact": (ordered["started_at"] - previous).dt.total_seconds()
            / 86_400,
        }
    )
    return result.merge(last_order[["contact_id", "days_since_last_order"]], on="contact_id").merge(
        since_contact, on="contact_id"
    )
