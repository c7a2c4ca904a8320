"""The driver report: where and why contacts fail to become orders, in one offline HTML file.

``build_report`` reads and validates the data, labels contacts (features.labels), computes the
period's KPIs (features.kpis), explains them with the champion models from the MLflow registry
and writes one self-contained page (inline CSS and SVG, no scripts, no external requests), or a
PDF printed from it by headless Chromium. docs/reports.md describes each section.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from features.errors import CTOError
from features.settings import Settings, get_settings
from reports import html, plots
from reports import kpis as report_kpis
from reports.kpis import HeadlineValue, Period

TOP_DRIVERS = 8
DEPENDENCE_PLOTS = 3
# TreeSHAP on a sample is enough for global importance and keeps the report fast on big periods.
MAX_EXPLAINED_CONTACTS = 3_000
EXPLAIN_SEED = 11


@dataclass
class ReportData:
    """Everything read from the data directory, labelled."""

    contacts: pl.DataFrame
    orders: pl.DataFrame
    customers: pl.DataFrame | None
    labeled: pl.DataFrame
    observed_from: datetime
    observed_until: datetime
    rejected_rows: int
    source: str
    tables: dict | None = None  # the validated tables (for the data profile)


def load_report_data(data_dir: Path, settings: Settings) -> ReportData:
    from features.labels import label_contacts
    from features.validate import load_and_validate

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CTOError(
            f"data directory {data_dir} does not exist (set CTO_DATA_DIR or pass DATA_DIR)"
        )
    result = load_and_validate(data_dir)
    contacts = result.tables["contacts"]
    orders = result.tables["orders"]
    customers = result.tables.get("customers")
    if contacts.height == 0:
        raise CTOError(f"{data_dir}: no valid contacts to report on")
    labeled = label_contacts(contacts, orders, settings.horizon_days, settings.journey_gap_days)
    labeled = report_kpis.with_segment(labeled, customers)
    last_order = orders["ordered_at"].max() if orders.height else None
    observed_until = max(t for t in (contacts["started_at"].max(), last_order) if t is not None)
    rejected = int(sum(frame.height for frame in result.rejects.values()))
    return ReportData(
        contacts=contacts,
        orders=orders,
        customers=customers,
        labeled=labeled,
        observed_from=contacts["started_at"].min(),
        observed_until=observed_until,
        rejected_rows=rejected,
        source=str(data_dir),
        tables=result.tables,
    )


# ------------------------------------------------------------------------------------------------
# Formatting
# ------------------------------------------------------------------------------------------------


def _headline_cards(
    values: list[HeadlineValue], period: Period, change: report_kpis.RateChange
) -> str:
    previous_label = f"the previous {period.days} days"
    cards = []
    for value in values:
        significant: bool | None = None
        if value.key == "contact_to_order_ratio":
            label, higher_is_better = "Contacts that led to an order", True
            text = html.fmt_percent(value.current)
            low, high = change.interval
            if value.change is not None and change.p_value is not None:
                significant = change.marked
                verdict = (
                    f"a real change (p = {change.p_value:.3f})"
                    if change.marked
                    else f"within chance (p = {change.p_value:.2f})"
                )
                change_text = (
                    f"{value.change * 100:+.1f} points vs {previous_label} "
                    f"({html.fmt_percent(value.previous)}): {verdict}"
                )
            else:
                change_text = "no data for the previous period"
            explain = (
                f"95% interval {html.fmt_percent(low)} – {html.fmt_percent(high)}. Share of "
                "contacts followed by an order from the customer within the order horizon."
            )
        elif value.key == "contacts_per_order":
            label, higher_is_better = "Contacts per order", False
            text = html.fmt_number(value.current)
            change_text = (
                f"{value.change:+.2f} vs {previous_label} ({html.fmt_number(value.previous)})"
                if value.change is not None
                else "no data for the previous period"
            )
            explain = "Contacts handled for every order they led to: fewer is less effort per sale."
            significant = False  # no test on this ratio: its change is shown, not coloured
        else:
            label, higher_is_better = "Median time to order", False
            text = html.fmt_hours(value.current)
            change_text = (
                f"{'+' if value.change >= 0 else '−'}{html.fmt_hours(abs(value.change))} vs "
                f"{previous_label} ({html.fmt_hours(value.previous)})"
                if value.change is not None
                else "no data for the previous period"
            )
            explain = "From a contact to the order it led to, half of the orders came faster."
            significant = False
        cards.append(
            html.Kpi(
                key=value.key,
                label=label,
                raw=value.current,
                text=text,
                previous_raw=value.previous,
                change_text=change_text,
                higher_is_better=higher_is_better,
                explain=explain,
                significant=significant,
            ).render()
        )
    return f'<div class="kpis">{"".join(cards)}</div>'


CHANGE_RULE = (
    "A change against the previous period is coloured only when a two-proportion test finds it "
    "unlikely to be chance (p < 0.05); grey changes are within chance. Bars and intervals show the "
    "95% interval of each share (Jeffreys); a group is marked best or worst only when its interval "
    "lies entirely above or below the share of all contacts."
)


def _change_cell(row: dict) -> str:
    value = row.get("ratio_change")
    if value is None:
        return "–"
    number = float(value) * 100
    if not row.get("change_marked"):
        return f'<span class="neutral">{number:+.1f} pts</span>'
    css = "good" if number > 0 else "bad"
    return f'<span class="{css}">{number:+.1f} pts</span>'


_VERDICT_WORDS = {"above": "above", "below": "below", "within": "within chance"}


def _p_value(value: object) -> str:
    return "–" if value is None else f"{float(value):.3f}"


BREAKDOWN_COLUMNS = (
    html.ColumnFormat("group", "Group", lambda v: html.esc(str(v).replace("_", " "))),
    html.ColumnFormat("contacts", "Contacts", html.fmt_count, numeric=True),
    html.ColumnFormat("contact_to_order_ratio", "Led to an order", html.fmt_percent, numeric=True),
    html.ColumnFormat("ratio_low", "95% interval from", html.fmt_percent, numeric=True),
    html.ColumnFormat("ratio_high", "95% interval to", html.fmt_percent, numeric=True),
    html.ColumnFormat("vs_overall", "Vs all contacts", lambda v: _VERDICT_WORDS.get(v, "–")),
    html.ColumnFormat("ratio_change", "Change vs previous period", numeric=True, cell=_change_cell),
    html.ColumnFormat("change_p_value", "Change p-value", _p_value, numeric=True),
    html.ColumnFormat("contacts_per_order", "Contacts per order", html.fmt_number, numeric=True),
    html.ColumnFormat(
        "median_time_to_order_hours", "Median time to order", html.fmt_hours, numeric=True
    ),
)


def _breakdown_block(
    table: pl.DataFrame,
    title: str,
    overall_ratio: float | None,
    ident: str,
    exports: html.Exports,
) -> str:
    labels = [str(g).replace("_", " ") for g in table["group"].to_list()]
    chart = plots.ranked_bars(
        labels,
        table["contact_to_order_ratio"].fill_null(0).to_list(),
        xlabel="contacts that led to an order (bars: 95% interval)",
        reference=overall_ratio,
        reference_label="all contacts",
        annotations=[f"{c:,} contacts" for c in table["contacts"].to_list()],
        low=table["ratio_low"].fill_null(0).to_list(),
        high=table["ratio_high"].fill_null(0).to_list(),
        marks=table["rank"].to_list(),
    )
    return (
        f"<h3>{html.esc(title)}</h3>"
        + html.figure(
            chart,
            f"{title}: each bar with its 95% interval; green = best, red = worst, marked only "
            "where the interval excludes the share of all contacts (dashed line).",
        )
        + html.table(
            table,
            BREAKDOWN_COLUMNS,
            row_class=table["rank"].to_list(),
            table_id=ident,
            exports=exports,
        )
    )


# ------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------


def _headline_section(data: ReportData, period: Period) -> tuple[html.Section, dict]:
    values = report_kpis.headline(data.labeled, period)
    change = report_kpis.rate_change(data.labeled, period)
    overall = report_kpis.overall(data.labeled, period)
    section = html.Section(
        "headline",
        "Headline",
        f"{overall['contacts']:,} contacts and {overall['orders']:,} orders they led to, "
        f"{period.label}, against the {period.days} days before.",
    )
    section.add(
        _headline_cards(values, period, change), f'<p class="rule">{html.esc(CHANGE_RULE)}</p>'
    )
    unknown = report_kpis.unknown_outcomes(data.labeled, period, data.observed_until)
    if unknown:
        section.add(
            html.warning(
                f"{unknown:,} contacts of this period are too recent for their outcome to be known "
                "(the data ends before their order window closed): the share that led to an order "
                "is understated. Choose an earlier --until for final numbers."
            )
        )
    return section, overall


def _where_section(
    data: ReportData, period: Period, overall: dict, findings: list[str], exports: html.Exports
) -> html.Section:
    section = html.Section(
        "where",
        "Where contacts fail",
        "The same numbers by channel, request type and customer segment, and week by week, each "
        "share with its 95% interval. Best and worst are marked only where the interval excludes "
        "the share of all contacts.",
    )
    weekly = report_kpis.weekly_trend(data.labeled, period)
    if weekly.height:
        name = "contacts that led to an order"
        chart = plots.weekly_lines(
            weekly["period_start"].to_list(),
            {name: weekly["contact_to_order_ratio"].to_list()},
            ylabel="contacts that led to an order",
            shade_from=period.start,
            shade_until=period.end,
            bars=weekly["contacts"].to_list(),
            bands={name: (weekly["ratio_low"].to_list(), weekly["ratio_high"].to_list())},
        )
        section.add(
            "<h3>Week by week</h3>",
            html.figure(
                chart,
                "Weekly share of contacts that led to an order (line, 95% interval shaded; the axis "
                "starts at zero) and contacts per week (grey bars); the shaded weeks are this "
                "report's period.",
                exports=exports,
                data_id="weekly",
                data=weekly.select(
                    pl.col("period_start").dt.date().alias("Week starting"),
                    pl.col("contacts").alias("Contacts"),
                    pl.col("converted_contacts").alias("Led to an order (contacts)"),
                    pl.col("contact_to_order_ratio").alias("Led to an order"),
                    pl.col("ratio_low").alias("95% interval from"),
                    pl.col("ratio_high").alias("95% interval to"),
                ),
            ),
        )
    ratio = overall["contact_to_order_ratio"]
    for column, title in (
        ("channel", "By channel"),
        ("intent", "By request type"),
        ("segment", "By customer segment"),
    ):
        table = report_kpis.breakdown(data.labeled, period, column)
        if table.height:
            section.add(_breakdown_block(table, title, ratio, f"by-{column}", exports))
            findings.extend(_extremes_finding(table, title))
    return section


@dataclass
class Context:
    """What the model-based sections share: data, period, champions, the period's features."""

    data: ReportData
    period: Period
    models: object  # reports.models.ChampionSet
    features: pl.DataFrame | None
    rates: object  # features.rates.RateTables | None
    settings: Settings
    say: Callable[[str], None]
    findings: list[str]
    exports: html.Exports
    arrival_features: pl.DataFrame | None = None

    def fair_model(self) -> tuple[object, pl.DataFrame | None]:
        """The model for expected orders: the arrival champion (nothing the agent did), else the
        after-contact one (its agent features neutralised by the caller)."""
        if self.models is None:
            return None, None
        arrival = self.models.get("conversion-arrival")
        if arrival is not None and self.arrival_features is not None:
            return arrival, self.arrival_features
        return self.models.get("conversion-after-contact"), self.features


