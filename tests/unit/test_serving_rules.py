"""Priority tiers, next-action rules and plain-language drivers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving import rules
from serving.explain import Reference, driver_text, format_value, top_indices

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"

ENDED = {
    "channel": "phone",
    "wait_seconds": 60.0,
    "transfers": 0,
    "abandoned": False,
    "resolved": True,
    "follow_up_sent": True,
}


@pytest.mark.parametrize(
    ("probability", "tier"),
    [(0.9, "P1"), (0.40, "P1"), (0.399, "P2"), (0.2, "P2"), (0.1, "P3"), (0.01, "P4")],
)
def test_priority_tiers(probability, tier):
    assert rules.priority_tier(probability) == tier


@pytest.mark.parametrize(
    ("changes", "reasons", "probability", "rule"),
    [
        ({"abandoned": True}, None, 0.5, "abandoned_callback"),
        ({"wait_seconds": 540.0, "resolved": False}, None, 0.5, "long_wait_callback"),
        ({"wait_seconds": 540.0, "resolved": True}, None, 0.5, "likely_order_close"),
        (
            {"channel": "email", "wait_seconds": 600.0, "resolved": False},
            None,
            0.5,
            "unresolved_issue",
        ),
        ({}, {"long_wait": 0.6, "price": 0.4}, 0.1, "long_wait_callback"),
        ({"transfers": 3}, None, 0.3, "repeat_explanation_senior"),
        ({}, {"repeat_explanation": 0.5, "price": 0.5}, 0.3, "repeat_explanation_senior"),
        ({"follow_up_sent": False}, None, 0.3, "missing_follow_up"),
        ({}, {"price": 0.7, "other": 0.3}, 0.3, "price_review"),
        ({}, {"price": 0.3, "other": 0.3, "unresolved": 0.4}, 0.3, "nurture"),  # not confident
        ({}, {"out_of_stock": 0.5}, 0.3, "out_of_stock_alternative"),
        ({}, {"high_effort": 0.5}, 0.3, "high_effort_specialist"),
        ({}, None, 0.02, "no_action"),
    ],
)
def test_next_action_rules_fire_in_documented_order(changes, reasons, probability, rule):
    action = rules.next_action(ENDED | changes, probability, reasons)
    assert action.rule == rule
    assert action.action == {r.rule: r.action for r in rules.NEXT_ACTION_RULES}[rule]
    assert action.reason


COSTS = rules.ActionCosts(order_value=1.0, follow_up_cost=0.05, callback_cost=0.02)


@pytest.mark.parametrize(
    ("changes", "uplift", "rule", "passed_over"),
    [
        # Unknown uplift (model not registered, or decision not for this contact): rules alone.
        ({"follow_up_sent": False}, {"follow_up": None}, "missing_follow_up", None),
        ({"abandoned": True}, {}, "abandoned_callback", None),
        # The gain beats the cost: the rule fires and says what it expects.
        ({"follow_up_sent": False}, {"follow_up": 0.08}, "missing_follow_up", None),
        ({"abandoned": True}, {"callback": 0.03}, "abandoned_callback", None),
        # It does not: the rule is passed over and the next one that holds fires.
        ({"follow_up_sent": False}, {"follow_up": 0.01}, "nurture", "send_follow_up"),
        (
            {"abandoned": True, "resolved": False},
            {"callback": -0.004},
            "unresolved_issue",
            "callback",
        ),
        # A follow-up that pays is recommended even where none was recorded as missing.
        ({"follow_up_sent": None}, {"follow_up": 0.2}, "missing_follow_up", None),
        ({"follow_up_sent": True}, {"follow_up": 0.2}, "nurture", None),
    ],
)
def test_uplift_gates_the_follow_up_and_callback_rules(changes, uplift, rule, passed_over):
    action = rules.next_action(ENDED | changes, 0.3, None, uplift, COSTS)
    assert action.rule == rule
    if passed_over:
        assert f"{passed_over} passed over: expected gain" in action.reason
        assert "<= cost" in action.reason
    else:
        assert "passed over" not in action.reason
    value = next((v for v in uplift.values() if v is not None), None)
    if value is not None and rule in ("missing_follow_up", "abandoned_callback"):
        assert f"expected gain {value:+.3f} > cost" in action.reason


def test_order_value_scales_the_gain():
    contact = ENDED | {"follow_up_sent": False}
    cheap = rules.ActionCosts(order_value=1.0, follow_up_cost=0.5)
    valuable = rules.ActionCosts(order_value=100.0, follow_up_cost=0.5)
    assert rules.next_action(contact, 0.3, None, {"follow_up": 0.02}, cheap).rule == "nurture"
    fired = rules.next_action(contact, 0.3, None, {"follow_up": 0.02}, valuable)
    assert fired.rule == "missing_follow_up"


def test_docs_show_the_rule_tables_as_coded():
    assert rules.rules_markdown() in DOCS.read_text()


def test_driver_reads_like_a_person_wrote_it():
    levels = np.linspace(0, 1, 101)
    values = np.quantile(np.random.default_rng(0).exponential(120, 20_000), levels)
    reference = Reference.from_lists(levels, values)
    text, percentile = driver_text("wait_seconds", 540.0, -0.8, reference)
    assert text.startswith("waited 9 min, longer than 9")
    assert text.endswith(": -0.80")
    assert 98 < percentile <= 100
    short, low = driver_text("wait_seconds", 10.0, 0.25, reference)
    assert "shorter than" in short and low < 10


def test_a_common_value_reads_same_as():
    levels = np.linspace(0, 1, 101)
    values = np.quantile(np.r_[np.zeros(7000), np.ones(2000), np.full(1000, 2.0)], levels)
    text, _ = driver_text("transfers", 0, 0.1, Reference.from_lists(levels, values))
    assert "same as 70% of contacts" in text


def test_flags_windows_and_categories_have_phrases():
    assert driver_text("follow_up_sent", 0, -0.5, None)[0] == "no follow-up sent: -0.50"
    assert driver_text("contacts_7d", 3, 0.2, None)[0] == "3 contacts in the last 7 days: +0.20"
    assert driver_text("intent", "pricing", 0.1, None)[0] == "intent pricing: +0.10"
    assert driver_text("agent_conversion_rate", 0.125, 0.1, None)[0].startswith(
        "agent converts at 12%"
    )
    assert format_value("days_since_last_order", 3.0) == "3.0 days"
    assert format_value("x", None) == "unknown"


def test_top_indices_by_absolute_contribution():
    contributions = np.array([0.1, -0.5, 0.3, 0.0])
    assert top_indices(contributions, 2).tolist() == [1, 2]
    assert top_indices(contributions, 10).tolist() == [1, 2, 0, 3]
    assert top_indices(contributions, 0).tolist() == []
