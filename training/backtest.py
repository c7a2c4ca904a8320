"""Rolling-origin backtest: how each training scheme and model family would have done, month
after month, had it been retrained at every fold's origin.

Folds. The rows are ordered by time; the first ~half (by rows) is history only, the rest is cut
into K forward test windows of about equal rows, each cut at a distinct time value. Fold k's
models train on rows *before* its origin whose label was known by then
(``t < origin`` and ``label_known_at <= origin``), and are scored on the rows of its test window.
A fold whose training or test rows are too few (or hold too few orders) is skipped and reported.

Candidates, each with the same out-of-time fit (:func:`training.schemes.fit_out_of_time`):

- LightGBM and the fair logistic regression (imputation, standardisation, one-hot categoricals:
  :func:`training.baselines.logistic_pipeline`), each under every scheme: expanding window,
  sliding windows, exponential time-decay weights;
- LightGBM with linear leaves (``linear_tree``, expanding window): trees extrapolate flat, so a
  numeric feature whose level drifts (rates, prices) is better followed by a slope in the leaf;
- the base rate and the one rule (the best single binned feature) on the expanding window.

Metrics per fold: ROC-AUC, PR-AUC, lift@10% and ECE with bootstrap CIs; overall: the mean over
folds, with a CI from the per-fold resamples. Candidates compared on the same folds get *paired*
intervals (the same resamples), so a difference is judged against the noise of the window.

Choices, each only beyond noise (the paired CI of the gain excludes zero):

- scheme: the best scheme of a family replaces the expanding window only if it beats it;
- family: LightGBM is the model to register unless the logistic regression beats it; then the
  run says so in plain words;
- cadence: every fold's model is also scored, frozen, on every later test window. The loss of
  ROC-AUC against the model retrained for that window, by the age of the frozen model, gives a
  slope; the recommended retrain cadence is the age at which the expected loss reaches
  :data:`DECAY_TOLERANCE` (capped at the oldest age the data shows).
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from features.encoding import FeatureEncoding, encode, fit_encoding
from features.errors import CTOError
from features.settings import Settings
from training import baselines, lgbm
from training.intervals import (
    BINARY_METRICS,
    HIGHER_IS_BETTER,
    N_BOOT,
    Interval,
    interval,
    point_metrics,
    resample_counts,
    weighted_binary_metrics,
)
from training.schemes import EXPANDING, Scheme, fit_out_of_time, time_as_float

DEFAULT_FOLDS = 5
HISTORY_SHARE = 0.5  # rows before the first origin: history only
MIN_TRAIN_ROWS = 200
MIN_TRAIN_POSITIVES = 20
MIN_TEST_ROWS = 100
MIN_TEST_POSITIVES = 10
# Windows and half-lives, as shares of the history before the first origin.
WINDOW_SHARES = (0.5, 1.0)
HALF_LIFE_SHARES = (0.25, 1.0)
# A frozen model is due for retraining once its expected ROC-AUC loss reaches this.
DECAY_TOLERANCE = 0.01
LIGHTGBM = "lightgbm"
LINEAR = "linear"
LINEAR_TREE = "lightgbm_linear_tree"
BASE_RATE = "base_rate"
ONE_RULE = "one_rule"
FAMILY_TEXT = {
    LIGHTGBM: "LightGBM",
    LINEAR: "logistic regression (one-hot + standardised)",
    LINEAR_TREE: "LightGBM with linear leaves",
    BASE_RATE: "base rate",
    ONE_RULE: "one rule",
}
SUMMARY_FILE = "backtest.md"
RESULT_FILE = "backtest.json"
PLOT_FILE = "backtest.png"


@dataclass
class BacktestInput:
    """Rows in time order: features, a binary label, the time and when the label became known."""

    frame: pl.DataFrame  # features + "_t", "_known" (float) and "_y" (int8)
    features: list[str]
    categorical: list[str]
    unit: str  # "days", or the unit of a numeric time column
    source: str
    label: str
    digest: str
    task: str
    monotone: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Fold:
    index: int
    origin: float  # models train on t < origin with labels known by origin
    end: float  # the test window is origin <= t < end
    train_rows: int
    test_rows: int
    test_positives: int

    def train_mask(self, t: np.ndarray, known: np.ndarray) -> np.ndarray:
        return (t < self.origin) & (known <= self.origin)

    def test_mask(self, t: np.ndarray) -> np.ndarray:
        return (t >= self.origin) & (t < self.end)


@dataclass
class Candidate:
    family: str
    scheme: Scheme

    @property
    def key(self) -> str:
        return f"{self.family}/{self.scheme.name}"


@dataclass
class BacktestResult:
    source: str
    label: str
    task: str
    unit: str
    rows: int
    folds: list[Fold]
    skipped_folds: list[str]
    # candidate key -> fold index -> metric -> Interval
    per_fold: dict[str, dict[int, dict[str, Interval]]]
    overall: dict[str, dict[str, Interval]]
    chosen: dict[str, Scheme]  # family -> scheme
    scheme_gains: dict[str, Interval]  # family -> gain of its chosen scheme over expanding
    family_gain: Interval  # LightGBM (chosen scheme) minus logistic regression (chosen scheme)
    linear_tree_gain: Interval | None
    recommended_family: str
    verdict: str
    decay_points: list[dict[str, float]]
    decay_slope: float  # ROC-AUC change per time unit of model age (negative: decays)
    cadence: float
    cadence_text: str
    run_id: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "label": self.label,
            "task": self.task,
            "unit": self.unit,
            "rows": self.rows,
            "folds": [f.__dict__ for f in self.folds],
            "skipped_folds": self.skipped_folds,
            "per_fold": {
                k: {str(i): {m: v.to_dict() for m, v in ms.items()} for i, ms in folds.items()}
                for k, folds in self.per_fold.items()
            },
            "overall": {
                k: {m: v.to_dict() for m, v in ms.items()} for k, ms in self.overall.items()
            },
            "chosen": {k: s.to_params() for k, s in self.chosen.items()},
            "scheme_gains": {k: v.to_dict() for k, v in self.scheme_gains.items()},
            "family_gain_roc_auc": self.family_gain.to_dict(),
            "linear_tree_gain_roc_auc": None
            if self.linear_tree_gain is None
            else self.linear_tree_gain.to_dict(),
            "recommended_family": self.recommended_family,
            "verdict": self.verdict,
            "decay_points": self.decay_points,
            "decay_slope_roc_auc_per_unit": self.decay_slope,
            "cadence": self.cadence,
            "cadence_text": self.cadence_text,
            "run_id": self.run_id,
        }


# --- inputs --------------------------------------------------------------------------------------


def input_from_table(
    path: Path, label: str, time_column: str, exclude: list[str], seed: int
) -> BacktestInput:
    """One row per contact (or session); the label known at the row's own time."""
    from training.data import data_digest
    from training.table import prepare_table, read_table

    if not time_column:
        raise CTOError("backtest --table needs --time-column COLUMN: folds go forward in time")
    raw = read_table(Path(path))
    frame, features, categorical, _ = prepare_table(raw, label, time_column, exclude, seed)
    frame = frame.sort("started_at", "_row")
    t, unit = time_as_float(frame["started_at"])
    out = frame.select(features).with_columns(
        pl.Series("_t", t),
        pl.Series("_known", t),
        frame["_label"].cast(pl.Int8).alias("_y"),
    )
    return BacktestInput(
        frame=out,
        features=features,
        categorical=categorical,
        unit=unit,
        source=str(path),
        label=label,
        digest=data_digest({"table": raw}),
        task="table",
    )


