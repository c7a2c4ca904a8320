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
    )


# ------------------------------------------------------------------------------------------------
# Formatting
# ------------------------------------------------------------------------------------------------


def _headline_cards(values: list[HeadlineValue], period: Period) -> str:
    previous_label = f"the previous {period.days} days"
    cards = []
    for value in values:
        if value.key == "contact_to_order_ratio":
            label, higher_is_better = "Contacts that led to an order", True
            text = html.fmt_percent(value.current)
            change = (
                f"{value.change * 100:+.1f} points vs {previous_label} ({html.fmt_percent(value.previous)})"
                if value.change is not None
                else "no data for the previous period"
            )
            explain = (
                "Share of contacts followed by an order from the customer within the order horizon."
            )
        elif value.key == "contacts_per_order":
            label, higher_is_better = "Contacts per order", False
            text = html.fmt_number(value.current)
            change = (
                f"{value.change:+.2f} vs {previous_label} ({html.fmt_number(value.previous)})"
                if value.change is not None
                else "no data for the previous period"
            )
            explain = "Contacts handled for every order they led to: fewer is less effort per sale."
        else:
            label, higher_is_better = "Median time to order", False
            text = html.fmt_hours(value.current)
            change = (
                f"{'+' if value.change >= 0 else '−'}{html.fmt_hours(abs(value.change))} vs "
                f"{previous_label} ({html.fmt_hours(value.previous)})"
                if value.change is not None
                else "no data for the previous period"
            )
            explain = "From a contact to the order it led to, half of the orders came faster."
        cards.append(
            html.Kpi(
                key=value.key,
                label=label,
                raw=value.current,
                text=text,
                previous_raw=value.previous,
                change_text=change,
                higher_is_better=higher_is_better,
                explain=explain,
            ).render()
        )
    return f'<div class="kpis">{"".join(cards)}</div>'


def _points(value: object) -> str:
    if value is None:
        return "–"
    number = float(value) * 100
    css = "good" if number > 0.05 else "bad" if number < -0.05 else "neutral"
    return f'<span class="{css}">{number:+.1f} pts</span>'


BREAKDOWN_COLUMNS = (
    html.ColumnFormat("group", "Group", lambda v: html.esc(str(v).replace("_", " "))),
    html.ColumnFormat("contacts", "Contacts", html.fmt_count, numeric=True),
    html.ColumnFormat("contact_to_order_ratio", "Led to an order", html.fmt_percent, numeric=True),
    html.ColumnFormat("ratio_change", "Change vs previous period", _points, numeric=True),
    html.ColumnFormat("contacts_per_order", "Contacts per order", html.fmt_number, numeric=True),
    html.ColumnFormat(
        "median_time_to_order_hours", "Median time to order", html.fmt_hours, numeric=True
    ),
)


def _breakdown_block(
    table: pl.DataFrame, title: str, overall_ratio: float | None, ident: str
) -> str:
    labels = [str(g).replace("_", " ") for g in table["group"].to_list()]
    chart = plots.ranked_bars(
        labels,
        table["contact_to_order_ratio"].fill_null(0).to_list(),
        xlabel="contacts that led to an order",
        reference=overall_ratio,
        reference_label="all contacts",
        annotations=[f"{c:,} contacts" for c in table["contacts"].to_list()],
    )
    return (
        f"<h3>{html.esc(title)}</h3>"
        + html.figure(chart, f"{title}: green = best, red = worst (groups with enough contacts).")
        + html.table(table, BREAKDOWN_COLUMNS, row_class=table["rank"].to_list(), table_id=ident)
    )


# ------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------


