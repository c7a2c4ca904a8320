"""Serving latency for a routing engine: /score from the online store against a bare floor app.

One run, on loopback, with wrk (a C load generator) and a Lua script that times every request
itself (clock_gettime through LuaJIT's FFI; benchmarks/timed.lua), 8 clients (one connection each):

- the service, `cto serve --workers 2 --fast-port P`, on an event store loaded by `cto materialize`
  from the simulated tables; /score with no history in the request (the state is read from the
  store), at arrival (explain off) and after contact with explanations (top 5), three ways: the
  BentoML API route (/score), the ASGI app mounted in the service (/fast/score), and the fast port
  (each worker's own uvicorn server, serving.fast_server);
- the floor: a bare Starlette app on one uvicorn process (benchmarks/floor_app.py) doing "look up a
  precomputed encoded row, LightGBM predict" on the same arrival model, and with pred_contrib on
  the after-contact model.

Every setting runs once per round for ``--seconds``, the rounds in turn (other work on the machine
hits all settings alike); p50/p99/p99.9/max and req/s are medians over the rounds; ratios are to
the floor's medians. One more ``--long-seconds`` run of the fast port's /score at arrival gives the
maximum over a long run, another on a second server started with ``CTO_GC_TUNING=false`` (no
gc.freeze) shows what freezing the heap changes, and one of the floor app shows what the machine
itself allows. The garbage collector in process: a burst of /score requests through the fast
port's ASGI app, every collection recorded (serving.heap), with Python's default thresholds (what
the service keeps) and with raised ones (50,000, 20, 10). In process: a state read + arrival
features + predict per contact; /score_batch
contacts per second; /events ingestion (events per second, one contact per request, state updated
in the same transaction) and the in-process cost of that update; and a state lookup in SQLite via
``sqlite3`` against SQLAlchemy Core (why the store reads the way it does).

    .venv/bin/python -m benchmarks.serving [--quick] [--rounds 3] [--seconds 15] [--contacts 50000]

Writes benchmarks/results/serving.md (then `python -m benchmarks.collect`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "serving.md"
LUA = Path(__file__).resolve().parent / "timed.lua"
CLIENTS = 8
WORKERS = 2


def wrk(
    base_url: str,
    path: str,
    bodies: list[dict],
    seconds: float,
    out_dir: Path,
    *,
    token: str | None = None,
    method: str = "POST",
) -> dict[str, float]:
    """``seconds`` of wrk at CLIENTS connections (one per thread) POSTing ``bodies`` in turn
    (``method="GET"``: GET ``path``, bodies ignored)."""
    bodies_file = out_dir / "bodies.jsonl"
    bodies_file.write_text("".join(json.dumps(body) + "\n" for body in bodies))
    out = out_dir / "latencies.txt"
    out.unlink(missing_ok=True)
    env = dict(os.environ) | {
        "WRK_PATH": path,
        "WRK_BODIES": str(bodies_file),
        "WRK_OUT": str(out),
        "WRK_TOKEN": token or "",
        "WRK_METHOD": method,
    }
    command = [
        shutil.which("wrk") or "/usr/bin/wrk",
        "-t", str(CLIENTS), "-c", str(CLIENTS), "-d", f"{seconds:g}s", "--timeout", "10s",
        "-s", str(LUA), base_url,
    ]  # fmt: skip
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=seconds + 120)
    lines = out.read_text().splitlines()
    errors = int(lines[0].split()[1])
    latencies = np.asarray([float(x) for x in lines[1:]]) / 1000.0  # ms
    return {
        "requests": float(len(latencies)),
        "errors": float(errors),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "p999_ms": float(np.percentile(latencies, 99.9)),
        "max_ms": float(latencies.max()),
        "rps": len(latencies) / seconds,
    }


def _wait(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code in (200, 404, 405):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def start_floor(model_file: Path, rows_file: Path, log: Path) -> tuple[subprocess.Popen, str]:
    from serving.process import free_port

    port = free_port()
    env = dict(os.environ) | {"CTO_FLOOR_MODEL": str(model_file), "CTO_FLOOR_ROWS": str(rows_file)}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.floor_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    _wait(base + "/score")
    return process, base


def _stop(process: subprocess.Popen) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def scored_contacts(sim, count: int) -> list[dict]:
    """The latest contact of ``count`` customers with history (scored from the store)."""
    import polars as pl

    contacts = sim.contacts.sort("started_at")
    nth = contacts.with_columns(pl.int_range(pl.len()).over("customer_id").alias("_n"))
    late = nth.filter(pl.col("_n") >= 1).unique("customer_id", keep="last", maintain_order=True)
    return late.tail(count).drop("_n").to_dicts()


def floor_rows(bundle, sim, rows: list[dict], root: Path) -> dict[str, Path]:
    """The encoded rows each model reads for the scored contacts, and the models as text files."""
    import polars as pl

    from features.pipeline import build_features
    from serving.models import CONVERSION_TASK

    ids = [row["contact_id"] for row in rows]
    files = {}
    for moment in ("arrival", "after_contact"):
        model = bundle.models[CONVERSION_TASK[moment]]
        frame = build_features(
            sim.contacts, sim.orders, sim.customers, bundle.rates_for(moment), moment
        ).filter(pl.col("contact_id").is_in(ids))
        x = model.encoder.encode(frame)
        np.savez(
            root / f"rows_{moment}.npz",
            ids=np.asarray(frame["customer_id"].to_list(), dtype=str),
            rows=x,
        )
        model.booster.save_model(str(root / f"model_{moment}.txt"))
        files[moment] = root / f"rows_{moment}.npz"
    return files


def in_process(bundle, store, rows: list[dict], windows) -> dict[str, float]:
    """Median cost of one /score's work without HTTP: state read, features, encode, predict."""
    from serving.models import CONVERSION_TASK
    from serving.schemas import ScoreRequest
    from serving.scoring import score_one

    out = {}
    for moment, explain in (("arrival", False), ("after_contact", True)):
        requests = [
            ScoreRequest.model_validate(
                {"contact": _contact_payload(row), "moment": moment, "explain": explain}
            )
            for row in rows
        ]
        for request in requests[:20]:
            score_one(bundle, request, store, windows)
        times = []
        for request in requests:
            started = time.perf_counter()
            score_one(bundle, request, store, windows)
            times.append(time.perf_counter() - started)
        out[f"score_{moment}_ms"] = statistics.median(times) * 1000
    # The arrival work alone: state lookup + online features + encode + predict.
    from features.online import online_values

    model = bundle.models[CONVERSION_TASK["arrival"]]
    rates = bundle.rates_for("arrival")
    times = []
    for row in rows:
        started = time.perf_counter()
        state = store.state(row["customer_id"])
        values = online_values(
            state,
            row,
            "arrival",
            journey_gap_days=windows.journey_gap_days,
            horizon_days=windows.horizon_days,
            rates=rates,
        )
        x = model.encoder.encode_rows([tuple(values[n] for n in model.feature_names)])
        model.booster.predict(x, raw_score=True, num_threads=1)
        times.append(time.perf_counter() - started)
    out["arrival_features_predict_ms"] = statistics.median(times) * 1000
    return out