def input_from_directory(
    data, settings: Settings, task: str, log=None, *, client=None, work_dir: Path | None = None
) -> BacktestInput:
    """Contract tables: features and labels as ``cto train`` builds them, every labelled contact.

    With a Dask ``client`` the features come from the Dask feature path (the same frame): every
    feature is point-in-time, so each fold's rows carry only what was known at their own moment.
    """
    from features.registry import categorical_features, feature_names
    from training.data import prepare
    from training.pipeline import monotone_hints
    from training.tasks import CONVERSION_AFTER_CONTACT, CONVERSION_ARRIVAL, TASK_MOMENT

    if task not in (CONVERSION_ARRIVAL, CONVERSION_AFTER_CONTACT):
        raise CTOError(
            f"backtest task {task!r}: choose {CONVERSION_ARRIVAL} or {CONVERSION_AFTER_CONTACT}"
        )
    prepared = prepare(data, settings, log=log, client=client, work_dir=work_dir)
    moment = TASK_MOMENT[task]
    names = [*feature_names(moment), *prepared.data_columns]
    frame = prepared.frame.filter(pl.col("label_known_at") <= prepared.windows.end).sort(
        "started_at", "contact_id"
    )
    t, _ = time_as_float(frame["started_at"])
    known, _ = time_as_float(frame["label_known_at"])
    out = frame.select(names).with_columns(
        pl.Series("_t", t), pl.Series("_known", known), frame["converted"].cast(pl.Int8).alias("_y")
    )
    return BacktestInput(
        frame=out,
        features=names,
        categorical=list(categorical_features(moment)),
        unit="days",
        source=prepared.source,
        label="converted",
        digest=prepared.digest,
        task=task,
        monotone=monotone_hints(moment),
    )


# --- folds ---------------------------------------------------------------------------------------


