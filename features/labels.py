"""Outcome labels per contact and customer journeys (definitions and worked examples: docs/labels.md).

Every step is per customer: asof joins ``by="customer_id"`` on tables sorted by customer and time,
and comparisons of a contact with its neighbours inside its customer's block of rows. So the work
partitions by customer: run it on each customer-hash partition with the same explicit
``observed_until`` and the result is the same as on the whole table (a test checks this).

Boundaries, chosen once and used everywhere (H = ``horizon_days``, G = ``journey_gap_days``):

- A contact started at ``s`` is *converted* if the customer orders at ``t`` with ``s <= t <= s + H``.
  An order stamped at the very moment the contact started counts for it: features only ever see
  orders strictly before ``s`` (``closed="left"`` windows), so an order is never both history and
  outcome of the same contact.
- An order *ends a journey* if it comes within H days after the latest contact at or before it; the
  journey it ends is that contact's journey. Equivalently: a converted contact whose order comes
  before the customer's next contact is the last contact of a journey that ended in that order.
- A new journey starts at the customer's first contact, when the gap since the previous contact is
  at least G days, or at the first contact after an order that ended the previous journey.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from features.errors import CTOError
from features.schema import DropoffReason

# Polars 2's default streaming engine runs these sorted asof joins and row-neighbour expressions
# about 10x slower than the in-memory engine (1M contacts: 1.4 s vs 0.13 s per asof join);
# out-of-core work partitions by customer instead (see the module docstring).
_ENGINE = "in-memory"

CONTACT_KEYS = ("contact_id", "customer_id", "started_at")
ORDER_KEYS = ("customer_id", "ordered_at")

# Columns label_contacts adds, in output order (docs/labels.md describes each).
LABEL_COLUMNS = (
    "converted",
    "order_at",
    "label_known_at",
    "orders_attributed",
    "journey_id",
    "journey_number",
    "journey_contact_number",
    "journey_contacts",
    "journey_converted",
    "journey_order_at",
    "contacts_to_order",
    "time_to_order_hours",
    "journey_open",
    "dropoff_label",
)


def resolve_days(horizon_days: int | None, journey_gap_days: int | None) -> tuple[int, int]:
    """Explicit arguments win; otherwise the configured defaults (CTO_HORIZON_DAYS, CTO_JOURNEY_GAP_DAYS)."""
    if horizon_days is None or journey_gap_days is None:
        from features.settings import get_settings

        settings = get_settings()
        horizon_days = settings.horizon_days if horizon_days is None else horizon_days
        journey_gap_days = (
            settings.journey_gap_days if journey_gap_days is None else journey_gap_days
        )
    for name, value in (("horizon_days", horizon_days), ("journey_gap_days", journey_gap_days)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CTOError(f"{name} must be a whole number of days >= 1, got {value!r}")
    return horizon_days, journey_gap_days


def _require_columns(frame: pl.LazyFrame, table: str, names: tuple[str, ...]) -> pl.Schema:
    schema = frame.collect_schema()
    missing = [name for name in names if name not in schema]
    if missing:
        raise CTOError(f"{table}: missing column(s) {', '.join(missing)} needed for labels")
    if not isinstance(schema[names[-1]], pl.Datetime):
        raise CTOError(f"{table}.{names[-1]}: expected a datetime column, got {schema[names[-1]]}")
    return schema


def _observed_until(contacts: pl.LazyFrame, orders: pl.LazyFrame) -> datetime | None:
    """The end of the data: the latest contact or order (the moment journeys are judged open at)."""
    latest = pl.concat(
        [
            contacts.select(pl.col("started_at").max().alias("at")),
            orders.select(
                pl.col("ordered_at").max().cast(contacts.collect_schema()["started_at"]).alias("at")
            ),
        ]
    )
    return latest.select(pl.col("at").max()).collect().item()


def _with_first_order_from(contacts: pl.LazyFrame, first_orders: pl.LazyFrame) -> pl.LazyFrame:
    """Each contact joined to its customer's first order at or after its start (exact matches
    count: see the module docstring): a forward as-of join on ``_next_order_at``. Each customer's
    rows must be in time order on both sides (sorting by time alone is enough)."""
    return contacts.join_asof(
        first_orders,
        left_on="started_at",
        right_on="_next_order_at",
        by="customer_id",
        strategy="forward",
        check_sortedness=False,
    )


def _converted(horizon: pl.Expr) -> pl.Expr:
    """An order within the horizon of the contact's start (no order at all: not converted)."""
    return (
        (pl.col("_next_order_at") <= pl.col("started_at") + horizon)
        .fill_null(False)
        .alias("converted")
    )


