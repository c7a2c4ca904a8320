"""`cto report`: the driver report for contact-centre managers (one offline HTML file, or PDF)."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from cto.options import add_label_arguments, add_model_prefix_argument, command_settings

HELP = "Write the driver report: where and why contacts fail to become orders (HTML or PDF)."


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a date like 2026-03-31, got {text!r}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data_dir",
        nargs="?",
        type=Path,
        default=None,
        help="Directory with contacts/orders[/customers] (.parquet or .csv); default CTO_DATA_DIR.",
    )
    parser.add_argument(
        "--since",
        type=_date,
        default=None,
        help="First day of the report period (inclusive); default: 28 days before --until.",
    )
    parser.add_argument(
        "--until",
        type=_date,
        default=None,
        help="Last day of the report period (inclusive); default: the last day with contacts whose "
        "outcomes are known (the data's end minus the order horizon, at most the last contact).",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("report.html"), help="Output file (default report.html)."
    )
    parser.add_argument(
        "--allow-other-data",
        action="store_true",
        help="Explain data of another source or schema than the champions learnt from (refused "
        "by default); the report then says so in red under its title.",
    )
    add_label_arguments(parser)
    add_model_prefix_argument(parser)
    parser.add_argument(
        "--filter",
        dest="filters",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="Report only contacts with this value, e.g. --filter channel=phone; repeat to combine "
        "(values of one column are alternatives, different columns must all hold). Columns: "
        "channel, intent, segment, direction, handled_by, agent_id.",
    )
    parser.add_argument(
        "--format",
        dest="fmt",
        choices=("html", "pdf"),
        default=None,
        help="html (default, or from the --out suffix) or pdf (printed with headless Chromium).",
    )

    parser.add_argument(
        "--policy",
        type=Path,
        help="policy.json of `cto policy`: adds what acting on the scores is worth.",
    )
    parser.add_argument(
        "--experiment",
        type=Path,
        help="analysis.json of `cto experiment analyse` (a measured effect).",
    )


def run(args: argparse.Namespace) -> int:
    from features.settings import get_settings
    from reports.driver import build_report, parse_filters

    fmt = args.fmt or ("pdf" if args.out.suffix.lower() == ".pdf" else "html")
    data_dir = args.data_dir if args.data_dir is not None else get_settings().data_dir
    settings = command_settings(args, data_dir)
    path = build_report(
        data_dir,
        args.since,
        args.until,
        args.out,
        settings,
        fmt=fmt,
        progress=True,
        allow_other_data=args.allow_other_data,
        filters=parse_filters(args.filters),
        decision_evidence={"policy": args.policy, "experiment": args.experiment},
    )
    print(f"wrote {path}")
    return 0