def make_folds(
    t: np.ndarray, known: np.ndarray, y: np.ndarray, k: int = DEFAULT_FOLDS
) -> tuple[list[Fold], list[str]]:
    """K forward folds of about equal test rows after the history share; skipped ones explained."""
    if k < 1:
        raise CTOError(f"folds must be at least 1, got {k}")
    ordered = np.sort(t)
    n = len(ordered)
    cuts: list[float] = []
    for i in range(k + 1):
        share = HISTORY_SHARE + (1.0 - HISTORY_SHARE) * i / k
        position = min(n - 1, int(round(n * share)))
        cuts.append(float(ordered[position]) if i < k else math.inf)
    folds: list[Fold] = []
    skipped: list[str] = []
    distinct = sorted(set(cuts[:-1]))
    bounds = [*distinct, math.inf]
    for origin, end in zip(bounds[:-1], bounds[1:], strict=True):
        train = (t < origin) & (known <= origin)
        test = (t >= origin) & (t < end)
        reasons = []
        if train.sum() < MIN_TRAIN_ROWS or y[train].sum() < MIN_TRAIN_POSITIVES:
            reasons.append(
                f"{int(train.sum())} training rows / {int(y[train].sum())} positives "
                f"(needs {MIN_TRAIN_ROWS} / {MIN_TRAIN_POSITIVES})"
            )
        if test.sum() < MIN_TEST_ROWS or not MIN_TEST_POSITIVES <= y[test].sum() < test.sum():
            reasons.append(
                f"{int(test.sum())} test rows / {int(y[test].sum())} positives "
                f"(needs {MIN_TEST_ROWS} / {MIN_TEST_POSITIVES})"
            )
        if reasons:
            skipped.append(f"fold from {origin:g}: " + "; ".join(reasons))
            continue
        folds.append(
            Fold(len(folds), origin, end, int(train.sum()), int(test.sum()), int(y[test].sum()))
        )
    if len(distinct) < k:
        skipped.append(
            f"the time column has too few distinct values for {k} folds: {len(distinct)} cut(s)"
        )
    if not folds:
        raise CTOError(
            "backtest: no fold has enough rows and orders to train and test on; "
            + "; ".join(skipped)
        )
    return folds, skipped


def candidate_schemes(t: np.ndarray, first_origin: float) -> list[Scheme]:
    """Expanding, two sliding windows and two half-lives, sized from the first fold's history."""
    history = max(first_origin - float(np.min(t)), 1e-9)

    def nice(value: float) -> float:
        return float(f"{value:.2g}") if value < 10 else float(round(value))

    schemes = [EXPANDING]
    schemes += [Scheme(window=nice(history * s)) for s in WINDOW_SHARES]
    schemes += [Scheme(half_life=nice(history * s)) for s in HALF_LIFE_SHARES]
    unique: dict[str, Scheme] = {}
    for scheme in schemes:
        unique.setdefault(scheme.name, scheme)
    return list(unique.values())


# --- fitting -------------------------------------------------------------------------------------


def _lightgbm_params(settings: Settings, data: BacktestInput, encoding: FeatureEncoding, linear):
    params = lgbm.base_params(settings) | {"objective": "binary", "metric": "binary_logloss"}
    if linear:
        params["linear_tree"] = True
        params["linear_lambda"] = 1.0
    elif data.monotone:
        params["monotone_constraints"] = lgbm.monotone_vector(encoding, data.monotone)
        params["monotone_constraints_method"] = "intermediate"
    return params


def _fit_predict(
    candidate: Candidate,
    data: BacktestInput,
    *,
    train: pl.DataFrame,
    tests: dict[int, pl.DataFrame],
    origin: float,
    settings: Settings,
) -> dict[int, np.ndarray]:
    """Fit one candidate on a fold's training rows; its predictions on the given test windows."""
    t = train["_t"].to_numpy()
    keep, weight = candidate.scheme.rows(t, origin)
    rows = train.filter(pl.Series(keep))
    encoding = fit_encoding(rows, data.features, data.categorical)
    x = encode(rows, encoding)
    y = rows["_y"].to_numpy()
    x_tests = {j: encode(frame, encoding) for j, frame in tests.items()}
    threads = settings.num_threads
    if candidate.family in (LIGHTGBM, LINEAR_TREE):
        from training.distributed import use_dask

        params = _lightgbm_params(settings, data, encoding, candidate.family == LINEAR_TREE)
        # Linear leaves always fit in this process: on lightgbm.dask their ROC-AUC strayed more
        # than the stated tolerance from one process's (0.575 against 0.607 in the suite).
        local = use_dask(None) if candidate.family == LINEAR_TREE else contextlib.nullcontext()
        with local:
            fitted = fit_out_of_time(
                params,
                x,
                y,
                t=rows["_t"].to_numpy(),
                known=rows["_known"].to_numpy(),
                weight=None if candidate.scheme.half_life is None else weight,
                encoding=encoding,
                threads=threads,
            )
        return {j: fitted.predict(xt, threads) for j, xt in x_tests.items()}
    if candidate.family == LINEAR:
        model = baselines.logistic_pipeline(encoding, settings.seed)
        model.fit(x, y, model__sample_weight=weight)
        return {j: model.predict_proba(xt)[:, 1] for j, xt in x_tests.items()}
    if candidate.family == ONE_RULE:
        rule = baselines.fit_one_rule(x, y, encoding)
        return {j: rule.predict(xt) for j, xt in x_tests.items()}
    rate = float(np.average(y, weights=weight))
    return {j: np.full(len(xt), rate) for j, xt in x_tests.items()}


