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
        [--tracking-uri sqlite:////abs/mlflow.db]

Writes benchmarks/results/soak.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from benchmarks._reliability import contact_rows, trained_registry
from serving.process import start_server

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


def run(args: argparse.Namespace) -> dict:
    tracking_uri = trained_registry(args.tracking_uri)
    root = Path(tempfile.mkdtemp(prefix="cto-soak-"))
    env = {
        "CTO_TRACKING_URI": tracking_uri,
        "CTO_EVENT_STORE_URL": f"sqlite:///{root / 'events.db'}",
        "CTO_WORKERS": "2",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    server = start_server(env, root / "server.log")
    try:
        bodies = root / "bodies.tsv"
        count = build_bodies(server.base_url, {}, bodies)
        script = root / "soak.lua"
        script.write_text(LUA)
        samples: list = []
        stop = threading.Event()
        sampler = threading.Thread(
            target=sample_memory, args=(server.process.pid, stop, args.sample_seconds, samples)
        )
        sampler.start()
        seconds = int(args.minutes * 60)
        wrk = subprocess.run(
            ["wrk", "-t", str(args.connections), "-c", str(args.connections), "-d", f"{seconds}s",
             "--timeout", "30s", "-s", str(script), server.base_url, "--", str(bodies), str(root)],
            capture_output=True, text=True, check=False, timeout=seconds + 120,
        )  # fmt: skip
        stop.set()
        sampler.join()
        log = server.log_path.read_text(errors="replace")
    finally:
        server.stop()
    table, status_errors = latency_table(root)
    socket_errors = wrk.stderr.strip().splitlines()[-1] if wrk.stderr.strip() else ""
    return {
        "bodies": count,
        "table": table,
        "status_errors": status_errors,
        "socket_errors": socket_errors,
        "slopes": slopes(samples, args.warmup),
        "server_errors": log.count("[ERROR]"),
        "tracebacks": log.count("Traceback"),
        "wrk_stdout": wrk.stdout,
    }


def write_results(result: dict, args: argparse.Namespace) -> None:
    table = result["table"]
    total = sum(row["count"] for row in table.values())
    lines = [
        "## soak",
        "",
        f"`python -m benchmarks.soak --minutes {args.minutes:g} --warmup {args.warmup:g} "
        f"--connections {args.connections}`, measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"on {os.cpu_count()} cores shared with other work (1-minute load average at the end: "
        f"{os.getloadavg()[0]:.1f}). wrk keeps {args.connections} connections busy against "
        "`cto serve --workers 2` with a mix of /score (history from the store, 60%; in the "
        "request, 10%), /score_batch of 10 (10%) and /events of 5 rows (20%); each request is "
        "timed by wrk's Lua script.",
        "",
        f"{total:,} answers; errors: **{result['status_errors']}** non-200 answers, wrk "
        f"`{result['socket_errors'] or 'no socket errors'}`; server log: "
        f"{result['server_errors']} ERROR lines, {result['tracebacks']} tracebacks.",
        "",
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
    lines += [
        "",
        f"Worker memory after {args.warmup:g} min of warm-up (least-squares slope over the rest "
        f"of the run; flat means under {FLAT_SLOPE_MIB_PER_MIN} MiB/min):",
        "",
        "| worker | RSS at warm-up end MiB | RSS at end MiB | slope MiB/min | flat |",
        "|---:|---:|---:|---:|---|",
    ]
    for index, (slope, first, last) in enumerate(result["slopes"].values(), 1):
        flat = "yes" if abs(slope) < FLAT_SLOPE_MIB_PER_MIN else "**no**"
        lines.append(f"| {index} | {first:.0f} | {last:.0f} | {slope:+.3f} | {flat} |")
    RESULTS.write_text("\n".join(lines) + "\n")
    print(RESULTS.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument(
        "--tracking-uri", default=None, help="a trained registry (else one is trained)"
    )
    args = parser.parse_args(argv)
    write_results(run(args), args)


if __name__ == "__main__":
    main()
