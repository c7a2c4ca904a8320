"""`cto summary PATH`: contact-to-order KPIs of a data directory, overall first, then by dimension and period."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Contact-to-order KPIs of a data directory: overall, then by --by columns and --period."

# Column headings and how each KPI is shown in the table.
_HEADINGS = {
    "period_start": "period",
    "contacts": "contacts",
    "converted_contacts": "converted",
    "orders": "orders",
    "contact_to_order_ratio": "contact->order",
    "contacts_per_order": "contacts/order",
    "median_time_to_order_hours": "median h to order",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", type=Path, help="Directory with contacts and orders (.parquet or .csv)."
    )
    parser.add_argument(
        "--by",
        default="",
        help="Comma-separated contact columns to group by, e.g. channel,intent.",
    )
    parser.add_argument(
        "--period", default=None, help="Group by calendar period too: 1d, 1w, 1mo, 1q, ..."
    )
    parser.add_argument(
        "--horizon-days", type=int, default=None, help="H: order window (default: settings)."
    )
    parser.add_argument(
        "--gap-days", type=int, default=None, help="G: gap that ends a journey (default: settings)."
    )
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="table (readable, default) or csv/json of the grouped KPIs for other tools.",
    )


def _format_cell(column: str, value: object) -> str:
    if value is None:
        return "-"
    if column == "period_start":
        return value.strftime("%Y-%m-%d")
    if column == "contact_to_order_ratio":
        return f"{value:.1%}"
    if column in ("contacts_per_order", "median_time_to_order_hours"):
        return f"{value:,.1f}" if column == "median_time_to_order_hours" else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_table(frame, title: str | None = None) -> str:
    """A plain-text table with aligned columns: text left, numbers right."""
    columns = frame.columns
    headings = [_HEADINGS.get(column, column) for column in columns]
    body = [
        [_format_cell(column, value) for column, value in zip(columns, row, strict=True)]
        for row in frame.rows()
    ]
    numeric = [frame.schema[column].is_numeric() for column in columns]
    widths = [max([len(h), *(len(row[i]) for row in body)]) for i, h in enumerate(headings)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if is_number else cell.ljust(width)
            for cell, width, is_number in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    lines = [title] if title else []
    lines += [
        line(headings),
        "  ".join("-" * width for width in widths),
        *(line(row) for row in body),
    ]
    return "\n".join(lines)


def _journey_lines(journey_table) -> list[str]:
    import polars as pl

    stats = journey_table.select(
        pl.len().alias("journeys"),
        pl.col("converted").sum().alias("ended_in_order"),
        pl.col("journey_open").sum().alias("open"),
        pl.col("contacts_to_order").median().alias("median_contacts"),
        pl.col("time_to_order_hours").median().alias("median_hours"),
    ).row(0, named=True)
    if not stats["journeys"]:
        return ["journeys: none"]
    share = stats["ended_in_order"] / stats["journeys"]
    lines = [
        f"journeys: {stats['journeys']:,}; ended in an order {stats['ended_in_order']:,} ({share:.1%}); "
        f"still open {stats['open']:,}"
    ]
    if stats["ended_in_order"]:
        lines.append(
            f"journeys that ended in an order: median {stats['median_contacts']:.1f} contacts and "
            f"{stats['median_hours']:.1f} h from first contact to order"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    import sys

    from features.errors import CTOError
    from features.kpis import kpi_table, unattributed_orders
    from features.labels import journeys_from_labels, label_contacts, resolve_days
    from features.validate import load_and_validate

    by = [name.strip() for name in args.by.split(",") if name.strip()]
    horizon_days, gap_days = resolve_days(args.horizon_days, args.gap_days)
    result = load_and_validate(args.path)
    contacts, orders = result.tables["contacts"], result.tables["orders"]
    unknown = [name for name in by if name not in contacts.columns]
    if unknown:
        raise CTOError(
            f"--by {','.join(unknown)}: not a contacts column ({', '.join(contacts.columns)})"
        )
    rejected = sum(frame["_row"].n_unique() for frame in result.rejects.values())
    if rejected:
        print(
            f"warning: {rejected:,} row(s) failed the data contract and are left out; "
            f"`cto validate {args.path}` lists them",
            file=sys.stderr,
        )

    labeled = label_contacts(contacts, orders, horizon_days, gap_days)
    grouped = (
        kpi_table(labeled, by=by, period=args.period) if (by or args.period) else kpi_table(labeled)
    )
    if args.format == "csv":
        sys.stdout.write(grouped.write_csv())
        return 0
    if args.format == "json":
        sys.stdout.write(grouped.write_json() + "\n")
        return 0

    unattributed = unattributed_orders(labeled, orders)
    span = ""
    if contacts.height:
        first, last = contacts["started_at"].min(), contacts["started_at"].max()
        span = f" from {first:%Y-%m-%d} to {last:%Y-%m-%d}"
    print(f"{args.path}: {contacts.height:,} contacts{span}, {orders.height:,} orders")
    print(
        f"an order within H={horizon_days} days of a contact converts it; a gap of G={gap_days} days "
        f"ends a journey (docs/labels.md)"
    )
    print()
    print(render_table(kpi_table(labeled), title="overall"))
    share = f" ({unattributed / orders.height:.1%})" if orders.height else ""
    print(
        f"orders with no contact in the {horizon_days} days before them (unattributed): {unattributed:,}{share}"
    )
    for text in _journey_lines(journeys_from_labels(labeled)):
        print(text)
    if by or args.period:
        parts = ([f"by {', '.join(by)}"] if by else []) + (
            [f"per {args.period}"] if args.period else []
        )
        print()
        print(render_table(grouped, title=" ".join(parts)))
    return 0
