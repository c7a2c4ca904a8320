"""Why contacts convert or not: global drivers from the champion's TreeSHAP, and drop-off reasons.

Drivers come from TreeSHAP (log-odds, LightGBM's ``pred_contrib``) over the period's contacts.
For managers each driver is one number: its mean absolute change in the chance to order, per
contact the calibrated probability with the feature's contribution minus the probability without
it, in percentage points. Drivers are ranked by that number, and the list and the chart print it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from reports.models import Champion

# Short names a manager reads; anything else falls back to a readable form of the column name.
PLAIN_NAMES = {
    "wait_seconds": "Waiting time",
    "handle_seconds": "Handling time",
    "transfers": "Transfers",
    "abandoned": "Customer hung up or left while waiting",
    "resolved": "Request resolved in the contact",
    "callback_offered": "Callback offered",
    "follow_up_sent": "Follow-up sent",
    "handled_by": "Agent or bot",
    "agent_conversion_rate": "The agent's track record",
    "channel": "Channel",
    "direction": "Inbound or outbound",
    "intent": "What the customer wanted",
    "hour_of_day": "Hour of day",
    "day_of_week": "Day of week",
    "segment": "Customer segment",
    "tenure_days": "How long we have known the customer",
    "contacts_lifetime": "Earlier contacts (all time)",
    "orders_lifetime": "Earlier orders (all time)",
    "spend_lifetime": "Earlier spend (all time)",
    "days_since_last_contact": "Days since the previous contact",
    "days_since_last_order": "Days since the last order",
    "prev_unresolved": "Previous contact left unresolved",
    "journey_contacts": "Earlier contacts in this journey",
    "journey_age_hours": "Hours since the journey started",
    "channel_switch": "Switched channel within the journey",
    "intent_conversion_rate": "How often this request type converts",
    "channel_conversion_rate": "How often this channel converts",
}
_WINDOW_WORDS = {
    "1d": "last day",
    "7d": "last 7 days",
    "30d": "last 30 days",
    "90d": "last 90 days",
}
_WINDOWED_NAMES = {
    "contacts": "Contacts",
    "channels_used": "Channels used",
    "channel_switches": "Channel switches",
    "wait_mean": "Average wait",
    "wait_max": "Longest wait",
    "abandons": "Abandoned contacts",
    "transfers": "Transfers",
    "unresolved": "Unresolved contacts",
    "bot_only": "Bot-only contacts",
    "orders": "Orders",
    "spend": "Spend",
}
_WINDOWED = re.compile(r"^(?P<base>.+)_(?P<window>1d|7d|30d|90d)$")
UNITS = {"wait_seconds": "seconds", "handle_seconds": "seconds"}


def plain_name(feature: str) -> str:
    if feature in PLAIN_NAMES:
        return PLAIN_NAMES[feature]
    match = _WINDOWED.match(feature)
    if match and match["base"] in _WINDOWED_NAMES:
        return f"{_WINDOWED_NAMES[match['base']]} in the {_WINDOW_WORDS[match['window']]}"
    return feature.replace("_", " ").capitalize()


def axis_label(feature: str) -> str:
    """The x-axis label of a dependence plot: the plain name with its unit."""
    name = plain_name(feature)
    if feature.endswith("_seconds") or feature.startswith("wait_"):
        return f"{name} (minutes)"
    if feature.endswith("_hours"):
        return f"{name} (hours)"
    if feature.endswith("_days") or feature.startswith("days_"):
        return f"{name} (days)"
    if feature.endswith("_rate"):
        return f"{name} (share of contacts that ordered)"
    return name


def display_scale(feature: str) -> float:
    """Seconds read better as minutes on an axis."""
    return 1 / 60 if feature.endswith("_seconds") or feature.startswith("wait_") else 1.0


@dataclass(frozen=True)
class Driver:
    feature: str
    name: str
    description: str
    mean_abs_shap: float  # log-odds
    mean_abs_effect: float  # probability units (0.01 = one percentage point)
    direction: str  # "raises", "lowers", "mixed"
    sentence: str
    categorical: bool


@dataclass
class DriverAnalysis:
    drivers: list[Driver]
    x: np.ndarray  # encoded features of the analysed contacts
    effects: np.ndarray  # per contact and feature, probability units
    feature_names: list[str]
    category_levels: dict[str, tuple[str, ...]]
    contacts: int
    base_probability: float

    def column(self, feature: str) -> int:
        return self.feature_names.index(feature)


def _direction(x: np.ndarray, effect: np.ndarray) -> float:
    """Rank correlation of a numeric feature's value with its effect (NaN rows left out)."""
    finite = np.isfinite(x)
    if finite.sum() < 10 or np.ptp(x[finite]) == 0:
        return 0.0
    ranks_x = np.argsort(np.argsort(x[finite]))
    ranks_e = np.argsort(np.argsort(effect[finite]))
    return float(np.corrcoef(ranks_x, ranks_e)[0, 1])


def points_text(effect: float) -> str:
    """A driver's one number as the list and the chart both print it."""
    return f"{effect * 100:.1f} points"


def is_flag(values: np.ndarray) -> bool:
    """A yes/no feature: only 0 and 1 (and missing) among its values."""
    finite = values[np.isfinite(values)]
    return finite.size > 0 and bool(np.all(np.isin(finite, (0.0, 1.0))))


