"""MLflow: experiment setup, one run per model, the registered model version with its card."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from features.settings import Settings
from training import plots
from training.card import flat_metrics
from training.tasks import TaskFit

CARD_FILE = "model_card.json"
RATES_FILE = "rates.parquet"
TEST_SET_FILE = "test_set.parquet"
MODEL_ARTIFACT = "model"
INPUT_EXAMPLE_ROWS = 5
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_KIND = "custom_model_development"


def model_name(settings: Settings, task: str) -> str:
    return f"{settings.model_prefix}-{task}"


def use_store(settings: Settings):
    """Point MLflow at the settings' store, for runs and for the model registry; a client of it.

    Both process-wide URIs are set: MLflow resolves the registry separately (``set_registry_uri``,
    then ``MLFLOW_REGISTRY_URI``, only then the tracking URI), so setting the tracking URI alone
    would leave registrations and ``models:/`` URIs in whatever registry the process or its
    environment named before.
    """
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return mlflow.MlflowClient(
        tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
    )


def setup_mlflow(settings: Settings) -> str:
    """Point MLflow at the settings' store and make sure the experiment exists; its id."""
    import mlflow

    client = use_store(settings)
    experiment = mlflow.get_experiment_by_name(settings.experiment)
    if experiment is None:
        location = settings.artifact_location
        if "://" not in location:
            # A relative path would depend on the working directory of whoever trains.
            location = Path(location).resolve().as_uri()
        experiment_id = mlflow.create_experiment(settings.experiment, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    if experiment is None or EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
        # MLflow 3's UI opens an experiment without this tag on the GenAI traces view.
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_KIND)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def latest_rates_frame(rates) -> pl.DataFrame:
    """Each agent / intent / channel rate as known at the end of the training data, plus the global rate.

    Columns: rate_table, key, label_known_at, outcomes, conversions, rate. Serving joins these on
    the contact's agent_id (bots: key "bot"), intent and channel to compute the rate features online.
    """
    parts = [
        rates.latest(name).select(
            pl.lit(name).alias("rate_table"),
            pl.col("key").cast(pl.String),
            "label_known_at",
            pl.col("outcomes").cast(pl.Int64),
            pl.col("conversions").cast(pl.Int64),
            pl.col("rate").cast(pl.Float64),
        )
        for name in sorted(rates.tables)
    ]
    global_last = rates.global_rate.sort("label_known_at").tail(1)
    parts.append(
        global_last.select(
            pl.lit("global").alias("rate_table"),
            pl.lit(None, dtype=pl.String).alias("key"),
            "label_known_at",
            pl.col("outcomes").cast(pl.Int64),
            pl.col("conversions").cast(pl.Int64),
            pl.col("rate").cast(pl.Float64),
        )
    )
    return pl.concat(parts, how="vertical_relaxed")


def _plots(fit: TaskFit, directory: Path) -> list[Path]:
    paths: list[Path] = []
    data = fit.plot_data
    names = list(fit.encoding.feature_names)
    if fit.objective == "binary":
        y = data["y_test"]
        scores = dict(data["scores"])
        paths.append(plots.roc_plot(y, scores, directory / "roc.png"))
        paths.append(plots.reliability_plot(y, scores, directory / "reliability.png"))
        paths.append(plots.lift_plot(y, scores, directory / "lift.png"))
        paths.append(plots.shap_summary_plot(data["shap"], names, directory / "shap_summary.png"))
    elif fit.objective == "multiclass":
        matrix = fit.metrics["model"]["confusion_matrix"]
        paths.append(
            plots.confusion_plot(matrix, fit.class_names or [], directory / "confusion.png")
        )
    return paths


