"""The service's event store and online feature store: events by customer and time, and state.

Two kinds of tables live in one database:

- events: contacts, orders and customers as posted (the record: replay, audit, retraining);
- ``customer_state``: one row per customer, the :class:`features.online.CustomerState` the
  online features are read from (JSON). It is updated in the same transaction as the event
  append, so a committed /events answer means both are stored, and a score never sees one
  without the other. ``cto materialize DATA_DIR`` bulk-loads both from offline tables.

Embedded by default (a SQLite file, ``sqlite:///events.db``); a database server by URL, e.g.
``postgresql+psycopg://user:pass@host/cto`` (install the driver: ``pip install "psycopg[binary]"``).
Tables mirror the data contract (:mod:`features.schema`), with two storage choices that keep every
database exact and fast: times are integer microseconds since the Unix epoch (UTC), and enums are
their text value. Contacts and orders are indexed by ``(customer_id, time)``.

An append is one transaction: once :meth:`EventStore.append` returns, the rows are committed
(SQLite's default ``synchronous=FULL`` fsyncs the commit). A contact or order posted again under
the same id replaces the stored row (a contact is typically posted at arrival and again when it
ended). Event-table history reads are bounded to ``history_days`` before the scoring time, and
:meth:`EventStore.prune` drops events that fall out of that window; the customer state is never
pruned that way, so lifetime features see the whole history (what the model was trained on).

Reading a state is one primary-key lookup: on SQLite it goes through a per-thread ``sqlite3``
connection (a fraction of a SQLAlchemy Core execute's cost, measured in
benchmarks/serving.py); on a database server through SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa

from features.online import CustomerState, states_from_frames, to_micros
from features.schema import AFTER_CONTACT_COLUMNS, CONTACTS, CUSTOMERS, ORDERS, Table

_KEYS = {"contacts": "contact_id", "orders": "order_id", "customers": "customer_id"}
STATE_TABLE = "customer_state"


def _sql_type(dtype: pl.DataType) -> Any:
    if isinstance(dtype, pl.Datetime):
        return sa.BigInteger()
    if dtype == pl.Boolean:
        return sa.Boolean()
    if dtype.is_integer():
        return sa.Integer()
    if dtype.is_float():
        return sa.Float(precision=53)
    return sa.String()


def _storage_dtype(dtype: pl.DataType) -> pl.DataType:
    """The Polars type a stored column reads back as, before casting to the contract type."""
    if isinstance(dtype, pl.Datetime):
        return pl.Int64
    if isinstance(dtype, pl.Enum):
        return pl.String
    return dtype


def _define(metadata: sa.MetaData, table: Table) -> sa.Table:
    key = _KEYS[table.name]
    # A contact is stored from its arrival on, before its handling columns are known.
    optional = AFTER_CONTACT_COLUMNS if table.name == "contacts" else ()
    columns = [
        sa.Column(
            c.name,
            _sql_type(c.dtype),
            primary_key=c.name == key,
            nullable=c.nullable or c.name in optional,
        )
        for c in table.columns
    ]
    indexes = []
    if table.time_column is not None:
        indexes.append(sa.Index(f"ix_{table.name}_customer_time", "customer_id", table.time_column))
    return sa.Table(table.name, metadata, *columns, *indexes)


@dataclass(frozen=True)
class RowProblem:
    """A row :meth:`EventStore.append` did not store: its table, 0-based position, reason."""

    table: str
    position: int
    field: str
    rule: str
    message: str


_SUPERSEDED = "a newer version of this event is stored (or posted later in this request)"
# What makes one version of a contact newer than another, most significant first: its handling
# is known (it ended), its drop-off reason is known, its agent is known.
_RANK_COLUMNS = ("handled_by", "dropoff_reason", "agent_id")


def contact_rank() -> pl.Expr:
    """Version rank of contact rows: an ended contact outranks its arrival, a known drop-off
    reason or agent outranks none. Equal ranks: the later post wins."""
    return sum(
        pl.col(c).is_not_null().cast(pl.Int32) * (1 << (len(_RANK_COLUMNS) - 1 - i))
        for i, c in enumerate(_RANK_COLUMNS)
    ).alias("_rank")


def _rank_of(values: Any) -> int:
    return sum((1 << (len(_RANK_COLUMNS) - 1 - i)) for i, v in enumerate(values) if v is not None)


@dataclass(frozen=True)
class CustomerHistory:
    """A customer's events before a scoring time, as frames with the contract's dtypes."""

    contacts: pl.DataFrame
    orders: pl.DataFrame
    customer: pl.DataFrame  # zero or one row


class EventStore:
    """Append-only-by-id store of contract rows, read back per customer and time window."""

    def __init__(self, url: str, history_days: int) -> None:
        self.url = url
        self.history_days = history_days
        self._tables_by_name = {t.name: t for t in (CONTACTS, ORDERS, CUSTOMERS)}
        self._metadata = sa.MetaData()
        self._sql = {name: _define(self._metadata, t) for name, t in self._tables_by_name.items()}
        self._state = sa.Table(
            STATE_TABLE,
            self._metadata,
            sa.Column("customer_id", sa.String(), primary_key=True),
            sa.Column("state", sa.Text(), nullable=False),
        )
        # The model versions this service last loaded, per alias: what a restart falls back to
        # when the alias points at a version that cannot be loaded.
        self._served = sa.Table(
            "served_models",
            self._metadata,
            sa.Column("alias", sa.String(), primary_key=True),
            sa.Column("task", sa.String(), primary_key=True),
            sa.Column("version", sa.String(), nullable=False),
        )
        engine_options: dict[str, Any] = {}
        if url.startswith("sqlite"):
            # One connection per thread; BentoML serves requests from a thread pool.
            engine_options["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine = sa.create_engine(url, **engine_options)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        _create_tables(self._metadata, self.engine)
        self._write_lock = threading.Lock()
        self._history_sql = self._history_statements()
        self._sqlite_path = _sqlite_file(self.engine)
        self._local = threading.local()

    # ------------------------------------------------------------------ writes

    def append(
        self, tables: dict[str, pl.DataFrame], problems: list[RowProblem] | None = None
    ) -> dict[str, int]:
        """Store validated rows (contract dtypes) in one transaction; returns rows per table.

        Rows are versions of events: a contact or order posted again under its id replaces the
        stored one, unless the stored one is newer (:func:`contact_rank`: an arrival never
        replaces the ended contact, a version without the drop-off reason never replaces one
        with it), or unless it names another customer (an id belongs to one customer). Those rows
        are not stored; with ``problems`` given, each is reported there by its position in its
        frame.
        """
        counts = {name: 0 for name in self._tables_by_name}
        tables = {n: f for n, f in tables.items() if n in self._sql and f is not None and f.height}
        if not tables:
            return counts
        # SQLite has one writer at a time; serialising here avoids busy retries under load.
        with self._write_lock, self.engine.begin() as connection:
            found: list[RowProblem] = []
            tables = {n: self._current_versions(connection, n, f, found) for n, f in tables.items()}
            if problems is not None:
                problems.extend(found)
            # Events first: on SQLite the first write takes the database's write lock, so the
            # states read below cannot change under this transaction (nor can another process's).
            for name, frame in tables.items():
                if frame.height:
                    rows = _rows_for_storage(frame, self._tables_by_name[name])
                    connection.execute(self._upsert(name), rows)
                    counts[name] = len(rows)
            self._update_states(connection, states_from_frames(*_state_inputs(tables)))
        return counts

    def _current_versions(
        self, connection: Any, name: str, frame: pl.DataFrame, problems: list[RowProblem]
    ) -> pl.DataFrame:
        """The rows of ``frame`` that become the stored version of their event."""
        if name == "customers":
            return frame
        key = _KEYS[name]
        table = self._sql[name]
        ranked = frame.with_row_index("_pos").with_columns(
            contact_rank() if name == "contacts" else pl.lit(0).alias("_rank")
        )
        # Within the request: per id the highest rank; among equals the last posted.
        best = ranked.sort("_rank", "_pos").unique(key, keep="last", maintain_order=False)
        for position in sorted(set(ranked["_pos"]) - set(best["_pos"])):
            problems.append(RowProblem(name, position, key, "superseded", _SUPERSEDED))
        ids = best[key].to_list()
        stored: dict[str, tuple[str, int]] = {}
        rank_columns = [table.c[c] for c in _RANK_COLUMNS] if name == "contacts" else []
        for start in range(0, len(ids), 500):
            statement = sa.select(table.c[key], table.c.customer_id, *rank_columns).where(
                table.c[key].in_(ids[start : start + 500])
            )
            for row in connection.execute(statement):
                rank = _rank_of(row[2:]) if name == "contacts" else 0
                stored[row[0]] = (row[1], rank)
        keep = []
        for event_id, customer_id, rank, position in best.select(
            key, "customer_id", "_rank", "_pos"
        ).iter_rows():
            previous = stored.get(event_id)
            if previous is not None and previous[0] != customer_id:
                problems.append(
                    RowProblem(
                        name,
                        position,
                        "customer_id",
                        "customer_changed",
                        f"{key} is stored under another customer; an id belongs to one customer",
                    )
                )
            elif previous is not None and rank < previous[1]:
                problems.append(RowProblem(name, position, key, "superseded", _SUPERSEDED))
            else:
                keep.append(position)
        return ranked.filter(pl.col("_pos").is_in(keep)).sort("_pos").drop("_pos", "_rank")

    def materialize(
        self,
        contacts: pl.DataFrame,
        orders: pl.DataFrame,
        customers: pl.DataFrame | None = None,
        *,
        batch_rows: int = 50_000,
    ) -> dict[str, int]:
        """Bulk-load validated offline tables: events and customer states (``cto materialize``).

        Runs in batches of customers (each its own transaction), merging into what is stored:
        loading the same tables twice leaves the same state.
        """
        counts = {"contacts": 0, "orders": 0, "customers": 0, "states": 0}
        customer_ids = pl.concat(
            [contacts.select("customer_id"), orders.select("customer_id")]
            + ([customers.select("customer_id")] if customers is not None else [])
        ).unique(maintain_order=True)["customer_id"]
        batches = max(1, -(-contacts.height // batch_rows))
        for batch in range(batches):
            chosen = customer_ids.gather_every(batches, offset=batch).implode()
            mine = pl.col("customer_id").is_in(chosen)
            part = {
                "contacts": contacts.filter(mine),
                "orders": orders.filter(mine),
                "customers": customers.filter(mine) if customers is not None else None,
            }
            stored = self.append({k: v for k, v in part.items() if v is not None})
            for name in ("contacts", "orders", "customers"):
                counts[name] += stored[name]
            counts["states"] += len(chosen.explode())
        return counts

    def _update_states(self, connection: Any, updates: dict[str, CustomerState]) -> None:
        if not updates:
            return
        table = self._state
        ids = list(updates)
        stored: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = connection.execute(
                sa.select(table.c.customer_id, table.c.state).where(table.c.customer_id.in_(chunk))
            )
            stored.update({customer_id: state for customer_id, state in rows})
        merged = []
        for customer_id, update in updates.items():
            text = stored.get(customer_id)
            state = CustomerState.from_json(text) if text is not None else CustomerState()
            state.merge(update)
            merged.append({"customer_id": customer_id, "state": state.to_json()})
        connection.execute(self._state_upsert(), merged)

    def _state_upsert(self) -> Any:
        table = self._state
        if self.engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        statement = insert(table)
        return statement.on_conflict_do_update(
            index_elements=["customer_id"], set_={"state": statement.excluded.state}
        )

    # ------------------------------------------------------------------ state reads

    def state(self, customer_id: str) -> CustomerState:
        """The customer's online state (empty for a customer never seen)."""
        text = self._state_text(customer_id)
        return CustomerState() if text is None else CustomerState.from_json(text)

    def states(self, customer_ids: Iterable[str]) -> list[CustomerState]:
        return [self.state(customer_id) for customer_id in customer_ids]

    def _state_text(self, customer_id: str) -> str | None:
        if self._sqlite_path is not None:
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = sqlite3.connect(self._sqlite_path, timeout=30, check_same_thread=True)
                connection.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
                self._local.connection = connection
            row = connection.execute(
                f"SELECT state FROM {STATE_TABLE} WHERE customer_id = ?", (customer_id,)
            ).fetchone()
            return None if row is None else row[0]
        with self.engine.connect() as connection:
            return connection.execute(
                sa.select(self._state.c.state).where(self._state.c.customer_id == customer_id)
            ).scalar()

    def _upsert(self, name: str) -> Any:
        table = self._sql[name]
        key = _KEYS[name]
        dialect = self.engine.dialect.name
        if dialect in ("sqlite", "postgresql"):
            if dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            statement = insert(table)
            updates = {c.name: statement.excluded[c.name] for c in table.columns if c.name != key}
            return statement.on_conflict_do_update(index_elements=[key], set_=updates)
        raise NotImplementedError(
            f"event store: upsert is implemented for SQLite and PostgreSQL, not {dialect}"
        )

    def prune(self, now: datetime | None = None) -> dict[str, int]:
        """Delete contacts and orders older than the history window before ``now``.

        ``now`` defaults to the wall clock (UTC). It used to be the newest event in the store, so
        one contact posted with a far-future date emptied the store; /events now rejects rows
        beyond the clock-skew allowance, and the window is measured from the clock the rows are
        checked against. Customer states are not pruned (lifetime features need them).
        """
        deleted: dict[str, int] = {}
        cutoff = to_micros((now or datetime.now(UTC)) - timedelta(days=self.history_days))
        with self._write_lock, self.engine.begin() as connection:
            for name in ("contacts", "orders"):
                table = self._sql[name]
                time_column = table.c[self._tables_by_name[name].time_column]
                result = connection.execute(sa.delete(table).where(time_column < cutoff))
                deleted[name] = result.rowcount
        return deleted

    # ------------------------------------------------------------------ reads

    def _history_statements(self) -> dict[str, Any]:
        contacts, orders, customers = (
            self._sql["contacts"],
            self._sql["orders"],
            self._sql["customers"],
        )
        return {
            "contacts": sa.select(contacts)
            .where(
                contacts.c.customer_id == sa.bindparam("customer_id"),
                contacts.c.started_at >= sa.bindparam("since"),
                contacts.c.started_at < sa.bindparam("until"),
            )
            .order_by(contacts.c.started_at),
            "orders": sa.select(orders)
            .where(
                orders.c.customer_id == sa.bindparam("customer_id"),
                orders.c.ordered_at >= sa.bindparam("since"),
                orders.c.ordered_at < sa.bindparam("until"),
            )
            .order_by(orders.c.ordered_at),
            "customers": sa.select(customers).where(
                customers.c.customer_id == sa.bindparam("customer_id")
            ),
        }

    def history(self, customer_id: str, before: datetime) -> CustomerHistory:
        """Events of one customer strictly before ``before``, inside the history window."""
        return self.histories([customer_id], [before])[0]

    def histories(self, customer_ids: list[str], befores: list[datetime]) -> list[CustomerHistory]:
        """Histories for several (customer, scoring time) pairs over one connection."""
        results = []
        with self.engine.connect() as connection:
            for customer_id, before in zip(customer_ids, befores, strict=True):
                until = to_micros(before)
                params = {
                    "customer_id": customer_id,
                    "since": until - self.history_days * 86_400 * 1_000_000,
                    "until": until,
                }
                frames = {
                    name: _frame_from_rows(
                        connection.execute(statement, params).fetchall(), self._tables_by_name[name]
                    )
                    for name, statement in self._history_sql.items()
                }
                results.append(
                    CustomerHistory(frames["contacts"], frames["orders"], frames["customers"])
                )
        return results

    def record_served(self, alias: str, versions: dict[str, str]) -> None:
        """Remember the versions loaded for ``alias`` (replacing the previous record)."""
        table = self._served
        with self._write_lock, self.engine.begin() as connection:
            connection.execute(sa.delete(table).where(table.c.alias == alias))
            connection.execute(
                sa.insert(table),
                [{"alias": alias, "task": t, "version": v} for t, v in versions.items()],
            )

    def last_served(self, alias: str) -> dict[str, str]:
        table = self._served
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(table.c.task, table.c.version).where(table.c.alias == alias)
            )
            return {task: version for task, version in rows}

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            return {
                name: connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                for name, table in self._sql.items()
            }

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
        self.engine.dispose()


