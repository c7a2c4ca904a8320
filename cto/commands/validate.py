"""`cto validate PATH`: check input tables against the data contract and report what was rejected."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Validate contacts/orders/customers (Parquet or CSV) against the data contract."

EXIT_REJECTED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Exit codes: 0 no table's rejected share above --max-rejected; 1 rows rejected beyond it; "
        "2 a file fails as a whole (missing, empty, unreadable: one line on stderr)."
    )
    parser.add_argument(
        "path",
        type=Path,
        help="Directory holding contacts and orders (and optionally customers) as .parquet or .csv.",
    )
    parser.add_argument(
        "--rejects",
        type=Path,
        metavar="DIR",
        help="Write <table>_rejects.parquet and .csv here: each rejected row with _row, _column, "
        "_rule and _message.",
    )
    parser.add_argument(
        "--accepted",
        type=Path,
        metavar="DIR",
        help="Write the accepted rows as <table>.parquet here (contract dtypes, extra columns kept).",
    )
    parser.add_argument(
        "--max-rejected",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="Exit 0 while every table's rejected share is at most this (default 0: any rejected "
        "row exits 1).",
    )
    parser.add_argument(
        "--show",
        type=int,
        default=5,
        metavar="N",
        help="Print at most N rejected rows per column and rule (default 5; 0 prints none).",
    )


def _table_text(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def run(args: argparse.Namespace) -> int:
    from features.validate import load_and_validate

    result = load_and_validate(args.path)
    print(f"validated {args.path}")
    header = ["table", "source", "read", "accepted", "rejected", "coerced_to_other"]
    rows = [header] + [
        [str(r[name]) for name in header] for r in result.summary.iter_rows(named=True)
    ]
    print("\n".join(_table_text(rows)))

    counts = result.rule_counts()
    if counts.height:
        print("\nrejected rows by column and rule (a row breaking two rules counts in both):")
        for r in counts.iter_rows(named=True):
            source = result.sources[r["table"]]
            print(f"  {source} column {r['column']}, rule {r['rule']}: {r['rows']} row(s)")
        if args.show > 0:
            print(f"\nrejected rows (at most {args.show} per column and rule):")
            for line in result.error_lines(limit_per_rule=args.show):
                print(f"  {line}")

    if result.coerced.height:
        print("\nunknown categories taken as 'other' (rows kept, counted in coerced_to_other):")
        for (table, column), group in result.coerced.group_by(
            "table", "column", maintain_order=True
        ):
            values = ", ".join(
                f"{value!r} x{rows}"
                for value, rows in group.select("value", "rows").head(5).iter_rows()
            )
            more = f" and {group.height - 5} more" if group.height > 5 else ""
            print(
                f"  {result.sources[table]} column {column}: {group['rows'].sum()} row(s): "
                f"{values}{more}"
            )

    if args.rejects is not None:
        written = result.write_rejects(args.rejects)
        print(f"\nrejects written: {', '.join(str(p) for p in written)}")
    elif not result.ok:
        print("\n(use --rejects DIR to write every rejected row with its reasons)")
    if args.accepted is not None:
        written = result.write_tables(args.accepted)
        print(f"accepted rows written: {', '.join(str(p) for p in written)}")

    worst = max(
        (r["rejected"] / r["read"] for r in result.summary.iter_rows(named=True) if r["read"]),
        default=0.0,
    )
    if worst > args.max_rejected:
        print(
            f"\nFAILED: up to {worst:.2%} of a table's rows rejected (allowed {args.max_rejected:.2%})"
        )
        return EXIT_REJECTED
    print("\nOK")
    return 0
