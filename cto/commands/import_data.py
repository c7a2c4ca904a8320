"""`cto import SOURCE SRC_DIR --out DIR`: map a public data set into the data contract."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Import a public data set (olist) into contract tables (contacts, orders, customers)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sources = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    olist = sources.add_parser(
        "olist",
        help="Olist marketing funnel (leads -> contacts, closed deals -> orders). Test-only licence.",
        description="Map the Olist marketing funnel CSVs into the data contract (see features/olist.py "
        "for every mapping decision). Licence CC BY-NC-SA 4.0: tests and examples only.",
    )
    olist.add_argument("src_dir", type=Path, help="Directory with the two Olist CSV files.")
    olist.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="Where to write the tables."
    )


def run(args: argparse.Namespace) -> int:
    from features.olist import RECOMMENDED_HORIZON_DAYS, REJECTS_FILE, import_olist

    result = import_olist(args.src_dir, args.out)
    print(
        f"olist: {result.contacts:,} contacts, {result.orders:,} orders, {result.customers:,} customers "
        f"-> {result.out_dir}"
    )
    if result.rejected_leads:
        rules = ", ".join(f"{rule} {n:,}" for rule, n in result.rejected.items())
        print(
            f"olist: left out {result.rejected_leads:,} lead(s) and their {result.rejected_deals:,} "
            f"deal(s) (rule: {rules}; first recorded deal {(result.first_order_at or '')[:10]}); "
            f"each kept with its reason in {result.out_dir / REJECTS_FILE}"
        )
    if not result.checksums_match:
        print("olist: warning: the CSV files differ from the release this mapping was written for")
    print(
        f"olist: labels use a {RECOMMENDED_HORIZON_DAYS}-day horizon on this directory by default "
        "(recorded in import.json; --horizon-days overrides it)"
    )
    print(f"next: cto validate {result.out_dir}")
    print(f"      cto train {result.out_dir} --promote --model-prefix olist")
    return 0
