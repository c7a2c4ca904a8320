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
    from features.olist import import_olist

    result = import_olist(args.src_dir, args.out)
    print(
        f"olist: {result.contacts:,} contacts, {result.orders:,} orders, {result.customers:,} customers "
        f"-> {result.out_dir}"
    )
    if not result.checksums_match:
        print("olist: warning: the CSV files differ from the release this mapping was written for")
    print(
        f"next: cto validate {result.out_dir} (the lead whose deal was won before its first contact "
        f"is rejected: rule time_order); cto features {result.out_dir} --horizon-days 90 --out FEATURES_DIR"
    )
    return 0
