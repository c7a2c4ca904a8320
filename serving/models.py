"""Load the champion models from the MLflow registry, and notice when the champion changes.

A :class:`ModelBundle` is immutable: the service swaps the whole bundle in one assignment when a new
champion appears, so a request always scores with one consistent set of models.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from features.encoding import CardEncoder
from features.errors import CTOError
from features.settings import Settings
from serving.explain import Reference

log = logging.getLogger("cto.serving")

# Roles the service fills, and the registered model name suffix of each.
CONVERSION_ARRIVAL = "conversion-arrival"
CONVERSION_AFTER_CONTACT = "conversion-after-contact"
DROPOFF_REASON = "dropoff-reason"
CONTACTS_TO_ORDER = "contacts-to-order"
FOLLOW_UP_UPLIFT = "follow-up-uplift"
CALLBACK_UPLIFT = "callback-uplift"
# Answer field per uplift task (features.decisions names the decisions).
UPLIFT_TASKS = {FOLLOW_UP_UPLIFT: "follow_up", CALLBACK_UPLIFT: "callback"}
REQUIRED_TASKS = (CONVERSION_ARRIVAL, CONVERSION_AFTER_CONTACT)
OPTIONAL_TASKS = (DROPOFF_REASON, CONTACTS_TO_ORDER, *UPLIFT_TASKS)
TASKS = REQUIRED_TASKS + OPTIONAL_TASKS
CONVERSION_TASK = {"arrival": CONVERSION_ARRIVAL, "after_contact": CONVERSION_AFTER_CONTACT}
CARD_FILE = "model_card.json"


@dataclass(frozen=True)
class LoadedModel:
    task: str
    name: str
    version: str
    alias: str
    run_id: str
    booster: lgb.Booster
    card: dict[str, Any]
    encoder: CardEncoder
    references: dict[str, Reference | None]
    category_shares: dict[str, dict[str, float]]
    class_names: tuple[str, ...] | None
    calibration_a: float
    calibration_b: float
    rates: Any = None  # features.rates.RateTables from the version's rates.parquet, or None
    # Why the data the model learnt from differs from the contract this service serves, when
    # CTO_ALLOW_OTHER_DATA let it load anyway (every answer names it); None when it does not.
    data_mismatch: str | None = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.encoder.feature_names

    def probability(self, raw_score: np.ndarray) -> np.ndarray:
        """Calibrated probability from the raw log-odds (the card's Platt mapping, or the sigmoid)."""
        return 1.0 / (1.0 + np.exp(-(self.calibration_a * raw_score + self.calibration_b)))


@dataclass(frozen=True)
class ModelBundle:
    models: dict[str, LoadedModel]
    loaded_at: float = field(default_factory=time.time)

    def rates_for(self, moment: str) -> Any:
        """The rate tables the moment's conversion model was trained with (features share them)."""
        return self.models[CONVERSION_TASK[moment]].rates

    def versions(self) -> dict[str, str]:
        return {task: model.version for task, model in self.models.items()}

    def get(self, task: str) -> LoadedModel | None:
        return self.models.get(task)

    def data_mismatches(self) -> dict[str, str]:
        """Models served although they learnt from other data (CTO_ALLOW_OTHER_DATA), and how."""
        return {t: m.data_mismatch for t, m in self.models.items() if m.data_mismatch}


def registered_name(settings: Settings, task: str) -> str:
    return f"{settings.model_prefix}-{task}"


def _client(settings: Settings) -> Any:
    import mlflow
    from mlflow.tracking import MlflowClient

    # models:/ URIs resolve through the process-wide registry, so point it at ours too. Both are
    # compared: a shell's MLFLOW_REGISTRY_URI may name another store while the tracking URI agrees.
    if mlflow.get_tracking_uri() != settings.tracking_uri:
        mlflow.set_tracking_uri(settings.tracking_uri)
    if mlflow.get_registry_uri() != settings.tracking_uri:
        mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def champion_versions(settings: Settings) -> dict[str, str]:
    """Registered version behind the alias, per task (tasks without one are left out)."""
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    versions: dict[str, str] = {}
    for task in TASKS:
        try:
            version = client.get_model_version_by_alias(
                registered_name(settings, task), settings.champion_alias
            )
        except MlflowException:
            continue
        versions[task] = str(version.version)
    return versions


def check_feature_set(model: str, card: dict[str, Any]) -> None:
    """The model was trained on the features this service computes, or it is not served.

    The card names the feature set (name, version, digest) the model was trained on; a model of
    another set would read columns this code computes differently, or not at all (once a
    KeyError and a 500 on every request).
    """
    from features.registry import FEATURE_SET

    trained = card.get("feature_set") or {}
    if trained.get("name") != FEATURE_SET.name or trained.get("digest") != FEATURE_SET.digest:
        raise CTOError(
            f"{model}: trained on feature set {trained.get('name')} v{trained.get('version')} "
            f"(digest {trained.get('digest')}), this service computes {FEATURE_SET.name} "
            f"v{FEATURE_SET.version} (digest {FEATURE_SET.digest}): retrain and promote, or serve "
            "it with the code it was trained with"
        )
    known = {f.name for f in FEATURE_SET.features}
    missing = [f for f in card["feature_names"] if f not in known]
    if missing:
        raise CTOError(f"{model}: features not computed by this service: {', '.join(missing[:5])}")


def contract_schema() -> dict[str, dict[str, str]]:
    """The tables and column types of the data contract the service computes features from."""
    from features.schema import CONTACTS, CUSTOMERS, ORDERS

    return {
        t.name: {c.name: str(c.dtype) for c in t.columns} for t in (CONTACTS, ORDERS, CUSTOMERS)
    }


def training_data_mismatch(card: dict[str, Any]) -> str | None:
    """How the data the model learnt from (the card's ``data``) differs from the contract served.

    A one-row-per-contact table model reads columns the service never receives; a model trained on
    contract tables with other or retyped columns (an importer's extra lead columns, another
    contract version) learnt from values the service cannot give it. None when the card's tables
    are contract tables (a table the data did not have, e.g. customers, is fine) or the card
    predates the ``data`` block.
    """
    trained = card.get("data")
    if not trained:
        return None
    kind = trained.get("source_kind", "unknown")
    if kind == "table":
        return f"learnt from a one-row-per-contact table ({trained.get('source', '?')}), not the contract's tables"
    contract = contract_schema()
    problems = []
    for table, columns in sorted((trained.get("schema") or {}).items()):
        expected = contract.get(table)
        if expected is None:
            problems.append(f"table {table} is not in the contract")
            continue
        extra = sorted(set(columns) - set(expected))
        retyped = sorted(c for c in columns if c in expected and columns[c] != expected[c])
        missing = sorted(set(expected) - set(columns))
        problems += [f"{table}.{c} not in the contract" for c in extra[:3]]
        problems += [f"{table}.{c} typed {columns[c]}, contract {expected[c]}" for c in retyped[:3]]
        problems += [f"{table}.{c} missing" for c in missing[:3]]
    if problems:
        return f"{kind} data whose schema differs from the contract: {'; '.join(problems)}"
    return None


def check_training_data(settings: Settings, model: str, card: dict[str, Any]) -> str | None:
    """Refuse a model that learnt from other data than the contract served, unless allowed.

    Allowed (``CTO_ALLOW_OTHER_DATA``), the difference is logged and returned, and every answer
    the model gives names it.
    """
    mismatch = training_data_mismatch(card)
    if mismatch is None:
        return None
    if not settings.allow_other_data:
        raise CTOError(
            f"{model}: trained on other data than the contract this service serves ({mismatch}); "
            "train it on contract data (cto train DATA_DIR), or set CTO_ALLOW_OTHER_DATA=true to "
            "serve it marked in every answer"
        )
    log.warning(
        "%s: serving a model trained on other data (CTO_ALLOW_OTHER_DATA): %s", model, mismatch
    )
    return mismatch


def check_model_file(model: str, path: Path) -> None:
    """A LightGBM text model whose trees are all there, checked before LightGBM parses it.

    LightGBM aborts the whole process (std::terminate, from its parallel tree parser) on a
    truncated model file, which would take the serving worker down with it. The header lists
    every tree's size in characters; the trees between ``Tree=0`` and ``end of trees`` must add
    up to exactly that.
    """
    if not path.is_file():
        return
    text = path.read_text(errors="replace")
    header = re.search(r"^tree_sizes=(.*)$", text, re.MULTILINE)
    if header is None:
        return  # an older format without sizes: LightGBM's own checks only
    start, end = text.find("Tree=0"), text.find("end of trees")
    sizes = [int(size) for size in header.group(1).split()]
    if start < 0 or end < 0 or end - start != sum(sizes):
        raise CTOError(
            f"{model}: model file truncated or corrupt (its trees do not match its header)"
        )


def check_tracking_store(uri: str) -> None:
    """A tracking URI that names a missing SQLite file is a typo, not an empty registry.

    MLflow would create the file and the service would answer 503 for ever; fail at start.
    """
    prefix = "sqlite:///"
    if uri.startswith(prefix) and uri != "sqlite:///:memory:":
        path = Path(uri.removeprefix(prefix))
        if not path.is_file():
            raise CTOError(
                f"tracking store {uri} does not exist: check CTO_TRACKING_URI / --tracking-uri "
                "(or train first: cto train)"
            )
    elif "://" not in uri and not Path(uri).exists():
        raise CTOError(f"tracking store {uri} does not exist: check CTO_TRACKING_URI")


def _load_booster(model_dir: Path) -> lgb.Booster:
    import mlflow.lightgbm

    model = mlflow.lightgbm.load_model(str(model_dir))
    # A model logged through the sklearn wrapper still scores through its native Booster.
    booster = getattr(model, "booster_", model)
    if not isinstance(booster, lgb.Booster):
        raise CTOError(f"{model_dir}: expected a LightGBM model, found {type(model).__name__}")
    return booster


def _references(
    card: dict[str, Any],
) -> tuple[dict[str, Reference | None], dict[str, dict[str, float]]]:
    references: dict[str, Reference | None] = {}
    shares: dict[str, dict[str, float]] = {}
    for name, ref in (card.get("reference_quantiles") or {}).items():
        if ref.get("kind") == "categorical":
            shares[name] = dict(zip(ref["levels"], ref["shares"], strict=True))
        else:
            levels = [p / 100.0 for p in ref["percentiles"]]
            references[name] = Reference.from_lists(levels, ref["values"])
    return references, shares


def _calibration(card: dict[str, Any]) -> tuple[float, float]:
    calibration = card.get("calibration") or {}
    if calibration.get("method") == "platt":
        return float(calibration["a"]), float(calibration["b"])
    return 1.0, 0.0


def load_model(settings: Settings, task: str, version: str, workdir: Path) -> LoadedModel:
    import mlflow.artifacts

    name = registered_name(settings, task)
    client = _client(settings)
    model_version = client.get_model_version(name, version)
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}",
            dst_path=str(workdir / f"{task}-{version}"),
            tracking_uri=settings.tracking_uri,
        )
    )
    card_path = local / CARD_FILE
    if not card_path.is_file():
        card_path = Path(
            mlflow.artifacts.download_artifacts(
                run_id=model_version.run_id,
                artifact_path=CARD_FILE,
                dst_path=str(workdir / f"{task}-{version}-run"),
                tracking_uri=settings.tracking_uri,
            )
        )
    try:
        card = json.loads(card_path.read_text())
        card["feature_names"]  # noqa: B018 (a card without its feature list is unusable)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CTOError(f"{name} v{version}: model card unreadable ({type(exc).__name__})") from None
    data_mismatch = check_training_data(settings, f"{name} v{version}", card)
    check_feature_set(f"{name} v{version}", card)
    check_model_file(f"{name} v{version}", local / "model.lgb")
    try:
        booster = _load_booster(local)
    except CTOError:
        raise
    except Exception as exc:  # a corrupt or truncated model file
        raise CTOError(
            f"{name} v{version}: model unreadable ({type(exc).__name__}: {exc})"
        ) from None
    encoder = CardEncoder(card["feature_names"], card.get("category_levels") or {})
    if booster.num_feature() != len(encoder.feature_names):
        raise CTOError(
            f"{name} v{version}: the booster reads {booster.num_feature()} features, the card lists "
            f"{len(encoder.feature_names)}"
        )
    references, shares = _references(card)
    a, b = _calibration(card)
    class_names = tuple(card["class_names"]) if card.get("class_names") else None
    rates_path = local / RATES_FILE
    if not rates_path.is_file():
        log.warning("%s v%s: no %s; rate features are null", name, version, RATES_FILE)
    return LoadedModel(
        task=task,
        name=name,
        version=str(version),
        alias=settings.champion_alias,
        run_id=model_version.run_id,
        booster=booster,
        card=card,
        encoder=encoder,
        references=references,
        category_shares=shares,
        class_names=class_names,
        calibration_a=a,
        calibration_b=b,
        rates=online_rates(pl.read_parquet(rates_path)) if rates_path.is_file() else None,
        data_mismatch=data_mismatch,
    )


