"""The champion models as the report uses them: loaded from the MLflow registry by alias.

Each registered version holds the native LightGBM booster and ``model_card.json`` (feature
encoding, calibration, class names, test metrics, data windows, reference quantiles); scoring
follows the card exactly as serving does (:mod:`training.scoring`).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from features.encoding import FeatureEncoding, encode
from features.settings import Settings
from training.scoring import calibration_from_card
from training.tasks import (
    CONTACTS_TO_ORDER,
    CONVERSION_AFTER_CONTACT,
    CONVERSION_ARRIVAL,
    DROPOFF_REASON,
    PREDICTIVE_TASKS,
)
from training.tracking import CARD_FILE, TEST_SET_FILE, model_name, use_store

TASK_TITLES = {
    CONVERSION_ARRIVAL: "Chance to order, scored when a contact arrives",
    CONVERSION_AFTER_CONTACT: "Chance to order, scored after the contact",
    DROPOFF_REASON: "Likely reason a customer did not order",
    CONTACTS_TO_ORDER: "Further contacts until the order",
}


@dataclass
class Champion:
    """One registered champion: its booster, card and registry facts."""

    task: str
    name: str
    version: str
    run_id: str
    registered_at: datetime
    card: dict
    booster: object  # lightgbm.Booster
    num_threads: int

    @property
    def encoding(self) -> FeatureEncoding:
        return FeatureEncoding.from_dict(self.card)

    @property
    def feature_names(self) -> list[str]:
        return list(self.card["feature_names"])

    def matrix(self, features: pl.DataFrame) -> np.ndarray:
        return encode(features, self.encoding)

    def raw_score(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, raw_score=True, num_threads=self.num_threads))

    def probability(self, x: np.ndarray) -> np.ndarray:
        """Binary: calibrated P(order); multiclass: (n, classes); count: expected further contacts."""
        if self.card["objective"] == "binary":
            return calibration_from_card(self.card).apply(self.raw_score(x))
        return np.asarray(self.booster.predict(x, num_threads=self.num_threads))

    def to_probability(self, raw_score: np.ndarray) -> np.ndarray:
        return calibration_from_card(self.card).apply(raw_score)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """TreeSHAP in log-odds, (rows, features + 1); the last column is the expected value."""
        return np.asarray(self.booster.predict(x, pred_contrib=True, num_threads=self.num_threads))

    def test_set(self) -> pl.DataFrame | None:
        """The held-out test rows this version was scored on (features and label), if logged."""
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = mlflow.artifacts.download_artifacts(
                    run_id=self.run_id, artifact_path=TEST_SET_FILE, dst_path=tmp
                )
            except Exception:  # noqa: BLE001 - an older run without the artifact: no test plot
                return None
            return pl.read_parquet(path)


@dataclass(frozen=True)
class ChampionSet:
    champions: dict[str, Champion]
    missing: dict[str, str]  # task -> why it is not there
    tracking_uri: str

    def get(self, task: str) -> Champion | None:
        return self.champions.get(task)


def load_champions(settings: Settings) -> ChampionSet:
    """Every task's champion from the registry; a missing model is recorded, not an error."""
    import mlflow

    client = use_store(settings)
    champions: dict[str, Champion] = {}
    missing: dict[str, str] = {}
    for task in PREDICTIVE_TASKS:
        name = model_name(settings, task)
        try:
            version = client.get_model_version_by_alias(name, settings.champion_alias)
        except mlflow.exceptions.MlflowException:
            missing[task] = f"no version of {name} carries the alias {settings.champion_alias!r}"
            continue
        run_id = version.run_id or (version.tags or {}).get("run_id")
        with tempfile.TemporaryDirectory() as tmp:
            card_path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=CARD_FILE, dst_path=tmp
            )
            card = json.loads(Path(card_path).read_text())
        booster = mlflow.lightgbm.load_model(f"models:/{name}@{settings.champion_alias}")
        champions[task] = Champion(
            task=task,
            name=name,
            version=str(version.version),
            run_id=run_id,
            registered_at=datetime.fromtimestamp(version.creation_timestamp / 1000).astimezone(),
            card=card,
            booster=booster,
            num_threads=settings.num_threads,
        )
    return ChampionSet(champions, missing, settings.tracking_uri)