def label_contacts(
    contacts: pl.DataFrame | pl.LazyFrame,
    orders: pl.DataFrame | pl.LazyFrame,
    horizon_days: int | None = None,
    journey_gap_days: int | None = None,
    *,
    observed_until: datetime | None = None,
) -> pl.DataFrame:
    """Label every contact with its outcome and place it in its customer's journey.

    Returns the contacts (all input columns) sorted by ``customer_id, started_at, contact_id``, plus
    the columns in :data:`LABEL_COLUMNS`. ``horizon_days``/``journey_gap_days`` default to the
    settings (7 and 14). ``observed_until`` is the end of the data, used only for ``journey_open``;
    it defaults to the latest contact or order and must be passed explicitly when the data is
    processed in customer partitions.
    """
    horizon_days, journey_gap_days = resolve_days(horizon_days, journey_gap_days)
    contacts_lf = contacts.lazy()
    orders_lf = orders.lazy()
    contact_schema = _require_columns(contacts_lf, "contacts", CONTACT_KEYS)
    _require_columns(orders_lf, "orders", ORDER_KEYS)
    clashes = sorted(set(LABEL_COLUMNS) & set(contact_schema.names()))
    if clashes:
        raise CTOError(
            f"contacts already has label column(s) {', '.join(clashes)}: label raw contacts"
        )
    if observed_until is None:
        observed_until = _observed_until(contacts_lf, orders_lf)
    time_dtype = contact_schema["started_at"]

    horizon = pl.duration(days=horizon_days)
    gap = pl.duration(days=journey_gap_days)
    # A journey without an order is settled once both the gap (no further contact can join it) and
    # the horizon (no order can still end it) have passed after its last contact.
    settle = pl.duration(days=max(horizon_days, journey_gap_days))
    # Orders are stamped in microseconds: "at or before s + H" becomes "strictly before s + H + 1us"
    # so that one strict asof bound can also express "strictly before the next contact".
    one_tick = pl.duration(microseconds=1)

    ranked_orders = (
        orders_lf.select(
            pl.col("customer_id"),
            pl.col("ordered_at").cast(time_dtype).alias("_order_at"),
        )
        .drop_nulls()
        .sort("customer_id", "_order_at")
        # Running order number: both asof matches of a contact fall within its customer's block,
        # so (last - first + 1) counts that customer's orders between them.
        .with_row_index("_order_rank")
    )
    first_order_from = ranked_orders.select(
        "customer_id",
        pl.col("_order_at").alias("_next_order_at"),
        pl.col("_order_rank").cast(pl.Int64).alias("_first_rank"),
    )
    last_order_before = ranked_orders.select(
        "customer_id",
        pl.col("_order_at").alias("_attribution_bound"),
        pl.col("_order_rank").cast(pl.Int64).alias("_last_rank"),
    )

    # The contacts are sorted by customer, so each customer is one contiguous block of rows.
    # Comparing a row with its neighbour gives the same answer as `.over("customer_id")` without
    # hashing every customer id again: "previous/next contact of the same customer".
    same_customer_as_previous = (pl.col("customer_id") == pl.col("customer_id").shift(1)).fill_null(
        False
    )
    same_customer_as_next = (pl.col("customer_id") == pl.col("customer_id").shift(-1)).fill_null(
        False
    )
    row = pl.col("_row")

    def at_journey_end(expr: pl.Expr) -> pl.Expr:
        """The value of ``expr`` on the journey's last contact, for every contact of the journey."""
        return expr.gather(pl.col("_journey_end_row"))

    labeled = (
        _with_first_order_from(
            contacts_lf.sort("customer_id", "started_at", "contact_id").with_row_index("_row"),
            first_order_from,
        )
        .with_columns(
            pl.when(same_customer_as_next)
            .then(pl.col("started_at").shift(-1))
            .alias("_next_contact_at"),
            pl.when(same_customer_as_previous)
            .then(pl.col("started_at").shift(1))
            .alias("_previous_contact_at"),
            _converted(horizon),
        )
        .with_columns(
            # Orders attributed to this contact: those it is the latest contact before, within H.
            pl.min_horizontal(
                pl.col("started_at") + horizon + one_tick, pl.col("_next_contact_at")
            ).alias("_attribution_bound"),
            pl.when(pl.col("converted")).then(pl.col("_next_order_at")).alias("order_at"),
        )
        .join_asof(
            last_order_before,
            on="_attribution_bound",
            by="customer_id",
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .with_columns(
            pl.max_horizontal(pl.col("_last_rank") - pl.col("_first_rank") + 1, pl.lit(0))
            .fill_null(0)
            .cast(pl.UInt32)
            .alias("orders_attributed"),
            (
                pl.col("converted")
                & (pl.col("order_at") < pl.col("_next_contact_at")).fill_null(True)
            ).alias("_ends_journey"),
        )
        .with_columns(
            (
                ~same_customer_as_previous
                | (pl.col("started_at") - pl.col("_previous_contact_at") >= gap)
                | pl.col("_ends_journey").shift(1).fill_null(False)
            ).alias("_starts_journey")
        )
        .with_columns(
            # A global running journey count; per customer it is renumbered from 1 below.
            pl.col("_starts_journey").cast(pl.UInt32).cum_sum().alias("_journey"),
            pl.when(pl.col("_starts_journey")).then(row).forward_fill().alias("_journey_start_row"),
            pl.when(pl.col("_starts_journey").shift(-1).fill_null(True))
            .then(row)
            .backward_fill()
            .alias("_journey_end_row"),
        )
        .with_columns(
            (
                pl.col("_journey")
                - pl.when(~same_customer_as_previous).then(pl.col("_journey")).forward_fill()
                + 1
            ).alias("journey_number"),
            (row - pl.col("_journey_start_row") + 1)
            .cast(pl.UInt32)
            .alias("journey_contact_number"),
            (pl.col("_journey_end_row") - pl.col("_journey_start_row") + 1)
            .cast(pl.UInt32)
            .alias("journey_contacts"),
            # Only a journey's last contact can end it, so at most one order per journey.
            at_journey_end(pl.when(pl.col("_ends_journey")).then(pl.col("order_at"))).alias(
                "journey_order_at"
            ),
            at_journey_end(pl.col("started_at")).alias("_journey_last_contact_at"),
            at_journey_end(pl.col("_next_contact_at")).alias("_after_journey_contact_at"),
        )
        .with_columns(
            pl.col("journey_order_at").is_not_null().alias("journey_converted"),
        )
        .with_columns(
            pl.format("{}:{}", pl.col("customer_id"), pl.col("journey_number")).alias("journey_id"),
            (pl.col("started_at") + horizon).alias("label_known_at"),
            pl.when(pl.col("journey_converted"))
            .then(pl.col("journey_contacts") - pl.col("journey_contact_number") + 1)
            .alias("contacts_to_order"),
            (pl.col("journey_order_at") - pl.col("started_at"))
            .dt.total_hours(fractional=True)
            .alias("time_to_order_hours"),
            (
                ~pl.col("journey_converted")
                & pl.col("_after_journey_contact_at").is_null()
                & (
                    pl.col("_journey_last_contact_at") + settle
                    > pl.lit(observed_until, dtype=time_dtype)
                )
            ).alias("journey_open"),
            _dropoff_label(contact_schema),
        )
        .select(*contact_schema.names(), *LABEL_COLUMNS)
    )
    return labeled.collect(engine=_ENGINE)


def label_conversions(
    contacts: pl.DataFrame | pl.LazyFrame,
    orders: pl.DataFrame | pl.LazyFrame,
    horizon_days: int | None = None,
) -> pl.DataFrame:
    """``converted`` and ``label_known_at`` of every contact, as :func:`label_contacts` gives them.

    The global rate step needs only these two labels, not journeys (:func:`conversions_by_time`),
    a fraction of the full labelling's cost. Rows keep the input order; all input columns are
    kept.
    """
    contacts_lf = contacts.lazy()
    labels = (
        conversions_by_time(contacts_lf, orders, horizon_days)
        .lazy()
        .sort("_row")
        .select(
            pl.col("converted").alias("_label_converted"),
            pl.col("label_known_at").alias("_label_known_at"),
        )
    )
    labeled = (
        pl.concat([contacts_lf, labels], how="horizontal")
        .with_columns(
            pl.col("_label_converted").alias("converted"),
            pl.col("_label_known_at").alias("label_known_at"),
        )
        .drop("_label_converted", "_label_known_at")
    )
    return labeled.collect(engine=_ENGINE)


def conversions_by_time(
    contacts: pl.DataFrame | pl.LazyFrame,
    orders: pl.DataFrame | pl.LazyFrame,
    horizon_days: int | None = None,
) -> pl.DataFrame:
    """``converted`` and ``label_known_at`` of every contact in time order (ties in any order):
    ``_row`` (the contact's row in ``contacts``), ``started_at``, ``converted``,
    ``label_known_at``. The rate step wants its outcomes in time order anyway, so it takes them
    so and skips :func:`label_conversions`' sort back to the input order.

    One as-of join of each contact to its customer's first order at or after its start, on
    frames sorted by time alone (each customer's rows are then in time order, all
    ``join_asof(by=...)`` needs). Only the join keys go through the sort (moving every column
    through it cost about twice as much at 10M contacts, measured).
    """
    horizon_days, _ = resolve_days(horizon_days, 1)
    contacts_lf = contacts.lazy()
    orders_lf = orders.lazy()
    time_dtype = _require_columns(contacts_lf, "contacts", CONTACT_KEYS)["started_at"]
    _require_columns(orders_lf, "orders", ORDER_KEYS)
    horizon = pl.duration(days=horizon_days)
    first_order_from = (
        orders_lf.select(
            pl.col("customer_id"), pl.col("ordered_at").cast(time_dtype).alias("_next_order_at")
        )
        .drop_nulls()
        .sort("_next_order_at")
    )
    return (
        _with_first_order_from(
            contacts_lf.select("customer_id", "started_at")
            .with_row_index("_row")
            .sort("started_at"),
            first_order_from,
        )
        .select(
            "_row",
            "started_at",
            _converted(horizon),
            (pl.col("started_at") + horizon).alias("label_known_at"),
        )
        .collect(engine=_ENGINE)
    )


def _dropoff_label(contact_schema: pl.Schema) -> pl.Expr:
    """The recorded drop-off reason of a contact that did not convert (null for converted ones)."""
    if "dropoff_reason" not in contact_schema:
        return pl.lit(None, dtype=DropoffReason).alias("dropoff_label")
    return pl.when(~pl.col("converted")).then(pl.col("dropoff_reason")).alias("dropoff_label")


JOURNEY_COLUMNS = (
    "journey_id",
    "customer_id",
    "journey_number",
    "started_at",
    "last_contact_at",
    "first_contact_id",
    "last_contact_id",
    "contacts",
    "converted",
    "order_at",
    "contacts_to_order",
    "time_to_order_hours",
    "journey_open",
    "ended_by",
    "dropoff_reason",
)


def journeys_from_labels(labeled: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """One row per journey from the output of :func:`label_contacts` (no second labelling pass).

    ``ended_by`` is ``order``, ``gap`` (no further contact joined it within G days, or the next one came
    after the gap) or ``open`` (no order yet and the data ends before the journey settled);
    ``dropoff_reason`` is the journey's last recorded drop-off reason when it did not end in an order.
    """
    ordered = (
        labeled.lazy()
        # Already in this order when it comes from label_contacts (then the sort is cheap); it puts
        # each journey's contacts in one block, first to last.
        .sort("customer_id", "journey_number", "journey_contact_number")
        .with_row_index("_row")
        .with_columns(pl.col("_row").cast(pl.Int64))
        .with_columns(
            pl.when(pl.col("dropoff_label").is_not_null())
            .then(pl.col("_row"))
            .forward_fill()
            .alias("_reason_row")
        )
        .with_columns(
            # The latest recorded reason, if it was recorded within this journey.
            pl.when(pl.col("_reason_row") >= pl.col("_row") - pl.col("journey_contact_number") + 1)
            .then(pl.col("dropoff_label").gather(pl.col("_reason_row").fill_null(0)))
            .alias("dropoff_reason")
        )
    )
    first_contacts = ordered.filter(pl.col("journey_contact_number") == 1).select(
        "journey_id",
        "customer_id",
        "journey_number",
        "started_at",
        pl.col("contact_id").alias("first_contact_id"),
        "contacts_to_order",
        "time_to_order_hours",
    )
    last_contacts = ordered.filter(
        pl.col("journey_contact_number") == pl.col("journey_contacts")
    ).select(
        pl.col("started_at").alias("last_contact_at"),
        pl.col("contact_id").alias("last_contact_id"),
        pl.col("journey_contacts").alias("contacts"),
        pl.col("journey_converted").alias("converted"),
        pl.col("journey_order_at").alias("order_at"),
        "journey_open",
        "dropoff_reason",
    )
    # Both keep one row per journey in the same (sorted) order, so they line up side by side.
    return (
        pl.concat([first_contacts, last_contacts], how="horizontal")
        .with_columns(
            pl.when(pl.col("converted"))
            .then(pl.lit("order"))
            .when(pl.col("journey_open"))
            .then(pl.lit("open"))
            .otherwise(pl.lit("gap"))
            .cast(pl.Enum(["order", "gap", "open"]))
            .alias("ended_by")
        )
        .select(JOURNEY_COLUMNS)
        .collect(engine=_ENGINE)
    )


def journeys(
    contacts: pl.DataFrame | pl.LazyFrame,
    orders: pl.DataFrame | pl.LazyFrame,
    journey_gap_days: int | None = None,
    horizon_days: int | None = None,
    *,
    observed_until: datetime | None = None,
) -> pl.DataFrame:
    """One row per customer journey (columns :data:`JOURNEY_COLUMNS`); see :func:`label_contacts`."""
    labeled = label_contacts(
        contacts, orders, horizon_days, journey_gap_days, observed_until=observed_until
    )
    return journeys_from_labels(labeled)


def attribute_orders(
    contacts: pl.DataFrame | pl.LazyFrame,
    orders: pl.DataFrame | pl.LazyFrame,
    horizon_days: int | None = None,
) -> pl.DataFrame:
    """Orders plus ``attributed_contact_id``: the latest contact at or before the order, within H days.

    Null means the order is *unattributed* (no contact in the H days before it). The same rule gives
    ``orders_attributed`` in :func:`label_contacts`, so the two always agree.
    """
    horizon_days, _ = resolve_days(horizon_days, 1)
    contacts_lf = contacts.lazy()
    orders_lf = orders.lazy()
    time_dtype = _require_columns(contacts_lf, "contacts", CONTACT_KEYS)["started_at"]
    order_schema = _require_columns(orders_lf, "orders", ORDER_KEYS)
    latest_contact = contacts_lf.select(
        "customer_id",
        pl.col("started_at").alias("_contact_at"),
        pl.col("contact_id").alias("attributed_contact_id"),
    ).sort("customer_id", "_contact_at", "attributed_contact_id")
    return (
        orders_lf.with_columns(pl.col("ordered_at").cast(time_dtype).alias("_order_at"))
        .sort("customer_id", "_order_at")
        # Among contacts with the same start, the asof match is the last one in sort order, the
        # same contact label_contacts treats as the latest.
        .join_asof(
            latest_contact,
            left_on="_order_at",
            right_on="_contact_at",
            by="customer_id",
            strategy="backward",
            check_sortedness=False,
        )
        .with_columns(
            pl.when(pl.col("_order_at") - pl.col("_contact_at") <= pl.duration(days=horizon_days))
            .then(pl.col("attributed_contact_id"))
            .alias("attributed_contact_id")
        )
        .select(*order_schema.names(), "attributed_contact_id")
        .collect(engine=_ENGINE)
    )
