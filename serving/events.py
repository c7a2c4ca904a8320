"""POST /events: JSON rows -> the data contract (features.validate) -> the event store."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

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


def raw_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows of loosely typed JSON as an all-text frame (missing keys -> null), in posted order."""
    columns: dict[str, None] = {}
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
        result = validate_frames({name: raw_frame(rows)}, {name: name}, partial=True)
        accepted[name] = result.tables[name]
        for record in result.reject_records(name):
            rejected.append(
                RejectedRow(
                    table=name,
                    row=int(record["row"]),
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
