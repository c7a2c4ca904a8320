"""Benchmark: 50M contacts through `cto features --dask` and `cto score --dask`, memory per worker.

    .venv/bin/python -m benchmarks.scale_out_large                        # 50M, about 40 min
    .venv/bin/python -m benchmarks.scale_out_large --contacts 2000000 --parts 2   # smoke run

The data is generated a slice at a time (``benchmarks.features.generate_parts``: disjoint
customers per slice, the simulator's shape) and written as ``contacts/part-NNNNN.parquet`` and
``orders/part-NNNNN.parquet``: no process ever holds all of it. Then, as users run them, each in a
fresh process tree on LocalCluster(2) (`--dask local:2`, 2 worker processes of one thread):

- ``cto features DATA --out DIR --dask local:2`` (both scoring moments, the rate tables);
- ``cto score DATA --moment arrival --out scores.parquet --dask local:2`` with an arrival champion
  registered in a scratch MLflow store (trained on a small simulated set; ``--allow-other-data``).

Each job runs on the first slice alone (1/parts of the contacts) and on all of them: memory per
worker is bounded when the largest worker's peak does not grow with the data (the tasks are one
customer-hash partition each, ~1M contacts; the global rate step holds compact per-contact rows).
Peak = the high-water mark (VmHWM) of each process of the tree, read every 0.5 s: the command's
own process (the Dask client) apart from the largest other process (a worker or its nanny).
The outputs are checked: every contact once in each features file and in the scores.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "scale_out_large.md"
BIN = Path(sys.executable).parent


def _hwm_mb(process: psutil.Process) -> float:
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_job(command: list[str], env: dict[str, str]) -> dict:
    """Run ``command``; wall, CPU of the tree, peak memory of the client and of its largest child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = before.ru_utime + before.ru_stime
    started = time.perf_counter()
    process = psutil.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    peaks: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                tree = [process, *process.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for member in tree:
                peaks[member.pid] = max(peaks.get(member.pid, 0.0), _hwm_mb(member))
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = []
    for line in process.stdout:
        output.append(line)
        print(f"    {line.rstrip()}", flush=True)
    code = process.wait()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed ({code}):\n{''.join(output[-30:])}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = peaks.pop(process.pid, 0.0)
    return {
        "wall_s": wall,
        # Terminated children and the descendants they waited for (the workers), this job only.
        "cpu_s": usage.ru_utime + usage.ru_stime - cpu_before,
        "client_mb": client,
        "worker_mb": max(peaks.values(), default=0.0),
        "processes": 1 + len(peaks),
    }


def _check_features(out: Path, contacts: int) -> str:
    import polars as pl

    lines = []
    for moment in ("arrival", "after_contact"):
        counts = (
            pl.scan_parquet(out / moment / "*.parquet")
            .select(rows=pl.len(), unique=pl.col("contact_id").n_unique())
            .collect()
        )
        rows, unique = counts["rows"].item(), counts["unique"].item()
        if rows != contacts or unique != contacts:
            raise SystemExit(
                f"features {moment}: {rows:,} rows, {unique:,} contacts != {contacts:,}"
            )
        lines.append(f"{moment} {rows:,} rows")
    return ", ".join(lines)


def _check_scores(path: Path, contacts: int) -> str:
    import polars as pl

    counts = (
        pl.scan_parquet(path)
        .select(
            rows=pl.len(),
            unique=pl.col("contact_id").n_unique(),
            bad=(~pl.col("p_order").is_between(0, 1)).sum(),
        )
        .collect()
    )
    rows, unique, bad = (counts[c].item() for c in ("rows", "unique", "bad"))
    if rows != contacts or unique != contacts or bad:
        raise SystemExit(f"scores: {rows:,} rows, {unique:,} contacts, {bad} outside [0, 1]")
    return f"{rows:,} scores"


def champion_env(work: Path) -> dict[str, str]:
    """The environment of a scratch MLflow store under ``work`` holding an arrival champion
    (trained here on 20k simulated contacts), for timing `cto score` with it."""
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "CTO_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "CTO_ARTIFACT_LOCATION": str(work / "mlruns"),
        "CTO_MAX_ROUNDS": "60",
        "CTO_SEED": "7",
    }
    env.pop("CTO_DASK", None)
    _train_champion(work, env)
    return env


