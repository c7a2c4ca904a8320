"""`cto materialize DATA_DIR`: load offline tables into the service's online store."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = (
    "Load validated contacts, orders and customers into the service's event store and online "
    "customer state, so a new service scores with full history from its first request."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        type=Path,
        help="Directory holding contacts and orders (and optionally customers) as .parquet or .csv.",
    )
    parser.add_argument(
        "--event-store-url",
        default=None,
        help="Store to load: SQLite file or database URL (default: CTO_EVENT_STORE_URL).",
    )


def run(args: argparse.Namespace) -> int:
    from cto.options import load_contract_tables
    from features.errors import CTOError
    from features.settings import get_settings
    from serving.store import EventStore

    if not args.path.is_dir():
        raise CTOError(f"{args.path}: not a directory (expected contacts and orders tables)")
    overrides = {"event_store_url": args.event_store_url} if args.event_store_url else {}
    settings = get_settings(**overrides)
    started = time.perf_counter()
    result = load_contract_tables(args.path, "not loaded")
    contacts, orders = result.tables["contacts"], result.tables["orders"]
    customers = result.tables.get("customers")
    print(
        f"input: {contacts.height:,} contacts, {orders.height:,} orders, "
        f"{0 if customers is None else customers.height:,} customers",
        flush=True,
    )
    store = EventStore(settings.event_store_url, settings.history_days)
    try:
        counts = store.materialize(contacts, orders, customers)
    finally:
        store.close()
    print(
        f"materialized {counts['states']:,} customer states ({counts['contacts']:,} contacts, "
        f"{counts['orders']:,} orders, {counts['customers']:,} customers) into "
        f"{settings.event_store_url} in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return 0