def _headline_section(data: ReportData, period: Period) -> tuple[html.Section, dict]:
    values = report_kpis.headline(data.labeled, period)
    overall = report_kpis.overall(data.labeled, period)
    section = html.Section(
        "headline",
        "Headline",
        f"{overall['contacts']:,} contacts and {overall['orders']:,} orders they led to, "
        f"{period.label}, against the {period.days} days before.",
    )
    section.add(_headline_cards(values, period))
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
    data: ReportData, period: Period, overall: dict, findings: list[str]
) -> html.Section:
    section = html.Section(
        "where",
        "Where contacts fail",
        "The same numbers by channel, request type, customer segment and agent, and week by week. "
        f"Best and worst are marked among groups with at least {report_kpis.MIN_GROUP_CONTACTS} "
        "contacts.",
    )
    weekly = report_kpis.weekly_trend(data.labeled, period)
    if weekly.height:
        chart = plots.weekly_lines(
            weekly["period_start"].to_list(),
            {"contacts that led to an order": weekly["contact_to_order_ratio"].to_list()},
            ylabel="contacts that led to an order",
            shade_from=period.start,
            shade_until=period.end,
            bars=weekly["contacts"].to_list(),
        )
        section.add(
            "<h3>Week by week</h3>",
            html.figure(
                chart,
                "Weekly share of contacts that led to an order (line) and contacts per week "
                "(grey bars); the shaded weeks are this report's period.",
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
            section.add(_breakdown_block(table, title, ratio, f"by-{column}"))
            findings.extend(_extremes_finding(table, title))
    agents, ranked, left_out = report_kpis.agent_extremes(data.labeled, period)
    if agents.height:
        section.add(
            "<h3>Agents: top and bottom</h3>",
            html.paragraph(
                f"The {agents.height // 2} agents with the highest and lowest share of contacts leading "
                f"to an order, among {ranked} agents with at least {report_kpis.MIN_AGENT_CONTACTS} "
                f"contacts ({left_out} agents with fewer are not ranked). A low share can reflect the "
                "requests an agent is routed, not only how they handle them.",
                "lead",
            ),
            html.table(
                agents, BREAKDOWN_COLUMNS, row_class=agents["rank"].to_list(), table_id="agents"
            ),
        )
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


def _extremes_finding(table: pl.DataFrame, title: str) -> list[str]:
    """'By channel: weakest other (13.0%), strongest social (16.8%).' from a ranked breakdown."""
    best = table.filter(pl.col("rank") == "best")
    worst = table.filter(pl.col("rank") == "worst")
    if best.height == 0 or worst.height == 0:
        return []

    def describe(row: pl.DataFrame) -> str:
        group = str(row["group"][0]).replace("_", " ")
        return f"{group} ({html.fmt_percent(row['contact_to_order_ratio'][0])})"

    return [f"{title}: weakest {describe(worst)}, strongest {describe(best)} led to an order."]


def _grows_with_history(feature: str) -> bool:
    return feature.endswith(("_lifetime", "_conversion_rate")) or feature == "tenure_days"


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
            f"<strong>{html.esc(d.name)}</strong>: {html.esc(d.sentence)} "
            f'<span class="tag">{html.esc(d.feature)}</span>'
            for d in analysis.drivers
        ]
        section.add(
            "<h3>Top drivers of conversion</h3>",
            html.paragraph(
                f"Ranked by how much each factor moves the model's estimate across {analysis.contacts:,} "
                "of this period's contacts (mean absolute SHAP value of the champion after-contact "
                "model). Points are percentage points of the chance to order. These are patterns the "
                "model learnt, not proof of cause.",
                "lead",
            ),
            html.bullet_list(items, "drivers"),
        )
        importance = plots.ranked_bars(
            [d.name for d in analysis.drivers],
            [d.mean_abs_effect for d in analysis.drivers],
            xlabel="average effect on the chance to order (percentage points)",
            highlight=0,
            percent=True,
        )
        section.add(
            html.figure(importance, "How much each factor moves the chance to order, on average.")
        )
        charts = []
        for driver in analysis.drivers[:DEPENDENCE_PLOTS]:
            column = analysis.column(driver.feature)
            levels = analysis.category_levels.get(driver.feature)
            scale = 1.0 if levels else explain.display_scale(driver.feature)
            charts.append(
                html.figure(
                    plots.dependence(
                        analysis.x[:, column] * scale,
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
            f"{best_lever.extra_orders:,.0f} extra orders in the period."
        )
    chart = plots.lever_bars(
        [e.lever.title for e in estimates],
        [e.extra_orders for e in estimates],
        xlabel="estimated extra orders in the period",
    )
    section.add(html.figure(chart, "Estimated extra orders per lever (model estimate)."))
    rows = [
        f'<tr data-lever="{html.esc(e.lever.key)}" data-extra-orders="{e.extra_orders!r}">'
        f"<td><strong>{html.esc(e.lever.title)}</strong><br><small>{html.esc(e.lever.explanation)}</small></td>"
        f'<td class="num">{e.contacts_changed:,}</td>'
        f'<td class="num">{e.extra_orders:+,.0f}</td>'
        f'<td class="num">{"–" if e.relative is None else f"{e.relative:+.1%}"}</td></tr>'
        for e in estimates
    ]
    section.add(
        '<table class="data" id="levers"><thead><tr><th>Lever</th><th class="num">Contacts changed</th>'
        '<th class="num">Extra orders (estimate)</th><th class="num">vs expected orders</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>",
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
    rows = []
    for task, champion in models.champions.items():
        rows.append(
            f'<tr data-model="{html.esc(champion.name)}"><td><strong>{html.esc(TASK_TITLES.get(task, task))}</strong>'
            f"<br><small>{html.esc(champion.name)} version {html.esc(champion.version)}</small></td>"
            f"<td>{champion.registered_at:%Y-%m-%d %H:%M}</td>"
            f"<td>{html.esc(health.training_window(champion))}</td>"
            f"<td>{'<br>'.join(html.esc(line) for line in health.metric_lines(champion))}</td>"
            f"<td>{html.esc((champion.card.get('calibration') or {}).get('method', 'none'))}</td></tr>"
        )
    for task, reason in models.missing.items():
        rows.append(
            f'<tr class="warn"><td><strong>{html.esc(TASK_TITLES.get(task, task))}</strong></td>'
            f'<td colspan="4">{html.esc(reason)}</td></tr>'
        )
    section.add(
        '<table class="data" id="models"><thead><tr><th>Model</th><th>Registered</th>'
        "<th>Data it learnt and was tested on</th><th>Test results (held-out weeks)</th>"
        "<th>Calibration</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
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
    if known_features.height >= 100:
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
                "line, predicted and actual agree.",
            ),
        )
    drifts = health.feature_drift(after, features)
    if drifts:
        shifted = [d for d in drifts if np.isfinite(d.psi) and d.psi > 0.2]
        alerts = [d for d in shifted if not _grows_with_history(d.feature)]
        expected = [d for d in shifted if _grows_with_history(d.feature)]
        if alerts:
            ctx.findings.append(
                f"Model health: {len(alerts)} feature(s) drifted a lot since training; see Model health."
            )
        if alerts:
            section.add(
                html.warning(
                    f"{len(alerts)} feature(s) shifted a lot against the training data (PSI above 0.2): "
                    + ", ".join(f"{d.feature} ({d.psi:.2f})" for d in alerts[:8])
                    + ". Estimates for these contacts are less reliable; consider retraining."
                )
            )
        else:
            section.add(
                html.note(
                    "No contact or history feature shifted a lot against the training data "
                    "(PSI ≤ 0.2)."
                )
            )
        if expected:
            section.add(
                html.note(
                    "Expected to move: "
                    + ", ".join(f"{d.feature} ({d.psi:.2f})" for d in expected)
                    + ". Lifetime counts, customer tenure and the pooled conversion rates grow or "
                    "settle as the data gets longer, so they shift after training; a shift there "
                    "matters less than one in a contact's own fields (waits, channel, request type)."
                )
            )
        shown = drifts[:15]
        section.add(
            "<h3>Drift: this period against the training data</h3>",
            html.figure(
                plots.drift_bars([d.feature for d in shown], [d.psi for d in shown]),
                "Population stability index per feature (15 largest): how much the mix of values moved.",
            ),
        )
        drift_frame = pl.DataFrame(
            {
                "feature": [d.feature for d in drifts],
                "psi": [d.psi if np.isfinite(d.psi) else None for d in drifts],
                "level": [d.level for d in drifts],
                "detail": [d.detail for d in drifts],
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
                ),
                row_class=["warn" if d.psi > 0.2 else "" for d in drifts],
                table_id="drift",
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


def render_report(
    data_dir: Path | str,
    since: date | None,
    until: date | None,
    settings: Settings | None = None,
    *,
    progress: bool = False,
    decision_evidence: dict[str, Path | None] | None = None,
) -> str:
    """The report as an HTML string (see :func:`build_report`).

    ``decision_evidence``: ``{"policy": policy.json, "experiment": analysis.json}`` adds the section
    "What acting on the scores is worth" (reports.decision_value).
    """
    from features.rates import compute_rates
    from reports.models import load_champions

    settings = settings or get_settings()
    say = _progress(progress)
    say(f"reading {data_dir}")
    data = load_report_data(Path(data_dir), settings)
    period = report_kpis.resolve_period(
        since, until, data.observed_from, data.observed_until, settings.horizon_days
    )
    say(f"period {period.label}: computing KPIs")
    headline, overall = _headline_section(data, period)
    findings: list[str] = []
    where = _where_section(data, period, overall, findings)

    say(f"loading champion models from {settings.tracking_uri}")
    models = load_champions(settings)
    features = rates = None
    if models.champions:
        say("building the period's features")
        rates = compute_rates(data.labeled, settings.horizon_days)
        from features.pipeline import build_features

        contacts, orders = _history_for(data, period)
        features = build_features(
            contacts,
            orders,
            data.customers,
            rates,
            moment="after_contact",
            journey_gap_days=settings.journey_gap_days,
            horizon_days=settings.horizon_days,
        ).filter(period.contains())
    ctx = Context(data, period, models, features, rates, settings, say, findings)
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
        f"{settings.tracking_uri}."
    )
    say("writing the page")
    return html.document(
        title="Contact-to-order driver report",
        subtitle=f"{period.label} · {overall['contacts']:,} contacts",
        sections=[headline, where, why, what_if, model_health, *extra],
        footer=footer,
    )


def build_report(
    data_dir: Path | str,
    since: date | None,
    until: date | None,
    out: Path | str,
    settings: Settings | None = None,
    *,
    fmt: str = "html",
    progress: bool = False,
    decision_evidence: dict[str, Path | None] | None = None,
) -> Path:
    """Write the driver report for ``[since, until]`` (inclusive days, UTC) to ``out``; its path.

    ``fmt="pdf"`` prints the page with headless Chromium. ``since``/``until`` default to the 28
    days ending at the last day whose outcomes are known.
    """
    if fmt not in ("html", "pdf"):
        raise CTOError(f"--format must be html or pdf, got {fmt!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    page = render_report(
        data_dir, since, until, settings, progress=progress, decision_evidence=decision_evidence
    )
    if fmt == "html":
        out.write_text(page, encoding="utf-8")
        return out
    from reports.browser import print_pdf

    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "report.html"
        page_file.write_text(page, encoding="utf-8")
        print_pdf(page_file, out)
    return out
