"""Routing rules: priority tiers and the recommended next action after a contact.

Both are documented in docs/api.md (tables generated from the constants here are checked by
``tests/unit/test_serving_rules.py``), so a routing engine can rely on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from features.schema import WRITTEN_CHANNELS

# Tier floors on the calibrated conversion probability, highest tier first. With a typical
# 10-15% base rate, P1 is roughly 3x the base rate, P2 above it, P3 around it, P4 well below.
PRIORITY_FLOORS: tuple[tuple[str, float], ...] = (
    ("P1", 0.40),
    ("P2", 0.20),
    ("P3", 0.08),
    ("P4", 0.0),
)
PRIORITY_MEANING = {
    "P1": "likely to order: serve or call back first, best agents",
    "P2": "above the usual rate: serve soon",
    "P3": "around the usual rate: normal queue",
    "P4": "unlikely to order now: low-cost channel or nurture",
}

# A wait counts as long from here: live channels queue in seconds, written ones reply in hours.
LONG_WAIT_SECONDS_LIVE = 300.0
LONG_WAIT_SECONDS_WRITTEN = 24 * 3600.0
# The model's most likely drop-off reason drives a rule only when it is this probable.
REASON_CONFIDENCE = 0.35
REPEAT_TRANSFERS = 2


def priority_tier(probability: float) -> str:
    for tier, floor in PRIORITY_FLOORS:
        if probability >= floor:
            return tier
    return PRIORITY_FLOORS[-1][0]


@dataclass(frozen=True)
class Action:
    action: str
    rule: str
    reason: str


@dataclass(frozen=True)
class Rule:
    rule: str
    action: str
    when: str  # the documented condition, in words


# Evaluated top to bottom; the first that holds gives the action. Observed facts come before the
# model's guess at the reason, because they are certain.
NEXT_ACTION_RULES: tuple[Rule, ...] = (
    Rule(
        "abandoned_callback", "callback", "the customer abandoned the contact before being served"
    ),
    Rule(
        "long_wait_callback",
        "callback",
        "the wait was long (>= 5 min live, >= 24 h written) and the request was not resolved, or the "
        "likeliest drop-off reason is long_wait / slow_response",
    ),
    Rule(
        "repeat_explanation_senior",
        "senior_agent",
        f"the contact was transferred >= {REPEAT_TRANSFERS} times, or the likeliest drop-off reason "
        "is repeat_explanation",
    ),
    Rule(
        "missing_follow_up",
        "send_follow_up",
        "no follow-up was sent, or the likeliest drop-off reason is no_follow_up",
    ),
    Rule("high_effort_specialist", "specialist", "the likeliest drop-off reason is high_effort"),
    Rule("price_review", "price_review", "the likeliest drop-off reason is price"),
    Rule(
        "out_of_stock_alternative",
        "offer_alternative",
        "the likeliest drop-off reason is out_of_stock",
    ),
    Rule("unresolved_issue", "resolve_issue", "the request was not resolved"),
    Rule("likely_order_close", "close_sale", "priority P1: likely to order, make the offer now"),
    Rule("nurture", "nurture", "priority P2 or P3"),
    Rule("no_action", "none", "otherwise (P4, nothing to fix)"),
)
_RULES = {r.rule: r for r in NEXT_ACTION_RULES}


def _minutes(seconds: float) -> str:
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def next_action(
    contact: Mapping[str, Any], probability: float, reasons: Mapping[str, float] | None
) -> Action:
    """The first rule of :data:`NEXT_ACTION_RULES` that holds for this ended contact."""
    likeliest, likeliest_p = None, 0.0
    if reasons:
        likeliest, likeliest_p = max(reasons.items(), key=lambda item: item[1])
    confident = likeliest if likeliest_p >= REASON_CONFIDENCE else None
    wait = float(contact.get("wait_seconds") or 0.0)
    written = contact.get("channel") in WRITTEN_CHANNELS
    long_wait = wait >= (LONG_WAIT_SECONDS_WRITTEN if written else LONG_WAIT_SECONDS_LIVE)
    resolved = contact.get("resolved")
    transfers = int(contact.get("transfers") or 0)
    tier = priority_tier(probability)

    def fire(rule: str, reason: str) -> Action:
        return Action(_RULES[rule].action, rule, reason)

    if contact.get("abandoned"):
        return fire("abandoned_callback", f"left after waiting {_minutes(wait)}: call back")
    if (long_wait and resolved is False) or confident in ("long_wait", "slow_response"):
        return fire(
            "long_wait_callback",
            f"waited {_minutes(wait)}"
            + (f"; likeliest drop-off reason {confident} ({likeliest_p:.0%})" if confident else "")
            + ": call back at a time that suits the customer",
        )
    if transfers >= REPEAT_TRANSFERS or confident == "repeat_explanation":
        return fire(
            "repeat_explanation_senior",
            f"transferred {transfers} time(s)"
            + (
                f"; likeliest drop-off reason repeat_explanation ({likeliest_p:.0%})"
                if confident
                else ""
            )
            + ": hand to a senior agent who owns the case",
        )
    if contact.get("follow_up_sent") is False or confident == "no_follow_up":
        return fire("missing_follow_up", "no follow-up was sent: send the quote or summary now")
    if confident == "high_effort":
        return fire(
            "high_effort_specialist",
            f"high effort is the likeliest reason ({likeliest_p:.0%}): route to a specialist",
        )
    if confident == "price":
        return fire(
            "price_review", f"price is the likeliest reason ({likeliest_p:.0%}): review the offer"
        )
    if confident == "out_of_stock":
        return fire(
            "out_of_stock_alternative",
            f"out of stock is the likeliest reason ({likeliest_p:.0%}): offer an alternative",
        )
    if resolved is False:
        return fire("unresolved_issue", "the request was not resolved: resolve it before selling")
    if tier == "P1":
        return fire("likely_order_close", f"{probability:.0%} likely to order: make the offer now")
    if tier in ("P2", "P3"):
        return fire("nurture", f"{probability:.0%} likely to order: keep in touch")
    return fire("no_action", f"{probability:.0%} likely to order and nothing to fix")


def rules_markdown() -> str:
    """The rule tables for docs/api.md."""
    lines = ["| tier | conversion probability | meaning |", "| --- | --- | --- |"]
    upper = None
    for tier, floor in PRIORITY_FLOORS:
        band = f">= {floor:.2f}" if upper is None else f"{floor:.2f} - {upper:.2f}"
        lines.append(f"| {tier} | {band} | {PRIORITY_MEANING[tier]} |")
        upper = floor
    lines += ["", "| order | rule | action | when |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {i} | `{r.rule}` | `{r.action}` | {r.when} |"
        for i, r in enumerate(NEXT_ACTION_RULES, 1)
    ]
    return "\n".join(lines)
