"""Point-in-time conversion rates per agent, intent and channel: the GLOBAL feature step.

Unlike the per-customer history features, a rate pools every customer, so it is computed in its
own step over all labeled contacts and joined onto contacts afterwards (a batch job runs it
sharded by time range, :mod:`features.rate_shards`, and each partition reads its own rates).

Point in time: a contact's outcome (``converted``) is only settled once its H-day label window has
closed, at ``label_known_at = started_at + H``. A scored contact started at ``s`` sees the outcomes
with ``label_known_at < s`` and nothing else (``join_asof`` backward, exact matches excluded): an
order at exactly ``s`` can settle a label window ending at ``s`` (windows include their end), and
orders at ``s`` are not known at ``s`` (the same strict rule as the order-history features). Its
own outcome, and those of contacts in the H days before it, are never in its rate.

Smoothing: ``rate = (conversions + m * prior) / (outcomes + m)`` with ``m = prior_strength``,
``conversions``/``outcomes`` the key's settled outcomes and ``prior`` the global rate, all as known
at the scored contact's start, so an agent with two contacts is pulled to
the global rate instead of reading 0 or 1, and an agent with none gets the global rate. Before
any outcome is known at all, rates are null.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from features.errors import CTOError

# Group key per rate; bots have no agent_id and share one "bot" rate.
RATE_KEYS: dict[str, pl.Expr] = {
    "agent": pl.coalesce(
        pl.col("agent_id"),
        pl.when(pl.col("handled_by").cast(pl.String) == "bot").then(pl.lit("bot")),
    ),
    "intent": pl.col("intent").cast(pl.String),
    "channel": pl.col("channel").cast(pl.String),
}
DEFAULT_PRIOR_STRENGTH = 20.0
KNOWN_AT = "label_known_at"
ENGINE = "in-memory"  # asof joins and cumulative sums: the streaming engine only adds overhead


@dataclass(frozen=True)
class RateTables:
    """Step functions of the known conversion rate over time, one table per key.

    ``tables[name]``: ``key, label_known_at, outcomes, conversions, prior, rate`` sorted by key and
    time: cumulative settled outcomes of the key from ``label_known_at`` on (until the key's next
    row); ``rate`` is the smoothed rate at that moment (for reports; scoring re-smooths with the
    global rate known at the scored contact's start).
    ``global_rate``: ``label_known_at, outcomes, conversions, rate`` (the prior).
    """

    horizon_days: int
    prior_strength: float
    tables: dict[str, pl.DataFrame]
    global_rate: pl.DataFrame
    meta: dict[str, object] = field(default_factory=dict)
    # Set by for_joining(): the prepared join tables, the full tables having been let go.
    join_only: _RateLookup | None = field(default=None, repr=False, compare=False)

    def for_joining(self) -> RateTables:
        """These rates as the feature joins need them, and nothing else: same joined values.

        The rate tables hold about one row per contact (7 columns, a key string); the join
        reads prepared copies of four of them (an integer key, counts). A large batch job
        writes the tables, then keeps only this (at 10M contacts: about 1.9 GB less).
        ``tables``/``global_rate`` of the result are empty: it cannot be written or reported.
        """
        lookup = _rate_lookup(self)
        if lookup.snapshot or lookup.composite is None:
            return self  # small, or joined by the fallback that reads the full tables
        return RateTables(
            horizon_days=self.horizon_days,
            prior_strength=self.prior_strength,
            tables={name: table.clear() for name, table in self.tables.items()},
            global_rate=self.global_rate.clear(),
            meta=dict(self.meta),
            join_only=replace(lookup, tables={}),
        )

    def write(self, directory: Path | str) -> Path:
        if self.join_only is not None:
            raise CTOError(
                "these rate tables were reduced for joining (for_joining): write the "
                "full tables before reducing them"
            )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, table in self.tables.items():
            table.write_parquet(directory / f"rates_{name}.parquet")
        self.global_rate.write_parquet(directory / "rates_global.parquet")
        meta = {
            "horizon_days": self.horizon_days,
            "prior_strength": self.prior_strength,
            "tables": sorted(self.tables),
        } | self.meta
        (directory / "rates.json").write_text(json.dumps(meta, indent=2, default=str))
        return directory

    @classmethod
    def read(cls, directory: Path | str) -> RateTables:
        directory = Path(directory)
        meta_path = directory / "rates.json"
        if not meta_path.is_file():
            raise CTOError(f"{directory}: no rates.json (write rate tables with RateTables.write)")
        meta = json.loads(meta_path.read_text())
        tables = {
            name: pl.read_parquet(directory / f"rates_{name}.parquet") for name in meta["tables"]
        }
        return cls(
            horizon_days=int(meta["horizon_days"]),
            prior_strength=float(meta["prior_strength"]),
            tables=tables,
            global_rate=pl.read_parquet(directory / "rates_global.parquet"),
            meta={
                k: v
                for k, v in meta.items()
                if k not in ("horizon_days", "prior_strength", "tables")
            },
        )

    def latest(self, name: str) -> pl.DataFrame:
        """Each key's rate as of the end of the data (for reports and the service's health page)."""
        return self.tables[name].group_by("key").agg(pl.all().sort_by(KNOWN_AT).last()).sort("key")


def _by_instant(
    outcomes: pl.DataFrame, before: tuple[int, int] = (0, 0)
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Outcomes sorted by time, each with its instant's index in the global table (``_instant``),
    and that table: outcomes, conversions and the rate known at every instant. One definition for
    :func:`compute_rates` and the time shards (:mod:`features.rate_shards`), so their instants
    and priors agree. ``before``: outcomes and conversions of the instants before these (a
    shard's prefix), added to the running counts."""
    outcomes_before, conversions_before = before
    outcomes = (
        outcomes.lazy()
        .sort(KNOWN_AT)
        .with_columns(
            ((pl.col(KNOWN_AT) != pl.col(KNOWN_AT).shift(1)).fill_null(True).cum_sum() - 1)
            .cast(pl.UInt32)
            .alias("_instant")
        )
        .collect(engine=ENGINE)
    )
    global_rate = (
        outcomes.lazy()
        .select(KNOWN_AT, pl.col("_converted").cast(pl.Int64))
        .with_columns(
            pl.int_range(
                outcomes_before + 1, outcomes_before + pl.len() + 1, dtype=pl.UInt32
            ).alias("outcomes"),
            (pl.col("_converted").cum_sum() + conversions_before).alias("conversions"),
        )
        .filter(_last_of_run(KNOWN_AT))
        .select(
            KNOWN_AT,
            "outcomes",
            "conversions",
            (pl.col("conversions") / pl.col("outcomes")).alias("rate"),
        )
        .collect(engine=ENGINE)
    )
    return outcomes, global_rate