def _train_champion(work: Path, env: dict[str, str]) -> None:
    from features.simulate import simulate

    sim_dir = work / "sim"
    simulate(n_contacts=20_000, seed=11).write(sim_dir)
    command = [str(BIN / "cto"), "train", str(sim_dir), "--tasks", "conversion-arrival"]
    subprocess.run([*command, "--promote", "--quiet"], env=env, cwd=ROOT, check=True)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=50_000_000)
    parser.add_argument("--parts", type=int, default=5, help="Generated slices (default 5).")
    parser.add_argument("--workdir", type=Path, help="Keep data and outputs here (default: temp).")
    args = parser.parse_args(argv)
    from benchmarks.features import generate_parts

    with tempfile.TemporaryDirectory(prefix="cto-large-", dir=args.workdir) as tmp:
        work = Path(tmp)
        data = work / "data"
        started = time.perf_counter()
        generate_parts(args.contacts, args.parts, seed=7, out=data, progress=print)
        generated_s = time.perf_counter() - started
        size = args.contacts // args.parts
        # The first slice alone, as its own data directory (links, no copy).
        first = work / "first"
        for table in ("contacts", "orders"):
            (first / table).mkdir(parents=True)
            (first / table / "part-00000.parquet").symlink_to(data / table / "part-00000.parquet")
        env = champion_env(work)
        cto = [str(BIN / "cto")]
        rows = []
        for label, source, contacts in (
            (f"first slice ({size:,})", first, size),
            (f"all ({size * args.parts:,})", data, size * args.parts),
        ):
            out = work / f"features-{contacts}"
            load = _load()
            print(f"{label}: cto features --dask local:2", flush=True)
            features = run_job(
                [*cto, "features", str(source), "--out", str(out), "--dask", "local:2"], env
            )
            features["check"] = _check_features(out, contacts)
            features["load"] = load
            # Scores must fit on disk beside the features: drop the features first.
            subprocess.run(["rm", "-rf", str(out)], check=True)
            scores = work / f"scores-{contacts}.parquet"
            load = _load()
            print(f"{label}: cto score --dask local:2", flush=True)
            scoring = run_job(
                [*cto, "score", str(source), "--moment", "arrival", "--out", str(scores)]
                + ["--dask", "local:2", "--allow-other-data", "--quiet"],
                env,
            )
            scoring["check"] = _check_scores(scores, contacts)
            scoring["load"] = load
            scores.unlink()
            rows.append((label, contacts, features, scoring))
        _write(args, rows, generated_s)
    return 0


def _write(args, rows, generated_s: float) -> None:
    import polars as pl

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    table = []
    for label, contacts, features, scoring in rows:
        for job, result in (
            ("cto features --dask local:2", features),
            ("cto score --dask local:2", scoring),
        ):
            table.append(
                f"| {job} | {label} | {result['wall_s']:.0f} | {result['cpu_s']:.0f} | "
                f"{contacts / result['wall_s']:,.0f} | {result['worker_mb']:,.0f} | "
                f"{result['client_mb']:,.0f} | {result['load']} | {result['check']} |"
            )
    (_, small, f_small, s_small), (_, large, f_large, s_large) = rows
    lines = [
        "## scale_out_large",
        "",
        f"{args.contacts:,} generated contacts ({args.parts} slices of disjoint customers, "
        "written as `contacts/part-*.parquet`, `orders/part-*.parquet`; generated in "
        f"{generated_s:.0f} s) through `cto features --dask local:2` and `cto score --moment "
        "arrival --dask local:2` (an arrival champion trained on 20k simulated contacts), each a "
        "fresh process tree (`benchmarks/scale_out_large.py`), first on one slice, then on all. "
        "Wall and CPU in seconds; peak = the high-water mark of the largest worker process "
        "(largest of the tree apart from the command) and of the command itself (the Dask "
        f"client), MB; load = 1/5-minute load average before the job, 2 cores. Polars "
        f"{pl.__version__}, code at commit {commit or 'unknown'}.",
        "",
        "| job | contacts | wall (s) | CPU (s) | contacts/s | peak per worker (MB) | "
        "client peak (MB) | load | output check |",
        "|---|---|---|---|---|---|---|---|---|",
        *table,
        "",
        f"- Largest worker peak, {large:,} against {small:,} contacts "
        f"({large / small:.0f}x the data): features {f_large['worker_mb'] / f_small['worker_mb']:.2f}x, "
        f"scoring {s_large['worker_mb'] / s_small['worker_mb']:.2f}x.",
        f"- Time per contact, {large:,} against {small:,}: features "
        f"{(f_large['wall_s'] / large) / (f_small['wall_s'] / small):.2f}x, scoring "
        f"{(s_large['wall_s'] / large) / (s_small['wall_s'] / small):.2f}x.",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(RESULTS.read_text())


if __name__ == "__main__":
    raise SystemExit(main())
