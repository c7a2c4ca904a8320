"""One function per model: fit on the train window, tune on valid, score everything on test.

Each returns a :class:`TaskFit`: the booster, its feature encoding, calibration, test metrics of
the model and of every baseline (and of the oracle on simulated data), and the frames the run
record and the promotion gate need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import polars as pl

from features.encoding import FeatureEncoding, encode, fit_encoding
from features.errors import CTOError
from features.schema import DROPOFF_REASONS
from features.settings import Settings
from training import baselines, lgbm
from training.calibration import Calibration, sigmoid
from training.explain import contributions, driver_recovery, shap_cost
from training.metrics import (
    binary_metrics,
    count_metrics,
    expected_calibration_error,
    multiclass_metrics,
)
from training.schemes import EXPANDING, Scheme, fit_out_of_time, time_as_float

CONVERSION_ARRIVAL = "conversion-arrival"
CONVERSION_AFTER_CONTACT = "conversion-after-contact"
DROPOFF_REASON = "dropoff-reason"
CONTACTS_TO_ORDER = "contacts-to-order"
# Model families of a conversion model (cto train --table --family).
LIGHTGBM = "lightgbm"
LINEAR = "linear"
TASKS = (CONVERSION_ARRIVAL, CONVERSION_AFTER_CONTACT, DROPOFF_REASON, CONTACTS_TO_ORDER)
TASK_MOMENT = {
    CONVERSION_ARRIVAL: "arrival",
    CONVERSION_AFTER_CONTACT: "after_contact",
    DROPOFF_REASON: "after_contact",
    CONTACTS_TO_ORDER: "after_contact",
}
# Promotion compares challenger and champion on this test metric (higher_is_better).
PRIMARY_METRIC = {
    CONVERSION_ARRIVAL: ("roc_auc", True),
    CONVERSION_AFTER_CONTACT: ("roc_auc", True),
    DROPOFF_REASON: ("log_loss", False),
    CONTACTS_TO_ORDER: ("poisson_deviance", False),
    "table": ("roc_auc", True),
}
# Test rows explained for the SHAP summary plot (TreeSHAP costs ~100x a prediction).
SHAP_SUMMARY_ROWS = 3000
# Reason classes: inverse-frequency weights, square-rooted so rare reasons gain recall without
# wrecking the log loss of the common ones.
CLASS_WEIGHT_POWER = 0.5


@dataclass
class TaskFit:
    task: str
    objective: str
    booster: lgb.Booster
    encoding: FeatureEncoding
    label: str
    calibration: Calibration
    metrics: dict[str, dict[str, object]]  # "model", "baseline_*", "oracle*" -> metrics
    params: dict[str, object]
    train_frame: pl.DataFrame
    test_frame: pl.DataFrame  # contact_id, started_at, features, label(s): the promotion window
    class_names: list[str] | None = None
    extra: dict[str, object] = field(default_factory=dict)
    extra_models: dict[str, lgb.Booster] = field(default_factory=dict)
    plot_data: dict[str, object] = field(default_factory=dict)


def _split(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    return frame.filter(pl.col("split") == name)


def predict_binary(
    booster: lgb.Booster, x: np.ndarray, calibration: Calibration, threads: int
) -> np.ndarray:
    return calibration.apply(booster.predict(x, raw_score=True, num_threads=threads))


def fit_binary(
    task: str,
    frame: pl.DataFrame,
    feature_names: list[str],
    categorical: list[str],
    label: str,
    *,
    settings: Settings,
    monotone: dict[str, int] | None = None,
    truth: pl.DataFrame | None = None,
    size: lgbm.ModelSize = lgbm.DEFAULT_SIZE,
    max_rounds: int = lgbm.MAX_ROUNDS,
    scheme: Scheme | None = None,
    scheme_source: str = "default",
    family: str = LIGHTGBM,
) -> TaskFit:
    """Binary conversion model with baselines; ``frame`` carries a ``split`` column.

    ``family="linear"``: the fair logistic regression (fitted on the same rows and weights as
    always) becomes the model (a :class:`training.pyfunc_raw.LinearScorer`); LightGBM is still
    fitted and reported beside it (``lightgbm`` metrics), so the run shows what was given up.

    The training scheme (expanding, sliding window, half-life weights; relative to the test
    window's start) selects and weighs the train and validation rows. LightGBM is early-stopped
    on the validation window, calibrated on its out-of-time scores there, then refitted on train
    and validation together with that number of trees (:func:`training.schemes.fit_out_of_time`):
    the latest labelled rows train the model that goes live. The baselines learn from the same
    rows with the same weights.
    """
    scheme = scheme or EXPANDING
    train, valid, test = (_split(frame, s) for s in ("train", "valid", "test"))
    w_train = w_valid = None
    if scheme != EXPANDING:
        if test.height == 0 or test["started_at"].null_count():
            raise CTOError(
                f"training scheme {scheme.name} needs rows in time order: give a time column"
            )
        cut = float(time_as_float(test["started_at"])[0].min())
        keep_train, w_train = scheme.rows(time_as_float(train["started_at"])[0], cut)
        keep_valid, w_valid = scheme.rows(time_as_float(valid["started_at"])[0], cut)
        train, valid = train.filter(pl.Series(keep_train)), valid.filter(pl.Series(keep_valid))
        if scheme.half_life is None:
            w_train = w_valid = None
        if train.height == 0:
            raise CTOError(
                f"training scheme {scheme.name}: no training rows inside the window; widen it"
            )
    fitted_rows = pl.concat([train, valid], how="vertical_relaxed")
    encoding = fit_encoding(fitted_rows, feature_names, categorical)
    x_train, x_valid, x_test = (encode(f, encoding) for f in (train, valid, test))
    y_train, y_valid, y_test = (f[label].cast(pl.Int8).to_numpy() for f in (train, valid, test))
    params = lgbm.base_params(settings, size) | {"objective": "binary", "metric": "binary_logloss"}
    if monotone:
        params["monotone_constraints"] = lgbm.monotone_vector(encoding, monotone)
        params["monotone_constraints_method"] = "intermediate"
    threads = settings.num_threads
    fitted = fit_out_of_time(
        params,
        x_train,
        y_train,
        t=None,
        known=None,
        weight=w_train,
        encoding=encoding,
        threads=threads,
        max_rounds=max_rounds,
        early_stopping=(x_valid, y_valid, w_valid),
    )
    booster, calibration = fitted.booster, fitted.calibration
    x_all = np.vstack([x_train, x_valid])
    y_all = np.concatenate([y_train, y_valid])
    w_all = None if w_train is None else np.concatenate([w_train, w_valid])
    raw_test = booster.predict(x_test, raw_score=True, num_threads=threads)
    p_test = calibration.apply(raw_test)
    training = scheme.to_params() | {
        "scheme_source": scheme_source,
        "refit_trees": fitted.trees,
        "refit_rows": fitted.refit_rows,
        "early_stopping_rows": fitted.early_stopping_rows,
    }

    model_metrics = binary_metrics(y_test, p_test)
    model_metrics["ece_uncalibrated"] = expected_calibration_error(y_test, sigmoid(raw_test))
    metrics: dict[str, dict[str, object]] = {"model": model_metrics}
    scores: dict[str, np.ndarray] = {"model": p_test}

    base_rate = float(np.average(y_all, weights=w_all))
    scores["baseline_base_rate"] = np.full(len(y_test), base_rate)
    logistic = baselines.fit_logistic(x_all, y_all, encoding, settings.seed, weight=w_all)
    scores["baseline_logistic"] = logistic.predict_proba(x_test)[:, 1]
    rule = baselines.fit_one_rule(x_all, y_all, encoding)
    scores["baseline_one_rule"] = rule.predict(x_test)
    for name in ("baseline_base_rate", "baseline_logistic", "baseline_one_rule"):
        metrics[name] = binary_metrics(y_test, scores[name])
    metrics["baseline_one_rule"]["feature"] = rule.feature_name  # type: ignore[index]

    model_shape = None
    if family == LINEAR:
        from training.pyfunc_raw import LinearScorer

        # The logistic regression is the model; LightGBM is reported beside it.
        metrics["lightgbm"], scores["lightgbm"] = metrics.pop("model"), scores.pop("model")
        booster = LinearScorer(baselines.export_logistic(logistic, x_all))
        calibration = Calibration("none", reason="logistic regression: its own probabilities")
        raw_test = booster.predict(x_test, raw_score=True)
        metrics["model"] = binary_metrics(y_test, calibration.apply(raw_test))
        metrics["model"]["ece_uncalibrated"] = metrics["model"]["ece"]
        scores = {"model": scores["baseline_logistic"], **scores}
        model_shape = {"coefficients": float(len(booster.coef))}
    elif family != LIGHTGBM:
        raise CTOError(f"model family {family!r}: expected {LIGHTGBM} or {LINEAR}")
    training["family"] = family

    extra: dict[str, object] = {"one_rule_feature": rule.feature_name, "training": training}
    if truth is not None and "p_convert" in truth.columns:
        oracle = test.select("contact_id").join(
            truth.select("contact_id", "p_convert"), on="contact_id", how="left"
        )
        p_oracle = oracle["p_convert"].to_numpy()
        if np.isfinite(p_oracle).all():
            scores["oracle"] = p_oracle
            metrics["oracle"] = binary_metrics(y_test, p_oracle)
            extra.update(_hidden_trait_share(test, truth, y_test))

    shap_sample = x_test[: min(len(x_test), SHAP_SUMMARY_ROWS)]
    shap_values = contributions(booster, shap_sample, threads)
    extra["model_shape"] = model_shape or lgbm.model_shape(booster)
    extra["explain_cost"] = shap_cost(booster, x_test)
    raw_sample = booster.predict(shap_sample, raw_score=True, num_threads=threads)
    extra["shap_additivity_max_error"] = float(np.max(np.abs(shap_values.sum(axis=1) - raw_sample)))
    if truth is not None and {"planted_driver", "driver_strength"} <= set(truth.columns):
        extra["driver_recovery"] = _driver_recovery(
            booster, encoding, test=test, x_test=x_test, truth=truth, threads=threads
        )
    keep = ["contact_id", "started_at", *encoding.feature_names, label]
    return TaskFit(
        task=task,
        objective="binary",
        booster=booster,
        encoding=encoding,
        label=label,
        calibration=calibration,
        metrics=metrics,
        params=params | training,
        train_frame=fitted_rows.select(encoding.feature_names),
        test_frame=test.select([c for c in keep if c in test.columns]),
        extra=extra,
        plot_data={"y_test": y_test, "scores": scores, "shap": shap_values, "x_shap": shap_sample},
    )


def _driver_recovery(
    booster: lgb.Booster,
    encoding: FeatureEncoding,
    *,
    test: pl.DataFrame,
    x_test: np.ndarray,
    truth: pl.DataFrame,
    threads: int,
) -> dict[str, object]:
    """Explain the test contacts with a strong planted driver and check the top negative feature."""
    from features.simulate import STRONG_DRIVER

    strong = (
        test.select("contact_id")
        .with_row_index("_row")
        .join(truth.select("contact_id", "driver_strength"), on="contact_id", how="inner")
        .filter(pl.col("driver_strength") <= STRONG_DRIVER)
    )
    rows = strong["_row"].to_numpy()
    shap_values = contributions(booster, x_test[rows], threads)
    return driver_recovery(
        shap_values, list(encoding.feature_names), strong["contact_id"], truth, STRONG_DRIVER
    )


def _hidden_trait_share(
    test: pl.DataFrame, truth: pl.DataFrame, y_test: np.ndarray
) -> dict[str, object]:
    """How much of the oracle's ROC-AUC needs information no feature can carry.

    If the simulator exposes the oracle's probability without the hidden customer traits
    (``p_convert_observable``), score it too: the gap between the two oracles is what hidden
    traits are worth, and the gap between the observable oracle and the model measures modelling.
    """
    from sklearn.metrics import roc_auc_score

    candidates = [
        c for c in truth.columns if c.startswith("p_convert_") and truth.schema[c].is_float()
    ]
    out: dict[str, object] = {}
    if not candidates or not 0 < y_test.sum() < len(y_test):
        return out
    joined = test.select("contact_id").join(
        truth.select("contact_id", *candidates), on="contact_id", how="left"
    )
    for column in candidates:
        values = joined[column].to_numpy()
        if np.isfinite(values).all():
            out[f"oracle_{column}_roc_auc"] = float(roc_auc_score(y_test, values))
    return out


# --- drop-off reason ----------------------------------------------------------------------------


def reason_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Non-converted contacts with a recorded drop-off reason (sparse by nature)."""
    return frame.filter(
        pl.col("split").is_not_null() & ~pl.col("converted") & pl.col("dropoff_label").is_not_null()
    )


def fit_reason(
    frame: pl.DataFrame,
    feature_names: list[str],
    categorical: list[str],
    settings: Settings,
    *,
    truth: pl.DataFrame | None = None,
    size: lgbm.ModelSize = lgbm.DEFAULT_SIZE,
    max_rounds: int = lgbm.MAX_ROUNDS,
) -> TaskFit:
    rows = reason_frame(frame).with_columns(
        pl.col("dropoff_label").cast(pl.String).alias("_reason")
    )
    train = _split(rows, "train")
    present = set(train["_reason"].unique().to_list())
    class_names = [r for r in DROPOFF_REASONS if r in present]
    class_index = {name: i for i, name in enumerate(class_names)}
    # Reasons never seen in training cannot be predicted: those test rows are dropped and counted.
    rows = rows.filter(pl.col("_reason").is_in(class_names)).with_columns(
        pl.col("_reason").replace_strict(class_index, return_dtype=pl.Int32).alias("_class")
    )
    train, valid, test = (_split(rows, s) for s in ("train", "valid", "test"))
    encoding = fit_encoding(train, feature_names, categorical)
    x_train, x_valid, x_test = (encode(f, encoding) for f in (train, valid, test))
    y_train, y_valid, y_test = (f["_class"].to_numpy() for f in (train, valid, test))
    counts = np.bincount(y_train, minlength=len(class_names)).astype(np.float64)
    class_weight = (
        counts.sum() / (len(class_names) * np.maximum(counts, 1.0))
    ) ** CLASS_WEIGHT_POWER
    # One tree per class per round: a higher learning rate keeps the model (and its SHAP cost) small.
    params = lgbm.base_params(settings, size) | {
        "learning_rate": 2 * size.learning_rate,
        "objective": "multiclass",
        "num_class": len(class_names),
        "metric": "multi_logloss",
    }
    booster = lgbm.fit_booster(
        params,
        (x_train, y_train, class_weight[y_train]),
        (x_valid, y_valid, class_weight[y_valid]),
        encoding,
        max_rounds,
    )
    threads = settings.num_threads
    proba = booster.predict(x_test, num_threads=threads)
    metrics: dict[str, dict[str, object]] = {
        "model": multiclass_metrics(y_test, proba, class_names)
    }
    prior = counts / counts.sum()
    metrics["baseline_base_rate"] = multiclass_metrics(
        y_test, np.tile(prior, (len(y_test), 1)), class_names
    )
    logistic = baselines.fit_logistic(x_train, y_train, encoding, settings.seed)
    proba_logistic = np.zeros((len(y_test), len(class_names)))
    proba_logistic[:, logistic.classes_] = logistic.predict_proba(x_test)
    metrics["baseline_logistic"] = multiclass_metrics(y_test, proba_logistic, class_names)
    extra: dict[str, object] = {
        "class_weights": dict(zip(class_names, class_weight.tolist(), strict=True))
    }
    extra["skipped_test_rows_unknown_reason"] = int(
        _split(reason_frame(frame), "test").height - test.height
    )
    if truth is not None and "true_dropoff_reason" in truth.columns:
        oracle = test.select("contact_id", "_class").join(
            truth.select("contact_id", pl.col("true_dropoff_reason").cast(pl.String)),
            on="contact_id",
            how="left",
        )
        oracle_class = (
            oracle["true_dropoff_reason"]
            .replace_strict(class_index, default=-1, return_dtype=pl.Int32)
            .to_numpy()
        )
        one_hot = np.full((len(y_test), len(class_names)), 1e-6)
        known = oracle_class >= 0
        one_hot[np.flatnonzero(known), oracle_class[known]] = 1.0
        metrics["oracle"] = multiclass_metrics(y_test, one_hot, class_names)
        metrics["oracle"].pop("log_loss")  # a hard label has no meaningful log loss
    extra["model_shape"] = lgbm.model_shape(booster)
    keep = ["contact_id", "started_at", *encoding.feature_names, "dropoff_label"]
    return TaskFit(
        task=DROPOFF_REASON,
        objective="multiclass",
        booster=booster,
        encoding=encoding,
        label="dropoff_label",
        calibration=Calibration("none", reason="multiclass softmax output, class-weighted"),
        metrics=metrics,
        params=params,
        train_frame=train.select(encoding.feature_names),
        test_frame=test.select(keep),
        class_names=class_names,
        extra=extra,
        plot_data={"y_test": y_test, "proba": proba},
    )


# --- contacts to order ---------------------------------------------------------------------------


def follow_up_days(settings: Settings) -> int:
    """How long after a contact its journey must be observed before it is a training row.

    One journey gap: a journey that has not ordered within G days of a contact has, more often
    than not, already faded (on the simulated data 99% of order-ending journeys order within
    8.5 days of any of their contacts), and a longer follow-up would empty the test window.
    """
    return settings.journey_gap_days


def contacts_to_order_frame(frame: pl.DataFrame, settings: Settings, windows) -> pl.DataFrame:
    """Contacts whose journey ended in an order within the follow-up, with full follow-up by the cutoff.

    Censoring: a journey still open at a split's cutoff may yet end in an order after more
    contacts. Keeping only the journeys already finished would over-sample short journeys (the
    long ones started near the cutoff are still running). Instead every contact must have
    ``follow_up_days`` of observation before its split's end (``started_at + F <= cutoff``), and
    the target is defined within that window: further contacts until an order placed within F
    days. Every contact then has the same chance to show a long journey.
    """
    from training.data import split_expr

    follow = pl.duration(days=follow_up_days(settings))
    return (
        frame.lazy()
        .drop("split")
        .with_columns((pl.col("started_at") + follow).alias("_follow_up_until"))
        .with_columns(split_expr(windows, known_at="_follow_up_until"))
        .filter(
            pl.col("split").is_not_null()
            & pl.col("journey_converted")
            & (pl.col("journey_order_at") <= pl.col("_follow_up_until"))
        )
        .with_columns(
            (pl.col("contacts_to_order") - 1).cast(pl.Float64).alias("further_contacts"),
            pl.col("time_to_order_hours").clip(0.0, None).log1p().alias("_log_hours"),
        )
        .collect()
    )


def journey_hazard(frame: pl.DataFrame, max_contacts: int = 10) -> list[dict[str, float]]:
    """Discrete-time survival view of journeys (training window), censoring open ones.

    At journey contact k: ``at_risk`` journeys reached k; ``orders`` ended in an order right
    after contact k; ``gap_ends`` ended without one; ``censored`` were still open at the data's
    end. ``hazard_order = orders / at_risk``; ``p_order_from_here`` is the chance a journey that
    reached k ends in an order at all (cumulative incidence under both competing endings).
    """
    journeys = (
        frame.lazy()
        .filter(pl.col("split") == "train")
        .group_by("journey_id")
        .agg(
            pl.col("journey_contacts").first().cast(pl.Int64).alias("length"),
            pl.col("journey_converted").first().alias("ordered"),
            pl.col("journey_open").first().alias("open"),
        )
        .with_columns(pl.col("length").clip(None, max_contacts))
        .collect()
    )
    table = (
        pl.DataFrame({"k": np.arange(1, max_contacts + 1)})
        .lazy()
        .join(journeys.lazy(), how="cross")
        .group_by("k")
        .agg(
            (pl.col("length") >= pl.col("k")).sum().alias("at_risk"),
            ((pl.col("length") == pl.col("k")) & pl.col("ordered")).sum().alias("orders"),
            ((pl.col("length") == pl.col("k")) & ~pl.col("ordered") & ~pl.col("open"))
            .sum()
            .alias("gap_ends"),
            ((pl.col("length") == pl.col("k")) & pl.col("open")).sum().alias("censored"),
        )
        .sort("k")
        .with_columns(
            (pl.col("orders") / pl.col("at_risk")).fill_nan(0.0).alias("hazard_order"),
            (pl.col("gap_ends") / pl.col("at_risk")).fill_nan(0.0).alias("hazard_gap"),
        )
        .collect()
    )
    # Cumulative incidence from k onwards, computed backwards over at most max_contacts steps.
    h_order = table["hazard_order"].to_numpy()
    h_gap = table["hazard_gap"].to_numpy()
    p_from = np.zeros(len(h_order))
    running = 0.0
    for i in range(len(h_order) - 1, -1, -1):
        stay = max(0.0, 1.0 - h_order[i] - h_gap[i])
        running = h_order[i] + stay * running
        p_from[i] = running
    return table.with_columns(pl.Series("p_order_from_here", p_from)).to_dicts()


def fit_contacts_to_order(
    frame: pl.DataFrame,
    feature_names: list[str],
    categorical: list[str],
    settings: Settings,
    windows,
    *,
    size: lgbm.ModelSize = lgbm.DEFAULT_SIZE,
    max_rounds: int = lgbm.MAX_ROUNDS,
) -> TaskFit:
    """Poisson LightGBM on further contacts until the order; a second booster for the hours."""
    rows = contacts_to_order_frame(frame, settings, windows)
    train, valid, test = (_split(rows, s) for s in ("train", "valid", "test"))
    empty = [
        name
        for name, part in (("train", train), ("valid", valid), ("test", test))
        if part.height == 0
    ]
    if empty:
        raise CTOError(
            f"contacts-to-order: no contacts with {follow_up_days(settings)} days of follow-up in the "
            f"{', '.join(empty)} window(s); the data span is too short for this model"
        )
    encoding = fit_encoding(train, feature_names, categorical)
    x_train, x_valid, x_test = (encode(f, encoding) for f in (train, valid, test))
    y_train, y_valid, y_test = (f["further_contacts"].to_numpy() for f in (train, valid, test))
    params = lgbm.base_params(settings, size) | {"objective": "poisson", "metric": "poisson"}
    booster = lgbm.fit_booster(
        params, (x_train, y_train, None), (x_valid, y_valid, None), encoding, max_rounds
    )
    threads = settings.num_threads
    predicted = booster.predict(x_test, num_threads=threads)
    metrics: dict[str, dict[str, object]] = {"model": count_metrics(y_test, predicted)}
    metrics["baseline_mean"] = count_metrics(y_test, np.full(len(y_test), y_train.mean()))

    hours_params = lgbm.base_params(settings, size) | {"objective": "regression", "metric": "l2"}
    h_train, h_valid, h_test = (f["_log_hours"].to_numpy() for f in (train, valid, test))
    hours_booster = lgbm.fit_booster(
        hours_params, (x_train, h_train, None), (x_valid, h_valid, None), encoding, max_rounds
    )
    hours_predicted = np.expm1(hours_booster.predict(x_test, num_threads=threads))
    hours_actual = np.expm1(h_test)
    metrics["hours_model"] = {
        "mae_hours": float(np.mean(np.abs(hours_actual - hours_predicted))),
        "median_ae_hours": float(np.median(np.abs(hours_actual - hours_predicted))),
    }
    median_train_hours = float(np.median(np.expm1(h_train)))
    metrics["hours_baseline_median"] = {
        "mae_hours": float(np.mean(np.abs(hours_actual - median_train_hours))),
        "median_ae_hours": float(np.median(np.abs(hours_actual - median_train_hours))),
    }
    keep = ["contact_id", "started_at", *encoding.feature_names, "further_contacts", "_log_hours"]
    return TaskFit(
        task=CONTACTS_TO_ORDER,
        objective="poisson",
        booster=booster,
        encoding=encoding,
        label="further_contacts",
        calibration=Calibration("none", reason="count model: exp(raw score) is the expected count"),
        metrics=metrics,
        params=params,
        train_frame=train.select(encoding.feature_names),
        test_frame=test.select(keep),
        extra={
            "follow_up_days": follow_up_days(settings),
            "journey_hazard": journey_hazard(frame),
            "model_shape": lgbm.model_shape(booster),
            "hours_model_shape": lgbm.model_shape(hours_booster),
        },
        extra_models={"time_to_order_hours": hours_booster},
        plot_data={"y_test": y_test, "predicted": predicted},
    )
