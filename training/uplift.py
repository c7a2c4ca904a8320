"""Uplift (treatment-effect) models on LightGBM: T-, S-, X- and DR-learners, and how to judge them.

P(order) is the wrong target for an action: a follow-up or a promotion is worth sending where it
*changes* the outcome, not where the order would come anyway. An uplift model estimates, per row,
``tau(x) = P(y | x, treated) - P(y | x, control)``.

- **T-learner**: one classifier on the treated rows, one on the control rows; ``tau = mu1 - mu0``.
  The baseline every other learner is compared with.
- **S-learner**: one classifier with the treatment as a feature, scored both ways.
- **X-learner** (Kunzel et al. 2019): imputes each treated row's effect as ``y - mu0(x)`` and each
  control row's as ``mu1(x) - y``, regresses both, and blends them with the propensity ``e(x)``.
- **DR-learner** (Kennedy 2020): regresses the doubly robust pseudo-outcome
  ``mu1 - mu0 + t (y - mu1) / e - (1 - t)(y - mu0) / (1 - e)`` with cross-fitting. Unbiased when
  either the outcome models or the propensity are right: the learner for confounded, logged data.

Propensity ``e(x)``: the treated share when the treatment was randomised (``propensity="constant"``),
else a LightGBM classifier of the treatment on the features (``"model"``), clipped to [0.02, 0.98].

Judged on held-out rows by the Qini curve (incremental outcomes as the top-k by uplift are treated)
and the uplift curve; areas are reported *above random targeting*, normalised by n^2 (Qini) and n
(AUUC), so a model that ranks no better than chance scores about 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np

LEARNERS = ("t", "s", "x", "dr")
PROPENSITY_CLIP = (0.02, 0.98)


@dataclass(frozen=True)
class UpliftParams:
    """LightGBM settings of every model inside a learner (small trees: uplift is a weak signal)."""

    num_leaves: int = 15
    min_data_in_leaf: int = 200
    learning_rate: float = 0.05
    rounds: int = 150
    num_threads: int = 1
    seed: int = 42

    def lgb_params(self, objective: str) -> dict[str, object]:
        return {
            "objective": objective,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "learning_rate": self.learning_rate,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
            "lambda_l2": 1.0,
            "feature_fraction": 0.9,
            "feature_fraction_seed": self.seed,
        }


def _fit(
    x: np.ndarray,
    y: np.ndarray,
    objective: str,
    *,
    params: UpliftParams,
    names: list[str],
    categorical: list[str],
) -> lgb.Booster:
    data = lgb.Dataset(
        x,
        label=y,
        feature_name=names,
        categorical_feature=categorical or "auto",
        params={"max_bin": 255, "verbosity": -1},
    )
    return lgb.train(params.lgb_params(objective), data, num_boost_round=params.rounds)


@dataclass
class UpliftModel:
    """A fitted learner: ``predict(x)`` gives (uplift, p_order_treated, p_order_control)."""

    learner: str
    feature_names: list[str]
    categorical: list[str]
    boosters: dict[str, lgb.Booster]
    treated_share: float
    propensity: str
    info: dict[str, object] = field(default_factory=dict)

    def _p(self, name: str, x: np.ndarray) -> np.ndarray:
        return self.boosters[name].predict(x, num_threads=1)

    def outcome(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(y | x, treated) and P(y | x, control)."""
        if self.learner == "s":
            ones = np.column_stack([x, np.ones(len(x))])
            zeros = np.column_stack([x, np.zeros(len(x))])
            return self._p("outcome", ones), self._p("outcome", zeros)
        return self._p("treated", x), self._p("control", x)

    def propensity_of(self, x: np.ndarray) -> np.ndarray:
        if "propensity" in self.boosters:
            return np.clip(self._p("propensity", x), *PROPENSITY_CLIP)
        return np.full(len(x), self.treated_share)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        p1, p0 = self.outcome(x)
        if self.learner in ("t", "s"):
            return p1 - p0, p1, p0
        if self.learner == "x":
            e = self.propensity_of(x)
            tau = e * self._p("tau_control", x) + (1 - e) * self._p("tau_treated", x)
            return tau, p1, p0
        tau = np.mean(
            [
                b.predict(x, num_threads=1)
                for k, b in self.boosters.items()
                if k.startswith("tau_fold")
            ],
            axis=0,
        )
        return tau, p1, p0


