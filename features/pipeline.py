"""Point-in-time contact features: one code path for batch training data and online scoring.

:func:`build_features` turns contacts, orders and (optionally) customers into one row per contact
with the features of :data:`features.registry.FEATURE_SET` at a scoring moment. :func:`online_features`
appends a new contact to one customer's history and calls the very same function, so what the
service scores is what the model was trained on.

How "known at the scoring moment" is enforced:

- Every event of a customer goes into one time-ordered *event stream*: the start of each contact
  (the rows that get scored), each contact's *outcome* at the moment it became known
  (``started_at + wait_seconds + handle_seconds``: a written contact's reply time is not known while
  the customer is still waiting for it), and each order at ``ordered_at``.
- Window features cover ``[t - w, t)``: only events strictly before the contact started. Lifetime
  counts and "latest" values come from prefix sums and forward fills read at the first row of the
  contact's instant, so events at the same instant are excluded too.
- No ``.over("customer_id")`` (about 10x slower here, measured): the stream is sorted by customer
  under one Int64 key (customer ordinal, then milliseconds), so a binary search finds each
  window's first row and window sums are differences of exact integer running sums.
- Ties at equal time sort contact starts before outcomes and orders: an order stamped at the very
  second a contact starts is that contact's outcome (see features.labels), never its history.
- A contact's own after-contact fields only ever produce an outcome event at or after its own
  start, so they cannot reach its arrival features; at ``moment="arrival"`` the output does not
  include them at all (tests/data/test_features_leakage.py perturbs them to prove it).
- Conversion rates pool all customers and come from the separate global step
  (:mod:`features.rates`), joined as of the contact's start.

Everything except the rates is per customer, so :func:`build_features_partitioned` can process
customer-hash partitions one at a time (larger-than-memory, or one Dask task per partition);
:func:`build_features` itself runs a large in-memory batch in customer-hash-range chunks, which
gives the same rows in the same order with a bounded working set, and :func:`write_features`
streams such chunks into one Parquet file so the output is never held whole either.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Protocol, TypedDict, Unpack

import polars as pl

from features.errors import CTOError
from features.partitions import HashChunks, customer_partition, scan_tables
from features.rates import RATE_COLUMNS, RatesOnContacts, RateTables, join_rates
from features.registry import (
    CHANNELS,
    FEATURE_SET,
    HISTORY_WINDOWS,
    MOMENTS,
    WINDOW_SUMMED,
    FeatureSet,
)
from features.schema import CONTACTS, CUSTOMERS, ORDERS, TABLES, Table

KEY_COLUMNS = ("contact_id", "customer_id", "started_at")
# Windows, gathers and fills are in-memory operations: Polars 2's default streaming engine would
# fall back for them and costs 2-3x the CPU doing so (measured).
ENGINE = "in-memory"
_ARRIVAL_INPUTS = ("contact_id", "customer_id", "started_at", "channel", "direction", "intent")
# Outcome fields of past contacts feed history features; dropoff_reason never does.
_OUTCOME_INPUTS = (
    "wait_seconds",
    "handle_seconds",
    "transfers",
    "abandoned",
    "resolved",
    "callback_offered",
    "follow_up_sent",
    "handled_by",
    "agent_id",
)
_KIND_CONTACT, _KIND_OUTCOME, _KIND_ORDER = 0, 1, 2
# Rows are grouped by a 64-bit hash of customer_id (numeric sorts are many times faster than
# string sorts); a collision would interleave two customers, so it is checked, not assumed.
_CUSTOMER_HASH = pl.col("customer_id").hash(seed=0)

FrameLike = pl.DataFrame | pl.LazyFrame


# --- input conformance --------------------------------------------------------------------------


def _conform(
    frame: FrameLike, table: Table, columns: Sequence[str], keep: Sequence[str] = ()
) -> pl.LazyFrame:
    """Select ``columns`` in the contract dtypes; absent nullable/outcome columns become null.

    ``keep``: further columns passed through as they are (the rates of :class:`RatesOnContacts`).

    Enum values outside the contract become ``other`` (as features.validate does), so a frame
    that skipped validation still yields the contract's categories. Columns already in the
    contract dtype are selected as they are (the expressions are built once per input schema).
    """
    lazy = frame.lazy()
    schema = lazy.collect_schema()
    present = tuple((name, schema[name]) for name in columns if name in schema)
    missing = [name for name in keep if name not in schema]
    if missing:
        raise CTOError(f"{table.name}: the rate column(s) {', '.join(missing)} are missing")
    return lazy.select(*_conform_exprs(table.name, tuple(columns), present), *keep)


@functools.lru_cache(maxsize=256)
def _conform_exprs(
    table_name: str, columns: tuple[str, ...], present: tuple[tuple[str, pl.DataType], ...]
) -> list[pl.Expr]:
    table = TABLES[table_name]
    dtypes = dict(present)
    exprs = []
    for name in columns:
        column = table.column(name)
        if name not in dtypes:
            required = not column.nullable and name not in _OUTCOME_INPUTS
            if required:
                raise CTOError(f"{table.name}: missing required column {name!r} for features")
            exprs.append(pl.lit(None, column.dtype).alias(name))
            continue
        exprs.append(_cast(pl.col(name), dtypes[name], column.dtype).alias(name))
    return exprs


def _cast(expr: pl.Expr, current: pl.DataType, target: pl.DataType) -> pl.Expr:
    if isinstance(target, pl.Enum):
        if current == target:
            return expr
        text = expr.cast(pl.String)
        categories = target.categories.to_list()
        fallback = "other" if "other" in categories else None
        return (
            pl.when(text.is_null() | text.is_in(categories))
            .then(text)
            .otherwise(pl.lit(fallback))
            .cast(target)
        )
    if isinstance(target, pl.Datetime):
        if current == pl.String:
            return expr.str.to_datetime(time_zone="UTC")
        if isinstance(current, pl.Datetime) and current.time_zone is None:
            return expr.dt.replace_time_zone("UTC").cast(target)
        return expr.cast(target)
    return expr.cast(target)


def _customers_frame(customers: FrameLike | None) -> pl.LazyFrame:
    if customers is None:
        return pl.LazyFrame(schema=CUSTOMERS.polars_schema).select(
            "customer_id", "segment", "first_seen_at"
        )
    return _conform(customers, CUSTOMERS, ("customer_id", "segment", "first_seen_at")).unique(
        "customer_id", keep="first", maintain_order=True
    )


# --- index helpers (vectorised per-customer logic on a frame sorted by customer, time) ---------


def _segment_indices(time: str, customer: str = "customer_id") -> list[pl.Expr]:
    """Row index, the index of the customer's first row and of the first row at this instant.

    Int32 indices (half the memory of Int64): a batch holds fewer than 2**31 events; larger
    inputs go through build_features_partitioned.
    """
    idx = pl.int_range(pl.len(), dtype=pl.Int32)
    customer_start = (pl.col(customer) != pl.col(customer).shift(1)).fill_null(True)
    instant_start = customer_start | (pl.col(time) != pl.col(time).shift(1)).fill_null(True)
    return [
        idx.alias("_idx"),
        pl.when(customer_start).then(idx).forward_fill().alias("_customer_start"),
        pl.when(instant_start).then(idx).forward_fill().alias("_instant_start"),
    ]


def _before_instant() -> pl.Expr:
    """Index of the customer's last row strictly before this row's instant (null if none)."""
    return pl.when(pl.col("_instant_start") > pl.col("_customer_start")).then(
        pl.col("_instant_start") - 1
    )


def _latest_index(mask: pl.Expr) -> pl.Expr:
    """Index of the customer's latest row matching ``mask`` strictly before this row's instant."""
    latest = pl.when(mask).then(pl.col("_idx")).forward_fill().gather(_before_instant())
    return pl.when(latest >= pl.col("_customer_start")).then(latest)


# --- the pipeline ------------------------------------------------------------------------------


# Expressions are immutable: each list below is built once per process (per feature set, moment
# and option) and reused by every call, batch or online. Building them was most of the CPU of a
# one-contact call.


@functools.cache
def _contact_row_exprs() -> tuple[list[pl.Expr], list[pl.Expr], pl.Expr]:
    keys = [
        _CUSTOMER_HASH.alias("_customer_hash"),
        pl.col("contact_id").hash(seed=0).alias("_seq_hash"),
    ]
    previous = _before_instant()
    helpers = [
        pl.col("started_at").gather(previous).alias("_last_contact_at"),
        pl.col("channel").gather(previous).alias("_previous_channel"),
        previous.alias("_previous_idx"),
    ]
    for channel in CHANNELS:
        latest = _latest_index(pl.col("channel") == channel)
        helpers.append(pl.col("started_at").gather(latest).alias(f"_last_{channel}_at"))
    switch = (pl.col("channel") != pl.col("_previous_channel")).cast(pl.Int8).alias("_switch")
    return keys, helpers, switch


def _contact_rows(contacts: pl.LazyFrame) -> pl.LazyFrame:
    """Contacts sorted by customer and time with contact-history helpers (switches, channel recency)."""
    keys, helpers, switch = _contact_row_exprs()
    return (
        contacts.with_columns(keys)
        .sort(_customer_then(_time_order("started_at", pl.lit(_KIND_CONTACT))), "_seq_hash")
        .with_columns(_segment_indices_cached("started_at", "customer_id"))
        .with_columns(helpers)
        .with_columns(switch)
    )


@functools.cache
def _segment_indices_cached(time: str, customer: str) -> list[pl.Expr]:
    return _segment_indices(time, customer)


@functools.cache
def _event_stream_exprs() -> tuple[list[pl.Expr], list[pl.Expr], list[pl.Expr]]:
    starts = [
        "customer_id",
        "_customer_hash",
        "_seq_hash",
        pl.col("started_at").alias("_t"),
        pl.lit(_KIND_CONTACT, pl.Int8).alias("_kind"),
        pl.lit(1, pl.Int32).alias("_is_contact"),
        "_switch",
    ]
    duration = pl.col("wait_seconds").fill_null(0) + pl.col("handle_seconds").fill_null(0)
    outcomes = [
        "customer_id",
        "_customer_hash",
        "_seq_hash",
        (pl.col("started_at") + pl.duration(microseconds=(duration * 1e6).cast(pl.Int64))).alias(
            "_t"
        ),
        pl.lit(_KIND_OUTCOME, pl.Int8).alias("_kind"),
        pl.col("wait_seconds").alias("_wait"),
        (pl.col("wait_seconds") * 1000).round().cast(pl.Int64).alias("_wait_ms"),
        pl.col("wait_seconds").is_not_null().cast(pl.Int32).alias("_has_wait"),
        pl.col("abandoned").cast(pl.Int32).alias("_abandoned"),
        pl.col("transfers").cast(pl.Int32).alias("_transfers"),
        (~pl.col("resolved")).cast(pl.Int8).alias("_unresolved"),
        (pl.col("handled_by") == "bot").cast(pl.Int32).alias("_bot"),
    ]
    order_events = [
        "customer_id",
        _CUSTOMER_HASH.alias("_customer_hash"),
        pl.col("order_id").hash(seed=0).alias("_seq_hash"),
        pl.col("ordered_at").alias("_t"),
        pl.lit(_KIND_ORDER, pl.Int8).alias("_kind"),
        pl.lit(1, pl.Int32).alias("_is_order"),
        (pl.col("amount") * 100).round().cast(pl.Int64).alias("_amount_cents"),
    ]
    return starts, outcomes, order_events


def _event_stream(contact_rows: pl.LazyFrame, orders: pl.LazyFrame) -> pl.LazyFrame:
    """One time-ordered stream per customer: contact starts, known outcomes and orders."""
    starts, outcomes, order_events = _event_stream_exprs()
    return pl.concat(
        [contact_rows.select(starts), contact_rows.select(outcomes), orders.select(order_events)],
        how="diagonal",
    ).sort(_customer_then(_time_order("_t", pl.col("_kind"))), "_seq_hash")


def _time_order(time: str, kind: pl.Expr) -> pl.Expr:
    """``(time, kind)`` as one Int64 ordered like the pair, a null time first: microseconds since
    the batch's first instant, times 4, plus the kind (0-2).

    Below 2**63 while the batch spans less than 2**61 microseconds; the key check (collected
    with the features) refuses any batch spanning 2**39 ms or more before a row is returned.
    """
    micros = pl.col(time).dt.epoch("us")
    since = micros - micros.min() + 1
    return pl.when(micros.is_not_null()).then(since * 4 + kind).otherwise(kind.cast(pl.Int64))


def _customer_then(order: pl.Expr) -> pl.Expr:
    """One Int128 sort key ordering rows by (customer hash, ``order``), ``order`` in [0, 2**63).

    Polars sorts by one key much faster than by a list of keys (argsort of a 340k-row stream: 25
    against 46 ms, measured), so the sorts use this key and break its ties by ``_seq_hash``.
    """
    return pl.col("_customer_hash").cast(pl.Int128) * (1 << 63) + order.cast(pl.Int128)


_CUSTOMER_BITS = 24  # customers per partition < 2**24; the rest of the Int64 key is milliseconds
_MS_BITS = 63 - _CUSTOMER_BITS


def _running_sum(name: str) -> pl.Expr:
    """Exclusive running sum over the whole stream: Int64 for ms and cents, Int32 for counts."""
    dtype = pl.Int64 if name in ("_wait_ms", "_amount_cents") else pl.Int32
    value = pl.col(name).cast(dtype).fill_null(0)
    return (value.cum_sum() - value).cast(dtype).alias(f"_cum_{name}")


def _stream_key() -> pl.Expr:
    """Global sort key: customer ordinal in the high bits, milliseconds since the start below.

    Customers are 2**39 ms (17 years) apart, so ``rolling_*_by("_key", ...)`` over the whole stream
    never mixes two customers: one pass instead of a slow ``.over("customer_id")``.
    """
    ordinal = (
        (pl.col("_customer_hash") != pl.col("_customer_hash").shift(1)).fill_null(True).cum_sum()
    )
    # Each instant floored to its epoch millisecond, then offset: a row's key within its customer
    # does not depend on which other customers share the batch (chunks give identical windows).
    epoch_ms = pl.col("_t").dt.epoch("ms")
    elapsed_ms = epoch_ms - epoch_ms.min()
    return (ordinal.cast(pl.Int64) * (1 << _MS_BITS) + elapsed_ms).alias("_key")


@functools.cache
def _key_check_exprs() -> list[pl.Expr]:
    collided = (pl.col("customer_id") != pl.col("customer_id").shift(1)) & (
        pl.col("_customer_hash") == pl.col("_customer_hash").shift(1)
    )
    return [
        collided.any().alias("collided"),
        (pl.col("_key").last() // (1 << _MS_BITS)).alias("customers"),
        (pl.col("_t").max() - pl.col("_t").min()).dt.total_milliseconds().alias("span_ms"),
    ]


def _check_key_range(checks: pl.DataFrame) -> None:
    """Raise if the stream key cannot separate customers (checks: one row of _key_check_exprs)."""
    collided, customers, span_ms = checks.row(0)
    # The span first: beyond it the sort key (_time_order) may overflow and the other two checks,
    # read off the sorted stream, mean nothing.
    if span_ms is not None and span_ms >= 1 << _MS_BITS:
        raise CTOError("contacts and orders span more than 17 years: filter the input by time")
    if collided:
        raise CTOError(
            "two customer_ids share a 64-bit hash in this batch: process it in partitions "
            "(cto features --partitions N)"
        )
    if customers is not None and customers >= 1 << _CUSTOMER_BITS:
        raise CTOError(
            f"{customers:,} customers in one batch (max {(1 << _CUSTOMER_BITS) - 1:,}): "
            "use build_features_partitioned / cto features --partitions"
        )


def _window_starts(windows: tuple[str, ...]) -> list[pl.Expr]:
    """``_lo_<w>``: index of the customer's first row in ``[t - w, t)`` for each window.

    The stream is sorted by ``_key``, so that row is the first whose key is at least the row's
    key minus the window: a binary search per contact row (cheaper than counting the window's
    rows with a rolling sum, measured). Customers' keys are 2**39 ms apart, so it never lands on
    another customer's row. (Window starts are at millisecond resolution; the end, "strictly before the
    contact", is exact.)

    Only contact rows read a window start (registry: ``_at_contacts(pl.col("_lo_<w>"))``), so
    only their keys are searched (about half the stream) and the other rows are null: searching
    every row's key cost ~14% of a chunk's CPU, the contact rows' ~10% (measured).
    """
    at_contacts = pl.col("_kind") == _KIND_CONTACT
    contact_keys = pl.col("_key").filter(at_contacts)
    contact_row = pl.when(at_contacts).then(at_contacts.cast(pl.UInt32).cum_sum() - 1)
    return [
        pl.col("_key")
        .search_sorted(contact_keys - int(window.removesuffix("d")) * 86_400_000, side="left")
        .gather(contact_row)
        .alias(f"_lo_{window}")
        for window in windows
    ]


@functools.cache
def _stream_helper_exprs() -> list[pl.Expr]:
    is_order = pl.col("_kind") == _KIND_ORDER
    last_order = _latest_index(is_order)
    last_outcome = _latest_index(pl.col("_unresolved").is_not_null())
    return [
        pl.col("_t").gather(last_order).alias("_last_order_at"),
        pl.col("_unresolved").gather(last_outcome).alias("_last_outcome_unresolved"),
        # Running sums `_cum_<name>` are built once for all windows.
        *[_running_sum(name) for name in WINDOW_SUMMED],
        *_window_starts(HISTORY_WINDOWS),
    ]


def _stream_select_exprs(feature_set: FeatureSet, moment: str) -> list[pl.Expr]:
    key = ("stream", moment)
    cached = _feature_set_cache(feature_set).get(key)
    if cached is not None:
        return cached
    is_order = pl.col("_kind") == _KIND_ORDER
    next_order = pl.when(is_order).then(pl.col("_idx")).backward_fill()
    customer_end = (
        pl.when((pl.col("_customer_hash") != pl.col("_customer_hash").shift(-1)).fill_null(True))
        .then(pl.col("_idx"))
        .backward_fill()
    )
    at_contacts = pl.col("_kind") == _KIND_CONTACT
    # The first order at or after each contact started (used for the *next* contact's journey,
    # and only when that order is before the next contact: see _journeys).
    next_order_at = pl.col("_t").gather(pl.when(next_order <= customer_end).then(next_order))
    stream_defs = [f for f in feature_set.for_moment(moment) if f.stage == "stream"]
    exprs = [
        *[f.expression() for f in stream_defs],
        pl.col("_t").gather(pl.col("_customer_start")).filter(at_contacts).alias("_first_event_at"),
        next_order_at.filter(at_contacts).alias("_next_order_at"),
    ]
    _feature_set_cache(feature_set)[key] = exprs
    return exprs


def _stream_features(
    stream: pl.LazyFrame, feature_set: FeatureSet, moment: str
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Window, lifetime and latest-event features, read at each contact start of the stream.

    Returns the features and a one-row frame of key checks (see :func:`_check_key_range`),
    both lazy over the same keyed stream: they are collected together.
    """
    keyed = stream.with_columns(_stream_key())
    checks = keyed.select(_key_check_exprs())
    # Only the check needs the strings: the features run on the hash (memory).
    features = (
        keyed.drop("customer_id", "_seq_hash")
        .with_columns(_segment_indices_cached("_t", "_customer_hash"))
        .with_columns(_stream_helper_exprs())
        .select(_stream_select_exprs(feature_set, moment))
    )
    return features, checks


