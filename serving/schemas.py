"""Request and response models of the scoring API, derived from the data contract.

The contact, order and customer models are generated from the column declarations in
:mod:`features.schema` (type, nullability, range, enum levels, description, example), so the API
and the frame schemas cannot drift apart; ``tests/unit/test_serving_schemas.py`` checks it.
"""

from __future__ import annotations

from typing import Any, Literal

import polars as pl
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)

from features.schema import (
    AFTER_CONTACT_COLUMNS,
    CONTACTS,
    CUSTOMERS,
    DROPOFF_REASONS,
    ORDERS,
    Column,
    Table,
)

MOMENTS = ("arrival", "after_contact")
Moment = Literal["arrival", "after_contact"]
PRIORITY_TIERS = ("P1", "P2", "P3", "P4")
NEXT_ACTIONS = (
    "callback",
    "send_follow_up",
    "senior_agent",
    "specialist",
    "price_review",
    "offer_alternative",
    "resolve_issue",
    "close_sale",
    "nurture",
    "none",
)


def _not_text_or_bool(value: Any) -> Any:
    if isinstance(value, str | bool):
        raise ValueError("Input should be a JSON integer, not a string or boolean")
    return value


def _json_integers(*names: str) -> Any:
    """A before-validator for integer fields: 3 and 3.0 (JSON Schema's integer), never "3" or
    true. (A validator on the model, not on the type, keeps the bounds in the JSON schema.)"""
    return field_validator(*names, mode="before")(_not_text_or_bool)


# Limits (docs/operations.md#limits): a request past one gets 400 naming the field and the limit,
# before any work is done for it.
MAX_ID_LENGTH = 128  # contact_id, customer_id, order_id, agent_id
MAX_HISTORY_ROWS = 5_000  # contacts, and orders, in one request's history
MAX_BATCH_ITEMS = 10_000  # items in one /score_batch
MAX_EVENT_ROWS = 10_000  # rows per table in one /events

# An unknown field is an error, not silently ignored: a misspelt `wait_secs` must not score as missing.
_STRICT_FIELDS = ConfigDict(extra="forbid")


def python_type(column: Column) -> Any:
    """The pydantic type of a contract column (before nullability)."""
    dtype = column.dtype
    if isinstance(dtype, pl.Enum):
        return Literal[tuple(column.categories)]  # type: ignore[misc]
    if isinstance(dtype, pl.Datetime):
        # Naive times are ambiguous: the contract is UTC, so the API asks for an explicit offset.
        return AwareDatetime
    if dtype == pl.Boolean:
        return bool
    if dtype.is_integer():
        return int
    if dtype.is_float():
        return float
    if dtype == pl.String:
        return str
    raise TypeError(f"no API type for contract column {column.name} of type {dtype}")


def _field(column: Column, optional: bool) -> tuple[Any, Any]:
    typ = python_type(column)
    constraints: dict[str, Any] = {}
    if column.minimum is not None:
        constraints["ge"] = column.minimum
    if column.maximum is not None:
        constraints["le"] = column.maximum
    if column.dtype == pl.String:
        constraints["min_length"] = 1
        constraints["max_length"] = MAX_ID_LENGTH
    if typ in (float, bool):
        # JSON types as declared: "5" for a number or 1 for a boolean is an error, not a guess
        # (the OpenAPI document says number/boolean, and means it).
        constraints["strict"] = True
    examples = [column.example] if column.example is not None else None
    if optional:
        return (
            typ | None,
            Field(None, description=column.description, examples=examples, **constraints),
        )
    return (typ, Field(description=column.description, examples=examples, **constraints))


def model_from_table(
    table: Table, model_name: str, optional: tuple[str, ...] = (), doc: str | None = None
) -> type[BaseModel]:
    """A pydantic model with one field per contract column; ``optional`` columns may be omitted."""
    fields = {c.name: _field(c, optional=c.nullable or c.name in optional) for c in table.columns}
    integers = [c.name for c in table.columns if python_type(c) is int]
    validators = {"_json_integers": _json_integers(*integers)} if integers else {}
    model = create_model(
        model_name,
        __config__=_STRICT_FIELDS,
        __doc__=doc or table.description,
        __validators__=validators,
        **fields,
    )
    model.__module__ = __name__
    return model