def _extremes_finding(table: pl.DataFrame, title: str) -> list[str]:
    """'By channel: weakest email (4.3%, 95% interval 2.9–6.1%) ...' for credible extremes only."""

    def describe(row: pl.DataFrame) -> str:
        group = str(row["group"][0]).replace("_", " ")
        return (
            f"{group} ({html.fmt_percent(row['contact_to_order_ratio'][0])}, 95% interval "
            f"{html.fmt_percent(row['ratio_low'][0])}–{html.fmt_percent(row['ratio_high'][0])})"
        )

    parts = []
    worst = table.filter(pl.col("rank") == "worst")
    best = table.filter(pl.col("rank") == "best")
    if worst.height:
        parts.append(f"weakest {describe(worst)}")
    if best.height:
        parts.append(f"strongest {describe(best)}")
    if not parts:
        return []
    return [f"{title}: " + ", ".join(parts) + " led to an order, beyond chance."]


AGENT_COLUMNS = (
    html.ColumnFormat("group", "Agent"),
    html.ColumnFormat("contacts", "Contacts", html.fmt_count, numeric=True),
    html.ColumnFormat("observed", "Orders observed", html.fmt_count, numeric=True),
    html.ColumnFormat("expected", "Orders expected", html.fmt_number, numeric=True),
    html.ColumnFormat("raw_ratio", "Observed / expected", lambda v: f"{v:.2f}×", numeric=True),
    html.ColumnFormat("ratio", "Shrunk ratio", lambda v: f"{v:.2f}×", numeric=True),
    html.ColumnFormat("ratio_low", "95% interval from", lambda v: f"{v:.2f}×", numeric=True),
    html.ColumnFormat("ratio_high", "95% interval to", lambda v: f"{v:.2f}×", numeric=True),
    html.ColumnFormat(
        "verdict",
        "Vs expected",
        lambda v: {"above": "more", "below": "fewer"}.get(v, "within chance"),
    ),
)
AGENTS_CHARTED = 6


