"""The report's numbers that come straight from the data: headline KPIs, breakdowns, weekly trend.

Every ratio is computed by :func:`features.kpis.kpi_table` on labelled contacts
(:func:`features.labels.label_contacts`), so the report, the CLI summary and the notebooks agree.
A contact belongs to the period its ``started_at`` falls in; its outcome is the order within H days
after it, even when that order falls after the period's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import polars as pl

from features.errors import CTOError
from features.kpis import kpi_table

DEFAULT_PERIOD_DAYS = 28
TREND_WEEKS = 12
# A group needs this many contacts in the period to be ranked best or worst: a ratio over a
# handful of contacts is noise, not a finding.
MIN_GROUP_CONTACTS = 50
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


def breakdown(
    labeled: pl.DataFrame, period: Period, by: str, min_contacts: int = MIN_GROUP_CONTACTS
) -> pl.DataFrame:
    """KPIs per value of ``by`` in the period, with last period's ratio and a best/worst mark.

    Columns: ``group`` (text), the KPI columns, ``previous_ratio``, ``ratio_change`` and ``rank``
    (``best``/``worst``/empty; only groups with at least ``min_contacts`` contacts are ranked).
    """

    def grouped(p: Period) -> pl.DataFrame:
        frame = labeled.filter(p.contains()).with_columns(
            pl.col(by).cast(pl.String).fill_null(UNKNOWN).alias("group")
        )
        return kpi_table(frame, by=["group"])

    current = grouped(period)
    previous = grouped(period.previous()).select(
        "group", pl.col("contact_to_order_ratio").alias("previous_ratio")
    )
    table = (
        current.join(previous, on="group", how="left")
        .with_columns(
            (pl.col("contact_to_order_ratio") - pl.col("previous_ratio")).alias("ratio_change")
        )
        .sort("contact_to_order_ratio", descending=True)
    )
    eligible = pl.col("contacts") >= min_contacts
    ranked = table.filter(eligible)
    best = ranked.head(1)["group"].to_list() if ranked.height >= 3 else []
    worst = ranked.tail(1)["group"].to_list() if ranked.height >= 3 else []
    return table.with_columns(
        pl.when(pl.col("group").is_in(best))
        .then(pl.lit("best"))
        .when(pl.col("group").is_in(worst))
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
    """Top and bottom ``shown`` agents by contact-to-order ratio among those with enough contacts.

    Returns (table with ``rank`` = best/worst, agents ranked, agents left out for low volume).
    Bots have no agent id and are not agents.
    """
    humans = labeled.filter(pl.col("agent_id").is_not_null())
    table = breakdown(humans, period, "agent_id", min_contacts)
    eligible = table.filter(pl.col("contacts") >= min_contacts).sort(
        "contact_to_order_ratio", "contacts", descending=[True, True]
    )
    left_out = table.height - eligible.height
    count = min(shown, eligible.height // 2)
    top = eligible.head(count).with_columns(pl.lit("best").alias("rank"))
    bottom = eligible.tail(count).with_columns(pl.lit("worst").alias("rank"))
    return pl.concat([top, bottom]), eligible.height, left_out


def weekly_trend(labeled: pl.DataFrame, period: Period, weeks: int = TREND_WEEKS) -> pl.DataFrame:
    """Weekly KPIs for the ``weeks`` weeks up to the period's end (Monday-start weeks)."""
    first_day = (period.end - timedelta(weeks=weeks)).date()
    monday = first_day - timedelta(days=first_day.weekday())
    start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    window = Period(min(start, period.start), period.end)
    return kpi_table(labeled.filter(window.contains()), period="1w")


def unknown_outcomes(labeled: pl.DataFrame, period: Period, observed_until: datetime) -> int:
    """Contacts of the period whose H-day order window had not closed when the data ends."""
    return labeled.filter(period.contains() & (pl.col("label_known_at") > observed_until)).height