def candidates_for(schemes: list[Scheme]) -> list[Candidate]:
    out = [Candidate(LIGHTGBM, s) for s in schemes]
    out += [Candidate(LINEAR, s) for s in schemes]
    out += [Candidate(LINEAR_TREE, EXPANDING), Candidate(ONE_RULE, EXPANDING)]
    out.append(Candidate(BASE_RATE, EXPANDING))
    return out


def compare_inputs(
    base: BacktestInput,
    variant: BacktestInput,
    settings: Settings,
    *,
    folds: int = DEFAULT_FOLDS,
    n_boot: int = N_BOOT,
    families: tuple[str, ...] = (LIGHTGBM, LINEAR),
) -> dict[str, dict[str, Interval]]:
    """The same rows with two feature sets (e.g. raw numbers, and numbers relative to their
    recent level), fitted and scored on the same forward folds and resamples (expanding window):
    per family, each input's ROC-AUC and the variant's paired gain over the base."""
    t = base.frame["_t"].to_numpy()
    known = base.frame["_known"].to_numpy()
    y = base.frame["_y"].to_numpy().astype(np.int64)
    if not (np.array_equal(t, variant.frame["_t"].to_numpy()) and
            np.array_equal(y, variant.frame["_y"].to_numpy())):  # fmt: skip
        raise CTOError("compare_inputs: both inputs must hold the same rows in the same order")
    fold_list, _ = make_folds(t, known, y, folds)
    counts = {
        f.index: resample_counts(f.test_rows, n_boot, settings.seed + f.index) for f in fold_list
    }
    points: dict[str, dict[int, dict[str, float]]] = {}
    samples: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for name, data in (("base", base), ("variant", variant)):
        frame = data.frame
        for fold in fold_list:
            train = frame.filter(pl.Series(fold.train_mask(t, known)))
            test = frame.filter(pl.Series(fold.test_mask(t)))
            yt = test["_y"].to_numpy().astype(np.int64)
            for family in families:
                candidate = Candidate(family, EXPANDING)
                p = _fit_predict(
                    candidate, data, train=train, tests={fold.index: test}, origin=fold.origin,
                    settings=settings,
                )[fold.index]  # fmt: skip
                key = f"{name}/{family}"
                points.setdefault(key, {})[fold.index] = point_metrics(yt, p)
                samples.setdefault(key, {})[fold.index] = weighted_binary_metrics(
                    yt, p, counts[fold.index]
                )
    out = {}
    for family in families:
        out[family] = {
            "base": _overall(points[f"base/{family}"], samples[f"base/{family}"])["roc_auc"],
            "variant": _overall(points[f"variant/{family}"], samples[f"variant/{family}"])[
                "roc_auc"
            ],
            "gain": _gain(points, samples, f"variant/{family}", f"base/{family}"),
        }
    return out


# --- the run -------------------------------------------------------------------------------------


