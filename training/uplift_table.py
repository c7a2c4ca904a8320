"""Train uplift models on a table with a treatment column, judge them, register the best in MLflow.

``cto train --table FILE --label COL --treatment COL [--test-table FILE] [--time-column COL]``:
every other column (but ``--exclude``) is a feature. The T-, S-, X- and DR-learners are fitted on
the training rows; the one with the best Qini coefficient on a validation share of the training
rows is refitted on all of them and registered. Every learner is reported on the test rows (the
test file, else a time or stratified random split) with Qini, AUUC, a paired bootstrap interval of
its Qini difference to the T-learner baseline, and the IRR / NIR of the targeting rule "treat where
``uplift x order_value > treatment_cost``".

The registered model is an MLflow pyfunc: ``predict(frame)`` answers ``uplift``,
``p_order_treated`` and ``p_order_control`` per row, from the boosters stored as artifacts.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from features.errors import CTOError
from features.settings import Settings
from training.data import TRAIN_SHARE
from training.table import FALSE_TEXT, TRUE_TEXT, read_table, slug
from training.uplift import (
    LEARNERS,
    UpliftModel,
    UpliftParams,
    evaluate_uplift,
    fit_uplift,
    qini_coefficient,
    qini_curve,
    random_qini,
    targeting_value,
)

VALID_SHARE_OF_TRAIN = 0.25
BOOTSTRAP_DRAWS = 200
LEARNER_NAMES = {"t": "T-learner", "s": "S-learner", "x": "X-learner", "dr": "DR-learner"}


def binary_column(frame: pl.DataFrame, column: str, role: str) -> np.ndarray:
    """A 0/1 column as booleans; text must read as yes/no, true/false or 1/0. Names bad rows."""
    if column not in frame.columns:
        raise CTOError(
            f"{role} column {column!r} not in the table (columns: {', '.join(frame.columns)})"
        )
    series = frame[column]
    if series.dtype == pl.Boolean:
        values, ok = series, series.is_not_null()
    elif series.dtype.is_numeric():
        values, ok = series == 1, ((series == 0) | (series == 1)).fill_null(False)
    else:
        text = series.cast(pl.String).str.strip_chars().str.to_lowercase()
        values, ok = text.is_in(TRUE_TEXT), text.is_in(TRUE_TEXT + FALSE_TEXT).fill_null(False)
    if not ok.all():
        row = int(np.flatnonzero(~ok.to_numpy())[0])
        raise CTOError(
            f"{role} column {column!r}: {int((~ok).sum())} row(s) are not yes/no (0/1), "
            f"first at row {row + 1}: {series[row]!r}"
        )
    return values.to_numpy().astype(bool)


@dataclass(frozen=True)
class Encoding:
    """Feature columns in order; text columns as integer codes of the training rows' levels."""

    features: list[str]
    levels: dict[str, list[str]]

    @classmethod
    def fit(cls, frame: pl.DataFrame, features: list[str]) -> Encoding:
        levels = {
            c: sorted(frame[c].drop_nulls().cast(pl.String).unique().to_list())
            for c in features
            if frame.schema[c] in (pl.String, pl.Categorical, pl.Enum)
        }
        return cls(features, levels)

    def matrix(self, frame: pl.DataFrame) -> np.ndarray:
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise CTOError(f"feature column(s) missing: {', '.join(missing)}")
        exprs = []
        for c in self.features:
            if c in self.levels:
                # Unseen levels become missing (NaN), never a wrong code.
                exprs.append(
                    pl.col(c)
                    .cast(pl.String)
                    .cast(pl.Enum(self.levels[c]), strict=False)
                    .to_physical()
                    .cast(pl.Float64)
                )
            else:
                exprs.append(pl.col(c).cast(pl.Float64, strict=False))
        return frame.select(exprs).to_numpy()


@dataclass
class UpliftTableResult:
    run_id: str
    model_name: str
    version: str
    learner: str
    split_method: str
    metrics: dict[str, float]
    report: dict


