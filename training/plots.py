"""Small diagnostic plots logged with each run (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.metrics import gains_curve, reliability_curve

FIGSIZE = (4.8, 3.6)
DPI = 90


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path


def roc_plot(y: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> Path:
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for name, p in scores.items():
        if np.ptp(p) == 0:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name.removeprefix("baseline_"), lw=1.2)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test window")
    ax.legend(fontsize=7)
    return _save(fig, path)


def reliability_plot(y: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    top = 0.0
    for name in ("model", "model_uncalibrated", "baseline_logistic", "oracle"):
        if name in scores:
            predicted, observed = reliability_curve(y, scores[name])
            ax.plot(
                predicted, observed, marker="o", ms=3, lw=1, label=name.removeprefix("baseline_")
            )
            top = max(top, predicted.max(), observed.max())
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="mean predicted", ylabel="observed rate", title="Reliability (equal-mass bins)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def lift_plot(y: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for name, p in scores.items():
        taken, captured = gains_curve(y, p)
        step = max(1, len(taken) // 400)
        ax.plot(taken[::step], captured[::step], label=name.removeprefix("baseline_"), lw=1.2)
    ax.set(xlabel="share of contacts (by score)", ylabel="share of orders captured", title="Gains")
    ax.legend(fontsize=7)
    return _save(fig, path)


def shap_summary_plot(
    shap_values: np.ndarray, feature_names: list[str], path: Path, top: int = 15
) -> Path:
    """Mean |SHAP| per feature (log-odds), the top features."""
    plt = _pyplot()
    importance = np.abs(shap_values[:, : len(feature_names)]).mean(axis=0)
    order = np.argsort(importance)[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(FIGSIZE[0], 0.25 * len(order) + 1.0))
    ax.barh([feature_names[i] for i in order], importance[order], color="#4c72b0")
    ax.set(xlabel="mean |SHAP| (log-odds)", title="SHAP summary, test window")
    ax.tick_params(axis="y", labelsize=7)
    return _save(fig, path)


def confusion_plot(matrix: list[list[int]], class_names: list[str], path: Path) -> Path:
    plt = _pyplot()
    values = np.asarray(matrix, dtype=np.float64)
    shares = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="recorded", title="Drop-off reason (row shares)")
    return _save(fig, path)