def run_backtest(
    data: BacktestInput,
    settings: Settings,
    *,
    folds: int = DEFAULT_FOLDS,
    n_boot: int = N_BOOT,
    log=None,
    track: bool = True,
    out_dir: Path | None = None,
) -> BacktestResult:
    """Evaluate every candidate on every fold; choose scheme, family and cadence; log to MLflow."""
    say = log or (lambda _msg: None)
    frame = data.frame
    t = frame["_t"].to_numpy()
    known = frame["_known"].to_numpy()
    y = frame["_y"].to_numpy().astype(np.int64)
    fold_list, skipped = make_folds(t, known, y, folds)
    for note in skipped:
        say(f"skipped: {note}")
    schemes = candidate_schemes(t, fold_list[0].origin)
    candidates = candidates_for(schemes)
    say(
        f"{len(fold_list)} folds, {len(candidates)} candidates "
        f"({', '.join(s.name for s in schemes)}; times in {data.unit})"
    )
    test_frames = {f.index: frame.filter(pl.Series(f.test_mask(t))) for f in fold_list}
    y_tests = {i: f["_y"].to_numpy().astype(np.int64) for i, f in test_frames.items()}
    counts = {
        f.index: resample_counts(f.test_rows, n_boot, settings.seed + f.index) for f in fold_list
    }
    # candidate key -> fold -> metric -> bootstrap samples (same resamples for every candidate)
    samples: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    points: dict[str, dict[int, dict[str, float]]] = {}
    frozen_auc: dict[tuple[int, int], float] = {}  # (trained at fold k, scored on fold j)
    for fold in fold_list:
        train = frame.filter(pl.Series(fold.train_mask(t, known)))
        later = {j: test_frames[j] for j in test_frames if j >= fold.index}
        for candidate in candidates:
            frozen = candidate.key == f"{LIGHTGBM}/{EXPANDING.name}"
            wanted = later if frozen else {fold.index: test_frames[fold.index]}
            predictions = _fit_predict(
                candidate, data, train=train, tests=wanted, origin=fold.origin, settings=settings
            )
            p = predictions[fold.index]
            yt = y_tests[fold.index]
            points.setdefault(candidate.key, {})[fold.index] = point_metrics(yt, p)
            samples.setdefault(candidate.key, {})[fold.index] = weighted_binary_metrics(
                yt, p, counts[fold.index]
            )
            if frozen:  # the decay is that of the expanding LightGBM model
                for j, pj in predictions.items():
                    frozen_auc[(fold.index, j)] = point_metrics(y_tests[j], pj)["roc_auc"]
        best = points[f"{LIGHTGBM}/{EXPANDING.name}"][fold.index]["roc_auc"]
        linear = points[f"{LINEAR}/{EXPANDING.name}"][fold.index]["roc_auc"]
        say(
            f"fold {fold.index + 1}/{len(fold_list)} (origin {when(fold.origin, data.unit)}, {fold.train_rows:,} "
            f"train / {fold.test_rows:,} test rows): ROC-AUC LightGBM {best:.3f}, "
            f"logistic {linear:.3f}"
        )

    per_fold = {
        key: {
            i: {m: interval(points[key][i][m], samples[key][i][m]) for m in BINARY_METRICS}
            for i in points[key]
        }
        for key in points
    }
    overall = {key: _overall(points[key], samples[key]) for key in points}

    chosen: dict[str, Scheme] = {}
    scheme_gains: dict[str, Interval] = {}
    for family in (LIGHTGBM, LINEAR):
        base_key = f"{family}/{EXPANDING.name}"
        best_scheme = max(schemes, key=lambda s: overall[f"{family}/{s.name}"]["roc_auc"].value)
        gain = _gain(points, samples, f"{family}/{best_scheme.name}", base_key)
        if best_scheme != EXPANDING and gain.low > 0:
            chosen[family] = best_scheme
        else:
            chosen[family] = EXPANDING
        scheme_gains[family] = gain
    lgbm_key = f"{LIGHTGBM}/{chosen[LIGHTGBM].name}"
    linear_key = f"{LINEAR}/{chosen[LINEAR].name}"
    family_gain = _gain(points, samples, lgbm_key, linear_key)
    linear_tree_gain = _gain(points, samples, f"{LINEAR_TREE}/{EXPANDING.name}", lgbm_key)
    recommended, verdict = _verdict(family_gain)
    decay_points, slope = _decay(frozen_auc, fold_list, t)
    cadence, cadence_text = _cadence(slope, decay_points, data.unit)
    result = BacktestResult(
        source=data.source,
        label=data.label,
        task=data.task,
        unit=data.unit,
        rows=frame.height,
        folds=fold_list,
        skipped_folds=skipped,
        per_fold=per_fold,
        overall=overall,
        chosen=chosen,
        scheme_gains=scheme_gains,
        family_gain=family_gain,
        linear_tree_gain=linear_tree_gain,
        recommended_family=recommended,
        verdict=verdict,
        decay_points=decay_points,
        decay_slope=slope,
        cadence=cadence,
        cadence_text=cadence_text,
    )
    say(verdict)
    say(cadence_text)
    if track or out_dir is not None:
        _write_outputs(result, data, settings, track=track, out_dir=out_dir)
    return result


def _overall(points_by_fold, samples_by_fold) -> dict[str, Interval]:
    out = {}
    for metric in BINARY_METRICS:
        value = float(np.mean([points_by_fold[i][metric] for i in points_by_fold]))
        stacked = np.vstack([samples_by_fold[i][metric] for i in samples_by_fold])
        out[metric] = interval(value, stacked.mean(axis=0))
    return out