def _fair_block(ctx: Context, by: str) -> list[str]:
    """Observed against expected orders per agent or channel (see reports.fairness)."""
    from reports import fairness

    noun, plural, title = {
        "agent_id": ("agent", "agents", "Agents: orders against what their contacts would bring"),
        "channel": (
            "channel",
            "channels",
            "Channels: orders against what their contacts would bring",
        ),
    }[by]
    model, features = ctx.fair_model()
    rows = ctx.data.labeled.filter(
        ctx.period.contains()
        & (pl.col("label_known_at") <= ctx.data.observed_until)
        & pl.col(by).is_not_null()
    ).select("contact_id", pl.col(by).cast(pl.String), "converted")
    if model is None or features is None or rows.height == 0:
        return []
    scored = features.join(rows.select("contact_id"), on="contact_id")
    neutral = fairness.identity_features(model, by)
    expected = fairness.expected_probability(model, scored, neutral)
    outcomes = rows.join(
        scored.select("contact_id").with_columns(pl.Series("expected", expected)), on="contact_id"
    )
    comparison = fairness.observed_vs_expected(outcomes, by)
    if comparison is None:
        return []
    table = comparison.table
    if by == "agent_id":
        charted = table.filter(
            (pl.col("verdict") != "within")
            | (pl.int_range(pl.len()) < AGENTS_CHARTED)
            | (pl.int_range(pl.len()) >= pl.len() - AGENTS_CHARTED)
        )
    else:
        charted = table
    chart = plots.ratio_intervals(
        [str(g).replace("_", " ") for g in charted["group"].to_list()],
        charted["ratio"].to_list(),
        charted["ratio_low"].to_list(),
        charted["ratio_high"].to_list(),
        raw=charted["raw_ratio"].to_list() if comparison.prior_strength > 0 else None,
        verdict=charted["verdict"].to_list(),
        dot_label="shrunk ratio (95% interval)"
        if comparison.prior_strength > 0
        else "observed / expected (95% interval)",
        xlabel="orders observed / orders expected (1 = as expected)",
    )
    sentence = fairness.credible_sentence(table, noun, plural)
    if by == "agent_id":
        ctx.findings.append(f"Agents, fairly compared: {sentence}")
    neutral_words = (
        f" The features that encode the {noun} ({', '.join(neutral)}) are set to population values."
        if neutral
        else ""
    )
    shrink_words = (
        f"Ratios are shrunk towards 1 in proportion to how little data each {noun} has "
        f"(empirical Bayes: a {noun} counts like {comparison.prior_strength:,.0f} expected orders "
        "of 'as expected'); hollow rings show the unshrunk ratio."
        if comparison.prior_strength > 0
        else f"Too few {plural} to estimate how much they differ, so ratios are not shrunk; the "
        "interval is the exact Poisson interval of the observed orders."
    )
    method = (
        f"Expected orders come from the champion model {model.name} v{model.version} scored on "
        f"each {noun}'s own contacts (customer, history, request{', channel' if by != 'channel' else ''}, "
        f"time), as if an average {noun} had handled them.{neutral_words} They are scaled so all "
        f"{plural} together expect what they observed (×{comparison.scale:.2f}). {shrink_words}"
    )
    columns = (
        AGENT_COLUMNS
        if by == "agent_id"
        else (
            html.ColumnFormat("group", "Channel", lambda v: html.esc(str(v).replace("_", " "))),
            *AGENT_COLUMNS[1:],
        )
    )
    ident = "agents" if by == "agent_id" else "channels-fair"
    shown_what = (
        f"the {charted.height} agents with the highest and lowest ratios and every agent that "
        "differs credibly"
        if by == "agent_id" and charted.height < table.height
        else f"all {table.height} {plural}"
    )
    rendered_table = html.table(
        table,
        columns,
        row_class=[
            {"above": "best", "below": "worst"}.get(v, "") for v in table["verdict"].to_list()
        ],
        table_id=ident,
        exports=ctx.exports,
    )
    return [
        f"<h3>{html.esc(title)}</h3>",
        html.paragraph(sentence, "lead"),
        html.figure(chart, f"Shown: {shown_what}. {method}"),
        f"<details><summary>All {table.height} {plural}</summary>{rendered_table}</details>"
        if by == "agent_id"
        else rendered_table,
    ]