def compute_rates(
    labeled_contacts: pl.DataFrame | pl.LazyFrame,
    horizon_days: int,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
) -> RateTables:
    """Point-in-time smoothed conversion rates from labeled contacts (:func:`features.labels.label_contacts`).

    Needs ``started_at``, ``converted``, ``intent``, ``channel`` and ``agent_id``/``handled_by``;
    ``label_known_at`` is used when present, else ``started_at + horizon_days``.
    """
    if horizon_days < 1:
        raise CTOError(f"horizon_days must be >= 1, got {horizon_days}")
    if prior_strength <= 0:
        raise CTOError(f"prior_strength must be > 0, got {prior_strength}")
    frame = labeled_contacts.lazy()
    schema = frame.collect_schema()
    missing = [c for c in ("started_at", "converted", "intent", "channel") if c not in schema]
    if missing:
        raise CTOError(f"compute_rates: labeled contacts lack column(s) {', '.join(missing)}")
    known_at = (
        pl.col(KNOWN_AT)
        if KNOWN_AT in schema
        else pl.col("started_at") + timedelta(days=horizon_days)
    )
    agent_key = RATE_KEYS["agent"]
    if "agent_id" not in schema:
        agent_key = pl.lit(None, pl.String)
    keys = dict(RATE_KEYS) | {"agent": agent_key}
    outcomes = frame.select(
        known_at.alias(KNOWN_AT),
        pl.col("converted").cast(pl.Int64).alias("_converted"),
        *[expr.alias(f"_key_{name}") for name, expr in keys.items()],
    ).filter(pl.col("_converted").is_not_null())

    # One sort by time; each instant gets its index in the global table (``_instant``), so the
    # per-key tables are stable sorts by a dense integer key id and the prior (the global rate
    # at the same instant) is a gather, not a join: no group-by over nearly unique instants, no
    # string or timestamp sorts per key.
    outcomes, global_rate = _by_instant(outcomes)
    instants, prior = global_rate[KNOWN_AT], global_rate["rate"]
    tables = {}
    for name in keys:
        key = f"_key_{name}"
        present = outcomes.lazy().filter(pl.col(key).is_not_null())
        names = present.select(pl.col(key).unique().sort()).collect(engine=ENGINE).to_series()
        ids = (
            pl.col(key).replace_strict(
                names, pl.int_range(names.len(), dtype=pl.UInt32, eager=True)
            )
            if names.len()
            else pl.lit(None, pl.UInt32)  # a key no contact has (e.g. no agent ids at all)
        )
        per_key = (
            present.select(ids.alias("_key_id"), "_instant", "_converted")
            # Stable: rows stay in time order within each key.
            .sort("_key_id", maintain_order=True)
            .with_columns(_running_within_key())
            .filter(_last_of_run("_key_id", "_instant"))
        )
        tables[name] = _table_rows(per_key, names, instants, prior, prior_strength).collect(
            engine=ENGINE
        )
    return RateTables(
        horizon_days=horizon_days,
        prior_strength=prior_strength,
        tables=tables,
        global_rate=global_rate,
    )