def fit_uplift(
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    *,
    learner: str = "t",
    feature_names: list[str] | None = None,
    categorical: list[str] | None = None,
    propensity: str = "constant",
    params: UpliftParams | None = None,
    folds: int = 2,
) -> UpliftModel:
    """Fit one meta-learner. ``x`` numeric (categories as integer codes), ``y`` and ``t`` 0/1."""
    if learner not in LEARNERS:
        raise ValueError(f"learner {learner!r}: expected one of {', '.join(LEARNERS)}")
    if propensity not in ("constant", "model"):
        raise ValueError(f"propensity {propensity!r}: expected 'constant' or 'model'")
    params = params or UpliftParams()
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    t = np.asarray(t).astype(bool)
    if t.all() or (~t).all():
        raise ValueError("the treatment column must have both treated and control rows")
    names = list(feature_names or [f"f{i}" for i in range(x.shape[1])])
    cats = list(categorical or [])
    share = float(t.mean())
    boosters: dict[str, lgb.Booster] = {}

    def fit(xs: np.ndarray, ys: np.ndarray, objective: str = "binary", nm=names) -> lgb.Booster:
        return _fit(xs, ys, objective, params=params, names=nm, categorical=cats)

    if propensity == "model":
        boosters["propensity"] = fit(x, t.astype(float))
    if learner == "s":
        boosters["outcome"] = fit(np.column_stack([x, t]), y, nm=[*names, "_treated"])
    else:
        boosters["treated"] = fit(x[t], y[t])
        boosters["control"] = fit(x[~t], y[~t])
    model = UpliftModel(learner, names, cats, boosters, share, propensity)
    if learner == "x":
        p1, p0 = model.outcome(x)
        boosters["tau_treated"] = fit(x[t], y[t] - p0[t], "regression")
        boosters["tau_control"] = fit(x[~t], p1[~t] - y[~t], "regression")
    elif learner == "dr":
        # Cross-fitting: each fold's pseudo-outcomes come from nuisance models fitted on the other folds.
        rng = np.random.default_rng(params.seed)
        fold = rng.integers(0, folds, len(y))
        pseudo = np.empty(len(y))
        for k in range(folds):
            out, inn = fold != k, fold == k
            mu1 = fit(x[out & t], y[out & t]).predict(x[inn], num_threads=1)
            mu0 = fit(x[out & ~t], y[out & ~t]).predict(x[inn], num_threads=1)
            if propensity == "model":
                e = np.clip(
                    fit(x[out], t[out].astype(float)).predict(x[inn], num_threads=1),
                    *PROPENSITY_CLIP,
                )
            else:
                e = np.full(inn.sum(), share)
            ti, yi = t[inn], y[inn]
            pseudo[inn] = mu1 - mu0 + ti * (yi - mu1) / e - (~ti) * (yi - mu0) / (1 - e)
        for k in range(folds):
            boosters[f"tau_fold{k}"] = fit(x[fold != k], pseudo[fold != k], "regression")
    return model


# --- judging uplift on held-out rows -------------------------------------------------------------


def qini_curve(uplift: np.ndarray, y: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(targeted count k, incremental outcomes Q(k)) as the top-k rows by uplift are treated.

    ``Q(k) = Y_treated(k) - Y_control(k) * N_treated(k) / N_control(k)``: treated outcomes in the
    top k minus what the control rows of the top k say they would have been anyway.
    """
    order = np.argsort(-np.asarray(uplift), kind="stable")
    y, t = np.asarray(y, dtype=float)[order], np.asarray(t).astype(bool)[order]
    n_t, n_c = np.cumsum(t), np.cumsum(~t)
    y_t, y_c = np.cumsum(y * t), np.cumsum(y * ~t)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(n_c > 0, y_t - y_c * n_t / np.maximum(n_c, 1), 0.0)
    k = np.arange(1, len(y) + 1)
    return np.concatenate([[0], k]), np.concatenate([[0.0], q])


def uplift_curve(uplift: np.ndarray, y: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k, (mean_treated(k) - mean_control(k)) * k): the uplift curve of the top-k rows."""
    order = np.argsort(-np.asarray(uplift), kind="stable")
    y, t = np.asarray(y, dtype=float)[order], np.asarray(t).astype(bool)[order]
    n_t, n_c = np.cumsum(t), np.cumsum(~t)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = np.where(
            (n_t > 0) & (n_c > 0),
            np.cumsum(y * t) / np.maximum(n_t, 1) - np.cumsum(y * ~t) / np.maximum(n_c, 1),
            0.0,
        )
    k = np.arange(1, len(y) + 1)
    return np.concatenate([[0], k]), np.concatenate([[0.0], diff * k])


def _area_above_random(k: np.ndarray, q: np.ndarray) -> float:
    random_line = q[-1] * k / k[-1]
    return float(np.trapezoid(q - random_line, k))


def qini_coefficient(uplift: np.ndarray, y: np.ndarray, t: np.ndarray) -> float:
    """Area between the Qini curve and random targeting, divided by n^2 (0 = no better than chance)."""
    k, q = qini_curve(uplift, y, t)
    return _area_above_random(k, q) / float(len(k) - 1) ** 2


def auuc(uplift: np.ndarray, y: np.ndarray, t: np.ndarray) -> float:
    """Area between the uplift curve and random targeting, divided by n^2."""
    k, u = uplift_curve(uplift, y, t)
    return _area_above_random(k, u) / float(len(k) - 1) ** 2


def targeting_value(
    target: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    *,
    value_per_order: float = 10.0,
    cost_per_treatment: float = 0.15,
) -> dict[str, float]:
    """The Starbucks exercise's IRR and NIR of a targeting rule on randomised held-out rows.

    IRR = purchase rate of treated targeted rows - that of control targeted rows.
    NIR = value x purchases of treated targeted - cost x treated targeted - value x purchases of
    control targeted (the treated and control arms are about the same size, so the control arm's
    purchases stand in for what the treated would have bought anyway).
    """
    target, t = np.asarray(target).astype(bool), np.asarray(t).astype(bool)
    y = np.asarray(y, dtype=float)
    tt, ct = target & t, target & ~t
    irr = (y[tt].mean() if tt.any() else 0.0) - (y[ct].mean() if ct.any() else 0.0)
    nir = (
        value_per_order * y[tt].sum()
        - cost_per_treatment * tt.sum()
        - value_per_order * y[ct].sum()
    )
    return {"irr": float(irr), "nir": float(nir), "targeted_share": float(target.mean())}


def evaluate_uplift(uplift: np.ndarray, y: np.ndarray, t: np.ndarray) -> dict[str, float]:
    return {"qini": qini_coefficient(uplift, y, t), "auuc": auuc(uplift, y, t)}


def random_qini(y: np.ndarray, t: np.ndarray, seed: int, draws: int = 20) -> tuple[float, float]:
    """Mean and sd of the Qini coefficient of random scores (the floor a model must clear)."""
    rng = np.random.default_rng(seed)
    values = [qini_coefficient(rng.random(len(y)), y, t) for _ in range(draws)]
    return float(np.mean(values)), float(np.std(values))
