"""The global rate step sharded by time range: no task holds data proportional to the whole data.

A contact started at ``s`` reads the outcomes settled before ``s`` (:mod:`features.rates`). Cut
time into ranges ``[b(j-1), b(j))``, the time shards: an outcome settled at ``t`` and a contact
started at ``s`` fall in the shard of their own time, and everything in an earlier shard is
before ``s``. So a contact's counts are those of the shards before its own (a prefix: a few
integers per key and shard) plus those of its own shard's outcomes before ``s``. The step runs in
four kinds of task, each holding one partition or one shard plus per-key summaries:

1. :func:`split_partition` (per customer-hash partition): the partition's outcomes in integers
   (:func:`features.rates.partition_outcomes`) and its lookup queries (start, key ids, row in the
   partition), each written to the shard of its time in the work directory (a shuffle through
   storage); returns the partition's key dictionaries and per shard and key totals.
2. :func:`global_step` (the client): the key dictionaries merged, and per shard the totals before
   it (global and per key) and the last instant before it: keys x shards integers.
3. :func:`rate_shard` (per shard): the shard's outcomes and queries in one time order, each
   query's counts read off the running counts (offset by the prefix:
   :meth:`features.rates.KeyCounts.rates_of`); writes the queries' answers keyed by (partition,
   row) and its slice of the global and key tables.
4. :meth:`ShardedRates.of_partition` (per partition, in the feature task): the partition's answers
   from every shard, back in row order.

:func:`write_rate_files` then concatenates the shards' slices into the very files
:meth:`features.rates.RateTables.write` gives (rows in key and time order), a bounded batch at a
time. :func:`sharded_rates` runs the whole step with any ``map`` (one process: in turn, or a few
calls at once in threads; Dask: as tasks), so both paths run the same functions.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import polars as pl

from features.errors import CTOError
from features.partitions import customer_partition, scan_tables
from features.rates import (
    DEFAULT_PRIOR_STRENGTH,
    ENGINE,
    KNOWN_AT,
    KeyCounts,
    RateTables,
    _by_instant,
    _key_table,
    _rate_rows,
    partition_outcomes,
    rate_contact_columns,
)

# Contacts per time shard: the shard task holds their queries and about as many outcomes.
SHARD_CONTACTS = 2_000_000
# Start times sampled per partition to place the shard boundaries.
SAMPLE_SIZE = 2_000
# Rows of a rate table written per batch by write_rate_files (bounds its working set).
_WRITE_ROWS = 1_000_000


@dataclass(frozen=True)
class Shards:
    """Where the shards live and where they cut time: shard ``j`` holds the times in
    ``[bounds[j-1], bounds[j])`` (sorted, distinct; the first and last shards are open)."""

    directory: Path
    bounds: pl.Series

    @property
    def count(self) -> int:
        return self.bounds.len() + 1

    def of(self, times: pl.Series) -> pl.Series:
        """The shard of each time (a null time: shard 0, where no outcome is before it)."""
        if self.bounds.len() == 0:
            return pl.zeros(times.len(), pl.UInt32, eager=True)
        found = self.bounds.search_sorted(times.cast(self.bounds.dtype), side="right")
        return pl.select(
            pl.when(times.is_not_null()).then(found.cast(pl.UInt32)).otherwise(0)
        ).to_series()

    def path(self, kind: str, shard: int, part: int | str = "") -> Path:
        suffix = f"-{part:05d}" if isinstance(part, int) else part
        return self.directory / f"shard-{shard:05d}" / f"{kind}{suffix}"


@dataclass(frozen=True)
class PartitionSummary:
    """What a partition tells the global step: its key dictionaries (``names``, sorted), per
    shard its outcomes, conversions and latest time (``totals``), per key and shard its outcomes
    and conversions (``keys``, by the partition's own key ids)."""

    part: int
    contacts: int
    names: dict[str, pl.Series]
    totals: pl.DataFrame
    keys: dict[str, pl.DataFrame]


@dataclass(frozen=True)
class ShardPrefix:
    """Everything before a shard: outcomes and conversions, the latest instant (None: no outcome
    before it), and per key (global id) its outcomes and conversions."""

    outcomes: int
    conversions: int
    last: object
    keys: dict[str, pl.DataFrame]


@dataclass(frozen=True)
class GlobalStep:
    """The merged key dictionaries, each partition's ids ranked in them, each shard's prefix."""

    names: dict[str, pl.Series]
    ranks: dict[int, dict[str, pl.Series]]
    prefixes: list[ShardPrefix]


@dataclass(frozen=True)
class ShardedRates:
    """Where each partition's rate columns are once the step ran (the ``rates`` a feature task
    is given instead of the tables: a path, not data)."""

    shards: Shards
    parts: int
    horizon_days: int
    prior_strength: float

    def of_partition(self, part: int, height: int) -> pl.DataFrame:
        """The rate columns (:data:`features.rates.RATE_COLUMNS`) of the partition's contacts,
        in their order (``height``: how many contacts it has)."""
        frames = [
            pl.read_ipc(self.shards.path("answers", shard, part))
            for shard in range(self.shards.count)
        ]
        found = pl.concat(frames)
        if found.height != height:
            raise CTOError(
                f"rate step: partition {part} has {height} contacts but {found.height} answers"
            )
        # Each row once: put back by row number (a scatter, not a sort).
        rows = found["_row"]
        return pl.DataFrame(
            [
                pl.Series(name, dtype=found.schema[name])
                .extend_constant(None, height)
                .scatter(rows, found[name])
                for name in found.columns
                if name != "_row"
            ]
        )


def time_sample(started: pl.Series, size: int = SAMPLE_SIZE) -> pl.Series:
    """About ``size`` of a partition's start times, every k-th row: the boundaries are
    quantiles of all partitions' samples together (:func:`plan_shards` sorts them), so the
    partition's own times need no sort."""
    started = started.drop_nulls()
    return started.gather_every(max(1, started.len() // size))


def plan_shards(
    samples: list[pl.Series],
    contacts: int,
    horizon_days: int,
    directory: Path,
    shard_contacts: int = SHARD_CONTACTS,
) -> Shards:
    """Boundaries at quantiles of the sampled times, outcomes' (start + H) and queries' (start)
    together, so the shards hold about equal rows. Any boundaries give the same rates: they only
    decide which task does which part of the work."""
    wanted = max(1, math.ceil(contacts / shard_contacts))
    sampled = pl.concat(samples) if samples else pl.Series([], dtype=pl.Datetime("us", "UTC"))
    times = pl.concat([sampled, sampled + timedelta(days=horizon_days)]).sort()
    picks = [round(i * times.len() / wanted) for i in range(1, wanted)]
    bounds = times.gather([p for p in picks if p < times.len()]).unique().sort()
    return Shards(directory=Path(directory), bounds=bounds)


def split_partition(
    shards: Shards, part: int, contacts: pl.DataFrame, orders: pl.DataFrame, horizon_days: int
) -> PartitionSummary:
    """Step 1 for one partition (every row of some customers): its outcomes and its lookup
    queries, each written to the shard of its time; every shard gets a file (maybe empty)."""
    piece = partition_outcomes(
        contacts.select(rate_contact_columns(contacts.schema)), orders, horizon_days
    )
    outcomes = piece.outcomes.with_columns(shards.of(piece.outcomes[KNOWN_AT]).alias("_shard"))
    queries = piece.queries.with_columns(shards.of(piece.queries["started_at"]).alias("_shard"))
    for kind, frame in (("outcomes", outcomes), ("queries", queries)):
        # In time order, so each shard's rows are one slice.
        cuts = frame["_shard"].search_sorted(
            pl.int_range(shards.count + 1, dtype=pl.UInt32, eager=True), side="left"
        )
        for shard in range(shards.count):
            start = cuts[shard]
            rows = frame.slice(start, cuts[shard + 1] - start).drop("_shard")
            shards.path(kind, shard).parent.mkdir(parents=True, exist_ok=True)
            rows.write_ipc(shards.path(kind, shard, part), compression="uncompressed")
    converted = pl.col("_converted").cast(pl.UInt64)
    totals = outcomes.group_by("_shard").agg(
        pl.len().cast(pl.UInt64).alias("outcomes"),
        converted.sum().alias("conversions"),
        pl.col(KNOWN_AT).max().alias("last"),
    )
    # Grouped by shard and key packed in one integer, summing outcomes and conversions packed in
    # one (outcomes * 2**32 + conversions): a third of a two-key, two-sum group-by's cost.
    packed = converted + (1 << 32)
    keys = {
        name: outcomes.lazy()
        .filter(pl.col(f"_kid_{name}").is_not_null())
        .group_by(
            (pl.col("_shard").cast(pl.UInt64) * (1 << 32) + pl.col(f"_kid_{name}")).alias("_key")
        )
        .agg(packed.sum().alias("_sum"))
        .select(
            (pl.col("_key") // (1 << 32)).cast(pl.UInt32).alias("_shard"),
            (pl.col("_key") % (1 << 32)).cast(pl.UInt32).alias("_kid"),
            (pl.col("_sum") // (1 << 32)).alias("outcomes"),
            (pl.col("_sum") % (1 << 32)).alias("conversions"),
        )
        .collect(engine=ENGINE)
        for name in piece.names
    }
    return PartitionSummary(
        part=part, contacts=contacts.height, names=piece.names, totals=totals, keys=keys
    )


def global_step(summaries: list[PartitionSummary], shards: int) -> GlobalStep:
    """Step 2: the partitions' summaries merged (keys x shards integers)."""
    if not summaries:
        raise CTOError("rate step: no partition summaries given")
    names = {
        name: pl.concat([s.names[name] for s in summaries]).unique().sort()
        for name in summaries[0].names
    }
    for name, keys in names.items():
        if keys.len() >= 1 << 31:  # a key id takes 31 bits in the step tables' sort
            raise CTOError(f"rate step: {keys.len():,} {name} keys (at most 2**31 - 1)")
    # A partition's keys are among the merged ones: their ranks there, by a binary search.
    ranks = {
        s.part: {
            name: names[name].search_sorted(s.names[name], side="left").cast(pl.UInt32)
            for name in names
        }
        for s in summaries
    }
    totals = pl.concat([s.totals for s in summaries])
    keys = {
        name: pl.concat(
            [
                s.keys[name].with_columns(
                    pl.lit(ranks[s.part][name]).gather(pl.col("_kid")).alias("_kid")
                )
                for s in summaries
            ]
        )
        for name in names
    }
    prefixes = []
    for shard in range(shards):
        before = totals.filter(pl.col("_shard") < shard)
        prefixes.append(
            ShardPrefix(
                outcomes=int(before["outcomes"].sum()),
                conversions=int(before["conversions"].sum()),
                last=before["last"].max(),
                keys={
                    name: frame.filter(pl.col("_shard") < shard)
                    .group_by("_kid")
                    .agg(
                        pl.col("outcomes").sum().cast(pl.UInt32),
                        pl.col("conversions").sum().cast(pl.UInt32),
                    )
                    .sort("_kid")
                    for name, frame in keys.items()
                },
            )
        )
    return GlobalStep(names=names, ranks=ranks, prefixes=prefixes)


def _global_ids(frame: pl.DataFrame, ranks: dict[str, pl.Series]) -> pl.DataFrame:
    """A partition's rows with its key ids turned into ranks among the merged keys."""
    return frame.with_columns(
        pl.lit(rank, pl.UInt32).gather(pl.col(f"_kid_{name}")).alias(f"_kid_{name}")
        if rank.len()
        else pl.lit(None, pl.UInt32).alias(f"_kid_{name}")
        for name, rank in ranks.items()
    )


def _read_shard(
    shards: Shards, kind: str, shard: int, ranks: dict[int, dict[str, pl.Series]]
) -> pl.DataFrame:
    """A shard's rows of ``kind`` from every partition, keyed by the merged key ids."""
    return pl.concat(
        [
            _global_ids(pl.read_ipc(shards.path(kind, shard, part)), ranks[part]).with_columns(
                pl.lit(part, pl.UInt32).alias("_part")
            )
            for part in sorted(ranks)
        ]
    )


def rate_shard(  # noqa: PLR0917 (a task's arguments)
    shards: Shards,
    shard: int,
    names: dict[str, pl.Series],
    ranks: dict[int, dict[str, pl.Series]],
    prefix: ShardPrefix,
    prior_strength: float,
    write_tables: bool,
) -> dict[str, pl.DataFrame]:
    """Step 3 for one shard: its queries' answers and (``write_tables``) its slice of the
    tables, written to the shard's directory. Returns each table's rows per key id in the slice
    (for :func:`write_rate_files`; none without ``write_tables``)."""
    outcomes = _read_shard(shards, "outcomes", shard, ranks).drop("_part")
    outcomes, global_rate = _by_instant(outcomes, (prefix.outcomes, prefix.conversions))
    earlier = {
        # The key's counts before the shard, by key id (a dense array: keys, not contacts).
        name: pl.DataFrame({"_kid": pl.int_range(keys.len(), dtype=pl.UInt32, eager=True)})
        .join(prefix.keys[name], on="_kid", how="left", maintain_order="left")
        .fill_null(0)
        for name, keys in names.items()
        if prefix.keys[name].height
    }
    # In time order (the lookup merges them with the outcomes); the answers carry their rows.
    queries = _read_shard(shards, "queries", shard, ranks).sort("started_at")
    lookup = KeyCounts(
        prior_strength=prior_strength,
        names=names,
        before=(prefix.outcomes, prefix.conversions),
        earlier=earlier,
    )
    answers = pl.concat(
        [queries.select("_part", "_row"), lookup.rates_of(outcomes, queries)], how="horizontal"
    )
    del queries, lookup
    for (part,), frame in answers.partition_by("_part", as_dict=True, include_key=False).items():
        frame.write_ipc(shards.path("answers", shard, part), compression="uncompressed")
    for part in set(ranks) - set(answers["_part"].unique().to_list()):
        answers.clear().drop("_part").write_ipc(
            shards.path("answers", shard, part), compression="uncompressed"
        )
    del answers
    if not write_tables:
        return {}
    global_rate.write_ipc(shards.path("global", shard), compression="uncompressed")
    rows = {}
    for name in names:
        table = _key_table(outcomes, name).with_columns(
            (pl.col("_step") // (1 << 32)).cast(pl.UInt32).alias("_kid")
        )
        if name in earlier:
            table = table.with_columns(
                pl.col(column) + pl.lit(earlier[name][column]).gather(pl.col("_kid"))
                for column in ("outcomes", "conversions")
            )
        # Rows per key id: the table is in key order, so its runs (no hashing).
        rows[name] = (
            table["_kid"].rle().struct.unnest().select(pl.col("value").alias("_kid"), "len")
        )
        # In integers (strings and rates are made once, by write_rate_files).
        instant = (pl.col("_step") % (1 << 32)).cast(pl.Int64)
        table.select(
            pl.col("_kid").alias("_key_id"),
            pl.lit(global_rate[KNOWN_AT]).gather(instant).alias(KNOWN_AT),
            "outcomes",
            "conversions",
            pl.lit(global_rate["rate"]).gather(instant).alias("prior"),
        ).write_ipc(shards.path(f"table-{name}", shard), compression="uncompressed")
        del table
    return rows


def write_rate_file(  # noqa: PLR0917 (a task's arguments)
    shards: Shards,
    table: str,
    keys: pl.Series | None,
    rows: list[pl.DataFrame],
    directory: Path | str,
    prior_strength: float,
) -> Path:
    """One of the files :meth:`features.rates.RateTables.write` gives, from the shards' slices:
    ``table`` "global" (in time order), or a key's table (``keys``: its names; ``rows``: each
    shard's rows per key id) in key then time order, a bounded batch at a time. One task per
    file, so the files are written side by side."""
    directory = Path(directory)
    if table == "global":
        path = directory / "rates_global.parquet"
        # lz4 as the key tables: zstd took about twice the CPU here (10M contacts, measured).
        pl.scan_ipc([shards.path("global", shard) for shard in range(shards.count)]).sink_parquet(
            path, compression="lz4"
        )
        return path
    files = [shards.path(f"table-{table}", shard) for shard in range(shards.count)]
    ordered = functools.partial(_key_ordered, files, rows)
    schema = _rate_rows(
        pl.scan_ipc(files[0]).with_columns(pl.lit("", pl.String).alias("key")), 0
    ).collect_schema()
    path = directory / f"rates_{table}.parquet"
    _sink(ordered, keys, prior_strength, schema, path)
    return path


def write_rate_files(  # noqa: PLR0917 (the step's results)
    map_: Map,
    shards: Shards,
    names: dict[str, pl.Series],
    rows: list[dict[str, pl.DataFrame]],
    directory: Path | str,
    horizon_days: int,
    prior_strength: float,
) -> Path:
    """The shards' slices as the files :meth:`features.rates.RateTables.write` gives, each file
    a call of ``map_`` (:func:`write_rate_file`), and their ``rates.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    map_(
        write_rate_file,
        [
            # The key tables first: the largest (a row per key and instant, a key string each).
            *[
                (
                    shards,
                    name,
                    keys,
                    [shard_rows[name] for shard_rows in rows],
                    directory,
                    prior_strength,
                )
                for name, keys in names.items()
            ],
            (shards, "global", None, [], directory, prior_strength),
        ],
    )
    meta = {"horizon_days": horizon_days, "prior_strength": prior_strength, "tables": sorted(names)}
    (directory / "rates.json").write_text(json.dumps(meta, indent=2, default=str))
    return directory


def _key_ordered(files: list[Path], counts: list[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """The rows of shard files (each sorted by key id, then time) in key, then time order.

    Keys are taken a batch of about _WRITE_ROWS rows at a time: each shard's rows of the batch
    are one read of its file, and each key's rows are its slices of those, shard after shard
    (a shard's rows are later than the previous shard's). A key of more rows than that goes
    alone, shard by shard.
    """
    # Per shard: each key's first row and row count in the shard's file.
    spans = [
        dict(
            zip(
                frame["_kid"].to_list(),
                zip(
                    (frame["len"].cum_sum() - frame["len"]).to_list(),
                    frame["len"].to_list(),
                    strict=True,
                ),
                strict=True,
            )
        )
        for frame in counts
    ]
    keys = (
        pl.concat([frame.select("_kid", "len") for frame in counts])
        .group_by("_kid")
        .agg(pl.col("len").sum())
        .sort("_kid")
    )

    def read(kids: list[int]) -> Iterator[pl.DataFrame]:
        loaded = []
        for path, span in zip(files, spans, strict=True):
            found = [span[kid] for kid in kids if kid in span]
            if not found:
                loaded.append(None)
                continue
            start = found[0][0]
            rows = pl.scan_ipc(path).slice(start, sum(n for _, n in found)).collect(engine=ENGINE)
            loaded.append((start, rows))
        for kid in kids:
            for span, shard in zip(spans, loaded, strict=True):
                if kid in span and shard is not None:
                    offset, length = span[kid]
                    yield shard[1].slice(offset - shard[0], length)

    batch, size = [], 0
    for kid, length in keys.iter_rows():
        if length >= _WRITE_ROWS:
            if batch:
                yield _stack(read(batch))
                batch, size = [], 0
            yield from read([kid])
            continue
        batch.append(kid)
        size += length
        if size >= _WRITE_ROWS:
            yield _stack(read(batch))
            batch, size = [], 0
    if batch:
        yield _stack(read(batch))


def _stack(frames: Iterator[pl.DataFrame]) -> pl.DataFrame:
    """The frames one under the other, each column a plain series.

    Not ``pl.concat``: on one-row frames that agree in a column, Polars 2.1 makes that column a
    broadcast constant, and dividing by a constant is done times its reciprocal, a rate one bit
    off the pooled step's (found by the property test of the rate files)."""
    frames = list(frames)
    return pl.DataFrame(
        [pl.concat([frame.get_column(name) for frame in frames]) for name in frames[0].columns]
    )


def _sink(  # noqa: PLR0917 (internal)
    frames: Callable[[], Iterator[pl.DataFrame]],
    names: pl.Series,
    prior_strength: float,
    schema: pl.Schema,
    path: Path,
) -> None:
    """The shards' rows (``frames``, in integers) written to one Parquet file as the rows of a
    rate table (key strings, rates), a batch at a time: never all held."""
    from polars.io.plugins import register_io_source

    def source(with_columns, predicate, n_rows, batch_size) -> Iterator[pl.DataFrame]:
        for frame in frames():
            rows = _rate_rows(
                frame.lazy().with_columns(pl.lit(names).gather(pl.col("_key_id")).alias("key")),
                prior_strength,
            ).collect(engine=ENGINE)
            rows = rows if predicate is None else rows.filter(predicate)
            yield rows if with_columns is None else rows.select(with_columns)

    register_io_source(source, schema=schema).sink_parquet(path, compression="lz4")


Map = Callable[[Callable, list[tuple]], list]


def in_turn(function: Callable, calls: list[tuple]) -> list:
    """The one-process ``map`` of :func:`sharded_rates`: each call in turn."""
    return [function(*args) for args in calls]


def in_threads(workers: int) -> Map:
    """A one-process ``map`` of :func:`sharded_rates` running up to ``workers`` calls at once in
    threads, results in call order. Polars computes, reads and writes without the GIL, so the
    calls overlap where one alone leaves a core idle (its sorts, merges and file writes are
    partly serial); ``workers`` partitions or shards are then held at once."""

    def map_(function: Callable, calls: list[tuple]) -> list:
        if workers < 2 or len(calls) < 2:
            return in_turn(function, calls)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cto-rates") as pool:
            return list(pool.map(lambda args: function(*args), calls))

    return map_


def _sample_task(read_times: Callable[[int], pl.Series], part: int) -> tuple[pl.Series, int]:
    started = read_times(part)
    return time_sample(started), started.len()


def _split_task(
    read_partition: Callable[[int], tuple[pl.DataFrame, pl.DataFrame]],
    shards: Shards,
    part: int,
    horizon_days: int,
) -> PartitionSummary:
    contacts, orders = read_partition(part)
    return split_partition(shards, part, contacts, orders, horizon_days)


def sharded_rates(  # noqa: PLR0913 (the step's inputs)
    map_: Map,
    read_times: Callable[[int], pl.Series],
    read_partition: Callable[[int], tuple[pl.DataFrame, pl.DataFrame]],
    *,
    parts: int,
    directory: Path,
    horizon_days: int,
    prior_strength: float,
    write_to: Path | str | None = None,
    shard_contacts: int = SHARD_CONTACTS,
    bounds: pl.Series | None = None,
) -> ShardedRates:
    """The whole step: ``read_times(part)`` gives a partition's start times (for the shard
    boundaries), ``read_partition(part)`` its contacts and orders; ``map_`` runs a function over
    argument tuples (:func:`in_turn`, :func:`in_threads`, or as Dask tasks). ``bounds`` (tests): the boundaries to
    use instead of the sampled ones. With ``write_to`` the rate files are written there."""
    if horizon_days < 1:
        raise CTOError(f"horizon_days must be >= 1, got {horizon_days}")
    if prior_strength <= 0:
        raise CTOError(f"prior_strength must be > 0, got {prior_strength}")
    if bounds is None:
        sampled = map_(_sample_task, [(read_times, part) for part in range(parts)])
        shards = plan_shards(
            [s for s, _ in sampled],
            sum(n for _, n in sampled),
            horizon_days,
            directory,
            shard_contacts,
        )
    else:
        shards = Shards(directory=Path(directory), bounds=bounds.unique().sort())
    summaries = map_(
        _split_task, [(read_partition, shards, part, horizon_days) for part in range(parts)]
    )
    step = global_step(summaries, shards.count)
    del summaries
    write_tables = write_to is not None
    rows = map_(
        rate_shard,
        [
            (shards, j, step.names, step.ranks, step.prefixes[j], prior_strength, write_tables)
            for j in range(shards.count)
        ],
    )
    if write_to is not None:
        write_rate_files(map_, shards, step.names, rows, write_to, horizon_days, prior_strength)
    return ShardedRates(
        shards=shards, parts=parts, horizon_days=horizon_days, prior_strength=prior_strength
    )


# --- the step on one machine -----------------------------------------------------------------


def compute_rates_partitioned(
    input_dir: Path | str,
    n_partitions: int,
    horizon_days: int,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
) -> RateTables:
    """:func:`compute_rates` for data larger than memory.

    A contact's outcome depends on its own customer's orders only, so each customer-hash
    partition is labelled on its own; the global step runs sharded by time
    (:func:`features.rate_shards.sharded_rates`, one partition or shard in memory at a time),
    its files written to a temporary directory and read back as the tables.
    """
    import tempfile

    scans = scan_tables(Path(input_dir))

    def read_partition(part: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        contacts = scans["contacts"].filter(customer_partition(n_partitions) == part).collect()
        orders = scans["orders"].filter(customer_partition(n_partitions) == part).collect()
        return contacts.select(rate_contact_columns(contacts.schema)), orders

    def read_times(part: int) -> pl.Series:
        return (
            scans["contacts"]
            .filter(customer_partition(n_partitions) == part)
            .select("started_at")
            .collect()
            .to_series()
        )

    with tempfile.TemporaryDirectory(prefix="cto-rates-") as work:
        sharded_rates(
            in_turn,
            read_times,
            read_partition,
            parts=n_partitions,
            directory=Path(work) / "shards",
            horizon_days=horizon_days,
            prior_strength=prior_strength,
            write_to=Path(work) / "rates",
        )
        return RateTables.read(Path(work) / "rates")