def log_task(
    fit: TaskFit,
    card: dict,
    settings: Settings,
    *,
    rates_frame: pl.DataFrame | None,
    tags: dict[str, str],
    register_as: str | None,
    fit_started: float | None = None,
) -> tuple[str, str | None]:
    """Log one trained model as an MLflow run; register it. Returns (run_id, version or None)."""
    import mlflow

    client = mlflow.MlflowClient()
    # The run starts when the fit started (its duration covers the fit) and is named with the
    # time, so retrains of a task are told apart in the runs list.
    started = fit_started or time.time()
    experiment_id = mlflow.get_experiment_by_name(settings.experiment).experiment_id
    created = client.create_run(
        experiment_id,
        start_time=int(started * 1000),
        run_name=f"{fit.task} {datetime.fromtimestamp(started, UTC):%Y-%m-%d %H:%M:%S}",
    )
    with (
        mlflow.start_run(run_id=created.info.run_id) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        tmp_dir = Path(tmp)
        mlflow.set_tags(tags | {"task": fit.task, "objective": fit.objective})
        mlflow.log_params({k: _param_text(v) for k, v in fit.params.items()})
        mlflow.log_params(
            {
                "feature_count": len(fit.encoding.feature_names),
                "calibration": card["calibration"]["method"],
                "training_rows": card["training_rows"],
            }
        )
        mlflow.log_metrics(flat_metrics(fit.metrics))
        _log_dataset(fit, card)
        extra_numbers = {
            f"{group}_{k}": float(v)
            for group in ("model_shape", "explain_cost")
            for k, v in (fit.extra.get(group) or {}).items()
        }
        if "driver_recovery" in fit.extra:
            extra_numbers["driver_recovery_share"] = fit.extra["driver_recovery"]["recovered_share"]
        for key, value in fit.extra.items():
            if key.startswith("oracle_") and isinstance(value, float):
                extra_numbers[key] = value
        mlflow.log_metrics({k: v for k, v in extra_numbers.items() if np.isfinite(v)})

        card_path = tmp_dir / CARD_FILE
        card_path.write_text(json.dumps(card, indent=1))
        mlflow.log_artifact(str(card_path))
        mlflow.log_dict({"features": list(fit.encoding.feature_names)}, "feature_list.json")
        mlflow.log_dict(card["feature_set"], "feature_set.json")
        rates_path = None
        if rates_frame is not None:
            rates_path = tmp_dir / RATES_FILE
            rates_frame.write_parquet(rates_path)
            mlflow.log_artifact(str(rates_path))
        test_path = tmp_dir / TEST_SET_FILE
        fit.test_frame.write_parquet(test_path)
        mlflow.log_artifact(str(test_path))
        plot_dir = tmp_dir / "plots"
        plot_dir.mkdir()
        for path in _plots(fit, plot_dir):
            mlflow.log_artifact(str(path), artifact_path="plots")

        info = mlflow.models.Model.log(
            None,
            name=MODEL_ARTIFACT,
            flavor=RawRowFlavor,
            booster=fit.booster,
            card=card,
            raw_frame=fit.train_frame,
            example_frame=fit.test_frame,
            pip_requirements=_model_requirements(),
        )
        # The card and rates travel inside the model directory too, so models:/name@champion
        # downloads everything serving needs.
        client.log_model_artifact(info.model_id, str(card_path))
        if rates_path is not None:
            client.log_model_artifact(info.model_id, str(rates_path))
        for extra_name, extra_booster in fit.extra_models.items():
            extra_path = tmp_dir / f"{extra_name}.txt"
            extra_booster.save_model(str(extra_path))
            mlflow.log_artifact(str(extra_path))
            client.log_model_artifact(info.model_id, str(extra_path))
        version = None
        if register_as:
            # MLflow prints "Successfully registered..." itself; the caller says what was registered.
            with contextlib.redirect_stderr(io.StringIO()):
                registered = mlflow.register_model(
                    info.model_uri, register_as, tags={"task": fit.task}
                )
            version = str(registered.version)
            client.set_model_version_tag(register_as, version, "run_id", run.info.run_id)
            _describe(client, register_as, version, card)
        return run.info.run_id, version


def _describe(client, name: str, version: str, card: dict) -> None:
    """Descriptions a data scientist reads in the registry: task, data, windows, feature set, metrics."""
    data = card.get("data") or {}
    span = data.get("span") or {}
    feature_set = card.get("feature_set") or {}
    metrics = (card.get("test_metrics") or {}).get("model") or {}
    shown = ", ".join(
        f"{k} {v:.4f}"
        for k, v in metrics.items()
        if k in ("roc_auc", "pr_auc", "ece", "macro_f1", "log_loss", "mae") and isinstance(v, float)
    )
    windows = card.get("data_windows") or {}
    window_text = "; ".join(
        f"{split} {w.get('from', '')[:10]} to {w.get('until', '')[:10]}"
        for split, w in windows.items()
        if isinstance(w, dict)
    )
    client.update_registered_model(
        name,
        description=f"CTO {card.get('task')} model ({card.get('objective')}): {card.get('output', '')}",
    )
    client.update_model_version(
        name,
        version,
        description=(
            f"Trained on {data.get('source_kind', '?')} data from {data.get('source', '?')}"
            + (
                f", contacts {span.get('from', '')[:10]} to {span.get('until', '')[:10]}"
                if span
                else ""
            )
            + f". Windows: {window_text or card.get('data_windows')}."
            + f" Feature set {feature_set.get('name', '')} {feature_set.get('version', '')}"
            + f" (digest {feature_set.get('digest', '')}, {len(card.get('feature_names', []))} features)."
            + (f" Test: {shown}." if shown else "")
        ),
    )


def _log_dataset(fit: TaskFit, card: dict) -> None:
    """The training rows as the run's MLflow dataset input (name, source, digest, schema, rows)."""
    import mlflow

    data = card.get("data") or {}
    source = str(data.get("source") or "unknown")
    name = f"{data.get('source_kind', 'data')}:{Path(source).name or source}"
    with warnings.catch_warnings():
        # MLflow hints about integer columns and ambiguous local sources: not the user's concern.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(
            fit.train_frame.to_pandas(), source=source, name=name, digest=data.get("data_digest")
        )
        mlflow.log_input(dataset, context="training")


