"""The main job, end to end on the embedded defaults.

simulate -> validate -> labels/KPIs -> features -> train + register + promote -> serve and score over HTTP
-> driver report. Each stage prints what it did and where its output is.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HELP = "Run the whole pipeline end to end on simulated data (the README's main job)."
# Share of follow-up and callback decisions the demo's simulated contact centre takes at random.
DEMO_EXPLORATION = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--contacts", type=int, default=None, help="Simulated contacts (default: settings)."
    )
    parser.add_argument("--seed", type=int, default=None, help="Seed (default: settings).")
    parser.add_argument(
        "--out", type=Path, default=Path("out"), help="Where data, features and the report go."
    )
    parser.add_argument("--port", type=int, default=None, help="Port for the scoring service.")
    parser.add_argument("--skip-serve", action="store_true", help="Do not start the service.")


def _stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(t0: float) -> None:
    print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)


def _absolute_sqlite(uri: str) -> str:
    """The server runs in the repo root; a relative sqlite path must point at the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def run(args: argparse.Namespace) -> int:
    import datetime as dt

    import polars as pl

    from features.settings import get_settings

    overrides: dict[str, object] = {}
    if args.contacts is not None:
        overrides["simulate_contacts"] = args.contacts
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.port is not None:
        overrides["port"] = args.port
    settings = get_settings(**overrides)
    out: Path = args.out
    data_dir = out / "data"
    out.mkdir(parents=True, exist_ok=True)

    t0 = _stage(f"1/7 simulate {settings.simulate_contacts:,} contacts (seed {settings.seed})")
    from features.simulate import simulate

    # A tenth of follow-up and callback decisions by a fair coin (exploration.parquet): what the
    # follow-up and callback uplift models learn from and are judged on.
    sim = simulate(
        n_contacts=settings.simulate_contacts, seed=settings.seed, exploration=DEMO_EXPLORATION
    )
    sim.write(data_dir)
    print(f"   wrote {data_dir}/ contacts={sim.contacts.height:,} orders={sim.orders.height:,}")
    print(
        f"   {DEMO_EXPLORATION:.0%} of follow-up and callback decisions randomised (exploration.parquet)"
    )
    _done(t0)

    t0 = _stage("2/7 validate against the data contract")
    from features.validate import load_and_validate

    result = load_and_validate(data_dir)
    for row in result.summary.iter_rows(named=True):
        print(
            f"   {row['table']}: {row['read']:,} read, {row['accepted']:,} accepted, "
            f"{row['rejected']:,} rejected, {row['coerced_to_other']:,} coerced to 'other'"
        )
    _done(t0)

    t0 = _stage("3/7 labels and contact-to-order KPIs")
    from features.kpis import kpi_table
    from features.labels import label_contacts

    tables = result.tables
    labeled = label_contacts(
        tables["contacts"], tables["orders"], settings.horizon_days, settings.journey_gap_days
    )
    overall = kpi_table(labeled).row(0, named=True)
    print(
        f"   {overall['contacts']:,} contacts, {overall['orders']:,} orders: contact-to-order ratio "
        f"{overall['contact_to_order_ratio']:.1%}, {overall['contacts_per_order']:.1f} contacts per order"
    )
    for row in kpi_table(labeled, by=["channel"]).iter_rows(named=True):
        print(
            f"   {row['channel']:<9} {row['contacts']:>8,} contacts  "
            f"ratio {row['contact_to_order_ratio']:.1%}"
        )
    _done(t0)

    t0 = _stage("4/7 point-in-time features")
    from features.pipeline import write_features
    from features.rates import compute_rates
    from features.registry import FEATURE_SET

    rates = compute_rates(labeled, settings.horizon_days)
    rows = write_features(
        tables["contacts"],
        tables["orders"],
        out / "features.parquet",
        tables.get("customers"),
        rates=rates,
        moment="after_contact",
    )
    print(
        f"   {FEATURE_SET.name} v{FEATURE_SET.version}: {rows:,} rows x "
        f"{len(FEATURE_SET.for_moment('after_contact'))} features -> {out / 'features.parquet'}"
    )
    _done(t0)

    t0 = _stage("5/7 train, register and promote (MLflow)")
    from training.pipeline import run_training

    trained = run_training(data_dir, settings, promote=True, progress=True)
    for task, version in trained.versions.items():
        decision = trained.promoted.get(task)
        verdict = "champion" if decision is not None and decision.promoted else "not promoted"
        reason = f" ({decision.reason})" if decision is not None else ""
        print(f"   {task}: version {version}, {verdict}{reason}")
    _done(t0)

    if not args.skip_serve:
        t0 = _stage("6/7 serve: load the online store, start the BentoML service, score over HTTP")
        from serving.demo import format_answer, run_demo_requests
        from serving.process import start_server
        from serving.store import EventStore

        store_url = f"sqlite:///{(out / 'events.db').resolve()}"
        # What `cto materialize DATA_DIR` does: the service scores with full history at once.
        store = EventStore(store_url, settings.history_days)
        try:
            loaded = store.materialize(
                tables["contacts"], tables["orders"], tables.get("customers")
            )
        finally:
            store.close()
        print(f"   online store: {loaded['states']:,} customer states -> {out / 'events.db'}")
        env = {
            "CTO_TRACKING_URI": _absolute_sqlite(settings.tracking_uri),
            "CTO_EVENT_STORE_URL": store_url,
        }
        server = start_server(env, out / "serve.log")
        try:
            print(f"   service ready at {server.base_url} (OpenAPI: {server.base_url}/docs.json)")
            latest = tables["contacts"].sort("started_at").tail(200)
            sample = latest.filter(pl.col("channel").is_in(["phone", "chat", "email"])).head(4)
            # No history in the requests: the service reads each customer's state.
            answers = run_demo_requests(server.base_url, sample)
            for answer in answers:
                print(format_answer(answer))
        finally:
            server.stop()
        _done(t0)

    t0 = _stage("7/7 driver report")
    from reports.driver import build_report

    contacts = tables["contacts"]
    until = contacts["started_at"].max()
    until_date = until.date() + dt.timedelta(days=1)
    since_date = until_date - dt.timedelta(days=28)
    report = build_report(data_dir, since_date, until_date, out / "driver-report.html", settings)
    print(f"   driver report: {Path(report).resolve()}")
    _done(t0)
    bin_dir = Path(sys.executable).parent
    print("\nDone. Next steps (each works as written in a new shell):")
    print(f"   driver report:   open {Path(report).resolve()} in a browser")
    print(
        f"   MLflow UI:       {bin_dir / 'mlflow'} ui --backend-store-uri "
        f"{_absolute_sqlite(settings.tracking_uri)}"
    )
    events_db = (out / "events.db").resolve()
    if events_db.exists():
        # The demo's online store holds every simulated customer's state: serve from it.
        print(
            f"   scoring service: CTO_EVENT_STORE_URL=sqlite:///{events_db} CTO_TRACKING_URI="
            f"{_absolute_sqlite(settings.tracking_uri)} {bin_dir / 'cto'} serve"
        )
    return 0
