"""`cto experiment plan|analyse`: switchback (time-sliced ON/OFF) experiments on the contact-to-order ratio."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

HELP = "Plan a switchback experiment (slices, days for an effect) or analyse its logged slices."


def _data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data_dir",
        nargs="?",
        type=Path,
        help="Contract tables (contacts, orders): contacts are labelled with the 7-day outcome.",
    )
    p.add_argument("--table", type=Path, help="Or one row per contact (.csv/.parquet).")
    p.add_argument("--time-column", default="started_at", help="--table: the contact time.")
    p.add_argument("--label", default="converted", help="--table: the 0/1 order outcome.")
    p.add_argument("--out", type=Path, default=Path("out/experiment"), help="Output directory.")
    p.add_argument("--seed", type=int, help="Randomisation seed (default: settings.seed).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    plan = sub.add_parser("plan", help="Slice length and duration for a minimum detectable effect.")
    _data_arguments(plan)
    plan.add_argument(
        "--mde", type=float, default=0.05, help="Relative effect to detect (0.05 = 5%%)."
    )
    plan.add_argument("--power", type=float, default=0.8)
    plan.add_argument("--alpha", type=float, default=0.05)
    plan.add_argument("--slice-minutes", type=int, nargs="+", default=[30, 60, 120, 240])
    plan.add_argument("--burn-in-minutes", type=int, default=10, help="Dropped at each switch.")
    plan.add_argument(
        "--start", help="First day of the schedule (YYYY-MM-DD, default tomorrow UTC)."
    )
    analyse = sub.add_parser("analyse", help="Effect on the contact-to-order ratio with a 95% CI.")
    _data_arguments(analyse)
    analyse.add_argument("--schedule", type=Path, required=True, help="schedule.csv of the plan.")
    analyse.add_argument("--burn-in-minutes", type=int, default=10)
    analyse.add_argument("--alpha", type=float, default=0.05)


def _load(args: argparse.Namespace):
    import polars as pl

    from features.errors import CTOError
    from training.table import read_table

    if args.table is not None:
        if args.data_dir is not None:
            raise CTOError("give DATA_DIR or --table FILE, not both")
        frame = read_table(args.table)
        for c in (args.time_column, args.label):
            if c not in frame.columns:
                raise CTOError(
                    f"column {c!r} not in {args.table} (columns: {', '.join(frame.columns)})"
                )
        if frame.schema[args.time_column] == pl.String:
            frame = frame.with_columns(pl.col(args.time_column).str.to_datetime(time_zone="UTC"))
        return frame, args.time_column, args.label
    from features.labels import label_contacts
    from features.settings import get_settings
    from training.data import load_input

    data = load_input(args.data_dir or get_settings().data_dir)
    labelled = label_contacts(data.tables["contacts"], data.tables["orders"])
    return labelled.select("started_at", "converted"), "started_at", "converted"


def run(args: argparse.Namespace) -> int:
    import polars as pl

    from features.errors import CTOError
    from features.settings import get_settings
    from training import experiment

    seed = args.seed if args.seed is not None else get_settings().seed
    frame, time_column, label = _load(args)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.action == "plan":
        plan = experiment.plan_switchback(
            frame,
            time_column,
            label,
            mde_relative=args.mde,
            alpha=args.alpha,
            power=args.power,
            slice_minutes=tuple(args.slice_minutes),
            burn_in_minutes=args.burn_in_minutes,
        )
        chosen = plan.chosen
        if args.start:
            try:
                start = datetime.fromisoformat(args.start).replace(tzinfo=UTC)
            except ValueError as exc:
                raise CTOError(f"--start {args.start!r}: expected YYYY-MM-DD") from exc
        else:
            today = datetime.now(UTC)
            start = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
        days = int(-(-chosen.days_needed // 1))
        sched = experiment.schedule(start, days, chosen.slice_minutes, seed)
        sched.write_csv(args.out / "schedule.csv")
        (args.out / "plan.json").write_text(
            json.dumps(plan.to_dict() | {"days": days, "seed": seed}, indent=1)
        )
        print(
            f"ratio {chosen.ratio:.2%}; detect a {plan.mde_relative:.0%} change "
            f"({plan.mde_absolute:+.2%} points) at power {plan.power:.0%}, alpha {plan.alpha}"
        )
        print(
            f"{'slice':>7}{'slices/day':>11}{'contacts/slice':>15}{'slice sd':>9}{'slices':>8}{'days':>7}{'burn-in loss':>13}"
        )
        for o in plan.options:
            mark = "  <- chosen" if o is chosen else ""
            print(
                f"{o.slice_minutes:>5} m{o.slices_per_day:>11.1f}{o.contacts_per_slice:>15.1f}{o.slice_sd:>9.2f}"
                f"{o.slices_needed:>8}{o.days_needed:>7.1f}{o.burn_in_share:>13.1%}{mark}"
            )
        print(
            f"schedule: {args.out / 'schedule.csv'} ({sched.height} slices, {days} days from {start.date()})"
        )
        return 0
    sched = pl.read_csv(args.schedule, try_parse_dates=True)
    analysis, per_slice = experiment.analyse_switchback(
        frame,
        time_column,
        label,
        sched,
        burn_in_minutes=args.burn_in_minutes,
        alpha=args.alpha,
        seed=seed,
    )
    per_slice.write_csv(args.out / "slices.csv")
    (args.out / "analysis.json").write_text(json.dumps(analysis.to_dict(), indent=1))
    a = analysis
    level = 1 - args.alpha
    print(
        f"ON  {a.slices_on} slices, {a.contacts_on:,} contacts, contact-to-order ratio {a.ratio_on:.2%}"
    )
    print(
        f"OFF {a.slices_off} slices, {a.contacts_off:,} contacts, contact-to-order ratio {a.ratio_off:.2%}"
    )
    print(
        f"effect {a.effect:+.2%} points ({a.relative_effect:+.1%}), {level:.0%} CI [{a.ci_low:+.2%}, {a.ci_high:+.2%}] "
        f"(cluster-robust by slice); p = {a.p_value:.3f}, randomisation p = {a.p_value_randomisation:.3f}"
    )
    return 0
