"""The report's numbers that come straight from the data: headline KPIs, breakdowns, weekly trend.

Every ratio is computed by :func:`features.kpis.kpi_table` on labelled contacts
(:func:`features.labels.label_contacts`), so the report, the CLI summary and the notebooks agree.
A contact belongs to the period its ``started_at`` falls in; its outcome is the order within H days
after it, even when that order falls after the period's end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import polars as pl

from features.errors import CTOError
from features.kpis import kpi_table
from reports import stats

DEFAULT_PERIOD_DAYS = 28
TREND_WEEKS = 12
MIN_AGENT_CONTACTS = 30
AGENTS_SHOWN = 5
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Period:
    """Half-open UTC interval ``[start, end)`` of whole days."""

    start: datetime
    end: datetime

    @classmethod
    def from_dates(cls, since: date, until: date) -> Period:
        """``since`` and ``until`` inclusive, as a manager writes them."""
        if until < since:
            raise CTOError(f"--until {until} is before --since {since}")
        start = datetime(since.year, since.month, since.day, tzinfo=UTC)
        end = datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1)
        return cls(start, end)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def previous(self) -> Period:
        """The period of the same length just before this one."""
        return Period(self.start - (self.end - self.start), self.start)

    @property
    def label(self) -> str:
        last = (self.end - timedelta(days=1)).date()
        return f"{self.start.date():%d %b %Y} – {last:%d %b %Y}"

    def contains(self, column: str = "started_at") -> pl.Expr:
        return (pl.col(column) >= self.start) & (pl.col(column) < self.end)


def resolve_period(
    since: date | None,
    until: date | None,
    data_start: datetime,
    data_end: datetime,
    horizon_days: int,
    *,
    last_contact: datetime | None = None,
) -> Period:
    """The report period; by default the last complete period with data: it ends at the last day
    whose outcomes are all known, or at the last contact when orders run on past the contacts."""
    if until is None:
        until = (data_end - timedelta(days=horizon_days)).date() - timedelta(days=1)
        if last_contact is not None:
            until = min(until, last_contact.date())
    if since is None:
        since = until - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
    period = Period.from_dates(since, until)
    if period.end <= data_start or period.start > data_end:
        raise CTOError(
            f"the period {period.label} has no data: contacts and orders run from {data_start:%Y-%m-%d} "
            f"to {data_end:%Y-%m-%d}"
        )
    return period


def with_segment(labeled: pl.DataFrame, customers: pl.DataFrame | None) -> pl.DataFrame:
    """Labelled contacts plus the customer's ``segment`` as text (``unknown`` when missing)."""
    if customers is None or "segment" not in customers.columns:
        return labeled.with_columns(pl.lit(UNKNOWN).alias("segment"))
    segments = customers.select("customer_id", pl.col("segment").cast(pl.String))
    return (
        labeled.lazy()
        .join(segments.lazy(), on="customer_id", how="left")
        .with_columns(pl.col("segment").fill_null(UNKNOWN))
        .collect()
    )


@dataclass(frozen=True)
class HeadlineValue:
    key: str
    current: float | None
    previous: float | None

    @property
    def change(self) -> float | None:
        if self.current is None or self.previous is None:
            return None
        return self.current - self.previous

    @property
    def relative_change(self) -> float | None:
        if self.change is None or not self.previous:
            return None
        return self.change / self.previous


HEADLINE_KEYS = ("contact_to_order_ratio", "contacts_per_order", "median_time_to_order_hours")


def overall(labeled: pl.DataFrame, period: Period) -> dict[str, float | None]:
    """The one-row :func:`kpi_table` of the period as a dict."""
    table = kpi_table(labeled.filter(period.contains()))
    return table.row(0, named=True)


def headline(labeled: pl.DataFrame, period: Period) -> list[HeadlineValue]:
    current = overall(labeled, period)
    previous = overall(labeled, period.previous())
    previous_has_data = bool(previous["contacts"])
    return [
        HeadlineValue(key, current[key], previous[key] if previous_has_data else None)
        for key in HEADLINE_KEYS
    ]


def with_rate_interval(table: pl.DataFrame) -> pl.DataFrame:
    """Add the 95% interval of ``contact_to_order_ratio`` (``ratio_low``, ``ratio_high``)."""
    low, high = stats.rate_interval(
        table["converted_contacts"].to_numpy(), table["contacts"].to_numpy()
    )
    return table.with_columns(
        pl.Series("ratio_low", low, pl.Float64).fill_nan(None),
        pl.Series("ratio_high", high, pl.Float64).fill_nan(None),
    )


