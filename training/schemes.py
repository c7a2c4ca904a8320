"""Training schemes (which past rows a model learns from, and how much each counts) and the one
out-of-time fitting procedure that both the backtest and ``cto train`` use.

A scheme is judged relative to a cut (the moment the model is trained): the *expanding* scheme
uses every labelled row before the cut; a *sliding window* only the last W days; a *half-life*
scheme every row, weighted ``0.5 ** (age / h)`` so that rows h days older count half as much.

The fitting procedure (:func:`fit_out_of_time`):

1. the training rows are split by time: the latest ~15% (by rows) is the early-stopping window;
2. LightGBM is fitted on the earlier rows, early-stopped on the later ones: that fixes the number
   of trees; its predictions on the early-stopping window are out of time, so the calibration
   (Platt or none, :func:`training.calibration.choose_calibration`) is fitted on them;
3. the final model is refitted on *all* training rows with that number of trees, so the most
   recent rows (the ones most like tomorrow's contacts) train the model that goes live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import polars as pl

from features.encoding import FeatureEncoding
from features.errors import CTOError
from training import lgbm
from training.calibration import Calibration, choose_calibration

# Share of the training rows (latest by time) that early-stops the first fit.
EARLY_STOPPING_SHARE = 0.15
# Below this many rows in the early-stopping window the first fit runs a fixed number of rounds.
MIN_EARLY_STOPPING_ROWS = 50
FALLBACK_ROUNDS = 100


@dataclass(frozen=True)
class Scheme:
    """Which training rows count, and how much, relative to the cut (times in days or table units)."""

    window: float | None = None  # keep rows with cut - t <= window
    half_life: float | None = None  # weight 0.5 ** ((cut - t) / half_life)

    def __post_init__(self) -> None:
        for name, value in (("window", self.window), ("half_life", self.half_life)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise CTOError(f"scheme {name} must be a positive number, got {value!r}")

    @property
    def name(self) -> str:
        parts = []
        if self.window is not None:
            parts.append(f"window-{self.window:g}")
        if self.half_life is not None:
            parts.append(f"half-life-{self.half_life:g}")
        return "+".join(parts) or "expanding"

    def rows(self, t: np.ndarray, cut: float) -> tuple[np.ndarray, np.ndarray]:
        """(mask of rows kept, their weights) for training rows at times ``t`` and a model cut."""
        age = cut - np.asarray(t, dtype=np.float64)
        keep = np.ones(len(age), dtype=bool)
        if self.window is not None:
            keep &= age <= self.window
        weight = np.ones(int(keep.sum()))
        if self.half_life is not None:
            weight = np.power(0.5, np.clip(age[keep], 0.0, None) / self.half_life)
        return keep, weight

    def to_params(self) -> dict[str, object]:
        return {
            "scheme": self.name,
            "window": "none" if self.window is None else self.window,
            "half_life": "none" if self.half_life is None else self.half_life,
        }


EXPANDING = Scheme()


def time_as_float(series: pl.Series) -> tuple[np.ndarray, str]:
    """Times as numbers: days since 1970 for dates/times, else the column's own unit."""
    if series.dtype.is_temporal():
        micro = series.cast(pl.Datetime("us")).dt.epoch("us").to_numpy()
        return micro.astype(np.float64) / 86_400e6, "days"
    return series.cast(pl.Float64).to_numpy(), "time units"


def time_cut(t: np.ndarray, share_after: float) -> float:
    """A cut at a distinct time value leaving about ``share_after`` of the rows at or after it."""
    ordered = np.sort(np.asarray(t, dtype=np.float64))
    if len(ordered) == 0:
        return math.inf
    position = min(len(ordered) - 1, max(0, int(round(len(ordered) * (1.0 - share_after)))))
    return float(ordered[position])