# A contact being scored: at arrival only the arrival columns are known.
ContactIn = model_from_table(
    CONTACTS,
    "ContactIn",
    optional=AFTER_CONTACT_COLUMNS,
    doc=(
        "The contact to score. At `arrival` only contact_id, customer_id, started_at, channel, "
        "direction and intent are needed; at `after_contact` the handling columns are required too."
    ),
)
# A past contact in the customer's history: ended, so every non-nullable column is known.
HistoryContactIn = model_from_table(CONTACTS, "HistoryContactIn")
OrderIn = model_from_table(ORDERS, "OrderIn")
CustomerIn = model_from_table(CUSTOMERS, "CustomerIn")

# After-contact columns the contract requires (the nullable ones, e.g. agent_id, may stay null).
REQUIRED_AFTER_CONTACT = tuple(
    c.name for c in CONTACTS.columns if c.name in AFTER_CONTACT_COLUMNS and not c.nullable
)


class History(BaseModel):
    """The customer's past contacts and orders, when the caller keeps them itself."""

    model_config = _STRICT_FIELDS

    contacts: list[HistoryContactIn] = Field(  # type: ignore[valid-type]
        default_factory=list,
        max_length=MAX_HISTORY_ROWS,
        description="Past contacts of the customer, any order, each contact_id once; only those "
        "that started before the scored contact count (the window is the caller's: all given rows "
        f"are used). At most {MAX_HISTORY_ROWS:,}.",
    )
    orders: list[OrderIn] = Field(  # type: ignore[valid-type]
        default_factory=list,
        max_length=MAX_HISTORY_ROWS,
        description=f"Past orders of the customer, each order_id once. At most {MAX_HISTORY_ROWS:,}.",
    )
    customer: CustomerIn | None = Field(  # type: ignore[valid-type]
        None, description="The customer's profile row, if known."
    )

    @model_validator(mode="after")
    def _each_event_once(self) -> History:
        # A repeated row counted twice in every window (a repeated order moved a score from
        # 0.25 to 0.35). An exact copy is the same event: counted once. Two different rows
        # under one id: an error, not a guess at which copy is right.
        self.contacts = _once("contacts", self.contacts, "contact_id")
        self.orders = _once("orders", self.orders, "order_id")
        return self


def _once(where: str, rows: list[Any], key: str) -> list[Any]:
    """``rows`` without exact repeats; a different row under a repeated id is an error."""
    first: dict[str, int] = {}
    kept = []
    for index, row in enumerate(rows):
        value = _dig(row, key)
        if value not in first:
            first[value] = index
            kept.append(row)
        elif row != rows[first[value]]:
            raise ValueError(
                f"{where}[{index}].{key}: repeats {where}[{first[value]}] with other values "
                "(each id once)"
            )
    return kept


def _dig(row: Any, key: str) -> Any:
    for part in key.split("."):
        row = getattr(row, part)
    return row


def _check_moment(moment: str, contact: BaseModel | None, where: str) -> None:
    if moment != "after_contact" or contact is None:
        return
    missing = [name for name in REQUIRED_AFTER_CONTACT if getattr(contact, name) is None]
    if missing:
        raise ValueError(
            f"{', '.join(where + name for name in missing)}: required when moment is after_contact "
            "(the contact has ended, so its handling columns are known)"
        )


class ScoreRequest(BaseModel):
    """Score one contact at a scoring moment."""

    model_config = _STRICT_FIELDS

    contact: ContactIn = Field(  # type: ignore[valid-type]
        description="The contact to score; its started_at is the scoring time for history."
    )
    moment: Moment = Field(
        "after_contact",
        description="`arrival`: route the contact as it comes in (only arrival columns used). "
        "`after_contact`: the contact has ended; adds drop-off reasons and a next action.",
        examples=["after_contact"],
    )
    history: History | None = Field(
        None,
        description="The customer's history. Omitted: read from the service's event store "
        "(POST /events). Given (even empty): used instead of the store.",
    )
    explain: bool = Field(
        True, strict=True, description="Return the top drivers of the conversion score."
    )
    top_k: int = Field(5, ge=0, le=50, description="How many drivers to return.", examples=[5])

    _top_k_is_an_integer = _json_integers("top_k")

    @model_validator(mode="after")
    def _after_contact_needs_handling_columns(self) -> ScoreRequest:
        _check_moment(self.moment, self.contact, "contact.")
        return self


