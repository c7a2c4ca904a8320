"""The feature pipeline on a Dask cluster: one task per customer-hash partition.

The same three steps as ``cto features --partitions N`` on one machine, spread over workers:

1. **Partition** (one task per input file slice): each slice of ``contacts``/``orders``/
   ``customers`` is split by :func:`features.partitions.customer_partition` and written to
   ``<work>/<table>/part-PPPPP/slice-SSSSS.parquet``: a shuffle through shared storage, so no
   task ever holds more than its slice.
2. **Rates, global, sharded by time** (:func:`features.rate_shards.sharded_rates`): one task
   per partition labels its contacts and writes their outcomes and lookup queries, in integers,
   to the time shard of their time (``<work>/rates/shard-JJJJJ/``); the client merges the key
   dictionaries and per-shard totals (keys x shards integers); one task per time shard builds
   its slice of the key tables, looks up its queries and writes their answers; one task
   concatenates the slices into the rate files. No task holds data of more than one partition
   or one shard: nothing is broadcast.
3. **Features** (one task per partition): the partition's contacts read their rates from the
   shards' answers (:meth:`features.rate_shards.ShardedRates.of_partition`), then
   :func:`features.pipeline.build_features` runs on the partition, written to
   ``<out>/<moment>/part-PPPPP.parquet``.

Every feature but the rates reads only its customer's rows and the rates are global tables, so
the files are exactly those of ``cto features --partitions N`` on one machine (a test checks it),
and together they hold exactly the rows of the single-file job.

Paths are read and written by the workers: on a real cluster the input, work and output
directories must be on storage every worker sees (docs/scale-out.md).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from features.errors import CTOError
from features.partitions import customer_partition

if TYPE_CHECKING:
    from distributed import Client

    from features.rate_shards import ShardedRates

TABLES = ("contacts", "orders", "customers")
LOCAL = "local:"
# Rows per partitioning task: a slice of a large input file, read by row groups.
SLICE_ROWS = 2_000_000
# Contacts per feature partition when none is asked for: the working set of build_features is
# several times its input (benchmarks/results/features.md).
PARTITION_CONTACTS = 1_000_000


@contextmanager
def dask_client(address: str, timeout: str = "10s") -> Iterator[Client]:
    """A client of the scheduler at ``address``, or of a local cluster for ``local:N``.

    ``local:N`` starts N worker processes of one thread each (Polars inside a task has its own
    threads: the cores are shared out among the workers) and stops them on exit.
    """
    from distributed import Client, LocalCluster

    address = address.strip()
    if address.startswith(LOCAL):
        text = address.removeprefix(LOCAL)
        if not text.isdigit() or int(text) < 1:
            raise CTOError(f"--dask {address!r}: local:N needs a worker count N >= 1")
        workers = int(text)
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # Read when each worker process starts, before it imports Polars.
            env={"POLARS_MAX_THREADS": threads, "OMP_NUM_THREADS": threads},
        )
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
        return
    if "://" not in address and ":" not in address:
        raise CTOError(
            f"--dask {address!r}: expected a scheduler address (tcp://host:8786) or local:N"
        )
    try:
        client = Client(address, timeout=timeout)
    except OSError as exc:
        raise CTOError(f"--dask {address}: cannot reach the Dask scheduler ({exc})") from exc
    try:
        yield client
    finally:
        client.close()


def worker_count(client: Client) -> int:
    return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))


# --- step 1: partition the inputs through storage ---------------------------------------------


def input_files(input_dir: Path) -> dict[str, list[Path]]:
    """Parquet files of each table: ``<table>.parquet`` or ``<table>/*.parquet``."""
    files: dict[str, list[Path]] = {}
    for table in TABLES:
        single = input_dir / f"{table}.parquet"
        many = sorted((input_dir / table).glob("*.parquet")) if (input_dir / table).is_dir() else []
        if single.is_file():
            files[table] = [single]
        elif many:
            files[table] = many
        elif (input_dir / f"{table}.csv").is_file():
            raise CTOError(
                f"{input_dir / f'{table}.csv'}: the Dask path reads Parquet (every worker reads "
                "slices of it); write the validated tables with `cto validate --accepted DIR`"
            )
    for table in ("contacts", "orders"):
        if table not in files:
            raise CTOError(f"{input_dir}: no {table}.parquet or {table}/*.parquet")
    return files


def _split_slice(
    path: str, offset: int, length: int, *, n_partitions: int, target: str, tag: int
) -> int:
    """Rows ``offset`` .. ``offset + length`` of one file, written per customer-hash partition."""
    frame = (
        pl.scan_parquet(path)
        .slice(offset, length)
        .with_columns(customer_partition(n_partitions).alias("_partition"))
        .collect()
    )
    for (part,), rows in frame.partition_by("_partition", as_dict=True).items():
        directory = Path(target) / f"part-{part:05d}"
        directory.mkdir(parents=True, exist_ok=True)
        rows.drop("_partition").write_parquet(directory / f"slice-{tag:05d}.parquet")
    return frame.height


def partition_inputs(
    client: Client, input_dir: Path, work_dir: Path, n_partitions: int
) -> dict[str, int]:
    """Step 1: every table split by customer hash into ``work_dir``; returns rows per table."""
    futures: dict[str, list] = {}
    for table, files in input_files(input_dir).items():
        futures[table] = []
        tag = 0
        for path in files:
            rows = pl.scan_parquet(path).select(pl.len()).collect().item()
            for offset in range(0, max(rows, 1), SLICE_ROWS):
                futures[table].append(
                    client.submit(
                        _split_slice,
                        str(path),
                        offset,
                        SLICE_ROWS,
                        n_partitions=n_partitions,
                        target=str(work_dir / table),
                        tag=tag,
                        pure=False,
                    )
                )
                tag += 1
    return {table: sum(client.gather(parts)) for table, parts in futures.items()}


def _read_partition(work_dir: Path, table: str, part: int) -> pl.DataFrame | None:
    directory = work_dir / table / f"part-{part:05d}"
    if not directory.is_dir():
        return None
    # Slices in their input order: the partition's rows in the order of the input table.
    files = sorted(directory.glob("slice-*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files]) if files else None


def _partition_tables(work_dir: Path, part: int) -> dict[str, pl.DataFrame | None]:
    from features.schema import TABLES as SCHEMAS

    tables = {table: _read_partition(work_dir, table, part) for table in TABLES}
    for table in ("contacts", "orders"):
        if tables[table] is None:  # no rows of this partition: an empty table of the contract
            tables[table] = pl.DataFrame(schema=SCHEMAS[table].polars_schema)
    return tables


# --- step 2: the global rate step ---------------------------------------------------------------


def _partition_times(work_dir: str, part: int) -> pl.Series:
    """A partition's contact start times (for the rate step's time shards)."""
    directory = Path(work_dir) / "contacts" / f"part-{part:05d}"
    files = sorted(directory.glob("slice-*.parquet")) if directory.is_dir() else []
    if not files:
        return pl.Series("started_at", [], pl.Datetime("us", "UTC"))
    return pl.read_parquet(files, columns=["started_at"])["started_at"]


def _partition_rate_inputs(work_dir: str, part: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A partition's contacts (the columns the rate step reads) and orders."""
    from features.rates import rate_contact_columns

    tables = _partition_tables(Path(work_dir), part)
    contacts = tables["contacts"]
    return contacts.select(rate_contact_columns(contacts.schema)), tables["orders"]


def dask_map(client: Client) -> Callable[[Callable, list[tuple]], list]:
    """A ``map`` of :func:`features.rate_shards.sharded_rates`: every call a task, gathered."""

    def map_(function: Callable, calls: list[tuple]) -> list:
        return client.gather([client.submit(function, *args, pure=False) for args in calls])

    return map_


def compute_rates_dask(
    client: Client,
    work_dir: Path,
    n_partitions: int,
    horizon_days: int,
    write_to: Path | None = None,
) -> ShardedRates:
    """Step 2: the global rate step sharded by time (:func:`features.rate_shards.sharded_rates`),
    every partition and every shard a task; with ``write_to`` the rate files are written there.

    Its results stay in ``<work_dir>/rates``: each partition's rate columns, read by the
    partition's feature task (:meth:`~features.rate_shards.ShardedRates.of_partition`). No task
    holds more than one partition or one time shard, plus per key and shard totals.
    """
    from functools import partial

    from features.rate_shards import sharded_rates
    from features.rates import DEFAULT_PRIOR_STRENGTH

    return sharded_rates(
        dask_map(client),
        partial(_partition_times, str(work_dir)),
        partial(_partition_rate_inputs, str(work_dir)),
        parts=n_partitions,
        directory=work_dir / "rates",
        horizon_days=horizon_days,
        prior_strength=DEFAULT_PRIOR_STRENGTH,
        write_to=write_to,
    )


def with_rates(
    contacts: pl.DataFrame, rates: ShardedRates | None, part: int
) -> tuple[pl.DataFrame, object]:
    """A partition's contacts carrying their rate columns (the partition's answers of the time
    shards), and the ``rates`` argument of the feature pipeline that reads them."""
    from features.rates import RatesOnContacts

    if rates is None:
        return contacts, None
    carried = contacts.hstack(rates.of_partition(part, contacts.height))
    return carried, RatesOnContacts(rates.horizon_days, rates.prior_strength)


# --- step 3: features per partition -------------------------------------------------------------


def _partition_features(
    work_dir: str,
    part: int,
    targets: dict[str, str],
    rates: ShardedRates | None,
    *,
    journey_gap_days: int,
    horizon_days: int,
) -> int:
    from features.pipeline import build_features

    tables = _partition_tables(Path(work_dir), part)
    contacts, carried = with_rates(tables["contacts"], rates, part)
    rows = 0
    for moment, target in targets.items():
        frame = build_features(
            contacts,
            tables["orders"],
            tables["customers"],
            carried,
            moment,
            journey_gap_days=journey_gap_days,
            horizon_days=horizon_days,
        )
        Path(target).mkdir(parents=True, exist_ok=True)
        frame.write_parquet(Path(target) / f"part-{part:05d}.parquet")
        rows = frame.height
    return rows


def default_partitions(contacts: int, workers: int) -> int:
    """At least two per worker (a slow task does not idle the rest), about 1M contacts each."""
    return max(2 * workers, math.ceil(contacts / PARTITION_CONTACTS))


def build_features_dask(
    client: Client,
    input_dir: Path | str,
    targets: dict[str, Path],
    n_partitions: int | None = None,
    *,
    rates: bool = True,
    rates_dir: Path | None = None,
    journey_gap_days: int,
    horizon_days: int,
    work_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """Features of every contact in ``input_dir`` on the cluster, one task per partition.

    ``targets``: moment -> directory of ``part-PPPPP.parquet`` files. Returns the partition count,
    rows per input table and per moment. ``work_dir`` (default: beside the first target) holds the
    partitioned inputs while the job runs and is removed afterwards.
    """
    input_dir = Path(input_dir)
    say = progress or (lambda message: None)
    if not input_dir.is_dir():
        raise CTOError(f"{input_dir}: not a directory (expected contacts and orders tables)")
    files = input_files(input_dir)
    if n_partitions is None:
        contacts = sum(
            pl.scan_parquet(p).select(pl.len()).collect().item() for p in files["contacts"]
        )
        n_partitions = default_partitions(contacts, worker_count(client))
    if n_partitions < 1:
        raise CTOError(f"--partitions must be >= 1, got {n_partitions}")
    first = next(iter(targets.values()))
    work_dir = work_dir or first.parent / f".partitions-{first.name}"
    if work_dir.exists():
        shutil.rmtree(work_dir)
    try:
        say(f"partition: {n_partitions} customer-hash partitions -> {work_dir}")
        counts = partition_inputs(client, input_dir, work_dir, n_partitions)
        say("partition: " + ", ".join(f"{rows:,} {table}" for table, rows in counts.items()))
        sharded = None
        if rates:
            say(
                f"rates: labelling {n_partitions} partitions, then the global step by time "
                f"shard (H={horizon_days}d)"
            )
            sharded = compute_rates_dask(
                client, work_dir, n_partitions, horizon_days, write_to=rates_dir
            )
            say(f"rates: {sharded.shards.count} time shards")
        from distributed import as_completed

        futures = [
            client.submit(
                _partition_features,
                str(work_dir),
                part,
                {moment: str(path) for moment, path in targets.items()},
                sharded,
                journey_gap_days=journey_gap_days,
                horizon_days=horizon_days,
                pure=False,
            )
            for part in range(n_partitions)
        ]
        rows = 0
        for done, future in enumerate(as_completed(futures), start=1):
            rows += future.result()
            if done == n_partitions or done % max(1, n_partitions // 10) == 0:
                say(f"features: {done}/{n_partitions} partitions, {rows:,} contacts")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return {"partitions": n_partitions, "inputs": counts, "contacts": rows}
