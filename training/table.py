"""Train the conversion model on a table that is already one row per contact (or session).

``cto train --table FILE --label COLUMN [--time-column COLUMN] [--exclude COLUMNS]``: every other
column is a feature (text columns become categoricals with levels fixed from the training rows).
The split is by time when a time column is given (train earliest, then valid, then test);
without one it is a stratified random split, which the run records as ``split_method``,
because a random split overstates what a model will do on next month's contacts.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from features.errors import CTOError
from features.settings import Settings
from training.card import build_card, flat_metrics
from training.data import TRAIN_SHARE, VALID_SHARE
from training.promote import PromotionDecision
from training.promote import promote as promote_version
from training.tasks import LIGHTGBM, LINEAR, fit_binary
from training.tracking import setup_mlflow

TRUE_TEXT = ("true", "1", "yes", "y", "t")
FALSE_TEXT = ("false", "0", "no", "n", "f")


@dataclass
class TableResult:
    run_id: str
    model_name: str
    version: str
    metrics: dict[str, float]
    split_method: str
    promoted: PromotionDecision | None
    card: dict
    data_check: str = ""
    family: str = "lightgbm"


def read_table(path: Path) -> pl.DataFrame:
    """The whole table, typed (CSV types inferred from every row); a clear error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise CTOError(f"{path}: no such file")
    if path.suffix not in (".parquet", ".csv", ".txt"):
        raise CTOError(f"{path}: expected a .csv or .parquet file")
    if path.stat().st_size == 0:
        raise CTOError(f"{path}: the file is empty (0 bytes); rule empty_file")
    try:
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        else:
            if b"\x00" in path.open("rb").read(65_536):
                raise CTOError(
                    f"{path}: not a text CSV file (binary content); rule unreadable_file"
                )
            frame = pl.read_csv(path, infer_schema_length=None)
    except CTOError:
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CTOError(f"{path}: cannot read the file: {reason}; rule unreadable_file") from exc
    if frame.height == 0:
        raise CTOError(f"{path}: the file has a header but no rows; rule empty_file")
    return frame


def label_expr(frame: pl.DataFrame, label: str) -> pl.Expr:
    """The label as a boolean; text must read as true/false (yes/no, 1/0), numbers 0/1."""
    dtype = frame.schema[label]
    column = pl.col(label)
    if dtype == pl.Boolean:
        return column
    if dtype.is_numeric():
        bad = frame.filter(~column.is_in([0, 1]) | column.is_null())
        if bad.height:
            raise CTOError(
                f"label column {label!r}: {bad.height} row(s) are not 0/1, e.g. {bad[label][0]!r}"
            )
        return column == 1
    text = column.cast(pl.String).str.strip_chars().str.to_lowercase()
    bad = frame.filter(~text.is_in(TRUE_TEXT + FALSE_TEXT) | text.is_null())
    if bad.height:
        raise CTOError(
            f"label column {label!r}: {bad.height} row(s) are not true/false, e.g. {bad[label][0]!r}"
        )
    return text.is_in(TRUE_TEXT)


def assign_split(
    frame: pl.DataFrame, time_column: str | None, seed: int
) -> tuple[pl.DataFrame, str]:
    if time_column:
        t = pl.col("started_at")
        start, end = frame.select(t.min().alias("start"), t.max().alias("end")).row(0)
        if start is None or start == end:
            raise CTOError(f"time column {time_column!r} has no spread to split on")
        valid_start = start + (end - start) * TRAIN_SHARE
        test_start = start + (end - start) * (TRAIN_SHARE + VALID_SHARE)
        split = (
            pl.when(t < valid_start)
            .then(pl.lit("train"))
            .when(t < test_start)
            .then(pl.lit("valid"))
            .otherwise(pl.lit("test"))
        )
        return frame.with_columns(split.alias("split")).sort("started_at"), "time"
    from sklearn.model_selection import train_test_split

    y = frame["_label"].to_numpy()
    index = np.arange(frame.height)
    train, rest = train_test_split(index, train_size=TRAIN_SHARE, stratify=y, random_state=seed)
    valid, test = train_test_split(
        rest, train_size=VALID_SHARE / (1 - TRAIN_SHARE), stratify=y[rest], random_state=seed
    )
    split = np.empty(frame.height, dtype=object)
    split[train], split[valid], split[test] = "train", "valid", "test"
    return frame.with_columns(pl.Series("split", split, dtype=pl.String)), "stratified_random"


def _time_expr(frame: pl.DataFrame, column: str) -> pl.Expr:
    dtype = frame.schema[column]
    if isinstance(dtype, pl.Datetime | pl.Date):
        return pl.col(column).cast(pl.Datetime("us"))
    if dtype == pl.String:
        return pl.col(column).str.to_datetime(strict=False).cast(pl.Datetime("us"))
    if dtype.is_numeric():
        return pl.col(column).cast(pl.Float64)  # an ordinal time (e.g. day number) splits as well
    raise CTOError(f"time column {column!r} has type {dtype}: expected a date/time or a number")


