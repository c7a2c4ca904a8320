"""`cto features PATH --out FILE_OR_DIR`: point-in-time features per contact, batch or partitioned."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HELP = "Build point-in-time contact features (arrival / after_contact) from contacts and orders."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        type=Path,
        help="Directory holding contacts and orders (and optionally customers) as .parquet or .csv.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE_OR_DIR",
        help="A .parquet/.csv file (one moment, no partitions) or a directory: "
        "features_<moment>.parquet (or <moment>/part-NNNNN.parquet with --partitions) plus "
        "feature_set.json and the rate tables.",
    )
    parser.add_argument(
        "--moment",
        choices=("arrival", "after_contact", "both"),
        default="both",
        help="Scoring moment(s) to build (default both).",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        metavar="N",
        help="Larger than memory: process N customer-hash partitions one at a time. PATH must hold "
        "validated tables (e.g. from `cto validate --accepted`); rows are not re-validated.",
    )
    parser.add_argument(
        "--horizon-days",
        type=int,
        default=None,
        metavar="H",
        help="Label horizon for the conversion rates and journeys (default CTO_HORIZON_DAYS).",
    )
    parser.add_argument(
        "--journey-gap-days",
        type=int,
        default=None,
        metavar="G",
        help="A gap this long starts a new journey (default CTO_JOURNEY_GAP_DAYS).",
    )
    parser.add_argument(
        "--dask",
        default=None,
        metavar="ADDRESS",
        help="Run on a Dask cluster: a scheduler address (tcp://host:8786) or local:N (N local "
        "worker processes); default CTO_DASK. One task per customer-hash partition (--partitions, "
        "default ~1M contacts each); PATH and --out must be on storage every worker sees, and "
        "PATH must hold validated Parquet tables (rows are not re-validated).",
    )
    parser.add_argument(
        "--no-rates",
        action="store_true",
        help="Skip the global rate step: the agent/intent/channel rate features are null.",
    )


def _outputs(out: Path, moments: list[str], partitioned: bool) -> dict[str, Path]:
    from features.errors import CTOError

    if out.suffix in (".parquet", ".csv"):
        if len(moments) > 1 or partitioned:
            raise CTOError(
                f"--out {out}: a single file holds one moment without partitions; "
                "pass a directory for --moment both or --partitions"
            )
        return {moments[0]: out}
    if partitioned:
        return {moment: out / moment for moment in moments}
    return {moment: out / f"features_{moment}.parquet" for moment in moments}


def _chunk_progress(moment: str, total_contacts: int):
    """Prints one line per ~10% of the contacts written (every chunk for a few chunks)."""
    state = {"done": 0, "printed": 0}

    def report(chunk: int, chunks: int, contacts: int) -> None:
        state["done"] += contacts
        share = state["done"] / max(total_contacts, 1)
        if chunks > 1 and (share - state["printed"] >= 0.1 or chunk == chunks):
            state["printed"] = share
            print(
                f"features ({moment}): chunk {chunk}/{chunks}, {state['done']:,} of "
                f"{total_contacts:,} contacts ({share:.0%})",
                flush=True,
            )

    return report


def run(args: argparse.Namespace) -> int:
    import polars as pl

    from features.errors import CTOError
    from features.pipeline import build_features_partitioned
    from features.rate_shards import compute_rates_partitioned
    from features.registry import FEATURE_SET
    from features.settings import get_settings

    settings = get_settings()
    horizon = args.horizon_days or settings.horizon_days
    gap = args.journey_gap_days or settings.journey_gap_days
    moments = ["arrival", "after_contact"] if args.moment == "both" else [args.moment]
    partitioned = args.partitions is not None
    if partitioned and args.partitions < 1:
        raise CTOError(f"--partitions must be >= 1, got {args.partitions}")
    if not args.path.is_dir():
        raise CTOError(f"{args.path}: not a directory (expected contacts and orders tables)")
    dask = args.dask or settings.dask
    outputs = _outputs(args.out, moments, partitioned or bool(dask))
    started = time.perf_counter()

    if dask:
        _run_dask(args, dask, outputs, horizon, gap)
    elif partitioned:
        rates = None
        if not args.no_rates:
            print(f"rates: labeling {args.partitions} partitions (H={horizon}d)...", flush=True)
            rates = compute_rates_partitioned(args.path, args.partitions, horizon)
        for moment, target in outputs.items():
            print(f"features ({moment}): {args.partitions} partitions -> {target}", flush=True)
            parts = build_features_partitioned(
                args.path,
                target,
                args.partitions,
                moment,
                rates,
                journey_gap_days=gap,
                horizon_days=horizon,
                progress=True,
            )
            rows = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in parts)
            print(f"features ({moment}): {rows:,} contacts in {len(parts)} files")
    else:
        _run_one_process(args, outputs, moments, horizon, gap)

    if args.out.suffix not in (".parquet", ".csv"):
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "feature_set.json").write_text(json.dumps(FEATURE_SET.to_dict(), indent=2))
        if partitioned and not dask and rates is not None:
            rates.write(args.out / "rates")
    print(
        f"feature set {FEATURE_SET.name} {FEATURE_SET.version} ({FEATURE_SET.digest}), "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 0


def _run_one_process(
    args: argparse.Namespace, outputs: dict[str, Path], moments: list[str], horizon: int, gap: int
) -> None:
    """Validate, spill the accepted rows by customer-hash chunk, then the global rate step and the
    features one chunk at a time (:mod:`features.spill`): the inputs are never held whole after
    validation."""
    from cto.options import load_contract_tables
    from features.pipeline import build_chunk_features, write_chunk_files
    from features.registry import FEATURE_SET
    from features.spill import spilled

    stage, cpu = time.perf_counter(), time.process_time()
    tables = load_contract_tables(args.path, "left out").tables
    contacts = tables["contacts"].height
    print(
        f"input: {contacts:,} contacts, {tables['orders'].height:,} orders "
        f"(read and validated in {time.perf_counter() - stage:.1f} s, "
        f"{time.process_time() - cpu:.1f} s CPU)",
        flush=True,
    )
    single = args.out.suffix in (".parquet", ".csv")
    stage, cpu = time.perf_counter(), time.process_time()
    with spilled(tables, args.out.parent if single else args.out) as inputs:
        print(
            f"spill: {inputs.chunks} customer-hash chunks ({time.perf_counter() - stage:.1f} s, "
            f"{time.process_time() - cpu:.1f} s CPU)",
            flush=True,
        )
        rates = None
        if not args.no_rates:
            stage, cpu = time.perf_counter(), time.process_time()
            # The global step: every contact's rates as of its start, the tables written (not
            # kept: each chunk's contacts carry their rates into the features).
            rates = inputs.carry_rates(horizon, write_to=None if single else args.out / "rates")
            print(
                f"rates: {time.perf_counter() - stage:.1f} s ({time.process_time() - cpu:.1f} s "
                "CPU)",
                flush=True,
            )
        stage, cpu = time.perf_counter(), time.process_time()
        target = next(iter(outputs.values()))
        options = {"journey_gap_days": gap, "horizon_days": horizon}
        if target.suffix == ".csv":
            frame = build_chunk_features(inputs, rates, moments[0], **options)
            target.parent.mkdir(parents=True, exist_ok=True)
            frame.write_csv(target)
            rows = frame.height
        else:
            # Every moment from one pass (after_contact holds the arrival features), streamed to
            # the files chunk by chunk: the output is never held whole.
            rows = write_chunk_files(
                inputs,
                outputs,
                rates,
                progress=_chunk_progress(" + ".join(moments), contacts),
                **options,
            )
    seconds, cpu = time.perf_counter() - stage, time.process_time() - cpu
    for moment, target in outputs.items():
        print(
            f"features ({moment}): {rows:,} rows x {len(FEATURE_SET.for_moment(moment))} "
            f"features -> {target}",
            flush=True,
        )
    print(
        f"features: {seconds:.1f} s ({rows / max(seconds, 1e-9):,.0f} contacts/s, {cpu:.1f} s CPU)",
        flush=True,
    )


def _run_dask(
    args: argparse.Namespace, address: str, outputs: dict[str, Path], horizon: int, gap: int
) -> None:
    """``cto features --dask``: the partitioned job, one task per partition on the cluster."""
    from features.distributed import build_features_dask, dask_client, worker_count

    with dask_client(address) as client:
        print(f"dask: {address}, {worker_count(client)} workers", flush=True)
        result = build_features_dask(
            client,
            args.path,
            outputs,
            args.partitions,
            rates=not args.no_rates,
            rates_dir=None if args.no_rates else args.out / "rates",
            journey_gap_days=gap,
            horizon_days=horizon,
            progress=lambda message: print(message, flush=True),
        )
    for moment, target in outputs.items():
        print(
            f"features ({moment}): {result['contacts']:,} contacts in "
            f"{result['partitions']} files -> {target}",
            flush=True,
        )
