"""Benchmark: batch scoring with `cto score` against `mlflow models predict`, as users run them.

    .venv/bin/python -m benchmarks.batch_scoring                 # about 6 minutes on 2 cores
    .venv/bin/python -m benchmarks.batch_scoring --rounds 1 --repeats 1,10   # smoke run

Both commands score the same rows with the same registered model: the online-shoppers table model
(`cto train --table online_shoppers_intention.csv --label Revenue --promote`), its `champion`
version. `cto score --table rows.csv --model NAME@champion --out scores.parquet` against
`mlflow models predict -m models:/NAME@champion -i rows.csv -t csv --env-manager local -o out.json`
(the model's raw-row pyfunc: same probabilities, checked below). The rows are the data set's
12,330 sessions without the label, repeated 10x and 100x for larger jobs; one row measures the
fixed cost (start-up, imports, model download), the floor under every job.

Each command runs as its own process tree, timed wall-clock from start to exit; peak memory is
the largest sum of resident memory over the tree, sampled every 10 ms (and never below the
largest single process's high-water mark, VmHWM, read while it runs). Medians of ``--rounds``
rounds; the rounds interleave the two commands so machine noise hits both alike.

With ``--olist``, also ``cto score OLIST_DIR --moment arrival`` on the imported olist funnel
(point-in-time features, then the arrival champion trained on it).

Set-up (import, training) runs first, outside the timed part; ``--workdir`` keeps it between
runs. Writes benchmarks/results/batch_scoring.md.
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
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import psutil

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "batch_scoring.md"
SHARED = REPO.parent / "shared" / "data"
SHOPPERS = SHARED / "online-shoppers" / "online_shoppers_intention.csv"
OLIST = SHARED / "olist-marketing-funnel"
MODEL = "cto-online-shoppers-intention-conversion"
OLIST_PREFIX = "olist"
BIN = Path(sys.executable).parent


@dataclass
class Run:
    seconds: float
    peak_mb: float


def _tree_rss(process: psutil.Process) -> tuple[int, int]:
    """(sum of resident memory over the tree now, largest single process's peak so far).

    The single peak is VmHWM, which starts afresh at exec; the kernel's ru_maxrss would carry
    this benchmark process's own peak into every child it forks.
    """
    total, single = 0, 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for member in members:
        try:
            total += member.memory_info().rss
            status = Path(f"/proc/{member.pid}/status").read_text()
        except (psutil.NoSuchProcess, OSError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                single = max(single, int(line.split()[1]) * 1024)
    return total, single


def timed(command: list[str], env: dict[str, str], cwd: Path) -> Run:
    """Wall time and peak memory of one command's process tree; fails loudly on a non-zero exit."""
    peak = 0
    started = time.perf_counter()
    child = psutil.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, *_tree_rss(child))
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr = child.stderr.read() if child.stderr else b""
    code = child.wait()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr.decode(errors='replace')[-3000:]}")
    return Run(seconds, peak / 2**20)


def _env(workdir: Path) -> dict[str, str]:
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    return {
        **os.environ,
        "CTO_TRACKING_URI": store,
        "MLFLOW_TRACKING_URI": store,
        "CTO_ARTIFACT_LOCATION": str(workdir / "mlruns"),
        "CTO_SEED": "7",
        "CTO_NUM_THREADS": "2",
    }


