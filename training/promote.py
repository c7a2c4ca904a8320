"""The promotion gate: a challenger takes the champion alias only if it beats the champion on the
same held-out window, beyond noise.

Both models are re-scored on the challenger's test window (``test_set.parquet`` in the
challenger's run, features as the challenger's data produced them), so the comparison never
mixes windows. The gain on the primary metric gets a paired bootstrap interval (both models
scored on the same resamples of the window): the challenger is promoted only if the interval's
lower end is above ``settings.promotion_margin`` (0 by default). A gain inside the noise of the
window keeps the champion. The decision, both scores and the interval are logged to the
challenger's run. The first version of a model becomes champion without a contest.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from features.errors import CTOError
from features.settings import Settings
from training.intervals import Interval, paired_gain, paired_loss_gain
from training.tasks import PRIMARY_METRIC, TASKS
from training.tracking import CARD_FILE, TEST_SET_FILE, model_name, setup_mlflow

# Bootstrap resamples of the test window for the interval of the gain.
GATE_BOOTSTRAP = 500


@dataclass(frozen=True)
class PromotionDecision:
    model_name: str
    challenger_version: str
    champion_version: str | None  # the champion before the decision
    promoted: bool
    metric: str
    higher_is_better: bool
    challenger_score: float | None
    champion_score: float | None
    test_rows: int
    reason: str
    gain: float | None = None  # challenger minus champion, oriented so that positive is better
    gain_low: float | None = None  # 95% paired bootstrap interval of the gain
    gain_high: float | None = None
    margin: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def resolve_model_name(task_or_model_name: str, settings: Settings) -> str:
    return (
        model_name(settings, task_or_model_name)
        if task_or_model_name in TASKS
        else task_or_model_name
    )


def _version_run_id(client, name: str, version: str) -> str:
    mv = client.get_model_version(name, version)
    if mv.run_id:
        return mv.run_id
    tag = (mv.tags or {}).get("run_id")
    if not tag:
        raise CTOError(f"{name} version {version} has no run to read its card and test window from")
    return tag


def _load(run_id: str, artifact: str, directory: Path) -> Path:
    import mlflow

    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact, dst_path=str(directory)
        )
    )


def _predictions(
    name: str, version: str, card: dict, test: pl.DataFrame, settings: Settings
) -> np.ndarray:
    from training.scoring import load_native, predict

    # Whatever the family (LightGBM or the linear model): both score the same window.
    booster = load_native(f"models:/{name}/{version}", card)
    missing = [f for f in card["feature_names"] if f not in test.columns]
    if missing:
        raise CTOError(
            f"{name} version {version} needs feature(s) {missing} absent from the challenger's test "
            "window: the feature sets differ, compare them by hand"
        )
    return predict(booster, card, test, settings.num_threads)


def row_losses(card: dict, test: pl.DataFrame, predicted: np.ndarray) -> np.ndarray:
    """Per-row loss whose mean is the card's primary metric (log loss or Poisson deviance)."""
    label = card["label"]
    if card["objective"] == "multiclass":
        index = {n: i for i, n in enumerate(card["class_names"])}
        y = test[label].cast(pl.String).replace_strict(index, default=-1, return_dtype=pl.Int64)
        y = y.to_numpy()
        proba = np.clip(predicted, 1e-7, 1.0)
        proba = proba / proba.sum(axis=1, keepdims=True)
        chosen = np.where(y >= 0, proba[np.arange(len(y)), np.clip(y, 0, None)], np.nan)
        return -np.log(chosen)
    y = test[label].cast(pl.Float64).to_numpy()
    mu = np.clip(predicted, 1e-6, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2.0 * (np.where(y > 0, y * np.log(y / mu), 0.0) - (y - mu))


def gate(
    y_or_losses: tuple[np.ndarray, np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray],
    metric: str,
    margin: float,
    seed: int,
    n_boot: int = GATE_BOOTSTRAP,
) -> tuple[bool, Interval]:
    """(promote?, interval of the gain): promote only if the whole 95% CI is above ``margin``.

    Binary metrics take (y, challenger probabilities, champion probabilities); loss metrics take
    (challenger per-row losses, champion per-row losses) on the same rows.
    """
    if len(y_or_losses) == 3:
        y, challenger, champion = y_or_losses
        gain = paired_gain(y, challenger, champion, metric, n_boot=n_boot, seed=seed)
    else:
        challenger_loss, champion_loss = y_or_losses
        both = np.isfinite(challenger_loss) & np.isfinite(champion_loss)
        gain = paired_loss_gain(
            challenger_loss[both], champion_loss[both], n_boot=n_boot, seed=seed
        )
    return bool(gain.low > margin), gain


def promote(task_or_model_name: str, version: str | int, settings: Settings) -> PromotionDecision:
    """Give ``version`` the champion alias if it beats the current champion on its own test window."""
    import mlflow

    setup_mlflow(settings)
    client = mlflow.MlflowClient()
    name = resolve_model_name(task_or_model_name, settings)
    version = str(version)
    alias = settings.champion_alias
    try:
        client.get_model_version(name, version)
    except mlflow.exceptions.MlflowException as exc:
        raise CTOError(f"no registered model {name!r} version {version}") from exc
    challenger_run = _version_run_id(client, name, version)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        challenger_card = json.loads(
            _load(challenger_run, CARD_FILE, tmp_dir / "challenger").read_text()
        )
        metric, higher_is_better = PRIMARY_METRIC.get(challenger_card["task"], ("roc_auc", True))
        try:
            champion = client.get_model_version_by_alias(name, alias)
        except mlflow.exceptions.MlflowException:
            champion = None

        if champion is None:
            decision = PromotionDecision(
                name, version, None, True, metric, higher_is_better, None, None, 0,
                "first version of the model: becomes champion",
            )  # fmt: skip
        elif str(champion.version) == version:
            decision = PromotionDecision(
                name, version, version, False, metric, higher_is_better, None, None, 0,
                "already the champion",
            )  # fmt: skip
        else:
            test = pl.read_parquet(_load(challenger_run, TEST_SET_FILE, tmp_dir / "test"))
            champion_run = _version_run_id(client, name, str(champion.version))
            champion_card = json.loads(
                _load(champion_run, CARD_FILE, tmp_dir / "champion").read_text()
            )
            champion_card = champion_card | {"label": challenger_card["label"]}
            decision = _contest(
                name, version, str(champion.version), challenger_card=challenger_card,
                champion_card=champion_card, test=test,
                metric=metric, higher_is_better=higher_is_better, settings=settings,
            )  # fmt: skip
    if decision.promoted:
        client.set_registered_model_alias(name, alias, version)
    _log_decision(client, challenger_run, decision)
    return decision


def _contest(
    name: str,
    version: str,
    champion_version: str,
    *,
    challenger_card: dict,
    champion_card: dict,
    test: pl.DataFrame,
    metric: str,
    higher_is_better: bool,
    settings: Settings,
) -> PromotionDecision:
    from training.scoring import evaluate_predictions

    challenger_pred = _predictions(name, version, challenger_card, test, settings)
    champion_pred = _predictions(name, champion_version, champion_card, test, settings)
    challenger_score = float(evaluate_predictions(challenger_card, test, challenger_pred)[metric])
    champion_score = float(evaluate_predictions(champion_card, test, champion_pred)[metric])
    margin = settings.promotion_margin
    if challenger_card["objective"] == "binary":
        y = test[challenger_card["label"]].cast(pl.Int8).to_numpy()
        promoted, gain = gate((y, challenger_pred, champion_pred), metric, margin, settings.seed)
    else:
        losses = (
            row_losses(challenger_card, test, challenger_pred),
            row_losses(challenger_card, test, champion_pred),
        )
        promoted, gain = gate(losses, metric, margin, settings.seed)
    verdict = "beats" if promoted else "does not beat"
    noise = "" if promoted else " beyond noise"
    return PromotionDecision(
        name,
        version,
        champion_version,
        promoted,
        metric,
        higher_is_better,
        challenger_score,
        champion_score,
        test.height,
        f"challenger {metric} {challenger_score:.5f} {verdict} champion "
        f"{champion_score:.5f}{noise} on the challenger's test window ({test.height:,} rows): "
        f"gain {gain.value:+.5f}, 95% CI [{gain.low:+.5f}, {gain.high:+.5f}], "
        f"needs the CI above {margin:g}",
        gain.value,
        gain.low,
        gain.high,
        margin,
    )


def _log_decision(client, run_id: str, decision: PromotionDecision) -> None:
    client.set_tag(
        run_id, "promotion_decision", "promoted" if decision.promoted else "kept_champion"
    )
    client.set_tag(run_id, "promotion_reason", decision.reason[:5000])
    if decision.challenger_score is not None:
        client.log_metric(
            run_id, f"promotion_challenger_{decision.metric}", decision.challenger_score
        )
    if decision.champion_score is not None:
        client.log_metric(run_id, f"promotion_champion_{decision.metric}", decision.champion_score)
    if decision.gain is not None:
        for key, value in (
            ("gain", decision.gain),
            ("gain_low", decision.gain_low),
            ("gain_high", decision.gain_high),
        ):
            if value is not None and np.isfinite(value):
                client.log_metric(run_id, f"promotion_{key}_{decision.metric}", value)
    against = decision.champion_version or "none"
    client.log_dict(run_id, decision.to_dict(), f"promotion/decision_vs_v{against}.json")