def _raw_agents_block(ctx: Context) -> list[str]:
    """Without a conversion model: raw shares with intervals, and a warning about the mix."""
    agents, ranked, left_out = report_kpis.agent_extremes(ctx.data.labeled, ctx.period)
    if agents.height == 0:
        return []
    return [
        "<h3>Agents: top and bottom</h3>",
        html.paragraph(
            f"The {agents.height // 2} agents with the highest and lowest share of contacts leading "
            f"to an order, among {ranked} agents with at least {report_kpis.MIN_AGENT_CONTACTS} "
            f"contacts ({left_out} agents with fewer are not ranked), with 95% intervals. Without a "
            "conversion model the report cannot compare agents on the contacts they were routed: a "
            "low share can reflect the requests, not how they were handled.",
            "lead",
        ),
        html.table(
            agents,
            BREAKDOWN_COLUMNS,
            row_class=agents["rank"].to_list(),
            table_id="agents-raw",
            exports=ctx.exports,
        ),
    ]


def _history_for(data: ReportData, period: Period) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Contacts and orders up to the period's end of the customers active in the period."""
    active = data.contacts.filter(period.contains()).select("customer_id").unique()
    contacts = data.contacts.filter(pl.col("started_at") < period.end).join(
        active, on="customer_id"
    )
    orders = data.orders.filter(pl.col("ordered_at") < period.end).join(active, on="customer_id")
    return contacts, orders


def _why_section(ctx: Context) -> html.Section:
    data, period, models, features, say = ctx.data, ctx.period, ctx.models, ctx.features, ctx.say
    from reports import explain

    section = html.Section(
        "why",
        "Why",
        "What the conversion model says moves a contact's chance to order, and why customers who "
        "did not order dropped off.",
    )
    after = models.get("conversion-after-contact") if models else None
    if after is None or features is None or features.height == 0:
        section.add(
            html.note("No champion conversion model is registered: train one with `cto train`.")
        )
    else:
        sample = features
        if features.height > MAX_EXPLAINED_CONTACTS:
            sample = features.sample(MAX_EXPLAINED_CONTACTS, seed=EXPLAIN_SEED)
        say(f"explaining {sample.height:,} contacts with TreeSHAP")
        analysis = explain.conversion_drivers(after, sample, top=TOP_DRIVERS)
        top_driver = analysis.drivers[0]
        ctx.findings.append(
            f"Strongest driver of conversion: {top_driver.name.lower()}, {top_driver.sentence}"
        )
        items = [
            f'<span data-driver="{html.esc(d.feature)}" data-points="{d.mean_abs_effect * 100!r}">'
            f"<strong>{html.esc(d.name)}</strong>: {html.esc(d.sentence)} "
            f'<span class="tag">{html.esc(d.feature)}</span></span>'
            for d in analysis.drivers
        ]
        section.add(
            "<h3>Top drivers of conversion</h3>",
            html.paragraph(
                "Each factor's one number is how much it moves the chance to order of a contact, on "
                f"average over {analysis.contacts:,} of this period's contacts, in percentage points "
                "(TreeSHAP of the champion after-contact model); the list and the chart give the same "
                "number in the same order. These are patterns the model learnt, not proof of cause.",
                "lead",
            ),
            html.bullet_list(items, "drivers"),
        )
        importance = plots.ranked_bars(
            [d.name for d in analysis.drivers],
            [d.mean_abs_effect * 100 for d in analysis.drivers],
            xlabel="average effect on the chance to order (percentage points)",
            highlight=0,
            percent=False,
            keep_order=True,
            annotations=[explain.points_text(d.mean_abs_effect) for d in analysis.drivers],
        )
        section.add(
            html.figure(
                importance,
                "How much each factor moves the chance to order, on average (percentage points).",
                exports=ctx.exports,
                data_id="drivers",
                data=pl.DataFrame(
                    {
                        "Factor": [d.name for d in analysis.drivers],
                        "Feature": [d.feature for d in analysis.drivers],
                        "Average effect (percentage points)": [
                            d.mean_abs_effect * 100 for d in analysis.drivers
                        ],
                        "Direction": [d.direction for d in analysis.drivers],
                        "In words": [d.sentence for d in analysis.drivers],
                    }
                ),
            )
        )
        charts = []
        for driver in analysis.drivers[:DEPENDENCE_PLOTS]:
            column = analysis.column(driver.feature)
            values = analysis.x[:, column]
            levels = analysis.category_levels.get(driver.feature)
            if levels is None and explain.is_flag(values):
                levels = ("no", "yes")  # a yes/no factor reads as two categories, not a 0-1 axis
            scale = 1.0 if levels else explain.display_scale(driver.feature)
            charts.append(
                html.figure(
                    plots.dependence(
                        values * scale,
                        analysis.effects[:, column],
                        xlabel=explain.axis_label(driver.feature),
                        categories=list(levels) if levels else None,
                        title=driver.name,
                    ),
                    f"{driver.name}: "
                    + (
                        "each box spans the middle half of the contacts of that kind; right of zero "
                        "the factor raised their chance to order, left of it lowered it."
                        if levels
                        else "each dot is a contact; above zero the factor raised its chance to "
                        "order, below zero it lowered it."
                    ),
                )
            )
        section.add(
            "<h3>How the top factors act</h3>", f'<div class="grid2">{"".join(charts)}</div>'
        )

    # Drop-off reasons: recorded ones, then the model's estimate for the unrecorded.
    period_rows = data.labeled.filter(period.contains())
    known = period_rows.filter(pl.col("label_known_at") <= data.observed_until)
    non_converted = known.filter(~pl.col("converted"))
    recorded = explain.recorded_reasons(known)
    unrecorded = non_converted.filter(pl.col("dropoff_label").is_null())
    section.add(
        "<h3>Why customers dropped off</h3>",
        html.paragraph(
            f"{non_converted.height:,} contacts with a known outcome did not lead to an order; "
            f"{non_converted.height - unrecorded.height:,} have a recorded reason (wrap-up code or "
            f"survey), {unrecorded.height:,} do not.",
            "lead",
        ),
    )
    groups: dict[str, dict[str, float]] = {}
    reason_figures: list[str] = []
    if recorded.height:
        groups["recorded reasons"] = dict(zip(recorded["reason"], recorded["share"], strict=True))
    reasons_model = models.get("dropoff-reason") if models else None
    estimated = None
    if reasons_model is not None and features is not None and unrecorded.height:
        unrecorded_features = features.join(unrecorded.select("contact_id"), on="contact_id")
        estimated = explain.estimated_reasons(reasons_model, unrecorded_features)
        groups["model-estimated, unrecorded contacts"] = dict(
            zip(estimated["reason"], estimated["share"], strict=True)
        )
    if groups:
        reasons = sorted(
            {r for shares in groups.values() for r in shares},
            key=lambda r: -max(shares.get(r, 0.0) for shares in groups.values()),
        )
        chart = plots.grouped_share_bars(
            [r.replace("_", " ") for r in reasons],
            {name: [shares.get(r, 0.0) for r in reasons] for name, shares in groups.items()},
            xlabel="share of contacts that did not lead to an order",
        )
        reason_figures.append(
            html.figure(
                chart,
                "Recorded reasons come from agents and surveys. Model-estimated shares apply the "
                "champion drop-off model to the contacts without a recorded reason: an estimate, not a record.",
            )
        )
    window = data.labeled.filter(
        (pl.col("started_at") >= period.end - timedelta(weeks=report_kpis.TREND_WEEKS))
        & (pl.col("started_at") < period.end)
        & (pl.col("label_known_at") <= data.observed_until)
    )
    weekly = explain.weekly_reason_shares(window)
    if weekly.height:
        wide = weekly.pivot(on="reason", index="week", values="share").sort("week").fill_null(0.0)
        reasons = [c for c in wide.columns if c != "week"]
        reasons.sort(key=lambda r: -float(wide[r].mean()))
        chart = plots.stacked_shares(
            wide["week"].to_list(),
            {r.replace("_", " "): wide[r].to_list() for r in reasons},
            ylabel="share of recorded reasons",
        )
        reason_figures.append(
            html.figure(
                chart, "Recorded drop-off reasons week by week (shares of contacts with a reason)."
            )
        )
    section.add(f'<div class="grid2">{"".join(reason_figures)}</div>')
    return section


