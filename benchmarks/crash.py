"""Crash test: a stream of /events while workers and the server are killed with SIGKILL.

Each round starts `cto serve --workers 2` on the same port, streams /events from ``--clients``
HTTP clients (each request: ``--rows`` new contacts with unique ids), kills a random worker with
SIGKILL at a random moment (the supervisor starts a new one; the stream goes on), then kills the
server process itself with SIGKILL at another random moment. It then counts the workers still
alive (orphans), restarts the server on the same port, and finally reads the event store and the
online feature store directly: every row of every acknowledged request (a 200 that counted it as
accepted) must be there. Requests without an answer are not acknowledged; they may or may not
be stored.

    .venv/bin/python -m benchmarks.crash [--rounds 8] [--tracking-uri sqlite:////abs/mlflow.db]

Writes benchmarks/results/crash.md.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from benchmarks._reliability import contact_rows, trained_registry
from serving.process import free_port, start_server

RESULTS = Path(__file__).resolve().parent / "results" / "crash.md"


class Stream:
    """Clients posting /events until stopped; remembers every acknowledged contact id."""

    def __init__(self, base_url: str, clients: int, rows: int, prefix: str) -> None:
        self.base_url = base_url
        self.rows = rows
        self.prefix = prefix
        self.acknowledged: list[str] = []
        self.sent = 0
        self.unanswered = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = 0
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, client: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as http:
            while not self._stop.is_set():
                with self._lock:
                    self._counter += 1
                    batch = f"{self.prefix}-{client}-{self._counter}"
                rows = contact_rows(self.rows, customers=max(1, self.rows // 2), prefix=batch)
                try:
                    answer = http.post("/events", json={"contacts": rows})
                except httpx.HTTPError:
                    with self._lock:
                        self.sent += 1
                        self.unanswered += 1
                    time.sleep(0.05)  # the server is down: retry soon, as a client would
                    continue
                with self._lock:
                    self.sent += 1
                    body = answer.json() if answer.status_code == 200 else {}
                    if answer.status_code == 200 and body["accepted"]["contacts"] == len(rows):
                        self.acknowledged.extend(r["contact_id"] for r in rows)
                    else:
                        self.refused += 1


def _workers(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def run(rounds: int, clients: int, rows: int, tracking_uri: str, seed: int) -> dict:
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="cto-crash-"))
    events_url = f"sqlite:///{root / 'events.db'}"
    env = {
        "CTO_TRACKING_URI": tracking_uri,
        "CTO_EVENT_STORE_URL": events_url,
        "CTO_WORKERS": "2",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    port = free_port()
    server = start_server(env, root / "server-0.log", port=port)
    stats: dict = {"rounds": [], "acknowledged": [], "sent": 0, "unanswered": 0, "refused": 0}
    for index in range(rounds):
        stream = Stream(server.base_url, clients, rows, prefix=f"r{index}")
        stream.start()
        time.sleep(rng.uniform(0.5, 3.0))
        workers = _workers(server.process.pid)
        victim = rng.choice(workers)
        os.kill(victim.pid, signal.SIGKILL)
        time.sleep(rng.uniform(1.0, 4.0))  # the supervisor replaces the worker meanwhile
        workers = _workers(server.process.pid)
        os.kill(server.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        server.process.wait(timeout=30)
        _gone, alive = psutil.wait_procs(workers, timeout=10)
        orphans = len(alive)
        for process in alive:  # leave a clean machine for the next round
            process.kill()
        time.sleep(rng.uniform(0.0, 1.0))  # the stream keeps knocking on the closed port
        restarted = True
        try:
            server = start_server(env, root / f"server-{index + 1}.log", port=port)
        except RuntimeError:
            restarted = False
        restart_seconds = time.monotonic() - killed_at
        time.sleep(0.5)
        stream.stop()
        stats["rounds"].append(
            {"orphans": orphans, "restarted": restarted, "restart_seconds": restart_seconds}
        )
        stats["acknowledged"].extend(stream.acknowledged)
        stats["sent"] += stream.sent
        stats["unanswered"] += stream.unanswered
        stats["refused"] += stream.refused
        print(
            f"round {index + 1}/{rounds}: {len(stream.acknowledged):,} rows acknowledged, "
            f"{stream.unanswered} requests unanswered, orphans {orphans}, "
            f"restart {'ok' if restarted else 'FAILED'} in {restart_seconds:.1f} s",
            flush=True,
        )
        if not restarted:
            break
    server.stop()
    stats["lost"], stats["state_lost"] = count_lost(events_url, stats["acknowledged"])
    return stats


def count_lost(events_url: str, acknowledged: list[str]) -> tuple[int, int]:
    """Acknowledged contacts missing from the event table, and from the customer states."""
    import sqlalchemy as sa

    from serving.store import EventStore

    store = EventStore(events_url, history_days=3650)
    with store.engine.connect() as connection:
        stored = {row[0] for row in connection.execute(sa.text("SELECT contact_id FROM contacts"))}
        in_states: set[str] = set()
        for (text,) in connection.execute(sa.text("SELECT state FROM customer_state")):
            from features.online import CustomerState

            in_states.update(CustomerState.from_json(text).contacts)
    store.close()
    return len(set(acknowledged) - stored), len(set(acknowledged) - in_states)


def write_results(stats: dict, args: argparse.Namespace) -> None:
    rounds = stats["rounds"]
    restarts = [r["restart_seconds"] for r in rounds if r["restarted"]]
    lines = [
        "## crash",
        "",
        f"`python -m benchmarks.crash --rounds {args.rounds} --clients {args.clients} --rows "
        f"{args.rows}`, measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
        f"{os.cpu_count()} cores (1-minute load average at the end: {os.getloadavg()[0]:.1f}). "
        "Each round streams /events from the clients into `cto serve --workers 2`, SIGKILLs a "
        "random worker, then the server process, counts surviving workers, restarts on the same "
        "port; at the end every acknowledged row is looked up in the event table and in the "
        "online feature store.",
        "",
        "| rounds | kills (workers + servers) | requests | acknowledged rows | unanswered requests "
        "| acknowledged rows lost (events / state) | orphan workers | restarts ok | restart s, median (max) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(rounds)} | {2 * len(rounds)} | {stats['sent']:,} | {len(stats['acknowledged']):,} "
        f"| {stats['unanswered']:,} | **{stats['lost']} / {stats['state_lost']}** "
        f"| **{sum(r['orphans'] for r in rounds)}** | {sum(r['restarted'] for r in rounds)}/{len(rounds)} "
        f"| {statistics.median(restarts):.1f} ({max(restarts):.1f}) |"
        if restarts
        else "| no restart succeeded |",
        "",
        "- Restart time runs from the SIGKILL of the server to a ready server on the same port "
        "(process start and model load included).",
        f"- Requests refused with an answer (not 200 with every row accepted): {stats['refused']}.",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(RESULTS.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rows", type=int, default=20, help="contacts per /events request")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--tracking-uri", default=None, help="a trained registry (else one is trained)"
    )
    args = parser.parse_args(argv)
    tracking_uri = trained_registry(args.tracking_uri)
    stats = run(args.rounds, args.clients, args.rows, tracking_uri, args.seed)
    write_results(stats, args)


if __name__ == "__main__":
    main()