def _table_rows(
    steps: pl.LazyFrame,
    names: pl.Series,
    instants: pl.Series,
    prior: pl.Series,
    prior_strength: float,
) -> pl.LazyFrame:
    """A key's step rows (``_key_id``, ``_instant``, ``outcomes``, ``conversions``) as the rows
    of a rate table: ``key, label_known_at, outcomes, conversions, prior, rate``."""
    return _rate_rows(
        steps.select(
            pl.lit(names).gather(pl.col("_key_id")).alias("key"),
            pl.lit(instants).gather(pl.col("_instant")).alias(KNOWN_AT),
            "outcomes",
            "conversions",
            pl.lit(prior).gather(pl.col("_instant")).alias("prior"),
        ),
        prior_strength,
    )


def _rate_rows(rows: pl.LazyFrame, prior_strength: float) -> pl.LazyFrame:
    """Rows of ``key, label_known_at, outcomes, conversions, prior`` with their smoothed
    ``rate``: the one definition of the written tables' values (:func:`compute_rates` and the
    time shards' :func:`features.rate_shards.write_rate_files`)."""
    return rows.select(
        "key",
        KNOWN_AT,
        pl.col("outcomes").cast(pl.UInt32),
        pl.col("conversions").cast(pl.Int64),
        "prior",
    ).with_columns(
        (
            (pl.col("conversions") + prior_strength * pl.col("prior"))
            / (pl.col("outcomes") + prior_strength)
        ).alias("rate")
    )


def _last_of_run(*columns: str) -> pl.Expr:
    """True on the last row of each run of equal ``columns`` (of a frame sorted by them)."""
    changes = [(pl.col(c) != pl.col(c).shift(-1)).fill_null(True) for c in columns]
    return pl.any_horizontal(changes)


def _running_within_key(key: pl.Expr | None = None) -> list[pl.Expr]:
    """Cumulative outcomes and conversions of each key (rows sorted by ``key``, default the key
    id column, then time).

    Global running sums minus their value before the key's first row: exact integer sums, no
    per-key window.
    """
    key = pl.col("_key_id") if key is None else key
    first = (key != key.shift(1)).fill_null(True)
    index = pl.int_range(pl.len(), dtype=pl.Int64)
    start = pl.when(first).then(index).forward_fill()
    conversions = pl.col("_converted").cum_sum()
    before = conversions - pl.col("_converted")
    return [
        (index - start + 1).cast(pl.UInt32).alias("outcomes"),
        (conversions - before.gather(start)).alias("conversions"),
    ]


def join_rates(
    contacts: pl.DataFrame | pl.LazyFrame,
    rates: RateTables | None,
    names: tuple[str, ...] = ("agent", "intent", "channel"),
    *,
    has_agent: bool | None = None,
) -> pl.DataFrame | pl.LazyFrame:
    """Add ``_rate_<name>`` (and ``_rate_agent_outcomes``) as known at each contact's ``started_at``.

    A key with no known outcome yet gets the global rate (the prior) and 0 outcomes; with no
    ``rates`` at all the columns are null. Rows keep their input order; a LazyFrame gives a
    LazyFrame (so the pipeline runs the join in its one plan), a DataFrame a DataFrame.
    ``has_agent``: whether the frame has ``agent_id`` and ``handled_by`` (None: read its schema,
    which costs a plan resolution the feature pipeline, which always has them, skips).
    """
    joined = _join_rates_lazy(contacts.lazy(), rates, names, has_agent)
    return joined if isinstance(contacts, pl.LazyFrame) else joined.collect(engine=ENGINE)