class BatchItem(BaseModel):
    """One contact of a batch, with its history if the caller keeps it."""

    model_config = _STRICT_FIELDS

    contact: ContactIn = Field(description="The contact to score.")  # type: ignore[valid-type]
    history: History | None = Field(
        None, description="The customer's history; omitted: read from the event store."
    )


class ScoreBatchRequest(BaseModel):
    """Score many contacts at one moment; the answer is a queue ordered by priority."""

    model_config = _STRICT_FIELDS

    items: list[BatchItem] = Field(
        min_length=1,
        max_length=MAX_BATCH_ITEMS,
        description=f"The contacts to score (1 to {MAX_BATCH_ITEMS:,}). An exact repeat of an "
        "item is answered once; two different items with one contact_id are an error.",
    )
    moment: Moment = Field("after_contact", description="Scoring moment for every item.")
    explain: bool = Field(False, strict=True, description="Return the top drivers for every item.")
    top_k: int = Field(3, ge=0, le=50, description="Drivers per item when explain is true.")

    _top_k_is_an_integer = _json_integers("top_k")

    @model_validator(mode="after")
    def _after_contact_needs_handling_columns(self) -> ScoreBatchRequest:
        for index, item in enumerate(self.items):
            _check_moment(self.moment, item.contact, f"items[{index}].contact.")
        # One answer per contact: an exact copy of an item is scored once, two different items
        # for one contact_id are an error.
        self.items = _once("items", self.items, "contact.contact_id")
        return self


# ----------------------------------------------------------------------------- responses


class Driver(BaseModel):
    """One feature's SHAP contribution to the conversion log-odds, in plain language."""

    feature: str = Field(description="Feature name.", examples=["wait_seconds"])
    value: float | str | bool | None = Field(description="The contact's value.", examples=[540.0])
    contribution: float = Field(
        description="SHAP contribution to the raw score (log-odds); negative lowers the odds.",
        examples=[-0.8],
    )
    percentile: float | None = Field(
        None,
        description="Share of reference (training) contacts with a lower value, 0-100; null "
        "for categories.",
        examples=[90.0],
    )
    text: str = Field(
        description="Plain-language reading.",
        examples=["waited 9 min, longer than 90% of contacts: -0.80"],
    )


class Priority(BaseModel):
    """Routing priority: a tier for rules, a rank score for ordering within and across tiers."""

    tier: Literal["P1", "P2", "P3", "P4"] = Field(
        description="P1 (act first) .. P4; see docs/api.md#priority.", examples=["P2"]
    )
    rank_score: float = Field(
        description="Higher first: conversion probability, in [0, 1].", examples=[0.31]
    )


class ReasonProbability(BaseModel):
    reason: str = Field(description="Drop-off reason.", examples=list(DROPOFF_REASONS[:1]))
    probability: float = Field(description="Probability given no order follows.", examples=[0.4])


class NextAction(BaseModel):
    """What to do next with this customer, from documented rules (docs/api.md#next-action)."""

    action: str = Field(description="Action code.", examples=["callback"])
    rule: str = Field(description="Id of the rule that fired.", examples=["long_wait_callback"])
    reason: str = Field(
        description="Why, in plain language.",
        examples=["waited 9 min and did not order: call back"],
    )


class ModelRef(BaseModel):
    name: str = Field(
        description="Registered model name.", examples=["cto-conversion-after-contact"]
    )
    version: str = Field(description="Registered model version.", examples=["3"])
    alias: str = Field(description="Registry alias it was loaded by.", examples=["champion"])
    data_mismatch: str | None = Field(
        None,
        description="Null, unless the model learnt from other data than the contract this "
        "service serves and CTO_ALLOW_OTHER_DATA let it serve anyway: then how the data differ. "
        "Treat such answers with care.",
        examples=[None],
    )