@dataclass
class FittedBinary:
    """A refitted binary LightGBM model with its calibration (raw scores -> probabilities)."""

    booster: lgb.Booster
    calibration: Calibration
    trees: int
    early_stopping_rows: int
    training_rows: int
    refit_rows: int

    def predict(self, x: np.ndarray, threads: int) -> np.ndarray:
        return self.calibration.apply(self.booster.predict(x, raw_score=True, num_threads=threads))


def fit_out_of_time(
    params: dict[str, object],
    x: np.ndarray,
    y: np.ndarray,
    *,
    t: np.ndarray | None,
    known: np.ndarray | None,
    weight: np.ndarray | None,
    encoding: FeatureEncoding,
    threads: int,
    max_rounds: int = lgbm.MAX_ROUNDS,
    early_stopping: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
) -> FittedBinary:
    """Early-stop on the latest rows, calibrate on their out-of-time scores, refit on every row.

    Rows must be in time order. ``known`` is when each row's label became known: a row enters the
    first fit only if its label was known when the early-stopping window opens. With
    ``early_stopping`` given (x, y, weight of a separate, later window, e.g. the validation split
    of ``cto train``), that window plays the early-stopping role and the refit uses both.
    """
    y = np.asarray(y)
    if early_stopping is None:
        if t is None or known is None:
            raise ValueError(
                "fit_out_of_time needs the rows' times without an early_stopping window"
            )
        cut = time_cut(t, EARLY_STOPPING_SHARE)
        first = (t < cut) & (known <= cut)
        later = t >= cut
        x_fit, y_fit = x[first], y[first]
        w_fit = None if weight is None else weight[first]
        x_es, y_es = x[later], y[later]
        w_es = None if weight is None else weight[later]
        x_all, y_all, w_all = x, y, weight
    else:
        x_es, y_es, w_es = early_stopping
        x_fit, y_fit, w_fit = x, y, weight
        x_all = np.vstack([x, x_es])
        y_all = np.concatenate([y, y_es])
        w_all = None
        if weight is not None or w_es is not None:
            w_all = np.concatenate(
                [
                    np.ones(len(y)) if weight is None else weight,
                    np.ones(len(y_es)) if w_es is None else w_es,
                ]
            )
    usable_es = len(y_es) >= MIN_EARLY_STOPPING_ROWS and 0 < y_es.sum() < len(y_es)
    if len(y_fit) == 0 or not usable_es:
        # Too little history to hold a window out: a fixed number of rounds on everything.
        booster = lgbm.fit_booster(params, (x_all, y_all, w_all), None, encoding, FALLBACK_ROUNDS)
        return FittedBinary(
            booster,
            Calibration("none", reason="too few rows to hold an early-stopping window out"),
            FALLBACK_ROUNDS,
            0,
            len(y_all),
            len(y_all),
        )
    first_fit = lgbm.fit_booster(
        params, (x_fit, y_fit, w_fit), (x_es, y_es, w_es), encoding, max_rounds
    )
    trees = max(1, first_fit.num_trees())
    calibration = choose_calibration(
        first_fit.predict(x_es, raw_score=True, num_threads=threads), y_es
    )
    final = lgbm.fit_booster(params, (x_all, y_all, w_all), None, encoding, trees)
    return FittedBinary(final, calibration, trees, len(y_es), len(y_fit), len(y_all))


def resolve_scheme(
    settings,
    digest: str,
    task: str,
    window: float | None = None,
    half_life: float | None = None,
    *,
    family: str = "lightgbm",
) -> tuple[Scheme, str]:
    """The scheme to train with, and where it came from.

    Explicit ``window`` / ``half_life`` win; otherwise the scheme the latest backtest of the same
    data (same digest) and task chose; with no backtest, the expanding window.
    """
    if window is not None or half_life is not None:
        return Scheme(window=window, half_life=half_life), "flags"
    from training.backtest import latest_choice

    found = latest_choice(settings, digest, task, family)
    if found is None:
        return EXPANDING, "expanding: no backtest of this data yet"
    scheme, run_id = found
    return scheme, f"backtest run {run_id}"
