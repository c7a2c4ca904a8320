"""Calibration of a binary model's raw score (log-odds) into a probability.

Platt scaling on the raw score: ``p = 1 / (1 + exp(-(a * raw + b)))``. Two numbers, a
monotone map (it never changes the ranking, so ROC-AUC, lift and the SHAP attribution of the
raw score stay as they are), serializable into the model card, and trivially applied by
serving. Isotonic regression would fit any shape but is step-wise and needs thousands of
validation rows per step to be stable; with a few thousand validation orders Platt is the
safer choice.

The decision to calibrate is itself validated: fit on the earlier half of the validation
window, compare ECE on the later half, and calibrate only if it clearly helps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from training.metrics import expected_calibration_error

# Calibrate only if the held-out ECE improves by this much (absolute and relative).
MIN_ECE_GAIN = 0.002
MIN_RELATIVE_GAIN = 0.1


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Calibration:
    method: str  # "platt" or "none"
    a: float = 1.0
    b: float = 0.0
    ece_raw_validation: float | None = None
    ece_calibrated_validation: float | None = None
    reason: str = ""

    def apply(self, raw_score: np.ndarray) -> np.ndarray:
        """Probability from the raw log-odds score."""
        raw_score = np.asarray(raw_score, dtype=np.float64)
        if self.method == "none":
            return sigmoid(raw_score)
        return sigmoid(self.a * raw_score + self.b)

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "input": "raw_score (LightGBM log-odds, Booster.predict(raw_score=True))",
            "formula": "p = 1 / (1 + exp(-(a * raw_score + b)))"
            if self.method == "platt"
            else "p = 1 / (1 + exp(-raw_score))",
            "a": self.a,
            "b": self.b,
            "ece_raw_validation": self.ece_raw_validation,
            "ece_calibrated_validation": self.ece_calibrated_validation,
            "reason": self.reason,
        }


def fit_platt(raw_score: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    model = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000)
    model.fit(np.asarray(raw_score, dtype=np.float64).reshape(-1, 1), np.asarray(y, dtype=int))
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def choose_calibration(raw_score: np.ndarray, y: np.ndarray) -> Calibration:
    """Calibrate when the validation window shows it is needed (rows in time order)."""
    raw_score = np.asarray(raw_score, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    half = len(y) // 2
    early_raw, late_raw = raw_score[:half], raw_score[half:]
    early_y, late_y = y[:half], y[half:]
    if half < 200 or early_y.sum() < 20 or late_y.sum() < 20 or early_y.sum() == half:
        return Calibration("none", reason="too few validation rows or orders to calibrate")
    a, b = fit_platt(early_raw, early_y)
    ece_raw = expected_calibration_error(late_y, sigmoid(late_raw))
    ece_cal = expected_calibration_error(late_y, sigmoid(a * late_raw + b))
    gain = ece_raw - ece_cal
    if gain >= MIN_ECE_GAIN and gain >= MIN_RELATIVE_GAIN * ece_raw:
        a_full, b_full = fit_platt(raw_score, y)
        return Calibration(
            "platt",
            a_full,
            b_full,
            ece_raw,
            ece_cal,
            "Platt scaling lowered the held-out validation ECE",
        )
    return Calibration(
        "none",
        ece_raw_validation=ece_raw,
        ece_calibrated_validation=ece_cal,
        reason="the raw model is already calibrated on held-out validation rows",
    )
