"""Command-line options several commands share: the label definition and the model names.

A directory written by ``cto import`` records the horizon its data needs (``import.json``:
``recommended_horizon_days``); every command that labels takes it as its default for that
directory and says so on stderr. An explicit ``--horizon-days`` or ``CTO_HORIZON_DAYS`` wins.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from features.settings import Settings, get_settings

IMPORT_FILE = "import.json"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a whole number of days, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--horizon-days",
        type=positive_int,
        default=None,
        metavar="H",
        help="A contact converts if an order follows within H days (default: the data "
        "directory's import.json recommendation, else CTO_HORIZON_DAYS, 7).",
    )
    parser.add_argument(
        "--journey-gap-days",
        type=positive_int,
        default=None,
        metavar="G",
        help="A gap of G days without contact ends a journey (default CTO_JOURNEY_GAP_DAYS, 14).",
    )


def add_model_prefix_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-prefix",
        default=None,
        metavar="PREFIX",
        help="Registered model names start with PREFIX- (default CTO_MODEL_PREFIX, 'cto'): one "
        "prefix per data source keeps their models and champions apart.",
    )


def recommended_horizon(data_dir: Path | None) -> int | None:
    """The horizon an importer recorded for ``data_dir``, if any."""
    if data_dir is None or not Path(data_dir).is_dir():
        return None
    from features.validate import import_meta

    value = import_meta(data_dir).get("recommended_horizon_days")
    return int(value) if isinstance(value, int) and value >= 1 else None


def command_settings(args: argparse.Namespace, data_dir: Path | None = None) -> Settings:
    """Settings from the environment with this command's label and model-name options on top."""
    settings = get_settings()
    updates: dict[str, object] = {}
    horizon = getattr(args, "horizon_days", None)
    if horizon is None and "CTO_HORIZON_DAYS" not in os.environ:
        horizon = recommended_horizon(data_dir)
        if horizon is not None and horizon != settings.horizon_days:
            print(
                f"labels: {horizon}-day horizon, as {Path(data_dir) / IMPORT_FILE} recommends "
                "(--horizon-days overrides it)",
                file=sys.stderr,
            )
    if horizon is not None:
        updates["horizon_days"] = horizon
    gap = getattr(args, "journey_gap_days", None)
    if gap is not None:
        updates["journey_gap_days"] = gap
    prefix = getattr(args, "model_prefix", None)
    if prefix:
        updates["model_prefix"] = prefix
    return settings.model_copy(update=updates) if updates else settings


def load_contract_tables(path: Path, rejected_means: str):
    """Reads and validates a data directory, saying on one line how many rows the contract rejected.

    Rejected rows are never used; ``cto validate PATH`` lists each with its reason.
    ``rejected_means`` says what that is for the command ("not loaded", "left out").
    Returns the ``ValidationResult``.
    """
    from features.validate import load_and_validate

    result = load_and_validate(path)
    rejected = int(result.summary["rejected"].sum())
    if rejected:
        print(
            f"validate: {rejected:,} rejected row(s) {rejected_means} (see `cto validate {path}`)",
            flush=True,
        )
    return result


def add_work_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--work-dir``: the Dask feature path's storage (train and backtest with DATA_DIR)."""
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="--dask with DATA_DIR: where the validated tables and feature partitions go while "
        "the job runs; storage every worker sees (default: a temporary directory, enough for "
        "local:N).",
    )
