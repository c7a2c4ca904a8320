"""What-if: the champion's estimate of extra orders if an operational lever moved.

For each lever the period's contacts are changed as the lever says, their features are rebuilt
with the same pipeline (so later contacts' history features see the change too), the champion
after-contact model scores both versions, and the estimate is the sum of the probability
differences over the period's contacts. The range resamples the period's contacts (bootstrap,
1,000 resamples): how much the estimate depends on which contacts happened to come. These are
model estimates of association, not proof of cause: the model learnt how outcomes went with these
fields in the past.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from features.pipeline import build_features
from features.rates import RateTables
from features.schema import WRITTEN_CHANNELS
from reports.kpis import Period
from reports.models import Champion
from reports.stats import bootstrap_sum_range

BOOTSTRAP_SEED = 17
LONG_WAIT_SECONDS = 300.0
TARGET_WAIT_SECONDS = 120.0
# Pre-sales requests: the customer is asking before buying.
INQUIRY_INTENTS = ("product_inquiry", "pricing", "availability")


@dataclass(frozen=True)
class Lever:
    key: str
    title: str
    explanation: str
    # Raw-data lever: which contacts change and how (applied before features are rebuilt).
    selects: Callable[[], pl.Expr] | None = None
    changes: Callable[[], list[pl.Expr]] | None = None
    # Feature-level lever (no raw field expresses it): which feature rows change and how.
    feature_selects: Callable[[], pl.Expr] | None = None
    feature_changes: Callable[[], list[pl.Expr]] | None = None


def _live_channel() -> pl.Expr:
    return ~pl.col("channel").cast(pl.String).is_in(list(WRITTEN_CHANNELS))


LEVERS = (
    Lever(
        key="waits",
        title="Waits over 5 minutes cut to 2",
        explanation=(
            "Phone and chat contacts (and other live channels) that waited more than 5 minutes get a "
            "2-minute wait; written channels, whose wait is the time to first reply, are left alone. "
            "Everything else about the contact stays the same."
        ),
        selects=lambda: _live_channel() & (pl.col("wait_seconds") > LONG_WAIT_SECONDS),
        changes=lambda: [pl.lit(TARGET_WAIT_SECONDS).alias("wait_seconds")],
    ),
    Lever(
        key="follow_up",
        title="A follow-up after every inquiry",
        explanation=(
            "Every product, pricing or availability inquiry without a follow-up (quote, summary, "
            "reminder) gets one."
        ),
        selects=lambda: (
            pl.col("intent").cast(pl.String).is_in(list(INQUIRY_INTENTS))
            & ~pl.col("follow_up_sent")
        ),
        changes=lambda: [pl.lit(True).alias("follow_up_sent")],
    ),
    Lever(
        key="channel_switch",
        title="No channel switch without context",
        explanation=(
            "Contacts where the customer switched channel within a journey are scored as if the "
            "context had carried over, i.e. like a contact on the same channel (the "
            "channel-switch flag set to 0)."
        ),
        feature_selects=lambda: pl.col("channel_switch") == 1,
        feature_changes=lambda: [pl.lit(0, dtype=pl.Int8).alias("channel_switch")],
    ),
)


@dataclass(frozen=True)
class LeverEstimate:
    lever: Lever
    contacts_changed: int
    extra_orders: float
    baseline_orders: float
    # 95% range of extra_orders over bootstrap resamples of the period's contacts.
    low: float = float("nan")
    high: float = float("nan")

    @property
    def relative(self) -> float | None:
        return self.extra_orders / self.baseline_orders if self.baseline_orders else None


def estimate_levers(
    champion: Champion,
    period: Period,
    baseline_features: pl.DataFrame,
    *,
    contacts: pl.DataFrame,
    orders: pl.DataFrame,
    customers: pl.DataFrame | None,
    rates: RateTables | None,
    horizon_days: int,
    journey_gap_days: int,
    levers: tuple[Lever, ...] = LEVERS,
) -> list[LeverEstimate]:
    """Extra orders per lever over the period's contacts (``baseline_features``: their features).

    ``contacts``/``orders`` are the history the baseline features were built from; only rows in
    ``period`` are changed and summed.
    """
    baseline = baseline_features.sort("contact_id")
    baseline_probability = champion.probability(champion.matrix(baseline))
    baseline_orders = float(baseline_probability.sum())
    estimates = []
    for lever in levers:
        if lever.selects is not None:
            in_scope = period.contains() & lever.selects().fill_null(False)
            changed = contacts.filter(in_scope).height
            modified_contacts = _changed_where(contacts, in_scope, lever.changes())
            rebuilt = build_features(
                modified_contacts,
                orders,
                customers,
                rates,
                moment="after_contact",
                journey_gap_days=journey_gap_days,
                horizon_days=horizon_days,
            )
            scenario = rebuilt.filter(
                pl.col("contact_id").is_in(baseline["contact_id"].implode())
            ).sort("contact_id")
            # Columns joined onto the features after they were built (the data's own columns).
            kept = [c for c in baseline.columns if c not in scenario.columns]
            if kept:
                scenario = scenario.join(
                    baseline.select("contact_id", *kept), on="contact_id", how="left"
                )
        else:
            in_scope = lever.feature_selects().fill_null(False)
            changed = baseline.filter(in_scope).height
            scenario = _changed_where(baseline, in_scope, lever.feature_changes())
        scenario_probability = champion.probability(champion.matrix(scenario))
        difference = scenario_probability - baseline_probability
        low, high = bootstrap_sum_range(difference, seed=BOOTSTRAP_SEED)
        estimates.append(
            LeverEstimate(
                lever=lever,
                contacts_changed=changed,
                extra_orders=float(np.sum(difference)),
                baseline_orders=baseline_orders,
                low=low,
                high=high,
            )
        )
    return estimates


def _changed_where(frame: pl.DataFrame, in_scope: pl.Expr, changes: list[pl.Expr]) -> pl.DataFrame:
    """Each change replaces its output column on the rows in scope; other rows keep their values."""
    return frame.with_columns(
        [
            pl.when(in_scope)
            .then(change)
            .otherwise(pl.col(change.meta.output_name()))
            .alias(change.meta.output_name())
            for change in changes
        ]
    )