@functools.lru_cache(maxsize=16)
def _journey_exprs(journey_gap_days: int, horizon_days: int) -> tuple[list[pl.Expr], list[pl.Expr]]:
    previous = pl.col("_previous_idx")
    previous_at = pl.col("_last_contact_at")
    order_after_previous = pl.col("_next_order_at").gather(previous)
    ended_by_order = (order_after_previous < pl.col("started_at")) & (
        order_after_previous <= previous_at + timedelta(days=horizon_days)
    )
    new_journey = (
        previous.is_null()
        | (pl.col("started_at") - previous_at >= timedelta(days=journey_gap_days))
        | ended_by_order.fill_null(False)
    )
    # Tied contacts share their instant's verdict; the journey starts at its first instant.
    journey_start = (
        pl.when(new_journey & (pl.col("_idx") == pl.col("_instant_start")))
        .then(pl.col("_idx"))
        .forward_fill()
    )
    first = [new_journey.alias("_new_journey"), journey_start.alias("_journey_start")]
    second = [
        (pl.col("_instant_start") - pl.col("_journey_start")).alias("_journey_contacts_before"),
        pl.col("started_at").gather(pl.col("_journey_start")).alias("_journey_started_at"),
        pl.when(~pl.col("_new_journey")).then(pl.col("_switch")).alias("_journey_channel_switch"),
    ]
    return first, second


