"""Benchmark: the real-data paths as a new user runs them, step by step, and what the models learn.

    .venv/bin/python -m benchmarks.real_data               # about 5 minutes on 2 cores
    .venv/bin/python -m benchmarks.real_data --rounds 1    # one pass

Two shared data sets, every step the `cto` (or `mlflow`) command as typed, into a fresh MLflow
store per round:

- **olist** (contact data): `cto import olist` -> `cto validate` -> `cto train --promote` ->
  `cto score DATA_DIR --moment arrival` -> `cto report`.
- **online-shoppers** (one row per session): `cto train --table --promote` ->
  `cto score --table` -> `mlflow models predict` (the registered raw-row pyfunc, same rows).

The floor, in the same run: `cto --help` (interpreter and the command-line start-up every step
pays). Wall time of each command (medians of ``--rounds`` rounds; the rounds alternate the two
data sets) and the peak memory of its process tree, measured as in benchmarks/batch_scoring.py.

The models' held-out metrics come from the champions' MLflow runs (the test window the model
never saw: a time split for olist, a stratified split for the table without a time column), with
the fair baselines trained on the same rows (logistic regression, the best one-feature rule, the
base rate) and a 95% bootstrap interval of the champion's ROC-AUC and PR-AUC on its logged test
set. Every round must give the same metrics (a seed gives the same data and models).
Writes benchmarks/results/real_data.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.batch_scoring import BIN, MODEL, OLIST, SHOPPERS, Run, _env, commands, timed

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "real_data.md"
SHOPPERS_MODEL = MODEL
OLIST_PREFIX = "olist"
OLIST_TASKS = ("conversion-arrival", "conversion-after-contact")
BASELINES = (
    ("logistic regression", "baseline_logistic_test_"),
    ("one rule", "baseline_one_rule_test_"),
    ("base rate", "baseline_base_rate_test_"),
)
N_BOOT = 1_000


def olist_steps(work: Path) -> dict[str, list[str]]:
    data = work / "olist"
    cto = str(BIN / "cto")
    prefix = ["--model-prefix", OLIST_PREFIX]
    return {
        "import": [cto, "import", "olist", str(OLIST), "--out", str(data)],
        "validate": [cto, "validate", str(data)],
        "train --promote": [cto, "train", str(data), *prefix, "--promote", "--quiet"],
        "score --moment arrival": [
            cto, "score", str(data), "--moment", "arrival", *prefix,
            "--out", str(work / "olist_scores.parquet"), "--quiet",
        ],
        "report": [cto, "report", str(data), *prefix, "--out", str(work / "olist_report.html")],
    }  # fmt: skip


def shoppers_steps(work: Path) -> dict[str, list[str]]:
    """Train the table model, then batch-score its sessions both ways (as batch_scoring does)."""
    train = [
        str(BIN / "cto"), "train", "--table", str(SHOPPERS), "--label", "Revenue", "--promote",
        "--quiet",
    ]  # fmt: skip
    scoring = commands(work, work / "sessions.csv")
    return {
        "train --table --promote": train,
        "score --table": scoring["cto score --table"],
        "mlflow models predict": scoring["mlflow models predict"],
    }


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_round(work: Path, round_: int, order: list[str]) -> dict[tuple[str, str], Run]:
    """Every step of both paths once, in a fresh store; each step's wall time and peak memory."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    pl.read_csv(SHOPPERS, infer_schema_length=None).drop("Revenue").write_csv(work / "sessions.csv")
    env = _env(work)
    runs: dict[tuple[str, str], Run] = {}
    paths = {"olist": olist_steps(work), "online-shoppers": shoppers_steps(work)}
    runs[("floor", "cto --help")] = timed([str(BIN / "cto"), "--help"], env, work)
    for path in order:
        for step, command in paths[path].items():
            runs[(path, step)] = timed(command, env, work)
            _say(f"round {round_}: {path}: {step}: {runs[(path, step)].seconds:.1f} s")
    return runs


def _bootstrap(y: np.ndarray, p: np.ndarray, seed: int) -> dict[str, object]:
    from training.intervals import interval, point_metrics, resample_counts, weighted_binary_metrics

    point = point_metrics(y, p)
    samples = weighted_binary_metrics(y, p, resample_counts(len(y), N_BOOT, seed))
    return {name: interval(point[name], samples[name]) for name in ("roc_auc", "pr_auc")}


def champion_metrics(work: Path, name: str) -> dict[str, object]:
    """The champion's logged test metrics and baselines, and bootstrap intervals on its test set."""
    import mlflow

    from training.scoring import load_native, predict
    from training.tracking import CARD_FILE, TEST_SET_FILE

    store = _env(work)["CTO_TRACKING_URI"]
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    version = client.get_model_version_by_alias(name, "champion")
    run = client.get_run(version.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        card = json.loads(
            Path(
                mlflow.artifacts.download_artifacts(
                    f"models:/{name}/{version.version}/{CARD_FILE}", dst_path=tmp
                )
            ).read_text()
        )
        test = pl.read_parquet(
            mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=TEST_SET_FILE, dst_path=tmp
            )
        )
    p = predict(load_native(f"models:/{name}/{version.version}", card), card, test, 2)
    y = test[card["label"]].cast(pl.Float64).to_numpy()
    metrics = run.data.metrics
    # The interval is of the model as registered, re-scored on its logged test set: its point
    # value must be the logged one, or the test set is not the one the metrics came from.
    intervals = _bootstrap(y, p, seed=7)
    if abs(intervals["roc_auc"].value - metrics["test_roc_auc"]) > 1e-6:
        raise SystemExit(
            f"{name}: re-scored test ROC-AUC {intervals['roc_auc'].value:.6f} differs from the "
            f"logged {metrics['test_roc_auc']:.6f}"
        )
    return {
        "name": name,
        "version": version.version,
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "split": run.data.tags.get("split_method", "time"),
        "metrics": metrics,
        "intervals": intervals,
    }


