"""`cto score`: batch scoring into Parquet, the entry point of nightly jobs (docs/scoring.md)."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from cto.options import add_label_arguments, add_model_prefix_argument, command_settings

HELP = "Score contacts in batch with the registered models (contract tables or one table) into Parquet."


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a date like 2026-03-31, got {text!r}") from exc


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("expected 0 or more")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Examples: cto score DATA --moment arrival --since 2026-03-01 --out scores.parquet; "
        "cto score --table sessions.csv --model cto-sessions-conversion@champion --out scores.parquet"
    )
    parser.add_argument(
        "data_dir",
        nargs="?",
        type=Path,
        help="Directory with contacts/orders[/customers]: every contact of the period is scored "
        "with point-in-time features (history before the period included).",
    )
    parser.add_argument(
        "--moment",
        choices=("arrival", "after_contact"),
        default="arrival",
        help="arrival: conversion at arrival; after_contact: conversion, drop-off reason, "
        "contacts to order and next action (default arrival).",
    )
    parser.add_argument("--since", type=_date, help="First day to score (inclusive, UTC).")
    parser.add_argument("--until", type=_date, help="Last day to score (inclusive, UTC).")
    parser.add_argument(
        "--table",
        type=Path,
        help="Score a one-row-per-contact table (.csv/.parquet) instead: output = input columns "
        "plus p_order, in input order.",
    )
    parser.add_argument(
        "--model",
        metavar="NAME[@ALIAS|/VERSION]",
        help="--table: the registered model (default alias: champion).",
    )
    parser.add_argument("--out", type=Path, required=True, help="Output Parquet file.")
    parser.add_argument(
        "--explain",
        type=_count,
        default=0,
        metavar="K",
        help="Add the top K drivers (driver_k, driver_k_effect in log-odds) of p_order.",
    )
    parser.add_argument(
        "--allow-other-data",
        action="store_true",
        help="Score data of another source or schema than the model learnt from; every row is "
        "marked model_data_mismatch=true and a warning names the difference.",
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=100_000,
        metavar="N",
        help="Contacts scored per chunk (memory bound; default 100,000).",
    )
    parser.add_argument(
        "--dask",
        default=None,
        metavar="ADDRESS",
        help="Score on a Dask cluster, a scheduler address or local:N; default CTO_DASK. "
        "DATA_DIR (validated Parquet tables): one task per customer-hash partition (rates "
        "by the rate step sharded by time), rows grouped by partition; --table FILE.parquet: "
        "map_partitions over its row groups, input order. Same scores as one process.",
    )
    parser.add_argument("--quiet", action="store_true", help="No progress lines on stderr.")
    add_label_arguments(parser)
    add_model_prefix_argument(parser)


def run(args: argparse.Namespace) -> int:

    from features.settings import get_settings

    address = args.dask or get_settings().dask
    if not address:
        return _run(args)
    from features.distributed import dask_client
    from training.distributed import use_dask

    with dask_client(address) as client, use_dask(client):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import sys

    from features.errors import CTOError
    from features.settings import get_settings

    if args.chunk_rows < 1:
        raise CTOError("--chunk-rows must be at least 1")
    if args.out.suffix != ".parquet":
        raise CTOError(f"--out {args.out}: expected a .parquet file")
    if args.table is not None:
        if args.data_dir is not None or args.since or args.until or args.explain:
            raise CTOError("--table scores one table: drop DATA_DIR, --since/--until and --explain")
        if not args.model:
            raise CTOError("--table needs --model NAME[@ALIAS|/VERSION]")
        from training.batch import score_table

        result = score_table(
            args.table,
            args.model,
            command_settings(args),
            args.out,
            allow_other_data=args.allow_other_data,
            chunk_rows=args.chunk_rows,
            progress=not args.quiet,
        )
    else:
        if args.model:
            raise CTOError(
                "--model goes with --table; DATA_DIR uses the champions (--model-prefix)"
            )
        from serving.rules import PRIORITY_FLOORS, ActionCosts, next_action
        from training.batch import RoutingRules, score_contacts

        data_dir = args.data_dir or get_settings().data_dir
        settings = command_settings(args, data_dir)

        def say(message: str) -> None:
            if not args.quiet:
                print(f"score: {message}", file=sys.stderr, flush=True)

        result = score_contacts(
            data_dir,
            settings,
            args.out,
            moment=args.moment,
            since=args.since,
            until=args.until,
            explain=args.explain,
            allow_other_data=args.allow_other_data,
            chunk_rows=args.chunk_rows,
            progress=not args.quiet,
            log=say,
            rules=RoutingRules(PRIORITY_FLOORS, next_action, ActionCosts.from_settings(settings)),
        )
    rate = result.rows / result.seconds if result.seconds > 0 else float("nan")
    print(
        f"scored {result.rows:,} rows in {result.seconds:.1f} s ({rate:,.0f}/s) with "
        f"{', '.join(result.models)} -> {result.out}"
    )
    if result.mismatches:
        print("MARKED: every row has model_data_mismatch=true (scored with --allow-other-data)")
    return 0
