"""Contact-to-order KPIs by any dimension and period, from labelled contacts (docs/labels.md#kpis).

- ``contact_to_order_ratio`` = contacts followed by an order within H days / contacts.
- ``contacts_per_order`` = contacts / orders, where an order counts in the group (and the period) of
  the contact it is attributed to: the latest contact at or before it within H days
  (``orders_attributed`` of :func:`features.labels.label_contacts`). Orders with no such contact are
  *unattributed* and count in no group; :func:`unattributed_orders` counts them.
- ``median_time_to_order_hours``: median hours from a converted contact to its order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import polars as pl

from features.errors import CTOError

KPI_COLUMNS = (
    "contacts",
    "converted_contacts",
    "orders",
    "contact_to_order_ratio",
    "contacts_per_order",
    "median_time_to_order_hours",
)
_NEEDED = ("started_at", "converted", "order_at", "orders_attributed")
# Polars interval strings: one or more <integer><unit>, e.g. "1w", "1mo", "2w3d".
_INTERVAL = re.compile(r"^(\d+(ns|us|ms|s|m|h|d|w|mo|q|y))+$")


def _metrics() -> list[pl.Expr]:
    return [
        pl.len().cast(pl.UInt32).alias("contacts"),
        pl.col("converted").sum().cast(pl.UInt32).alias("converted_contacts"),
        pl.col("orders_attributed").sum().cast(pl.UInt32).alias("orders"),
        (pl.col("order_at") - pl.col("started_at"))
        .dt.total_hours(fractional=True)
        .median()
        .alias("median_time_to_order_hours"),
    ]


def _ratios() -> list[pl.Expr]:
    return [
        pl.when(pl.col("contacts") > 0)
        .then(pl.col("converted_contacts") / pl.col("contacts"))
        .otherwise(None)
        .alias("contact_to_order_ratio"),
        # A group without orders has no contacts-per-order (not infinity, not zero).
        pl.when(pl.col("orders") > 0)
        .then(pl.col("contacts") / pl.col("orders"))
        .otherwise(None)
        .alias("contacts_per_order"),
    ]


def kpi_table(
    labeled: pl.DataFrame | pl.LazyFrame,
    by: Sequence[str] | str | None = None,
    period: str | None = None,
) -> pl.DataFrame:
    """KPIs per group of ``by`` columns and per ``period`` of the contacts' ``started_at``.

    ``labeled`` is the output of :func:`features.labels.label_contacts`. ``period`` is a Polars interval
    ("1d", "1w", "1mo", "1q", ...): calendar windows in UTC (weeks start on Monday), labelled by their
    start in ``period_start``; only windows with contacts appear. With neither ``by`` nor ``period``
    the table has one row: the overall KPIs. Rows are sorted by period, then by the ``by`` columns.
    """
    by = [by] if isinstance(by, str) else list(by or [])
    frame = labeled.lazy()
    schema = frame.collect_schema()
    missing = [name for name in _NEEDED if name not in schema]
    if missing:
        raise CTOError(
            f"kpi_table needs labelled contacts (features.labels.label_contacts): missing {missing}"
        )
    unknown = [name for name in by if name not in schema]
    if unknown:
        raise CTOError(
            f"cannot group KPIs by {', '.join(unknown)}: not a contact column ({', '.join(schema)})"
        )
    if len(set(by)) != len(by) or "period_start" in by:
        raise CTOError(f"group-by columns must be distinct and not 'period_start', got {by}")

    if period is None:
        grouped = frame.group_by(by) if by else frame
        table = grouped.agg(_metrics()) if by else frame.select(_metrics())
        order = by
    else:
        if not isinstance(period, str) or not _INTERVAL.match(period):
            raise CTOError(
                f"period must be a Polars interval such as 1d, 1w, 1mo, 1q, got {period!r}"
            )
        table = (
            frame.sort("started_at")
            .group_by_dynamic(
                "started_at", every=period, group_by=by or None, label="left", start_by="window"
            )
            .agg(_metrics())
            .rename({"started_at": "period_start"})
        )
        order = ["period_start", *by]
    table = table.with_columns(_ratios()).select(*order, *KPI_COLUMNS)
    if order:
        table = table.sort(order, nulls_last=True)
    # group_by_dynamic on sorted rows: the in-memory engine is faster than the streaming default.
    return table.collect(engine="in-memory")


def unattributed_orders(
    labeled: pl.DataFrame | pl.LazyFrame, orders: pl.DataFrame | pl.LazyFrame
) -> int:
    """Orders that no contact accounts for (no contact of the customer in the H days before them)."""
    attributed = labeled.lazy().select(pl.col("orders_attributed").sum()).collect().item() or 0
    total = orders.lazy().select(pl.len()).collect().item()
    return int(total - attributed)
