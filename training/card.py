"""The model card: everything serving and reports need to use a model without importing training.

Written as ``model_card.json`` next to the native model in every registered version (and at the
root of its run). docs/training.md documents each field.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime

import numpy as np
import polars as pl

from features.encoding import FeatureEncoding
from training.data import Windows
from training.metrics import scalar_metrics

CARD_FORMAT_VERSION = 1
REFERENCE_PERCENTILES = tuple(range(0, 101))


def reference_quantiles(
    train: pl.DataFrame, encoding: FeatureEncoding
) -> dict[str, dict[str, object]]:
    """Per feature: percentiles 0..100 of the training rows (numeric) or level shares (categorical).

    Serving turns a value into "longer than 90% of contacts" by locating it among the
    percentiles; drift monitoring bins new data by the deciles and compares shares (PSI).
    """
    out: dict[str, dict[str, object]] = {}
    numeric = [n for n in encoding.feature_names if n not in encoding.category_levels]
    if numeric:
        # One sort per column (numpy) instead of one Polars quantile expression per percentile.
        values = train.select([pl.col(n).cast(pl.Float64) for n in numeric]).to_numpy()
        present = np.isfinite(values)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns give NaN
            percentiles = np.nanpercentile(values, REFERENCE_PERCENTILES, axis=0)
            means = np.nanmean(values, axis=0)
        for j, n in enumerate(numeric):
            out[n] = {
                "kind": "numeric",
                "percentiles": list(REFERENCE_PERCENTILES),
                "values": [float(v) if np.isfinite(v) else None for v in percentiles[:, j]],
                "mean": float(means[j]) if np.isfinite(means[j]) else None,
                "missing_share": float(1.0 - present[:, j].mean()) if len(values) else 0.0,
            }
    for n, levels in encoding.category_levels.items():
        counts = (
            train.lazy()
            .select(pl.col(n).cast(pl.String).alias("level"))
            .group_by("level")
            .agg(pl.len().alias("rows"))
            .collect()
        )
        shares = {row["level"]: row["rows"] / max(train.height, 1) for row in counts.to_dicts()}
        out[n] = {
            "kind": "categorical",
            "levels": list(levels),
            "shares": [float(shares.get(level, 0.0)) for level in levels],
            "missing_share": float(shares.get(None, 0.0)),
        }
    return out


def feature_descriptions(names: tuple[str, ...]) -> dict[str, str]:
    """Descriptions from the feature registry; columns outside it (table mode) say so."""
    from features.registry import FEATURE_SET

    known = {f.name: f.description for f in FEATURE_SET.features}
    return {n: known.get(n, f"column {n!r} of the input table") for n in names}


def build_card(
    *,
    task: str,
    model_name: str,
    objective: str,
    encoding: FeatureEncoding,
    calibration: dict[str, object],
    class_names: list[str] | None,
    metrics: dict[str, dict[str, object]],
    windows: Windows | dict[str, object],
    train_frame: pl.DataFrame,
    feature_set: dict[str, object],
    monotone: dict[str, int],
    data_digest: str,
    label: str,
    extra: dict[str, object],
    extra_models: dict[str, str] | None = None,
) -> dict[str, object]:
    windows_dict = windows.to_dict() if isinstance(windows, Windows) else windows
    return {
        "format_version": CARD_FORMAT_VERSION,
        "task": task,
        "model_name": model_name,
        "created_at": datetime.now(UTC).isoformat(),
        "objective": objective,
        "label": label,
        "output": _output_doc(objective, class_names),
        "feature_set": feature_set,
        **encoding.to_dict(),
        "encoding": (
            "float64 matrix in feature_names order; categorical = 0-based index in category_levels, "
            "unknown or null -> NaN; booleans 1/0; null -> NaN"
        ),
        "monotone_constraints": {k: v for k, v in monotone.items() if v},
        "class_names": class_names,
        "calibration": calibration,
        "test_metrics": {name: _jsonable(m) for name, m in metrics.items()},
        "data_windows": windows_dict,
        "data_digest": data_digest,
        "training_rows": train_frame.height,
        "reference_quantiles": reference_quantiles(train_frame, encoding),
        "feature_descriptions": feature_descriptions(encoding.feature_names),
        "extra_models": extra_models or {},
        "details": _jsonable(extra),
    }


def _output_doc(objective: str, class_names: list[str] | None) -> str:
    if objective == "binary":
        return (
            "P(order within the horizon): apply `calibration` to Booster.predict(x, raw_score=True)"
        )
    if objective == "multiclass":
        return f"P(reason) per class, columns in class_names order: Booster.predict(x) -> (n, {len(class_names or [])})"
    if objective == "uplift":
        return (
            "uplift: change in P(order within the horizon) if the decision is taken rather than "
            "not: Booster.predict(x) (DR-learner, no link function)"
        )
    return "expected further contacts until the order: Booster.predict(x) (Poisson mean)"


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if np.isfinite(number) else None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def flat_metrics(metrics: dict[str, dict[str, object]]) -> dict[str, float]:
    """``test_<metric>`` for the model, ``<baseline>_test_<metric>`` for the others."""
    out: dict[str, float] = {}
    for name, values in metrics.items():
        prefix = "test_" if name == "model" else f"{name}_test_"
        out.update({prefix + k: v for k, v in scalar_metrics(values).items()})
    return out
