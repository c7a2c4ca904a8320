"""The MLflow pyfunc of every registered model: raw feature rows in, probabilities out.

``mlflow.pyfunc.load_model("models:/NAME@champion").predict(frame)`` and
``mlflow models predict -m models:/NAME@champion -i rows.csv -t csv`` take the model's features
as a user has them (categories as text, numbers, booleans) and apply the model card's encoding
and calibration, exactly as serving and ``cto score`` do:

- binary models answer one column ``p_order`` (calibrated P(order within the horizon));
- the drop-off reason model one column per reason (``p_<reason>``);
- the contacts-to-order model ``expected_further_contacts``.

A model of the ``linear`` family (``cto train --table --family linear``: the fair logistic
regression) has no Booster file: its card holds the coefficients (``linear``), and
:class:`LinearScorer` answers like a Booster.

This file is shipped inside every model (MLflow ``code_paths``) and loaded by name
(``loader_module="pyfunc_raw"``), so it imports nothing from this project: numpy, pandas and
lightgbm only. The same model directory keeps the ``lightgbm`` flavour for
``mlflow.lightgbm.load_model`` (the native Booster, for SHAP).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

BOOSTER_FILE = "model.lgb"
CARD_FILE = "model_card.json"
LINEAR = "linear"  # the card's "family" of a logistic-regression model


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class LinearScorer:
    """A logistic regression on the encoded matrix, answering like a LightGBM Booster.

    The fair baseline (median imputation with missing indicators and standardisation of numbers,
    categories one-hot, unknown levels -> no column) written out as numbers in the model card, so
    it loads without pickles and scores with numpy: ``predict(x, raw_score=True)`` gives the
    log-odds, ``pred_contrib=True`` each feature's exact contribution (coefficient times its
    columns' distance from their training means; the last column is the mean log-odds), the same
    shape LightGBM's TreeSHAP gives.
    """

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.n_features = int(spec["n_features"])
        self.numeric = np.asarray(spec["numeric"], dtype=np.int64)
        self.medians = np.asarray(spec["medians"], dtype=np.float64)
        self.indicators = np.asarray(spec["indicators"], dtype=np.int64)  # positions in numeric
        self.mean = np.asarray(spec["mean"], dtype=np.float64)
        self.scale = np.asarray(spec["scale"], dtype=np.float64)
        self.categorical = np.asarray(spec["categorical"], dtype=np.int64)
        self.categories = [np.asarray(c, dtype=np.float64) for c in spec["categories"]]
        self.coef = np.asarray(spec["coef"], dtype=np.float64)
        self.intercept = float(spec["intercept"])
        self.column_means = np.asarray(spec["column_means"], dtype=np.float64)
        # The feature each expanded column belongs to (for contributions).
        owners = [*self.numeric, *self.numeric[self.indicators]]
        for index, levels in zip(self.categorical, self.categories, strict=True):
            owners += [index] * len(levels)
        self.owner = np.asarray(owners, dtype=np.int64)

    def columns(self, x: np.ndarray) -> np.ndarray:
        """The expanded matrix the coefficients apply to."""
        x = np.asarray(x, dtype=np.float64)
        numeric = x[:, self.numeric]
        missing = ~np.isfinite(numeric)
        filled = np.where(missing, self.medians, numeric)
        parts = [(np.hstack([filled, missing[:, self.indicators]]) - self.mean) / self.scale]
        for index, levels in zip(self.categorical, self.categories, strict=True):
            codes = np.nan_to_num(x[:, index], nan=-1.0)
            parts.append((codes[:, None] == levels[None, :]).astype(np.float64))
        return np.hstack(parts)

    def predict(self, x, raw_score=False, pred_contrib=False, num_threads=1):  # noqa: ARG002
        z = self.columns(x)
        if pred_contrib:
            weighted = (z - self.column_means) * self.coef
            out = np.zeros((len(z), self.n_features + 1))
            np.add.at(out.T, self.owner, weighted.T)
            out[:, -1] = self.intercept + float(self.column_means @ self.coef)
            return out
        raw = z @ self.coef + self.intercept
        return raw if raw_score else _sigmoid(raw)

    def num_feature(self) -> int:
        return self.n_features


class RawRowModel:
    """A LightGBM Booster (or a :class:`LinearScorer`) plus its model card, predicting on raw
    feature rows."""

    def __init__(self, booster, card: dict) -> None:
        self.booster = booster
        self.card = card
        self.feature_names = list(card["feature_names"])
        self.levels = {k: list(v) for k, v in card.get("category_levels", {}).items()}

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The float matrix in the card's feature order: categories as level index, unknown or
        missing -> NaN (LightGBM's missing), booleans 1/0."""
        missing = [n for n in self.feature_names if n not in frame.columns]
        if missing:
            raise ValueError(f"input lacks feature column(s): {', '.join(missing)}")
        columns = []
        for name in self.feature_names:
            values = frame[name]
            if name in self.levels:
                text = values.astype("string")
                codes = pd.Categorical(text, categories=self.levels[name]).codes.astype(np.float64)
                codes[codes < 0] = np.nan
                columns.append(codes)
            else:
                if values.dtype == object or str(values.dtype) in ("string", "str"):
                    lowered = values.astype("string").str.strip().str.lower()
                    values = lowered.map({"true": 1.0, "false": 0.0}).where(
                        lowered.isin(["true", "false"]), pd.to_numeric(lowered, errors="coerce")
                    )
                columns.append(pd.to_numeric(values, errors="coerce").astype(np.float64).to_numpy())
        return np.column_stack(columns) if columns else np.empty((len(frame), 0))

    def predict(self, model_input, params=None) -> pd.DataFrame:  # noqa: ARG002 (pyfunc API)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        x = self.matrix(frame)
        objective = self.card.get("objective")
        if objective == "binary":
            raw = np.asarray(self.booster.predict(x, raw_score=True, num_threads=1))
            cal = self.card.get("calibration") or {}
            if cal.get("method", "none") != "none":
                raw = float(cal.get("a", 1.0)) * raw + float(cal.get("b", 0.0))
            return pd.DataFrame({"p_order": _sigmoid(raw)}, index=frame.index)
        predicted = np.asarray(self.booster.predict(x, num_threads=1))
        if objective == "multiclass":
            names = [f"p_{c}" for c in self.card.get("class_names") or []]
            return pd.DataFrame(predicted, columns=names, index=frame.index)
        return pd.DataFrame({"expected_further_contacts": predicted}, index=frame.index)


def _load_pyfunc(data_path: str) -> RawRowModel:
    """MLflow's entry point for ``loader_module``: ``data_path`` holds the booster and the card."""
    import lightgbm as lgb

    path = Path(data_path)
    card = json.loads((path / CARD_FILE).read_text())
    if card.get("family") == LINEAR:
        return RawRowModel(LinearScorer(card["linear"]), card)
    # The Booster file sits at the model's root (MLflow copies data_path to <model>/data/<name>),
    # shared with the lightgbm flavour.
    candidates = [path / BOOSTER_FILE, path.parent.parent / BOOSTER_FILE]
    model_file = next((c for c in candidates if c.is_file()), candidates[-1])
    booster = lgb.Booster(model_file=str(model_file))
    return RawRowModel(booster, card)
