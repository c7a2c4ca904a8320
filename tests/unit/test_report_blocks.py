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


def test_breakdown_marks_best_and_worst_only_where_the_interval_excludes_the_overall_rate():
    rows = [("a1", "phone", i % 5, i < 100) for i in range(200)]  # 50%
    rows += [("a1", "chat", i % 5, i < 20) for i in range(200)]  # 10%: credibly below
    rows += [("a1", "email", i % 5, i < 170) for i in range(200)]  # 85%: credibly above
    rows += [("a1", "sms", i % 5, i < 4) for i in range(5)]  # 80% but of 5: not credible
    labeled = _labeled(rows)
    period = Period(START.replace(hour=0), START.replace(hour=0) + timedelta(days=7))
    table = breakdown(labeled, period, "channel")
    ranks = dict(zip(table["group"], table["rank"], strict=True))
    assert ranks == {"email": "best", "chat": "worst", "phone": "", "sms": ""}
    verdict = dict(zip(table["group"], table["vs_overall"], strict=True))
    assert verdict == {"email": "above", "chat": "below", "phone": "within", "sms": "within"}
    expected = kpi_table(labeled, by=["channel"]).sort("channel")
    assert sorted(table["contacts"].to_list()) == sorted(expected["contacts"].to_list())
    row = table.filter(pl.col("group") == "email").row(0, named=True)
    assert row["ratio_low"] < row["contact_to_order_ratio"] < row["ratio_high"]


def test_breakdown_marks_nothing_when_groups_differ_only_by_chance():
    rows = [("a1", "phone", i % 5, i % 7 == 0) for i in range(80)]
    rows += [("a1", "chat", i % 5, i % 6 == 0) for i in range(80)]
    rows += [("a1", "email", i % 5, i % 8 == 0) for i in range(80)]
    period = Period(START.replace(hour=0), START.replace(hour=0) + timedelta(days=7))
    table = breakdown(_labeled(rows), period, "channel")
    assert set(table["rank"]) == {""}
    assert set(table["vs_overall"]) == {"within"}


def test_a_change_is_marked_only_when_the_test_says_so():
    # Previous week phone 20/100 and chat 20/100; this week phone 45/100 (real), chat 23/100.
    rows = [("a1", "phone", i % 5, i < 20) for i in range(100)]
    rows += [("a1", "chat", i % 5, i < 20) for i in range(100)]
    rows += [("a1", "phone", 7 + i % 5, i < 45) for i in range(100)]
    rows += [("a1", "chat", 7 + i % 5, i < 23) for i in range(100)]
    period = Period(
        START.replace(hour=0) + timedelta(days=7), START.replace(hour=0) + timedelta(days=14)
    )
    table = breakdown(_labeled(rows), period, "channel")
    marked = dict(zip(table["group"], table["change_marked"], strict=True))
    assert marked == {"phone": True, "chat": False}
    change = dict(zip(table["group"], table["ratio_change"], strict=True))
    assert change["phone"] == pytest.approx(0.25) and change["chat"] == pytest.approx(0.03)


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


def test_exported_csv_holds_exactly_the_rows_and_columns_of_its_table(tmp_path):
    """The CSV beside the page equals the table: same headings, rows, and values behind the text."""
    frame = pl.DataFrame(
        {
            "group": ["phone", "chat", "web_form"],
            "contacts": [1200, 340, 75],
            "contact_to_order_ratio": [0.1512345, 0.12, None],
            "note": ["a, b", 'say "hi"', None],
        }
    )
    columns = (
        html.ColumnFormat("group", "Group"),
        html.ColumnFormat("contacts", "Contacts", html.fmt_count, numeric=True),
        html.ColumnFormat("contact_to_order_ratio", "Led to an order", html.fmt_percent, True),
        html.ColumnFormat("note", "Note"),
    )
    exports = html.Exports("report_tables")
    rendered = html.table(frame, columns, table_id="by-channel", exports=exports)
    assert 'href="report_tables/by-channel.csv"' in rendered
    (path,) = exports.write(tmp_path / "report_tables")
    back = pl.read_csv(path)
    assert back.columns == ["Group", "Contacts", "Led to an order", "Note"]
    assert back["Group"].to_list() == ["phone", "chat", "web_form"]
    assert back["Contacts"].to_list() == [1200, 340, 75]
    assert back["Led to an order"].to_list() == [0.1512345, 0.12, None]
    assert back["Note"].to_list() == ["a, b", 'say "hi"', None]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", rendered)
    assert cells[:4] == ["phone", "1,200", "15.1%", "a, b"]
    with pytest.raises(ValueError, match="share the id"):
        html.table(frame, columns, table_id="by-channel", exports=exports)


def test_filters_parse_and_reject_unknown_columns_and_values():
    from reports.driver import apply_filters, parse_filters

    filters = parse_filters(["channel=phone", "channel=chat", "segment=enterprise"])
    assert filters == {"channel": ("phone", "chat"), "segment": ("enterprise",)}
    with pytest.raises(CTOError, match="filterable columns"):
        parse_filters(["colour=red"])
    with pytest.raises(CTOError, match="COLUMN=VALUE"):
        parse_filters(["channel"])
    labeled = _labeled(
        [("a1", "phone", 0, True), ("a2", "chat", 0, False), ("a3", "email", 1, True)]
    )
    kept = apply_filters(labeled, {"channel": ("phone", "chat")})
    assert sorted(kept["channel"].to_list()) == ["chat", "phone"]
    with pytest.raises(CTOError, match="values in the data: chat, email, phone"):
        apply_filters(labeled, {"channel": ("fax",)})
