"""TreeSHAP contributions and the planted-driver recovery check.

LightGBM's ``pred_contrib=True`` is TreeSHAP (path-dependent): per row one contribution per
feature plus the expected value (last column), in raw-score (log-odds) units, adding up to
``predict(raw_score=True)`` exactly.
"""

from __future__ import annotations

import time

import lightgbm as lgb
import numpy as np
import polars as pl

# Drivers the simulator plants that no feature can show are excluded from the check.
UNOBSERVABLE_DRIVERS = ("none",)


def driver_signals() -> dict[str, tuple[str, ...]]:
    """planted_driver -> the features that express it (the simulator declares them)."""
    from features.simulate import DRIVER_SIGNALS

    return {driver: tuple(names) for driver, names in DRIVER_SIGNALS.items()}


def contributions(booster: lgb.Booster, x: np.ndarray, num_threads: int = 1) -> np.ndarray:
    """(rows, features + 1) SHAP values in log-odds; the last column is the expected value."""
    return np.asarray(booster.predict(x, pred_contrib=True, num_threads=num_threads))


def shap_cost(booster: lgb.Booster, x: np.ndarray, rows: int = 500) -> dict[str, float]:
    """Median per-row milliseconds of prediction and of TreeSHAP, single thread, one row at a time."""
    sample = x[: min(rows, len(x))]
    predict_ms: list[float] = []
    shap_ms: list[float] = []
    for i in range(min(len(sample), 200)):
        row = sample[i : i + 1]
        t0 = time.perf_counter()
        booster.predict(row, raw_score=True, num_threads=1)
        t1 = time.perf_counter()
        booster.predict(row, pred_contrib=True, num_threads=1)
        t2 = time.perf_counter()
        predict_ms.append((t1 - t0) * 1000)
        shap_ms.append((t2 - t1) * 1000)
    return {
        "predict_ms_per_row": float(np.median(predict_ms)) if predict_ms else float("nan"),
        "shap_ms_per_row": float(np.median(shap_ms)) if shap_ms else float("nan"),
    }


def top_negative_feature(shap_values: np.ndarray, feature_names: list[str]) -> np.ndarray:
    """Name of the most negative contribution per row (the strongest reason the score is low)."""
    per_feature = shap_values[:, : len(feature_names)]
    return np.asarray(feature_names, dtype=object)[per_feature.argmin(axis=1)]


def driver_recovery(
    shap_values: np.ndarray,
    feature_names: list[str],
    contact_ids: pl.Series,
    truth: pl.DataFrame,
    strength_threshold: float,
) -> dict[str, object]:
    """Share of strong planted-driver contacts whose top negative SHAP feature names the driver.

    ``driver_strength <= strength_threshold`` selects the strong ones (the simulator's convention).
    """
    top = pl.DataFrame(
        {
            "contact_id": contact_ids,
            "top_negative": top_negative_feature(shap_values, feature_names),
        }
    )
    signals = driver_signals()
    mapping = pl.DataFrame(
        {"planted_driver": list(signals), "driver_features": [list(v) for v in signals.values()]},
        schema={"planted_driver": pl.String, "driver_features": pl.List(pl.String)},
    )
    joined = (
        top.lazy()
        .join(
            truth.lazy().select("contact_id", "planted_driver", "driver_strength"), on="contact_id"
        )
        .with_columns(pl.col("planted_driver").cast(pl.String))
        .filter(
            pl.col("planted_driver").is_not_null()
            & ~pl.col("planted_driver").is_in(UNOBSERVABLE_DRIVERS)
        )
        .filter(pl.col("driver_strength") <= strength_threshold)
        .join(mapping.lazy(), on="planted_driver", how="left")
        .with_columns(
            pl.col("driver_features")
            .list.contains(pl.col("top_negative"))
            .fill_null(False)
            .alias("recovered")
        )
        .collect()
    )
    per_driver = (
        joined.group_by("planted_driver")
        .agg(pl.len().alias("contacts"), pl.col("recovered").mean().alias("recovered_share"))
        .sort("planted_driver")
    )
    return {
        "strength_threshold": strength_threshold,
        "contacts": joined.height,
        "recovered_share": float(joined["recovered"].mean()) if joined.height else float("nan"),
        "per_driver": per_driver.to_dicts(),
        "unmapped_drivers": sorted(
            set(joined.filter(pl.col("driver_features").is_null())["planted_driver"].to_list())
        ),
    }
