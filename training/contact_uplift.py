"""Uplift of the follow-up and the callback offer on contact data, learnt from logged decisions.

The decisions are confounded in logged data: better agents send more follow-ups and also win
more orders, and callbacks are offered only after long waits. A plain comparison of treated and
untreated contacts mixes the decision's effect with who got it. Two things undo that:

- an **exploration log** (``exploration.parquet``): a share of decisions taken by a fair coin,
  flagged per contact. Their assignment probability is known (0.5); they are the only rows on
  which a learnt uplift can be judged without a model of the confounding.
- a **DR-learner** (:mod:`training.uplift`): outcome models for treated and untreated contacts and
  a propensity ``e(x)``, the known 0.5 on randomised rows and a LightGBM model of the logged
  policy on the others (clipped), cross-fitted; the doubly robust pseudo-outcome is regressed by
  one LightGBM booster, which is the registered model (``Booster.predict(x)`` is the uplift).

Judged on the test window's randomised rows by the Qini coefficient (against random targeting and
a T-learner on the same rows) and by a per-row loss whose mean ranks models by their squared error
against the true effect: ``(y* - tau)^2`` with the transformed outcome ``y* = y (t - e)/(e(1 - e))``
(the promotion gate compares models by it). On simulated data the learnt uplift is also compared
with the simulator's true per-contact effect (truth.parquet).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features.decisions import CALLBACK, DECISIONS, FOLLOW_UP, Decision
from features.encoding import encode, fit_encoding
from features.errors import CTOError
from features.settings import Settings
from training import lgbm
from training.calibration import Calibration
from training.tasks import TaskFit
from training.uplift import (
    PROPENSITY_CLIP,
    UpliftParams,
    _fit,
    fit_uplift,
    qini_coefficient,
    random_qini,
)

TASK_DECISION = {d.name: d for d in DECISIONS}
UPLIFT_TASKS = tuple(TASK_DECISION)
RANDOMISED_PROPENSITY = 0.5  # a fair coin
# Below these, an uplift model's test figures are noise: the task is skipped with the counts.
MIN_RANDOMISED = {"train": 200, "test": 100}
MIN_TREATED_SHARE = 0.02
CROSS_FIT_FOLDS = 2
INFORMATIVE_SDS = 1.0
# Small, slow-learning trees: the pseudo-outcome is mostly noise around a weak signal (on 40,000
# simulated contacts these lifted the follow-up uplift's correlation with the true effect from
# 0.50 to 0.65 against UpliftParams' defaults).
CONTACT_UPLIFT_PARAMS = {
    "num_leaves": 7,
    "min_data_in_leaf": 400,
    "rounds": 100,
    "learning_rate": 0.03,
}
LABEL = "converted"
TREATED = "_treated"
RANDOMISED = "_randomised"


def decision_of(task: str) -> Decision:
    return TASK_DECISION[task]


def decision_frame(prepared, decision: Decision) -> pl.DataFrame:
    """Labelled contacts the decision exists for, with the treatment and randomised flags."""
    frame = prepared.frame.filter(pl.col("split").is_not_null() & decision.applies_expr())
    exploration = prepared.exploration
    if exploration is None:
        randomised = pl.lit(False).alias(RANDOMISED)
        frame = frame.with_columns(randomised)
    else:
        frame = frame.join(
            exploration.select("contact_id", pl.col(decision.randomised).alias(RANDOMISED)),
            on="contact_id",
            how="left",
        ).with_columns(pl.col(RANDOMISED).fill_null(False))
    return frame.with_columns(
        (pl.col(decision.treatment).fill_null(0) > 0).alias(TREATED),
        pl.col(LABEL).cast(pl.Int8).alias(LABEL),
    )


def data_gap(task: str, prepared) -> str | None:
    """Why the data cannot train this uplift model (None when it can)."""
    decision = decision_of(task)
    if prepared.exploration is None:
        return (
            "no exploration log (exploration.parquet: contact_id, follow_up_randomised, "
            "callback_randomised): an uplift model needs a share of randomised decisions to be "
            "judged on (simulate with `cto simulate --exploration 0.1`)"
        )
    frame = decision_frame(prepared, decision)
    counts = {
        s: frame.filter((pl.col("split") == s) & pl.col(RANDOMISED)).height
        for s in ("train", "valid", "test")
    }
    counts["train"] += counts.pop("valid")
    treated = float(frame[TREATED].mean() or 0.0) if frame.height else 0.0
    short = [s for s, n in MIN_RANDOMISED.items() if counts[s] < n]
    if short or not MIN_TREATED_SHARE <= treated <= 1 - MIN_TREATED_SHARE:
        return (
            f"{decision.treatment}: {frame.height:,} contacts with the decision, "
            f"{treated:.1%} treated; randomised rows train+valid {counts['train']:,}, test "
            f"{counts['test']:,} (needs {MIN_RANDOMISED['train']:,} / {MIN_RANDOMISED['test']:,})"
        )
    return None


def _nuisances(
    x: np.ndarray, y: np.ndarray, t: np.ndarray, randomised: np.ndarray, params: UpliftParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-fitted mu1, mu0 and e for every row (e known on randomised rows)."""
    rng = np.random.default_rng(params.seed)
    fold = rng.integers(0, CROSS_FIT_FOLDS, len(y))
    mu1, mu0 = np.empty(len(y)), np.empty(len(y))
    e = np.full(len(y), RANDOMISED_PROPENSITY)
    names = [f"f{i}" for i in range(x.shape[1])]

    def fit(rows: np.ndarray, target: np.ndarray):
        return _fit(x[rows], target, "binary", params=params, names=names, categorical=[])

    for k in range(CROSS_FIT_FOLDS):
        out, inn = fold != k, fold == k
        mu1[inn] = fit(out & t, y[out & t]).predict(x[inn], num_threads=params.num_threads)
        mu0[inn] = fit(out & ~t, y[out & ~t]).predict(x[inn], num_threads=params.num_threads)
        logged_out, logged_in = out & ~randomised, inn & ~randomised
        if logged_in.any():
            labels = t[logged_out].astype(float)
            if 0 < labels.mean() < 1:
                e[logged_in] = fit(logged_out, labels).predict(
                    x[logged_in], num_threads=params.num_threads
                )
            else:
                e[logged_in] = labels.mean()
    return mu1, mu0, np.clip(e, *PROPENSITY_CLIP)


