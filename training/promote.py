"""The promotion gate: a challenger takes the champion alias only if it beats the champion on the
same held-out window.

Both models are re-scored on the challenger's test window (``test_set.parquet`` in the
challenger's run, features as the challenger's data produced them), so the comparison never
mixes windows. The decision and both scores are logged to the challenger's run. The first
version of a model becomes champion without a contest.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from features.errors import CTOError
from features.settings import Settings
from training.tasks import PRIMARY_METRIC, TASKS
from training.tracking import CARD_FILE, TEST_SET_FILE, model_name, setup_mlflow

# A challenger must beat the champion by more than this on the primary metric (ties keep the champion).
MIN_IMPROVEMENT = 0.0


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


def _score(
    name: str, version: str, card: dict, test: pl.DataFrame, *, metric: str, settings: Settings
) -> float:
    import mlflow

    from training.scoring import evaluate

    booster = mlflow.lightgbm.load_model(f"models:/{name}/{version}")
    missing = [f for f in card["feature_names"] if f not in test.columns]
    if missing:
        raise CTOError(
            f"{name} version {version} needs feature(s) {missing} absent from the challenger's test "
            "window: the feature sets differ, compare them by hand"
        )
    return float(evaluate(booster, card, test, settings.num_threads)[metric])


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
            challenger_score = _score(
                name, version, challenger_card, test, metric=metric, settings=settings
            )
            champion_score = _score(
                name, str(champion.version), champion_card, test, metric=metric, settings=settings
            )
            gain = (challenger_score - champion_score) * (1 if higher_is_better else -1)
            promoted = gain > MIN_IMPROVEMENT
            verdict = "beats" if promoted else "does not beat"
            decision = PromotionDecision(
                name,
                version,
                str(champion.version),
                promoted,
                metric,
                higher_is_better,
                challenger_score,
                champion_score,
                test.height,
                f"challenger {metric} {challenger_score:.5f} {verdict} champion "
                f"{champion_score:.5f} on the challenger's test window ({test.height:,} rows)",
            )
    if decision.promoted:
        client.set_registered_model_alias(name, alias, version)
    _log_decision(client, challenger_run, decision)
    return decision


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
    against = decision.champion_version or "none"
    client.log_dict(run_id, decision.to_dict(), f"promotion/decision_vs_v{against}.json")
