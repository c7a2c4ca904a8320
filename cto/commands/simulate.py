"""`cto simulate`: write a realistic simulated data set (contacts, orders, customers, truth)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HELP = (
    "Simulate contacts, orders and customers with planted, documented effects (docs/simulator.md)."
)

# Runs at least this big print their stages as they go.
_PROGRESS_FROM = 200_000


def _start(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--start: not an ISO date: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--contacts", type=int, default=None, help="Contacts to simulate (default: settings)."
    )
    parser.add_argument("--seed", type=int, default=None, help="Random seed (default: settings).")
    parser.add_argument("--weeks", type=int, default=26, help="Weeks of contacts (default 26).")
    parser.add_argument(
        "--start",
        type=_start,
        default=None,
        help="First day, ISO date in UTC (default 2026-01-05, never today: same seed, same bytes).",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="Output directory (default: settings data_dir)."
    )
    parser.add_argument(
        "--exploration",
        type=float,
        default=0.0,
        help="Share of follow-up and callback decisions taken by a fair coin and logged in "
        "exploration.parquet (e.g. 0.1; default 0: none, the same bytes as without).",
    )
    parser.add_argument("--quiet", action="store_true", help="No progress lines.")


def run(args: argparse.Namespace) -> int:
    from features.settings import get_settings
    from features.simulate import simulate

    settings = get_settings()
    n_contacts = settings.simulate_contacts if args.contacts is None else args.contacts
    seed = settings.seed if args.seed is None else args.seed
    out = settings.data_dir if args.out is None else args.out
    began = time.perf_counter()

    def progress(line: str) -> None:
        print(f"  [{time.perf_counter() - began:6.1f}s] {line}", file=sys.stderr, flush=True)

    show = not args.quiet and n_contacts >= _PROGRESS_FROM
    data = simulate(
        n_contacts,
        seed,
        start=args.start,
        weeks=args.weeks,
        exploration=args.exploration,
        progress=progress if show else None,
    )
    if show:
        progress(f"writing {out}")
    data.write(out)
    scenario = data.scenario
    truth = data.truth
    strong = truth.filter(truth["driver_strength"] <= -1.0).height
    print(f"simulated {scenario['start'][:10]} .. {scenario['end'][:10]} (seed {seed}) -> {out}")
    for name in ("contacts", "orders", "customers"):
        print(f"  {name:<10} {getattr(data, name).height:>12,} rows")
    print(f"  contact-to-order ratio (order within 7 days): {data.contact_to_order_ratio():.1%}")
    print(f"  contacts with a strong planted driver: {strong / truth.height:.1%}")
    print(f"  staffing change at {scenario['staffing_change_at'][:10]}; truth in truth.parquet")
    if data.exploration is not None:
        randomised = data.exploration.select("follow_up_randomised", "callback_randomised").sum()
        print(
            f"  randomised decisions (exploration.parquet): "
            f"{randomised['follow_up_randomised'][0]:,} follow-ups, "
            f"{randomised['callback_randomised'][0]:,} callback offers"
        )
    print(f"  took {time.perf_counter() - began:.1f}s")
    return 0