def _uncalibrated(metrics: dict[str, float]) -> str:
    value = metrics.get("test_ece_uncalibrated")
    return "not calibrated" if value is None else f"{value:.3f}"


def _median(runs: list[Run], field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs)


def render(
    runs: dict[tuple[str, str], list[Run]],
    models: list[dict],
    rounds: int,
    load: tuple[float, float],
) -> str:
    floor = _median(runs[("floor", "cto --help")], "seconds")
    lines = [
        "## real_data",
        "",
        "The real-data paths as a new user runs them (benchmarks/real_data.py): every step is the "
        "`cto` command as typed, on the shared data sets, into a fresh MLflow store each round. "
        "Wall time of the whole command (start-up included) and peak memory of its process tree; "
        f"medians of {rounds} rounds. Floor: `cto --help` (interpreter and command start-up), "
        f"measured in the same run. Machine load (1-minute average) {load[0]:.1f} at the start, "
        f"{load[1]:.1f} at the end.",
        "",
        "| data set | step | wall s | x floor | peak MB |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    totals: dict[str, float] = {}
    for (path, step), found in runs.items():
        seconds = _median(found, "seconds")
        if path != "floor":
            totals[path] = totals.get(path, 0.0) + seconds
        lines.append(
            f"| {path} | `{step}` | {seconds:.1f} | {seconds / floor:.1f}x | "
            f"{_median(found, 'peak_mb'):,.0f} |"
        )
    lines += [
        "",
        "End to end: " + ", ".join(f"{path} {total:.0f} s" for path, total in totals.items()) + ".",
        "",
        "Held-out metrics of the registered champions against the fair baselines trained on the "
        "same rows (from the MLflow runs; the same in every round). The interval is a 95% "
        f"bootstrap ({N_BOOT:,} resamples) of the champion re-scored on its logged test set.",
        "",
        "| model | test rows (orders) | split | ROC-AUC [95% CI] | PR-AUC [95% CI] | "
        + " | ".join(f"ROC-AUC {label}" for label, _ in BASELINES)
        + " | log loss (base rate) | ECE (before calibration) |",
        "| --- | ---: | --- | ---: | ---: | "
        + " | ".join("---:" for _ in BASELINES)
        + " | ---: | ---: |",
    ]
    for model in models:
        m, ci = model["metrics"], model["intervals"]
        lines.append(
            f"| {model['name']} v{model['version']} | {model['rows']:,} ({model['positives']:,}) | "
            f"{model['split']} | {ci['roc_auc'].text()} | {ci['pr_auc'].text()} | "
            + " | ".join(f"{m[prefix + 'roc_auc']:.3f}" for _, prefix in BASELINES)
            + f" | {m['test_log_loss']:.4f} ({m['baseline_base_rate_test_log_loss']:.4f}) | "
            f"{m['test_ece']:.3f} ({_uncalibrated(m)}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="Where the rounds run (default: a temp dir).")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # this script's downloads
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as cleanup:
        base = args.workdir or Path(
            cleanup.enter_context(tempfile.TemporaryDirectory(prefix="cto-real-data-"))
        )
        runs, models = measure(base, args.rounds)
    load = (load_before, os.getloadavg()[0])
    args.out.write_text(render(runs, models, args.rounds, load))
    _say(f"wrote {args.out}")
    return 0


def measure(base: Path, rounds: int) -> tuple[dict[tuple[str, str], list[Run]], list[dict]]:
    """Every round's step times, and the champions' metrics (checked equal across rounds)."""
    runs: dict[tuple[str, str], list[Run]] = {}
    first: list[dict] = []
    for round_ in range(1, rounds + 1):
        order = ["olist", "online-shoppers"]
        if round_ % 2 == 0:
            order.reverse()  # machine noise hits both paths alike
        # A new directory per round: this process keeps its MLflow store of a path open, so a
        # store re-created at the same path would be read through the old connection.
        work = base / f"round-{round_}"
        for key, run in run_round(work, round_, order).items():
            runs.setdefault(key, []).append(run)
        models = [champion_metrics(work, f"{OLIST_PREFIX}-{t}") for t in OLIST_TASKS]
        models.append(champion_metrics(work, SHOPPERS_MODEL))
        seen = [(m["name"], m["metrics"]["test_roc_auc"]) for m in models]
        if not first:
            first = models
        elif seen != [(m["name"], m["metrics"]["test_roc_auc"]) for m in first]:
            raise SystemExit(f"round {round_}: metrics differ from round 1: {seen}")
    ordered = {k: runs[k] for k in sorted(runs, key=lambda k: (k[0] != "floor", k[0]))}
    return ordered, first


if __name__ == "__main__":
    raise SystemExit(main())
