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


@dataclass(frozen=True)
class ActionCosts:
    """What a follow-up and a callback cost, in the unit of ``order_value`` (settings, ``CTO_*``).

    An uplift-gated rule acts only where ``uplift x order_value`` beats the action's cost. With
    the defaults (order value 1) costs are in orders: a follow-up is worth sending where it adds
    more than 0.01 expected orders.
    """

    order_value: float = 1.0
    follow_up_cost: float = 0.01
    callback_cost: float = 0.02

    @classmethod
    def from_settings(cls, settings: Any) -> ActionCosts:
        return cls(settings.order_value, settings.follow_up_cost, settings.callback_cost)

    def pays(self, uplift: float | None, cost: float) -> bool | None:
        """True / False when the uplift is known, None when it is not (the rules alone decide)."""
        if uplift is None:
            return None
        return uplift * self.order_value > cost

    def gain_text(self, uplift: float, cost: float) -> str:
        gain = uplift * self.order_value
        return f"expected gain {gain:+.3f} {'>' if gain > cost else '<='} cost {cost:g}"


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
        "abandoned_callback",
        "callback",
        "the customer abandoned the contact before being served, and a callback pays (see below)",
    ),
    Rule(
        "long_wait_callback",
        "callback",
        "the wait was long (>= 5 min live, >= 24 h written) and the request was not resolved, or the "
        "likeliest drop-off reason is long_wait / slow_response; and a callback pays",
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
        "no follow-up was sent, or the likeliest drop-off reason is no_follow_up, or the follow-up "
        "uplift says one pays; and a follow-up pays",
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


# How the uplift models gate the rules, for docs/api.md (after the rule table).
UPLIFT_GATE_TEXT = (
    "**A callback / follow-up pays** when its uplift model is registered (champion), ranked its "
    "randomised test rows better than random targeting (model card `details.informative`: Qini "
    "above the random mean plus one sd), and `uplift x order_value` exceeds the action's cost (`callback_uplift` against "
    "`CTO_CALLBACK_COST`, `follow_up_uplift` against `CTO_FOLLOW_UP_COST`, both in the unit of "
    "`CTO_ORDER_VALUE`, default 1: costs in orders). A rule whose action does not pay is passed "
    "over and the next rule that holds fires; its reason names the action passed over and why. "
    "When the uplift model is not registered or not informative (or the decision does not exist "
    "for the contact: the uplift is null), the action counts as paying and the rules decide "
    "alone, as before the uplift models."
)


def next_action(
    contact: Mapping[str, Any],
    probability: float,
    reasons: Mapping[str, float] | None,
    uplift: Mapping[str, float | None] | None = None,
    costs: ActionCosts | None = None,
) -> Action:
    """The first rule of :data:`NEXT_ACTION_RULES` that holds for this ended contact.

    ``uplift`` ({"follow_up": u, "callback": u}, None where unknown) gates the follow-up and
    callback rules through ``costs`` (:data:`UPLIFT_GATE_TEXT`).
    """
    costs = costs or ActionCosts()
    uplift = uplift or {}
    follow_up_u, callback_u = uplift.get("follow_up"), uplift.get("callback")
    callback_pays = costs.pays(callback_u, costs.callback_cost)
    follow_up_pays = costs.pays(follow_up_u, costs.follow_up_cost)
    passed_over: list[str] = []
    action = _first_rule(
        contact,
        probability,
        reasons,
        pays={"callback": callback_pays, "follow_up": follow_up_pays},
        passed_over=passed_over,
        costs=costs,
        uplift=uplift,
    )
    if passed_over:
        action = Action(action.action, action.rule, action.reason + "; " + "; ".join(passed_over))
    return action


def _first_rule(
    contact: Mapping[str, Any],
    probability: float,
    reasons: Mapping[str, float] | None,
    *,
    pays: Mapping[str, bool | None],
    passed_over: list[str],
    costs: ActionCosts,
    uplift: Mapping[str, float | None],
) -> Action:
    callback_pays, follow_up_pays = pays["callback"], pays["follow_up"]
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

    def pass_over(action: str, key: str, cost: float) -> None:
        text = f"{action} passed over: {costs.gain_text(uplift[key], cost)}"  # type: ignore[arg-type]
        if text not in passed_over:
            passed_over.append(text)

    def gain(key: str, cost: float) -> str:
        value = uplift.get(key)
        return "" if value is None else f" ({costs.gain_text(value, cost)})"

    callback_rule_holds = contact.get("abandoned") or (
        (long_wait and resolved is False) or confident in ("long_wait", "slow_response")
    )
    if callback_rule_holds and callback_pays is False:
        pass_over("callback", "callback", costs.callback_cost)
    elif contact.get("abandoned"):
        return fire(
            "abandoned_callback",
            f"left after waiting {_minutes(wait)}: call back"
            + gain("callback", costs.callback_cost),
        )
    elif (long_wait and resolved is False) or confident in ("long_wait", "slow_response"):
        return fire(
            "long_wait_callback",
            f"waited {_minutes(wait)}"
            + (f"; likeliest drop-off reason {confident} ({likeliest_p:.0%})" if confident else "")
            + ": call back at a time that suits the customer"
            + gain("callback", costs.callback_cost),
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
    follow_up_holds = (
        contact.get("follow_up_sent") is False
        or confident == "no_follow_up"
        or (follow_up_pays is True and contact.get("follow_up_sent") is not True)
    )
    if follow_up_holds and follow_up_pays is False:
        pass_over("send_follow_up", "follow_up", costs.follow_up_cost)
    elif follow_up_holds:
        return fire(
            "missing_follow_up",
            "no follow-up was sent: send the quote or summary now"
            + gain("follow_up", costs.follow_up_cost),
        )
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
    lines += ["", UPLIFT_GATE_TEXT]
    return "\n".join(lines)
