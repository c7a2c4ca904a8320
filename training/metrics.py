"""Metrics for the conversion, drop-off reason and contacts-to-order models.

All take plain numpy arrays so the same code scores LightGBM, the baselines and the oracle.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

LIFT_SHARES = (0.1, 0.2, 0.5)
ECE_BINS = 15
EPS = 1e-12


def _equal_mass_bins(p: np.ndarray, bins: int) -> np.ndarray:
    """Bin index per prediction: quantile edges, tied predictions always share a bin."""
    edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    return np.searchsorted(edges, p, side="right")


def _binned(y: np.ndarray, p: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, mean prediction, observed rate) per non-empty bin."""
    index = _equal_mass_bins(p, bins)
    rows = np.bincount(index).astype(np.float64)
    predicted = np.bincount(index, weights=p)
    observed = np.bincount(index, weights=y)
    present = rows > 0
    return rows[present], predicted[present] / rows[present], observed[present] / rows[present]


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Equal-mass ECE: mean |observed rate - mean prediction| over quantile bins, weighted by size.

    Equal-mass bins rather than equal-width ones: with a 10-15% base rate most predictions sit
    below 0.2, and equal-width bins would put nearly all of them into one or two bins.
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    rows, predicted, observed = _binned(y, p, bins)
    return float(np.sum(rows * np.abs(observed - predicted)) / len(y))


def reliability_curve(
    y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray]:
    """(mean prediction, observed rate) per equal-mass bin."""
    _, predicted, observed = _binned(
        np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64), bins
    )
    return predicted, observed


def gains_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share of contacts taken, share of orders captured) when taking contacts by score."""
    y = np.asarray(y, dtype=np.float64)
    order = np.argsort(-np.asarray(p), kind="stable")
    captured = np.concatenate([[0.0], np.cumsum(y[order]) / max(y.sum(), EPS)])
    taken = np.linspace(0.0, 1.0, len(y) + 1)
    return taken, captured


def lift_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Lift and share of orders captured in the top 10/20/50% by score, and ALIFT.

    ALIFT is the area under the cumulative gains curve (share of orders captured against the
    share of contacts taken): 0.5 for random order, higher is better.
    """
    y = np.asarray(y, dtype=np.float64)
    base = y.mean()
    taken, captured = gains_curve(y, p)
    out: dict[str, float] = {}
    for share in LIFT_SHARES:
        k = max(1, round(share * len(y)))
        captured_k = float(captured[k])
        pct = round(share * 100)
        out[f"captured_top{pct}"] = captured_k
        out[f"lift_top{pct}"] = float(captured_k / share) if base > 0 else float("nan")
    out["alift"] = float(np.trapezoid(captured, taken))
    return out


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, Brier, ECE, lift/captured at 10/20/50%, ALIFT."""
    y = np.asarray(y, dtype=np.int64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    both_classes = 0 < y.sum() < len(y)
    out = {
        "rows": float(len(y)),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
        "roc_auc": float(skm.roc_auc_score(y, p)) if both_classes else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, p)) if both_classes else float("nan"),
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
    }
    out.update(lift_metrics(y, p))
    return out


def multiclass_metrics(
    y: np.ndarray, proba: np.ndarray, class_names: list[str] | tuple[str, ...]
) -> dict[str, object]:
    """Macro-F1, accuracy, log loss and the confusion matrix (rows true, columns predicted)."""
    y = np.asarray(y, dtype=np.int64)
    k = len(class_names)
    proba = np.clip(np.asarray(proba, dtype=np.float64), 1e-7, 1.0)
    proba = proba / proba.sum(axis=1, keepdims=True)
    predicted = proba.argmax(axis=1)
    labels = list(range(k))
    return {
        "rows": float(len(y)),
        "macro_f1": float(
            skm.f1_score(y, predicted, labels=labels, average="macro", zero_division=0)
        ),
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "log_loss": float(skm.log_loss(y, proba, labels=labels)),
        "confusion_matrix": skm.confusion_matrix(y, predicted, labels=labels).tolist(),
    }


def count_metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """For the contacts-to-order count model: MAE, RMSE, Poisson deviance, Spearman rho."""
    from scipy.stats import spearmanr

    y = np.asarray(y, dtype=np.float64)
    mu = np.clip(np.asarray(predicted, dtype=np.float64), 1e-6, None)
    varies = len(y) > 2 and np.std(y) > 0 and np.std(mu) > 0
    rho = spearmanr(y, mu).statistic if varies else float("nan")
    return {
        "rows": float(len(y)),
        "mae": float(np.mean(np.abs(y - mu))),
        "rmse": float(np.sqrt(np.mean((y - mu) ** 2))),
        "poisson_deviance": float(skm.mean_poisson_deviance(y, mu)),
        "spearman": float(rho),
        "mean_actual": float(y.mean()) if len(y) else float("nan"),
        "mean_predicted": float(mu.mean()) if len(y) else float("nan"),
    }


def scalar_metrics(metrics: dict[str, object]) -> dict[str, float]:
    """The numeric entries of a metrics dict (MLflow metrics take floats only)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float | np.floating) and np.isfinite(float(v))
    }
