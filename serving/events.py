"""POST /events: JSON rows -> the data contract (features.validate) -> the event store."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from features.schema import TABLES, Table
from features.validate import validate_frames
from serving.schemas import EventsRequest, EventsResponse, RejectedRow
from serving.store import EventStore


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


def ingest(store: EventStore, request: EventsRequest) -> EventsResponse:
    """Validate every posted table against the contract, store the accepted rows, report the rest.

    Each table is validated on its own: an event stream sends contacts, orders and customers at
    different times, so a reference to a row posted earlier (or later) is not a reason to reject.
    """
    accepted: dict[str, pl.DataFrame] = {}
    rejected: list[RejectedRow] = []
    coerced: dict[str, int] = {}
    for name in ("customers", "contacts", "orders"):
        rows = getattr(request, name)
        if not rows:
            continue
        # A key that is not a contract column rejects its row (a misspelt `wait_secs` must not
        # store the contact as if the value were missing); the others are validated together.
        known = {c.name for c in TABLES[name].columns}
        clean: list[int] = []
        for index, row in enumerate(rows):
            unknown = sorted(set(row) - known)
            if unknown:
                rejected.append(
                    RejectedRow(
                        table=name,
                        row=index + 1,
                        field=unknown[0],
                        rule="unknown_column",
                        message=f"not a column of {name}: {', '.join(unknown)}",
                    )
                )
            else:
                clean.append(index)
        if not clean:
            continue
        result = validate_frames(
            {name: raw_frame([rows[i] for i in clean], TABLES[name])}, {name: name}, partial=True
        )
        accepted[name] = result.tables[name]
        for record in result.reject_records(name):
            rejected.append(
                RejectedRow(
                    table=name,
                    row=clean[int(record["row"]) - 1] + 1,
                    field=record["column"],
                    rule=record["rule"],
                    message=record["message"],
                )
            )
        coerced_rows = int(result.coerced.filter(pl.col("table") == name)["rows"].sum())
        if coerced_rows:
            coerced[name] = coerced_rows
    counts = store.append(accepted)
    rejected.sort(key=lambda r: (r.table, r.row, r.field or ""))
    return EventsResponse(accepted=counts, rejected=rejected, coerced_to_other=coerced)
