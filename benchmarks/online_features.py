"""Benchmark: the online feature path (one contact against a 20-contact history) and a batch build.

    .venv/bin/python -m benchmarks.online_features            # 300 calls per case, batch at 200k
    .venv/bin/python -m benchmarks.online_features --quick    # smoke run (30 calls, batch at 20k)

Baseline in the same run: the feature modules (features/pipeline.py, registry.py, rates.py) as they
were at git revision ``--baseline-rev`` are loaded from git into a private package next to the
current ones, and both are timed alternately in the same process on the same inputs (so a busy
machine slows both alike). Times are medians of per-call wall and CPU time (CPU = this process, all
threads). Cases: at ``arrival`` and ``after_contact``, with point-in-time rate tables
(:func:`features.rates.compute_rates`) and with a fixed snapshot (one rate per key, what the
service loads from a model's rates.parquet); ``online_features_many`` scores 32 customers in one
call (per-contact time reported). The batch build (``build_features`` on ``--batch-contacts``
contacts, after_contact) runs once per implementation in its own subprocess, so each peak memory
(VmHWM) is its own. Both implementations' outputs are checked equal before timing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import numpy as np
import polars as pl

RESULTS = Path(__file__).resolve().parent / "results" / "online_features.md"
REPO = Path(__file__).resolve().parents[1]
# The commit before the online speed work: features/{pipeline,registry,rates}.py as first written.
DEFAULT_BASELINE_REV = "91c3efc"
BASELINE_PACKAGE = "features_baseline"
_BASELINE_MODULES = ("rates", "registry", "pipeline")
HORIZON_DAYS = 7
JOURNEY_GAP_DAYS = 14


def load_baseline(rev: str, root: Path) -> ModuleType:
    """features.pipeline as of ``rev``, importable as ``features_baseline.pipeline``.

    Only the three modules this work changed are taken from git; their imports of each other are
    pointed at the private package, everything else (schema, errors) is the current one.
    """
    package = root / BASELINE_PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    for name in _BASELINE_MODULES:
        source = subprocess.run(
            ["git", "show", f"{rev}:features/{name}.py"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for other in _BASELINE_MODULES:
            source = source.replace(f"from features.{other} ", f"from {BASELINE_PACKAGE}.{other} ")
        (package / f"{name}.py").write_text(source)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"{BASELINE_PACKAGE}.pipeline")


def customer_history(
    n_contacts: int, seed: int, customer_id: str = "u-1"
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """One customer's contacts (the last one is scored), orders and customer row, contract dtypes."""
    from features.schema import CHANNELS, CONTACTS, CUSTOMERS, INTENTS, ORDERS

    rng = np.random.default_rng(seed)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    hours = np.sort(rng.integers(0, 24 * 100, n_contacts))
    bot = rng.random(n_contacts) < 0.2
    contacts = pl.DataFrame(
        {
            "contact_id": [f"{customer_id}-c{i}" for i in range(n_contacts)],
            "customer_id": [customer_id] * n_contacts,
            "started_at": [start + timedelta(hours=int(h)) for h in hours],
            "channel": rng.choice(CHANNELS, n_contacts),
            "direction": rng.choice(["inbound", "outbound"], n_contacts),
            "intent": rng.choice(INTENTS, n_contacts),
            "handled_by": np.where(bot, "bot", "agent"),
            "agent_id": [None if b else f"a-{rng.integers(0, 12)}" for b in bot],
            "wait_seconds": np.round(rng.exponential(300, n_contacts), 1),
            "handle_seconds": np.round(rng.exponential(300, n_contacts), 1),
            "transfers": rng.poisson(0.4, n_contacts),
            "abandoned": rng.random(n_contacts) < 0.1,
            "resolved": rng.random(n_contacts) < 0.6,
            "callback_offered": rng.random(n_contacts) < 0.1,
            "follow_up_sent": rng.random(n_contacts) < 0.4,
            "dropoff_reason": [None] * n_contacts,
        }
    ).with_columns(pl.col(c.name).cast(c.dtype) for c in CONTACTS.columns)
    n_orders = max(n_contacts // 5, 1)
    orders = pl.DataFrame(
        {
            "order_id": [f"{customer_id}-o{i}" for i in range(n_orders)],
            "customer_id": [customer_id] * n_orders,
            "ordered_at": [
                start + timedelta(hours=int(h)) for h in rng.integers(0, 24 * 100, n_orders)
            ],
            "amount": np.round(rng.gamma(2, 60, n_orders), 2),
            "contact_id": [None] * n_orders,
        }
    ).with_columns(pl.col(c.name).cast(c.dtype) for c in ORDERS.columns)
    customer = pl.DataFrame(
        {
            "customer_id": [customer_id],
            "segment": ["consumer"],
            "region": ["north"],
            "first_seen_at": [start - timedelta(days=30)],
        }
    ).with_columns(pl.col(c.name).cast(c.dtype) for c in CUSTOMERS.columns)
    return contacts, orders, customer


def rate_tables() -> dict[str, object]:
    """Point-in-time rate tables from many customers' histories, and their latest-rate snapshot."""
    from features.labels import label_contacts
    from features.rates import RateTables, compute_rates

    parts = [customer_history(20, seed, f"u-{seed}") for seed in range(100)]
    contacts = pl.concat([p[0] for p in parts])
    orders = pl.concat([p[1] for p in parts])
    rates = compute_rates(
        label_contacts(contacts, orders, horizon_days=HORIZON_DAYS), horizon_days=HORIZON_DAYS
    )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)

    def latest(table: pl.DataFrame) -> pl.DataFrame:
        by = ["key"] if "key" in table.columns else []
        last = table.group_by(by).agg(pl.all().last()) if by else table.tail(1)
        return last.with_columns(
            pl.lit(epoch).cast(table.schema["label_known_at"]).alias("label_known_at")
        )

    snapshot = RateTables(
        horizon_days=HORIZON_DAYS,
        prior_strength=rates.prior_strength,
        tables={name: latest(t).sort("key") for name, t in rates.tables.items()},
        global_rate=latest(rates.global_rate),
    )
    return {"point-in-time rates": rates, "snapshot rates": snapshot}


