"""`run_training`: contract tables in, four registered (and possibly promoted) models out."""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from features.errors import CTOError
from features.settings import Settings
from training import tasks as task_fits
from training.card import build_card, flat_metrics
from training.promote import PromotionDecision
from training.promote import promote as promote_version
from training.tracking import latest_rates_frame, log_task, model_name, setup_mlflow


class Progress:
    """Stage lines on stderr with elapsed seconds (silent when disabled)."""

    def __init__(self, enabled: bool, prefix: str = "train") -> None:
        self.enabled = enabled
        self.prefix = prefix
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.started
            print(f"[{self.prefix} {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass
class TrainingResult:
    run_ids: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    promoted: dict[str, PromotionDecision] = field(default_factory=dict)
    cards: dict[str, dict] = field(default_factory=dict)
    model_names: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # task -> why the data cannot train it
    data_check: str = ""


def monotone_hints(moment: str) -> dict[str, int]:
    """The registry's known effect directions at ``moment`` (feature -> -1/0/+1)."""
    from features.registry import feature_names, monotone_constraints

    return dict(zip(feature_names(moment), monotone_constraints(moment), strict=True))


def _check_tasks(tasks) -> list[str]:
    chosen = list(tasks or task_fits.TASKS)
    unknown = [t for t in chosen if t not in task_fits.TASKS]
    if unknown:
        raise CTOError(f"unknown task(s) {unknown}; choose from {list(task_fits.TASKS)}")
    return chosen


def fit_task(task: str, prepared, settings: Settings, scheme=None, scheme_source: str = "default"):
    """Fit one task on prepared data (no MLflow); ``scheme`` applies to the conversion tasks."""
    from features.registry import categorical_features, feature_names

    moment = task_fits.TASK_MOMENT[task]
    names = [*feature_names(moment), *prepared.data_columns]
    categorical = list(categorical_features(moment))
    frame = prepared.frame
    if task in (task_fits.CONVERSION_ARRIVAL, task_fits.CONVERSION_AFTER_CONTACT):
        usable = frame.filter(pl.col("split").is_not_null())
        return task_fits.fit_binary(
            task,
            usable,
            names,
            categorical,
            "converted",
            settings=settings,
            monotone=monotone_hints(moment),
            truth=prepared.truth,
            scheme=scheme,
            scheme_source=scheme_source,
        )
    if task == task_fits.DROPOFF_REASON:
        return task_fits.fit_reason(frame, names, categorical, settings, truth=prepared.truth)
    if task in task_fits.UPLIFT_TASKS:
        from training.contact_uplift import fit_contact_uplift

        return fit_contact_uplift(task, prepared, settings)
    return task_fits.fit_contacts_to_order(frame, names, categorical, settings, prepared.windows)


def task_data_gap(task: str, prepared, settings: Settings) -> str | None:
    """Why the data cannot train ``task`` (None when it can); the conversion tasks always can."""
    frame = prepared.frame
    if task in task_fits.UPLIFT_TASKS:
        from training.contact_uplift import data_gap

        return data_gap(task, prepared)
    if task == task_fits.DROPOFF_REASON:
        rows = task_fits.reason_frame(frame)
        per_split = {
            s: rows.filter(pl.col("split") == s).height for s in ("train", "valid", "test")
        }
        reasons = rows.filter(pl.col("split") == "train")["dropoff_label"].n_unique()
        if min(per_split.values()) == 0 or reasons < 2:
            return (
                f"{rows.height:,} lost contacts carry a dropoff_reason "
                f"({', '.join(f'{k} {v:,}' for k, v in per_split.items())}; {reasons} reason(s) "
                "in train): the data records no drop-off reasons to learn"
            )
    if task == task_fits.CONTACTS_TO_ORDER:
        rows = task_fits.contacts_to_order_frame(frame, settings, prepared.windows)
        per_split = {
            s: rows.filter(pl.col("split") == s).height for s in ("train", "valid", "test")
        }
        if min(per_split.values()) == 0 or rows["further_contacts"].n_unique() < 2:
            return (
                f"no split has journeys with {task_fits.follow_up_days(settings)} days of follow-up "
                "and more than one contact count to learn "
                f"({', '.join(f'{k} {v:,}' for k, v in per_split.items())})"
            )
    return None


def run_training(
    data: Path | str | dict[str, pl.DataFrame],
    settings: Settings,
    promote: bool = True,
    progress: bool = True,
    tasks=None,
    *,
    window: float | None = None,
    half_life: float | None = None,
    work_dir: Path | None = None,
) -> TrainingResult:
    """Train, log, register (and, with ``promote``, gate into the champion alias) each task's model.

    Inside :func:`training.distributed.use_dask` the training frame is built by the Dask feature
    path (``work_dir``: storage every worker sees) and the LightGBM fits run on the cluster.
    """
    from training.data import check_data, prepare, require_data
    from training.distributed import active_client

    chosen = _check_tasks(tasks)
    say = Progress(progress)
    prepared = prepare(data, settings, log=say, client=active_client(), work_dir=work_dir)
    split_counts = prepared.frame.group_by("split").len().sort("split", nulls_last=True)
    say(
        "split rows: "
        + ", ".join(f"{r['split'] or 'unlabelled'}={r['len']:,}" for r in split_counts.to_dicts())
    )
    result = TrainingResult()
    check = check_data(prepared.frame, "converted", what="converted")
    result.data_check = check.line
    say(check.line)
    require_data(check, f" (horizon {settings.horizon_days} days)")
    runnable = []
    for task in chosen:
        reason = task_data_gap(task, prepared, settings)
        if reason is None:
            runnable.append(task)
        elif tasks:
            raise CTOError(f"{task}: {reason}")
        else:
            result.skipped[task] = reason
            say(f"{task}: skipped ({reason})")
    setup_mlflow(settings)
    rates_frame = latest_rates_frame(prepared.rates)
    for task in runnable:
        say(f"{task}: fitting")
        scheme, source = None, "default"
        if task in (task_fits.CONVERSION_ARRIVAL, task_fits.CONVERSION_AFTER_CONTACT):
            from training.schemes import resolve_scheme

            scheme, source = resolve_scheme(settings, prepared.digest, task, window, half_life)
            say(f"{task}: training scheme {scheme.name} ({source})")
        fit_started = time.time()
        fit = fit_task(task, prepared, settings, scheme, source)
        say(f"{task}: logging to MLflow")
        name = model_name(settings, task)
        run_id, version, card = register_fit(
            fit, prepared, settings, name, rates_frame=rates_frame, fit_started=fit_started
        )
        result.run_ids[task] = run_id
        result.versions[task] = version
        result.metrics[task] = flat_metrics(fit.metrics) | _extra_numbers(fit.extra)
        result.cards[task] = card
        result.model_names[task] = name
        say(f"{task}: {_headline(task, result.metrics[task])}; registered {name} v{version}")
        if promote:
            decision = promote_version(name, version, settings)
            result.promoted[task] = decision
            say(
                f"{task}: {'promoted' if decision.promoted else 'not promoted'} ({decision.reason})"
            )
    return result


def feature_set_digest(data_columns: tuple[str, ...] | list[str]) -> str:
    """The registry's feature-set digest, extended by the data's own feature columns if any."""
    from features.registry import FEATURE_SET

    if not data_columns:
        return FEATURE_SET.digest
    text = FEATURE_SET.digest + "|" + ",".join(data_columns)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_tags(prepared) -> dict[str, str]:
    """Tags every run of one training carries: feature set, data digest, time windows, engine."""
    from features.registry import FEATURE_SET
    from training.distributed import active_client

    windows = prepared.windows.to_dict()
    profile = prepared.profile or {}
    return {
        "feature_set": FEATURE_SET.name,
        "feature_set_version": FEATURE_SET.version,
        "feature_set_digest": feature_set_digest(prepared.data_columns),
        "data_digest": prepared.digest,
        "data_source": prepared.source,
        "data_source_kind": str(profile.get("source_kind", "")),
        "data_schema_digest": str(profile.get("schema_digest", "")),
        "simulated": str(prepared.truth is not None).lower(),
        # The frame's features and the LightGBM fits ran on a Dask cluster (as backtests record).
        "fit_engine": "lightgbm.dask" if active_client() is not None else "lightgbm",
    } | {
        f"window_{split}_{edge}": value
        for split, span in windows.items()
        for edge, value in span.items()
    }


def register_fit(
    fit,
    prepared,
    settings: Settings,
    name: str,
    rates_frame: pl.DataFrame | None = None,
    *,
    fit_started: float | None = None,
) -> tuple[str, str, dict]:
    """Build the card, log the run and register ``fit`` as a new version of ``name``."""
    from features.registry import FEATURE_SET

    moment = task_fits.TASK_MOMENT[fit.task]
    if rates_frame is None:
        rates_frame = latest_rates_frame(prepared.rates)
    card = build_card(
        task=fit.task,
        model_name=name,
        objective=fit.objective,
        encoding=fit.encoding,
        calibration=fit.calibration.to_dict(),
        class_names=fit.class_names,
        metrics=fit.metrics,
        windows=prepared.windows,
        train_frame=fit.train_frame,
        feature_set={
            "name": FEATURE_SET.name,
            "version": FEATURE_SET.version,
            "digest": feature_set_digest(prepared.data_columns),
            "registry_digest": FEATURE_SET.digest,
            "moment": moment,
            "features": list(fit.encoding.feature_names),
            "data_columns": list(prepared.data_columns),
        },
        monotone=monotone_hints(moment) if fit.objective == "binary" else {},
        data_digest=prepared.digest,
        label=fit.label,
        extra=fit.extra,
        extra_models={
            k: f"{k}.txt (LightGBM text model, next to MLmodel)" for k in fit.extra_models
        },
    )
    # What serving needs to rebuild the rate tables and labels exactly as in training.
    card["data"] = prepared.profile
    card["labels"] = {
        "horizon_days": settings.horizon_days,
        "journey_gap_days": settings.journey_gap_days,
    }
    card["rates"] = {
        "file": "rates.parquet",
        "horizon_days": prepared.rates.horizon_days,
        "prior_strength": prepared.rates.prior_strength,
        "as_of": prepared.windows.end.isoformat(),
    }
    setup_mlflow(settings)
    run_id, version = log_task(
        fit,
        card,
        settings,
        rates_frame=rates_frame,
        tags=run_tags(prepared),
        register_as=name,
        fit_started=fit_started,
    )
    return run_id, str(version), card


def _extra_numbers(extra: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for group in ("model_shape", "explain_cost"):
        for key, value in (extra.get(group) or {}).items():
            out[f"{group}_{key}"] = float(value)
    if "driver_recovery" in extra:
        out["driver_recovery_share"] = float(extra["driver_recovery"]["recovered_share"])
    for key, value in extra.items():
        if key.startswith("oracle_") and isinstance(value, float):
            out[key] = value
    return out


def _headline(task: str, metrics: dict[str, float]) -> str:
    keys = {
        task_fits.CONVERSION_ARRIVAL: ("test_roc_auc", "test_ece"),
        task_fits.CONVERSION_AFTER_CONTACT: ("test_roc_auc", "test_ece"),
        task_fits.DROPOFF_REASON: ("test_macro_f1", "test_log_loss"),
        task_fits.CONTACTS_TO_ORDER: ("test_mae", "test_poisson_deviance"),
        task_fits.FOLLOW_UP_UPLIFT: ("test_qini", "baseline_t_learner_test_qini"),
        task_fits.CALLBACK_UPLIFT: ("test_qini", "baseline_t_learner_test_qini"),
    }[task]
    return ", ".join(f"{k.removeprefix('test_')}={metrics.get(k, float('nan')):.4f}" for k in keys)