def _what_if_section(ctx: Context) -> html.Section:
    data, period, models, features, say = ctx.data, ctx.period, ctx.models, ctx.features, ctx.say
    rates, settings = ctx.rates, ctx.settings
    from reports import whatif

    section = html.Section(
        "what-if",
        "What if",
        "Model estimates of extra orders in this period had an operational lever moved. The champion "
        "after-contact model scores each contact as it was and as changed; the estimate is the sum "
        "of the differences in its chance to order. Model estimates, not proof of cause.",
    )
    after = models.get("conversion-after-contact") if models else None
    if after is None or features is None or features.height == 0:
        section.add(
            html.note("No champion conversion model is registered: train one with `cto train`.")
        )
        return section
    contacts, orders = _history_for(data, period)
    say("estimating what-if levers")
    estimates = whatif.estimate_levers(
        after,
        period,
        features,
        contacts=contacts,
        orders=orders,
        customers=data.customers,
        rates=rates,
        horizon_days=settings.horizon_days,
        journey_gap_days=settings.journey_gap_days,
    )
    best_lever = max(estimates, key=lambda e: e.extra_orders)
    if best_lever.extra_orders > 0:
        ctx.findings.append(
            f"Biggest lever (model estimate): {best_lever.lever.title.lower()}, about "
            f"{best_lever.extra_orders:,.0f} extra orders in the period (95% range "
            f"{best_lever.low:,.0f} to {best_lever.high:,.0f})."
        )
    chart = plots.lever_bars(
        [e.lever.title for e in estimates],
        [e.extra_orders for e in estimates],
        xlabel="estimated extra orders in the period (bars: 95% range)",
        low=[e.low for e in estimates],
        high=[e.high for e in estimates],
    )
    section.add(
        html.figure(
            chart,
            "Estimated extra orders per lever (model estimate), with the 95% range over "
            "resamples of the period's contacts.",
        )
    )
    frame = pl.DataFrame(
        {
            "lever": [e.lever.title for e in estimates],
            "explanation": [e.lever.explanation for e in estimates],
            "contacts_changed": [e.contacts_changed for e in estimates],
            "extra_orders": [e.extra_orders for e in estimates],
            "low": [e.low for e in estimates],
            "high": [e.high for e in estimates],
            "relative": [e.relative for e in estimates],
        }
    )
    orders_format = lambda v: f"{v:+,.0f}"  # noqa: E731
    section.add(
        html.table(
            frame,
            (
                html.ColumnFormat(
                    "lever",
                    "Lever",
                    cell=lambda row: (
                        f"<strong>{html.esc(row['lever'])}</strong><br><small>"
                        f"{html.esc(row['explanation'])}</small>"
                    ),
                ),
                html.ColumnFormat("contacts_changed", "Contacts changed", html.fmt_count, True),
                html.ColumnFormat("extra_orders", "Extra orders (estimate)", orders_format, True),
                html.ColumnFormat("low", "95% range from", orders_format, True),
                html.ColumnFormat("high", "95% range to", orders_format, True),
                html.ColumnFormat(
                    "relative",
                    "vs expected orders",
                    lambda v: "–" if v is None else f"{v:+.1%}",
                    True,
                ),
            ),
            table_id="levers",
            exports=ctx.exports,
            row_attributes=[
                f'data-lever="{html.esc(e.lever.key)}" data-extra-orders="{e.extra_orders!r}" '
                f'data-low="{e.low!r}" data-high="{e.high!r}"'
                for e in estimates
            ],
        ),
        html.note(
            "Extra orders count contacts that would additionally be followed by an order within the "
            "horizon. The model has seen how outcomes went with these fields, not what happens when "
            "they are changed on purpose: treat the numbers as a ranking of where to look, and test a "
            "lever before counting on it."
        ),
    )
    return section