def set_up(workdir: Path, repeats: list[int], olist: bool) -> None:
    env = _env(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "mlflow.db").is_file():
        print("set-up: training the online-shoppers table model", file=sys.stderr)
        subprocess.run(
            [str(BIN / "cto"), "train", "--table", str(SHOPPERS), "--label", "Revenue",
             "--promote", "--quiet"],
            env=env, cwd=workdir, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    rows = pl.read_csv(SHOPPERS, infer_schema_length=None).drop("Revenue")
    for repeat in [0, *repeats]:
        path = _rows_file(workdir, repeat)
        if not path.is_file():
            frame = rows.head(1) if repeat == 0 else pl.concat([rows] * repeat)
            frame.write_csv(path)
    if olist and not (workdir / "olist" / "import.json").is_file():
        print("set-up: importing olist and training its models", file=sys.stderr)
        data = workdir / "olist"
        subprocess.run(
            [str(BIN / "cto"), "import", "olist", str(OLIST), "--out", str(data)],
            env=env, cwd=workdir, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        subprocess.run(
            [str(BIN / "cto"), "train", str(data), "--model-prefix", OLIST_PREFIX, "--promote",
             "--quiet"],
            env=env, cwd=workdir, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip


def _rows_file(workdir: Path, repeat: int) -> Path:
    return workdir / f"rows_x{repeat}.csv"


def commands(workdir: Path, rows: Path) -> dict[str, list[str]]:
    return {
        "cto score --table": [
            str(BIN / "cto"), "score", "--table", str(rows), "--model", f"{MODEL}@champion",
            "--out", str(workdir / "scores.parquet"), "--quiet",
        ],
        "mlflow models predict": [
            str(BIN / "mlflow"), "models", "predict", "-m", f"models:/{MODEL}@champion",
            "-i", str(rows), "-t", "csv", "--env-manager", "local",
            "-o", str(workdir / "predictions.json"),
        ],
    }  # fmt: skip


def same_answers(workdir: Path) -> float:
    """Largest difference between the two commands' probabilities on the last rows scored."""
    ours = pl.read_parquet(workdir / "scores.parquet")["p_order"].to_numpy()
    theirs = json.loads((workdir / "predictions.json").read_text())["predictions"]
    theirs = np.array([row["p_order"] for row in theirs])
    if ours.shape != theirs.shape:
        raise SystemExit(f"different row counts: cto {ours.shape}, mlflow {theirs.shape}")
    return float(np.max(np.abs(ours - theirs)))


def measure(workdir: Path, repeats: list[int], rounds: int) -> tuple[dict, int, float]:
    env = _env(workdir)
    base = pl.scan_csv(_rows_file(workdir, 1)).select(pl.len()).collect().item()
    sizes = {0: 1, **{r: base * r for r in repeats}}
    runs: dict[tuple[str, int], list[Run]] = {}
    max_diff = 0.0
    for round_ in range(rounds):
        for repeat in [0, *repeats]:
            for tool, command in commands(workdir, _rows_file(workdir, repeat)).items():
                run = timed(command, env, workdir)
                runs.setdefault((tool, repeat), []).append(run)
                print(
                    f"round {round_ + 1}/{rounds}: {tool}, {sizes[repeat]:,} rows: "
                    f"{run.seconds:.1f} s, {run.peak_mb:.0f} MB",
                    file=sys.stderr,
                )
            max_diff = max(max_diff, same_answers(workdir))
    return {"runs": runs, "sizes": sizes}, base, max_diff


def measure_olist(workdir: Path, rounds: int) -> dict:
    env = _env(workdir)
    out = workdir / "olist_scores.parquet"
    command = [
        str(BIN / "cto"), "score", str(workdir / "olist"), "--moment", "arrival",
        "--model-prefix", OLIST_PREFIX, "--out", str(out), "--quiet",
    ]  # fmt: skip
    runs = []
    for round_ in range(rounds):
        runs.append(timed(command, env, workdir))
        print(
            f"round {round_ + 1}/{rounds}: cto score olist: {runs[-1].seconds:.1f} s",
            file=sys.stderr,
        )
    return {"runs": runs, "contacts": pl.read_parquet(out).height}


def _median(runs: list[Run], field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs)


def render(
    result: dict,
    base: int,
    max_diff: float,
    olist: dict | None,
    rounds: int,
    *,
    load: tuple[float, float] | None = None,
) -> str:
    runs, sizes = result["runs"], result["sizes"]
    tools = ["cto score --table", "mlflow models predict"]
    floor = {tool: _median(runs[(tool, 0)], "seconds") for tool in tools}
    lines = [
        "## batch_scoring",
        "",
        "Batch scoring as users run it: `cto score --table rows.csv --model NAME@champion --out "
        "scores.parquet` against `mlflow models predict -m models:/NAME@champion -i rows.csv -t csv "
        "--env-manager local -o out.json`, the same registered model (online-shoppers table model, "
        f"its raw-row pyfunc) on the same rows: the data set's {base:,} sessions, repeated; one row "
        "is the start-up floor (interpreter, imports, model download). Wall time of the whole "
        "command; peak memory = largest resident memory of the process tree (sampled every 10 ms, never below a process's own high-water mark). "
        f"Medians of {rounds} interleaved rounds. Largest difference between the two commands' "
        f"probabilities: {max_diff:.1e}."
        + (
            f" Machine load (1-minute average) {load[0]:.1f} at the start, {load[1]:.1f} at the end."
            if load
            else ""
        ),
        "",
        "| rows | cto score s | mlflow predict s | cto rows/s | mlflow rows/s | rows/s ratio cto / mlflow "
        "| cto rows/s beyond start-up | mlflow rows/s beyond start-up | cto peak MB | mlflow peak MB "
        "| peak ratio cto / mlflow |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for repeat, rows in sizes.items():
        t = {tool: _median(runs[(tool, repeat)], "seconds") for tool in tools}
        m = {tool: _median(runs[(tool, repeat)], "peak_mb") for tool in tools}
        rate = {tool: rows / t[tool] for tool in tools}
        beyond = {
            tool: (
                f"{rows / (t[tool] - floor[tool]):,.0f}" if repeat and t[tool] > floor[tool] else ""
            )
            for tool in tools
        }
        if repeat == 0:  # the floor: a time, not a rate
            lines.append(
                f"| 1 (start-up floor) | {t[tools[0]]:.1f} | {t[tools[1]]:.1f} | | | | | | "
                f"{m[tools[0]]:,.0f} | {m[tools[1]]:,.0f} | {m[tools[0]] / m[tools[1]]:.2f}x |"
            )
            continue
        lines.append(
            f"| {rows:,} | {t[tools[0]]:.1f} | {t[tools[1]]:.1f} | {rate[tools[0]]:,.0f} | "
            f"{rate[tools[1]]:,.0f} | {rate[tools[0]] / rate[tools[1]]:.2f}x | {beyond[tools[0]]} | "
            f"{beyond[tools[1]]} | {m[tools[0]]:,.0f} | {m[tools[1]]:,.0f} | "
            f"{m[tools[0]] / m[tools[1]]:.2f}x |"
        )
    largest = max(sizes)
    lines += [
        "",
        f"Beyond start-up = rows / (time - the one-row time of the same command). At "
        f"{sizes[largest]:,} rows `cto score --table` took "
        f"{_median(runs[(tools[0], largest)], 'seconds') / _median(runs[(tools[1], largest)], 'seconds'):.2f}x "
        "the time of `mlflow models predict` and "
        f"{_median(runs[(tools[0], largest)], 'peak_mb') / _median(runs[(tools[1], largest)], 'peak_mb'):.2f}x "
        "its peak memory.",
    ]
    if olist:
        seconds = _median(olist["runs"], "seconds")
        lines += [
            "",
            f"`cto score OLIST_DIR --moment arrival` (imported olist funnel: point-in-time features "
            f"through the training code, then the olist arrival champion): {olist['contacts']:,} "
            f"contacts in {seconds:.1f} s median, {olist['contacts'] / seconds:,.0f} contacts/s "
            f"end to end, peak {_median(olist['runs'], 'peak_mb'):,.0f} MB (for scale: the start-up "
            f"floor of `cto score --table` above is {floor[tools[0]]:.1f} s).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--repeats", default="1,10,100", help="Row-set sizes, as repeats of the table."
    )
    parser.add_argument("--olist", action="store_true", help="Also time cto score on olist.")
    parser.add_argument("--workdir", type=Path, help="Keep the set-up here between runs.")
    parser.add_argument("--setup-only", action="store_true", help="Prepare, measure nothing.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    repeats = sorted({int(r) for r in args.repeats.split(",")})
    if 1 not in repeats:
        repeats = [1, *repeats]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cto-batch-bench-"))
    try:
        set_up(workdir, repeats, args.olist)
        if args.setup_only:
            return 0
        load_before = os.getloadavg()[0]
        result, base, max_diff = measure(workdir, repeats, args.rounds)
        olist = measure_olist(workdir, args.rounds) if args.olist else None
        load = (load_before, os.getloadavg()[0])
        args.out.write_text(render(result, base, max_diff, olist, args.rounds, load=load))
        print(f"wrote {args.out}", file=sys.stderr)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