def _join_rates_lazy(
    contacts: pl.LazyFrame, rates: RateTables | None, names: tuple[str, ...], has_agent: bool | None
) -> pl.LazyFrame:
    if rates is None:
        return contacts.with_columns(
            *[pl.lit(None, pl.Float64).alias(f"_rate_{name}") for name in names],
            pl.lit(None, pl.Int64).alias("_rate_agent_outcomes"),
        )
    if has_agent is None:
        schema = contacts.collect_schema()
        has_agent = "agent_id" in schema and "handled_by" in schema
    lookup = _rate_lookup(rates)
    keyed = contacts.with_columns(_rate_key_exprs(names, has_agent))
    if lookup.snapshot:
        # One rate per key (the service's snapshot): a hash join finds it, no sort needed; a row
        # counts only if it was known strictly before the contact, as join_asof would decide.
        for name in names:
            keyed = keyed.join(
                lookup.tables[name], on=f"_rate_key_{name}", how="left", maintain_order="left"
            ).with_columns(_snapshot_known(name))
        joined = keyed.with_columns(lookup.global_expr)
    else:
        # The joins run on the few columns they need (sorting moves every column), and their
        # results are put back beside the rows in input order.
        rate_columns = ["started_at", *[f"_rate_key_{name}" for name in names]]
        joined = keyed.select(rate_columns).with_row_index("_rate_row").sort("started_at")
        joined = joined.join_asof(
            lookup.global_table,
            left_on="started_at",
            right_on="_global_known_at",
            strategy="backward",
            allow_exact_matches=False,
        )
        if lookup.composite is not None:
            joined = _join_composite(joined, lookup.composite, names)
        else:
            for name in names:
                joined = joined.join_asof(
                    lookup.tables[name],
                    left_on="started_at",
                    right_on=f"_known_at_{name}",
                    by=f"_rate_key_{name}",
                    strategy="backward",
                    allow_exact_matches=False,
                    check_sortedness=False,
                )
        joined = pl.concat(
            [keyed, joined.sort("_rate_row").drop("_rate_row", *rate_columns)], how="horizontal"
        )
    return joined.with_columns(_smoothed_rate_exprs(names, rates.prior_strength))


@functools.cache
def _rate_key_exprs(names: tuple[str, ...], has_agent: bool) -> list[pl.Expr]:
    keys = {name: RATE_KEYS[name] for name in names}
    if "agent" in keys and not has_agent:
        keys["agent"] = pl.lit(None, pl.String)
    return [expr.alias(f"_rate_key_{name}") for name, expr in keys.items()]


def _snapshot_known(name: str) -> list[pl.Expr]:
    known = pl.col("started_at") > pl.col(f"_known_at_{name}")
    return [
        pl.when(known).then(pl.col(f"_rate_{name}_{column}")).alias(f"_rate_{name}_{column}")
        for column in ("conversions", "outcomes")
    ]


@functools.cache
def _smoothed_rate_exprs(names: tuple[str, ...], m: float) -> list[pl.Expr]:
    exprs = []
    for name in names:
        outcomes = pl.col(f"_rate_{name}_outcomes").fill_null(0)
        conversions = pl.col(f"_rate_{name}_conversions").fill_null(0)
        has_key = pl.col(f"_rate_key_{name}").is_not_null()
        exprs += [
            # Shrink towards the global rate known at this very moment.
            pl.when(has_key)
            .then((conversions + m * pl.col("_rate_global")) / (outcomes + m))
            .alias(f"_rate_{name}"),
            pl.when(has_key).then(outcomes).alias(f"_rate_{name}_outcomes"),
        ]
    return exprs


@dataclass(frozen=True)
class _RateLookup:
    """Rate tables renamed and sorted for joining, prepared once per RateTables object."""

    snapshot: bool
    tables: dict[str, pl.LazyFrame]
    global_table: pl.LazyFrame
    global_expr: pl.Expr
    composite: _CompositeTables | None = None


@dataclass(frozen=True)
class _CompositeTables:
    """Rate tables keyed by one Int64: the key's rank in the high bits, microseconds below.

    An as-of join on one sorted integer costs a merge, where ``join_asof(by=key)`` hashes every
    row of the (nearly contact-sized) tables again for each batch it joins: with batches of a few
    hundred thousand contacts that was most of the feature job's time (docs/benchmarks.md).
    """

    base_us: int
    time_bits: int
    keys: dict[str, pl.Series]
    tables: dict[str, pl.LazyFrame]


# Keyed by id(rates); the RateTables object is kept in the entry so its id cannot be reused.
_LOOKUPS: dict[int, tuple[RateTables, _RateLookup]] = {}
_LOOKUPS_MAX = 8