class ScoreResponse(BaseModel):
    """The answer for one contact."""

    contact_id: str = Field(description="The scored contact.", examples=["c-000001"])
    customer_id: str = Field(description="Its customer.", examples=["u-000042"])
    moment: Moment = Field(description="Scoring moment used.", examples=["after_contact"])
    conversion_probability: float = Field(
        description="Calibrated probability that an order follows within the horizon.",
        examples=[0.31],
    )
    raw_score: float = Field(
        description="The model's raw score (log-odds) before calibration; equals base_value plus "
        "the sum of all contributions.",
        examples=[-0.8],
    )
    base_value: float | None = Field(
        None,
        description="SHAP expected value (log-odds); null when explain is false.",
        examples=[-1.9],
    )
    priority: Priority
    dropoff_reasons: list[ReasonProbability] | None = Field(
        None, description="After contact: drop-off reason distribution, most likely first."
    )
    next_action: NextAction | None = Field(None, description="After contact: recommended action.")
    expected_contacts_to_order: float | None = Field(
        None,
        description="Expected further contacts (this one included) until an order, if one follows.",
        examples=[2.4],
    )
    drivers: list[Driver] | None = Field(
        None, description="Top drivers by absolute contribution; null when explain is false."
    )
    contributions_sum: float | None = Field(
        None, description="Sum of all features' contributions (not only the top_k shown)."
    )
    history_source: Literal["request", "event_store"] = Field(
        description="Where the customer's history came from.", examples=["event_store"]
    )
    history_contacts: int = Field(
        description="Past contacts used (inside the history window).", examples=[3]
    )
    models: list[ModelRef] = Field(description="The models that answered.")
    queue_position: int | None = Field(
        None, description="Batch only: 1-based position in the priority-ordered queue."
    )


class ScoreBatchResponse(BaseModel):
    items: list[ScoreResponse] = Field(description="Answers, highest priority first.")
    count: int = Field(description="Number of contacts scored.", examples=[2])


# ----------------------------------------------------------------------------- events


def _table_doc(table: Table) -> str:
    cols = ", ".join(f"{c.name}{'?' if c.nullable else ''}" for c in table.columns)
    return f"{table.description} Columns (contract, ? = nullable): {cols}."


def _example_row(table: Table) -> dict[str, Any]:
    return {c.name: c.example for c in table.columns}


class EventsRequest(BaseModel):
    """Rows to append to the event store, checked row by row against the data contract."""

    model_config = _STRICT_FIELDS

    contacts: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=MAX_EVENT_ROWS,
        description=_table_doc(CONTACTS) + " A contact may be posted at arrival (only "
        "contact_id, customer_id, started_at, channel, direction, intent) and again when it "
        "ended; a version replaces the stored one unless that one is newer (ended beats "
        "arrival, a known dropoff_reason or agent_id beats none), and never moves it to "
        "another customer. Each contact_id once per request.",
        examples=[[_example_row(CONTACTS)]],
    )
    orders: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=MAX_EVENT_ROWS,
        description=_table_doc(ORDERS),
        examples=[[_example_row(ORDERS)]],
    )
    customers: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=MAX_EVENT_ROWS,
        description=_table_doc(CUSTOMERS),
        examples=[[_example_row(CUSTOMERS)]],
    )

    @model_validator(mode="after")
    def _not_empty(self) -> EventsRequest:
        if not (self.contacts or self.orders or self.customers):
            raise ValueError("contacts, orders, customers: at least one row is needed")
        return self


class RejectedRow(BaseModel):
    table: str = Field(description="contacts, orders or customers.", examples=["contacts"])
    row: int = Field(description="1-based index of the row in the posted list.", examples=[2])
    field: str | None = Field(description="The offending column.", examples=["wait_seconds"])
    rule: str = Field(description="The contract rule it broke.", examples=["minimum"])
    message: str = Field(description="Plain-language reason.", examples=["-5.0 is below 0"])


class EventsResponse(BaseModel):
    accepted: dict[str, int] = Field(
        description="Rows stored per table (committed before this answer).",
        examples=[{"contacts": 2, "orders": 1, "customers": 0}],
    )
    rejected: list[RejectedRow] = Field(description="Rows not stored, with their reasons.")
    coerced_to_other: dict[str, int] = Field(
        default_factory=dict,
        description="Unknown enum values stored as `other`, per table.",
    )