def _health_section(ctx: Context) -> html.Section:
    data, period, models, features, say = ctx.data, ctx.period, ctx.models, ctx.features, ctx.say
    from reports import health
    from reports.models import TASK_TITLES

    section = html.Section(
        "model-health",
        "Model health",
        "Which models produced the estimates above, how well they tested, whether their chances "
        "match reality, and whether this period's contacts still look like the data they learnt from.",
    )
    if models is None or not models.champions:
        section.add(
            html.note(
                f"No champion models are registered in {models.tracking_uri if models else 'MLflow'}."
            )
        )
        return section
    model_rows = [
        {
            "model": TASK_TITLES.get(task, task),
            "registered_name": champion.name,
            "version": str(champion.version),
            "registered": champion.registered_at.strftime("%Y-%m-%d %H:%M"),
            "window": health.training_window(champion),
            "results": health.metric_lines(champion),
            "calibration": (champion.card.get("calibration") or {}).get("method", "none"),
        }
        for task, champion in models.champions.items()
    ] + [
        {
            "model": TASK_TITLES.get(task, task),
            "registered_name": None,
            "version": None,
            "registered": None,
            "window": reason,
            "results": [],
            "calibration": None,
        }
        for task, reason in models.missing.items()
    ]
    model_frame = pl.DataFrame(
        model_rows,
        schema={
            "model": pl.String,
            "registered_name": pl.String,
            "version": pl.String,
            "registered": pl.String,
            "window": pl.String,
            "results": pl.List(pl.String),
            "calibration": pl.String,
        },
    )
    section.add(
        html.table(
            model_frame,
            (
                html.ColumnFormat(
                    "model",
                    "Model",
                    cell=lambda row: (
                        f"<strong>{html.esc(row['model'])}</strong>"
                        + (
                            f"<br><small>{html.esc(row['registered_name'])} version "
                            f"{html.esc(row['version'])}</small>"
                            if row["registered_name"]
                            else ""
                        )
                    ),
                ),
                html.ColumnFormat("registered", "Registered", lambda v: html.esc(v or "–")),
                html.ColumnFormat("window", "Data it learnt and was tested on"),
                html.ColumnFormat(
                    "results",
                    "Test results (held-out weeks)",
                    lambda lines: "<br>".join(html.esc(line) for line in lines or []),
                ),
                html.ColumnFormat("calibration", "Calibration", lambda v: html.esc(v or "–")),
            ),
            row_class=["" if r["registered_name"] else "warn" for r in model_rows],
            table_id="models",
            exports=ctx.exports,
            row_attributes=[
                f'data-model="{html.esc(r["registered_name"])}"' if r["registered_name"] else ""
                for r in model_rows
            ],
        )
    )
    meanings = [
        f"<strong>{html.esc(TASK_TITLES.get(task, task))}</strong>: "
        + " ".join(html.esc(line) for line in health.metric_meanings(champion))
        for task, champion in models.champions.items()
        if health.metric_meanings(champion)
    ]
    if meanings:
        section.add(
            "<details open><summary>What these figures mean</summary>"
            + html.bullet_list(meanings, "meanings")
            + "</details>"
        )
    after = models.get("conversion-after-contact")
    if after is None or features is None or features.height == 0:
        return section
    say("checking calibration and drift")
    series = []
    held_out = health.held_out_reliability(after)
    if held_out is not None:
        series.append(held_out)
    known = data.labeled.filter(
        period.contains() & (pl.col("label_known_at") <= data.observed_until)
    )
    known_features = features.join(known.select("contact_id", "converted"), on="contact_id")
    window = health.test_window(after)
    inside_test = False
    if window is not None:
        test_from = datetime.fromisoformat(window[0])
        test_until = datetime.fromisoformat(window[1])
        test_from = test_from if test_from.tzinfo else test_from.replace(tzinfo=UTC)
        test_until = test_until if test_until.tzinfo else test_until.replace(tzinfo=UTC)
        overlap = min(period.end, test_until) - max(period.start, test_from)
        # Mostly the same contacts: a second curve would only repeat the first.
        inside_test = overlap.total_seconds() >= 0.5 * (period.end - period.start).total_seconds()
    if inside_test and held_out is not None:
        calibration_note = (
            "This period lies mostly inside the model's held-out test window, so its contacts are "
            "the test curve's contacts: one curve is shown."
        )
    else:
        calibration_note = ""
    if known_features.height >= 100 and not (inside_test and held_out is not None):
        series.append(
            health.reliability(
                after,
                known_features,
                known_features["converted"].cast(pl.Float64).to_numpy(),
                "this period",
            )
        )
    if series:
        chart = plots.reliability(
            {f"{s.label} ({s.rows:,} contacts)": (s.predicted, s.observed) for s in series}
        )
        section.add(
            "<h3>Do the predicted chances hold?</h3>",
            html.figure(
                chart,
                "Contacts grouped by predicted chance to order (after-contact model): on the dashed "
                f"line, predicted and actual agree. {calibration_note}".strip(),
            ),
        )
    drifts = health.feature_drift(after, features)
    if drifts:
        from reports.drift import PSI_ALERT, expected_move

        started = health.training_start(after)
        warm_up = None
        if started:
            began = datetime.fromisoformat(started)
            began = began if began.tzinfo else began.replace(tzinfo=UTC)
            warm_up = (began - data.observed_from).total_seconds() / 86_400
        reasons = {d.feature: expected_move(d.feature, warm_up) for d in drifts}
        shifted = [d for d in drifts if np.isfinite(d.psi) and d.psi > PSI_ALERT]
        alerts = [d for d in shifted if reasons[d.feature] is None]
        expected = [d for d in shifted if reasons[d.feature] is not None]
        if alerts:
            ctx.findings.append(
                f"Model health: {len(alerts)} feature(s) drifted a lot since training; see Model health."
            )
            section.add(
                html.warning(
                    f"{len(alerts)} feature(s) shifted a lot against the model's training window "
                    f"(PSI above {PSI_ALERT}): "
                    + ", ".join(f"{d.feature} ({d.psi:.2f})" for d in alerts[:8])
                    + ". Estimates for these contacts are less reliable; consider retraining."
                )
            )
        else:
            section.add(
                html.note(
                    "No feature that should stay stable shifted a lot against the model's training "
                    f"window (PSI ≤ {PSI_ALERT})."
                )
            )
        if expected:
            section.add(
                html.note(
                    "Expected to move, so never an alert: "
                    + "; ".join(
                        f"{d.feature} ({d.psi:.2f}: {reasons[d.feature]})" for d in expected
                    )
                    + "."
                )
            )
        # The features that should stay stable first; the largest expected movers after them, grey.
        stable = [d for d in drifts if reasons[d.feature] is None][:10]
        movers = [d for d in drifts if reasons[d.feature] is not None][: 15 - len(stable)]
        shown = sorted(stable + movers, key=lambda d: -d.psi if np.isfinite(d.psi) else 0.0)
        section.add(
            "<h3>Drift: this period against the training window</h3>",
            html.figure(
                plots.drift_bars(
                    [d.feature for d in shown],
                    [d.psi for d in shown],
                    expected=[reasons[d.feature] is not None for d in shown],
                ),
                "Population stability index against the rows the model learnt from (its training "
                "window): how much each feature's mix of values moved. Shown: the 10 largest shifts "
                "among features that should stay stable and the largest of those declared expected "
                "to move (grey, never an alert); every feature is in the table below.",
            ),
        )
        drift_frame = pl.DataFrame(
            {
                "feature": [d.feature for d in drifts],
                "psi": [d.psi if np.isfinite(d.psi) else None for d in drifts],
                "level": [d.level for d in drifts],
                "detail": [d.detail for d in drifts],
                "expected": [reasons[d.feature] or "" for d in drifts],
            }
        )
        section.add(
            "<details><summary>All features</summary>"
            + html.table(
                drift_frame,
                (
                    html.ColumnFormat("feature", "Feature"),
                    html.ColumnFormat("psi", "PSI", lambda v: html.fmt_number(v, 3), numeric=True),
                    html.ColumnFormat("level", "Shift"),
                    html.ColumnFormat("detail", "What moved"),
                    html.ColumnFormat("expected", "Expected to move because"),
                ),
                row_class=[
                    "warn" if d.psi > PSI_ALERT and reasons[d.feature] is None else ""
                    for d in drifts
                ],
                table_id="drift",
                exports=ctx.exports,
            )
            + "</details>"
        )
    return section


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