def _rate_lookup(rates: RateTables) -> _RateLookup:
    if rates.join_only is not None:
        return rates.join_only
    cached = _LOOKUPS.get(id(rates))
    if cached is not None and cached[0] is rates:
        return cached[1]
    renamed = {
        name: table.select(
            pl.col("key").alias(f"_rate_key_{name}"),
            pl.col(KNOWN_AT).alias(f"_known_at_{name}"),
            pl.col("conversions").alias(f"_rate_{name}_conversions"),
            pl.col("outcomes").alias(f"_rate_{name}_outcomes"),
        )
        for name, table in rates.tables.items()
    }
    global_table = rates.global_rate.select(
        pl.col(KNOWN_AT).alias("_global_known_at"), pl.col("rate").alias("_rate_global")
    ).sort("_global_known_at")
    # A snapshot (one row per key, one global row: what the service loads) needs no as-of join.
    snapshot = global_table.height == 1 and all(
        table.height == table[f"_rate_key_{name}"].n_unique() for name, table in renamed.items()
    )
    global_expr = pl.lit(None, pl.Float64).alias("_rate_global")
    composite = None
    if snapshot:
        known_at, rate = global_table.row(0)
        global_expr = (
            pl.when(
                pl.col("started_at") > pl.lit(known_at, global_table.schema["_global_known_at"])
            )
            .then(pl.lit(rate, pl.Float64))
            .alias("_rate_global")
        )
    else:
        composite = _composite_tables(renamed)
    # Sorted by time for join_asof(by=key) only when the composite key cannot be used.
    tables = {
        name: table.lazy()
        if snapshot or composite is not None
        else table.sort(f"_known_at_{name}").lazy()
        for name, table in renamed.items()
    }
    lookup = _RateLookup(
        composite=composite,
        snapshot=snapshot,
        tables=tables,
        global_table=global_table.lazy(),
        global_expr=global_expr,
    )
    if len(_LOOKUPS) >= _LOOKUPS_MAX:
        _LOOKUPS.clear()
    _LOOKUPS[id(rates)] = (rates, lookup)
    return lookup