def raw_signature(frame: pl.DataFrame, names: list[str]):
    """MLflow input schema of raw feature rows: text for categories, long for whole numbers
    without gaps, double for the rest, boolean for booleans (what a CSV of the rows reads as)."""
    from mlflow.types.schema import ColSpec, Schema

    specs = []
    for name in names:
        dtype = frame.schema[name]
        if dtype == pl.Boolean:
            kind = "boolean"
        elif dtype.is_integer() and frame[name].null_count() == 0:
            kind = "long"
        elif dtype.is_numeric():
            kind = "double"
        else:
            kind = "string"
        specs.append(ColSpec(kind, name))
    return Schema(specs)


def raw_rows(frame: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """The features as a user has them: categories as text, everything else as it is."""
    return frame.select(
        pl.col(n).cast(pl.String)
        if frame.schema[n] in (pl.Categorical,) or isinstance(frame.schema[n], pl.Enum)
        else pl.col(n)
        for n in names
    )


class RawRowFlavor:
    """An MLflow flavour writer: the pyfunc of raw rows (training/pyfunc_raw.py, shipped in the
    model) and the native ``lightgbm`` flavour on the same Booster file (a ``linear`` family
    model: the pyfunc only, its coefficients in the card)."""

    @staticmethod
    def save_model(
        path, mlflow_model, *, booster, card, raw_frame, example_frame, pip_requirements
    ) -> None:
        import lightgbm
        import mlflow
        from mlflow.models import ModelSignature
        from mlflow.types.schema import ColSpec, Schema

        from training import pyfunc_raw

        names = list(card["feature_names"])
        rows = raw_rows(raw_frame, names)
        example = raw_rows(example_frame.head(INPUT_EXAMPLE_ROWS), names).to_pandas()
        objective = card["objective"]
        if objective == "binary":
            outputs = [ColSpec("double", "p_order")]
        elif objective == "multiclass":
            outputs = [ColSpec("double", f"p_{c}") for c in card.get("class_names") or []]
        else:
            outputs = [ColSpec("double", "expected_further_contacts")]
        signature = ModelSignature(inputs=raw_signature(rows, names), outputs=Schema(outputs))
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "raw_rows"
            data.mkdir()
            (data / pyfunc_raw.CARD_FILE).write_text(json.dumps(card, indent=1))
            mlflow.pyfunc.save_model(
                path,
                loader_module="pyfunc_raw",
                data_path=str(data),
                code_paths=[pyfunc_raw.__file__],
                mlflow_model=mlflow_model,
                signature=signature,
                input_example=example,
                pip_requirements=pip_requirements,
            )
        if card.get("family") == pyfunc_raw.LINEAR:
            # A logistic regression: its coefficients are in the card; the pyfunc is its flavour.
            mlflow_model.save(str(Path(path) / "MLmodel"))
            return
        # One Booster file at the model's root, read by both flavours (and by serving's checks).
        booster.save_model(str(Path(path) / pyfunc_raw.BOOSTER_FILE))
        mlflow_model.add_flavor(
            "lightgbm",
            lgb_version=lightgbm.__version__,
            data=pyfunc_raw.BOOSTER_FILE,
            model_class="lightgbm.basic.Booster",
            code=None,
        )
        mlflow_model.save(str(Path(path) / "MLmodel"))


def _param_text(value: object) -> object:
    if isinstance(value, list | tuple):
        return json.dumps(list(value))
    return value


def _model_requirements() -> list[str]:
    """The model's runtime packages, pinned to what trained it.

    Given explicitly because MLflow's inference scans every installed distribution's files:
    18-20 s per logged model here, more than the fit itself.
    """
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("lightgbm", "numpy", "pandas", "scikit-learn")]
