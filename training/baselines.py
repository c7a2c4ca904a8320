"""Baselines scored on the same time split as the LightGBM models.

- base rate: the training positive rate (class frequencies for reasons) for everyone;
- logistic regression: the same features, imputed, standardized, categoricals one-hot;
- one rule: the single best feature (by training ROC-AUC), binned, each bin scored with its
  training rate: what a careful analyst with one spreadsheet column would do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from features.encoding import FeatureEncoding

ONE_RULE_BINS = 10
# Pseudo-count pulling sparse bins towards the base rate.
ONE_RULE_PRIOR = 20.0
# Logistic regression is fitted on at most this many training rows: enough for a linear model.
LOGISTIC_MAX_ROWS = 200_000


def logistic_pipeline(encoding: FeatureEncoding, seed: int) -> Pipeline:
    categorical = encoding.categorical_indices
    numeric = [i for i in range(len(encoding.feature_names)) if i not in categorical]
    transformers = [
        (
            "numeric",
            Pipeline(
                [
                    (
                        "impute",
                        SimpleImputer(
                            strategy="median", add_indicator=True, keep_empty_features=True
                        ),
                    ),
                    ("scale", StandardScaler()),
                ]
            ),
            numeric,
        )
    ]
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        (
                            "impute",
                            SimpleImputer(
                                strategy="constant", fill_value=-1.0, keep_empty_features=True
                            ),
                        ),
                        ("onehot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                categorical,
            )
        )
    return Pipeline(
        [
            ("columns", ColumnTransformer(transformers, sparse_threshold=0.0)),
            ("model", LogisticRegression(C=1.0, max_iter=2000, random_state=seed)),
        ]
    )


def _subsample(x: np.ndarray, y: np.ndarray, w: np.ndarray | None, seed: int):
    if len(y) <= LOGISTIC_MAX_ROWS:
        return x, y, w
    keep = np.sort(np.random.default_rng(seed).choice(len(y), LOGISTIC_MAX_ROWS, replace=False))
    return x[keep], y[keep], None if w is None else w[keep]


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    encoding: FeatureEncoding,
    seed: int,
    weight: np.ndarray | None = None,
) -> Pipeline:
    """Binary or multinomial logistic regression (sklearn picks by the number of classes)."""
    x_fit, y_fit, w_fit = _subsample(x, y, weight, seed)
    pipeline = logistic_pipeline(encoding, seed)
    pipeline.fit(x_fit, y_fit, model__sample_weight=w_fit)
    return pipeline


def export_logistic(pipeline: Pipeline, x_fit: np.ndarray) -> dict[str, object]:
    """The fitted :func:`logistic_pipeline` as plain numbers (``training.pyfunc_raw.LinearScorer``).

    ``x_fit``: the encoded rows it was fitted on (their expanded columns' means make the
    contributions' baseline).
    """
    columns = pipeline.named_steps["columns"]
    model = pipeline.named_steps["model"]
    if len(model.classes_) != 2:
        raise ValueError("only a binary logistic regression can be exported")
    parts = {name: (step, list(index)) for name, step, index in columns.transformers_}
    numeric_step, numeric = parts["numeric"]
    imputer, scaler = numeric_step.named_steps["impute"], numeric_step.named_steps["scale"]
    indicators = [] if imputer.indicator_ is None else imputer.indicator_.features_.tolist()
    categorical, categories = [], []
    if "categorical" in parts:
        step, categorical = parts["categorical"]
        categories = [c.tolist() for c in step.named_steps["onehot"].categories_]
    return {
        "n_features": int(x_fit.shape[1]),
        "numeric": [int(i) for i in numeric],
        # An all-missing training column is imputed with 0 (keep_empty_features).
        "medians": np.nan_to_num(imputer.statistics_, nan=0.0).tolist(),
        "indicators": [int(i) for i in indicators],
        "mean": scaler.mean_.tolist(),
        "scale": scaler.scale_.tolist(),
        "categorical": [int(i) for i in categorical],
        "categories": categories,
        "coef": model.coef_[0].tolist(),
        "intercept": float(model.intercept_[0]),
        "column_means": np.asarray(columns.transform(x_fit)).mean(axis=0).tolist(),
    }


@dataclass(frozen=True)
class OneRule:
    """Score = training positive rate of the bin the row's value of one feature falls in."""

    feature_index: int
    feature_name: str
    categorical: bool
    edges: np.ndarray  # numeric: inner bin edges; categorical: the codes seen
    rates: np.ndarray  # one per bin, last entry = missing
    train_auc: float

    def _bins(self, x: np.ndarray) -> np.ndarray:
        column = x[:, self.feature_index]
        missing = ~np.isfinite(column)
        if len(self.edges) == 0 and self.categorical:
            return np.full(len(column), len(self.rates) - 1)
        if self.categorical:
            position = np.searchsorted(self.edges, np.nan_to_num(column, nan=-1.0))
            position = np.clip(position, 0, len(self.edges) - 1)
            known = (~missing) & (self.edges[position] == column)
            bins = np.where(known, position, len(self.rates) - 1)
        else:
            bins = np.digitize(np.nan_to_num(column, nan=0.0), self.edges)
            bins = np.where(missing, len(self.rates) - 1, bins)
        return bins

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.rates[self._bins(x)]


def _rule_for(
    column: np.ndarray, y: np.ndarray, categorical: bool, base_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    missing = ~np.isfinite(column)
    if categorical:
        edges = np.unique(column[~missing])
        n_bins = len(edges)
        position = np.searchsorted(edges, np.nan_to_num(column, nan=-1.0))
        bins = np.where(missing, n_bins, np.clip(position, 0, max(n_bins - 1, 0)))
    else:
        quantiles = np.linspace(0, 1, ONE_RULE_BINS + 1)[1:-1]
        present = column[~missing]
        edges = np.unique(np.quantile(present, quantiles)) if len(present) else np.array([])
        n_bins = len(edges) + 1
        bins = np.where(missing, n_bins, np.digitize(np.nan_to_num(column, nan=0.0), edges))
    counts = np.bincount(bins, minlength=n_bins + 1).astype(np.float64)
    positives = np.bincount(bins, weights=y.astype(np.float64), minlength=n_bins + 1)
    rates = (positives + ONE_RULE_PRIOR * base_rate) / (counts + ONE_RULE_PRIOR)
    return edges, rates


def fit_one_rule(x: np.ndarray, y: np.ndarray, encoding: FeatureEncoding) -> OneRule:
    base_rate = float(y.mean())
    categorical = set(encoding.categorical_indices)
    best: OneRule | None = None
    for index, name in enumerate(encoding.feature_names):
        edges, rates = _rule_for(x[:, index], y, index in categorical, base_rate)
        rule = OneRule(index, name, index in categorical, edges, rates, float("nan"))
        score = rule.predict(x)
        if np.ptp(score) == 0:  # a constant column ranks nothing
            continue
        auc = float(skm.roc_auc_score(y, score))
        if best is None or auc > best.train_auc:
            best = OneRule(index, name, index in categorical, edges, rates, auc)
    if best is None:
        return OneRule(
            0, encoding.feature_names[0], False, np.array([]), np.array([base_rate] * 2), 0.5
        )
    return best