def _create_tables(metadata: sa.MetaData, engine: sa.Engine, attempts: int = 5) -> None:
    """``create_all``, safe when several workers open a new store at once.

    Each worker checks which tables exist, then creates the missing ones; two workers starting
    together both see "missing" and one fails with "table ... already exists". A retry sees the
    tables and creates nothing.
    """
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


# Page cache per SQLite connection (KiB). Every thread that scores or appends holds its own
# connection, and each cache fills up to its bound as the store grows: bounded small, the
# operating system's file cache (shared by all of them) does the caching.
SQLITE_CACHE_KIB = 512


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (scoring) run while a writer (/events) commits; synchronous stays at
    # SQLite's default FULL, so an acknowledged append survives a power cut.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


def _sqlite_file(engine: sa.Engine) -> str | None:
    """The database file of a file-backed SQLite engine (None for others and in-memory)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    return database if database and database != ":memory:" else None


def _state_inputs(
    tables: dict[str, pl.DataFrame],
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None]:
    empty = {"contacts": CONTACTS, "orders": ORDERS}
    contacts, orders = (
        tables[name] if tables.get(name) is not None else pl.DataFrame(schema=t.polars_schema)
        for name, t in empty.items()
    )
    return contacts, orders, tables.get("customers")


def _rows_for_storage(frame: pl.DataFrame, table: Table) -> list[dict[str, Any]]:
    expressions = []
    for column in table.columns:
        if column.name not in frame.columns:
            expressions.append(pl.lit(None, dtype=_storage_dtype(column.dtype)).alias(column.name))
        elif isinstance(column.dtype, pl.Datetime):
            expressions.append(
                pl.col(column.name).dt.convert_time_zone("UTC").dt.epoch("us").alias(column.name)
            )
        elif isinstance(column.dtype, pl.Enum):
            expressions.append(pl.col(column.name).cast(pl.String))
        else:
            expressions.append(pl.col(column.name))
    return frame.select(expressions).to_dicts()


def storage_schema(table: Table) -> dict[str, pl.DataType]:
    return {c.name: _storage_dtype(c.dtype) for c in table.columns}


def _frame_from_rows(rows: list[Any], table: Table) -> pl.DataFrame:
    frame = pl.DataFrame([tuple(row) for row in rows], schema=storage_schema(table), orient="row")
    return frame.with_columns(
        pl.col(c.name).cast(c.dtype) for c in table.columns if c.dtype != _storage_dtype(c.dtype)
    )
