"""POST /events: JSON rows -> the data contract (features.validate) -> the event store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from features.schema import AFTER_CONTACT_COLUMNS, TABLES, Table
from features.validate import validate_frames
from serving.schemas import MAX_ID_LENGTH, EventsRequest, EventsResponse, RejectedRow
from serving.store import EventStore, RowProblem


def _text(value: Any) -> str | None:
    """JSON values as the text a CSV would hold: the contract's parsers take it from there."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


def raw_frame(rows: list[dict[str, Any]], table: Table | None = None) -> pl.DataFrame:
    """Rows of loosely typed JSON as an all-text frame (missing keys -> null), in posted order.

    With ``table``, every contract column is present: a required field no row carries rejects
    each row on its own (rule ``not_null``), like one that some rows carry, instead of failing the
    whole request.
    """
    columns: dict[str, None] = dict.fromkeys(c.name for c in table.columns) if table else {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return pl.DataFrame(
        {name: [_text(row.get(name)) for row in rows] for name in columns},
        schema=dict.fromkeys(columns, pl.String),
    )


# Valid values for the handling columns of a contact posted at arrival, only while it is checked.
_ARRIVAL_PLACEHOLDERS = {
    "handled_by": "agent",
    "wait_seconds": 0,
    "handle_seconds": 0,
    "transfers": 0,
    "abandoned": False,
    "resolved": False,
    "callback_offered": False,
    "follow_up_sent": False,
}


def _is_arrival(row: dict[str, Any]) -> bool:
    """A contact posted as it arrives: none of the handling columns is given."""
    return all(row.get(c) is None for c in AFTER_CONTACT_COLUMNS)


def _parse_time(value: Any) -> datetime | None:
    """An ISO 8601 text as a datetime (None when it is not one: the contract's parser decides)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None


def _row_problem(
    name: str, index: int, row: dict[str, Any], latest: datetime
) -> RejectedRow | None:
    """Checks the contract's row rules leave to the API: unknown keys, times without an offset,
    times beyond the clock-skew allowance (one 9999-12-31 contact must not become "now")."""
    table = TABLES[name]
    unknown = sorted(set(row) - set(table.names))
    if unknown:
        # A misspelt `wait_secs` must not store the contact as if the value were missing.
        return RejectedRow(
            table=name,
            row=index + 1,
            field=unknown[0],
            rule="unknown_column",
            message=f"not a column of {name}: {', '.join(unknown)}",
        )
    for column in table.columns:
        value = row.get(column.name)
        if column.dtype == pl.String and isinstance(value, str) and len(value) > MAX_ID_LENGTH:
            return RejectedRow(
                table=name,
                row=index + 1,
                field=column.name,
                rule="max_length",
                message=f"{len(value):,} characters; at most {MAX_ID_LENGTH}",
            )
        if not isinstance(column.dtype, pl.Datetime):
            continue
        moment = _parse_time(value)
        if moment is None:
            continue
        if moment.tzinfo is None:
            return RejectedRow(
                table=name,
                row=index + 1,
                field=column.name,
                rule="timezone",
                message="a time without a UTC offset is ambiguous: add Z or +hh:mm",
            )
        if moment > latest:
            return RejectedRow(
                table=name,
                row=index + 1,
                field=column.name,
                rule="future",
                message=f"later than the server's clock plus the allowed skew ({latest:%Y-%m-%dT%H:%M:%SZ})",
            )
    return None


def ingest(
    store: EventStore,
    request: EventsRequest,
    *,
    max_clock_skew_seconds: float = 300.0,
    now: datetime | None = None,
) -> EventsResponse:
    """Validate every posted table against the contract, store the accepted rows, report the rest.

    Each table is validated on its own: an event stream sends contacts, orders and customers at
    different times, so a reference to a row posted earlier (or later) is not a reason to reject.
    Rows dated after ``now`` (the wall clock) plus ``max_clock_skew_seconds`` are rejected: an
    event cannot have happened yet, and a far-future row would skew every window read after it.
    """
    latest = (now or datetime.now(UTC)) + timedelta(seconds=max_clock_skew_seconds)
    accepted: dict[str, pl.DataFrame] = {}
    positions: dict[str, list[int]] = {}  # accepted frame row -> index in the posted list
    rejected: list[RejectedRow] = []
    coerced: dict[str, int] = {}
    for name in ("customers", "contacts", "orders"):
        rows = getattr(request, name)
        if not rows:
            continue
        clean: list[int] = []
        for index, row in enumerate(rows):
            problem = _row_problem(name, index, row, latest)
            if problem is None:
                clean.append(index)
            else:
                rejected.append(problem)
        if not clean:
            continue
        # Contacts posted at arrival carry none of the handling columns yet; they are checked
        # with the rest filled by placeholders, which are cleared again once they pass.
        groups = [clean]
        if name == "contacts":
            groups = [
                [i for i in clean if not _is_arrival(rows[i])],
                [i for i in clean if _is_arrival(rows[i])],
            ]
        frames = []
        for group, arrival in zip(groups, (False, True), strict=False):
            if not group:
                continue
            posted = [(rows[i] | _ARRIVAL_PLACEHOLDERS) if arrival else rows[i] for i in group]
            result = validate_frames(
                {name: raw_frame(posted, TABLES[name])}, {name: name}, partial=True
            )
            bad = set()
            for record in result.reject_records(name):
                bad.add(int(record["row"]) - 1)
                rejected.append(
                    RejectedRow(
                        table=name,
                        row=group[int(record["row"]) - 1] + 1,
                        field=record["column"],
                        rule=record["rule"],
                        message=record["message"],
                    )
                )
            frame = result.tables[name]
            if arrival:
                frame = frame.with_columns(
                    pl.lit(None, dtype=frame.schema[c]).alias(c) for c in AFTER_CONTACT_COLUMNS
                )
            frames.append(
                frame.with_columns(
                    pl.Series(
                        "_posted",
                        [group[j] for j in range(len(group)) if j not in bad],
                        dtype=pl.Int64,
                    )
                )
            )
            coerced_rows = int(result.coerced.filter(pl.col("table") == name)["rows"].sum())
            if coerced_rows:
                coerced[name] = coerced.get(name, 0) + coerced_rows
        if frames:
            both = pl.concat(frames, how="vertical").sort("_posted")
            positions[name] = both["_posted"].to_list()
            accepted[name] = both.drop("_posted")
    problems: list[RowProblem] = []
    counts = store.append(accepted, problems)
    for problem in problems:
        rejected.append(
            RejectedRow(
                table=problem.table,
                row=positions[problem.table][problem.position] + 1,
                field=problem.field,
                rule=problem.rule,
                message=problem.message,
            )
        )
    rejected.sort(key=lambda r: (r.table, r.row, r.field or ""))
    return EventsResponse(accepted=counts, rejected=rejected, coerced_to_other=coerced)
