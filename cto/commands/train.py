"""`cto train`: train, log and register the models (contract tables, or one table per contact)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cto.options import (
    add_label_arguments,
    add_model_prefix_argument,
    add_work_dir_argument,
    command_settings,
)

HELP = "Train the conversion, drop-off reason and contacts-to-order models into MLflow."

TASK_CHOICES = (
    "conversion-arrival",
    "conversion-after-contact",
    "dropoff-reason",
    "contacts-to-order",
    "follow-up-uplift",
    "callback-uplift",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data_dir",
        nargs="?",
        type=Path,
        help="Directory with contacts/orders[/customers] (.parquet or .csv); default: settings.data_dir.",
    )
    parser.add_argument(
        "--promote",
        action="store_true",
        help="Gate each new version into the champion alias (it must beat the champion on its test window).",
    )
    parser.add_argument("--tasks", nargs="+", choices=TASK_CHOICES, help="Train only these models.")
    parser.add_argument(
        "--table", type=Path, help="Train the conversion model on FILE (one row per contact)."
    )
    parser.add_argument("--label", help="--table: the boolean outcome column.")
    parser.add_argument(
        "--time-column", help="--table: split by this column's time (else stratified random)."
    )
    parser.add_argument(
        "--exclude", nargs="*", default=[], help="--table: columns that are not features."
    )
    parser.add_argument(
        "--model-name", help="--table: registered model name (default <prefix>-<file>-conversion)."
    )
    parser.add_argument(
        "--family",
        choices=("lightgbm", "linear", "auto"),
        default="lightgbm",
        help="--table: the model to register: LightGBM, the logistic regression (one-hot + "
        "standardised, the fair baseline), or auto: what the latest `cto backtest --table` of "
        "the same file recommended (default lightgbm). The gate compares it with the champion "
        "whatever the families.",
    )
    parser.add_argument(
        "--treatment",
        help="--table: the 0/1 (yes/no) treatment column: train uplift models instead (training.uplift).",
    )
    parser.add_argument(
        "--test-table", type=Path, help="--treatment: judge on this file instead of a split."
    )
    parser.add_argument(
        "--learners",
        nargs="+",
        choices=("t", "s", "x", "dr"),
        default=["t", "s", "x", "dr"],
        help="--treatment: meta-learners to compare (the T-learner is the baseline).",
    )
    parser.add_argument(
        "--propensity",
        choices=("constant", "model"),
        default="constant",
        help="--treatment: 'constant' for randomised treatment, 'model' for logged (confounded) data.",
    )
    parser.add_argument(
        "--order-value", type=float, default=1.0, help="--treatment: value of one outcome."
    )
    parser.add_argument(
        "--treatment-cost",
        type=float,
        default=0.0,
        help="--treatment: cost of one treatment; the rule treats where uplift x value > cost.",
    )
    parser.add_argument(
        "--window",
        type=float,
        metavar="DAYS",
        help="Conversion models learn only from the last DAYS before the test window (table: "
        "units of the time column). Default: the scheme the latest `cto backtest` of the same "
        "data chose, else every labelled row.",
    )
    parser.add_argument(
        "--half-life",
        type=float,
        metavar="DAYS",
        help="Conversion models weigh each row 0.5 ** (age / DAYS) (default: as for --window).",
    )
    parser.add_argument(
        "--dask",
        default=None,
        metavar="ADDRESS",
        help="Run on a Dask cluster: a scheduler address (tcp://host:8786) or local:N; default "
        "CTO_DASK. DATA_DIR's features by the Dask feature path (one task per customer-hash "
        "partition), the LightGBM models fitted with lightgbm.dask; registered as usual.",
    )
    add_work_dir_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="No progress lines on stderr.")
    add_label_arguments(parser)
    add_model_prefix_argument(parser)


def _print_table_result(result) -> None:
    m = result.metrics
    print(
        f"model {result.model_name} v{result.version}  run {result.run_id}  split {result.split_method}"
    )
    print(f"{'':22}{'ROC-AUC':>9}{'PR-AUC':>9}{'logloss':>9}{'ECE':>8}{'lift@10':>9}")
    registered = "LightGBM" if result.family == "lightgbm" else "logistic regr. (model)"
    rows = [(registered, "test_")]
    if result.family != "lightgbm":
        rows.append(("LightGBM (not used)", "lightgbm_test_"))
    for name, prefix in (
        *rows,
        ("logistic regression", "baseline_logistic_test_"),
        ("one rule", "baseline_one_rule_test_"),
        ("base rate", "baseline_base_rate_test_"),
    ):
        print(
            f"{name:22}{m.get(prefix + 'roc_auc', float('nan')):9.4f}{m.get(prefix + 'pr_auc', float('nan')):9.4f}"
            f"{m[prefix + 'log_loss']:9.4f}{m[prefix + 'ece']:8.4f}{m[prefix + 'lift_top10']:9.2f}"
        )
    if result.data_check:
        print(result.data_check)
    if result.promoted is not None:
        print(f"promotion: {result.promoted.reason}")


def _run_uplift(args: argparse.Namespace, settings) -> int:
    from features.errors import CTOError
    from training.uplift_table import LEARNER_NAMES, train_uplift_table

    if args.promote:
        raise CTOError("--promote is not available for uplift models yet: set the alias by hand")
    if "t" not in args.learners:
        args.learners = ["t", *args.learners]  # the baseline is always reported
    result = train_uplift_table(
        args.table,
        args.label,
        args.treatment,
        settings,
        test_path=args.test_table,
        time_column=args.time_column,
        exclude=list(args.exclude),
        model_name=args.model_name,
        learners=tuple(dict.fromkeys(args.learners)),
        order_value=args.order_value,
        treatment_cost=args.treatment_cost,
        propensity=args.propensity,
        progress=not args.quiet,
    )
    report = result.report
    print(
        f"model {result.model_name} v{result.version} ({LEARNER_NAMES[result.learner]})  "
        f"run {result.run_id}  split {result.split_method}"
    )
    print(f"{'':12}{'Qini':>9}{'vs T (95% CI)':>30}{'AUUC':>9}{'IRR':>8}{'NIR':>10}{'targeted':>9}")
    for learner, row in report["learners"].items():
        diff = (
            f"{row['qini_diff_vs_t']:+.5f} [{row['qini_diff_ci_low']:+.5f}, {row['qini_diff_ci_high']:+.5f}]"
            if "qini_diff_vs_t" in row
            else "baseline"
        )
        print(
            f"{LEARNER_NAMES[learner]:12}{row['qini']:9.5f}{diff:>30}{row['auuc']:9.5f}"
            f"{row['irr']:8.4f}{row['nir']:10.2f}{row['targeted_share']:9.1%}"
        )
    everyone = report["treat_everyone"]
    print(
        f"{'random':12}{report['random_qini_mean']:9.5f}{'':30}{'':9}"
        f"{everyone['irr']:8.4f}{everyone['nir']:10.2f}{1:9.0%}  (NIR: treat everyone)"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from features.settings import get_settings

    address = args.dask or get_settings().dask
    if not address:
        if args.work_dir is not None:
            from features.errors import CTOError

            raise CTOError("--work-dir goes with --dask (where the Dask feature path writes)")
        return _run(args)
    from features.distributed import dask_client
    from training.distributed import use_dask

    with dask_client(address) as client, use_dask(client):
        if not args.quiet:
            print(
                f"dask: {address}: features and LightGBM fits on the cluster's workers", flush=True
            )
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from features.errors import CTOError
    from features.settings import get_settings

    if args.table is not None:
        if not args.label:
            raise CTOError("--table needs --label COLUMN (the outcome column)")
        if args.tasks or args.data_dir:
            raise CTOError("--table trains one conversion model: drop DATA_DIR and --tasks")
        if args.work_dir is not None:
            raise CTOError("--work-dir goes with DATA_DIR (a table has no feature step)")
        settings = command_settings(args)
        if args.treatment:
            return _run_uplift(args, settings)
        if args.test_table:
            raise CTOError("--test-table goes with --treatment COLUMN")
        from training.table import train_table

        result = train_table(
            args.table,
            args.label,
            settings,
            time_column=args.time_column,
            exclude=list(args.exclude),
            model_name=args.model_name,
            promote=args.promote,
            progress=not args.quiet,
            window=args.window,
            half_life=args.half_life,
            family=args.family,
        )
        _print_table_result(result)
        return 0
    if args.label or args.time_column or args.exclude or args.model_name or args.treatment:
        raise CTOError(
            "--label, --treatment, --time-column, --exclude and --model-name go with --table FILE"
        )
    if args.family != "lightgbm":
        raise CTOError(
            "--family goes with --table FILE: the models of contract data are LightGBM (the "
            "service explains them with TreeSHAP)"
        )
    from training.pipeline import run_training

    data_dir = args.data_dir or get_settings().data_dir
    settings = command_settings(args, data_dir)
    result = run_training(
        data_dir,
        settings,
        promote=args.promote,
        progress=not args.quiet,
        tasks=args.tasks,
        window=args.window,
        half_life=args.half_life,
        work_dir=args.work_dir,
    )
    print(result.data_check)
    for task, reason in result.skipped.items():
        print(f"{task}: skipped: {reason}")
    for task, version in result.versions.items():
        decision = result.promoted.get(task)
        status = (
            ""
            if decision is None
            else ("  -> champion" if decision.promoted else "  (champion kept)")
        )
        print(f"{result.model_names[task]} v{version}  run {result.run_ids[task]}{status}")
        metrics = result.metrics.get(task, {})
        if "test_roc_auc" in metrics:
            print(
                "    test ROC-AUC "
                + ", ".join(
                    f"{label} {metrics.get(prefix + 'roc_auc', float('nan')):.3f}"
                    for label, prefix in (
                        ("LightGBM", "test_"),
                        ("logistic", "baseline_logistic_test_"),
                        ("one rule", "baseline_one_rule_test_"),
                        ("base rate", "baseline_base_rate_test_"),
                    )
                )
            )
        if decision is not None and decision.champion_score is not None:
            print(f"    {decision.reason}")
    return 0