def transformed_outcome(y: np.ndarray, t: np.ndarray, e: float = RANDOMISED_PROPENSITY):
    """``y (t - e) / (e (1 - e))``: its mean given x is the true uplift (randomised rows)."""
    return y * (t.astype(float) - e) / (e * (1.0 - e))


def uplift_row_losses(predicted: np.ndarray, y, t, randomised) -> np.ndarray:
    """``(y* - tau)^2`` on randomised rows (NaN elsewhere): ranks models by error vs the truth."""
    loss = (transformed_outcome(np.asarray(y, float), np.asarray(t, bool)) - predicted) ** 2
    return np.where(np.asarray(randomised, bool), loss, np.nan)


def uplift_metrics(uplift: np.ndarray, y, t, randomised) -> dict[str, float]:
    """Qini and the transformed-outcome loss on the randomised rows."""
    r = np.asarray(randomised, bool)
    y, t = np.asarray(y, float), np.asarray(t, bool)
    if r.sum() == 0 or t[r].all() or (~t[r]).all():
        return {"randomised_rows": float(r.sum())}
    return {
        "qini": qini_coefficient(uplift[r], y[r], t[r]),
        "uplift_loss": float(np.nanmean(uplift_row_losses(uplift, y, t, r))),
        "randomised_rows": float(r.sum()),
        "mean_uplift": float(np.mean(uplift)),
        "randomised_effect": float(y[r & t].mean() - y[r & ~t].mean()),
    }


def _truth_agreement(test: pl.DataFrame, truth, decision: Decision, scores) -> dict[str, object]:
    if truth is None or decision.truth_column not in truth.columns:
        return {}
    true = (
        test.select("contact_id")
        .join(truth.select("contact_id", decision.truth_column), on="contact_id", how="left")[
            decision.truth_column
        ]
        .cast(pl.Float64)
        .to_numpy()
    )
    known = np.isfinite(true)
    if known.sum() < 10 or np.std(true[known]) == 0:
        return {}
    out: dict[str, object] = {"true_mean_effect": float(true[known].mean())}
    for name, values in scores.items():
        v = values[known]
        out[f"{name}_truth_pearson"] = float(np.corrcoef(v, true[known])[0, 1])
        ranks = np.argsort(np.argsort(v)), np.argsort(np.argsort(true[known]))
        out[f"{name}_truth_spearman"] = float(np.corrcoef(*ranks)[0, 1])
        out[f"{name}_mean_uplift"] = float(v.mean())
    return out