def breakdown(labeled: pl.DataFrame, period: Period, by: str) -> pl.DataFrame:
    """KPIs per value of ``by`` in the period, with intervals, the change and best/worst marks.

    Columns: ``group`` (text), the KPI columns, ``ratio_low``/``ratio_high`` (95% interval),
    ``vs_overall`` (``above``/``below`` where the interval excludes the overall rate, else
    ``within``), ``previous_ratio``, ``ratio_change``, ``change_p_value`` (two-proportion test) and
    ``change_marked`` (p < 0.05), and ``rank``: ``best`` for the highest group credibly above the
    overall rate, ``worst`` for the lowest credibly below it, else empty.
    """

    def grouped(p: Period) -> pl.DataFrame:
        frame = labeled.filter(p.contains()).with_columns(
            pl.col(by).cast(pl.String).fill_null(UNKNOWN).alias("group")
        )
        return kpi_table(frame, by=["group"])

    current = with_rate_interval(grouped(period))
    previous = grouped(period.previous()).select(
        "group",
        pl.col("contacts").alias("previous_contacts"),
        pl.col("converted_contacts").alias("previous_converted"),
        pl.col("contact_to_order_ratio").alias("previous_ratio"),
    )
    table = (
        current.join(previous, on="group", how="left")
        .with_columns(
            (pl.col("contact_to_order_ratio") - pl.col("previous_ratio")).alias("ratio_change")
        )
        .sort("contact_to_order_ratio", "contacts", descending=[True, True], nulls_last=True)
    )
    p_value = stats.two_proportion_p_value(
        table["converted_contacts"].to_numpy(),
        table["contacts"].to_numpy(),
        table["previous_converted"].fill_null(0).to_numpy(),
        table["previous_contacts"].fill_null(0).to_numpy(),
    )
    contacts = int(table["contacts"].sum())
    overall_ratio = int(table["converted_contacts"].sum()) / contacts if contacts else 0.0
    verdict = stats.versus_reference(
        table["ratio_low"].fill_null(0.0).to_numpy(),
        table["ratio_high"].fill_null(1.0).to_numpy(),
        overall_ratio,
    )
    table = table.with_columns(
        pl.Series("change_p_value", p_value, pl.Float64).fill_nan(None),
        pl.Series("vs_overall", verdict, pl.String),
    ).with_columns(
        (pl.col("change_p_value") < stats.ALPHA_TEST).fill_null(False).alias("change_marked")
    )
    above = table.filter(pl.col("vs_overall") == "above")["group"].head(1).to_list()
    below = table.filter(pl.col("vs_overall") == "below")["group"].tail(1).to_list()
    return table.with_columns(
        pl.when(pl.col("group").is_in(above))
        .then(pl.lit("best"))
        .when(pl.col("group").is_in(below))
        .then(pl.lit("worst"))
        .otherwise(pl.lit(""))
        .alias("rank")
    )


def agent_extremes(
    labeled: pl.DataFrame,
    period: Period,
    shown: int = AGENTS_SHOWN,
    min_contacts: int = MIN_AGENT_CONTACTS,
) -> tuple[pl.DataFrame, int, int]:
    """Top and bottom ``shown`` agents by raw contact-to-order ratio (used without a model).

    Returns (table with ``rank`` = best/worst only where the interval excludes the overall
    rate, agents ranked, agents left out for low volume). Bots have no agent id and are not agents.
    """
    humans = labeled.filter(pl.col("agent_id").is_not_null())
    table = breakdown(humans, period, "agent_id")
    eligible = table.filter(pl.col("contacts") >= min_contacts).sort(
        "contact_to_order_ratio", "contacts", descending=[True, True]
    )
    left_out = table.height - eligible.height
    count = min(shown, eligible.height // 2)
    credible = (
        pl.when(pl.col("vs_overall") == "above")
        .then(pl.lit("best"))
        .when(pl.col("vs_overall") == "below")
        .then(pl.lit("worst"))
        .otherwise(pl.lit(""))
        .alias("rank")
    )
    shown_rows = pl.concat([eligible.head(count), eligible.tail(count)]).with_columns(credible)
    return shown_rows, eligible.height, left_out


def weekly_trend(labeled: pl.DataFrame, period: Period, weeks: int = TREND_WEEKS) -> pl.DataFrame:
    """Weekly KPIs (with the rate's 95% interval) for ``weeks`` weeks up to the period's end."""
    first_day = (period.end - timedelta(weeks=weeks)).date()
    monday = first_day - timedelta(days=first_day.weekday())
    start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    window = Period(min(start, period.start), period.end)
    return with_rate_interval(kpi_table(labeled.filter(window.contains()), period="1w"))


@dataclass(frozen=True)
class RateChange:
    """The period's contact-to-order share against the previous period, with the test."""

    converted: int
    contacts: int
    previous_converted: int
    previous_contacts: int

    @property
    def interval(self) -> tuple[float, float]:
        low, high = stats.rate_interval(self.converted, self.contacts)
        return float(low), float(high)

    @property
    def p_value(self) -> float | None:
        value = float(
            stats.two_proportion_p_value(
                self.converted, self.contacts, self.previous_converted, self.previous_contacts
            )
        )
        return value if math.isfinite(value) else None

    @property
    def marked(self) -> bool:
        return self.p_value is not None and self.p_value < stats.ALPHA_TEST


def rate_change(labeled: pl.DataFrame, period: Period) -> RateChange:
    current = overall(labeled, period)
    previous = overall(labeled, period.previous())
    return RateChange(
        int(current["converted_contacts"] or 0),
        int(current["contacts"] or 0),
        int(previous["converted_contacts"] or 0),
        int(previous["contacts"] or 0),
    )


def unknown_outcomes(labeled: pl.DataFrame, period: Period, observed_until: datetime) -> int:
    """Contacts of the period whose H-day order window had not closed when the data ends."""
    return labeled.filter(period.contains() & (pl.col("label_known_at") > observed_until)).height