RAISED_GC_THRESHOLDS = (50_000, 20, 10)


def gc_burst(bundle, store, rows: list[dict], windows, requests: int) -> dict[str, dict]:
    """Every collection during ``requests`` /score calls through the fast port's app (in process,
    after serving.heap.settle), with the default collector thresholds and with raised ones."""
    import gc

    from starlette.testclient import TestClient

    from serving.heap import CollectionLog, settle
    from serving.hot_routes import port_app

    class Service:  # what serving.hot_routes reads from the service instance
        def __init__(self) -> None:
            self.bundle, self.store, self.windows, self.last_error = bundle, store, windows, None

    bodies = [
        {"contact": _contact_payload(row), "moment": "arrival", "explain": False} for row in rows
    ]
    default = gc.get_threshold()
    out = {}
    with TestClient(port_app(Service(), None, 1 << 20)) as client:
        for label, thresholds in (("default", default), ("raised", RAISED_GC_THRESHOLDS)):
            client.post("/score", json=bodies[0])
            settle()
            gc.set_threshold(*thresholds)
            with CollectionLog() as log:
                for index in range(requests):
                    client.post("/score", json=bodies[index % len(bodies)])
            gc.set_threshold(*default)
            gc.unfreeze()
            out[label] = {
                "thresholds": thresholds,
                "collections": len(log.collections),
                "full": log.count(2),
                "largest": log.largest(),
                "longest_ms": max((c.cpu_seconds for c in log.collections), default=0.0) * 1000,
                "total_ms": sum(c.cpu_seconds for c in log.collections) * 1000,
            }
    return out