def _journeys(rows: pl.LazyFrame, journey_gap_days: int, horizon_days: int) -> pl.LazyFrame:
    """Journey of each contact as known at its arrival (same rules as features.labels).

    A contact starts a new journey if it is the customer's first, if the previous contact is at
    least G days before it, or if an order within H days of the previous contact came before it.
    """
    first, second = _journey_exprs(journey_gap_days, horizon_days)
    return rows.with_columns(first).with_columns(second)


_CUSTOMER_EXPRS = (
    pl.col("segment").alias("_segment"),
    pl.min_horizontal("first_seen_at", "_first_event_at", "started_at").alias("_first_seen_at"),
)


def _output_exprs(feature_set: FeatureSet, moment: str) -> list[pl.Expr]:
    """Key columns, then every feature in registry order (stream features are already columns)."""
    key = ("output", moment)
    cached = _feature_set_cache(feature_set).get(key)
    if cached is None:
        cached = [
            *[pl.col(name) for name in KEY_COLUMNS],
            *[
                pl.col(f.name) if f.stage == "stream" else f.expression()
                for f in feature_set.for_moment(moment)
            ],
        ]
        _feature_set_cache(feature_set)[key] = cached
    return cached


# Per feature set (by identity; the set is kept in the entry so its id cannot be reused).
_FEATURE_SET_CACHE: dict[int, tuple[FeatureSet, dict[tuple[str, str], list[pl.Expr]]]] = {}