def _split(
    frame: pl.DataFrame, y: np.ndarray, t: np.ndarray, time_column: str | None, seed: int
) -> tuple[np.ndarray, str]:
    """A boolean 'is test' per row: the latest rows by time, else stratified on label x treatment."""
    n = frame.height
    if time_column:
        if time_column not in frame.columns:
            raise CTOError(f"time column {time_column!r} not in the table")
        rank = frame[time_column].rank("ordinal").to_numpy()
        return rank > TRAIN_SHARE * n, "time"
    from sklearn.model_selection import train_test_split

    index = np.arange(n)
    _, test = train_test_split(index, test_size=0.3, stratify=y * 2 + t, random_state=seed)
    is_test = np.zeros(n, dtype=bool)
    is_test[test] = True
    return is_test, "stratified_random"


def paired_bootstrap(
    scores: np.ndarray, baseline: np.ndarray, y: np.ndarray, t: np.ndarray, seed: int
) -> tuple[float, float]:
    """95% percentile interval of qini(scores) - qini(baseline) over bootstrap resamples of rows."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(BOOTSTRAP_DRAWS):
        i = rng.integers(0, len(y), len(y))
        diffs.append(
            qini_coefficient(scores[i], y[i], t[i]) - qini_coefficient(baseline[i], y[i], t[i])
        )
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def train_uplift_table(
    path: Path,
    label: str,
    treatment: str,
    settings: Settings,
    *,
    test_path: Path | None = None,
    time_column: str | None = None,
    exclude: list[str] | None = None,
    model_name: str | None = None,
    learners: tuple[str, ...] = LEARNERS,
    order_value: float = 1.0,
    treatment_cost: float = 0.0,
    propensity: str = "constant",
    progress: bool = True,
) -> UpliftTableResult:
    from training.pipeline import Progress

    say = Progress(progress, prefix="uplift")
    raw = read_table(Path(path))
    exclude = list(exclude or [])
    for name in [label, treatment, *exclude, *([time_column] if time_column else [])]:
        if name not in raw.columns:
            raise CTOError(f"column {name!r} not in the table (columns: {', '.join(raw.columns)})")
    features = [c for c in raw.columns if c not in {label, treatment, time_column, *exclude}]
    if not features:
        raise CTOError("no feature columns left after the label, treatment and exclusions")
    y_all = binary_column(raw, label, "label").astype(float)
    t_all = binary_column(raw, treatment, "treatment")
    if test_path is not None:
        test_raw = read_table(Path(test_path))
        train_raw, method = raw, "test_file"
        y_test = binary_column(test_raw, label, "label").astype(float)
        t_test = binary_column(test_raw, treatment, "treatment")
        y_train, t_train = y_all, t_all
    else:
        is_test, method = _split(raw, y_all, t_all, time_column, settings.seed)
        train_raw, test_raw = raw.filter(~is_test), raw.filter(is_test)
        y_train, t_train, y_test, t_test = (
            y_all[~is_test],
            t_all[~is_test],
            y_all[is_test],
            t_all[is_test],
        )
    for part, tt in (("training", t_train), ("test", t_test)):
        if tt.all() or not tt.any():
            raise CTOError(
                f"treatment column {treatment!r}: the {part} rows need treated and control rows"
            )
    encoding = Encoding.fit(train_raw, features)
    x_train, x_test = encoding.matrix(train_raw), encoding.matrix(test_raw)
    say(
        f"{len(y_train):,} training rows ({t_train.mean():.1%} treated), {len(y_test):,} test rows, "
        f"{len(features)} features; split {method}"
    )
    params = UpliftParams(num_threads=settings.num_threads, seed=settings.seed)
    cats = list(encoding.levels)

    # Choose the learner on a validation share of the training rows, never on the test rows.
    rng = np.random.default_rng(settings.seed)
    valid = rng.random(len(y_train)) < VALID_SHARE_OF_TRAIN
    valid_qini: dict[str, float] = {}
    test_scores: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    models: dict[str, UpliftModel] = {}
    for learner in learners:
        chooser = fit_uplift(
            x_train[~valid],
            y_train[~valid],
            t_train[~valid],
            learner=learner,
            feature_names=features,
            categorical=cats,
            propensity=propensity,
            params=params,
        )
        valid_qini[learner] = qini_coefficient(
            chooser.predict(x_train[valid])[0], y_train[valid], t_train[valid]
        )
        models[learner] = fit_uplift(
            x_train,
            y_train,
            t_train,
            learner=learner,
            feature_names=features,
            categorical=cats,
            propensity=propensity,
            params=params,
        )
        test_scores[learner] = models[learner].predict(x_test)
        say(f"{LEARNER_NAMES[learner]}: validation Qini {valid_qini[learner]:.5f}")
    best = max(valid_qini, key=valid_qini.get)

    threshold = treatment_cost / order_value
    baseline = test_scores["t"][0] if "t" in test_scores else None
    rows: dict[str, dict[str, float]] = {}
    for learner, (uplift, _, _) in test_scores.items():
        row = evaluate_uplift(uplift, y_test, t_test) | {"valid_qini": valid_qini[learner]}
        rule = targeting_value(
            uplift > threshold,
            y_test,
            t_test,
            value_per_order=order_value,
            cost_per_treatment=treatment_cost,
        )
        row |= rule
        if baseline is not None and learner != "t":
            low, high = paired_bootstrap(uplift, baseline, y_test, t_test, settings.seed)
            row |= {
                "qini_diff_vs_t": row["qini"] - qini_coefficient(baseline, y_test, t_test),
                "qini_diff_ci_low": low,
                "qini_diff_ci_high": high,
            }
        rows[learner] = row
    floor_mean, floor_sd = random_qini(y_test, t_test, settings.seed)
    everyone = targeting_value(
        np.ones(len(y_test), bool),
        y_test,
        t_test,
        value_per_order=order_value,
        cost_per_treatment=treatment_cost,
    )
    report = {
        "chosen_learner": best,
        "split_method": method,
        "threshold_uplift": threshold,
        "order_value": order_value,
        "treatment_cost": treatment_cost,
        "propensity": propensity,
        "test_rows": len(y_test),
        "test_ate": float(y_test[t_test].mean() - y_test[~t_test].mean()),
        "random_qini_mean": floor_mean,
        "random_qini_sd": floor_sd,
        "treat_everyone": everyone,
        "learners": rows,
    }
    for learner, row in rows.items():
        say(
            f"test {LEARNER_NAMES[learner]:10} Qini {row['qini']:.5f}  AUUC {row['auuc']:.5f}  "
            f"IRR {row['irr']:.4f}  NIR {row['nir']:.2f}  targeted {row['targeted_share']:.1%}"
        )

    name = model_name or f"{settings.model_prefix}-{slug(Path(path).stem)}-uplift"
    run_id, version = _log(
        models[best],
        encoding,
        report,
        test_scores=test_scores,
        y_test=y_test,
        t_test=t_test,
        settings=settings,
        name=name,
        tags={
            "data_source": str(path),
            "label": label,
            "treatment": treatment,
            "split_method": method,
        },
        example_frame=test_raw,
    )
    say(f"registered {name} v{version} ({LEARNER_NAMES[best]})")
    metrics = {f"{k}_{m}": v for k, row in rows.items() for m, v in row.items()}
    return UpliftTableResult(run_id, name, version, best, method, metrics, report)


def qini_plot(
    scores: dict[str, np.ndarray], y: np.ndarray, t: np.ndarray, path: Path, title: str = ""
) -> Path:
    from training.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for name, uplift in scores.items():
        k, q = qini_curve(uplift, y, t)
        step = max(1, len(k) // 400)
        ax.plot(k[::step] / k[-1], q[::step], lw=1.3, label=LEARNER_NAMES.get(name, name))
    ax.plot([0, 1], [0, q[-1]], "k--", lw=1, label="random targeting")
    ax.set_xlabel("share targeted (highest uplift first)")
    ax.set_ylabel("incremental orders (Qini)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


class UpliftPyfunc:
    """MLflow pyfunc body: boosters and encoding from the artifacts, three columns out."""

    @staticmethod
    def make():
        import mlflow.pyfunc

        class _Model(mlflow.pyfunc.PythonModel):
            def load_context(self, context):
                self.model, self.encoding = load_uplift(Path(context.artifacts["uplift"]))

            def predict(self, context, model_input, params=None):
                import pandas as pd

                frame = pl.from_pandas(pd.DataFrame(model_input))
                uplift, p1, p0 = self.model.predict(self.encoding.matrix(frame))
                return pd.DataFrame(
                    {"uplift": uplift, "p_order_treated": p1, "p_order_control": p0}
                )

        return _Model()


def save_uplift(model: UpliftModel, encoding: Encoding, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for key, booster in model.boosters.items():
        booster.save_model(str(directory / f"{key}.txt"))
    spec = {
        "learner": model.learner,
        "features": encoding.features,
        "levels": encoding.levels,
        "treated_share": model.treated_share,
        "propensity": model.propensity,
        "boosters": sorted(model.boosters),
    }
    (directory / "uplift.json").write_text(json.dumps(spec, indent=1))
    return directory


def load_uplift(directory: Path) -> tuple[UpliftModel, Encoding]:
    import lightgbm as lgb

    spec = json.loads((directory / "uplift.json").read_text())
    boosters = {k: lgb.Booster(model_file=str(directory / f"{k}.txt")) for k in spec["boosters"]}
    model = UpliftModel(
        spec["learner"],
        spec["features"],
        list(spec["levels"]),
        boosters,
        spec["treated_share"],
        spec["propensity"],
    )
    return model, Encoding(spec["features"], spec["levels"])


def _log(
    model, encoding, report, *, test_scores, y_test, t_test, settings, name, tags, example_frame
):
    import mlflow
    from mlflow.models import infer_signature

    from training.tracking import _model_requirements, setup_mlflow

    setup_mlflow(settings)
    with mlflow.start_run(run_name="uplift") as run, tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        mlflow.set_tags(tags | {"task": "uplift", "learner": model.learner})
        mlflow.log_params(
            {
                "learner": model.learner,
                "learners_compared": ",".join(report["learners"]),
                "propensity": model.propensity,
                "features": len(encoding.features),
                "threshold_uplift": report["threshold_uplift"],
            }
        )
        flat = {
            f"test_{k}_{m}": float(v)
            for k, row in report["learners"].items()
            for m, v in row.items()
        }
        flat |= {"test_random_qini": report["random_qini_mean"], "test_ate": report["test_ate"]}
        mlflow.log_metrics({k: v for k, v in flat.items() if np.isfinite(v)})
        mlflow.log_dict(report, "uplift_report.json")
        plot = qini_plot(
            {k: v[0] for k, v in test_scores.items()},
            y_test,
            t_test,
            tmp_dir / "qini.png",
            "Qini curves on the test rows",
        )
        mlflow.log_artifact(str(plot), artifact_path="plots")
        model_dir = save_uplift(model, encoding, tmp_dir / "uplift")
        example = example_frame.select(encoding.features).head(5).to_pandas()
        u, p1, p0 = model.predict(encoding.matrix(example_frame.head(5)))
        example_out = pl.DataFrame(
            {"uplift": u, "p_order_treated": p1, "p_order_control": p0}
        ).to_pandas()
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=UpliftPyfunc.make(),
            artifacts={"uplift": str(model_dir)},
            signature=infer_signature(example, example_out),
            input_example=example,
            pip_requirements=_model_requirements(),
        )
        registered = mlflow.register_model(info.model_uri, name, tags={"task": "uplift"})
        version = str(registered.version)
        mlflow.MlflowClient().set_model_version_tag(name, version, "run_id", run.info.run_id)
        return run.info.run_id, version


def uplift_version(
    settings: Settings, name: str, alias: str | None, version: str | None
) -> str | None:
    """The version number when NAME@ALIAS / NAME/VERSION is a registered uplift model, else None."""
    import mlflow

    from training.tracking import use_store

    client = use_store(settings)
    try:
        found = (
            client.get_model_version(name, version)
            if version is not None
            else client.get_model_version_by_alias(name, alias or settings.champion_alias)
        )
    except mlflow.exceptions.MlflowException:
        return None  # the conversion path reports the missing model with its own message
    return str(found.version) if found.tags.get("task") == "uplift" else None


def score_uplift_table(path: Path, name: str, version: str, settings: Settings, out: Path):
    """``cto score --table`` with an uplift model: the input columns plus uplift and both arms' P(order)."""
    import time

    import mlflow

    from training.batch import ScoreResult
    from training.tracking import use_store

    started = time.perf_counter()
    use_store(settings)
    local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}")
    model, encoding = load_uplift(Path(local) / "artifacts" / "uplift")
    frame = read_table(Path(path))
    uplift, p1, p0 = model.predict(encoding.matrix(frame))
    scored = frame.with_columns(
        pl.Series("uplift", uplift),
        pl.Series("p_order_treated", p1),
        pl.Series("p_order_control", p0),
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    scored.write_parquet(out)
    label = f"{name} v{version} (uplift, {LEARNER_NAMES.get(model.learner, model.learner)})"
    return ScoreResult(Path(out), scored.height, [label], time.perf_counter() - started, [])
