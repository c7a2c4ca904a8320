"""Online features: per-customer state folded from events, read without a Polars plan.

The batch pipeline (:mod:`features.pipeline`) evaluates each feature's Polars expression over whole
tables. Scoring one contact that way costs milliseconds of query planning, so the service keeps a
:class:`CustomerState` per customer instead (the feature-store way: materialise, then read) and
computes the contact's features with each feature's *online form*, declared beside its batch
expression in :mod:`features.registry`. Property tests (tests/unit/test_features_online_parity.py)
require both to give the same values for random histories, instants and both moments.

What a state holds, per customer: every contact (its start, channel and outcome fields) and order
(time, amount in cents) by id, and the customer's attributes. An event posted again under the same
id replaces the stored one (a contact posted at arrival and again once it ended); events may
arrive in any order. Reading the features of a contact started at ``T`` scans the customer's
events strictly before ``T`` once, in the batch pipeline's stream order (time, then contact start
< outcome < order, then the id's hash), and accumulates what the online forms read:

- lifetime counts and sums, the latest contact, order and known outcome, the latest contact per
  channel, the earliest event (tenure);
- window sums over ``[T - w, T)`` (window starts at millisecond resolution, as in batch) and the
  longest wait of outcomes in each window;
- the journey as known at ``T``: the same rule as the batch pipeline (a gap of
  ``journey_gap_days`` or an order within ``horizon_days`` of the previous contact starts one).

A history sent with a request is folded into a fresh state by the same code, so both scoring modes
give the same answer. Times are integer microseconds since the Unix epoch (UTC) throughout: exact,
and what the batch pipeline's datetimes hold.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from features.errors import CTOError
from features.registry import FEATURE_SET, HISTORY_WINDOWS, WINDOW_SUMMED, FeatureSet
from features.schema import CONTACTS, CUSTOMERS, ORDERS, Table

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_US = 86_400_000_000
# Window spans in milliseconds (window starts are compared at millisecond resolution, as the batch
# pipeline's stream key does) and in microseconds (channel recency compares exact times).
_WINDOW_DAYS = {window: int(window.removesuffix("d")) for window in HISTORY_WINDOWS}
_KIND_CONTACT, _KIND_OUTCOME, _KIND_ORDER = 0, 1, 2
# Contact fields a state keeps, in this order (what the features read; never dropoff_reason).
CONTACT_FIELDS = (
    "contact_id",
    "started_at",
    "channel",
    "wait_seconds",
    "handle_seconds",
    "transfers",
    "abandoned",
    "resolved",
    "handled_by",
)
_C_ID, _C_START, _C_CHANNEL, _C_WAIT, _C_HANDLE, _C_TRANSFERS, _C_ABANDONED, _C_RESOLVED = range(8)
_C_HANDLER, _C_SEQ = 8, 9


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding); naive times are UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def id_hashes(ids: Sequence[str]) -> list[int]:
    """The batch pipeline's tie-break of events at one instant: Polars' hash of the id, seed 0."""
    if not ids:
        return []
    return pl.Series(ids, dtype=pl.String).hash(seed=0).to_list()


def _micros_of(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return to_micros(value)
    if isinstance(value, str):
        return to_micros(datetime.fromisoformat(value.replace("Z", "+00:00")))
    raise CTOError(f"expected a time, got {type(value).__name__}")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _outcome_at(contact: Sequence[Any]) -> int:
    # As the batch stream: started_at + (wait + handle) seconds, truncated to the microsecond.
    wait, handle = contact[_C_WAIT], contact[_C_HANDLE]
    seconds = (0.0 if wait is None else wait) + (0.0 if handle is None else handle)
    return contact[_C_START] + int(seconds * 1e6)


@dataclass
class CustomerState:
    """One customer's events (by id) and attributes: what every online feature reads.

    ``contacts``: contact_id -> ``[contact_id, started_us, channel, wait_seconds, handle_seconds,
    transfers, abandoned, resolved, handled_by, seq_hash]``; ``orders``: order_id ->
    ``[ordered_us, amount_cents, seq_hash]``; ``customer``: ``[segment, first_seen_us]`` or None.
    """

    contacts: dict[str, list[Any]] = field(default_factory=dict)
    orders: dict[str, list[Any]] = field(default_factory=dict)
    customer: list[Any] | None = None

    # ------------------------------------------------------------------ updates

    def add_contacts(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Add (or replace, by contact_id) contacts: dicts with the contract's contact fields."""
        rows = list(rows)
        for row, seq in zip(rows, id_hashes([str(r["contact_id"]) for r in rows]), strict=True):
            self.contacts[str(row["contact_id"])] = contact_record(row, seq)

    def add_orders(self, rows: Iterable[Mapping[str, Any]]) -> None:
        rows = list(rows)
        for row, seq in zip(rows, id_hashes([str(r["order_id"]) for r in rows]), strict=True):
            self.orders[str(row["order_id"])] = order_record(row, seq)

    def set_customer(self, row: Mapping[str, Any]) -> None:
        self.customer = customer_record(row)

    # ------------------------------------------------------------------ storage

    def to_json(self) -> str:
        return json.dumps(
            {"c": list(self.contacts.values()), "o": self.orders, "k": self.customer},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> CustomerState:
        data = json.loads(text)
        return cls(
            contacts={record[_C_ID]: record for record in data["c"]},
            orders=data["o"],
            customer=data["k"],
        )

    def merge(self, other: CustomerState) -> None:
        """Events of ``other`` replace or join this state's (one customer's)."""
        self.contacts.update(other.contacts)
        self.orders.update(other.orders)
        if other.customer is not None:
            self.customer = other.customer


def contact_record(row: Mapping[str, Any], seq: int) -> list[Any]:
    started = _micros_of(row["started_at"])
    if started is None:
        raise CTOError("contact: started_at is required")
    wait, handle, transfers = (
        row.get("wait_seconds"),
        row.get("handle_seconds"),
        row.get("transfers"),
    )
    return [
        str(row["contact_id"]),
        started,
        _text(row["channel"]),
        None if wait is None else float(wait),
        None if handle is None else float(handle),
        None if transfers is None else int(transfers),
        row.get("abandoned"),
        row.get("resolved"),
        _text(row.get("handled_by")),
        seq,
    ]


def order_record(row: Mapping[str, Any], seq: int) -> list[Any]:
    ordered = _micros_of(row["ordered_at"])
    if ordered is None:
        raise CTOError("order: ordered_at is required")
    amount = row.get("amount")
    cents = None if amount is None else round(float(amount) * 100)
    return [ordered, cents, seq]


def customer_record(row: Mapping[str, Any]) -> list[Any]:
    return [_text(row.get("segment")), _micros_of(row.get("first_seen_at"))]


# --- rates ---------------------------------------------------------------------------------------


class RateIndex:
    """Rate tables (:class:`features.rates.RateTables`) as sorted lists, read with a bisection.

    The same rule as :func:`features.rates.join_rates`: the counts of the key and the global rate
    known strictly before the contact started, smoothed ``(conversions + m * global) /
    (outcomes + m)``; a key without a known outcome gets the global rate; null before any
    outcome is known.
    """

    def __init__(self, rates: Any) -> None:
        from features.rates import KNOWN_AT

        self.prior_strength = float(rates.prior_strength)
        global_rate = rates.global_rate.sort(KNOWN_AT)
        self._global_at = [to_micros(t) for t in global_rate[KNOWN_AT].to_list()]
        self._global = global_rate["rate"].to_list()
        self._tables: dict[str, dict[str, tuple[list[int], list[int], list[int]]]] = {}
        for name, table in rates.tables.items():
            by_key: dict[str, tuple[list[int], list[int], list[int]]] = {}
            ordered = table.sort("key", KNOWN_AT)
            for key, known, conversions, outcomes in zip(
                ordered["key"].to_list(),
                ordered[KNOWN_AT].to_list(),
                ordered["conversions"].to_list(),
                ordered["outcomes"].to_list(),
                strict=True,
            ):
                entry = by_key.setdefault(str(key), ([], [], []))
                entry[0].append(to_micros(known))
                entry[1].append(conversions)
                entry[2].append(outcomes)
            self._tables[name] = by_key

    def global_rate(self, at: int) -> float | None:
        index = bisect.bisect_left(self._global_at, at) - 1
        return self._global[index] if index >= 0 else None

    def rate(self, name: str, key: str | None, at: int) -> float | None:
        if key is None:
            return None
        prior = self.global_rate(at)
        if prior is None:
            return None
        conversions = outcomes = 0
        entry = self._tables.get(name, {}).get(key)
        if entry is not None:
            index = bisect.bisect_left(entry[0], at) - 1
            if index >= 0:
                conversions, outcomes = entry[1][index], entry[2][index]
        m = self.prior_strength
        return (conversions + m * prior) / (outcomes + m)


_RATE_INDEXES: dict[int, tuple[Any, RateIndex]] = {}


def rate_index(rates: Any) -> RateIndex | None:
    """The :class:`RateIndex` of a RateTables object, built once per object."""
    if rates is None:
        return None
    cached = _RATE_INDEXES.get(id(rates))
    if cached is not None and cached[0] is rates:
        return cached[1]
    if len(_RATE_INDEXES) >= 8:
        _RATE_INDEXES.clear()
    index = RateIndex(rates)
    _RATE_INDEXES[id(rates)] = (rates, index)
    return index


# --- reading a state at a contact -----------------------------------------------------------------


class OnlineRow:
    """What the registry's online forms read for one contact: the scan of the state before it.

    Attribute names follow the batch pipeline's helper columns where there is one.
    """

    __slots__ = (
        "_first_event_us",
        "_last_at",
        "contact",
        "first_seen_us",
        "journey_contacts_before",
        "journey_started_us",
        "journey_switch",
        "last_contact_us",
        "last_order_us",
        "lifetime",
        "prev_unresolved",
        "rates",
        "segment",
        "started_us",
        "wait_max",
        "windows",
    )

    def __init__(self) -> None:
        self.windows: dict[str, list[int]] = {}
        self.wait_max: dict[str, float | None] = {}

    # Helpers the online forms call.

    def window_sum(self, column: str, window: str) -> int:
        return self.windows[window][_SUM_INDEX[column]]

    def lifetime_sum(self, column: str) -> int:
        return self.lifetime[_SUM_INDEX[column]]

    def days_since(self, earlier_us: int | None) -> float | None:
        if earlier_us is None:
            return None
        return (self.started_us - earlier_us) * _DAYS_PER_MICROSECOND

    def channels_used(self, window: str) -> int:
        span = _WINDOW_DAYS[window] * _DAY_US
        return sum(1 for at in self._last_at.values() if self.started_us - at <= span)

    def rate(self, name: str) -> float | None:
        if self.rates is None:
            return None
        contact = self.contact
        if name == "agent":
            key = contact.get("agent_id")
            if key is None and _text(contact.get("handled_by")) == "bot":
                key = "bot"
        else:
            key = contact.get(name)
        return self.rates.rate(name, _text(key), self.started_us)

    @property
    def hour(self) -> int:
        return (self.started_us // 3_600_000_000) % 24

    @property
    def weekday(self) -> int:
        return (self.started_us // _DAY_US + 3) % 7 + 1  # 1970-01-01 was a Thursday

    @property
    def tenure_days(self) -> float:
        first = self.started_us
        for candidate in (self.first_seen_us, self._first_event_us):
            if candidate is not None and candidate < first:
                first = candidate
        return (self.started_us - first) * _DAYS_PER_MICROSECOND


_SUM_INDEX = {name: i for i, name in enumerate(WINDOW_SUMMED)}
_DAYS_PER_MICROSECOND = 1 / 86_400_000_000


def _flag(value: Any) -> int | None:
    return None if value is None else int(bool(value))


def _contact_values(record: Sequence[Any]) -> list[int]:
    """The summed values of a contact start (switch filled in by the scan)."""
    values = [0] * len(WINDOW_SUMMED)
    values[_SUM_INDEX["_is_contact"]] = 1
    return values


def _outcome_values(record: Sequence[Any]) -> list[int]:
    values = [0] * len(WINDOW_SUMMED)
    wait = record[_C_WAIT]
    if wait is not None:
        values[_SUM_INDEX["_wait_ms"]] = round(wait * 1000)
        values[_SUM_INDEX["_has_wait"]] = 1
    values[_SUM_INDEX["_abandoned"]] = int(bool(record[_C_ABANDONED]))
    values[_SUM_INDEX["_transfers"]] = record[_C_TRANSFERS] or 0
    resolved = record[_C_RESOLVED]
    values[_SUM_INDEX["_unresolved"]] = 0 if resolved is None else int(not resolved)
    values[_SUM_INDEX["_bot"]] = int(record[_C_HANDLER] == "bot")
    return values


def read_state(  # noqa: C901, PLR0912, PLR0915 (one pass over the events, kept together)
    state: CustomerState,
    contact: Mapping[str, Any],
    *,
    journey_gap_days: int,
    horizon_days: int,
    rates: RateIndex | None = None,
) -> OnlineRow:
    """Scan the state's events strictly before ``contact`` started into an :class:`OnlineRow`."""
    started = _micros_of(contact["started_at"])
    if started is None:
        raise CTOError("contact: started_at is required")
    own_id = str(contact["contact_id"])
    events: list[tuple[int, int, int, Sequence[Any]]] = []
    for contact_id, record in state.contacts.items():
        if contact_id == own_id:
            continue
        start = record[_C_START]
        if start < started:
            events.append((start, _KIND_CONTACT, record[_C_SEQ], record))
            outcome = _outcome_at(record)
            if outcome < started:
                events.append((outcome, _KIND_OUTCOME, record[_C_SEQ], record))
    for order in state.orders.values():
        if order[0] < started:
            events.append((order[0], _KIND_ORDER, order[2], order))
    events.sort(key=_event_key)

    now_ms = started // 1000
    lows = [(window, now_ms - _WINDOW_DAYS[window] * 86_400_000) for window in HISTORY_WINDOWS]
    sums = {window: [0] * len(WINDOW_SUMMED) for window in HISTORY_WINDOWS}
    wait_max: dict[str, float | None] = dict.fromkeys(HISTORY_WINDOWS)
    lifetime = [0] * len(WINDOW_SUMMED)
    last_at: dict[str, int] = {}
    gap_us = journey_gap_days * _DAY_US
    horizon_us = horizon_days * _DAY_US

    last_order = None
    prev_unresolved = None
    # Contacts: the latest instant's last contact, and the one before the current instant.
    instant = None
    last_contact_at = last_channel = None  # last contact strictly before the current instant
    cur_at = cur_channel = None  # last contact processed
    order_after_last = None  # first order at or after the last contact processed
    order_after_prev = None  # ... after last_contact_at
    journey_start = journey_count = None
    switch_here = None

    def new_journey(at: int) -> bool:
        if last_contact_at is None or at - last_contact_at >= gap_us:
            return True
        return (
            order_after_prev is not None
            and order_after_prev < at
            and order_after_prev <= last_contact_at + horizon_us
        )

    for at, kind, _seq, record in events:
        if kind == _KIND_CONTACT:
            if at != instant:
                # A new instant: its contacts' previous contact is the last one before it.
                instant = at
                last_contact_at, last_channel = cur_at, cur_channel
                order_after_prev = order_after_last
                if new_journey(at):
                    journey_start, journey_count = at, 0
            channel = record[_C_CHANNEL]
            switch_here = None if last_channel is None else int(channel != last_channel)
            values = _contact_values(record)
            values[_SUM_INDEX["_switch"]] = switch_here or 0
            cur_at, cur_channel = at, channel
            order_after_last = None
            last_at[channel] = at
            journey_count += 1
        elif kind == _KIND_OUTCOME:
            values = _outcome_values(record)
            resolved = record[_C_RESOLVED]
            if resolved is not None:
                prev_unresolved = int(not resolved)
        else:
            values = [0] * len(WINDOW_SUMMED)
            values[_SUM_INDEX["_is_order"]] = 1
            values[_SUM_INDEX["_amount_cents"]] = record[1] or 0
            last_order = at
            if order_after_last is None:
                order_after_last = at
        for i, value in enumerate(values):
            if value:
                lifetime[i] += value
        at_ms = at // 1000
        for window, low in lows:
            if at_ms >= low:
                window_sums = sums[window]
                for i, value in enumerate(values):
                    if value:
                        window_sums[i] += value
                if kind == _KIND_OUTCOME and at_ms < now_ms:
                    wait = record[_C_WAIT]
                    if wait is not None:
                        current = wait_max[window]
                        if current is None or wait > current:
                            wait_max[window] = wait

    row = OnlineRow()
    row.contact = contact
    row.started_us = started
    row.windows = sums
    row.wait_max = wait_max
    row.lifetime = lifetime
    row._last_at = last_at
    row.last_order_us = last_order
    row.prev_unresolved = prev_unresolved
    # The scored contact's own instant: its previous contact is the last one before it.
    if instant != started:
        last_contact_at, last_channel = cur_at, cur_channel
        order_after_prev = order_after_last
    row.last_contact_us = last_contact_at
    starts_journey = new_journey(started)
    if starts_journey:
        row.journey_contacts_before, row.journey_started_us, row.journey_switch = 0, started, None
    else:
        row.journey_contacts_before = journey_count
        row.journey_started_us = journey_start
        row.journey_switch = int(contact["channel"] != last_channel)
    row._first_event_us = events[0][0] if events else None
    segment, first_seen = state.customer if state.customer is not None else (None, None)
    row.segment = segment
    row.first_seen_us = first_seen
    row.rates = rates
    return row


def _event_key(event: tuple[int, int, int, Sequence[Any]]) -> tuple[int, int, int]:
    return event[0], event[1], event[2]


def online_values(
    state: CustomerState,
    contact: Mapping[str, Any],
    moment: str,
    *,
    journey_gap_days: int,
    horizon_days: int,
    rates: Any = None,
    feature_set: FeatureSet = FEATURE_SET,
) -> dict[str, Any]:
    """The features of ``contact`` at ``moment`` from ``state``: name -> value, registry order.

    Values are what :func:`features.pipeline.build_features` gives for the contact as Python
    values: ints for counts and flags, floats, category text, None for null.
    """
    row = read_state(
        state,
        contact,
        journey_gap_days=journey_gap_days,
        horizon_days=horizon_days,
        rates=rate_index(rates),
    )
    return {f.name: f.online(row) for f in feature_set.for_moment(moment)}  # type: ignore[misc]


def state_from_history(
    contacts: Iterable[Mapping[str, Any]],
    orders: Iterable[Mapping[str, Any]] = (),
    customer: Mapping[str, Any] | None = None,
) -> CustomerState:
    """A fresh state folded from a history given as rows (a request's, or a test's)."""
    state = CustomerState()
    state.add_contacts(contacts)
    state.add_orders(orders)
    if customer is not None:
        state.set_customer(customer)
    return state


def states_from_frames(
    contacts: pl.DataFrame, orders: pl.DataFrame, customers: pl.DataFrame | None = None
) -> dict[str, CustomerState]:
    """States of every customer in contract frames (``cto materialize``): one pass per table.

    The id hashes and integer times are computed column-wise; the records are the same as
    :meth:`CustomerState.add_contacts` builds row by row.
    """
    states: dict[str, CustomerState] = {}
    contacts, orders = _with_columns(contacts, CONTACTS), _with_columns(orders, ORDERS)
    if customers is not None:
        customers = _with_columns(customers, CUSTOMERS)
    if contacts.height:
        frame = contacts.select(
            "customer_id",
            "contact_id",
            pl.col("started_at").dt.epoch("us"),
            pl.col("channel").cast(pl.String),
            pl.col("wait_seconds").cast(pl.Float64),
            pl.col("handle_seconds").cast(pl.Float64),
            pl.col("transfers").cast(pl.Int64),
            pl.col("abandoned").cast(pl.Boolean),
            pl.col("resolved").cast(pl.Boolean),
            pl.col("handled_by").cast(pl.String),
            pl.col("contact_id").cast(pl.String).hash(seed=0).alias("_seq"),
        )
        for customer_id, *record in frame.iter_rows():
            state = states.get(customer_id)
            if state is None:
                state = states[customer_id] = CustomerState()
            state.contacts[record[0]] = record
    if orders.height:
        frame = orders.select(
            "customer_id",
            "order_id",
            pl.col("ordered_at").dt.epoch("us"),
            (pl.col("amount") * 100).round().cast(pl.Int64),
            pl.col("order_id").cast(pl.String).hash(seed=0).alias("_seq"),
        )
        for customer_id, order_id, at, cents, seq in frame.iter_rows():
            state = states.get(customer_id)
            if state is None:
                state = states[customer_id] = CustomerState()
            state.orders[order_id] = [at, cents, seq]
    if customers is not None and customers.height:
        frame = customers.select(
            "customer_id",
            pl.col("segment").cast(pl.String),
            pl.col("first_seen_at").dt.epoch("us"),
        )
        for customer_id, segment, first_seen in frame.iter_rows():
            state = states.get(customer_id)
            if state is None:
                state = states[customer_id] = CustomerState()
            state.customer = [segment, first_seen]
    return states


def _with_columns(frame: pl.DataFrame, table: Table) -> pl.DataFrame:
    """Columns the contract has and ``frame`` lacks (a partial post) added as nulls."""
    missing = [c for c in table.columns if c.name not in frame.columns]
    return frame.with_columns(pl.lit(None, c.dtype).alias(c.name) for c in missing)
