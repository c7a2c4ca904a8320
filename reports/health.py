"""Model health: which champions score, how well they tested, calibration, and feature drift."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from reports.drift import FeatureDrift, categorical_drift, numeric_drift
from reports.models import Champion
from training.metrics import reliability_curve

RELIABILITY_BINS = 10

# The test metrics shown per objective: (card key, label a manager can read, format).
SHOWN_METRICS = {
    "binary": (
        ("roc_auc", "Ranking quality (ROC-AUC, 0.5 = coin flip, 1 = perfect)", "{:.3f}"),
        ("captured_top20", "Orders found in the top 20% of scores", "{:.0%}"),
        ("ece", "Calibration error (average gap, predicted vs actual)", "{:.3f}"),
    ),
    "multiclass": (
        ("macro_f1", "Reason accuracy (macro-F1, 0-1)", "{:.3f}"),
        ("accuracy", "Share of reasons named right", "{:.0%}"),
    ),
    "poisson": (
        ("mae", "Average error (contacts)", "{:.2f}"),
        ("spearman", "Rank agreement (0-1)", "{:.2f}"),
    ),
}


def _grade(value: float, cuts: tuple[float, float, float]) -> str:
    """'weak' / 'fair' / 'good' / 'strong' against three ascending cut points."""
    weak, fair, good = cuts
    if value < weak:
        return "weak"
    if value < fair:
        return "fair"
    if value < good:
        return "good"
    return "strong"


# Per test figure: what it means in words, given its value.
METRIC_MEANINGS = {
    "roc_auc": lambda v: (
        f"Ranking quality {v:.3f}: pick a contact that ordered and one that did not; the model gives "
        f"the one that ordered the higher chance {v:.0%} of the time (50% = coin flip). "
        f"{_grade(v, (0.6, 0.7, 0.8)).capitalize()}."
    ),
    "captured_top20": lambda v: (
        f"Orders found in the top 20%: the fifth of contacts the model rates highest held {v:.0%} "
        "of the orders (20% if it ranked at random)."
    ),
    "ece": lambda v: (
        f"Calibration error {v:.3f}: a predicted chance is off from what actually happened by "
        f"{v * 100:.1f} points on average ({'small' if v < 0.02 else 'noticeable'})."
    ),
    "macro_f1": lambda v: (
        f"Reason accuracy {v:.3f} (macro-F1): how well the model names each drop-off reason, every "
        f"reason counting equally (1 = always right). {_grade(v, (0.3, 0.5, 0.7)).capitalize()}."
    ),
    "accuracy": lambda v: (
        f"Share of reasons named right {v:.0%}: for contacts with a recorded reason, how often the "
        "model's most likely reason was the recorded one."
    ),
    "mae": lambda v: (
        f"Average error {v:.2f}: the predicted number of further contacts before an order is off by "
        f"{v:.2f} contacts on average."
    ),
    "spearman": lambda v: (
        f"Rank agreement {v:.2f}: whether contacts the model expects to need more further contacts "
        f"really needed more (1 = same order, 0 = no relation). "
        f"{_grade(v, (0.2, 0.4, 0.6)).capitalize()}"
        + (": treat its numbers as rough guidance only." if v < 0.2 else ".")
    ),
}


def metric_meanings(champion: Champion) -> list[str]:
    """Plain-language explanation of each test figure the report shows for ``champion``."""
    metrics = (champion.card.get("test_metrics") or {}).get("model") or {}
    objective = champion.card.get("objective", "binary")
    shown = SHOWN_METRICS.get(objective, SHOWN_METRICS["poisson"])
    return [
        METRIC_MEANINGS[key](metrics[key])
        for key, _label, _fmt in shown
        if isinstance(metrics.get(key), int | float) and key in METRIC_MEANINGS
    ]


def test_window(champion: Champion) -> tuple[str, str] | None:
    """The held-out test window (from, until) as ISO text, from the card."""
    test = (champion.card.get("data_windows") or {}).get("test") or {}
    if not test.get("from") or not test.get("until"):
        return None
    return str(test["from"]), str(test["until"])


def training_start(champion: Champion) -> str | None:
    train = (champion.card.get("data_windows") or {}).get("train") or {}
    return str(train["from"]) if train.get("from") else None


def metric_lines(champion: Champion) -> list[str]:
    metrics = (champion.card.get("test_metrics") or {}).get("model") or {}
    objective = champion.card.get("objective", "binary")
    shown = SHOWN_METRICS.get(objective, SHOWN_METRICS["poisson"])
    lines = []
    for key, label, fmt in shown:
        value = metrics.get(key)
        if isinstance(value, int | float):
            lines.append(f"{label}: {fmt.format(value)}")
    return lines


def training_window(champion: Champion) -> str:
    windows = champion.card.get("data_windows") or {}
    train = windows.get("train") or {}
    test = windows.get("test") or {}
    if not train:
        return "n/a"
    return f"{train.get('from', '')[:10]} – {test.get('until', train.get('until', ''))[:10]}"


@dataclass(frozen=True)
class Reliability:
    label: str
    predicted: np.ndarray
    observed: np.ndarray
    rows: int


def reliability(
    champion: Champion, features: pl.DataFrame, outcome: np.ndarray, label: str
) -> Reliability:
    """Predicted chance vs actual order share in equal-size groups of contacts."""
    probability = champion.probability(champion.matrix(features))
    predicted, observed = reliability_curve(
        np.asarray(outcome, dtype=float), probability, bins=RELIABILITY_BINS
    )
    return Reliability(label, predicted, observed, len(outcome))


def held_out_reliability(champion: Champion) -> Reliability | None:
    """Reliability on the version's own held-out test window (from its run's test set)."""
    test = champion.test_set()
    label = champion.card.get("label")
    if test is None or label not in (test.columns if test is not None else []):
        return None
    known = test.filter(pl.col(label).is_not_null())
    if known.height < RELIABILITY_BINS:
        return None
    outcome = known[label].cast(pl.Float64).to_numpy()
    return reliability(champion, known, outcome, "held-out test window")


def feature_drift(champion: Champion, features: pl.DataFrame) -> list[FeatureDrift]:
    """PSI of each model feature in ``features`` against the card's training reference."""
    references = champion.card.get("reference_quantiles") or {}
    drifts = []
    for name in champion.feature_names:
        reference = references.get(name)
        if reference is None or name not in features.columns:
            continue
        column = features.get_column(name)
        if reference.get("kind") == "categorical":
            counts = column.cast(pl.String).value_counts().drop_nulls().rows()
            shares = dict(zip(reference["levels"], reference["shares"], strict=True))
            drifts.append(categorical_drift(name, dict(counts), shares))
        else:
            values = column.cast(pl.Float64).fill_nan(None).to_numpy()
            quantiles = [np.nan if v is None else v for v in reference["values"]]
            if not np.isfinite(np.asarray(quantiles, dtype=float)).any():
                continue
            levels = np.asarray(reference["percentiles"], dtype=float) / 100.0
            drifts.append(
                numeric_drift(
                    name,
                    values,
                    levels,
                    quantiles,
                    reference_missing_share=reference.get("missing_share"),
                )
            )
    return sorted(drifts, key=lambda d: -d.psi if np.isfinite(d.psi) else 0.0)
