"""The API models stay in step with the data contract (features.schema) and name bad fields."""

from __future__ import annotations

import types
import typing
from datetime import datetime

import polars as pl
import pytest
from pydantic import ValidationError

from features.schema import AFTER_CONTACT_COLUMNS, CONTACTS, CUSTOMERS, ORDERS
from serving.schemas import (
    MAX_EVENT_ROWS,
    MAX_HISTORY_ROWS,
    MAX_ID_LENGTH,
    ContactIn,
    CustomerIn,
    EventsRequest,
    HistoryContactIn,
    OrderIn,
    ScoreBatchRequest,
    ScoreRequest,
)

ARRIVAL_CONTACT = {
    "contact_id": "c-1",
    "customer_id": "u-1",
    "started_at": "2026-03-02T09:15:00Z",
    "channel": "phone",
    "direction": "inbound",
    "intent": "pricing",
}
ENDED = {
    "handled_by": "agent",
    "agent_id": "a-1",
    "wait_seconds": 95.0,
    "handle_seconds": 300.0,
    "transfers": 0,
    "abandoned": False,
    "resolved": True,
    "callback_offered": False,
    "follow_up_sent": True,
}


def _unwrap(annotation):
    """(inner type, allows None) of a field annotation."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return annotation, False


def _compatible(dtype: pl.DataType, annotation) -> bool:
    if isinstance(dtype, pl.Enum):
        return typing.get_origin(annotation) is typing.Literal and set(
            typing.get_args(annotation)
        ) == set(dtype.categories.to_list())
    if isinstance(dtype, pl.Datetime):
        return (
            isinstance(annotation, type)
            and issubclass(annotation, datetime)
            or "datetime" in str(annotation).lower()
        )
    if dtype == pl.Boolean:
        return annotation is bool
    if dtype.is_integer():
        return annotation is int
    if dtype.is_float():
        return annotation is float
    return annotation is str


@pytest.mark.parametrize(
    ("table", "model", "optional"),
    [
        (CONTACTS, ContactIn, set(AFTER_CONTACT_COLUMNS)),
        (CONTACTS, HistoryContactIn, set()),
        (ORDERS, OrderIn, set()),
        (CUSTOMERS, CustomerIn, set()),
    ],
)
def test_every_contract_column_is_in_the_api_model_with_a_compatible_type(table, model, optional):
    fields = model.model_fields
    assert set(fields) == set(table.names)
    for column in table.columns:
        field = fields[column.name]
        inner, allows_none = _unwrap(field.annotation)
        assert _compatible(column.dtype, inner), (column.name, column.dtype, field.annotation)
        assert allows_none == (column.nullable or column.name in optional), column.name
        assert field.description == column.description
        bounds = {type(m).__name__: m for m in field.metadata}
        if column.minimum is not None:
            assert bounds["Ge"].ge == column.minimum, column.name
        if column.maximum is not None:
            assert bounds["Le"].le == column.maximum, column.name


def test_enum_values_are_the_contract_levels():
    schema = ContactIn.model_json_schema()
    for column in CONTACTS.columns:
        if column.categories is None:
            continue
        prop = schema["properties"][column.name]
        enum = prop.get("enum") or next(p["enum"] for p in prop["anyOf"] if "enum" in p)
        assert tuple(enum) == column.categories


def test_arrival_request_needs_only_arrival_columns():
    request = ScoreRequest.model_validate({"contact": ARRIVAL_CONTACT, "moment": "arrival"})
    assert request.contact.wait_seconds is None
    assert request.explain is True


def _error_locations(payload) -> list[tuple]:
    with pytest.raises(ValidationError) as caught:
        ScoreRequest.model_validate(payload)
    return [tuple(e["loc"]) for e in caught.value.errors()], str(caught.value)


def test_after_contact_request_names_the_missing_handling_columns():
    _, message = _error_locations({"contact": ARRIVAL_CONTACT, "moment": "after_contact"})
    assert "contact.wait_seconds" in message
    assert "contact.resolved" in message
    assert "agent_id" not in message  # nullable in the contract: may stay null


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"channel": "fax"}, ("contact", "channel")),
        ({"wait_seconds": -1.0}, ("contact", "wait_seconds")),
        ({"transfers": 51}, ("contact", "transfers")),
        ({"started_at": "2026-03-02T09:15:00"}, ("contact", "started_at")),  # no time zone
        ({"unknown_column": 1}, ("contact", "unknown_column")),
    ],
)
def test_bad_values_name_the_field(change, location):
    contact = ARRIVAL_CONTACT | ENDED | change
    locations, _ = _error_locations({"contact": contact})
    assert location in locations


def test_missing_field_is_named():
    contact = {k: v for k, v in (ARRIVAL_CONTACT | ENDED).items() if k != "intent"}
    locations, _ = _error_locations({"contact": contact})
    assert ("contact", "intent") in locations


def test_batch_names_the_item_that_lacks_handling_columns():
    with pytest.raises(ValidationError) as caught:
        ScoreBatchRequest.model_validate(
            {
                "moment": "after_contact",
                "items": [{"contact": ARRIVAL_CONTACT | ENDED}, {"contact": ARRIVAL_CONTACT}],
            }
        )
    assert "items[1].contact.wait_seconds" in str(caught.value)
    assert "items[0]" not in str(caught.value)


def test_events_request_examples_follow_the_contract():
    from features.validate import validate_frames
    from serving.events import raw_frame

    example = EventsRequest.model_fields["contacts"].examples[0]
    result = validate_frames({"contacts": raw_frame(example)}, partial=True)
    assert result.tables["contacts"].height == 1
    assert result.ok
    with pytest.raises(ValidationError):
        EventsRequest.model_validate({})


@pytest.mark.parametrize("value", ["3", True, 3.5])
def test_integers_are_json_integers_not_text_or_booleans(value):
    """The OpenAPI document says integer: "3" and true are errors (3.0 is JSON Schema's 3)."""
    contact = ARRIVAL_CONTACT | {"transfers": value}
    with pytest.raises(ValidationError):
        ScoreRequest.model_validate({"contact": contact, "moment": "arrival"})
    with pytest.raises(ValidationError):
        ScoreRequest.model_validate(
            {"contact": ARRIVAL_CONTACT, "moment": "arrival", "top_k": value}
        )
    whole = ScoreRequest.model_validate(
        {"contact": ARRIVAL_CONTACT | {"transfers": 2.0}, "moment": "arrival", "top_k": 3.0}
    )
    assert whole.contact.transfers == 2 and whole.top_k == 3
    bounds = ContactIn.model_json_schema()["properties"]["transfers"]["anyOf"][0]
    assert (bounds["minimum"], bounds["maximum"]) == (0, 50)  # JSON Schema words, not ge/le


@pytest.mark.parametrize("value", ["true", 1, "5.0"])
def test_booleans_and_numbers_are_not_guessed_from_text(value):
    with pytest.raises(ValidationError):
        ScoreRequest.model_validate(
            {"contact": ARRIVAL_CONTACT, "moment": "arrival", "explain": value}
        )
    with pytest.raises(ValidationError):
        ScoreRequest.model_validate(
            {"contact": ARRIVAL_CONTACT | {"wait_seconds": str(value)}, "moment": "arrival"}
        )


def _history_contact(contact_id: str) -> dict:
    return ARRIVAL_CONTACT | {
        "contact_id": contact_id,
        "handled_by": "agent",
        "agent_id": "a-1",
        "wait_seconds": 5.0,
        "handle_seconds": 60.0,
        "transfers": 0,
        "abandoned": False,
        "resolved": True,
        "callback_offered": False,
        "follow_up_sent": False,
    }


def test_limits_name_the_field_and_the_limit():
    long_id = ARRIVAL_CONTACT | {"contact_id": "x" * (MAX_ID_LENGTH + 1)}
    with pytest.raises(ValidationError, match="contact.contact_id") as caught:
        ScoreRequest.model_validate({"contact": long_id, "moment": "arrival"})
    assert f"at most {MAX_ID_LENGTH}" in str(caught.value)
    history = {"contacts": [_history_contact(f"h{i}") for i in range(MAX_HISTORY_ROWS + 1)]}
    with pytest.raises(ValidationError, match="history.contacts") as caught:
        ScoreRequest.model_validate(
            {"contact": ARRIVAL_CONTACT, "moment": "arrival", "history": history}
        )
    assert f"at most {MAX_HISTORY_ROWS}" in str(caught.value)
    with pytest.raises(ValidationError, match="contacts"):
        EventsRequest.model_validate({"contacts": [{}] * (MAX_EVENT_ROWS + 1)})


def test_repeated_history_rows_and_batch_items_count_once_or_are_errors():
    first, second = _history_contact("h1"), _history_contact("h2")
    twice = {"contacts": [first, second, first]}
    request = ScoreRequest.model_validate(
        {"contact": ARRIVAL_CONTACT, "moment": "arrival", "history": twice}
    )
    assert [c.contact_id for c in request.history.contacts] == ["h1", "h2"]  # counted once
    changed = {"contacts": [first, second, first | {"transfers": 3}]}
    with pytest.raises(ValidationError, match=r"contacts\[2\].contact_id: repeats contacts\[0\]"):
        ScoreRequest.model_validate(
            {"contact": ARRIVAL_CONTACT, "moment": "arrival", "history": changed}
        )
    order = {
        "order_id": "o1",
        "customer_id": "u-1",
        "ordered_at": "2026-03-01T00:00:00Z",
        "amount": 5,
    }
    with pytest.raises(ValidationError, match=r"orders\[1\].order_id"):
        ScoreRequest.model_validate(
            {
                "contact": ARRIVAL_CONTACT,
                "moment": "arrival",
                "history": {"orders": [order, order | {"amount": 6}]},
            }
        )
    item = {"contact": ARRIVAL_CONTACT}
    batch = ScoreBatchRequest.model_validate({"moment": "arrival", "items": [item, item]})
    assert len(batch.items) == 1  # one answer per contact
    other = {"contact": ARRIVAL_CONTACT | {"intent": "delivery"}}
    with pytest.raises(ValidationError, match=r"items\[1\].contact.contact_id: repeats items\[0\]"):
        ScoreBatchRequest.model_validate({"moment": "arrival", "items": [item, other]})
