"""Bootstrap intervals for binary metrics, paired across models scored on the same rows.

A bootstrap resample is a row of counts (how often each row was drawn), so a metric under
resampling is a *weighted* metric. Computing ROC-AUC, PR-AUC, lift and ECE as weighted sums over
the rows sorted once by score evaluates hundreds of resamples in a few vectorised passes instead
of hundreds of sklearn calls. Scoring two models under the same counts gives a *paired*
interval of their difference: the noise of the window is shared, only the models differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.metrics import ECE_BINS, _equal_mass_bins

N_BOOT = 300
LEVEL = 0.95
LIFT_SHARE = 0.1
BINARY_METRICS = ("roc_auc", "pr_auc", "lift_top10", "ece")
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "lift_top10": True, "ece": False}
# Resamples are evaluated in chunks of at most this many cells (resamples x rows): bounded memory.
CHUNK_CELLS = 2_000_000


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}

    def text(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) counts: how often each of n rows is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    flat = (np.arange(n_boot)[:, None] * n + draws).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def weighted_binary_metrics(
    y: np.ndarray, p: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """ROC-AUC, PR-AUC, lift@10% and equal-mass ECE for each row of ``weights`` (k, n)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    weights = np.atleast_2d(weights)
    out: dict[str, list[np.ndarray]] = {name: [] for name in BINARY_METRICS}
    chunk = max(1, CHUNK_CELLS // max(len(y), 1))
    order = np.argsort(-p, kind="stable")
    sorted_p = p[order]
    sorted_y = y[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_p) != 0) + 1]
    bins = _equal_mass_bins(p, ECE_BINS)
    n_bins = int(bins.max()) + 1 if len(bins) else 1
    one_hot = np.zeros((len(y), n_bins))
    one_hot[np.arange(len(y)), bins] = 1.0
    for first in range(0, len(weights), chunk):
        w = weights[first : first + chunk]
        for name, values in _chunk_metrics(
            w, order, sorted_y, starts, y=y, p=p, one_hot=one_hot
        ).items():
            out[name].append(values)
    return {name: np.concatenate(values) for name, values in out.items()}


def _chunk_metrics(w, order, sorted_y, starts, *, y, p, one_hot) -> dict[str, np.ndarray]:
    ws = w[:, order]
    pos_rows = ws * sorted_y
    neg_rows = ws - pos_rows
    pos = np.add.reduceat(pos_rows, starts, axis=1)  # per tied-score group, highest score first
    neg = np.add.reduceat(neg_rows, starts, axis=1)
    total_pos = pos.sum(axis=1)
    total_neg = neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        neg_through = np.cumsum(neg, axis=1)
        auc = (pos * (total_neg[:, None] - neg_through + 0.5 * neg)).sum(axis=1) / (
            total_pos * total_neg
        )
        tp = np.cumsum(pos, axis=1)
        fp = neg_through
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
        ap = (pos * precision).sum(axis=1) / total_pos
        taken = np.cumsum(ws, axis=1)
        total = taken[:, -1]
        in_top = taken <= LIFT_SHARE * total[:, None] + 1e-9
        captured = (pos_rows * in_top).sum(axis=1) / total_pos
        lift = captured / LIFT_SHARE
        predicted = (w * p) @ one_hot
        observed = (w * y) @ one_hot
        ece = np.abs(observed - predicted).sum(axis=1) / total
    degenerate = (total_pos == 0) | (total_neg == 0)
    auc[degenerate] = np.nan
    ap[degenerate] = np.nan
    lift[total_pos == 0] = np.nan
    return {"roc_auc": auc, "pr_auc": ap, "lift_top10": lift, "ece": ece}


def point_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The same metrics on the rows as they are (every count 1)."""
    values = weighted_binary_metrics(y, p, np.ones((1, len(y))))
    return {name: float(v[0]) for name, v in values.items()}


def interval(value: float, samples: np.ndarray, level: float = LEVEL) -> Interval:
    """Percentile interval of the bootstrap samples around the point value."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if len(samples) == 0:
        return Interval(float(value), float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return Interval(float(value), float(low), float(high))


def paired_gain(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    metric: str = "roc_auc",
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> Interval:
    """Challenger minus champion on ``metric`` (sign flipped when lower is better), with a paired CI."""
    counts = resample_counts(len(y), n_boot, seed)
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    point = sign * (point_metrics(y, challenger)[metric] - point_metrics(y, champion)[metric])
    samples = sign * (
        weighted_binary_metrics(y, challenger, counts)[metric]
        - weighted_binary_metrics(y, champion, counts)[metric]
    )
    return interval(point, samples, level)


def paired_loss_gain(
    challenger_loss: np.ndarray,
    champion_loss: np.ndarray,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> Interval:
    """Champion's mean per-row loss minus the challenger's (positive: the challenger is better)."""
    difference = np.asarray(champion_loss, np.float64) - np.asarray(challenger_loss, np.float64)
    counts = resample_counts(len(difference), n_boot, seed)
    samples = (counts @ difference) / len(difference)
    return interval(float(difference.mean()), samples, level)