def _gain(points, samples, challenger: str, champion: str, metric: str = "roc_auc") -> Interval:
    """Mean over folds of challenger minus champion, with a paired bootstrap interval."""
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    folds = sorted(points[challenger])
    value = sign * float(
        np.mean([points[challenger][i][metric] - points[champion][i][metric] for i in folds])
    )
    diffs = np.vstack(
        [samples[challenger][i][metric] - samples[champion][i][metric] for i in folds]
    )
    return interval(value, sign * diffs.mean(axis=0))


def _verdict(family_gain: Interval) -> tuple[str, str]:
    gain = family_gain.text(3)
    if family_gain.high < 0:
        return LINEAR, (
            f"LightGBM loses to its fair logistic-regression baseline on these folds: ROC-AUC "
            f"gain {gain} (95% CI below zero): on this data the linear model is the better "
            "choice. For a table, `cto train --table ... --family linear` (or `--family auto`, "
            "which follows this verdict) registers it; contract-data models stay LightGBM."
        )
    if family_gain.low > 0:
        return LIGHTGBM, (
            f"LightGBM beats its fair logistic-regression baseline: ROC-AUC gain {gain} (95% CI)."
        )
    return LIGHTGBM, (
        f"LightGBM and the fair logistic regression are within noise of each other: ROC-AUC gain "
        f"{gain} (95% CI spans zero). LightGBM stays the default; the linear model is as good."
    )


def _decay(frozen_auc, folds: list[Fold], t: np.ndarray) -> tuple[list[dict[str, float]], float]:
    """(age, ROC-AUC of the frozen model minus the retrained one) per pair, and the slope."""
    mids = {}
    for fold in folds:
        inside = t[(t >= fold.origin) & (t < fold.end)]
        mids[fold.index] = float(np.median(inside))
    origins = {fold.index: fold.origin for fold in folds}
    pts = []
    for (k, j), auc in sorted(frozen_auc.items()):
        fresh = frozen_auc[(j, j)]
        pts.append(
            {
                "trained_at_fold": k,
                "scored_on_fold": j,
                "age": mids[j] - origins[k],
                "extra_age": origins[j] - origins[k],
                "roc_auc": auc,
                "loss": fresh - auc,
            }
        )
    older = [p for p in pts if p["extra_age"] > 0]
    if not older:
        return pts, float("nan")
    extra = np.array([p["extra_age"] for p in older])
    loss = np.array([p["loss"] for p in older])
    slope = -float(np.sum(extra * loss) / np.sum(extra * extra))  # through the origin
    return pts, slope


def _cadence(slope: float, points, unit: str) -> tuple[float, str]:
    if not math.isfinite(slope):
        return float("nan"), "one fold only: no frozen model to age, no cadence measured"
    longest = float(f"{max(p['extra_age'] for p in points):.3g}")
    if slope >= 0 or DECAY_TOLERANCE / -slope >= longest:
        return longest, (
            f"a frozen model lost less than {DECAY_TOLERANCE} ROC-AUC over the "
            f"{longest:g} {unit} the folds span: retrain at least every {longest:g} {unit}"
        )
    cadence = float(f"{DECAY_TOLERANCE / -slope:.2g}")
    one = unit[:-1] if unit.endswith("s") else unit
    return cadence, (
        f"a frozen model loses {-slope:.2g} ROC-AUC per {one} of age against a retrained one: "
        f"retrain every {cadence:g} {unit} to keep the loss under {DECAY_TOLERANCE}"
    )


def cadence_text(result: dict) -> str:
    """The cadence sentence of a backtest's JSON result."""
    return _cadence(result["decay_slope_roc_auc_per_unit"], result["decay_points"], result["unit"])[
        1
    ]


def when(value: float, unit: str) -> str:
    """A fold boundary as people read it: a date for date/time columns, else the number."""
    if unit == "days" and math.isfinite(value):
        from datetime import UTC, datetime, timedelta

        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=value)
        return moment.strftime("%Y-%m-%d %H:%M").removesuffix(" 00:00")
    return f"{value:g}"


# --- outputs -------------------------------------------------------------------------------------