def _composite_tables(tables: dict[str, pl.DataFrame]) -> _CompositeTables | None:
    """The tables keyed as :class:`_CompositeTables` (None if keys and time need over 62 bits)."""
    times = [
        table[f"_known_at_{name}"].cast(pl.Datetime("us", "UTC")) for name, table in tables.items()
    ]
    lows = [t.min() for t in times if t.len()]
    if not lows:
        return None
    base = min(lows)
    span = max(t.max() for t in times if t.len()) - base
    time_bits = (int(span / timedelta(microseconds=1)) + 2).bit_length()
    keys, keyed = {}, {}
    for name, table in tables.items():
        names = table[f"_rate_key_{name}"].unique().drop_nulls().sort()
        if time_bits + (names.len() + 1).bit_length() > 62:
            return None
        keys[name] = names
        keyed[name] = (
            table.lazy()
            .select(
                _key_ids(f"_rate_key_{name}", names).alias(f"_rate_kid_{name}"),
                _offset(f"_known_at_{name}", base, time_bits).alias("_offset"),
                f"_rate_{name}_conversions",
                f"_rate_{name}_outcomes",
            )
            .select(
                (pl.col(f"_rate_kid_{name}") * (1 << time_bits) + pl.col("_offset")).alias(
                    f"_rate_c_{name}"
                ),
                # Counts fit 32 bits (one per contact); the key id is in the composite's high bits.
                pl.col(f"_rate_{name}_conversions").cast(pl.UInt32),
                f"_rate_{name}_outcomes",
            )
            .sort(f"_rate_c_{name}")
            .collect(engine=ENGINE)
            .lazy()
        )
    base_us = int((base - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    return _CompositeTables(base_us=base_us, time_bits=time_bits, keys=keys, tables=keyed)


def _key_ids(column: str, names: pl.Series) -> pl.Expr:
    """Rank of each key among ``names`` (sorted); null for a key the tables never saw."""
    ids = pl.int_range(names.len(), dtype=pl.Int64, eager=True)
    return pl.col(column).replace_strict(names, ids, default=None, return_dtype=pl.Int64)


def _offset(time: str, base: object, time_bits: int) -> pl.Expr:
    """Microseconds since ``base``, clipped to the key's bit field.

    A time before ``base`` becomes -1 (below the key's first row: no match); one after the last
    row keeps its key's bits and sorts after every row of the key.
    """
    micros = (pl.col(time).cast(pl.Datetime("us", "UTC")) - pl.lit(base)).dt.total_microseconds()
    return micros.clip(-1, (1 << time_bits) - 1)


def _join_composite(
    joined: pl.LazyFrame, composite: _CompositeTables, names: tuple[str, ...]
) -> pl.LazyFrame:
    """Each key's outcomes known strictly before ``started_at`` (rows come back in any order)."""
    base = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=composite.base_us)
    for name in names:
        names_ = composite.keys[name]
        key = f"_rate_key_{name}"
        left = f"_rate_lc_{name}"
        kid = f"_rate_lkid_{name}"
        joined = (
            joined.with_columns(_key_ids(key, names_).alias(kid))
            .with_columns(
                (
                    pl.col(kid) * (1 << composite.time_bits)
                    + _offset("started_at", base, composite.time_bits)
                ).alias(left)
            )
            .sort(left)
            .join_asof(
                composite.tables[name],
                left_on=left,
                right_on=f"_rate_c_{name}",
                strategy="backward",
                allow_exact_matches=False,
                check_sortedness=False,
            )
            .with_columns(
                # A match in the previous key's rows means this key had no outcome yet.
                pl.when(pl.col(f"_rate_c_{name}") // (1 << composite.time_bits) == pl.col(kid))
                .then(pl.col(f"_rate_{name}_{column}"))
                .alias(f"_rate_{name}_{column}")
                for column in ("conversions", "outcomes")
            )
            .drop(left, kid, f"_rate_c_{name}")
        )
    return joined


RATE_INPUTS = (
    "started_at",
    "label_known_at",
    "converted",
    "agent_id",
    "handled_by",
    "intent",
    "channel",
)


def rate_inputs(
    contacts: pl.DataFrame | pl.LazyFrame, orders: pl.DataFrame | pl.LazyFrame, horizon_days: int
) -> pl.DataFrame:
    """The labelled columns :func:`compute_rates` reads, for contacts and their customers' orders.

    Per customer: a customer-hash partition gives exactly its contacts' rows of the whole table.
    """
    from features.labels import label_conversions

    schema = contacts.lazy().collect_schema()
    keep = ["contact_id", "customer_id", *[c for c in RATE_INPUTS if c in schema]]
    labeled = label_conversions(
        contacts.lazy().select(list(dict.fromkeys(keep))), orders, horizon_days
    )
    return labeled.select([c for c in RATE_INPUTS if c in labeled.columns])


# --- the rates of every contact of a large batch, in compact form --------------------------------

# The rate feature columns a feature row reads (registry: `_rate_<name>`).
RATE_COLUMNS = tuple(f"_rate_{name}" for name in RATE_KEYS)


@dataclass(frozen=True)
class RatesOnContacts:
    """The contacts carry their rates as columns already (:data:`RATE_COLUMNS`, from
    :func:`features.spill.contact_rates`): the feature pipeline reads them instead of joining rate tables."""

    horizon_days: int
    prior_strength: float


# --- the global step in integers, from per-partition outcomes (one process and Dask) -------------


@dataclass(frozen=True)
class PartitionOutcomes:
    """One partition's rate step inputs in integers, both in time order (ties in any order).
    ``outcomes``: the labelled contacts' ``label_known_at``, ``_converted`` (UInt8) and
    ``_kid_<name>``, the rank of the contact's key among the partition's own key ``names``
    (sorted; UInt32): about 21 bytes a contact. ``queries``: what a rate lookup reads of every
    contact: ``_row`` (its row in the partition), ``started_at``, ``_kid_<name>`` and
    ``_has_<name>`` (the contact has the key: a key no outcome has still gets the global rate)."""

    outcomes: pl.DataFrame
    queries: pl.DataFrame
    names: dict[str, pl.Series]


def rate_contact_columns(schema: pl.Schema) -> list[str]:
    """The contact columns the global step reads (labels, keys, times) of those in ``schema``."""
    return list(
        dict.fromkeys(["contact_id", "customer_id", *[c for c in RATE_INPUTS if c in schema]])
    )


def _outcome_keys(schema: pl.Schema) -> dict[str, pl.Expr]:
    """Each rate's key as the tables are built (no agent_id column: no agent table)."""
    keys = dict(RATE_KEYS)
    if "agent_id" not in schema:
        keys["agent"] = pl.lit(None, pl.String)
    return keys


def _lookup_keys(schema: pl.Schema) -> dict[str, pl.Expr]:
    """Each rate's key as the feature pipeline reads a contact: one with no agent_id column
    still has the bots' key (it then gets the global rate, there being no agent table)."""
    keys = _outcome_keys(schema)
    if "agent_id" not in schema and "handled_by" in schema:
        keys["agent"] = pl.when(pl.col("handled_by").cast(pl.String) == "bot").then(pl.lit("bot"))
    return keys


def partition_outcomes(
    contacts: pl.DataFrame, orders: pl.DataFrame | pl.LazyFrame, horizon_days: int
) -> PartitionOutcomes:
    """The settled outcomes of ``contacts`` in integers: the per-partition half of the global step.

    ``contacts`` and ``orders`` are every row of some customers (a customer-hash partition): a
    contact's label reads only its customer's orders (:func:`rate_inputs`), so the partitions'
    outcomes together are the whole data's. Both frames come in time order, the order the time
    shards cut and sort them in (sorting runs already in order costs a third of a shuffled
    sort, measured).
    """
    from features.labels import conversions_by_time

    keys = _outcome_keys(contacts.schema)
    lookup = _lookup_keys(contacts.schema)
    names, ids, has = {}, {}, {}
    for name, expr in keys.items():
        names[name], ids[name] = _key_ranks(contacts, expr)
        # Every key a contact has is among the names (they are its partition's), so it has the
        # key exactly when it has an id; but where there is no agent id column the lookup key
        # (the bots') differs from the outcome key (none), and has no id.
        has[name] = (
            ids[name].is_not_null()
            if lookup[name] is expr
            else contacts.select(lookup[name].is_not_null()).to_series()
        )
    labels = conversions_by_time(
        contacts.select(rate_contact_columns(contacts.schema)), orders, horizon_days
    )
    rows = labels["_row"]
    kids = [ids[name].gather(rows).alias(f"_kid_{name}") for name in keys]
    queries = pl.DataFrame(
        [
            rows,
            labels["started_at"],
            *kids,
            *[has[name].gather(rows).alias(f"_has_{name}") for name in keys],
        ]
    )
    outcomes = pl.DataFrame(
        [labels[KNOWN_AT], labels["converted"].cast(pl.UInt8).alias("_converted"), *kids]
    ).filter(pl.col("_converted").is_not_null())
    return PartitionOutcomes(outcomes=outcomes, queries=queries, names=names)


def _key_ranks(contacts: pl.DataFrame, key: pl.Expr) -> tuple[pl.Series, pl.Series]:
    """A key's names among ``contacts`` (sorted, no null) and each contact's key id, its rank
    among them (UInt32; null: no key).

    A key of one Enum column (intent, channel) is worked out per category and each contact's id
    gathered by its category's code: no string per contact is made, hashed or sorted (about a
    third of the partition step's key work at 10M contacts, measured).
    """
    roots = key.meta.root_names()
    schema = contacts.schema
    if len(roots) == 1 and isinstance(schema[roots[0]], pl.Enum):
        column, dtype = roots[0], schema[roots[0]]
        codes = contacts[column].to_physical()
        # The key of every category, by code; of those, the categories present are named.
        per_code = (
            pl.DataFrame({column: dtype.categories})
            .with_columns(pl.col(column).cast(dtype))
            .select(key)
            .to_series()
        )
        names = per_code.gather(codes.unique().drop_nulls()).drop_nulls().unique().sort()
        return names, _ranks(per_code, names).gather(codes)
    # with_columns: a literal key (no agent column) is one value per contact too.
    values = contacts.with_columns(key.alias("_key"))["_key"]
    names = values.drop_nulls().unique().sort()
    return names, _ranks(values, names)


def _ranks(values: pl.Series, names: pl.Series) -> pl.Series:
    """Rank of each value among ``names`` (sorted; UInt32, null for a null or missing value)."""
    if names.len() == 0:
        return pl.Series(values.name, [None] * values.len(), dtype=pl.UInt32)
    ids = pl.int_range(names.len(), dtype=pl.UInt32, eager=True)
    return values.replace_strict(names, ids, default=None, return_dtype=pl.UInt32)


@dataclass(frozen=True)
class KeyCounts:
    """What the contacts of one time shard (:mod:`features.rate_shards`) need, besides the
    shard's own outcomes, to get their rates: everything settled before the shard.

    ``names``: each rate's keys (sorted; a key's id is its rank); ``before``: the outcomes and
    conversions settled before the shard; ``earlier``: per key id (a dense frame over
    ``names``: keys, not contacts) the key's ``outcomes``/``conversions`` before the shard
    (none: no key had one).
    """

    prior_strength: float
    names: dict[str, pl.Series]
    before: tuple[int, int] = (0, 0)
    earlier: dict[str, pl.DataFrame] = field(default_factory=dict)

    def rates_of(self, outcomes: pl.DataFrame, queries: pl.DataFrame) -> pl.DataFrame:
        """The rate columns (:data:`RATE_COLUMNS`) of contacts (:class:`PartitionOutcomes` queries,
        sorted by ``started_at``), in their order: what :func:`join_rates` gives them with the
        full tables, as of each start. ``outcomes``: the shard's (``label_known_at`` sorted,
        ``_converted``, ``_kid_<name>``).

        One merge instead of a search per key: the outcomes and the contacts' starts in one
        time order (a contact before the outcomes settled at its very start: those are not
        known yet), the running counts of every key then read at each contact
        (``cum_sum().over(key)``). A binary search of each key's step table per contact cost
        about twice as much (measured at 2M contacts a shard).
        """
        started = queries["started_at"]
        if not started.is_sorted(nulls_last=False):
            raise CTOError("KeyCounts.rates_of: queries must be sorted by started_at")
        # A contact with no start knows no outcome: every rate null (nulls sort first).
        unknown = started.null_count()
        known = queries.slice(unknown)
        kids = [f"_kid_{name}" for name in self.names]
        time = outcomes.schema[KNOWN_AT]
        # Times doubled, contacts on the even ones: at equal times a contact sorts first. Each
        # row counts as outcomes * 2**32 + conversions (1 and its conversion for an outcome, 0
        # for a contact), so one running sum per key gives both counts (conversions <= outcomes
        # < 2**32).
        merged = (
            outcomes.lazy()
            .select(
                (pl.col(KNOWN_AT).cast(time).to_physical() * 2 + 1).alias("_t"),
                (pl.col("_converted").cast(pl.UInt64) + (1 << 32)).alias("_v"),
                *kids,
            )
            .merge_sorted(
                known.lazy().select(
                    (pl.col("started_at").cast(time).to_physical() * 2).alias("_t"),
                    pl.lit(0, pl.UInt64).alias("_v"),
                    *kids,
                ),
                key="_t",
            )
            .drop("_t")
            .collect(engine=ENGINE)
        )
        at_query = pl.col("_v") == 0
        # One running sum at a time, kept at the contacts only: the merged frame's working set.
        events = pl.DataFrame(
            [
                merged.select(pl.col("_v").cum_sum().filter(at_query).alias("_all")).to_series(),
                *[
                    merged.select(
                        pl.col("_v").cum_sum().over(kid).filter(at_query).alias(f"_sum{kid}")
                    ).to_series()
                    for kid in kids
                ],
                *[merged.select(pl.col(kid).filter(at_query)).to_series() for kid in kids],
            ]
        )
        del merged
        outcomes_before, conversions_before = self.before
        seen = _high(pl.col("_all")) + outcomes_before
        global_rate = (
            pl.when(seen > 0)
            .then((_low(pl.col("_all")) + conversions_before) / seen)
            .alias("_rate_global")
        )
        columns = [global_rate]
        for name in self.names:
            kid = pl.col(f"_kid_{name}")
            earlier = self.earlier.get(name)
            for column, part in (("conversions", _low), ("outcomes", _high)):
                # No key id (a key no outcome has): the sum is another row's; the rate is the
                # global rate.
                count = pl.when(kid.is_not_null()).then(part(pl.col(f"_sum_kid_{name}")))
                if earlier is not None and earlier.height:
                    count = count + pl.lit(earlier[column]).gather(kid)
                columns.append(count.cast(pl.UInt32).alias(f"_rate_{name}_{column}"))
            columns.append(pl.when(pl.col(f"_has_{name}")).then(True).alias(f"_rate_key_{name}"))
        names = tuple(self.names)
        rated = (
            pl.concat([events, known.select(f"_has_{name}" for name in names)], how="horizontal")
            .lazy()
            .select(columns)
            # The very expressions join_rates smooths with: identical floats.
            .select(_smoothed_rate_exprs(names, self.prior_strength))
            .select(f"_rate_{name}" for name in names)
            .collect(engine=ENGINE)
        )
        if unknown:
            rated = pl.concat([rated.clear(unknown), rated])
        return rated


def _high(packed: pl.Expr) -> pl.Expr:
    """The outcomes of a packed count (``outcomes * 2**32 + conversions``), as Int64."""
    return (packed // (1 << 32)).cast(pl.Int64)


def _low(packed: pl.Expr) -> pl.Expr:
    """The conversions of a packed count, as Int64."""
    return (packed % (1 << 32)).cast(pl.Int64)


def _key_table(outcomes: pl.DataFrame, name: str) -> pl.DataFrame:
    """One key's step table in integers, as :func:`compute_rates` builds it: ``_step`` (key id in
    the high 32 bits, the instant's index below: sorted), ``outcomes``, ``conversions`` (UInt32).
    """
    kid = pl.col(f"_kid_{name}")
    step = pl.col("_step")
    return (
        outcomes.lazy()
        .filter(kid.is_not_null())
        # Step and outcome in one integer (step * 2 + converted; key ids < 2**31): one column
        # sorted instead of a frame, about half the cost. Rows of one key and instant end up
        # together; their order does not matter (only the counts at the run's end are kept).
        .select(
            (
                kid.cast(pl.UInt64) * (1 << 33)
                + pl.col("_instant").cast(pl.UInt64) * 2
                + pl.col("_converted").cast(pl.UInt64)
            )
            .sort()
            .alias("_packed")
        )
        .select(
            (pl.col("_packed") // 2).alias("_step"),
            (pl.col("_packed") % 2).cast(pl.UInt32).alias("_converted"),
        )
        .select(
            "_step",
            *_running_within_key(step // (1 << 32)),
            (step != step.shift(-1)).fill_null(True).alias("_last"),
        )
        .filter(pl.col("_last"))
        .drop("_last")
        .collect(engine=ENGINE)
    )
