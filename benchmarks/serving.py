"""Serving latency and throughput on loopback: our /score and /score_batch vs `mlflow models serve`.

Starts the real service (`cto serve`) and `mlflow models serve --env-manager local` on the same
champion conversion model, side by side with the same number of workers, and sends each a bounded
number of requests from 1, 8 and 32 concurrent keep-alive clients on 127.0.0.1, every setting once
per round for ``--rounds`` rounds (medians reported). Our /score takes raw contacts plus history
and computes features, priority, drop-off reasons and (optionally) explanations; mlflow serve takes
the already encoded feature row and returns the raw score: its number is the floor of a bare model
server. The floor of our server itself is measured under the same load on two endpoints that score
nothing (BentoML's /livez and our /model_info).

    .venv/bin/python -m benchmarks.serving [--quick] [--rounds 3] [--workers 2]
        [--tracking-uri sqlite:////abs/mlflow.db]

Writes benchmarks/results/serving.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "serving.md"
CONCURRENCY = (1, 8, 32)


def run_load(
    url: str, payloads: list[dict] | None, concurrency: int, total: int
) -> dict[str, float]:
    """``total`` requests from ``concurrency`` threads, each with one keep-alive connection.

    POST of the payloads in turn, or GET when ``payloads`` is None. The client is the standard
    library's ``http.client``: it costs the load generator about half the CPU per request of
    httpx, and this machine's 2 cores are shared by the client and the servers.
    """
    parts = urlsplit(url)
    # Serialised once up front, so the load generator spends its CPU on sending, not encoding.
    # json.dumps writes NaN as the JSON extension MLflow reads.
    bodies = [json.dumps(payload).encode() for payload in payloads] if payloads else [None]
    method = "POST" if payloads else "GET"
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        nonlocal errors
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                body = bodies[index % len(bodies)]
                started = time.perf_counter()
                connection.request(method, parts.path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status == 200:
                        latencies.append(elapsed)
                    else:
                        errors += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ordered = np.sort(np.asarray(latencies))
    return {
        "requests": float(len(latencies)),
        "errors": float(errors),
        "p50_ms": float(np.percentile(ordered, 50) * 1000) if len(ordered) else float("nan"),
        "p99_ms": float(np.percentile(ordered, 99) * 1000) if len(ordered) else float("nan"),
        "rps": len(latencies) / wall,
    }


def _wait(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def start_mlflow_serve(
    settings, model_name: str, log_path: Path, workers: int
) -> tuple[subprocess.Popen, str]:
    from serving.process import free_port

    port = free_port()
    env = dict(os.environ) | {
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.tracking_uri,
        # mlflow serve runs `uvicorn` from PATH: use the one installed beside this interpreter.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{model_name}@{settings.champion_alias}",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)],
        env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    _wait(base + "/ping")
    return process, base


def _stop(process: subprocess.Popen) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def build_payloads(contacts, orders, count: int) -> list[dict]:
    import polars as pl

    from serving.demo import contact_payload, history_payload

    late = contacts.filter(pl.col("started_at") >= contacts["started_at"].quantile(0.8)).head(count)
    return [
        {
            "contact": contact_payload(row, "after_contact"),
            "moment": "after_contact",
            "history": history_payload(row["customer_id"], row["started_at"], contacts, orders),
        }
        for row in late.to_dicts()
    ]


def mlflow_payloads(settings, contacts, orders, customers, rows: int) -> tuple[list[dict], object]:
    """Encoded feature rows of the after-contact conversion model (what mlflow serve takes)."""
    from features.pipeline import build_features
    from serving.models import CONVERSION_AFTER_CONTACT, champion_versions, load_model

    version = champion_versions(settings)[CONVERSION_AFTER_CONTACT]
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(settings, CONVERSION_AFTER_CONTACT, version, Path(tmp))
    features = build_features(contacts, orders, customers, model.rates, "after_contact").tail(rows)
    x = model.encoder.encode(features)
    columns = list(model.feature_names)
    bodies = [
        {
            "dataframe_split": {
                "columns": columns,
                "data": [[float(v) for v in row]],
            }
        }
        for row in x
    ]
    return bodies, model.rates


def feature_path_cost(rates, contacts, orders, samples: int, batch_rows: int) -> dict[str, float]:
    """In-process cost of the online feature path: one contact's state read into feature values."""
    import polars as pl

    from features.online import online_values, states_from_frames

    late = contacts.filter(pl.col("started_at") >= contacts["started_at"].quantile(0.8))
    rows = (
        late.unique("customer_id", keep="first", maintain_order=True)
        .head(max(samples, batch_rows))
        .to_dicts()
    )
    states = states_from_frames(contacts, orders)
    wall, cpu = [], []
    for row in rows[:samples]:
        started, started_cpu = time.perf_counter(), time.process_time()
        online_values(
            states[row["customer_id"]],
            row,
            "after_contact",
            journey_gap_days=14,
            horizon_days=7,
            rates=rates,
        )
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    batch = rows[:batch_rows]
    started = time.perf_counter()
    for row in batch:
        online_values(
            states[row["customer_id"]],
            row,
            "after_contact",
            journey_gap_days=14,
            horizon_days=7,
            rates=rates,
        )
    batch_s = time.perf_counter() - started
    return {
        "single_ms": statistics.median(wall) * 1000,
        "single_cpu_ms": statistics.median(cpu) * 1000,
        "batch_rows": float(len(batch)),
        "batch_ms_per_row": batch_s * 1000 / len(batch),
    }