def _progress(enabled: bool) -> Callable[[str], None]:
    started = time.perf_counter()

    def say(message: str) -> None:
        if enabled:
            print(
                f"[report {time.perf_counter() - started:5.1f}s] {message}",
                file=sys.stderr,
                flush=True,
            )

    return say


FILTER_COLUMNS = {
    "channel": "channel",
    "intent": "request type",
    "segment": "customer segment",
    "direction": "direction",
    "handled_by": "agent or bot",
    "agent_id": "agent",
}


def parse_filters(texts: list[str] | tuple[str, ...] | None) -> dict[str, tuple[str, ...]]:
    """``["channel=phone", "channel=chat", "segment=enterprise"]`` -> {column: values}.

    Values of one column are alternatives (phone or chat); different columns must all hold.
    """
    filters: dict[str, list[str]] = {}
    for text in texts or ():
        column, sep, value = text.partition("=")
        column, value = column.strip(), value.strip()
        if not sep or not column or not value:
            raise CTOError(f"--filter {text!r}: expected COLUMN=VALUE, e.g. channel=phone")
        if column not in FILTER_COLUMNS:
            raise CTOError(
                f"--filter {text!r}: cannot filter on {column!r}; filterable columns: "
                + ", ".join(FILTER_COLUMNS)
            )
        filters.setdefault(column, []).append(value)
    return {column: tuple(values) for column, values in filters.items()}


def apply_filters(labeled: pl.DataFrame, filters: dict[str, tuple[str, ...]]) -> pl.DataFrame:
    """The labelled contacts matching every filter; an unknown value is an error naming the
    values that exist."""
    for column, values in filters.items():
        if column not in labeled.columns:
            raise CTOError(f"--filter {column}=...: the data has no {column} column")
        present = set(labeled.get_column(column).cast(pl.String).drop_nulls().unique().to_list())
        unknown = [v for v in values if v not in present]
        if unknown:
            raise CTOError(
                f"--filter {column}={unknown[0]}: no contact has this {FILTER_COLUMNS[column]}; "
                f"values in the data: {', '.join(sorted(present)[:20])}"
            )
        labeled = labeled.filter(pl.col(column).cast(pl.String).is_in(list(values)))
    return labeled


def filter_label(filters: dict[str, tuple[str, ...]]) -> str:
    return " and ".join(
        f"{FILTER_COLUMNS[column]} {' or '.join(values)}" for column, values in filters.items()
    )


@dataclass
class RenderedReport:
    page: str
    exports: html.Exports


