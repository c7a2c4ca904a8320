"""Simulator speed and memory: contacts per second and peak RSS, full size against a baseline.

Each run is a fresh subprocess (so peak RSS belongs to that run alone): it simulates, then writes
the Parquet files. The baseline (100k contacts) runs in the same session, so the per-contact cost
ratio shows whether the cost scales linearly. Medians of 3 runs; results go to
benchmarks/results/simulate.md.

    .venv/bin/python -m benchmarks.simulate            # 100k baseline and 1M, 3 runs each
    .venv/bin/python -m benchmarks.simulate --quick    # 10k and 50k, one run, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "simulate.md"

# Runs in the child: import first (its RSS is the floor), then time simulate() and write().
_CHILD = """
import json, resource, sys, time
from features.simulate import simulate
n, seed, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
floor_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
began = time.perf_counter()
data = simulate(n, seed)
simulated = time.perf_counter()
data.write(out)
written = time.perf_counter()
print(json.dumps({
    "simulate_s": simulated - began,
    "write_s": written - simulated,
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "import_mib": floor_kib / 1024,
    "orders": data.orders.height,
    "cto": data.contact_to_order_ratio(),
}))
"""


def run_once(n_contacts: int, seed: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(n_contacts), str(seed), out],
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(n_contacts: int, runs: int, seed: int) -> dict[str, float]:
    samples = []
    for i in range(runs):
        sample = run_once(n_contacts, seed)
        print(
            f"  {n_contacts:>9,} contacts run {i + 1}/{runs}: simulate {sample['simulate_s']:.2f}s, "
            f"write {sample['write_s']:.2f}s, peak {sample['peak_mib']:.0f} MiB",
            flush=True,
        )
        samples.append(sample)
    median = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    median["contacts_per_s"] = n_contacts / median["simulate_s"]
    median["n_contacts"] = n_contacts
    return median


def report(baseline: dict[str, float], full: dict[str, float], runs: int) -> str:
    cost_ratio = (full["simulate_s"] / full["n_contacts"]) / (
        baseline["simulate_s"] / baseline["n_contacts"]
    )
    per_contact = (full["peak_mib"] - full["import_mib"]) * 1024 * 1024 / full["n_contacts"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = "\n".join(
        f"| {r['n_contacts']:,} | {r['simulate_s']:.2f} | {r['write_s']:.2f} | "
        f"{r['contacts_per_s']:,.0f} | {r['peak_mib']:.0f} | {r['peak_mib'] - r['import_mib']:.0f} | "
        f"{r['cto']:.1%} |"
        for r in (baseline, full)
    )
    return f"""## simulate

`features.simulate.simulate(n, seed)` then `SimulatedData.write(dir)`, each run in a fresh process;
median of {runs} run(s) per size, measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores
(1-minute load average at the end: {load:.1f}; other work shares the machine).

| contacts | simulate s | write s | contacts/s | peak RSS MiB | over imports MiB | CTO ratio |
|---:|---:|---:|---:|---:|---:|---:|
{rows}

- Per-contact cost, full size / baseline: **{cost_ratio:.2f}x** (1.0 = linear scaling).
- Full size in {full["simulate_s"]:.1f} s against a budget of 60 s; peak memory {full["peak_mib"]:.0f} MiB, {per_contact:.0f} bytes per contact above the imported libraries.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small sizes, one run each.")
    parser.add_argument("--runs", type=int, default=None, help="Runs per size (default 3).")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    baseline_n, full_n = (10_000, 50_000) if args.quick else (100_000, 1_000_000)
    runs = args.runs or (1 if args.quick else 3)
    print(f"simulate benchmark: baseline {baseline_n:,}, full {full_n:,}, {runs} run(s) each")
    baseline = measure(baseline_n, runs, args.seed)
    full = measure(full_n, runs, args.seed)
    text = report(baseline, full, runs)
    print(text)
    if args.quick:
        print("(--quick: smoke run, results/simulate.md left as it was)")
    else:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
