"""The data contract: every input table, column, type and rule, declared once as data.

Everything else derives from these declarations: loading and row-level validation
(:mod:`features.validate`), the pandera frame schemas, docs/data-contract.md, and the
pydantic request models of the scoring API (a test keeps them in step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

CHANNELS = ("phone", "email", "chat", "web_form", "social", "sms", "other")
DIRECTIONS = ("inbound", "outbound")
INTENTS = (
    "product_inquiry",
    "pricing",
    "availability",
    "delivery",
    "order_status",
    "complaint",
    "returns",
    "technical",
    "other",
)
HANDLERS = ("agent", "bot")
DROPOFF_REASONS = (
    "long_wait",
    "slow_response",
    "repeat_explanation",
    "high_effort",
    "price",
    "out_of_stock",
    "no_follow_up",
    "unresolved",
    "other",
)
SEGMENTS = ("consumer", "small_business", "enterprise", "other")

# Written channels: wait_seconds is the time to first reply, not a queue wait.
WRITTEN_CHANNELS = ("email", "web_form", "social", "sms")

Channel = pl.Enum(CHANNELS)
Direction = pl.Enum(DIRECTIONS)
Intent = pl.Enum(INTENTS)
Handler = pl.Enum(HANDLERS)
DropoffReason = pl.Enum(DROPOFF_REASONS)
Segment = pl.Enum(SEGMENTS)
UTC_TIME = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    description: str
    example: object
    nullable: bool = False
    unique: bool = False
    minimum: float | None = None
    maximum: float | None = None
    # Enum columns: an unknown value becomes `other` (counted), unless there is no `other`.
    references: str | None = None  # "table.column" this column must exist in

    @property
    def categories(self) -> tuple[str, ...] | None:
        return tuple(self.dtype.categories.to_list()) if isinstance(self.dtype, pl.Enum) else None


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    time_column: str | None = None
    required: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return {c.name: c.dtype for c in self.columns}


CONTACTS = Table(
    name="contacts",
    description="One row per customer contact (call, email, chat, ...), inbound or outbound.",
    time_column="started_at",
    columns=(
        Column("contact_id", pl.String, "Unique id of the contact.", "c-000001", unique=True),
        Column(
            "customer_id",
            pl.String,
            "The customer who made or received the contact.",
            "u-000042",
            references="customers.customer_id",
        ),
        Column("started_at", UTC_TIME, "When the contact started (UTC).", "2026-03-02T09:15:00Z"),
        Column("channel", Channel, "Contact channel.", "phone"),
        Column("direction", Direction, "Who started it.", "inbound"),
        Column("intent", Intent, "What the customer wanted.", "pricing"),
        Column("handled_by", Handler, "Human agent or bot.", "agent"),
        Column(
            "agent_id", pl.String, "Agent who handled it (null for bots).", "a-017", nullable=True
        ),
        Column(
            "wait_seconds",
            pl.Float64,
            "Queue wait (phone, chat) or time to first reply (written channels), seconds.",
            95.0,
            minimum=0,
            maximum=30 * 86400,
        ),
        Column(
            "handle_seconds",
            pl.Float64,
            "Talk / handling time, seconds.",
            310.0,
            minimum=0,
            maximum=86400,
        ),
        Column(
            "transfers", pl.Int32, "Times the contact was transferred.", 0, minimum=0, maximum=50
        ),
        Column("abandoned", pl.Boolean, "Customer left before being served.", False),
        Column("resolved", pl.Boolean, "The request was resolved in this contact.", True),
        Column("callback_offered", pl.Boolean, "A callback was offered while waiting.", False),
        Column(
            "follow_up_sent", pl.Boolean, "A follow-up (quote, summary, reminder) was sent.", True
        ),
        Column(
            "dropoff_reason",
            DropoffReason,
            "Why the customer did not order, from wrap-up codes or surveys: sparse.",
            None,
            nullable=True,
        ),
    ),
)

ORDERS = Table(
    name="orders",
    description="One row per order.",
    time_column="ordered_at",
    columns=(
        Column("order_id", pl.String, "Unique id of the order.", "o-000007", unique=True),
        Column(
            "customer_id",
            pl.String,
            "The ordering customer.",
            "u-000042",
            references="customers.customer_id",
        ),
        Column("ordered_at", UTC_TIME, "When the order was placed (UTC).", "2026-03-03T14:02:00Z"),
        Column(
            "amount",
            pl.Float64,
            "Order value in the shop's currency.",
            129.9,
            minimum=0,
            maximum=1e9,
        ),
        Column(
            "contact_id",
            pl.String,
            "The contact the order is attributed to, if known.",
            "c-000001",
            nullable=True,
            references="contacts.contact_id",
        ),
    ),
)

CUSTOMERS = Table(
    name="customers",
    description="Optional: one row per customer. Without it, customers are derived from contacts and orders.",
    required=False,
    columns=(
        Column("customer_id", pl.String, "Unique id of the customer.", "u-000042", unique=True),
        Column("segment", Segment, "Customer segment.", "consumer", nullable=True),
        Column("region", pl.String, "Region code.", "north", nullable=True),
        Column(
            "first_seen_at",
            UTC_TIME,
            "First time the customer was seen (UTC).",
            "2025-11-20T10:00:00Z",
            nullable=True,
        ),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (CONTACTS, ORDERS, CUSTOMERS)}

# Columns known only once a contact has ended: never an arrival-time feature.
AFTER_CONTACT_COLUMNS = (
    "wait_seconds",
    "handle_seconds",
    "transfers",
    "abandoned",
    "resolved",
    "callback_offered",
    "follow_up_sent",
    "agent_id",
    "handled_by",
    "dropoff_reason",
)
# Columns known when a contact arrives.
ARRIVAL_COLUMNS = ("contact_id", "customer_id", "started_at", "channel", "direction", "intent")