def summary_markdown(result: BacktestResult) -> str:
    lines = [
        f"Backtest of `{Path(result.source).name}` (label `{result.label}`, {result.rows:,} rows, "
        f"{len(result.folds)} forward folds, times in {result.unit}).",
        "",
        "| model | scheme | ROC-AUC | PR-AUC | lift@10% | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for key, metrics in sorted(result.overall.items(), key=lambda kv: -kv[1]["roc_auc"].value):
        family, scheme = key.split("/", 1)
        mark = (
            " (chosen)"
            if result.chosen.get(family, None) and result.chosen[family].name == scheme
            else ""
        )
        lines.append(
            f"| {FAMILY_TEXT[family]} | {scheme}{mark} | "
            + " | ".join(metrics[m].text(3) for m in BINARY_METRICS)
            + " |"
        )
    lines += ["", "Per fold, ROC-AUC (95% CI):", ""]
    header = "| fold | origin | test rows | " + " | ".join(
        FAMILY_TEXT[f] for f in (LIGHTGBM, LINEAR, ONE_RULE, BASE_RATE)
    )
    lines += [header + " |", "|---" * 7 + "|"]
    keys = [
        f"{LIGHTGBM}/{result.chosen[LIGHTGBM].name}",
        f"{LINEAR}/{result.chosen[LINEAR].name}",
        f"{ONE_RULE}/{EXPANDING.name}",
        f"{BASE_RATE}/{EXPANDING.name}",
    ]
    for fold in result.folds:
        cells = [result.per_fold[k][fold.index]["roc_auc"].text(3) for k in keys]
        lines.append(
            f"| {fold.index + 1} | {fold.origin:g} | {fold.test_rows:,} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", f"- {result.verdict}"]
    for family in (LIGHTGBM, LINEAR):
        lines.append(
            f"- {FAMILY_TEXT[family]}: scheme `{result.chosen[family].name}` "
            f"(best scheme's ROC-AUC gain over expanding {result.scheme_gains[family].text(3)})"
        )
    if result.linear_tree_gain is not None:
        lines.append(
            f"- linear leaves (`linear_tree`) vs LightGBM: ROC-AUC gain "
            f"{result.linear_tree_gain.text(3)}"
        )
    lines.append(f"- Cadence: {result.cadence_text}.")
    if result.skipped_folds:
        lines.append("- Skipped: " + "; ".join(result.skipped_folds))
    return "\n".join(lines) + "\n"


def backtest_plot(result: BacktestResult, path: Path, title: str | None = None) -> Path:
    """Left: ROC-AUC per fold with 95% CIs; middle: ROC-AUC of frozen models by age; right: what
    the cadence is computed from, the ROC-AUC a frozen model loses against the model retrained
    for the same window, by how much older it is, with the fitted slope and the tolerance."""
    from training.plots import _pyplot, _save

    plt = _pyplot()
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(13.5, 3.6))
    keys = [
        (f"{LIGHTGBM}/{result.chosen[LIGHTGBM].name}", "LightGBM"),
        (f"{LINEAR}/{result.chosen[LINEAR].name}", "logistic"),
        (f"{ONE_RULE}/{EXPANDING.name}", "one rule"),
    ]
    folds = [f.index for f in result.folds]
    for offset, (key, name) in zip((-0.15, 0.0, 0.15), keys, strict=True):
        values = [result.per_fold[key][i]["roc_auc"] for i in folds]
        x = np.array(folds) + 1 + offset
        mid = np.array([v.value for v in values])
        err = np.array([[v.value - v.low for v in values], [v.high - v.value for v in values]])
        left.errorbar(x, mid, yerr=err, fmt="o", capsize=3, label=name, ms=4)
    left.set_xlabel("fold (forward in time)")
    left.set_ylabel("ROC-AUC (95% CI)")
    left.set_xticks([i + 1 for i in folds])
    left.legend(fontsize=8)
    for k in folds:
        pts = [p for p in result.decay_points if p["trained_at_fold"] == k]
        middle.plot([p["age"] for p in pts], [p["roc_auc"] for p in pts], "o-", ms=4, lw=1,
                    label=f"trained at fold {k + 1}")  # fmt: skip
    middle.set_xlabel(f"model age ({result.unit} since its training cut)")
    middle.set_ylabel("ROC-AUC of the frozen model")
    middle.legend(fontsize=7)
    older = [p for p in result.decay_points if p["extra_age"] > 0]
    right.axhline(0.0, color="grey", lw=0.8)
    right.axhline(DECAY_TOLERANCE, color="tab:red", lw=0.8, ls="--",
                  label=f"tolerance {DECAY_TOLERANCE}")  # fmt: skip
    if older:
        right.plot([p["extra_age"] for p in older], [p["loss"] for p in older], "o", ms=4,
                   label="frozen vs retrained (pairs)")  # fmt: skip
        if math.isfinite(result.decay_slope):
            reach = max(p["extra_age"] for p in older)
            if math.isfinite(result.cadence):
                reach = max(reach, result.cadence)
            ages = np.linspace(0.0, reach, 20)
            right.plot(ages, -result.decay_slope * ages, lw=1.2,
                       label=f"fit: {-result.decay_slope:.2g} per {result.unit.rstrip('s')}")  # fmt: skip
        if math.isfinite(result.cadence):
            right.axvline(result.cadence, color="tab:green", lw=0.8, ls=":",
                          label=f"cadence {result.cadence:g} {result.unit}")  # fmt: skip
    right.set_xlabel(f"extra age ({result.unit} older than the retrained model)")
    right.set_ylabel("ROC-AUC lost vs retrained")
    right.legend(fontsize=7)
    fig.suptitle(title or Path(result.source).name, fontsize=10)
    return _save(fig, path)