def _timed(call, repeat: int) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus


def online_cases(baseline: ModuleType, repeat: int) -> list[dict]:
    """Median per-call times of the baseline and current online path, alternating in rounds."""
    from features import pipeline

    contacts, orders, customer = customer_history(21, seed=7)
    history, scored = contacts.head(20), contacts.row(20, named=True)
    rows = []
    for rates_name, rates in rate_tables().items():
        for moment in ("arrival", "after_contact"):

            def call(module: ModuleType, moment: str = moment, rates: object = rates):
                return module.online_features(
                    history,
                    orders,
                    scored,
                    customer,
                    rates,
                    moment,
                    journey_gap_days=JOURNEY_GAP_DAYS,
                    horizon_days=HORIZON_DAYS,
                )

            if not call(baseline).equals(call(pipeline)):
                raise AssertionError(f"baseline and current differ ({moment}, {rates_name})")
            times = {"baseline": ([], []), "current": ([], [])}
            # Alternate in rounds of 10 so load spikes hit both implementations.
            for _ in range(max(repeat // 10, 1)):
                for name, module in (("baseline", baseline), ("current", pipeline)):
                    walls, cpus = _timed(lambda m=module: call(m), 10)
                    times[name][0].extend(walls)
                    times[name][1].extend(cpus)
            row = {"case": f"online_features, {moment}, {rates_name}", "contacts_per_call": 1}
            for name, (walls, cpus) in times.items():
                row[f"{name}_wall_ms"] = statistics.median(walls) * 1e3
                row[f"{name}_cpu_ms"] = statistics.median(cpus) * 1e3
            rows.append(row)
    return rows


def many_case(baseline: ModuleType, repeat: int, n_customers: int = 32) -> list[dict]:
    """``online_features_many`` for 32 customers against 32 baseline ``online_features`` calls."""
    from features import pipeline

    rates = rate_tables()["snapshot rates"]
    parts = [customer_history(21, seed, f"u-{seed}") for seed in range(n_customers)]
    histories = pl.concat([p[0].head(20) for p in parts])
    orders = pl.concat([p[1] for p in parts])
    customers = pl.concat([p[2] for p in parts])
    scored = pl.concat([p[0].tail(1) for p in parts])
    rows = []
    for moment in ("arrival", "after_contact"):

        def many(moment: str = moment) -> pl.DataFrame:
            return pipeline.online_features_many(
                histories,
                orders,
                scored,
                customers,
                rates,
                moment,
                journey_gap_days=JOURNEY_GAP_DAYS,
                horizon_days=HORIZON_DAYS,
            )

        def one_by_one(moment: str = moment) -> pl.DataFrame:
            return pl.concat(
                [
                    baseline.online_features(
                        p[0].head(20),
                        p[1],
                        p[0].row(20, named=True),
                        p[2],
                        rates,
                        moment,
                        journey_gap_days=JOURNEY_GAP_DAYS,
                        horizon_days=HORIZON_DAYS,
                    )
                    for p in parts
                ]
            )

        if not many().equals(one_by_one()):
            raise AssertionError(f"online_features_many differs from one-by-one calls ({moment})")
        rounds = max(repeat // 30, 2)
        base_walls, base_cpus = _timed(one_by_one, rounds)
        walls, cpus = _timed(many, rounds * 5)
        rows.append(
            {
                "case": f"online_features_many ({n_customers} customers), {moment}, snapshot rates",
                "contacts_per_call": n_customers,
                "baseline_wall_ms": statistics.median(base_walls) * 1e3 / n_customers,
                "baseline_cpu_ms": statistics.median(base_cpus) * 1e3 / n_customers,
                "current_wall_ms": statistics.median(walls) * 1e3 / n_customers,
                "current_cpu_ms": statistics.median(cpus) * 1e3 / n_customers,
            }
        )
    return rows


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def batch_worker(implementation: str, data: Path, baseline_root: Path, rev: str) -> dict:
    """Build after-contact features once in this process; return wall, CPU and peak memory."""
    if implementation == "baseline":
        module = load_baseline(rev, baseline_root)
    else:
        from features import pipeline as module
    contacts = pl.read_parquet(data / "contacts.parquet")
    orders = pl.read_parquet(data / "orders.parquet")
    loaded_mb = _peak_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    frame = module.build_features(
        contacts, orders, moment="after_contact", horizon_days=HORIZON_DAYS, journey_gap_days=14
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    frame.sort("contact_id").write_parquet(data / f"features-{implementation}.parquet")
    return {"seconds": wall, "cpu_seconds": cpu, "peak_mb": _peak_mb(), "loaded_mb": loaded_mb}


def batch_cases(n_contacts: int, baseline_root: Path, rev: str) -> dict[str, dict]:
    from benchmarks.features import generate

    data = generate(n_contacts, seed=5, out=baseline_root / f"batch-{n_contacts}")
    results = {}
    for implementation in ("baseline", "current"):
        command = [sys.executable, "-m", "benchmarks.online_features", "--batch-worker"]
        command += [implementation, "--data", str(data), "--baseline-root", str(baseline_root)]
        command += ["--baseline-rev", rev]
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
        if done.returncode != 0:
            raise RuntimeError(f"{implementation} batch worker failed:\n{done.stderr[-3000:]}")
        results[implementation] = json.loads(done.stdout.strip().splitlines()[-1])
    same = pl.read_parquet(data / "features-baseline.parquet").equals(
        pl.read_parquet(data / "features-current.parquet")
    )
    results["same_output"] = same
    return results


def write_results(rows: list[dict], batch: dict, args: argparse.Namespace) -> Path:
    import platform

    lines = [
        "## online_features",
        "",
        f"Online feature path (`features.pipeline.online_features`: one contact, a 20-contact "
        f"history, 4 orders, one customer row) and the batch build (`build_features`, after_contact, "
        f"{args.batch_contacts:,} contacts). Baseline = features/{{pipeline,registry,rates}}.py at git "
        f"`{args.baseline_rev}`, loaded next to the current code and timed alternately in the same "
        f"run. Medians of {args.repeat} calls per case; CPU = process time (all threads). "
        f"Polars {pl.__version__}, Python {platform.python_version()}, 2 cores shared with other "
        f"work, run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Outputs of both were checked equal.",
        "",
        "| case | contacts per call | baseline wall (ms/contact) | current wall (ms/contact) | "
        "wall speed-up | baseline CPU (ms/contact) | current CPU (ms/contact) | CPU speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['contacts_per_call']} | {row['baseline_wall_ms']:.2f} | "
            f"{row['current_wall_ms']:.2f} | {row['baseline_wall_ms'] / row['current_wall_ms']:.1f}x"
            f" | {row['baseline_cpu_ms']:.2f} | {row['current_cpu_ms']:.2f} | "
            f"{row['baseline_cpu_ms'] / row['current_cpu_ms']:.1f}x |"
        )
    base, current = batch["baseline"], batch["current"]
    lines += [
        "",
        f"Batch build, {args.batch_contacts:,} contacts, after_contact, one subprocess each "
        f"(same output: {'yes' if batch['same_output'] else 'NO'}):",
        "",
        "| implementation | wall (s) | CPU (s) | peak memory (MB) | after loading data (MB) |",
        "|---|---|---|---|---|",
        f"| baseline | {base['seconds']:.2f} | {base['cpu_seconds']:.2f} | {base['peak_mb']:.0f} | "
        f"{base['loaded_mb']:.0f} |",
        f"| current | {current['seconds']:.2f} | {current['cpu_seconds']:.2f} | "
        f"{current['peak_mb']:.0f} | {current['loaded_mb']:.0f} |",
        "",
        f"- Batch speed-up: {base['seconds'] / current['seconds']:.2f}x wall, "
        f"{base['cpu_seconds'] / current['cpu_seconds']:.2f}x CPU; peak memory ratio "
        f"baseline / current {base['peak_mb'] / current['peak_mb']:.2f}x.",
        "- Where a one-contact call goes (profiled): building the Python expressions is now done "
        "once per process (cached), but it was never most of the cost (~0.4 ms). Polars' own "
        "per-plan work dominates: turning the ~70-feature plan into its internal form and "
        "optimising it takes several ms per collect whatever the frame size, and the default "
        "`collect()` engine (streaming) costs ~10x the in-memory engine on small frames, so every "
        "step now runs lazily with `engine='in-memory'` and a single `collect_all` (plus one for "
        "the sorted contact rows). The fixed cost per plan remains ~15-20 ms CPU on this busy "
        "machine, so a single contact cannot reach 1-2 ms through Polars; many contacts per plan "
        "can: `online_features_many` (one plan for contacts of distinct customers) costs under "
        "1 ms per contact at 32 per call.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    return RESULTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few calls, small batch")
    parser.add_argument("--repeat", type=int, default=300, help="calls per online case")
    parser.add_argument("--batch-contacts", type=int, default=200_000)
    parser.add_argument("--baseline-rev", default=DEFAULT_BASELINE_REV)
    parser.add_argument("--batch-worker", choices=["baseline", "current"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch_worker:
        result = batch_worker(args.batch_worker, args.data, args.baseline_root, args.baseline_rev)
        print(json.dumps(result))
        return 0
    if args.quick:
        args.repeat, args.batch_contacts = 30, 20_000
    with tempfile.TemporaryDirectory(prefix="cto-online-bench-") as tmp:
        root = Path(tmp)
        baseline = load_baseline(args.baseline_rev, root)
        rows = online_cases(baseline, args.repeat)
        for row in rows:
            print(
                f"{row['case']}: {row['baseline_cpu_ms']:.2f} -> {row['current_cpu_ms']:.2f} ms CPU",
                flush=True,
            )
        if hasattr(importlib.import_module("features.pipeline"), "online_features_many"):
            rows += many_case(baseline, args.repeat)
            print(
                f"{rows[-1]['case']}: {rows[-1]['current_cpu_ms']:.2f} ms CPU per contact",
                flush=True,
            )
        batch = batch_cases(args.batch_contacts, root, args.baseline_rev)
        print(json.dumps(batch), flush=True)
    print(f"wrote {write_results(rows, batch, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
