"""Soak test: mixed load on `cto serve --workers 2` for a long time; memory, errors, latency.

wrk (a C load generator) sends a mix of requests from ``--connections`` connections, one per
wrk thread so that each thread's Lua script times every request itself (``clock_gettime`` via
LuaJIT's FFI) and writes one line per answer: route, status, seconds. The mix, by weight:
/score of a customer whose history is in the store (60), /score with the history in the request
(10), /score_batch of 10 contacts (10), /events of 5 new contact versions (20). Every
``--sample-seconds`` the resident memory of each worker is read (psutil). After ``--warmup``
minutes the memory slope of each worker is fitted (least squares, MiB per minute) over the rest
of the run; the answer counts, errors (any status but 200, and socket errors) and latency
percentiles and maxima per route come from the Lua lines.

    .venv/bin/python -m benchmarks.soak [--minutes 30] [--warmup 5] [--connections 4]
        [--tracking-uri sqlite:////abs/mlflow.db] [--baseline-engine streaming]

With ``--baseline-engine streaming`` a second server takes the same load at the same time, its
workers running Polars on the streaming engine (Polars' default, which keeps native memory per
query; serving/polars_engine.py): the baseline the service's memory slope is compared with.

Writes benchmarks/results/soak.md (or ``--results PATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil

from benchmarks._reliability import contact_rows, trained_registry
from serving.polars_engine import AFFINITY_VARIABLE
from serving.process import REPO, Server, start_server

RESULTS = Path(__file__).resolve().parent / "results" / "soak.md"
WEIGHTS = {"score_store": 60, "score_history": 10, "score_batch": 10, "events": 20}
# The memory slope a worker may show after warm-up and still count as flat (MiB per minute).
FLAT_SLOPE_MIB_PER_MIN = 0.2

LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } cto_timespec;
int clock_gettime(int clk_id, cto_timespec *tp);
]]
local ts = ffi.new("cto_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local threads = {}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

local requests, names, out, started, current
function init(args)
  local bodies = args[1]
  local outdir = args[2]
  requests, names = {}, {}
  for line in io.lines(bodies) do
    local name, path, body = line:match("^(%S+)\t(%S+)\t(.*)$")
    table.insert(names, name)
    table.insert(requests, wrk.format("POST", path, {["Content-Type"] = "application/json"}, body))
  end
  out = io.open(outdir .. "/lat-" .. id .. ".txt", "w")
  math.randomseed(id * 7919)
end

function request()
  local i = math.random(#requests)
  current = names[i]
  started = now()
  return requests[i]
end

function response(status, headers, body)
  out:write(current, " ", status, " ", string.format("%.6f", now() - started), "\n")
end

function done(summary, latency, requests)
  io.stderr:write(string.format("errors connect=%d read=%d write=%d timeout=%d status=%d\n",
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, summary.errors.status))
end
"""


