"""The report's building blocks: periods, breakdowns, agent ranking, HTML safety, offline SVG."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from features.errors import CTOError
from features.kpis import kpi_table
from features.labels import label_contacts
from reports import html, plots
from reports.kpis import Period, agent_extremes, breakdown, headline, resolve_period, weekly_trend

START = datetime(2026, 3, 2, 9, tzinfo=UTC)  # a Monday


def _labeled(rows: list[tuple[str, str, int, bool]]) -> pl.DataFrame:
    """Contacts (customer, group, day offset, ordered-after) labelled by the real label code."""
    contacts = pl.DataFrame(
        {
            "contact_id": [f"c{i}" for i in range(len(rows))],
            "customer_id": [f"u{i}" for i in range(len(rows))],
            "started_at": [START + timedelta(days=day) for _, _, day, _ in rows],
            "channel": [group for _, group, _, _ in rows],
            "agent_id": [agent for agent, _, _, _ in rows],
        }
    )
    orders = pl.DataFrame(
        {
            "customer_id": [f"u{i}" for i, row in enumerate(rows) if row[3]],
            "ordered_at": [START + timedelta(days=row[2], hours=5) for row in rows if row[3]],
        },
        schema={"customer_id": pl.String, "ordered_at": pl.Datetime("us", "UTC")},
    )
    return label_contacts(contacts, orders, 7, 14)


def test_period_is_inclusive_and_previous_has_the_same_length():
    period = Period.from_dates(date(2026, 3, 1), date(2026, 3, 28))
    assert period.days == 28
    assert period.end == datetime(2026, 3, 29, tzinfo=UTC)
    previous = period.previous()
    assert previous.end == period.start and previous.days == 28
    with pytest.raises(CTOError, match="before --since"):
        Period.from_dates(date(2026, 3, 5), date(2026, 3, 1))


def test_default_period_ends_where_outcomes_are_known():
    data_end = datetime(2026, 6, 30, 18, tzinfo=UTC)
    period = resolve_period(None, None, datetime(2026, 1, 1, tzinfo=UTC), data_end, horizon_days=7)
    assert period.end <= data_end - timedelta(days=7)
    assert period.days == 28
    with pytest.raises(CTOError, match="has no data"):
        resolve_period(
            date(2027, 1, 1), date(2027, 1, 31), datetime(2026, 1, 1, tzinfo=UTC), data_end, 7
        )


def test_headline_compares_with_the_previous_period():
    # Previous week: 1 of 4 contacts ordered; this week: 3 of 4.
    rows = [("a1", "phone", d, o) for d, o in ((0, True), (1, False), (2, False), (3, False))]
    rows += [("a1", "phone", d, o) for d, o in ((7, True), (8, True), (9, True), (10, False))]
    labeled = _labeled(rows)
    period = Period(
        START.replace(hour=0) + timedelta(days=7), START.replace(hour=0) + timedelta(days=14)
    )
    values = {v.key: v for v in headline(labeled, period)}
    ratio = values["contact_to_order_ratio"]
    assert ratio.current == pytest.approx(0.75) and ratio.previous == pytest.approx(0.25)
    assert ratio.change == pytest.approx(0.5)
    assert values["contacts_per_order"].current == pytest.approx(4 / 3)


def test_breakdown_ranks_only_groups_with_enough_contacts():
    rows = [("a1", "phone", i % 5, i < 30) for i in range(60)]  # 50%
    rows += [("a1", "chat", i % 5, i < 10) for i in range(60)]  # 17%
    rows += [("a1", "email", i % 5, i < 50) for i in range(60)]  # 83%
    rows += [("a1", "sms", i % 5, True) for i in range(5)]  # 100% but only 5 contacts
    labeled = _labeled(rows)
    period = Period(START.replace(hour=0), START.replace(hour=0) + timedelta(days=7))
    table = breakdown(labeled, period, "channel", min_contacts=50)
    ranks = dict(zip(table["group"], table["rank"], strict=True))
    assert ranks == {"email": "best", "chat": "worst", "phone": "", "sms": ""}
    expected = kpi_table(labeled, by=["channel"]).sort("channel")
    assert sorted(table["contacts"].to_list()) == sorted(expected["contacts"].to_list())


def test_agent_extremes_leave_out_low_volume_agents():
    rows = []
    for agent, share in (("a1", 0.1), ("a2", 0.3), ("a3", 0.5), ("a4", 0.7)):
        rows += [(agent, "phone", i % 5, i < share * 40) for i in range(40)]
    rows += [("tiny", "phone", 0, True) for _ in range(3)]
    labeled = _labeled(rows)
    period = Period(START.replace(hour=0), START.replace(hour=0) + timedelta(days=7))
    table, ranked, left_out = agent_extremes(labeled, period, shown=1, min_contacts=30)
    assert (ranked, left_out) == (4, 1)
    assert dict(zip(table["group"], table["rank"], strict=True)) == {"a4": "best", "a1": "worst"}


def test_weekly_trend_covers_the_period_in_monday_weeks():
    rows = [("a1", "phone", d, d % 3 == 0) for d in range(0, 70)]
    labeled = _labeled(rows)
    period = Period(
        START.replace(hour=0) + timedelta(days=42), START.replace(hour=0) + timedelta(days=70)
    )
    weekly = weekly_trend(labeled, period, weeks=6)
    assert weekly["period_start"].dt.weekday().to_list() == [1] * weekly.height
    assert weekly["contacts"].sum() == 42


def test_tables_escape_untrusted_text():
    frame = pl.DataFrame({"group": ['<script>alert("x")</script>'], "contacts": [3]})
    rendered = html.table(
        frame,
        (
            html.ColumnFormat("group", "Group"),
            html.ColumnFormat("contacts", "Contacts", html.fmt_count, True),
        ),
    )
    assert "<script>" not in rendered and "&lt;script&gt;" in rendered


def test_kpi_card_colours_the_change_by_what_is_better():
    better = html.Kpi("contacts_per_order", "Contacts per order", 7.0, "7.0", 8.0, "-1", False, "")
    worse = html.Kpi("contact_to_order_ratio", "Ratio", 0.10, "10%", 0.12, "-2", True, "")
    assert better.tone == "good" and worse.tone == "bad"
    assert 'data-value="7.0"' in better.render() and 'data-previous="8.0"' in better.render()


def test_document_forbids_external_resources():
    page = html.document("T", "S", [html.Section("a", "A", "lead")], "footer")
    assert "default-src 'none'" in page and "<script" not in page


def test_charts_are_inline_svg_with_text_as_paths():
    svg = plots.ranked_bars(["phone", "chat", "email"], [0.1, 0.2, 0.15], xlabel="share")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "<text" not in svg  # glyphs drawn as paths: no font needed on the reader's machine
    assert not re.search(r'href="(https?:)?//', svg)
    rng = np.random.default_rng(0)
    dependence = plots.dependence(
        rng.random(500) * 10, rng.normal(0, 0.02, 500), xlabel="wait (minutes)"
    )
    assert dependence.startswith("<svg")


def test_every_registered_feature_gets_a_plain_name():
    from features.registry import FEATURE_SET
    from reports.explain import axis_label, plain_name

    for feature in FEATURE_SET.features:
        name = plain_name(feature.name)
        assert "_" not in name, feature.name
    assert plain_name("wait_mean_30d") == "Average wait in the last 30 days"
    assert axis_label("wait_seconds") == "Waiting time (minutes)"
