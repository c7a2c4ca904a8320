"""Training benchmark: time and peak memory per model on simulated contacts.

``python -m benchmarks.training [--contacts 1000000] [--repeats 1] [--quick]``

Baselines in the same run: logistic regression on the same features and split (the model the
LightGBM fit has to be worth its cost against), and the LightGBM fit on a 10% time-ordered
sample to show how training time scales with rows. Writes benchmarks/results/training.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

RESULTS = Path(__file__).resolve().parent / "results" / "training.md"


def release_freed_memory() -> None:
    """Return freed heap pages to the OS so the next step's growth shows in the resident set.

    Without it glibc keeps the previous step's freed memory and a later step that reuses it
    reads as 0 MiB.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: measurements are then upper-bounded only
        pass


class PeakMemory:
    """Peak resident memory of this process above the level at entry (sampled every 20 ms)."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakMemory:
        release_freed_memory()
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def measure(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(median seconds, max peak extra MiB, last result) over ``repeats`` runs."""
    seconds, memory, result = [], [], None
    for _ in range(repeats):
        with PeakMemory() as peak:
            started = time.perf_counter()
            result = fn()
            seconds.append(time.perf_counter() - started)
        memory.append(peak.extra_mib)
    return statistics.median(seconds), max(memory), result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="50k contacts, 3 repeats: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    contacts, repeats = (50_000, 3) if args.quick else (args.contacts, args.repeats)

    from features.encoding import encode, fit_encoding
    from features.registry import categorical_features, feature_names
    from features.settings import get_settings
    from features.simulate import simulate
    from training import lgbm
    from training.baselines import fit_logistic
    from training.data import prepare
    from training.pipeline import fit_task, monotone_hints, task_data_gap
    from training.tasks import TASKS

    settings = get_settings(seed=42)
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        t0 = time.perf_counter()
        simulate(n_contacts=contacts, seed=42).write(data_dir)
        print(f"simulated {contacts:,} contacts in {time.perf_counter() - t0:.0f} s", flush=True)
        prep_s, prep_mib, prepared = measure(lambda: prepare(data_dir, settings), 1)
    rows.append(("prepare: validate, label, rates, features", prep_s, prep_mib, ""))
    print(f"prepared in {prep_s:.0f} s", flush=True)

    # The core comparison: LightGBM vs logistic regression on identical after-contact matrices.
    moment = "after_contact"
    names, categorical = feature_names(moment), categorical_features(moment)
    usable = prepared.frame.filter(pl.col("split").is_not_null())
    train = usable.filter(pl.col("split") == "train")
    valid = usable.filter(pl.col("split") == "valid")
    encoding = fit_encoding(train, names, categorical)
    x_train, x_valid = encode(train, encoding), encode(valid, encoding)
    y_train = train["converted"].cast(pl.Int8).to_numpy()
    y_valid = valid["converted"].cast(pl.Int8).to_numpy()
    params = lgbm.base_params(settings) | {
        "objective": "binary",
        "monotone_constraints": lgbm.monotone_vector(encoding, monotone_hints(moment)),
        "monotone_constraints_method": "intermediate",
    }

    def fit_lightgbm(n: int | None = None):
        n = n or len(y_train)
        return lgbm.fit_booster(
            params, (x_train[-n:], y_train[-n:], None), (x_valid, y_valid, None), encoding
        )

    gbm_s, gbm_mib, booster = measure(fit_lightgbm, repeats)
    small = max(1000, len(y_train) // 10)
    small_s, small_mib, _ = measure(lambda: fit_lightgbm(small), repeats)
    logit_s, logit_mib, _ = measure(
        lambda: fit_logistic(x_train, y_train, encoding, settings.seed), repeats
    )
    trees = booster.num_trees()
    rows.append(
        (
            f"LightGBM fit, after contact ({len(y_train):,} rows, {trees} trees)",
            gbm_s,
            gbm_mib,
            "1.00",
        )
    )
    rows.append(
        (
            f"LightGBM fit on the latest {small:,} training rows",
            small_s,
            small_mib,
            f"{small_s / gbm_s:.2f}",
        )
    )
    rows.append(
        ("logistic regression (same features)", logit_s, logit_mib, f"{logit_s / gbm_s:.2f}")
    )

    for task in TASKS:
        if task_data_gap(task, prepared, settings) is not None:
            continue  # e.g. the uplift models: this data logs no randomised decisions
        task_s, task_mib, fit = measure(lambda task=task: fit_task(task, prepared, settings), 1)
        trees = fit.booster.num_trees()
        rows.append(
            (f"task {task}: fit + baselines + metrics ({trees} trees)", task_s, task_mib, "")
        )
        print(f"{task}: {task_s:.0f} s", flush=True)

    lines = [
        "## training",
        "",
        f"{contacts:,} simulated contacts (seed 42), {len(y_train):,} after-contact training rows, "
        f"{len(names)} features, num_threads={settings.num_threads}; median of {repeats} run(s) where "
        "repeated. Peak memory is the resident-set growth above the level before the step "
        "(sampled every 20 ms, freed heap returned to the OS first; the prepared frame and the "
        "encoded matrices already exist, so a fit's figure is its own working memory). Ratio: "
        "time against the full LightGBM fit in the same run. The task rows include the "
        "baselines, metrics and SHAP checks of that model.",
        "",
        "| step | seconds | peak extra MiB | time ratio |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {s:.1f} | {mib:.0f} | {ratio} |" for name, s, mib, ratio in rows]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