def store_reads(store, customer_ids: list[str]) -> dict[str, float]:
    """One state lookup: sqlite3 on a per-thread connection vs SQLAlchemy Core, and JSON decode."""
    import sqlalchemy as sa

    from features.online import CustomerState

    table = store._state
    statement = sa.select(table.c.state).where(table.c.customer_id == sa.bindparam("customer_id"))
    raw, orm, decode = [], [], []
    with store.engine.connect() as connection:
        for customer_id in customer_ids:
            started = time.perf_counter()
            text = store._state_text(customer_id)
            raw.append(time.perf_counter() - started)
            started = time.perf_counter()
            connection.execute(statement, {"customer_id": customer_id}).scalar()
            orm.append(time.perf_counter() - started)
            started = time.perf_counter()
            CustomerState.from_json(text)
            decode.append(time.perf_counter() - started)
    return {
        "sqlite3_us": statistics.median(raw) * 1e6,
        "sqlalchemy_us": statistics.median(orm) * 1e6,
        "decode_us": statistics.median(decode) * 1e6,
    }


def append_cost(root: Path, rows: list[dict]) -> dict[str, float]:
    """In process: one contact appended with its state update vs the event row alone."""
    import polars as pl

    from features.schema import CONTACTS
    from serving.store import EventStore, _rows_for_storage

    store = EventStore(f"sqlite:///{root / 'append.db'}", history_days=120)
    frames = [pl.DataFrame([row], schema=CONTACTS.polars_schema) for row in rows]
    with_state, events_only = [], []
    for index, frame in enumerate(frames):
        started = time.perf_counter()
        store.append({"contacts": frame})
        with_state.append(time.perf_counter() - started)
        other = frame.with_columns(pl.lit(f"x-{index}").alias("contact_id"))
        started = time.perf_counter()
        with store._write_lock, store.engine.begin() as connection:
            connection.execute(store._upsert("contacts"), _rows_for_storage(other, CONTACTS))
        events_only.append(time.perf_counter() - started)
    store.close()
    return {
        "with_state_ms": statistics.median(with_state) * 1000,
        "events_only_ms": statistics.median(events_only) * 1000,
    }


def _contact_payload(row: dict) -> dict:
    return {
        k: (v.isoformat() if hasattr(v, "isoformat") else v)
        for k, v in row.items()
        if k != "dropoff_reason"
    }


def _row(label: str, result: dict, floor: dict | None) -> str:
    ratio = (
        f"{result['p99_ms'] / floor['p99_ms']:.1f}x | {result['rps'] / floor['rps']:.2f}x"
        if floor
        else "1.0x | 1.00x"
    )
    return (
        f"| {label} | {result['requests']:.0f} | {result['errors']:.0f} | {result['p50_ms']:.2f} | "
        f"{result['p99_ms']:.2f} | {result['p999_ms']:.1f} | {result['max_ms']:.1f} | "
        f"{result['rps']:.0f} | {ratio} |"
    )