def prepare_table(
    frame: pl.DataFrame, label: str, time_column: str | None, exclude: list[str], seed: int
) -> tuple[pl.DataFrame, list[str], list[str], str]:
    for name in [label, *([time_column] if time_column else []), *exclude]:
        if name not in frame.columns:
            raise CTOError(
                f"column {name!r} not in the table (columns: {', '.join(frame.columns)})"
            )
    features = [c for c in frame.columns if c not in {label, time_column, *exclude}]
    if not features:
        raise CTOError("no feature columns left after the label, time column and exclusions")
    categorical = [c for c in features if frame.schema[c] in (pl.String, pl.Categorical)]
    prepared = frame.with_row_index("_row").with_columns(
        label_expr(frame, label).alias("_label"),
        pl.format("row-{}", pl.col("_row")).alias("contact_id"),
        (_time_expr(frame, time_column) if time_column else pl.lit(None, pl.Datetime("us"))).alias(
            "started_at"
        ),
    )
    if time_column:
        nulls = prepared["started_at"].null_count()
        if nulls:
            raise CTOError(
                f"time column {time_column!r}: {nulls} row(s) could not be read as a time"
            )
    split, method = assign_split(prepared, time_column, seed)
    return split, features, categorical, method


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "table"


def train_table(
    path: Path,
    label: str,
    settings: Settings,
    *,
    time_column: str | None = None,
    exclude: list[str] | None = None,
    model_name: str | None = None,
    promote: bool = False,
    progress: bool = True,
    window: float | None = None,
    half_life: float | None = None,
    family: str = "lightgbm",
) -> TableResult:
    from training.data import check_data, data_digest, require_data
    from training.pipeline import Progress
    from training.schemes import resolve_scheme
    from training.tracking import log_task

    say = Progress(progress)
    raw = read_table(Path(path))
    frame, features, categorical, method = prepare_table(
        raw, label, time_column, exclude or [], settings.seed
    )
    counts = frame.group_by("split").agg(pl.len(), pl.col("_label").mean()).sort("split")
    say(f"read {raw.height:,} rows, {len(features)} features; split {method}: " + ", ".join(
        f"{r['split']}={r['len']:,} ({r['_label']:.1%} positive)" for r in counts.to_dicts()
    ))  # fmt: skip
    check = check_data(frame, "_label")
    say(check.line)
    require_data(check)
    digest = data_digest({"table": raw})
    if time_column is None and (window is not None or half_life is not None):
        raise CTOError("--window and --half-life need --time-column: rows must be in time order")
    family, family_source = resolve_family(settings, digest, family)
    say(f"model family {family} ({family_source})")
    scheme, source = (
        resolve_scheme(settings, digest, "table", window, half_life, family=family)
        if time_column
        else (None, "expanding: random split")
    )
    if scheme is not None:
        say(f"training scheme {scheme.name} ({source})")
    fit_started = time.time()
    fit = fit_binary(
        "table",
        frame,
        features,
        categorical,
        "_label",
        settings=settings,
        scheme=scheme,
        scheme_source=source,
        family=family,
    )
    windows = {"split_method": method}
    if time_column:
        by_split = frame.group_by("split").agg(
            pl.col("started_at").min().alias("from"), pl.col("started_at").max().alias("until")
        )
        windows |= {
            r["split"]: {"from": str(r["from"]), "until": str(r["until"])}
            for r in by_split.to_dicts()
        }
    name = model_name or f"{settings.model_prefix}-{slug(Path(path).stem)}-conversion"
    card = build_card(
        task="table",
        model_name=name,
        objective="binary",
        encoding=fit.encoding,
        calibration=fit.calibration.to_dict(),
        class_names=None,
        metrics=fit.metrics,
        windows=windows,
        train_frame=fit.train_frame,
        feature_set={
            "name": f"table:{Path(path).name}",
            "version": digest,
            "digest": digest,
            "features": features,
        },
        monotone={},
        data_digest=digest,
        label=fit.label,
        extra=fit.extra | {"source_label_column": label, "excluded": exclude or []},
    )
    card["family"] = family
    card["family_source"] = family_source
    if family == LINEAR:
        card["linear"] = fit.booster.spec
    from training.batch import table_profile

    card["data"] = table_profile(raw, path) | {"data_digest": digest}
    if time_column:
        times = frame["started_at"]
        card["data"]["span"] = {"from": str(times.min()), "until": str(times.max())}
    setup_mlflow(settings)
    tags = {
        "data_source": str(path),
        "data_digest": digest,
        "split_method": method,
        "label": label,
        "family": family,
    }
    run_id, version = log_task(
        fit, card, settings, rates_frame=None, tags=tags, register_as=name, fit_started=fit_started
    )
    metrics = flat_metrics(fit.metrics)
    say(
        f"test ROC-AUC {metrics['test_roc_auc']:.4f}, PR-AUC {metrics['test_pr_auc']:.4f}, "
        f"ECE {metrics['test_ece']:.4f}; registered {name} v{version}"
    )
    decision = promote_version(name, version, settings) if promote and version else None
    return TableResult(
        run_id, name, version or "", metrics, method, decision, card, check.line, family
    )


def resolve_family(settings: Settings, digest: str, family: str) -> tuple[str, str]:
    """The model family to register, and why: as asked, or (``auto``) as the latest backtest of
    the same table recommended (LightGBM unless the logistic regression beat it beyond noise)."""
    if family in (LIGHTGBM, LINEAR):
        return family, "asked for"
    if family != "auto":
        raise CTOError(f"--family {family!r}: expected lightgbm, linear or auto")
    from training.backtest import latest_backtest

    run = latest_backtest(settings, digest, "table")
    if run is None:
        return LIGHTGBM, "auto: no backtest of this table yet (cto backtest --table)"
    recommended = run.data.tags.get("recommended_family", LIGHTGBM)
    if recommended not in (LIGHTGBM, LINEAR):
        recommended = LIGHTGBM
    return recommended, f"auto: recommended by backtest run {run.info.run_id}"
