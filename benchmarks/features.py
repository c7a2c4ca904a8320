"""Benchmark: point-in-time features with Polars (features.pipeline) against a pandas baseline.

    .venv/bin/python -m benchmarks.features            # full run (about 12 minutes)
    .venv/bin/python -m benchmarks.features --quick    # smoke run (50k contacts)

Data: a vectorised random generator with the simulator's shape (about 4 contacts per customer,
heavy-tailed activity, 26 weeks, one order per 8 contacts, written channels with reply times of
hours), because simulating 10M contacts would dominate the run. Each run is its own subprocess on
the same Parquet files, so each peak memory (VmHWM) is its own; the time covers building the
features from frames already in memory (and, for the file jobs, writing them). Three
measurements:

- speed, at ``--pandas-contacts`` (default 100k, 3 runs each): ``build_features`` against the
  pandas implementation, both in memory;
- memory, at ``--memory-contacts`` (default 1M, one run each): the job "contacts -> a features
  Parquet file", pandas (build, then ``to_parquet``) against ``write_features`` (customer-hash
  chunks streamed into the file). pandas' peak is taken before its write, which favours pandas;
- full size, ``--contacts`` (default 10M, one run each): ``build_features`` (output in memory) and
  ``write_features``.

pandas is not run at 10M: its groupby-rolling costs about 0.28 ms of CPU per contact (one rolling
call per customer and window), about 45 CPU-minutes. Results are compared on sampled contacts.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

RESULTS = Path(__file__).resolve().parent / "results" / "features.md"
# The full-size run before build_features processed large batches in customer-hash chunks (same
# data, same command, quiet machine), kept so the results file shows the change.
PREVIOUS_FULL_SIZE = (
    "one pass over all 10,000,000 contacts took 53.3 s wall (55.7 s CPU), peak 8941 MB "
    "(commit e194d28); with in-memory chunks 30.4 s, 4599 MB (commit 40c6759). At 100,000 "
    "contacts with both outputs in memory the peak ratio pandas / Polars was 1.6x."
)
COMPARED = [
    "contacts_lifetime",
    "orders_lifetime",
    "spend_lifetime",
    "days_since_last_contact",
    "days_since_last_order",
    *[
        f"{stem}_{w}"
        for w in ("1d", "7d", "30d", "90d")
        for stem in (
            "contacts",
            "wait_mean",
            "wait_max",
            "abandons",
            "transfers",
            "unresolved",
            "bot_only",
        )
    ],
    *[f"{stem}_{w}" for w in ("7d", "30d", "90d") for stem in ("orders", "spend")],
]


def generate(n_contacts: int, seed: int, out: Path) -> Path:
    """Random contacts/orders in the contract dtypes, written as Parquet to ``out``."""
    contacts, orders = generated_tables(n_contacts, seed)
    out.mkdir(parents=True, exist_ok=True)
    contacts.write_parquet(out / "contacts.parquet")
    orders.write_parquet(out / "orders.parquet")
    return out


def generate_parts(n_contacts: int, parts: int, seed: int, out: Path, progress=None) -> Path:
    """``n_contacts`` in ``parts`` slices of disjoint customers, written as
    ``out/<table>/part-NNNNN.parquet``: data larger than one frame, generated a slice at a time."""
    size = n_contacts // parts
    for part in range(parts):
        contacts, orders = generated_tables(size, seed + part, offset=part * size)
        for name, frame in (("contacts", contacts), ("orders", orders)):
            (out / name).mkdir(parents=True, exist_ok=True)
            frame.write_parquet(out / name / f"part-{part:05d}.parquet")
        del contacts, orders
        if progress is not None:
            progress(f"generated part {part + 1}/{parts} ({(part + 1) * size:,} contacts)")
    return out


def generated_tables(
    n_contacts: int, seed: int, *, offset: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Random contacts and orders. ``offset``: the first contact's number; customers and orders
    are numbered from offset / 4 and offset / 8, so slices generated with offsets 0, n, 2n, ...
    have disjoint ids (one larger data set)."""
    from features.schema import CHANNELS, CONTACTS, INTENTS, ORDERS

    rng = np.random.default_rng(seed)
    n_customers = max(n_contacts // 4, 1)
    # Heavy-tailed activity: most customers call once or twice, a few dozens of times.
    weights = rng.pareto(1.5, n_customers) + 1
    customer = rng.choice(n_customers, n_contacts, p=weights / weights.sum()) + offset // 4
    start = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp())
    seconds = start + rng.integers(0, 26 * 7 * 86_400, n_contacts)
    channel = rng.choice(len(CHANNELS), n_contacts, p=[0.35, 0.2, 0.2, 0.1, 0.05, 0.05, 0.05])
    written = np.isin(channel, [1, 3, 4, 5])
    bot = rng.random(n_contacts) < 0.2
    agent = rng.integers(0, 400, n_contacts)
    contacts = pl.DataFrame(
        {
            "contact_id": pl.int_range(offset, offset + n_contacts, eager=True).cast(pl.String),
            "customer_id": pl.Series(customer).cast(pl.String),
            "started_at": pl.Series(seconds * 1_000_000).cast(pl.Datetime("us", "UTC")),
            "channel": pl.Series(channel).replace_strict(dict(enumerate(CHANNELS))),
            "direction": np.where(rng.random(n_contacts) < 0.8, "inbound", "outbound"),
            "intent": pl.Series(rng.integers(0, len(INTENTS), n_contacts)).replace_strict(
                dict(enumerate(INTENTS))
            ),
            "handled_by": np.where(bot, "bot", "agent"),
            "agent_id": pl.Series(agent).cast(pl.String).set(pl.Series(bot), None),
            "wait_seconds": np.round(
                np.where(
                    written, rng.exponential(14_400, n_contacts), rng.exponential(90, n_contacts)
                )
            ),
            "handle_seconds": np.round(rng.exponential(300, n_contacts)),
            "transfers": rng.poisson(0.3, n_contacts),
            "abandoned": rng.random(n_contacts) < 0.08,
            "resolved": rng.random(n_contacts) < 0.7,
            "callback_offered": rng.random(n_contacts) < 0.1,
            "follow_up_sent": rng.random(n_contacts) < 0.4,
            "dropoff_reason": pl.Series([None] * n_contacts, dtype=pl.String),
        }
    ).with_columns(pl.col(c.name).cast(c.dtype) for c in CONTACTS.columns)
    n_orders = max(n_contacts // 8, 1)
    orders = pl.DataFrame(
        {
            "order_id": pl.int_range(offset // 8, offset // 8 + n_orders, eager=True).cast(
                pl.String
            ),
            "customer_id": pl.Series(rng.choice(customer, n_orders)).cast(pl.String),
            "ordered_at": pl.Series(
                (start + rng.integers(0, 26 * 7 * 86_400, n_orders)) * 1_000_000
            ).cast(pl.Datetime("us", "UTC")),
            "amount": np.round(rng.gamma(2.0, 60.0, n_orders), 2),
            "contact_id": pl.Series([None] * n_orders, dtype=pl.String),
        }
    ).with_columns(pl.col(c.name).cast(c.dtype) for c in ORDERS.columns)
    return contacts, orders


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_mb() -> float:
    """This process's peak resident memory, MB.

    VmHWM belongs to the process image and starts afresh at exec; ru_maxrss does not (Linux keeps
    it across fork and exec), so a worker forked from a big parent would report the parent's peak.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(implementation: str, data: Path, sample_out: Path) -> dict:
    """Run one implementation once in this process; return times and peak memory."""
    peak_before_write = None
    if implementation in ("polars", "polars-sink"):
        from features.pipeline import build_features, write_features

        contacts = pl.read_parquet(data / "contacts.parquet")
        orders = pl.read_parquet(data / "orders.parquet")
        loaded_mb = _peak_mb()
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        if implementation == "polars":
            frame = build_features(contacts, orders, moment="after_contact")
        else:
            written = sample_out.with_suffix(".features.parquet")
            write_features(contacts, orders, written, moment="after_contact")
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
        peak = _peak_mb()
        source = frame.lazy() if implementation == "polars" else pl.scan_parquet(written)
        sample = (
            source.filter(pl.col("contact_id").cast(pl.Int64) % 997 == 0)
            .select("contact_id", *COMPARED)
            .collect()
        )
        n_features = len(source.collect_schema()) - 3
    else:
        from benchmarks.pandas_features import pandas_features

        contacts = pl.read_parquet(data / "contacts.parquet").to_pandas()
        orders = pl.read_parquet(data / "orders.parquet").to_pandas()
        loaded_mb = _peak_mb()
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        frame = pandas_features(contacts, orders)
        if implementation == "pandas-file":
            peak_before_write = _peak_mb()
            frame.to_parquet(sample_out.with_suffix(".features.parquet"))
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
        peak = _peak_mb()
        sample = pl.from_pandas(frame[frame["contact_id"].astype("int64") % 997 == 0])
        n_features = frame.shape[1] - 1
    sample.write_parquet(sample_out)
    return {
        "implementation": implementation,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_mb": peak,
        "peak_before_write_mb": peak_before_write,
        "loaded_mb": loaded_mb,
        "features": n_features,
        "rows": len(contacts),
    }


def stage_costs(data: Path, repeats: int = 3) -> list[dict]:
    """Wall and CPU time of each stage of ``build_features`` (after_contact, no rates), run one
    stage at a time on the previous stage's collected output: where the time goes."""
    from features import pipeline as p

    engine = "in-memory"
    contacts = pl.read_parquet(data / "contacts.parquet")
    orders = pl.read_parquet(data / "orders.parquet")
    options = {"journey_gap_days": 14, "horizon_days": 7}
    conformed = p._conform(contacts.lazy(), p.CONTACTS, p._ARRIVAL_INPUTS + p._OUTCOME_INPUTS)
    order_frame = p._conform(
        orders.lazy(), p.ORDERS, ("order_id", "customer_id", "ordered_at", "amount")
    )
    state: dict[str, pl.DataFrame] = {}

    def rows() -> pl.DataFrame:
        return p._contact_rows(conformed).collect(engine=engine)

    def stream() -> pl.DataFrame:
        return p._event_stream(state["rows"].lazy(), order_frame).collect(engine=engine)

    def helpers() -> pl.DataFrame:
        return (
            state["stream"]
            .lazy()
            .with_columns(p._stream_key())
            .drop("customer_id", "_seq_hash")
            .with_columns(p._segment_indices_cached("_t", "_customer_hash"))
            .with_columns(p._stream_helper_exprs())
            .collect(engine=engine)
        )

    def window_features() -> pl.DataFrame:
        select = p._stream_select_exprs(p.FEATURE_SET, "after_contact")
        return state["helpers"].lazy().select(select).collect(engine=engine)

    def contact_features() -> pl.DataFrame:
        joined = pl.concat([state["rows"].lazy(), state["windows"].lazy()], how="horizontal")
        joined = p._journeys(joined, **options)
        joined = joined.join(
            p._customers_frame(None), on="customer_id", how="left", maintain_order="left"
        ).with_columns(p._CUSTOMER_EXPRS)
        joined = p.join_rates(joined, None, p._rate_names("after_contact"))
        return joined.select(p._output_exprs(p.FEATURE_SET, "after_contact")).collect(engine=engine)

    stages = [
        ("contact rows: sort by customer and time, channel recency, switches", "rows", rows),
        ("event stream: contact starts, outcomes and orders, sorted", "stream", stream),
        ("stream helpers: running sums, window starts, latest events", "helpers", helpers),
        ("window and lifetime features read at each contact", "windows", window_features),
        ("journeys, customer attributes and the output columns", "output", contact_features),
    ]
    results = []
    for label, key, run in stages:
        walls, cpus = [], []
        for _ in range(repeats):
            started, cpu_started = time.perf_counter(), _cpu_seconds()
            state[key] = run()
            walls.append(time.perf_counter() - started)
            cpus.append(_cpu_seconds() - cpu_started)
        results.append(
            {
                "stage": label,
                "seconds": statistics.median(walls),
                "cpu_seconds": statistics.median(cpus),
                "rows": state[key].height,
                "columns": state[key].width,
            }
        )
    return results


def _run_worker(implementation: str, data: Path, sample_out: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.features",
        "--worker",
        implementation,
        "--data",
        str(data),
    ]
    command += ["--sample-out", str(sample_out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{implementation} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _generated(n_contacts: int, root: Path) -> Path:
    """Data for ``n_contacts`` under ``root``, generated in a subprocess (so this process stays
    small) unless an earlier run left it there."""
    out = root / f"contacts-{n_contacts}"
    if not (out / "orders.parquet").is_file():
        command = [sys.executable, "-m", "benchmarks.features", "--generate", str(n_contacts)]
        subprocess.run([*command, "--data", str(out)], check=True)
    return out


def _compare(polars_sample: Path, pandas_sample: Path) -> tuple[int, int, list[str]]:
    left = pl.read_parquet(polars_sample).sort("contact_id")
    right = pl.read_parquet(pandas_sample).sort("contact_id")
    joined = left.join(right, on="contact_id", suffix="_pd")
    mismatched = []
    for column in COMPARED:
        a = joined[column].cast(pl.Float64).to_numpy()
        b = joined[f"{column}_pd"].cast(pl.Float64).to_numpy()
        if not np.allclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True):
            mismatched.append(column)
    return joined.height, len(COMPARED), mismatched


def _stages(data: Path) -> list[dict]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.features",
        "--worker",
        "stages",
        "--data",
        str(data),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"stages worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure(label: str, implementation: str, data: Path, repeats: int, work: Path) -> dict:
    runs = []
    for i in range(repeats):
        run = _run_worker(implementation, data, work / f"{label}-{implementation}-{i}.parquet")
        print(
            f"  {label} {implementation} run {i + 1}/{repeats}: {run['seconds']:.1f} s, "
            f"peak {run['peak_mb']:.0f} MB",
            flush=True,
        )
        runs.append(run)
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "peak_mb": statistics.median(r["peak_mb"] for r in runs),
        "peak_before_write_mb": runs[0]["peak_before_write_mb"],
        "loaded_mb": statistics.median(r["loaded_mb"] for r in runs),
        "features": runs[0]["features"],
        "rows": runs[0]["rows"],
        "repeats": repeats,
        "sample": work / f"{label}-{implementation}-0.parquet",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Smoke run: 50k contacts.")
    parser.add_argument("--contacts", type=int, default=10_000_000)
    parser.add_argument("--pandas-contacts", type=int, default=100_000)
    parser.add_argument("--memory-contacts", type=int, default=1_000_000)
    parser.add_argument(
        "--repeats", type=int, default=3, help="Runs per measurement at the pandas size."
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        help="Keep the generated data here and reuse it in later runs (default: a temp directory).",
    )
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--worker",
        choices=("polars", "polars-sink", "pandas", "pandas-file", "stages"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sample-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "stages":
        print(json.dumps(stage_costs(args.data)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.sample_out)))
        return
    if args.generate:
        generate(args.generate, seed=1, out=args.data)
        return
    if args.quick:
        big = middle = small = 50_000
    else:
        big, middle, small = args.contacts, args.memory_contacts, args.pandas_contacts
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        work = Path(tmp)
        root = args.data_root or work
        print(f"generating {small:,}, {middle:,} and {big:,} contacts...", flush=True)
        dirs = {n: _generated(n, root) for n in sorted({small, middle, big})}
        print(f"speed, {small:,} contacts, in memory:", flush=True)
        results = {
            "speed_pandas": _measure("speed", "pandas", dirs[small], args.repeats, work),
            "speed_polars": _measure("speed", "polars", dirs[small], args.repeats, work),
        }
        compared = _compare(results["speed_polars"]["sample"], results["speed_pandas"]["sample"])
        print(f"memory, {middle:,} contacts -> a features file:", flush=True)
        results["memory_pandas"] = _measure("memory", "pandas-file", dirs[middle], 1, work)
        results["memory_polars"] = _measure("memory", "polars-sink", dirs[middle], 1, work)
        print(f"stages of build_features, {middle:,} contacts:", flush=True)
        results["stages"] = _stages(dirs[middle])
        compared_file = _compare(
            results["memory_polars"]["sample"], results["memory_pandas"]["sample"]
        )
        print(f"full size, {big:,} contacts:", flush=True)
        results["full_polars"] = _measure("full", "polars", dirs[big], 1, work)
        results["full_sink"] = _measure("full", "polars-sink", dirs[big], 1, work)
    _write(args.quick, results, compared, compared_file)


def _row(name: str, result: dict) -> str:
    before_write = result.get("peak_before_write_mb")
    peak = f"{result['peak_mb']:.0f}" + (
        f" ({before_write:.0f} before writing)" if before_write else ""
    )
    return (
        f"| {name} | {result['rows']:,} | {result['repeats']} | {result['seconds']:.2f} | "
        f"{result['cpu_seconds']:.2f} | {result['seconds'] / result['rows'] * 1e6:.2f} | "
        f"{peak} | {result['loaded_mb']:.0f} |"
    )


def _same(compared: tuple[int, int, list[str]]) -> str:
    rows, columns, mismatched = compared
    verdict = "all equal" if not mismatched else "MISMATCH in " + ", ".join(mismatched)
    return f"{rows:,} sampled contacts x {columns} features (rtol 1e-9): {verdict}"


def _write(quick: bool, results: dict, compared: tuple, compared_file: tuple) -> None:
    import platform

    import pandas

    speed_pd, speed_pl = results["speed_pandas"], results["speed_polars"]
    memory_pd, memory_pl = results["memory_pandas"], results["memory_polars"]
    full, sink = results["full_polars"], results["full_sink"]
    speed = speed_pd["seconds"] / speed_pl["seconds"]
    # pandas runs on one core, Polars on two: the CPU-time ratio is given next to the wall one.
    cpu_speed = speed_pd["cpu_seconds"] / speed_pl["cpu_seconds"]
    # pandas' peak before it writes its file: the ratio leaves its write out, in its favour.
    memory = memory_pd["peak_before_write_mb"] / memory_pl["peak_mb"]
    memory_in_memory = speed_pd["peak_mb"] / speed_pl["peak_mb"]
    per_row_pd = memory_pd["seconds"] / memory_pd["rows"]
    lines = [
        "## features",
        "",
        "Point-in-time contact features (`features.pipeline`, moment after_contact, "
        f"{speed_pl['features']} features) against a straightforward pandas implementation "
        f"(`benchmarks/pandas_features.py`: groupby-rolling, merge_asof; {speed_pd['features']} "
        "of the same history features, so the ratios are conservative). Random simulator-shaped "
        "data (~4 contacts per customer, heavy-tailed, 26 weeks, 1 order per 8 contacts). Each run "
        "is a separate subprocess; time = building the features from frames in memory (and writing "
        "them, for the file jobs); peak = the process's peak resident memory (VmHWM, data loaded "
        "included). `build_features` keeps the output in memory; `write_features` streams "
        "customer-hash chunks into one Parquet file (what `cto features` does). "
        f"{'QUICK SMOKE RUN, not representative. ' if quick else ''}"
        f"Polars {pl.__version__}, pandas {pandas.__version__}, Python {platform.python_version()}, "
        "2 cores (medians of the runs shown).",
        "",
        "| job | contacts | runs | median wall time (s) | CPU time (s) | wall per 1M contacts (s) "
        "| peak memory (MB) | after loading data (MB) |",
        "|---|---|---|---|---|---|---|---|",
        _row("pandas, in memory", speed_pd),
        _row("Polars `build_features`, in memory", speed_pl),
        _row("pandas -> Parquet file", memory_pd),
        _row("Polars `write_features` -> Parquet file", memory_pl),
        _row("Polars `build_features`, in memory", full),
        _row("Polars `write_features` -> Parquet file", sink),
        "",
        f"- Speed at {speed_pl['rows']:,} contacts: Polars is **{speed:.1f}x** faster than pandas "
        f"in wall time and **{cpu_speed:.1f}x** in CPU time (target >= 10x). At "
        f"{memory_pl['rows']:,} contacts, writing the features file: "
        f"**{memory_pd['seconds'] / memory_pl['seconds']:.0f}x**.",
        f"- Memory, {memory_pl['rows']:,} contacts to a features file: pandas' peak (before it "
        f"writes) / Polars' peak = **{memory:.1f}x** (target >= 3x). With both outputs held in "
        f"memory at {speed_pl['rows']:,} contacts the ratio is {memory_in_memory:.1f}x: there the "
        "interpreter, the libraries and the 69-column output dominate both peaks.",
        f"- Full size, {full['rows']:,} contacts: `build_features` **{full['seconds']:.1f} s**, "
        f"peak {full['peak_mb']:.0f} MB; `write_features` **{sink['seconds']:.1f} s**, peak "
        f"{sink['peak_mb']:.0f} MB, {sink['loaded_mb']:.0f} MB of it held before it started (interpreter, libraries, input) (target < 20 s). "
        f"Per row, `build_features` at full size is "
        f"{per_row_pd / (full['seconds'] / full['rows']):.0f}x faster than pandas at "
        f"{memory_pd['rows']:,}.",
        f"- Same results: in memory, {_same(compared)}; from the files, {_same(compared_file)}.",
        f"- Before: {PREVIOUS_FULL_SIZE}",
        "",
        f"Where the time goes: each stage of `build_features` on {memory_pl['rows']:,} contacts "
        "(one pass, no chunks), run alone on the previous stage's output, median of 3 "
        "(`stage_costs`). The cost is spread over the stages; none dominates.",
        "",
        "| stage | rows out | columns out | wall (s) | CPU (s) | share of wall |",
        "|---|---|---|---|---|---|",
    ]
    total = sum(stage["seconds"] for stage in results["stages"])
    lines += [
        f"| {stage['stage']} | {stage['rows']:,} | {stage['columns']} | {stage['seconds']:.2f} | "
        f"{stage['cpu_seconds']:.2f} | {stage['seconds'] / total:.0%} |"
        for stage in results["stages"]
    ]
    lines.append("")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