def build_bodies(base_url: str, headers: dict, path: Path) -> int:
    """Seed the store with customers' histories and write the weighted request lines."""
    history = contact_rows(400, customers=40, prefix="soak-hist")
    for start in range(0, len(history), 100):
        answer = httpx.post(
            base_url + "/events", json={"contacts": history[start : start + 100]}, headers=headers
        )
        answer.raise_for_status()
    customers = sorted({row["customer_id"] for row in history})
    probe = contact_rows(40, customers=40, prefix="soak-probe")
    lines: list[str] = []
    for i, row in enumerate(probe):
        contact = row | {"customer_id": customers[i % len(customers)]}
        mine = [h for h in history if h["customer_id"] == contact["customer_id"]]
        store = {"contact": contact, "moment": "after_contact", "explain": i % 2 == 0}
        inline = store | {"history": {"contacts": mine}}
        lines += [f"score_store\t/score\t{json.dumps(store)}"] * (WEIGHTS["score_store"] // 10)
        lines += [f"score_history\t/score\t{json.dumps(inline)}"] * (WEIGHTS["score_history"] // 10)
        if i % 4 == 0:
            items = [
                {"contact": row | {"contact_id": f"{row['contact_id']}-{k}"}} for k in range(10)
            ]
            lines += [f"score_batch\t/score_batch\t{json.dumps({'items': items})}"] * 4
        updates = contact_rows(5, customers=5, prefix=f"soak-ev{i}")
        lines += [f"events\t/events\t{json.dumps({'contacts': updates})}"] * (
            WEIGHTS["events"] // 10
        )
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def sample_memory(pid: int, stop: threading.Event, every: float, samples: list) -> None:
    started = time.monotonic()
    while not stop.wait(every):
        try:
            workers = psutil.Process(pid).children(recursive=True)
            rss = {p.pid: p.memory_info().rss / 2**20 for p in workers}
        except psutil.NoSuchProcess:
            continue
        samples.append(((time.monotonic() - started) / 60, rss))


def slopes(samples: list, warmup_min: float) -> dict[int, tuple[float, float, float]]:
    """Per worker: (slope MiB/min after warm-up, RSS at warm-up end, RSS at the end)."""
    series: dict[int, list[tuple[float, float]]] = {}
    for minute, rss in samples:
        if minute < warmup_min:
            continue
        for pid, mib in rss.items():
            series.setdefault(pid, []).append((minute, mib))
    fitted = {}
    for pid, points in series.items():
        if len(points) < 3:
            continue
        x, y = np.array(points).T
        fitted[pid] = (float(np.polyfit(x, y, 1)[0]), float(y[0]), float(y[-1]))
    return fitted


def latency_table(lat_dir: Path) -> tuple[dict[str, dict], int]:
    per_route: dict[str, list[float]] = {}
    errors = 0
    for file in lat_dir.glob("lat-*.txt"):
        for line in file.read_text().splitlines():
            name, status, seconds = line.split()
            if status != "200":
                errors += 1
            per_route.setdefault(name, []).append(float(seconds) * 1000)
    table = {}
    for name, values in per_route.items():
        ordered = np.sort(np.array(values))
        table[name] = {
            "count": len(ordered),
            "p50": float(np.percentile(ordered, 50)),
            "p99": float(np.percentile(ordered, 99)),
            "p999": float(np.percentile(ordered, 99.9)),
            "max": float(ordered[-1]),
        }
    return table, errors


@dataclass
class _Soaked:
    """One server under the soak's load: its process, its files, what was measured."""

    server: Server
    root: Path
    bodies: int = 0
    samples: list = field(default_factory=list)
    wrk: subprocess.Popen | None = None


def _start(tracking_uri: str, root: Path, extra_env: dict[str, str]) -> _Soaked:
    root.mkdir(parents=True, exist_ok=True)
    env = {
        "CTO_TRACKING_URI": tracking_uri,
        "CTO_EVENT_STORE_URL": f"sqlite:///{root / 'events.db'}",
        "CTO_WORKERS": "2",
        "OMP_WAIT_POLICY": "PASSIVE",
    } | extra_env
    soaked = _Soaked(start_server(env, root / "server.log"), root)
    soaked.bodies = build_bodies(soaked.server.base_url, {}, root / "bodies.tsv")
    (root / "soak.lua").write_text(LUA)
    return soaked


def _measured(soaked: _Soaked, warmup: float) -> dict:
    table, status_errors = latency_table(soaked.root)
    stderr = soaked.wrk.stderr.read() if soaked.wrk and soaked.wrk.stderr else ""
    log = soaked.server.log_path.read_text(errors="replace")
    return {
        "bodies": soaked.bodies,
        "table": table,
        "status_errors": status_errors,
        "socket_errors": stderr.strip().splitlines()[-1] if stderr.strip() else "",
        "slopes": slopes(soaked.samples, warmup),
        "server_errors": log.count("[ERROR]"),
        "tracebacks": log.count("Traceback"),
    }


def run(args: argparse.Namespace) -> dict:
    """The soak; with ``--baseline-engine`` a second server under the same load at the same time,
    its workers running Polars on that engine (the baseline)."""
    tracking_uri = trained_registry(args.tracking_uri)
    root = Path(tempfile.mkdtemp(prefix="cto-soak-"))
    servers: dict[str, _Soaked] = {}
    stop = threading.Event()
    samplers = []
    try:
        servers["service"] = _start(tracking_uri, root / "service", {})
        if args.baseline_engine:
            servers["baseline"] = _start(
                tracking_uri,
                root / "baseline",
                {AFFINITY_VARIABLE: args.baseline_engine},
            )
        seconds = int(args.minutes * 60)
        for soaked in servers.values():
            sampler = threading.Thread(
                target=sample_memory,
                args=(soaked.server.process.pid, stop, args.sample_seconds, soaked.samples),
            )
            sampler.start()
            samplers.append(sampler)
            soaked.wrk = subprocess.Popen(
                ["wrk", "-t", str(args.connections), "-c", str(args.connections),
                 "-d", f"{seconds}s", "--timeout", "30s", "-s", str(soaked.root / "soak.lua"),
                 soaked.server.base_url, "--", str(soaked.root / "bodies.tsv"), str(soaked.root)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        for soaked in servers.values():
            soaked.wrk.wait(timeout=seconds + 120)
    finally:
        stop.set()
        for sampler in samplers:
            sampler.join()
        for soaked in servers.values():
            if soaked.wrk is not None and soaked.wrk.poll() is None:
                soaked.wrk.kill()
            soaked.server.stop()
    result = _measured(servers["service"], args.warmup)
    if "baseline" in servers:
        result["baseline"] = _measured(servers["baseline"], args.warmup)
    return result


def _slope_rows(slopes_by_pid: dict) -> list[str]:
    lines = [
        "| worker | RSS at warm-up end MiB | RSS at end MiB | slope MiB/min | flat |",
        "|---:|---:|---:|---:|---|",
    ]
    for index, (slope, first, last) in enumerate(slopes_by_pid.values(), 1):
        flat = "yes" if abs(slope) < FLAT_SLOPE_MIB_PER_MIN else "**no**"
        lines.append(f"| {index} | {first:.0f} | {last:.0f} | {slope:+.3f} | {flat} |")
    return lines


def _latency_rows(table: dict) -> list[str]:
    lines = [
        "| route | answers | p50 ms | p99 ms | p99.9 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in WEIGHTS:
        if name in table:
            row = table[name]
            lines.append(
                f"| {name} | {row['count']:,} | {row['p50']:.1f} | {row['p99']:.1f} "
                f"| {row['p999']:.1f} | {row['max']:.0f} |"
            )
    return lines


def write_results(result: dict, args: argparse.Namespace) -> None:
    table = result["table"]
    total = sum(row["count"] for row in table.values())
    baseline = result.get("baseline")
    command = (
        f"`python -m benchmarks.soak --minutes {args.minutes:g} --warmup {args.warmup:g} "
        f"--connections {args.connections}"
        + (f" --baseline-engine {args.baseline_engine}" if baseline else "")
        + (f" --results {args.results.relative_to(REPO)}" if args.results != RESULTS else "")
        + "`"
    )
    lines = [
        "## soak"
        + (f": against a same-run baseline ({args.baseline_engine} engine)" if baseline else ""),
        "",
        f"{command}, measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"on {os.cpu_count()} cores shared with other work (1-minute load average at the end: "
        f"{os.getloadavg()[0]:.1f}). wrk keeps {args.connections} connections busy against "
        "`cto serve --workers 2` with a mix of /score (history from the store, 60%; in the "
        "request, 10%), /score_batch of 10 (10%) and /events of 5 rows (20%); each request is "
        "timed by wrk's Lua script."
        + (
            " A second server (the baseline) takes the same load at the same time, its workers "
            f"running Polars on the {args.baseline_engine} engine (`{AFFINITY_VARIABLE}`); the "
            "service's own workers run the engine serving/polars_engine.py pins."
            if baseline
            else ""
        ),
        "",
        f"{total:,} answers; errors: **{result['status_errors']}** non-200 answers, wrk "
        f"`{result['socket_errors'] or 'no socket errors'}`; server log: "
        f"{result['server_errors']} ERROR lines, {result['tracebacks']} tracebacks.",
        "",
        *_latency_rows(table),
        "",
        f"Worker memory after {args.warmup:g} min of warm-up (least-squares slope over the rest "
        f"of the run; flat means under {FLAT_SLOPE_MIB_PER_MIN} MiB/min):",
        "",
        *_slope_rows(result["slopes"]),
    ]
    if baseline:
        answers = sum(row["count"] for row in baseline["table"].values())
        lines += [
            "",
            f"Baseline, Polars on the {args.baseline_engine} engine, same load, same minutes: "
            f"{answers:,} answers, {baseline['status_errors']} non-200; worker memory:",
            "",
            *_slope_rows(baseline["slopes"]),
            "",
            *_latency_rows(baseline["table"]),
        ]
    args.results.write_text("\n".join(lines) + "\n")
    print(args.results.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument(
        "--tracking-uri", default=None, help="a trained registry (else one is trained)"
    )
    parser.add_argument(
        "--baseline-engine",
        choices=["streaming"],
        default=None,
        help="also soak a second server whose workers run Polars on this engine (a baseline)",
    )
    parser.add_argument(
        "--results", type=lambda p: Path(p).resolve(), default=RESULTS, help="results file"
    )
    args = parser.parse_args(argv)
    write_results(run(args), args)


if __name__ == "__main__":
    main()