def fit_contact_uplift(
    task: str,
    prepared,
    settings: Settings,
    *,
    params: UpliftParams | None = None,
) -> TaskFit:
    """Fit the DR-learner of one decision; judge it on the test window's randomised rows."""
    decision = decision_of(task)
    gap = data_gap(task, prepared)
    if gap is not None:
        raise CTOError(f"{task}: {gap}")
    params = params or UpliftParams(
        num_threads=settings.num_threads, seed=settings.seed, **CONTACT_UPLIFT_PARAMS
    )
    frame = decision_frame(prepared, decision)
    from features.registry import categorical_features

    names = decision.feature_names()
    categorical = [c for c in categorical_features("after_contact") if c in names]
    fitted = frame.filter(pl.col("split") != "test")
    test = frame.filter(pl.col("split") == "test")
    encoding = fit_encoding(fitted, names, categorical)
    x, x_test = encode(fitted, encoding), encode(test, encoding)
    y, t, r = (
        fitted[LABEL].to_numpy().astype(float),
        fitted[TREATED].to_numpy(),
        fitted[RANDOMISED].to_numpy(),
    )
    y_test, t_test, r_test = (
        test[LABEL].to_numpy().astype(float),
        test[TREATED].to_numpy(),
        test[RANDOMISED].to_numpy(),
    )

    # The outcome and propensity models keep the default learner size (they must follow the
    # confounding, e.g. the logged callback policy's step at two minutes of waiting); only the
    # final regression on the noisy pseudo-outcome is small.
    nuisance = UpliftParams(num_threads=params.num_threads, seed=params.seed)
    mu1, mu0, e = _nuisances(x, y, t, r, nuisance)
    pseudo = mu1 - mu0 + t * (y - mu1) / e - (~t) * (y - mu0) / (1 - e)
    booster = _fit(
        x, pseudo, "regression", params=params, names=list(encoding.feature_names), categorical=[]
    )
    uplift_test = booster.predict(x_test, num_threads=params.num_threads)

    # Baselines on the same rows: a T-learner on all logged rows (ignores the confounding), and
    # the difference in means, treated minus untreated, of the logged (non-randomised) rows.
    t_learner = fit_uplift(x, y, t, learner="t", params=params)
    t_uplift = t_learner.predict(x_test)[0]
    logged = ~r
    naive = float(y[logged & t].mean() - y[logged & ~t].mean()) if logged.any() else float("nan")

    metrics: dict[str, dict[str, object]] = {
        "model": uplift_metrics(uplift_test, y_test, t_test, r_test),
        "baseline_t_learner": uplift_metrics(t_uplift, y_test, t_test, r_test),
    }
    floor_mean, floor_sd = random_qini(y_test[r_test], t_test[r_test], settings.seed)
    metrics["baseline_random"] = {"qini": floor_mean, "qini_sd": floor_sd}
    model_qini = metrics["model"].get("qini", float("-inf"))
    extra: dict[str, object] = {
        "decision": decision.name,
        "treatment": decision.treatment,
        "randomised_column": decision.randomised,
        "learner": "dr",
        "propensity": "known 0.5 on randomised rows, LightGBM model of the logged policy elsewhere",
        "treated_share": float(t.mean()),
        "randomised_rows_fitted": int(r.sum()),
        "naive_logged_difference": naive,
        "randomised_difference_fitted": float(y[r & t].mean() - y[r & ~t].mean())
        if (r & t).any() and (r & ~t).any()
        else float("nan"),
        "model_shape": lgbm.model_shape(booster),
        # Does the model rank the randomised test rows better than random targeting (by more than
        # one sd of random scores' Qini)? Only then does the next action weigh its uplift.
        "informative": bool(model_qini > floor_mean + INFORMATIVE_SDS * floor_sd),
        "informative_rule": f"Qini on randomised test rows > random mean + {INFORMATIVE_SDS} sd",
    }
    extra |= _truth_agreement(
        test, prepared.truth, decision, {"model": uplift_test, "t_learner": t_uplift}
    )
    keep = [
        "contact_id",
        "started_at",
        *encoding.feature_names,
        LABEL,
        decision.treatment,
        RANDOMISED,
    ]
    test_frame = test.with_columns(pl.col(TREATED).cast(pl.Int8).alias(decision.treatment)).select(
        list(dict.fromkeys(keep))
    )
    return TaskFit(
        task=task,
        objective="uplift",
        booster=booster,
        encoding=encoding,
        label=LABEL,
        calibration=Calibration(
            "none", reason="uplift: Booster.predict(x) is the change in P(order), no link"
        ),
        metrics=metrics,
        params=params.lgb_params("regression") | {"rounds": params.rounds, "learner": "dr"},
        train_frame=fitted.select(encoding.feature_names),
        test_frame=test_frame,
        extra=extra,
        plot_data={"uplift": uplift_test, "y_test": y_test, "t_test": t_test, "r_test": r_test},
    )


__all__ = ["CALLBACK", "FOLLOW_UP", "UPLIFT_TASKS", "fit_contact_uplift", "data_gap"]