def _feature_set_cache(feature_set: FeatureSet) -> dict[tuple[str, str], list[pl.Expr]]:
    entry = _FEATURE_SET_CACHE.get(id(feature_set))
    if entry is None or entry[0] is not feature_set:
        if len(_FEATURE_SET_CACHE) >= 8:
            _FEATURE_SET_CACHE.clear()
        entry = _FEATURE_SET_CACHE[id(feature_set)] = (feature_set, {})
    return entry[1]


def _rate_names(moment: str) -> tuple[str, ...]:
    # The agent is only known after routing, so at arrival its rate is not even looked up.
    return ("intent", "channel", "agent") if moment == "after_contact" else ("intent", "channel")


def _features_plan(
    contacts: FrameLike,
    orders: FrameLike,
    customers: FrameLike | None,
    rates: RateTables | RatesOnContacts | None,
    moment: str,
    *,
    journey_gap_days: int,
    horizon_days: int,
    feature_set: FeatureSet,
    contacts_conformed: bool = False,
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """The whole pipeline as one lazy plan (features, key checks): batch and online run this.

    ``contacts_conformed``: the contacts are already in the contract's columns and dtypes (the
    online path conforms them itself), so resolving their plan's schema again is skipped.
    ``rates``: tables joined as of each contact's start, or :class:`RatesOnContacts` when the
    contacts carry their rate columns already (:func:`features.spill.contact_rates`).
    """
    if moment not in MOMENTS:
        raise CTOError(f"moment must be one of {', '.join(MOMENTS)}, got {moment!r}")
    on_contacts = isinstance(rates, RatesOnContacts)
    contact_frame = (
        contacts.lazy()
        if contacts_conformed
        else _conform(
            contacts,
            CONTACTS,
            _ARRIVAL_INPUTS + _OUTCOME_INPUTS,
            keep=RATE_COLUMNS if on_contacts else (),
        )
    )
    order_frame = _conform(orders, ORDERS, ("order_id", "customer_id", "ordered_at", "amount"))
    # Used twice (event stream and output rows): collected once (cheaper than Polars' shared
    # subplan cache on large inputs, measured).
    rows = _contact_rows(contact_frame).collect(engine=ENGINE).lazy()
    stream, checks = _stream_features(_event_stream(rows, order_frame), feature_set, moment)
    rows = pl.concat([rows, stream], how="horizontal")
    rows = _journeys(rows, journey_gap_days, horizon_days)
    rows = rows.join(
        _customers_frame(customers), on="customer_id", how="left", maintain_order="left"
    ).with_columns(_CUSTOMER_EXPRS)
    # Rates pool all customers: joined as of each contact's start from the global rate tables.
    # The conformed rows always carry agent_id and handled_by (_OUTCOME_INPUTS).
    if not on_contacts:
        rows = join_rates(rows, rates, _rate_names(moment), has_agent=True)  # type: ignore[arg-type]
    return rows.select(_output_exprs(feature_set, moment)), checks


def _collect(plan: pl.LazyFrame, checks: pl.LazyFrame) -> pl.DataFrame:
    frame, check_row = pl.collect_all([plan, checks], engine=ENGINE)
    _check_key_range(check_row)
    return frame


def build_features(
    contacts: FrameLike,
    orders: FrameLike,
    customers: FrameLike | None = None,
    rates: RateTables | RatesOnContacts | None = None,
    moment: str = "after_contact",
    *,
    journey_gap_days: int | None = None,
    horizon_days: int | None = None,
    feature_set: FeatureSet = FEATURE_SET,
) -> pl.DataFrame:
    """Features of every contact at ``moment``: ``contact_id, customer_id, started_at`` + features.

    Columns follow the registry order (:func:`features.registry.feature_names`); rows are grouped
    by customer (hash order) and sorted by start time within a customer: join on ``contact_id``.
    Rate features are null without ``rates`` (compute them with
    :func:`features.rates.compute_rates` on labeled contacts). Journey boundaries use
    ``journey_gap_days`` and ``horizon_days`` (default: settings, as features.labels does).
    """
    options = _feature_options(journey_gap_days, horizon_days, feature_set)
    chunk_bits = _chunk_bits(contacts, _CHUNK_ABOVE, _CHUNK_ROWS)
    chunks = list(_feature_chunks(contacts, orders, customers, rates, moment, chunk_bits, options))
    return chunks[0] if len(chunks) == 1 else pl.concat(chunks, how="vertical", rechunk=False)


def _feature_options(
    journey_gap_days: int | None, horizon_days: int | None, feature_set: FeatureSet
) -> dict[str, object]:
    """The keyword options of :func:`_features_plan`, journey days resolved from settings."""
    journey_gap_days, horizon_days = _resolve_days(journey_gap_days, horizon_days)
    return {
        "journey_gap_days": journey_gap_days,
        "horizon_days": horizon_days,
        "feature_set": feature_set,
    }


def _feature_chunks(  # noqa: PLR0917 (internal; mirrors build_features)
    contacts: FrameLike,
    orders: FrameLike,
    customers: FrameLike | None,
    rates: RateTables | RatesOnContacts | None,
    moment: str,
    chunk_bits: int,
    options: dict[str, object],
    progress: Callable[[int, int, int], None] | None = None,
) -> Iterator[pl.DataFrame]:
    """Feature rows one customer-hash range at a time, in hash order (``chunk_bits`` 0: one pass).

    Every feature but the (global) rates reads only its customer's rows, and rows come out ordered
    by customer hash, so the chunks concatenated in order are exactly the one-pass result, at a
    fraction of the peak memory. ``progress(done, total, contacts)`` is called after each chunk.
    """
    if chunk_bits == 0:
        frame = _collect(*_features_plan(contacts, orders, customers, rates, moment, **options))  # type: ignore[arg-type]
        if progress is not None:
            progress(1, 1, frame.height)
        yield frame
        return
    source = _MemoryChunks(contacts, orders, customers, chunk_bits)  # type: ignore[arg-type]
    yield from _source_chunks(source, rates, moment, options, progress)


def _source_chunks(
    source: ChunkSource,
    rates: RateTables | RatesOnContacts | None,
    moment: str,
    options: dict[str, object],
    progress: Callable[[int, int, int], None] | None = None,
) -> Iterator[pl.DataFrame]:
    """Feature rows of each chunk of ``source`` in chunk order (chunks with no contact skipped)."""
    for chunk in range(source.chunks):
        inputs = source.get(chunk)
        if inputs is None:
            continue
        frame = _collect(*_features_plan(*inputs, rates, moment, **options))  # type: ignore[arg-type]
        del inputs
        if progress is not None:
            progress(chunk + 1, source.chunks, frame.height)
        yield frame


class ChunkSource(Protocol):
    """Inputs cut into customer-hash chunks: ``get(chunk)`` gives a chunk's contacts, orders
    (possibly none) and customers (None: no table or no row), or None when it has no contact.
    The chunks in order are the rows of :class:`_MemoryChunks` (an in-memory frame cut by
    :func:`features.partitions.hash_chunk`); :class:`features.spill.SpilledInputs` reads them
    from disk."""

    chunks: int

    def get(self, chunk: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None] | None: ...


class _MemoryChunks:
    """Frames in memory as a :class:`ChunkSource`, each chunk filtered out when asked for
    (:class:`features.partitions.HashChunks`)."""

    def __init__(
        self,
        contacts: FrameLike,
        orders: FrameLike,
        customers: FrameLike | None,
        chunk_bits: int,
    ) -> None:
        self.chunks = 1 << chunk_bits
        self._parts = {
            name: HashChunks(
                frame.collect(engine=ENGINE) if isinstance(frame, pl.LazyFrame) else frame,
                chunk_bits,
            )
            for name, frame in (
                ("contacts", contacts),
                ("orders", orders),
                ("customers", customers),
            )
            if frame is not None
        }

    def get(self, chunk: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None] | None:
        contacts = self._parts["contacts"].get(chunk)
        if contacts.height == 0:
            return None
        customers = self._parts["customers"].get(chunk) if "customers" in self._parts else None
        if customers is not None and customers.height == 0:
            customers = None  # as the spilled chunks say: no customer row in this chunk
        return contacts, self._parts["orders"].get(chunk), customers


class FileOptions(TypedDict, total=False):
    """The keyword options of :func:`write_feature_files`, which :func:`write_features` passes on."""

    journey_gap_days: int | None
    horizon_days: int | None
    feature_set: FeatureSet
    chunk_rows: int | None
    progress: Callable[[int, int, int], None] | None


def write_features(  # noqa: PLR0917 (mirrors build_features)
    contacts: FrameLike,
    orders: FrameLike,
    path: Path | str,
    customers: FrameLike | None = None,
    rates: RateTables | RatesOnContacts | None = None,
    moment: str = "after_contact",
    **options: Unpack[FileOptions],
) -> int:
    """Build the features of every contact and write them to one Parquet file; returns the rows.

    The same rows, in the same order and dtypes, as :func:`build_features`, but the output is
    never held whole: :func:`write_feature_files` for one moment (same ``options``).
    """
    return write_feature_files(contacts, orders, {moment: path}, customers, rates, **options)


def write_feature_files(  # noqa: PLR0917 (mirrors build_features)
    contacts: FrameLike,
    orders: FrameLike,
    paths: Mapping[str, Path | str],
    customers: FrameLike | None = None,
    rates: RateTables | RatesOnContacts | None = None,
    *,
    journey_gap_days: int | None = None,
    horizon_days: int | None = None,
    feature_set: FeatureSet = FEATURE_SET,
    chunk_rows: int | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> int:
    """Features of every contact at each moment of ``paths`` (moment -> Parquet file), one pass.

    Each file holds the rows of :func:`build_features` at its moment (same rows, order, dtypes).
    Both moments come from one pass: ``after_contact`` holds every ``arrival`` feature with the
    same definition (the registry's rule), so the arrival file is a column subset of each
    after-contact chunk. The output is never held whole: customer-hash chunks of at most
    ``chunk_rows`` contacts (default: an eighth of the input, between ``SINK_MIN_CHUNK_ROWS`` and
    ``SINK_CHUNK_ROWS``) are built one at a time and handed to a writer thread, which appends
    them to the files while the next chunk is built. Peak memory is the input plus about two
    chunks' working sets. Returns the number of contacts written (per file).
    """
    if isinstance(contacts, pl.LazyFrame):
        contacts = contacts.collect(engine=ENGINE)
    return write_chunk_files(
        _sink_chunks(contacts, orders, customers, chunk_rows),
        paths,
        rates,
        journey_gap_days=journey_gap_days,
        horizon_days=horizon_days,
        feature_set=feature_set,
        progress=progress,
    )


def write_chunk_files(
    source: ChunkSource,
    paths: Mapping[str, Path | str],
    rates: RateTables | RatesOnContacts | None = None,
    *,
    journey_gap_days: int | None = None,
    horizon_days: int | None = None,
    feature_set: FeatureSet = FEATURE_SET,
    progress: Callable[[int, int, int], None] | None = None,
) -> int:
    """:func:`write_feature_files` from inputs already cut into chunks (e.g. spilled to disk by
    :mod:`features.spill`): the same files from the same chunks. Returns the contacts written."""
    if not paths:
        raise CTOError("write_feature_files: no output file given")
    unknown = [m for m in paths if m not in MOMENTS]
    if unknown:
        raise CTOError(f"moment must be one of {', '.join(MOMENTS)}, got {unknown[0]!r}")
    built = "after_contact" if "after_contact" in paths else "arrival"
    columns = {m: [*KEY_COLUMNS, *(f.name for f in feature_set.for_moment(m))] for m in paths}
    options = _feature_options(journey_gap_days, horizon_days, feature_set)
    empty = _collect(
        *_features_plan(_empty_contacts(rates), _EMPTY_ORDERS, None, rates, built, **options)  # type: ignore[arg-type]
    )
    writer = _FeatureFileWriter({m: (Path(p), empty.select(columns[m])) for m, p in paths.items()})
    written = 0
    try:
        for chunk in _source_chunks(source, rates, built, options, progress):
            written += chunk.height
            writer.put({m: chunk.select(columns[m]) for m in paths})
    finally:
        writer.close()
    return written


class _WholeFrames:
    """Frames in memory as a :class:`ChunkSource` of one chunk (too few contacts to cut)."""

    chunks = 1

    def __init__(self, contacts: pl.DataFrame, orders: FrameLike, customers: FrameLike | None):
        self._inputs = (contacts, orders, customers)

    def get(self, chunk: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None]:
        return self._inputs  # type: ignore[return-value]


def sink_chunk_bits(contacts: int) -> int:
    """log2 of the customer-hash chunks :func:`write_feature_files` cuts this many contacts into."""
    rows = min(SINK_CHUNK_ROWS, max(contacts // 8, SINK_MIN_CHUNK_ROWS))
    return 0 if contacts <= rows else max(1, (contacts - 1) // rows).bit_length()


def _sink_chunks(
    contacts: pl.DataFrame, orders: FrameLike, customers: FrameLike | None, chunk_rows: int | None
) -> ChunkSource:
    """The inputs cut as :func:`write_feature_files` cuts them: chunks of ``chunk_rows`` contacts
    or so (default: at least ~8 chunks, the working set is a chunk's, of at most SINK_CHUNK_ROWS)."""
    if chunk_rows is None:
        chunk_rows = min(SINK_CHUNK_ROWS, max(contacts.height // 8, SINK_MIN_CHUNK_ROWS))
    chunk_bits = _chunk_bits(contacts, chunk_rows, chunk_rows)
    if chunk_bits == 0:
        return _WholeFrames(contacts, orders, customers)
    return _MemoryChunks(contacts, orders, customers, chunk_bits)


def feature_chunks(  # noqa: PLR0917 (mirrors build_features)
    contacts: pl.DataFrame | ChunkSource,
    orders: FrameLike | None,
    customers: FrameLike | None = None,
    rates: RateTables | RatesOnContacts | None = None,
    moment: str = "after_contact",
    *,
    journey_gap_days: int | None = None,
    horizon_days: int | None = None,
    feature_set: FeatureSet = FEATURE_SET,
    chunk_rows: int | None = None,
) -> Iterator[pl.DataFrame]:
    """The rows of :func:`build_features`, one customer-hash chunk at a time (same order).

    For a consumer that uses each chunk and lets it go (batch scoring): the working set is a
    chunk's (``chunk_rows`` contacts or so; default as :func:`write_feature_files`).
    ``contacts`` may be a :class:`ChunkSource` (inputs already cut, e.g. spilled to disk by
    :mod:`features.spill`); ``orders`` and ``customers`` are then not read.
    """
    if moment not in MOMENTS:
        raise CTOError(f"moment must be one of {', '.join(MOMENTS)}, got {moment!r}")
    options = _feature_options(journey_gap_days, horizon_days, feature_set)
    if isinstance(contacts, pl.DataFrame):
        contacts = _sink_chunks(contacts, orders, customers, chunk_rows)  # type: ignore[arg-type]
    yield from _source_chunks(contacts, rates, moment, options)


def build_chunk_features(
    source: ChunkSource,
    rates: RateTables | RatesOnContacts | None,
    moment: str,
    *,
    journey_gap_days: int | None = None,
    horizon_days: int | None = None,
    feature_set: FeatureSet = FEATURE_SET,
) -> pl.DataFrame:
    """The rows of :func:`build_features` from inputs already cut into chunks, as one frame."""
    if moment not in MOMENTS:
        raise CTOError(f"moment must be one of {', '.join(MOMENTS)}, got {moment!r}")
    options = _feature_options(journey_gap_days, horizon_days, feature_set)
    frames = list(_source_chunks(source, rates, moment, options))
    if not frames:
        plan = _features_plan(_empty_contacts(rates), _EMPTY_ORDERS, None, rates, moment, **options)  # type: ignore[arg-type]
        return _collect(*plan)
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical", rechunk=False)


# How the feature files are written. Encoding both files of 10M contacts (8 of the 64 chunks,
# best of 5, times 8): lz4 13.7 s CPU, 1.80 GB; snappy 1.05x the CPU, 0.97x the size; zstd level 1
# 1.17x, 0.81x; uncompressed 0.70x, 1.77x; 8 MB data pages change neither. lz4 is the cheapest
# compressed form; uncompressed files would save ~4 s of CPU for 1.4 GB more disk. About half of
# the uncompressed encoding is Polars trying a dictionary for every integer and float column (a
# HyperLogLog estimate for floats), which no write option switches off. No min/max statistics:
# the rows are grouped by customer hash, so every row group spans the whole time range and nearly
# every id range, and min/max would prune nothing; they cost ~17% of the write (~3 s CPU for both
# files at 10M contacts, measured). Null counts are kept (nearly free).
FEATURE_FILE_OPTIONS: dict[str, object] = {
    "compression": "lz4",
    "statistics": {"min": False, "max": False, "distinct_count": False, "null_count": True},
}


class _FeatureFileWriter:
    """Streams feature chunks into Parquet files, one Polars Parquet sink per file.

    Each sink runs in its own thread and pulls its chunks from a queue holding at most one
    chunk, which bounds memory; a sink writes with the GIL released, so writing one chunk
    overlaps building the next. An error in a sink is raised in the caller at the next chunk or
    at close.
    """

    _POLL_SECONDS = 0.5

    def __init__(self, outputs: Mapping[str, tuple[Path, pl.DataFrame]]) -> None:
        import queue
        import threading

        self._queues: dict[str, queue.Queue] = {}
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        for moment, (path, empty) in outputs.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._queues[moment] = queue.Queue(maxsize=1)
            thread = threading.Thread(
                target=self._sink,
                args=(self._queues[moment], path, empty.schema),
                name=f"features-writer-{moment}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _sink(self, chunks, path: Path, schema: pl.Schema) -> None:
        from polars.io.plugins import register_io_source

        def source(
            with_columns: list[str] | None,
            predicate: pl.Expr | None,
            n_rows: int | None,
            batch_size: int | None,
        ) -> Iterator[pl.DataFrame]:
            while (chunk := chunks.get()) is not None:
                # The sink asks for all columns and no filter; honour a projection or filter.
                out = chunk if predicate is None else chunk.filter(predicate)
                yield out if with_columns is None else out.select(with_columns)

        try:
            register_io_source(source, schema=schema, validate_schema=True).sink_parquet(
                path, **FEATURE_FILE_OPTIONS
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self._errors.append(exc)
            while chunks.get() is not None:  # drain, so the caller never blocks on this queue
                pass

    def _put(self, moment: str, item: pl.DataFrame | None) -> None:
        import queue

        while True:
            if self._errors and item is not None:
                raise self._errors[0]
            try:
                self._queues[moment].put(item, timeout=self._POLL_SECONDS)
                return
            except queue.Full:
                continue

    def put(self, frames: dict[str, pl.DataFrame]) -> None:
        for moment, frame in frames.items():
            self._put(moment, frame)

    def close(self) -> None:
        for moment in self._queues:
            self._put(moment, None)
        for thread in self._threads:
            thread.join()
        if self._errors:
            raise self._errors[0]


# Chunk size of write_features: its output goes to disk, so small chunks bound the working set.
# Measured on 10M contacts (one run each, noisy machine): chunk_rows 125k (128 chunks) 30.2 s,
# 1.44 GB peak; 250k (64 chunks) 25.8 s, 1.50 GB; 500k (32 chunks) 27.8 s, 1.62 GB: a fixed
# cost per chunk against the working set.
SINK_CHUNK_ROWS = 250_000
SINK_MIN_CHUNK_ROWS = 25_000
# Batches above this many contacts run in customer-hash chunks of at most about _CHUNK_ROWS
# contacts: the working set (sorted event stream, helper columns) is several times the input, so
# chunks bound peak memory; per-row cost is lower at ~1M rows than at 10M (benchmarks/features.py).
_CHUNK_ABOVE = 2_000_000
_CHUNK_ROWS = 1_000_000


def _chunk_bits(contacts: FrameLike, above: int, rows: int) -> int:
    """log2 of the number of customer-hash chunks of about ``rows`` contacts (0: one pass).

    Only frames already in memory with more than ``above`` contacts are chunked (a lazy input's
    size is unknown without running it; larger-than-memory data goes through
    build_features_partitioned).
    """
    if not isinstance(contacts, pl.DataFrame) or contacts.height <= above:
        return 0
    return max(1, (contacts.height - 1) // rows).bit_length()


def _resolve_days(journey_gap_days: int | None, horizon_days: int | None) -> tuple[int, int]:
    if journey_gap_days is None or horizon_days is None:
        from features.settings import get_settings

        settings = get_settings()
        journey_gap_days = (
            settings.journey_gap_days if journey_gap_days is None else journey_gap_days
        )
        horizon_days = settings.horizon_days if horizon_days is None else horizon_days
    return journey_gap_days, horizon_days


# --- online -------------------------------------------------------------------------------------


def _as_lazy(
    data: FrameLike | Mapping[str, object] | Sequence[Mapping[str, object]] | None,
) -> pl.LazyFrame | None:
    if data is None:
        return None
    if isinstance(data, pl.LazyFrame):
        return data
    if isinstance(data, pl.DataFrame):
        return data.lazy()
    if isinstance(data, Mapping):
        return pl.LazyFrame([dict(data)])
    return pl.LazyFrame([dict(row) for row in data])


_EMPTY_ORDERS = pl.LazyFrame(schema=ORDERS.polars_schema)
_EMPTY_CONTACTS = pl.LazyFrame(schema=CONTACTS.polars_schema)


def _empty_contacts(rates: RateTables | RatesOnContacts | None) -> pl.LazyFrame:
    """No contacts, with the rate columns the pipeline reads when the contacts carry them."""
    if not isinstance(rates, RatesOnContacts):
        return _EMPTY_CONTACTS
    return _EMPTY_CONTACTS.with_columns(pl.lit(None, pl.Float64).alias(c) for c in RATE_COLUMNS)


def _contacts_input(data: object) -> pl.LazyFrame:
    lazy = _as_lazy(data)  # type: ignore[arg-type]
    return _EMPTY_CONTACTS if lazy is None else lazy


def _orders_input(data: object) -> pl.LazyFrame:
    lazy = _as_lazy(data)  # type: ignore[arg-type]
    return _EMPTY_ORDERS if lazy is None else lazy


def _scored_contacts(contacts: pl.LazyFrame) -> pl.DataFrame:
    """The contacts to score, conformed (their ids and customers select the history)."""
    return _conform(contacts, CONTACTS, _ARRIVAL_INPUTS + _OUTCOME_INPUTS).collect(engine=ENGINE)


def online_features_many(  # noqa: PLR0917 (mirrors online_features)
    history_contacts: FrameLike | Sequence[Mapping[str, object]] | None,
    history_orders: FrameLike | Sequence[Mapping[str, object]] | None,
    contacts: FrameLike | Sequence[Mapping[str, object]],
    customers: FrameLike | Sequence[Mapping[str, object]] | None = None,
    rates: RateTables | None = None,
    moment: str = "arrival",
    *,
    journey_gap_days: int | None = None,
    horizon_days: int | None = None,
    feature_set: FeatureSet = FEATURE_SET,
) -> pl.DataFrame:
    """Feature rows of several contacts of *distinct* customers in one pipeline run, input order.

    Each contact gets exactly what :func:`online_features` gives it alone: the per-customer
    features only read the contact's own customer's rows (history rows of other customers are
    ignored), and the rates are global tables. One plan for many contacts costs little more than
    one for a single contact, so a scoring batch should come through here.
    """
    journey_gap_days, horizon_days = _resolve_days(journey_gap_days, horizon_days)
    scored = _scored_contacts(_contacts_input(contacts))
    if scored.height == 0:
        raise CTOError("online_features_many: no contacts to score")
    if scored["customer_id"].n_unique() != scored.height:
        raise CTOError(
            "online_features_many: at most one contact per customer (score a customer's later "
            "contact after its earlier one is in the history)"
        )
    scored_ids = scored["contact_id"]
    customer_ids = scored["customer_id"]
    history = _contacts_input(history_contacts).filter(
        pl.col("customer_id").is_in(customer_ids.implode()),
        ~pl.col("contact_id").is_in(scored_ids.implode()),
    )
    history = _conform(history, CONTACTS, _ARRIVAL_INPUTS + _OUTCOME_INPUTS)
    orders = _orders_input(history_orders).filter(
        pl.col("customer_id").is_in(customer_ids.implode())
    )
    customer_frame = _as_lazy(customers)  # type: ignore[arg-type]
    plan, checks = _features_plan(
        pl.concat([history, scored.lazy()]),
        orders,
        customer_frame,
        rates,
        moment,
        journey_gap_days=journey_gap_days,
        horizon_days=horizon_days,
        feature_set=feature_set,
        contacts_conformed=True,
    )
    # Back to input order: the pipeline groups rows by customer hash.
    wanted = scored.lazy().select("contact_id").with_row_index("_input_row")
    plan = plan.join(wanted, on="contact_id", how="inner").sort("_input_row").drop("_input_row")
    return _collect(plan, checks)


def online_features(  # noqa: PLR0917 (signature fixed by docs/architecture.md)
    history_contacts: FrameLike | Sequence[Mapping[str, object]] | None,
    history_orders: FrameLike | Sequence[Mapping[str, object]] | None,
    contact: FrameLike | Mapping[str, object],
    customer: FrameLike | Mapping[str, object] | None = None,
    rates: RateTables | None = None,
    moment: str = "arrival",
    *,
    journey_gap_days: int | None = None,
    horizon_days: int | None = None,
) -> pl.DataFrame:
    """The one-row feature frame of ``contact`` given the customer's history, via :func:`build_features`.

    At ``moment="arrival"`` the contact's after-contact fields may be absent or null. The history
    may hold other customers' rows; only the contact's customer matters. Lifetime features see
    only the history given (the service keeps a bounded window: CTO_HISTORY_DAYS). It is
    :func:`online_features_many` for one contact: the same cached plan as batch, one collect.
    """
    new = _as_lazy(contact)
    if new is None:
        raise CTOError("online_features: `contact` must be exactly one contact")
    if isinstance(contact, pl.LazyFrame | pl.DataFrame):
        height = (
            contact.height
            if isinstance(contact, pl.DataFrame)
            else contact.select(pl.len()).collect(engine=ENGINE).item()
        )
        if height != 1:
            raise CTOError("online_features: `contact` must be exactly one contact")
    return online_features_many(
        history_contacts,
        history_orders,
        new,
        customer,  # type: ignore[arg-type]
        rates,
        moment,
        journey_gap_days=journey_gap_days,
        horizon_days=horizon_days,
    )


# --- larger than memory -------------------------------------------------------------------------


def build_features_partitioned(
    input_dir: Path | str,
    out_dir: Path | str,
    n_partitions: int,
    moment: str = "after_contact",
    rates: RateTables | None = None,
    *,
    journey_gap_days: int | None = None,
    horizon_days: int | None = None,
    progress: bool = False,
) -> list[Path]:
    """Features for data larger than memory: one customer-hash partition at a time.

    Reads ``contacts``/``orders``/``customers`` (.parquet or .csv, already validated) from
    ``input_dir`` lazily, so each pass holds one partition in memory, and writes
    ``out_dir/part-00000.parquet``... (one file per partition, together all contacts). Every
    per-customer feature only needs that customer's rows; the global rate tables are passed in
    (:func:`features.rates.compute_rates`; ``cto features --partitions`` builds them with
    :func:`features.rate_shards.compute_rates_partitioned`).
    """
    if n_partitions < 1:
        raise CTOError(f"--partitions must be >= 1, got {n_partitions}")
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    tables = scan_tables(input_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for part in range(n_partitions):
        mine = customer_partition(n_partitions) == part
        # The streaming engine reads just this partition's rows; the features run in memory.
        scans = {
            name: scan.filter(mine).collect(engine="streaming") for name, scan in tables.items()
        }
        frame = build_features(
            scans["contacts"],
            scans["orders"],
            scans.get("customers"),
            rates,
            moment,
            journey_gap_days=journey_gap_days,
            horizon_days=horizon_days,
        )
        path = out_dir / f"part-{part:05d}.parquet"
        frame.write_parquet(path, **FEATURE_FILE_OPTIONS)
        written.append(path)
        if progress:
            print(
                f"partition {part + 1}/{n_partitions}: {frame.height:,} contacts -> {path}",
                flush=True,
            )
    return written