def write_results(  # noqa: PLR0917 (one call site)
    ours: dict,
    floor: dict,
    batch: dict,
    theirs: dict,
    features: dict,
    quick: bool,
    workers: int,
    rounds: int,
) -> str:
    lines = [
        "## serving",
        "",
        "Loopback, one run, both servers on this 2-core machine with the load generator (Python threads, "
        "one keep-alive `http.client` connection each). Both servers run side by side with "
        f"{workers} worker process(es) each; every setting is measured once per round, {rounds} rounds in "
        "turn, and p50, p99 and req/s are the medians over the rounds (requests: the total). "
        "`/score` is our service: "
        "raw contact + history in, features computed online, conversion probability, drop-off reasons, "
        "contacts-to-order, priority and next action out; `mlflow` is `mlflow models serve --env-manager local` "
        "on the same after-contact conversion model, fed the already encoded feature row."
        + (" Quick run: few requests." if quick else ""),
        "",
        "| server | clients | requests | p50 ms | p99 ms | req/s | ratio vs mlflow req/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for clients in CONCURRENCY:
        base = theirs.get(clients)
        for label, result in (
            ("/score", ours[(clients, False)]),
            ("/score explain", ours[(clients, True)]),
            ("mlflow serve", base),
        ):
            if result is None:
                continue
            ratio = result["rps"] / base["rps"] if base else float("nan")
            lines.append(
                f"| {label} | {clients} | {result['requests']:.0f} | {result['p50_ms']:.1f} | "
                f"{result['p99_ms']:.1f} | {result['rps']:.0f} | {ratio:.2f}x |"
            )
    lines += [
        "",
        "The floor of the server on this machine, same load generator, same run: `/livez` (BentoML's "
        "built-in liveness route, no API machinery) and `/model_info` (one of our API endpoints that "
        "scores nothing: request parsing, a thread hop and a small JSON answer).",
        "",
        "| endpoint | clients | requests | p50 ms | p99 ms | req/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (clients, label), result in sorted(floor.items()):
        lines.append(
            f"| {label} | {clients} | {result['requests']:.0f} | {result['p50_ms']:.1f} | "
            f"{result['p99_ms']:.1f} | {result['rps']:.0f} |"
        )
    lines += [
        "",
        f"`/score_batch` ({batch['rows']:.0f} contacts per call, explain off): median "
        f"{batch['median_s'] * 1000:.0f} ms per call, {batch['rows_per_s']:.0f} contacts/s; "
        f"single /score at 1 client: {ours[(1, False)]['rps']:.0f} contacts/s "
        f"({batch['rows_per_s'] / ours[(1, False)]['rps']:.1f}x from batching).",
        "",
        f"Online feature path in process (serving.scoring.feature_rows -> "
        f"features.pipeline.online_features_many, after "
        f"contact, history in memory): median {features['single_ms']:.1f} ms per contact "
        f"({features['single_cpu_ms']:.1f} ms CPU); in one call for {features['batch_rows']:.0f} customers "
        f"{features['batch_ms_per_row']:.2f} ms per contact "
        f"({features['single_ms'] / features['batch_ms_per_row']:.0f}x less).",
        "",
        "Targets (2 cores): p99 < 10 ms without and < 25 ms with explanations at 8 clients; throughput >= 3x "
        "mlflow serve without explanations and >= 1x with. Concurrent /score requests go through BentoML's "
        "adaptive batcher (up to 32 per batch: one feature plan of distinct customers, one predict per "
        "model, one pred_contrib); a lone request still pays one Polars plan (the feature-path row above).",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small smoke run.")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store with champion models.")
    parser.add_argument(
        "--contacts", type=int, default=40_000, help="Simulated contacts if training."
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="Worker processes of both servers (one per core)."
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="Times each setting is measured (medians reported)."
    )
    args = parser.parse_args(argv)

    from benchmarks.explain import trained_store
    from features.settings import get_settings
    from features.simulate import simulate
    from serving.process import start_server
    from serving.service_config import absolute_sqlite_url

    requests_per_setting = 30 if args.quick else 300
    with tempfile.TemporaryDirectory(prefix="cto-bench-serving-") as tmp:
        root = Path(tmp)
        if args.tracking_uri:
            settings = get_settings(tracking_uri=absolute_sqlite_url(args.tracking_uri))
        else:
            settings = trained_store(root, 8_000 if args.quick else args.contacts)
        sim = simulate(n_contacts=4_000, seed=5)
        contacts, orders, customers = sim.contacts, sim.orders, sim.customers
        payloads = build_payloads(contacts, orders, 200)

        mlflow_bodies, rates = mlflow_payloads(settings, contacts, orders, customers, 200)
        features = feature_path_cost(
            rates, contacts, orders, 20 if args.quick else 100, 64 if args.quick else 256
        )
        print("feature path", features, flush=True)
        # Both servers run side by side (the idle one costs next to nothing) and every setting is
        # measured once per round, the rounds one after the other: a burst of load on the shared
        # machine hits both servers' numbers alike, and the medians over rounds are reported.
        server = start_server(
            {
                "CTO_TRACKING_URI": settings.tracking_uri,
                "CTO_EVENT_STORE_URL": f"sqlite:///{root / 'events.db'}",
                "CTO_WORKERS": str(args.workers),
            },
            root / "server.log",
        )
        process = None
        try:
            process, mlflow_base = start_mlflow_serve(
                settings,
                f"{settings.model_prefix}-conversion-after-contact",
                root / "mlflow.log",
                args.workers,
            )
            settings_run = []
            for clients in CONCURRENCY:
                for explain in (False, True):
                    bodies = [p | {"explain": explain} for p in payloads]
                    settings_run.append(("ours", (clients, explain), "/score", bodies, 1))
                settings_run.append(("theirs", clients, "/invocations", mlflow_bodies, 1))
                # The floor of this server and machine: endpoints that score nothing.
                settings_run.append(("floor", (clients, "/livez"), "/livez", None, 3))
                settings_run.append(("floor", (clients, "/model_info"), "/model_info", [{}], 3))
            runs: dict = {}
            for round_number in range(1, args.rounds + 1):
                for kind, key, path, bodies, scale in settings_run:
                    base = mlflow_base if kind == "theirs" else server.base_url
                    clients = key if kind == "theirs" else key[0]
                    run_load(base + path, bodies[:8] if bodies else None, clients, 2 * clients)
                    result = run_load(base + path, bodies, clients, scale * requests_per_setting)
                    runs.setdefault((kind, key), []).append(result)
                    print(f"round {round_number}", kind, key, result, flush=True)
            ours, floor, theirs = {}, {}, {}
            for (kind, key), results in runs.items():
                median = {
                    field: statistics.median(result[field] for result in results)
                    for field in results[0]
                }
                median["requests"] = sum(result["requests"] for result in results)
                {"ours": ours, "floor": floor, "theirs": theirs}[kind][key] = median
            rows = 64 if args.quick else 256
            body = {
                "moment": "after_contact",
                "items": [{k: p[k] for k in ("contact", "history")} for p in payloads[:rows]],
            }
            times = []
            with httpx.Client(timeout=300) as client:
                for _ in range(3):
                    started = time.perf_counter()
                    assert (
                        client.post(server.base_url + "/score_batch", json=body).status_code == 200
                    )
                    times.append(time.perf_counter() - started)
            median_s = statistics.median(times)
            batch = {
                "rows": float(len(body["items"])),
                "median_s": median_s,
                "rows_per_s": len(body["items"]) / median_s,
            }
            print("batch", batch, flush=True)
        finally:
            server.stop()
            if process is not None:
                _stop(process)
    print(
        write_results(ours, floor, batch, theirs, features, args.quick, args.workers, args.rounds)
    )


if __name__ == "__main__":
    main()