def _sentence(
    values: np.ndarray, effect: np.ndarray, levels: tuple[str, ...] | None
) -> tuple[str, str]:
    """(direction, plain-language phrase) for one driver, read after its name.

    Every phrase carries the driver's one number, its mean absolute effect in points (the same
    number its bar shows); the rest says which way it acts, in words.
    """
    size = points_text(float(np.mean(np.abs(effect))))
    if levels is not None:
        means = {
            levels[int(code)]: float(effect[values == code].mean())
            for code in np.unique(values[np.isfinite(values)])
            if np.sum(values == code) >= 20
        }
        if len(means) < 2:
            return "mixed", f"moves the chance to order by {size} on average."
        best = max(means, key=means.get)
        worst = min(means, key=means.get)
        return (
            "mixed",
            f"moves the chance to order by {size} on average; {best.replace('_', ' ')} contacts "
            f"order most, {worst.replace('_', ' ')} least.",
        )
    if is_flag(values):
        with_flag = effect[values == 1]
        without_flag = effect[values == 0]
        gap = (with_flag.mean() if with_flag.size else 0.0) - (
            without_flag.mean() if without_flag.size else 0.0
        )
        verb = "raises" if gap > 0 else "lowers"
        return verb, f"moves the chance to order by {size} on average; a yes {verb} it."
    correlation = _direction(values, effect)
    if abs(correlation) < 0.2:
        return "mixed", f"moves the chance to order by {size} on average, not in one direction."
    direction = "raises" if correlation > 0 else "lowers"
    consequence = "higher" if direction == "raises" else "lower"
    return (
        direction,
        f"moves the chance to order by {size} on average; the higher it is, the {consequence} "
        "the chance.",
    )


def conversion_drivers(champion: Champion, features: pl.DataFrame, top: int = 8) -> DriverAnalysis:
    """Top ``top`` drivers of the after-contact conversion model on ``features`` (one row per contact)."""
    x = champion.matrix(features)
    contributions = champion.contributions(x)
    shap_values = contributions[:, :-1]
    raw = contributions.sum(axis=1)
    probability = champion.to_probability(raw)
    # Effect of a feature on this contact's chance: with its contribution minus without it.
    without = champion.to_probability(raw[:, None] - shap_values)
    effects = probability[:, None] - without
    names = champion.feature_names
    levels = champion.encoding.category_levels
    descriptions = champion.card.get("feature_descriptions", {})
    # Ranked by the number managers read (mean absolute effect in points), so list and chart agree.
    order = np.argsort(-np.abs(effects).mean(axis=0), kind="stable")
    drivers = []
    for index in order[:top]:
        feature = names[index]
        name = plain_name(feature)
        direction, sentence = _sentence(x[:, index], effects[:, index], levels.get(feature))
        drivers.append(
            Driver(
                feature=feature,
                name=name,
                description=descriptions.get(feature, ""),
                mean_abs_shap=float(np.abs(shap_values[:, index]).mean()),
                mean_abs_effect=float(np.abs(effects[:, index]).mean()),
                direction=direction,
                sentence=sentence,
                categorical=feature in levels,
            )
        )
    return DriverAnalysis(
        drivers=drivers,
        x=x,
        effects=effects,
        feature_names=names,
        category_levels=levels,
        contacts=features.height,
        base_probability=float(probability.mean()) if len(probability) else float("nan"),
    )


def recorded_reasons(labeled_period: pl.DataFrame) -> pl.DataFrame:
    """Recorded drop-off reasons of the period's non-converted contacts: reason, contacts, share."""
    recorded = labeled_period.filter(~pl.col("converted") & pl.col("dropoff_label").is_not_null())
    return (
        recorded.group_by(pl.col("dropoff_label").cast(pl.String).alias("reason"))
        .agg(pl.len().alias("contacts"))
        .with_columns((pl.col("contacts") / pl.col("contacts").sum()).alias("share"))
        .sort("contacts", descending=True)
    )


def estimated_reasons(champion: Champion, features: pl.DataFrame) -> pl.DataFrame:
    """Model-estimated reasons for non-converters without a recorded one: reason, expected contacts, share.

    The expected count of a reason is the sum of its predicted probability over the contacts.
    """
    class_names = list(champion.card["class_names"])
    if features.height == 0:
        return pl.DataFrame(
            {
                "reason": class_names,
                "contacts": [0.0] * len(class_names),
                "share": [0.0] * len(class_names),
            }
        )
    probabilities = champion.probability(champion.matrix(features))
    expected = probabilities.sum(axis=0)
    return pl.DataFrame(
        {
            "reason": class_names,
            "contacts": expected.astype(float),
            "share": (expected / expected.sum()).astype(float),
        }
    ).sort("contacts", descending=True)


def weekly_reason_shares(labeled_window: pl.DataFrame) -> pl.DataFrame:
    """Per week (Monday start): share of each recorded reason among non-converters with a reason."""
    recorded = labeled_window.filter(~pl.col("converted") & pl.col("dropoff_label").is_not_null())
    return (
        recorded.with_columns(
            pl.col("started_at").dt.truncate("1w").alias("week"),
            pl.col("dropoff_label").cast(pl.String).alias("reason"),
        )
        .group_by("week", "reason")
        .agg(pl.len().alias("contacts"))
        .with_columns((pl.col("contacts") / pl.col("contacts").sum().over("week")).alias("share"))
        .sort("week", "reason")
    )
