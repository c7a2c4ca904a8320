"""Score a frame with a native booster and its model card (the same rules serving follows)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import polars as pl

from features.encoding import FeatureEncoding, encode
from training.calibration import Calibration
from training.metrics import binary_metrics, count_metrics, multiclass_metrics


def load_native(model_uri: str, card: dict):
    """The registered model's scorer: its LightGBM Booster, or for the ``linear`` family the
    logistic regression in its card (both answer ``predict(x, raw_score=True)``)."""
    from training.pyfunc_raw import LINEAR, LinearScorer

    if card.get("family") == LINEAR:
        return LinearScorer(card["linear"])
    import mlflow.lightgbm

    return mlflow.lightgbm.load_model(model_uri)


def calibration_from_card(card: dict) -> Calibration:
    cal = card.get("calibration") or {"method": "none"}
    return Calibration(
        method=cal.get("method", "none"), a=float(cal.get("a", 1.0)), b=float(cal.get("b", 0.0))
    )


def predict(
    booster: lgb.Booster, card: dict, frame: pl.DataFrame, num_threads: int = 1
) -> np.ndarray:
    """Binary: calibrated probability; multiclass: (n, classes) probabilities; count: expected count."""
    x = encode(frame, FeatureEncoding.from_dict(card))
    if card["objective"] == "binary":
        return calibration_from_card(card).apply(
            booster.predict(x, raw_score=True, num_threads=num_threads)
        )
    return np.asarray(booster.predict(x, num_threads=num_threads))


def evaluate(
    booster: lgb.Booster, card: dict, test: pl.DataFrame, num_threads: int = 1
) -> dict[str, object]:
    """The card's task metrics of ``booster`` on ``test`` (which carries the card's label column)."""
    return evaluate_predictions(card, test, predict(booster, card, test, num_threads))


def evaluate_predictions(
    card: dict, test: pl.DataFrame, predicted: np.ndarray
) -> dict[str, object]:
    """The card's task metrics of predictions made on every row of ``test``.

    Multiclass rows whose label is not among the card's classes are left out (they cannot be
    predicted).
    """
    label = card["label"]
    objective = card["objective"]
    if objective == "binary":
        y = test[label].cast(pl.Int8).to_numpy()
        return binary_metrics(y, predicted)
    if objective == "multiclass":
        class_names = list(card["class_names"])
        codes = (
            test[label]
            .cast(pl.String)
            .replace_strict(
                {n: i for i, n in enumerate(class_names)}, default=-1, return_dtype=pl.Int32
            )
            .to_numpy()
        )
        known = codes >= 0
        return multiclass_metrics(codes[known], np.asarray(predicted)[known], class_names)
    y = test[label].cast(pl.Float64).to_numpy()
    return count_metrics(y, predicted)
