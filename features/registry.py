"""The contact feature set, declared as data (Feast-style): one :class:`FeatureDef` per feature.

Each feature names a Polars expression, a description, a window and the *scoring moment* it is
known at. :mod:`features.pipeline` evaluates the expressions; nothing else decides what a feature
is. The set is versioned (``FEATURE_SET.version``) and fingerprinted (``FEATURE_SET.digest``, a hash
of every definition), and training logs ``FEATURE_SET.to_dict()`` with each model, so a model and
the features it is served with can be checked to match.

Two stages evaluate the expressions (see :mod:`features.pipeline` for the helper columns):

- ``stream``: over the customer's event stream (contact starts, contact outcomes at the moment they
  became known, orders), sorted by customer and time. Window features cover ``[t - w, t)``: they
  exclude the scored contact and everything at or after its start (running integer sums read at
  each window's first row; see features.pipeline).
- ``contact``: over the contact rows once the stream features are in place (the contact's own
  fields, journeys, customer attributes and the point-in-time rate tables).

Scoring moments:

- ``arrival``: what is known when the contact arrives: its channel, direction, intent, time,
  the customer's attributes and the customer's history strictly before it.
- ``after_contact``: everything at arrival plus this contact's own outcome (wait, handling,
  transfers, resolution, who handled it and that agent's conversion rate). ``dropoff_reason`` is
  never a feature: it is what the drop-off model predicts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import polars as pl

from features.rates import DEFAULT_PRIOR_STRENGTH
from features.schema import CHANNELS, Channel, Direction, Handler, Intent, Segment

Moment = Literal["arrival", "after_contact"]
MOMENTS: tuple[str, ...] = ("arrival", "after_contact")
WINDOWS: tuple[str, ...] = ("1d", "7d", "30d", "90d", "journey", "lifetime", "point")
HISTORY_WINDOWS: tuple[str, ...] = ("1d", "7d", "30d", "90d")
ORDER_WINDOWS: tuple[str, ...] = ("7d", "30d", "90d")
# Per-event values that window features sum: the batch pipeline keeps a running sum of each, the
# online state a per-window total. One list, so the two forms cannot drift apart.
WINDOW_SUMMED: tuple[str, ...] = (
    "_is_contact",
    "_switch",
    "_wait_ms",
    "_has_wait",
    "_abandoned",
    "_transfers",
    "_unresolved",
    "_bot",
    "_is_order",
    "_amount_cents",
)
STAGES: tuple[str, ...] = ("stream", "contact")

# Column names of the event stream the stream-stage expressions read (built by features.pipeline).
DAYS_PER_MICROSECOND = 1 / 86_400_000_000
HOURS_PER_MICROSECOND = 1 / 3_600_000_000


@dataclass(frozen=True)
class FeatureDef:
    """One feature: how it is computed, what it means, which window and when it is known.

    ``expr`` is a Polars expression over the stage's frame, or a builder (a no-argument callable
    returning one) for expressions that are cheaper to build on demand. ``online`` is the same
    feature for one contact, read from the customer's state without Polars: a function of a
    :class:`features.online.OnlineRow` (what the scan of the customer's events before the contact
    accumulated) returning the value batch gives, as a Python value (None for null). ``monotone`` is the known
    direction of the feature's effect on conversion (-1, 0 = unknown, +1): training may pass it
    to LightGBM as a monotone constraint.
    """

    name: str
    expr: pl.Expr | Callable[[], pl.Expr]
    description: str
    window: str
    moment: str
    kind: str = "numeric"
    dtype: pl.DataType = field(default_factory=pl.Float64)
    monotone: int = 0
    stage: str = "stream"
    online: Callable[[Any], object] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise ValueError(f"feature {self.name}: window {self.window!r} not in {WINDOWS}")
        if self.moment not in MOMENTS:
            raise ValueError(f"feature {self.name}: moment {self.moment!r} not in {MOMENTS}")
        if self.kind not in ("numeric", "categorical"):
            raise ValueError(f"feature {self.name}: kind {self.kind!r} is not numeric/categorical")
        if self.kind == "categorical" and not isinstance(self.dtype, pl.Enum):
            raise ValueError(f"feature {self.name}: a categorical feature must be a pl.Enum")
        if self.monotone not in (-1, 0, 1):
            raise ValueError(f"feature {self.name}: monotone must be -1, 0 or 1")
        if self.stage not in STAGES:
            raise ValueError(f"feature {self.name}: stage {self.stage!r} not in {STAGES}")

    def expression(self) -> pl.Expr:
        """The Polars expression, cast to the declared dtype and named after the feature."""
        expr = (
            self.expr() if callable(self.expr) and not isinstance(self.expr, pl.Expr) else self.expr
        )
        return expr.cast(self.dtype).alias(self.name)

    @property
    def categories(self) -> list[str] | None:
        return self.dtype.categories.to_list() if isinstance(self.dtype, pl.Enum) else None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "window": self.window,
            "moment": self.moment,
            "kind": self.kind,
            "dtype": str(self.dtype),
            "categories": self.categories,
            "monotone": self.monotone,
            "stage": self.stage,
            "expr": str(self.expression()),
        }


@dataclass(frozen=True)
class FeatureSet:
    """A named, versioned group of features; ``digest`` changes whenever any definition changes."""

    name: str
    version: str
    features: tuple[FeatureDef, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feature set {self.name}: duplicate feature names {duplicates}")

    @property
    def digest(self) -> str:
        payload = json.dumps([f.to_dict() for f in self.features], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def for_moment(self, moment: str) -> tuple[FeatureDef, ...]:
        """Features available at ``moment``: after_contact includes every arrival feature."""
        _check_moment(moment)
        allowed = ("arrival",) if moment == "arrival" else MOMENTS
        return tuple(f for f in self.features if f.moment in allowed)

    def get(self, name: str) -> FeatureDef:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"feature set {self.name} has no feature {name!r}")

    def to_dict(self) -> dict[str, object]:
        """JSON-able description that training logs with every model."""
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "moments": {m: [f.name for f in self.for_moment(m)] for m in MOMENTS},
            "categorical": {m: categorical_features(m, self) for m in MOMENTS},
            "features": [f.to_dict() for f in self.features],
        }


def _check_moment(moment: str) -> None:
    if moment not in MOMENTS:
        raise ValueError(f"moment must be one of {MOMENTS}, got {moment!r}")


# --- expression helpers -------------------------------------------------------------------------


# Stream-stage expressions run in one `select` over the whole event stream (contact starts,
# outcomes, orders) and return one value per contact start: `_at_contacts` keeps those rows.
def _at_contacts(expr: pl.Expr) -> pl.Expr:
    return expr.filter(pl.col("_kind") == 0)


def _window_sum(column: str, window: str) -> pl.Expr:
    # `_cum_<column>`: running sum over the stream before each row; `_instant_start`: first row at
    # this contact's instant; `_lo_<window>`: first row of the customer inside [t - window, t).
    # Gathering at the contact rows only halves the work against gathering at every row.
    running = pl.col(f"_cum_{column}")
    now = running.gather(_at_contacts(pl.col("_instant_start")))
    return now - running.gather(_at_contacts(pl.col(f"_lo_{window}")))


def _lifetime_sum(column: str) -> pl.Expr:
    running = pl.col(f"_cum_{column}")
    now = running.gather(_at_contacts(pl.col("_instant_start")))
    return now - running.gather(_at_contacts(pl.col("_customer_start")))


def _window_max(column: str, window: str) -> pl.Expr:
    # `_key`: the stream's global sort key (customer ordinal, then milliseconds), so one rolling
    # pass covers every customer without a slow `.over` (windows never span two customers).
    span = f"{int(window.removesuffix('d')) * 86_400_000}i"
    return _at_contacts(pl.col(column).rolling_max_by("_key", span, closed="left"))


def _cents_to_amount(cents: pl.Expr) -> pl.Expr:
    # Sums run in integer cents: exact whatever the order of addition. Multiplying (never dividing
    # by a scalar, which Polars does exactly on one row but by reciprocal on many) keeps online
    # and batch values equal to the last bit.
    return cents * 0.01


def _ratio(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    return pl.when(denominator > 0).then(numerator / denominator)


def _days_between(later: str, earlier: str) -> pl.Expr:
    # Multiply by the reciprocal: Polars divides by a scalar that way on long columns but exactly
    # on one-row frames, and online (one row) must equal batch to the last bit.
    return (pl.col(later) - pl.col(earlier)).dt.total_microseconds() * DAYS_PER_MICROSECOND


def _channels_used(window: str) -> pl.Expr:
    # `_last_<channel>_at`: the customer's latest contact on that channel strictly before this one.
    span = timedelta(days=int(window.removesuffix("d")))
    recent = [(pl.col("started_at") - pl.col(f"_last_{c}_at")) <= span for c in CHANNELS]
    return pl.sum_horizontal(recent)


def _flag(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Int8)


# Online forms: the same values for one contact from its customer's state (features.online).
def _online_ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _online_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _online_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _online_flag(value: object) -> int | None:
    return None if value is None else int(bool(value))


# --- the features -------------------------------------------------------------------------------

INT = pl.Int32


def _history_features(window: str) -> list[FeatureDef]:
    period = {"1d": "day", "7d": "7 days", "30d": "30 days", "90d": "90 days"}[window]
    wait_known = _window_sum("_has_wait", window)
    return [
        FeatureDef(
            f"contacts_{window}",
            _window_sum("_is_contact", window),
            f"Contacts the customer started or received in the {period} before this one.",
            window,
            "arrival",
            dtype=INT,
            online=lambda row: row.window_sum("_is_contact", window),
        ),
        FeatureDef(
            f"channels_used_{window}",
            _channels_used(window),
            f"Distinct channels among the customer's contacts in the {period} before this one.",
            window,
            "arrival",
            dtype=INT,
            stage="contact",
            online=lambda row: row.channels_used(window),
        ),
        FeatureDef(
            f"channel_switches_{window}",
            _window_sum("_switch", window),
            f"Contacts in the {period} before this one whose channel differed from the customer's "
            "contact before them.",
            window,
            "arrival",
            dtype=INT,
            online=lambda row: row.window_sum("_switch", window),
        ),
        FeatureDef(
            f"wait_mean_{window}",
            _ratio(_window_sum("_wait_ms", window), wait_known * 1000),
            f"Mean wait (queue wait or time to first reply), seconds, of the customer's contacts whose "
            f"outcome became known in the {period} before this one; null if none.",
            window,
            "arrival",
            online=lambda row: _online_ratio(
                row.window_sum("_wait_ms", window), row.window_sum("_has_wait", window) * 1000
            ),
        ),
        FeatureDef(
            f"wait_max_{window}",
            _window_max("_wait", window),
            f"Longest wait, seconds, among contacts whose outcome became known in the {period} "
            "before this one; null if none.",
            window,
            "arrival",
            online=lambda row: row.wait_max[window],
        ),
        FeatureDef(
            f"abandons_{window}",
            _window_sum("_abandoned", window),
            f"Abandoned contacts among outcomes known in the {period} before this one.",
            window,
            "arrival",
            dtype=INT,
            online=lambda row: row.window_sum("_abandoned", window),
        ),
        FeatureDef(
            f"transfers_{window}",
            _window_sum("_transfers", window),
            f"Transfers summed over contacts whose outcome became known in the {period} before this one.",
            window,
            "arrival",
            dtype=INT,
            online=lambda row: row.window_sum("_transfers", window),
        ),
        FeatureDef(
            f"unresolved_{window}",
            _window_sum("_unresolved", window),
            f"Unresolved contacts among outcomes known in the {period} before this one.",
            window,
            "arrival",
            dtype=INT,
            online=lambda row: row.window_sum("_unresolved", window),
        ),
        FeatureDef(
            f"bot_only_{window}",
            _window_sum("_bot", window),
            f"Contacts handled by a bot only (no agent), among outcomes known in the {period} before "
            "this one.",
            window,
            "arrival",
            dtype=INT,
            online=lambda row: row.window_sum("_bot", window),
        ),
    ]


def _order_features(window: str) -> list[FeatureDef]:
    period = {"7d": "7 days", "30d": "30 days", "90d": "90 days"}[window]
    return [
        FeatureDef(
            f"orders_{window}",
            _window_sum("_is_order", window),
            f"Orders placed in the {period} before this contact (ordered_at strictly before it).",
            window,
            "arrival",
            dtype=INT,
            online=lambda row: row.window_sum("_is_order", window),
        ),
        FeatureDef(
            f"spend_{window}",
            _cents_to_amount(_window_sum("_amount_cents", window)),
            f"Order value placed in the {period} before this contact.",
            window,
            "arrival",
            online=lambda row: row.window_sum("_amount_cents", window) * 0.01,
        ),
    ]


def _point_features() -> list[FeatureDef]:
    return [
        FeatureDef(
            "channel",
            pl.col("channel"),
            "Channel of this contact (unknown values are `other`).",
            "point",
            "arrival",
            kind="categorical",
            dtype=Channel,
            stage="contact",
            online=lambda row: _text(row.contact["channel"]),
        ),
        FeatureDef(
            "direction",
            pl.col("direction"),
            "Inbound (customer started it) or outbound.",
            "point",
            "arrival",
            kind="categorical",
            dtype=Direction,
            stage="contact",
            online=lambda row: _text(row.contact["direction"]),
        ),
        FeatureDef(
            "intent",
            pl.col("intent"),
            "What the customer wants, as classified at arrival (IVR, form, first message).",
            "point",
            "arrival",
            kind="categorical",
            dtype=Intent,
            stage="contact",
            online=lambda row: _text(row.contact["intent"]),
        ),
        FeatureDef(
            "hour_of_day",
            pl.col("started_at").dt.hour(),
            "Hour the contact started, 0-23, UTC.",
            "point",
            "arrival",
            dtype=pl.Int8,
            stage="contact",
            online=lambda row: row.hour,
        ),
        FeatureDef(
            "day_of_week",
            pl.col("started_at").dt.weekday(),
            "Weekday the contact started, 1 = Monday ... 7 = Sunday, UTC.",
            "point",
            "arrival",
            dtype=pl.Int8,
            stage="contact",
            online=lambda row: row.weekday,
        ),
        FeatureDef(
            "segment",
            pl.col("_segment"),
            "Customer segment from the customers table; null when unknown.",
            "point",
            "arrival",
            kind="categorical",
            dtype=Segment,
            stage="contact",
            online=lambda row: row.segment,
        ),
        FeatureDef(
            "tenure_days",
            _days_between("started_at", "_first_seen_at"),
            "Days since the customer was first seen: the earliest of customers.first_seen_at, the "
            "customer's first contact and first order (never after this contact).",
            "point",
            "arrival",
            stage="contact",
            online=lambda row: row.tenure_days,
        ),
    ]


def _lifetime_features() -> list[FeatureDef]:
    return [
        FeatureDef(
            "contacts_lifetime",
            _lifetime_sum("_is_contact"),
            "All of the customer's contacts before this one.",
            "lifetime",
            "arrival",
            dtype=INT,
            online=lambda row: row.lifetime_sum("_is_contact"),
        ),
        FeatureDef(
            "orders_lifetime",
            _lifetime_sum("_is_order"),
            "All of the customer's orders before this contact.",
            "lifetime",
            "arrival",
            dtype=INT,
            online=lambda row: row.lifetime_sum("_is_order"),
        ),
        FeatureDef(
            "spend_lifetime",
            _cents_to_amount(_lifetime_sum("_amount_cents")),
            "Total order value before this contact.",
            "lifetime",
            "arrival",
            online=lambda row: row.lifetime_sum("_amount_cents") * 0.01,
        ),
        FeatureDef(
            "days_since_last_contact",
            _days_between("started_at", "_last_contact_at"),
            "Days since the customer's previous contact started; null for a first contact.",
            "lifetime",
            "arrival",
            stage="contact",
            online=lambda row: row.days_since(row.last_contact_us),
        ),
        FeatureDef(
            "days_since_last_order",
            _at_contacts(_days_between("_t", "_last_order_at")),
            "Days since the customer's latest order before this contact; null if none.",
            "lifetime",
            "arrival",
            online=lambda row: row.days_since(row.last_order_us),
        ),
        FeatureDef(
            "prev_unresolved",
            _at_contacts(pl.col("_last_outcome_unresolved")),
            "1 if the latest contact whose outcome was known before this one was left unresolved, "
            "0 if resolved; null if no earlier outcome is known.",
            "lifetime",
            "arrival",
            dtype=pl.Int8,
            online=lambda row: row.prev_unresolved,
        ),
    ]


def _journey_features() -> list[FeatureDef]:
    return [
        FeatureDef(
            "journey_contacts",
            pl.col("_journey_contacts_before"),
            "Contacts before this one in the current journey (contacts with gaps under the journey "
            "gap, reset by an order); 0 when this contact starts a journey.",
            "journey",
            "arrival",
            dtype=INT,
            stage="contact",
            online=lambda row: row.journey_contacts_before,
        ),
        FeatureDef(
            "journey_age_hours",
            (pl.col("started_at") - pl.col("_journey_started_at")).dt.total_microseconds()
            * HOURS_PER_MICROSECOND,
            "Hours since the current journey's first contact; 0 when this contact starts it.",
            "journey",
            "arrival",
            stage="contact",
            online=lambda row: (row.started_us - row.journey_started_us) * HOURS_PER_MICROSECOND,
        ),
        FeatureDef(
            "channel_switch",
            pl.col("_journey_channel_switch"),
            "1 if this contact's channel differs from the previous contact's in the same journey, "
            "0 if the same; null when this contact starts a journey.",
            "journey",
            "arrival",
            dtype=pl.Int8,
            stage="contact",
            online=lambda row: row.journey_switch,
        ),
    ]


def _rate_features() -> list[FeatureDef]:
    return [
        FeatureDef(
            "intent_conversion_rate",
            pl.col("_rate_intent"),
            "Conversion rate of contacts with this intent whose outcome window had closed before "
            "this contact (all customers), smoothed towards the global rate (features.rates).",
            "lifetime",
            "arrival",
            stage="contact",
            online=lambda row: row.rate("intent"),
        ),
        FeatureDef(
            "channel_conversion_rate",
            pl.col("_rate_channel"),
            "Conversion rate of contacts on this channel whose outcome window had closed before "
            "this contact, smoothed towards the global rate.",
            "lifetime",
            "arrival",
            stage="contact",
            online=lambda row: row.rate("channel"),
        ),
    ]


def _after_contact_features() -> list[FeatureDef]:
    return [
        FeatureDef(
            "wait_seconds",
            pl.col("wait_seconds"),
            "This contact's queue wait (phone, chat) or time to first reply (written channels), seconds.",
            "point",
            "after_contact",
            monotone=-1,
            stage="contact",
            online=lambda row: _online_float(row.contact.get("wait_seconds")),
        ),
        FeatureDef(
            "handle_seconds",
            pl.col("handle_seconds"),
            "This contact's talk / handling time, seconds.",
            "point",
            "after_contact",
            stage="contact",
            online=lambda row: _online_float(row.contact.get("handle_seconds")),
        ),
        FeatureDef(
            "transfers",
            pl.col("transfers"),
            "Times this contact was transferred.",
            "point",
            "after_contact",
            dtype=INT,
            monotone=-1,
            stage="contact",
            online=lambda row: _online_int(row.contact.get("transfers")),
        ),
        FeatureDef(
            "abandoned",
            _flag("abandoned"),
            "1 if the customer left before being served.",
            "point",
            "after_contact",
            dtype=pl.Int8,
            monotone=-1,
            stage="contact",
            online=lambda row: _online_flag(row.contact.get("abandoned")),
        ),
        FeatureDef(
            "resolved",
            _flag("resolved"),
            "1 if the request was resolved in this contact.",
            "point",
            "after_contact",
            dtype=pl.Int8,
            stage="contact",
            online=lambda row: _online_flag(row.contact.get("resolved")),
        ),
        FeatureDef(
            "callback_offered",
            _flag("callback_offered"),
            "1 if a callback was offered while waiting.",
            "point",
            "after_contact",
            dtype=pl.Int8,
            stage="contact",
            online=lambda row: _online_flag(row.contact.get("callback_offered")),
        ),
        FeatureDef(
            "follow_up_sent",
            _flag("follow_up_sent"),
            "1 if a follow-up (quote, summary, reminder) was sent.",
            "point",
            "after_contact",
            dtype=pl.Int8,
            monotone=1,
            stage="contact",
            online=lambda row: _online_flag(row.contact.get("follow_up_sent")),
        ),
        FeatureDef(
            "handled_by",
            pl.col("handled_by"),
            "Agent or bot: known once the contact is routed.",
            "point",
            "after_contact",
            kind="categorical",
            dtype=Handler,
            stage="contact",
            online=lambda row: _text(row.contact.get("handled_by")),
        ),
        FeatureDef(
            "agent_conversion_rate",
            pl.col("_rate_agent"),
            "Conversion rate of the handling agent's contacts (all bots share one rate) whose outcome "
            "window had closed before this contact, smoothed towards the global rate.",
            "lifetime",
            "after_contact",
            stage="contact",
            online=lambda row: row.rate("agent"),
        ),
        # No feature counts the agent's known outcomes: the count only grows with calendar time, so
        # a model reads it as a clock, and serving's rate snapshot puts every contact past the
        # training range (seen in v1.0.0: "31,324 known outcomes, higher than 99%: -0.42").
    ]


def _all_features() -> tuple[FeatureDef, ...]:
    features = _point_features() + _lifetime_features()
    for window in HISTORY_WINDOWS:
        features += _history_features(window)
    for window in ORDER_WINDOWS:
        features += _order_features(window)
    features += _journey_features() + _rate_features() + _after_contact_features()
    return tuple(features)


FEATURE_SET = FeatureSet(name="cto_contact_features", version="1.1.0", features=_all_features())


def feature_names(
    moment: str = "after_contact", feature_set: FeatureSet = FEATURE_SET
) -> list[str]:
    """Feature column names at ``moment``, in the stable registry order."""
    return [f.name for f in feature_set.for_moment(moment)]


def categorical_features(
    moment: str = "after_contact", feature_set: FeatureSet = FEATURE_SET
) -> list[str]:
    """The categorical (pl.Enum) features at ``moment``, in registry order."""
    return [f.name for f in feature_set.for_moment(moment) if f.kind == "categorical"]


def monotone_constraints(
    moment: str = "after_contact", feature_set: FeatureSet = FEATURE_SET
) -> list[int]:
    """Known effect directions, aligned with :func:`feature_names` (LightGBM monotone_constraints)."""
    return [f.monotone for f in feature_set.for_moment(moment)]


def feature_schema(
    moment: str = "after_contact", feature_set: FeatureSet = FEATURE_SET
) -> dict[str, pl.DataType]:
    """Column dtypes of :func:`features.pipeline.build_features` output at ``moment``."""
    from features.schema import UTC_TIME

    keys: dict[str, pl.DataType] = {
        "contact_id": pl.String(),
        "customer_id": pl.String(),
        "started_at": UTC_TIME,
    }
    return keys | {f.name: f.dtype for f in feature_set.for_moment(moment)}


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def features_markdown(feature_set: FeatureSet = FEATURE_SET) -> str:
    """docs/features.md, generated from the registry (a test keeps the file equal to this)."""
    arrival = feature_set.for_moment("arrival")
    after_only = [f for f in feature_set.features if f.moment == "after_contact"]
    lines = [
        "# Contact features",
        "",
        "<!-- Generated by features.registry.features_markdown(); do not edit by hand. Regenerate with",
        "     .venv/bin/python -c 'from features.registry import features_markdown; "
        'print(features_markdown(), end="")\' > docs/features.md -->',
        "",
        f"Feature set **`{feature_set.name}`**, version **{feature_set.version}**, digest "
        f"`{feature_set.digest}` (a hash of every definition below: training logs it with each model "
        "and the service can check it). "
        f"{len(arrival)} features at arrival, {len(arrival) + len(after_only)} after the contact.",
        "",
        "Build them with `cto features DATA_DIR --out FILE_OR_DIR [--moment arrival|after_contact|both]"
        " [--partitions N]`, or in Python with `features.pipeline.build_features(contacts, orders, "
        "customers, rates, moment)`. The service does not run a Polars plan per contact: it keeps a "
        "state per customer (features.online, loaded by `cto materialize DATA_DIR` and updated by "
        "POST /events) and reads each feature's *online form*, declared beside its batch expression "
        "in features/registry.py. Property tests (tests/unit/test_features_online_parity.py) require "
        "online and batch values to be equal for random histories, instants and both moments.",
        "",
        "## Scoring moments",
        "",
        "- **arrival**: scored when the contact arrives, before routing. Known: the contact's channel, "
        "direction, intent and time, the customer's attributes, and the customer's history strictly "
        "before the contact started.",
        "- **after_contact**: scored once the contact has ended. Everything known at arrival plus the "
        "contact's own outcome: wait (for written channels: time to first reply), handling time, "
        "transfers, abandoned, resolved, callback offered, follow-up sent, bot or agent, and the "
        "handling agent's conversion rate.",
        "- `dropoff_reason` is never a feature: it is what the drop-off model predicts.",
        "",
        "## Point-in-time correctness",
        "",
        "Each customer's events form one time-ordered stream: contact starts (the rows scored), "
        "contact *outcomes* at the moment they became known (`started_at + wait_seconds + "
        "handle_seconds`), and orders at `ordered_at`.",
        "",
        "- Window features cover `[t - w, t)`: only events strictly before the contact started. "
        "They are computed without `.over(customer_id)` (about 10x slower here): the stream is "
        "sorted by customer and time under one Int64 key (customer ordinal in the high bits, "
        "milliseconds below), a binary search of `key - w` in the sorted key (`search_sorted`) "
        "gives each window's first row, and sums are differences of running integer sums (waits in ms, "
        "amounts in cents: exact, whatever else is in the batch); maxima use `rolling_max_by` on "
        "the same key. Window *starts* are at millisecond resolution; the end, strictly before the "
        "contact, is exact.",
        '- Lifetime counts and "latest" values (days since last order, previous outcome) come from '
        "running sums and forward fills read at the first row of the contact's instant, so events at "
        "the same instant are excluded as well.",
        "- Orders known at arrival are those with `ordered_at < started_at`; an order at the very "
        "instant a contact starts is that contact's outcome (see docs/labels.md), never its history.",
        "- An outcome is history only once the contact ended: an email answered two days later is a "
        "contact in `contacts_1d` of a phone call an hour later, but its wait and resolution are not "
        "(a customer calling because the email is unanswered must not be scored with the answer).",
        "- A contact's own after-contact fields only produce an event at or after its own start, so "
        "they cannot reach its arrival features; at arrival they may be null or absent.",
        "- Journeys: a contact starts a new journey if it is the customer's first, if the previous "
        "contact is at least `CTO_JOURNEY_GAP_DAYS` (14) days earlier, or if an order within "
        "`CTO_HORIZON_DAYS` of the previous contact came before it (the same rule as features.labels, "
        "evaluated with what is known at arrival).",
        "- Tests perturb each contact's outcome and every later event (contacts, orders, other "
        "customers' outcomes behind the rates) and require identical features.",
        "",
        "## Rates: the global step",
        "",
        "Agent, intent and channel conversion rates pool all customers, so they are computed in a "
        "separate step, `features.rates.compute_rates(labeled_contacts, horizon_days) -> RateTables`, "
        "and joined as of each contact's start (`join_asof` on `label_known_at`). A contact's "
        "outcome is settled at `label_known_at = started_at + H`; a contact started at `s` only sees "
        "outcomes with `label_known_at < s` (strict: an order at `s` itself is not known at `s`). "
        "Rates are smoothed towards the global rate known at the same moment, "
        f"`(conversions + m * global) / (outcomes + m)` with `m = {DEFAULT_PRIOR_STRENGTH:g}`, so a new agent starts at the "
        "global rate and one unlucky contact does not make a 0% agent. Bots share one `bot` rate. "
        "Intent and channel rates are arrival features; the agent rate is an after-contact feature "
        "(the agent is known once the contact is routed). Without rate tables the rate columns are "
        "null. `RateTables.write(dir)`/`RateTables.read(dir)` store them for the service. A batch job "
        "over the very contacts the rates are learnt from (`cto features`, `cto score DATA_DIR`) "
        "computes each contact's rates directly (`features.rate_shards.sharded_rates`: the step "
        "in integers, sharded by time range, the same values without the string-keyed tables) and "
        "the contacts carry them into the features.",
        "",
        "## Memory",
        "",
        "Everything except the rates is per customer, so a batch can be cut by customer hash and "
        "the pieces concatenated in hash order give exactly the one-pass rows. "
        "`build_features` does so above 2M contacts (1M-contact chunks; the output is returned "
        "whole). `features.pipeline.write_feature_files(contacts, orders, {moment: path}, ...)` "
        "builds chunks of at most 250k contacts (at least ~8) and streams each into the Parquet "
        "files through Polars' sinks, so the output is never held whole: peak memory is the input "
        "plus about two chunks. Both moments come from one pass: after_contact holds every "
        "arrival feature with the same definition, so the arrival file is a column subset of each "
        "chunk. `cto features` and `cto score DATA_DIR` do not hold the input either: after "
        "validation they spill the accepted rows to disk in the very same chunks (`features.spill`, "
        "Arrow IPC files removed at the end) and let the tables go; the rate step and the features "
        "(`write_chunk_files`, `feature_chunks` on the spilled chunks) then read one chunk or a "
        "few at a time, so the files are identical to the in-memory job's and peak memory is about "
        "validation's own or the rate step's integer tables (docs/benchmarks.md).",
        "",
        "Larger than memory: `features.pipeline.build_features_partitioned"
        "(input_dir, out_dir, n_partitions)` (`cto features --partitions N`) reads one customer-hash "
        "partition at a time from Parquet and writes `part-NNNNN.parquet` per partition: Polars' "
        "streaming engine cannot run `over`/rolling windows out of core, partitions can. On Dask "
        "(`cto features --dask`, [scale-out.md](scale-out.md)), `build_features` runs as one task "
        "per partition, each partition's rates read from the rate step sharded by time (no task "
        "holds the whole tables); the files are identical to `--partitions N`.",
        "",
        "## Real data: the Olist marketing funnel",
        "",
        "`cto import olist SRC_DIR --out DIR` (features/olist.py, whose docstring lists every "
        "decision) maps Olist's leads and closed deals into the contract: each lead is a customer "
        "with one inbound `product_inquiry` contact at its first-contact date (channel from the "
        "lead's origin: search, display and direct traffic -> web_form, email -> email, social -> "
        "social, anything else -> other; `landing_page_id` and `origin` kept as extra columns); a "
        "closed deal is an order at `won_date` with `amount` = declared monthly revenue (0 when "
        "missing). After-contact fields do not exist in the source (0/False/null), so only arrival "
        "features carry information there. No deal column (sales reps, segment, catalogue, revenue) "
        "reaches a lead's contact or features. The lead whose deal was won 2 days before its first "
        "contact is rejected by validation (rule `time_order`), not repaired. Leads take weeks to "
        "close: use `--horizon-days 90` for labels and rates. The data's licence (CC BY-NC-SA 4.0) "
        "allows tests and examples only: it is never copied into the repository.",
        "",
        "## Data types",
        "",
        "Numeric features are Float64 (rates, means, ages, amounts) or integers (counts, 0/1 flags); "
        "categorical features are `pl.Enum` with the data contract's categories (unknown values become "
        "`other`). Nulls mean *undefined* (no previous order, no known outcome in the window), not "
        "zero. Columns always come in the order below, after `contact_id, customer_id, started_at`; "
        "rows are grouped by customer (in the order of a hash of `customer_id`) and sorted by start "
        "time within a customer: join on `contact_id`. "
        "Times are UTC (`hour_of_day`, `day_of_week`). `monotone` is the known direction of a "
        "feature's effect on conversion (training may pass it to LightGBM).",
        "",
    ]
    sections = [
        ("Arrival features", [f for f in feature_set.features if f.moment == "arrival"]),
        ("After-contact features (in addition to all arrival features)", after_only),
    ]
    for title, features in sections:
        lines += [f"## {title}", "", "| feature | window | kind | dtype | monotone | description |"]
        lines.append("|---|---|---|---|---|---|")
        for f in features:
            kind = f.kind if f.categories is None else f"categorical: {', '.join(f.categories)}"
            monotone = {-1: "decreasing", 0: "", 1: "increasing"}[f.monotone]
            lines.append(
                f"| `{f.name}` | {f.window} | {_markdown_cell(kind)} | {f.dtype} | {monotone} | "
                f"{_markdown_cell(f.description)} |"
            )
        lines.append("")
    return "\n".join(lines)
