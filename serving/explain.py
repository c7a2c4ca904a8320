"""Plain-language drivers from SHAP contributions.

A driver reads like ``waited 9 min, longer than 90% of contacts: -0.80``: what the contact's value
is, where it sits among the reference (training) contacts, and how much it moved the log-odds of
an order. The value's position comes from the per-feature reference quantiles in the model card;
phrasing comes from the feature's name pattern (a small table below), falling back to the card's
description so a new feature still gets a readable line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# A share of reference contacts at least this large sharing the exact value reads "same as".
TIE_SHARE = 0.2

_PERIODS = {"1d": "last day", "7d": "last 7 days", "30d": "last 30 days", "90d": "last 90 days"}
_WINDOWED = re.compile(r"^(?P<base>.+)_(?P<window>1d|7d|30d|90d|lifetime)$")

# Phrase templates; {v} is the formatted value.
_PHRASES = {
    "wait_seconds": "waited {v}",
    "handle_seconds": "handled in {v}",
    "transfers": "transferred {v} times",
    "hour_of_day": "started at {v}:00 UTC",
    "day_of_week": "weekday {v} (1 = Monday)",
    "tenure_days": "customer for {v}",
    "days_since_last_contact": "last contact {v} ago",
    "days_since_last_order": "last order {v} ago",
    "journey_contacts": "{v} earlier contacts in this journey",
    "journey_age_hours": "journey open for {v}",
    "intent_conversion_rate": "intent converts at {v}",
    "channel_conversion_rate": "channel converts at {v}",
    "agent_conversion_rate": "agent converts at {v}",
}
_FLAGS = {
    "abandoned": ("abandoned before being served", "not abandoned"),
    "resolved": ("resolved", "not resolved"),
    "callback_offered": ("callback offered", "no callback offered"),
    "follow_up_sent": ("follow-up sent", "no follow-up sent"),
    "prev_unresolved": ("previous contact unresolved", "previous contact resolved"),
    "channel_switch": ("switched channel", "same channel as before"),
}
_WINDOW_PHRASES = {
    "contacts": "{v} contacts",
    "channels_used": "{v} channels used",
    "channel_switches": "{v} channel switches",
    "wait_mean": "mean wait {v}",
    "wait_max": "longest wait {v}",
    "abandons": "{v} abandoned contacts",
    "transfers": "{v} transfers",
    "unresolved": "{v} unresolved contacts",
    "bot_only": "{v} bot-only contacts",
    "orders": "{v} orders",
    "spend": "spent {v}",
}


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _unit(name: str) -> str:
    if name.endswith("_seconds") or name.startswith("wait_"):
        return "seconds"
    if name.endswith("_hours"):
        return "hours"
    if name.endswith("_days") or name.startswith("days_"):
        return "days"
    if name.endswith("_rate"):
        return "share"
    if name.startswith("spend"):
        return "money"
    return "number"


def format_value(name: str, value: object) -> str:
    """The value with a unit a person reads (9 min, 3.0 days, 12%)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if isinstance(value, str):
        return value
    number = float(value)  # type: ignore[arg-type]
    unit = _unit(name)
    if unit == "seconds":
        return _duration(number)
    if unit == "hours":
        return _duration(number * 3600)
    if unit == "days":
        return _duration(number * 86_400)
    if unit == "share":
        return f"{number:.0%}"
    if unit == "money":
        return f"{number:,.2f}"
    return f"{number:.0f}" if number == int(number) else f"{number:.3g}"


def phrase(name: str, value: object) -> str:
    """What the value says about this contact, without the comparison."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if name in _FLAGS and not missing and not isinstance(value, str):
        yes, no = _FLAGS[name]
        return yes if float(value) >= 0.5 else no  # type: ignore[arg-type]
    formatted = format_value(name, value)
    if isinstance(value, str):
        return f"{name.replace('_', ' ')} {formatted}"
    if name in _PHRASES:
        return _PHRASES[name].format(v=formatted)
    match = _WINDOWED.match(name)
    if match and match["base"] in _WINDOW_PHRASES:
        text = _WINDOW_PHRASES[match["base"]].format(v=formatted)
        period = _PERIODS.get(match["window"])
        return f"{text} in the {period}" if period else f"{text} ever"
    return f"{name.replace('_', ' ')} {formatted}"


@dataclass(frozen=True)
class Reference:
    """Reference quantiles of one feature from the training rows: ``values[i]`` at ``levels[i]``."""

    levels: np.ndarray  # increasing, in [0, 1]
    values: np.ndarray  # non-decreasing

    @classmethod
    def from_lists(
        cls, levels: Sequence[float], values: Sequence[float | None]
    ) -> Reference | None:
        values_array = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
        keep = ~np.isnan(values_array)
        if keep.sum() < 2:
            return None
        return cls(np.asarray(levels, dtype=np.float64)[keep], values_array[keep])

    def share_below_and_at(self, value: float) -> tuple[float, float]:
        """(share of reference contacts strictly below, share at or below), interpolated."""
        lo = np.interp(value, self.values, self.levels, left=0.0, right=1.0)
        # With ties (e.g. 70% of contacts had 0 transfers) the quantile function is flat: the
        # share strictly below is the first level reaching the value, at-or-below the last.
        first = np.searchsorted(self.values, value, side="left")
        last = np.searchsorted(self.values, value, side="right")
        if last > first:
            below = self.levels[first - 1] if first > 0 else 0.0
            # The first level whose value exceeds the tie bounds the share at or below it.
            at = self.levels[last] if last < len(self.levels) else 1.0
            return float(below), float(max(at, below))
        return float(lo), float(lo)


def comparison(
    name: str, value: object, reference: Reference | None
) -> tuple[str | None, float | None]:
    """("longer than 90% of contacts", 90.0) or (None, None) when there is nothing to compare."""
    if reference is None or value is None or isinstance(value, str):
        return None, None
    number = float(value)  # type: ignore[arg-type]
    if math.isnan(number):
        return None, None
    below, at = reference.share_below_and_at(number)
    percentile = round(100.0 * (below + at) / 2.0, 1)
    duration = _unit(name) in ("seconds", "hours", "days")
    if at - below >= TIE_SHARE:
        return f"same as {100 * (at - below):.0f}% of contacts", percentile
    if percentile >= 50:
        word = "longer" if duration else "higher"
        return f"{word} than {min(100 * below, 99):.0f}% of contacts", percentile
    word = "shorter" if duration else "lower"
    return f"{word} than {min(100 * (1 - at), 99):.0f}% of contacts", percentile


def driver_text(
    name: str, value: object, contribution: float, reference: Reference | None
) -> tuple[str, float | None]:
    """The full plain-language line and the value's percentile among reference contacts."""
    compared, percentile = comparison(name, value, reference)
    text = phrase(name, value)
    if compared:
        text = f"{text}, {compared}"
    return f"{text}: {contribution:+.2f}", percentile


def top_indices(contributions: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest absolute contributions, largest first (one row)."""
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    k = min(k, contributions.shape[0])
    part = np.argpartition(-np.abs(contributions), k - 1)[:k]
    return part[np.argsort(-np.abs(contributions[part]), kind="stable")]