def _write_outputs(
    result: BacktestResult, data: BacktestInput, settings: Settings, *, track, out_dir
):
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(out_dir) if out_dir is not None else Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        summary = directory / SUMMARY_FILE
        summary.write_text(summary_markdown(result))
        plot = backtest_plot(result, directory / PLOT_FILE)
        if track:
            result.run_id = _log_mlflow(result, data, settings, [summary, plot])
        (directory / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=1))


def _log_mlflow(result: BacktestResult, data: BacktestInput, settings: Settings, files) -> str:
    import mlflow

    from training.distributed import active_client
    from training.tracking import setup_mlflow

    setup_mlflow(settings)
    name = f"backtest {Path(result.source).name}"
    client = active_client()
    with mlflow.start_run(run_name=name) as parent:
        mlflow.set_tags(
            {
                "kind": "backtest",
                # Where the LightGBM fits ran: on Dask they agree with one process only within
                # a tolerance (docs/scale-out.md).
                "fit_engine": "lightgbm.dask" if client is not None else "lightgbm",
                "data_source": result.source,
                "data_digest": data.digest,
                "task": result.task,
                "label": result.label,
                "recommended_family": result.recommended_family,
            }
        )
        mlflow.log_params(
            {
                "folds": len(result.folds),
                "time_unit": result.unit,
                "chosen_window": _param(result.chosen[LIGHTGBM].window),
                "chosen_half_life": _param(result.chosen[LIGHTGBM].half_life),
                "linear_chosen_window": _param(result.chosen[LINEAR].window),
                "linear_chosen_half_life": _param(result.chosen[LINEAR].half_life),
            }
        )
        metrics = {
            "family_gain_roc_auc": result.family_gain.value,
            "family_gain_roc_auc_low": result.family_gain.low,
            "family_gain_roc_auc_high": result.family_gain.high,
            "cadence": result.cadence,
        }
        if math.isfinite(result.decay_slope):
            metrics["decay_slope_roc_auc"] = result.decay_slope
        for key, values in result.overall.items():
            for metric, iv in values.items():
                stem = f"{key.replace('/', '.')}.{metric}"
                metrics |= {stem: iv.value, f"{stem}_low": iv.low, f"{stem}_high": iv.high}
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        mlflow.log_dict(result.to_dict(), RESULT_FILE)
        for path in files:
            mlflow.log_artifact(str(path))
        for fold in result.folds:
            with mlflow.start_run(run_name=f"fold {fold.index + 1}", nested=True):
                mlflow.log_params(
                    {
                        "origin": fold.origin,
                        "end": fold.end if math.isfinite(fold.end) else "end of data",
                        "train_rows": fold.train_rows,
                        "test_rows": fold.test_rows,
                        "test_positives": fold.test_positives,
                    }
                )
                fold_metrics = {}
                for key, by_fold in result.per_fold.items():
                    for metric, iv in by_fold[fold.index].items():
                        stem = f"{key.replace('/', '.')}.{metric}"
                        fold_metrics |= {
                            stem: iv.value,
                            f"{stem}_low": iv.low,
                            f"{stem}_high": iv.high,
                        }
                mlflow.log_metrics({k: v for k, v in fold_metrics.items() if math.isfinite(v)})
        return parent.info.run_id


def _param(value: float | None) -> object:
    return "none" if value is None else value


def latest_backtest(settings: Settings, digest: str, task: str):
    """The latest backtest run (MLflow Run) of the same data (digest) and task, or None."""
    import mlflow

    from training.tracking import setup_mlflow

    experiment_id = setup_mlflow(settings)
    runs = mlflow.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.kind = 'backtest' and tags.data_digest = '{digest}' and tags.task = '{task}'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0] if runs else None


def latest_choice(
    settings: Settings, digest: str, task: str, family: str = LIGHTGBM
) -> tuple[Scheme, str] | None:
    """The scheme the latest backtest of the same data (digest) and task chose for the model
    family (LightGBM, or the linear model), and its run id."""
    run = latest_backtest(settings, digest, task)
    if run is None:
        return None
    params = run.data.params
    prefix = "linear_" if family == LINEAR else ""

    def number(name: str) -> float | None:
        value = params.get(prefix + name, "none")
        return None if value == "none" else float(value)

    scheme = Scheme(window=number("chosen_window"), half_life=number("chosen_half_life"))
    return scheme, run.info.run_id
