"""`cto backtest`: rolling-origin evaluation of training schemes, model families and baselines."""

from __future__ import annotations

import argparse
from pathlib import Path

from cto.options import add_label_arguments, add_work_dir_argument, command_settings

HELP = "Rolling-origin backtest: schemes, LightGBM vs fair baselines, retrain cadence (MLflow)."

TASK_CHOICES = ("conversion-arrival", "conversion-after-contact")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data_dir",
        nargs="?",
        type=Path,
        help="Directory with contacts/orders[/customers]; default: settings.data_dir.",
    )
    parser.add_argument(
        "--task",
        choices=TASK_CHOICES,
        default="conversion-after-contact",
        help="DATA_DIR: which conversion model to backtest (default conversion-after-contact).",
    )
    parser.add_argument("--table", type=Path, help="Backtest on FILE (one row per contact).")
    parser.add_argument("--label", help="--table: the boolean outcome column.")
    parser.add_argument("--time-column", help="--table: the column that orders the rows in time.")
    parser.add_argument(
        "--exclude", nargs="*", default=[], help="--table: columns that are not features."
    )
    parser.add_argument(
        "--time-unit",
        help="--table with a numeric time column: what one unit is (e.g. months), for the report.",
    )
    parser.add_argument("--folds", type=int, default=5, help="Forward folds (default 5).")
    parser.add_argument(
        "--bootstrap", type=int, default=300, help="Bootstrap resamples per fold (default 300)."
    )
    parser.add_argument(
        "--out", type=Path, help="Also write backtest.md, backtest.json and backtest.png here."
    )
    parser.add_argument(
        "--dask",
        default=None,
        metavar="ADDRESS",
        help="Run on a Dask cluster: a scheduler address (tcp://host:8786) or local:N; default "
        "CTO_DASK. DATA_DIR's features by the Dask feature path (one task per customer-hash "
        "partition), every LightGBM fit with lightgbm.dask.",
    )
    add_work_dir_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="No progress lines on stderr.")
    add_label_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from features.settings import get_settings

    address = args.dask or get_settings().dask
    if not address:
        return _run(args, None)
    from features.distributed import dask_client, worker_count
    from training.distributed import use_dask

    with dask_client(address) as client, use_dask(client):
        if not args.quiet:
            print(f"dask: {address}, {worker_count(client)} workers", flush=True)
        return _run(args, client)


def _run(args: argparse.Namespace, client) -> int:
    from features.errors import CTOError
    from features.settings import get_settings
    from training import backtest
    from training.pipeline import Progress

    data_dir = None if args.table is not None else (args.data_dir or get_settings().data_dir)
    settings = command_settings(args, data_dir)
    say = Progress(not args.quiet, prefix="backtest")
    if args.folds < 1:
        raise CTOError(f"--folds must be at least 1, got {args.folds}")
    if args.bootstrap < 20:
        raise CTOError(f"--bootstrap must be at least 20 resamples, got {args.bootstrap}")
    if args.table is not None:
        if not args.label or not args.time_column:
            raise CTOError("--table needs --label COLUMN and --time-column COLUMN")
        if args.data_dir:
            raise CTOError("--table backtests one file: drop DATA_DIR")
        if args.work_dir:
            raise CTOError("--work-dir goes with --dask and DATA_DIR (a table has no feature step)")
        data = backtest.input_from_table(
            args.table, args.label, args.time_column, list(args.exclude), settings.seed
        )
        if args.time_unit:
            if data.unit == "days":
                raise CTOError(f"--time-unit: {args.time_column!r} is a date/time, read in days")
            data.unit = args.time_unit
    else:
        if args.label or args.time_column or args.exclude:
            raise CTOError("--label, --time-column and --exclude go with --table FILE")
        data = backtest.input_from_directory(
            data_dir, settings, args.task, log=say, client=client, work_dir=args.work_dir
        )
    result = backtest.run_backtest(
        data, settings, folds=args.folds, n_boot=args.bootstrap, log=say, out_dir=args.out
    )
    print(backtest.summary_markdown(result), end="")
    chosen = result.chosen[result.recommended_family]
    flags = [f"--window {chosen.window:g}"] if chosen.window is not None else []
    flags += [f"--half-life {chosen.half_life:g}"] if chosen.half_life is not None else []
    print(f"\nbacktest run {result.run_id}; cto train uses scheme {chosen.name}"
          + (f" ({' '.join(flags)})" if flags else ""))  # fmt: skip
    return 0