def render_report(
    data_dir: Path | str,
    since: date | None,
    until: date | None,
    settings: Settings | None = None,
    *,
    progress: bool = False,
    allow_other_data: bool = False,
    filters: dict[str, tuple[str, ...]] | None = None,
    tables_folder: str = "report_tables",
    decision_evidence: dict[str, Path | None] | None = None,
) -> RenderedReport:
    """The report page and its tables (see :func:`build_report`).

    ``decision_evidence``: ``{"policy": policy.json, "experiment": analysis.json}`` adds the section
    "What acting on the scores is worth" (reports.decision_value).
    """
    from features.pipeline import build_features
    from features.rates import compute_rates
    from reports.models import load_champions

    settings = settings or get_settings()
    filters = filters or {}
    say = _progress(progress)
    say(f"reading {data_dir}")
    data = load_report_data(Path(data_dir), settings)
    last_contact = data.contacts["started_at"].max()
    period = report_kpis.resolve_period(
        since,
        until,
        data.observed_from,
        data.observed_until,
        settings.horizon_days,
        last_contact=last_contact,
    )
    in_period = data.contacts.filter(period.contains()).height
    if in_period == 0:
        raise CTOError(
            f"the period {period.label} has no contacts: the data's contacts run from "
            f"{data.observed_from:%Y-%m-%d} to {last_contact:%Y-%m-%d} (orders until "
            f"{data.observed_until:%Y-%m-%d}); choose --since/--until inside that span"
        )
    # Rates and history features use every contact; the filter picks the contacts reported on.
    all_labeled = data.labeled
    if filters:
        data.labeled = apply_filters(all_labeled, filters)
        if data.labeled.filter(period.contains()).height == 0:
            raise CTOError(
                f"no contact of {period.label} matches the filter {filter_label(filters)}"
            )
    say(f"period {period.label}: computing KPIs")
    exports = html.Exports(tables_folder)
    headline, overall = _headline_section(data, period)
    findings: list[str] = []
    where = _where_section(data, period, overall, findings, exports)

    say(f"loading champion models from {settings.tracking_uri}")
    models = load_champions(settings)
    header_html = _models_header(models, data, settings, allow_other_data)
    features = rates = arrival_features = None
    if models.champions:
        say("building the period's features")
        rates = compute_rates(all_labeled, settings.horizon_days)
        contacts, orders = _history_for(data, period)
        reported = data.labeled.filter(period.contains()).select("contact_id")

        def period_features(moment: str) -> pl.DataFrame:
            return build_features(
                contacts,
                orders,
                data.customers,
                rates,
                moment=moment,
                journey_gap_days=settings.journey_gap_days,
                horizon_days=settings.horizon_days,
            ).join(reported, on="contact_id", how="semi")

        # The data's own columns some champions learnt from (e.g. an import's lead origin).
        from training.data import with_data_columns

        data_columns = sorted(
            {
                c
                for champion in models.champions.values()
                for c in (champion.card.get("feature_set") or {}).get("data_columns", [])
            }
        )

        features = with_data_columns(period_features("after_contact"), data.contacts, data_columns)
        if models.get("conversion-arrival") is not None:
            arrival_features = with_data_columns(
                period_features("arrival"), data.contacts, data_columns
            )
    ctx = Context(
        data, period, models, features, rates, settings, say, findings, exports, arrival_features
    )
    say("comparing agents and channels on observed against expected orders")
    agents = _fair_block(ctx, "agent_id") or _raw_agents_block(ctx)
    channels = _fair_block(ctx, "channel")
    where.add(*agents, *channels)
    why = _why_section(ctx)
    what_if = _what_if_section(ctx)
    model_health = _health_section(ctx)
    if findings:
        headline.add(
            "<h3>In short</h3>", html.bullet_list([html.esc(f) for f in findings], "findings")
        )
    extra = []
    if decision_evidence and any(decision_evidence.values()):
        from reports.decision_value import decision_value_section

        extra.append(decision_value_section(**decision_evidence))
    generated = datetime.now(UTC)
    footer = (
        f"Generated {generated:%Y-%m-%d %H:%M} UTC from {data.source} (contacts "
        f"{data.observed_from:%Y-%m-%d} to {data.observed_until:%Y-%m-%d}; "
        f"{data.rejected_rows:,} rows rejected by the data contract). A contact 'led to an order' "
        f"when the customer ordered within {settings.horizon_days} days of it. Models from "
        f"{settings.tracking_uri}. Every table is also a CSV file in {tables_folder}/ beside "
        "this page."
    )
    subtitle = f"{period.label} · {overall['contacts']:,} contacts"
    if filters:
        subtitle += f" · only contacts with {filter_label(filters)}"
    say("writing the page")
    page = html.document(
        title="Contact-to-order driver report",
        subtitle=subtitle,
        sections=[headline, where, why, what_if, model_health, *extra],
        footer=footer,
        header_html=header_html,
    )
    return RenderedReport(page, exports)


def _models_header(models, data: ReportData, settings: Settings, allow_other_data: bool) -> str:
    """The header's line naming each champion and its training data; refuses (or, allowed, marks
    in red) champions that learnt from data of another source or schema than this report's."""
    from training.batch import check_models_fit_data, describe_data
    from training.data import directory_profile

    if not models.champions:
        return ""
    profile = directory_profile(Path(data.source), data.tables)
    loaded = [_as_loaded(champion) for champion in models.champions.values()]
    problems = check_models_fit_data(loaded, profile, allow_other_data, what="explain")
    trained_on = {}
    for champion in models.champions.values():
        trained_on.setdefault(describe_data(champion.card.get("data") or {}), []).append(
            f"{champion.name} v{champion.version}"
        )
    lines = "; ".join(
        f"{', '.join(names)} trained on {where}" for where, names in trained_on.items()
    )
    out = f'<p class="models">Models: {html.esc(lines)}</p>'
    if problems:
        out += html.warning(
            "These models were trained on other data than this report's and explain it anyway "
            "(--allow-other-data): " + " | ".join(problems)
        )
    return out


def _as_loaded(champion):
    from training.batch import LoadedModel

    return LoadedModel(champion.name, champion.version, "champion", champion.card, champion.booster)


def build_report(
    data_dir: Path | str,
    since: date | None,
    until: date | None,
    out: Path | str,
    settings: Settings | None = None,
    *,
    fmt: str = "html",
    progress: bool = False,
    allow_other_data: bool = False,
    filters: dict[str, tuple[str, ...]] | None = None,
    decision_evidence: dict[str, Path | None] | None = None,
) -> Path:
    """Write the driver report for ``[since, until]`` (inclusive days, UTC) to ``out``; its path.

    Every table of the page is written as CSV to ``<out stem>_tables/`` beside it (linked from the
    page). ``fmt="pdf"`` prints the page with headless Chromium. ``since``/``until`` default to the
    28 days ending at the last day whose outcomes are known. ``filters`` ({column: values}, see
    :func:`parse_filters`) restrict the report to matching contacts.
    """
    if fmt not in ("html", "pdf"):
        raise CTOError(f"--format must be html or pdf, got {fmt!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = f"{out.stem}_tables"
    rendered = render_report(
        data_dir,
        since,
        until,
        settings,
        progress=progress,
        allow_other_data=allow_other_data,
        filters=filters,
        tables_folder=folder,
        decision_evidence=decision_evidence,
    )
    rendered.exports.write(out.parent / folder)
    if fmt == "html":
        out.write_text(rendered.page, encoding="utf-8")
        return out
    from reports.browser import print_pdf

    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "report.html"
        page_file.write_text(rendered.page, encoding="utf-8")
        print_pdf(page_file, out)
    return out