RATES_FILE = "rates.parquet"
# The service applies the latest rates to every contact it scores, whatever its time: a replayed
# contact from before the training data's end must not fall back to "no rate known yet".
_RATES_VALID_FROM = datetime(1970, 1, 1, tzinfo=UTC)


def online_rates(
    latest: pl.DataFrame, horizon_days: int = 7, prior_strength: float | None = None
) -> Any:
    """RateTables for online scoring from a model's ``rates.parquet`` (latest rate per key).

    ``rates.parquet`` (training.tracking.latest_rates_frame): rate_table, key, label_known_at,
    outcomes, conversions, rate; rate_table ``global`` holds the prior. Every rate is made valid
    from the epoch on, so :func:`features.rates.join_rates` finds it for any contact.
    """
    from features.rates import DEFAULT_PRIOR_STRENGTH, RateTables

    prior_strength = DEFAULT_PRIOR_STRENGTH if prior_strength is None else prior_strength
    valid_from = pl.lit(_RATES_VALID_FROM).cast(latest.schema["label_known_at"])
    rows = latest.with_columns(valid_from.alias("label_known_at"))
    tables = {
        name: rows.filter(pl.col("rate_table") == name).drop("rate_table").sort("key")
        for name in rows["rate_table"].unique().to_list()
        if name != "global"
    }
    global_rate = rows.filter(pl.col("rate_table") == "global").drop("rate_table", "key")
    # rates.parquet does not record the smoothing strength; training uses the default.
    return RateTables(
        horizon_days=horizon_days,
        prior_strength=prior_strength,
        tables=tables,
        global_rate=global_rate,
    )


def load_bundle(settings: Settings, versions: dict[str, str] | None = None) -> ModelBundle:
    """Every champion model (and the rate tables) from the registry; fails if a required one is missing."""
    versions = champion_versions(settings) if versions is None else versions
    missing = [registered_name(settings, t) for t in REQUIRED_TASKS if t not in versions]
    if missing:
        raise CTOError(
            f"no model with alias {settings.champion_alias!r} for {', '.join(missing)} in "
            f"{settings.tracking_uri}; train and promote first (cto train)"
        )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cto-models-") as tmp:
        workdir = Path(tmp)
        models = {task: load_model(settings, task, v, workdir) for task, v in versions.items()}
    log.info(
        "loaded %s in %.1f s",
        ", ".join(f"{m.name} v{m.version}" for m in models.values()),
        time.perf_counter() - started,
    )
    return ModelBundle(models=models)


def nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)