def write_results(runs: dict, extra: dict, args: argparse.Namespace) -> str:  # noqa: PLR0915
    floor, floor_contrib = runs["floor"], runs["floor_contrib"]
    floor_livez = runs["floor_livez"]
    lines = [
        "## serving",
        "",
        f"wrk, {CLIENTS} clients (one keep-alive connection each), every request timed by the Lua "
        f"script (benchmarks/timed.lua); {args.rounds} rounds of {args.seconds:g} s per setting, "
        "settings in turn within each round; figures are medians over the rounds (requests and "
        "errors: totals). The service runs `cto serve` with "
        f"{args.workers} workers on an event store loaded by `cto materialize` "
        f"({extra['materialize']['states']:,} customers, {extra['materialize']['seconds']:.1f} s); "
        "every /score reads the customer's state from the store (no history in the request). The "
        "floor is a bare Starlette app on one uvicorn process (benchmarks/floor_app.py): look up a "
        "precomputed encoded row, LightGBM predict, same model, same machine, same run. "
        f"Models trained on {args.contacts:,} simulated contacts."
        + (" Quick run." if args.quick else ""),
        "",
        "| route | requests | non-2xx | p50 ms | p99 ms | p99.9 ms | max ms | req/s | p99 / floor "
        "| req/s / floor |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        _row("GET /livez, floor app (the server alone)", floor_livez, None),
        _row(
            "GET /livez, the BentoML service (no API machinery)", runs["bentoml_livez"], floor_livez
        ),
        _row("floor: lookup + predict", floor, None),
        _row("/score arrival (BentoML API)", runs["api_arrival"], floor),
        _row("/fast/score arrival (ASGI app in the service)", runs["fast_arrival"], floor),
        _row("fast port /score arrival (uvicorn in each worker)", runs["port_arrival"], floor),
        _row("floor: lookup + predict + pred_contrib", floor_contrib, None),
        _row(
            "/score after_contact, explain top 5 (BentoML API)", runs["api_explain"], floor_contrib
        ),
        _row(
            "/fast/score after_contact, explain top 5 (ASGI)", runs["fast_explain"], floor_contrib
        ),
        _row("fast port /score after_contact, explain top 5", runs["port_explain"], floor_contrib),
        "",
    ]
    bento = runs["bentoml_livez"]
    lines += [
        "What the framework costs: BentoML's own `/livez`, which runs none of our code, answers at "
        f"p50 {bento['p50_ms']:.2f} ms against {floor_livez['p50_ms']:.2f} ms for the floor app's "
        f"(p99 {bento['p99_ms'] / floor_livez['p99_ms']:.1f}x, req/s "
        f"{bento['rps'] / floor_livez['rps']:.2f}x): the server and middleware stack a request "
        "crosses before any route, /fast/score's included (the mounted app sits under it). The "
        "fast port is each worker's own uvicorn server (serving.fast_server): none of that stack.",
        "",
    ]
    lines += [
        f"{args.long_seconds:g} s runs of the fast port's /score at arrival, the heap frozen after "
        "loading (serving.heap; the default) and not (`CTO_GC_TUNING=false`, a second server "
        "started for it), and of the floor app (what the machine allows):",
        "",
        "| run | requests | non-2xx | p50 ms | p99 ms | p99.9 ms | max ms | req/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, key in (
        ("fast port, heap frozen", "long"),
        ("fast port, not frozen", "long_untuned"),
        ("floor: lookup + predict", "long_floor"),
    ):
        long = extra[key]
        lines.append(
            f"| {label} | {long['requests']:.0f} | {long['errors']:.0f} | {long['p50_ms']:.2f} | "
            f"{long['p99_ms']:.2f} | {long['p999_ms']:.1f} | {long['max_ms']:.1f} | "
            f"{long['rps']:.0f} |"
        )
    lines.append("")
    burst = extra["gc"]
    lines += [
        f"The garbage collector during {args.gc_requests:,} /score calls through the fast port's "
        "app, in process, after the heap is frozen (every collection recorded with `gc.callbacks`; "
        "pauses in CPU time, so other work on the machine does not count):",
        "",
        "| collector thresholds | collections | full collections | most objects freed at once "
        "| longest pause ms | all pauses ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, result in burst.items():
        name = "Python's default (the service)" if label == "default" else "raised (tried before)"
        lines.append(
            f"| {name} {tuple(result['thresholds'])} | {result['collections']} | "
            f"{result['full']} | {result['largest']:,} | {result['longest_ms']:.2f} | "
            f"{result['total_ms']:.1f} |"
        )
    lines.append("")
    per_round = extra["per_round"]
    lines += [
        "Per round (p99 ms / req/s), to show the spread:",
        "",
        "| route | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " |",
        "| --- | " + " | ".join("---" for _ in range(args.rounds)) + " |",
    ]
    for name, results in per_round.items():
        cells = " | ".join(f"{r['p99_ms']:.2f} / {r['rps']:.0f}" for r in results)
        lines.append(f"| {name} | {cells} |")
    process = extra["in_process"]
    reads = extra["reads"]
    append = extra["append"]
    batch = extra["batch"]
    events = extra["events"]
    lines += [
        "",
        "In process (no HTTP), medians over the scored contacts:",
        "",
        f"- state read + arrival features + encode + predict: "
        f"{process['arrival_features_predict_ms']:.3f} ms per contact;",
        f"- the whole /score work (request model in, answer model out): arrival "
        f"{process['score_arrival_ms']:.3f} ms, after contact with explanations "
        f"{process['score_after_contact_ms']:.3f} ms;",
        f"- one state lookup in SQLite: {reads['sqlite3_us']:.0f} us through `sqlite3` (what the "
        f"store does), {reads['sqlalchemy_us']:.0f} us through SQLAlchemy Core; decoding the "
        f"state's JSON {reads['decode_us']:.0f} us;",
        f"- appending one contact: {append['with_state_ms']:.2f} ms with the state update in the "
        f"same transaction, {append['events_only_ms']:.2f} ms for the event row alone (each "
        "commit fsyncs: SQLite's synchronous=FULL).",
        "",
        f"/score_batch ({batch['rows']:.0f} contacts from the store, arrival, explain off, over "
        f"HTTP): median {batch['median_ms']:.0f} ms per call, {batch['rows_per_s']:,.0f} contacts/s.",
        "",
        f"/events ingestion (wrk, {CLIENTS} clients, one contact per request, state updated in the "
        f"same transaction, {args.seconds:g} s): {events['rps']:.0f} events/s, p50 "
        f"{events['p50_ms']:.1f} ms, p99 {events['p99_ms']:.1f} ms, {events['errors']:.0f} "
        "non-2xx.",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:  # noqa: PLR0915
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small smoke run.")
    parser.add_argument("--contacts", type=int, default=50_000, help="Simulated contacts.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds (medians reported).")
    parser.add_argument("--seconds", type=float, default=15.0, help="Seconds per setting.")
    parser.add_argument("--long-seconds", type=float, default=60.0, help="The long run.")
    parser.add_argument("--workers", type=int, default=WORKERS, help="Service worker processes.")
    parser.add_argument(
        "--gc-requests", type=int, default=3000, help="Requests of the in-process GC burst."
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="Keep the trained models and tables here and reuse them on the next run.",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.contacts, args.rounds, args.seconds, args.long_seconds = 8_000, 1, 3.0, 5.0
        args.gc_requests = 300

    from benchmarks.explain import trained_store
    from features.settings import get_settings
    from features.simulate import simulate
    from serving.models import load_bundle
    from serving.process import free_port, start_server
    from serving.scoring import FeatureWindows
    from serving.store import EventStore

    defaults = get_settings()
    windows = FeatureWindows(defaults.journey_gap_days, defaults.horizon_days)
    with tempfile.TemporaryDirectory(prefix="cto-bench-serving-") as tmp:
        root = Path(tmp)
        if args.work_dir is not None:
            trained = args.work_dir.resolve() / str(args.contacts)
            if not (trained / "mlflow.db").is_file():
                trained.mkdir(parents=True, exist_ok=True)
                trained_store(trained, args.contacts)
            settings = get_settings(
                tracking_uri=f"sqlite:///{(trained / 'mlflow.db').resolve()}",
                artifact_location=str(trained / "mlruns"),
            )
            shutil.copytree(trained / "sim", root / "sim")
        else:
            settings = trained_store(root, args.contacts)
        sim = simulate(n_contacts=args.contacts, seed=11)  # the tables trained on
        store_url = f"sqlite:///{root / 'events.db'}"
        started = time.perf_counter()
        loaded = subprocess.run(
            [sys.executable, "-m", "cto.cli", "materialize", str(root / "sim"),
             "--event-store-url", store_url],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        materialize = {
            "seconds": time.perf_counter() - started,
            "states": int(
                loaded.stdout.split("materialized ")[1].split(" customer")[0].replace(",", "")
            ),
        }
        print(loaded.stdout.strip(), flush=True)

        bundle = load_bundle(settings)
        rows = scored_contacts(sim, 2000)
        floor_rows(bundle, sim, rows, root)
        store = EventStore(store_url, history_days=defaults.history_days)
        extra: dict = {
            "materialize": materialize,
            "in_process": in_process(bundle, store, rows[:500], windows),
            "reads": store_reads(store, [r["customer_id"] for r in rows[:500]]),
            "append": append_cost(root, rows[:200]),
            "gc": gc_burst(bundle, store, rows[:500], windows, args.gc_requests),
        }
        store.close()
        print(extra, flush=True)

        arrival = [
            {"contact": _contact_payload(r), "moment": "arrival", "explain": False} for r in rows
        ]
        explain = [
            {"contact": _contact_payload(r), "moment": "after_contact", "explain": True, "top_k": 5}
            for r in rows
        ]
        floor_bodies = [{"customer_id": r["customer_id"]} for r in rows]
        server_env = {
            "CTO_TRACKING_URI": settings.tracking_uri,
            "CTO_EVENT_STORE_URL": store_url,
            "CTO_WORKERS": str(args.workers),
        }
        fast_port = free_port()
        server = start_server(server_env | {"CTO_FAST_PORT": str(fast_port)}, root / "server.log")
        fast_url = f"http://127.0.0.1:{fast_port}"
        untuned = None
        floors = []
        try:
            floor_a, floor_a_url = start_floor(
                root / "model_arrival.txt", root / "rows_arrival.npz", root / "floor_a.log"
            )
            floors.append(floor_a)
            floor_b, floor_b_url = start_floor(
                root / "model_after_contact.txt",
                root / "rows_after_contact.npz",
                root / "floor_b.log",
            )
            floors.append(floor_b)
            settings_run = [
                ("floor_livez", floor_a_url, "/livez", None),
                ("bentoml_livez", server.base_url, "/livez", None),
                ("floor", floor_a_url, "/score", floor_bodies),
                ("api_arrival", server.base_url, "/score", arrival),
                ("fast_arrival", server.base_url, "/fast/score", arrival),
                ("port_arrival", fast_url, "/score", arrival),
                ("floor_contrib", floor_b_url, "/score_contrib", floor_bodies),
                ("api_explain", server.base_url, "/score", explain),
                ("fast_explain", server.base_url, "/fast/score", explain),
                ("port_explain", fast_url, "/score", explain),
            ]
            per_round: dict[str, list[dict]] = {name: [] for name, *_ in settings_run}
            for round_number in range(1, args.rounds + 1):
                for name, base, path, given in settings_run:
                    method = "GET" if given is None else "POST"
                    bodies = given or [{}]
                    wrk(base, path, bodies, 1.0, root, method=method)  # warm-up
                    result = wrk(base, path, bodies, args.seconds, root, method=method)
                    per_round[name].append(result)
                    print(f"round {round_number} {name}", result, flush=True)
            runs = {}
            for name, results in per_round.items():
                median = {key: statistics.median(r[key] for r in results) for key in results[0]}
                median["requests"] = sum(r["requests"] for r in results)
                median["errors"] = sum(r["errors"] for r in results)
                runs[name] = median
            extra["per_round"] = per_round
            wrk(fast_url, "/score", arrival, 1.0, root)
            extra["long"] = wrk(fast_url, "/score", arrival, args.long_seconds, root)
            print("long", extra["long"], flush=True)
            extra["long_floor"] = wrk(floor_a_url, "/score", floor_bodies, args.long_seconds, root)
            print("long floor", extra["long_floor"], flush=True)

            body = {
                "moment": "arrival",
                "items": [{"contact": _contact_payload(r)} for r in rows[:256]],
            }
            times = []
            with httpx.Client(timeout=300) as client:
                for _ in range(5):
                    started = time.perf_counter()
                    response = client.post(server.base_url + "/score_batch", json=body)
                    assert response.status_code == 200, response.text
                    times.append(time.perf_counter() - started)
            median_s = statistics.median(times)
            extra["batch"] = {
                "rows": float(len(body["items"])),
                "median_ms": median_s * 1000,
                "rows_per_s": len(body["items"]) / median_s,
            }
            # New contacts of existing customers, one per request (each an insert + state update).
            events = [
                {"contacts": [_contact_payload(r) | {"contact_id": f"ev-{i}"}]}
                for i, r in enumerate(rows)
            ]
            extra["events"] = wrk(server.base_url, "/events", events, args.seconds, root)
            print("events", extra["events"], flush=True)

            # The GC A/B: the same long run on a server without the heap settling.
            server.stop()
            untuned_port = free_port()
            untuned = start_server(
                server_env | {"CTO_FAST_PORT": str(untuned_port), "CTO_GC_TUNING": "false"},
                root / "server_untuned.log",
            )
            untuned_url = f"http://127.0.0.1:{untuned_port}"
            wrk(untuned_url, "/score", arrival, 1.0, root)
            extra["long_untuned"] = wrk(untuned_url, "/score", arrival, args.long_seconds, root)
            print("long untuned", extra["long_untuned"], flush=True)
        finally:
            server.stop()
            if untuned is not None:
                untuned.stop()
            for process in floors:
                _stop(process)
    print(write_results(runs, extra, args))


if __name__ == "__main__":
    main()
