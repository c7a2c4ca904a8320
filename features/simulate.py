"""A realistic contact-centre simulator with planted, documented effects (docs/simulator.md).

Customers live through *journeys*: runs of contacts less than 14 days apart that end in an order
(the first success ends the journey) or fade out. Each contact's own chance of leading to an order
within H = 7 days is a logistic model whose terms are declared once in :data:`EFFECTS`; every term
that can lower it is a named *driver* (long wait, slow reply, re-explaining after a channel switch,
effort, transfers, no follow-up, bot failure, price, stock-out). The truth table records, per
contact, the true probability of an order within H days (``p_convert``, including later contacts of
the same journey and web orders), the realised outcome, and the dominant driver with its log-odds
effect, so that models, explanations and reports can be checked against what was planted.

Everything is vectorised over customers with NumPy; the only Python loops run over journey rounds
and positions within a journey (a handful each). One seed gives the same tables, byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from features.errors import CTOError
from features.schema import (
    CHANNELS,
    CONTACTS,
    CUSTOMERS,
    DROPOFF_REASONS,
    INTENTS,
    ORDERS,
    SEGMENTS,
    WRITTEN_CHANNELS,
)

DAY = 86_400.0
HOUR = 3_600.0
HORIZON_DAYS = 7
JOURNEY_GAP_DAYS = 14
DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)
MAX_JOURNEY_CONTACTS = 8
REGIONS = ("north", "south", "east", "west", "central")

DRIVERS = (
    "long_wait",
    "slow_response",
    "repeat_explanation",
    "high_effort",
    "transfers",
    "no_follow_up",
    "bot_failure",
    "price",
    "out_of_stock",
    "none",
)
Driver = pl.Enum(DRIVERS)
# The drop-off reason a customer who did not order would truly give, per dominant driver.
DRIVER_REASON = {
    "long_wait": "long_wait",
    "slow_response": "slow_response",
    "repeat_explanation": "repeat_explanation",
    "high_effort": "high_effort",
    "transfers": "high_effort",
    "no_follow_up": "no_follow_up",
    "bot_failure": "unresolved",
    "price": "price",
    "out_of_stock": "out_of_stock",
    "none": "other",
}
# Where a model can see each driver: contract columns and the point-in-time features built from
# them (features.registry names). An explanation naming one of these names that driver.
DRIVER_SIGNALS = {
    "long_wait": ("wait_seconds", "queue_wait_seconds", "abandoned", "callback_offered"),
    "slow_response": ("wait_seconds", "reply_wait_hours"),
    "repeat_explanation": ("channel_switch", "channel"),
    "high_effort": ("journey_contacts", "journey_age_hours"),
    "transfers": ("transfers",),
    "no_follow_up": ("follow_up_sent",),
    "bot_failure": ("handled_by", "resolved"),
    "price": ("intent",),
    "out_of_stock": ("intent", "intent_conversion_rate"),
    "none": (),
}
# A driver at or below this log-odds effect is "strong": it should dominate the explanation.
STRONG_DRIVER = -1.0
# Effects above this are too small to name: the contact's driver is "none".
NAMED_DRIVER = -0.25

SYNC_CHANNELS = ("phone", "chat", "other")
INQUIRY_INTENTS = ("product_inquiry", "pricing", "availability")
SIMPLE_INTENTS = ("order_status", "delivery")
COMPLEX_INTENTS = ("pricing", "complaint", "technical")


@dataclass(frozen=True)
class Effects:
    """Every planted effect, in log-odds of a contact's own 7-day conversion unless named a rate.

    docs/simulator.md describes each; tests check that each one shows in the output tables.
    """

    base_logit: float = -2.05
    hidden_propensity_sd: float = 0.7  # customer trait, never in the tables
    season_amplitude: float = 0.25  # sinusoid over a 52-week year
    segment: dict[str, float] = field(
        default_factory=lambda: {
            "consumer": 0.0,
            "small_business": 0.2,
            "enterprise": -0.1,
            "other": -0.2,
        }
    )
    intent: dict[str, float] = field(
        default_factory=lambda: {
            "product_inquiry": 0.5,
            "pricing": 0.45,
            "availability": 0.4,
            "delivery": -0.3,
            "order_status": -0.4,
            "complaint": -0.6,
            "returns": -0.6,
            "technical": -0.3,
            "other": -0.4,
        }
    )
    one_past_order: float = 0.35
    two_plus_past_orders: float = 0.55
    night: float = -0.5  # 22:00-06:00 UTC
    agent_skill_sd: float = 0.3  # clipped to +-0.7
    outbound: float = 0.3
    # Drivers (each <= 0).
    long_wait_per_doubling: float = -1.0  # per doubling of a phone/chat wait beyond 90 s
    long_wait_free_seconds: float = 90.0
    abandoned: float = -0.3  # on top of the wait effect, part of long_wait
    slow_response_per_doubling: float = -0.8  # per doubling of a written first reply beyond 8 h
    slow_response_free_hours: float = 8.0
    driver_floor: float = -2.5  # no single wait or transfer effect goes below this
    channel_switch: float = -1.3  # repeat_explanation: channel differs from previous in journey
    per_extra_journey_contact: float = -0.35  # high_effort, per contact before this one
    one_transfer: float = -0.5
    two_transfers: float = -1.2
    per_further_transfer: float = -0.6
    no_follow_up_on_inquiry: float = -1.3
    no_follow_up_other: float = -0.5  # any other served contact without a follow-up
    bot_unresolved: float = -1.7
    price_max: float = -0.9  # pricing contacts: price_max * price_sensitivity (hidden, 0-1)
    price_on_product_inquiry: float = 0.45  # share of price_max on product inquiries
    out_of_stock: float = -0.9  # availability contacts during a stock-out
    # Rates.
    come_back_per_driver_logit: float = 0.5  # come-back chance * exp(0.5 * drivers' total)
    staffing_wait_factor: float = 1.4  # waits after the staffing change
    callback_abandon_odds: float = 0.35  # callback offer multiplies abandonment odds
    web_orders_per_customer_half_year: float = 0.35  # background orders without a contact
    recorded_reason_share: float = 0.30  # non-converters with a wrap-up reason
    wrong_reason_share: float = 0.15  # recorded reasons that are another code


EFFECTS = Effects()

CHANNEL_MIX = {
    "phone": 0.38,
    "email": 0.2,
    "chat": 0.22,
    "web_form": 0.08,
    "social": 0.05,
    "sms": 0.04,
    "other": 0.03,
}
INTENT_MIX = {
    "product_inquiry": 0.22,
    "pricing": 0.14,
    "availability": 0.09,
    "delivery": 0.12,
    "order_status": 0.12,
    "complaint": 0.07,
    "returns": 0.07,
    "technical": 0.10,
    "other": 0.07,
}
SEGMENT_MIX = {"consumer": 0.72, "small_business": 0.18, "enterprise": 0.07, "other": 0.03}
# Share of contacts a bot takes, per intent, on channels with a bot (phone has a small voice bot).
BOT_SHARE = {
    "product_inquiry": 0.2,
    "pricing": 0.25,
    "availability": 0.35,
    "delivery": 0.55,
    "order_status": 0.65,
    "complaint": 0.2,
    "returns": 0.35,
    "technical": 0.3,
    "other": 0.3,
}
BOT_CHANNEL_FACTOR = {
    "phone": 0.25,
    "email": 0.0,
    "chat": 1.0,
    "web_form": 0.8,
    "social": 0.8,
    "sms": 1.0,
    "other": 0.0,
}
# Median queue wait (s) on sync channels, median first reply (h) on written ones, before drift.
SYNC_WAIT_MEDIAN_SECONDS = {"phone": 50.0, "chat": 35.0, "other": 60.0}
WRITTEN_REPLY_MEDIAN_HOURS = {"email": 3.0, "web_form": 4.0, "social": 1.5, "sms": 1.0}
HANDLE_MEDIAN_SECONDS = {
    "phone": 320.0,
    "email": 420.0,
    "chat": 480.0,
    "web_form": 400.0,
    "social": 300.0,
    "sms": 240.0,
    "other": 360.0,
}
ORDER_MEDIAN_AMOUNT = {
    "consumer": 60.0,
    "small_business": 250.0,
    "enterprise": 1200.0,
    "other": 80.0,
}
# Contacts by hour of day (UTC); about 9% fall in the night (22:00-06:00).
HOUR_WEIGHTS = (
    0.9, 0.6, 0.4, 0.3, 0.3, 0.5, 1.0, 2.0, 4.0, 5.5, 6.3, 6.4,
    6.0, 6.2, 6.4, 6.2, 5.8, 5.2, 4.6, 4.0, 3.3, 2.6, 1.9, 1.3,
)  # fmt: skip
ORDER_LAG_MEAN_DAYS = 1.0  # contact-driven order lag: exponential, truncated to the horizon

_CHANNEL = {name: i for i, name in enumerate(CHANNELS)}
_INTENT = {name: i for i, name in enumerate(INTENTS)}
_DRIVER = {name: i for i, name in enumerate(DRIVERS)}
# Contacts per contacting customer at 26 weeks (measured); sizes the first batch of customers.
_CONTACTS_PER_CUSTOMER_26W = 3.05


def _vector(mapping: dict[str, float], names: tuple[str, ...]) -> np.ndarray:
    return np.array([mapping[name] for name in names], dtype=np.float64)


def _mask(names: tuple[str, ...], members: tuple[str, ...]) -> np.ndarray:
    return np.array([name in members for name in names])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _draw(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """Category indices drawn from one weight vector."""
    cumulative = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cumulative, rng.random(size), side="right"), len(weights) - 1)


def _draw_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One category index per row of a (rows, categories) weight matrix."""
    cumulative = np.cumsum(weights, axis=1)
    cumulative /= cumulative[:, -1:]
    picks = (rng.random(len(weights))[:, None] > cumulative).sum(axis=1)
    return np.minimum(picks, weights.shape[1] - 1)


@dataclass
class SimulatedData:
    """Simulated tables in the contract dtypes, the truth behind them, and the scenario."""

    contacts: pl.DataFrame
    orders: pl.DataFrame
    customers: pl.DataFrame
    truth: pl.DataFrame
    scenario: dict[str, object]
    # The decision log of a run with exploration: which follow-up and callback decisions a fair
    # coin took (training's uplift models learn and are judged on these); None without it.
    exploration: pl.DataFrame | None = None

    def write(self, directory: Path | str) -> Path:
        """Write contacts, orders, customers, truth (and exploration) as Parquet, plus scenario.json."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("contacts", "orders", "customers", "truth", "exploration"):
            frame = getattr(self, name)
            if frame is not None:
                frame.write_parquet(out / f"{name}.parquet", statistics=True)
        (out / "scenario.json").write_text(
            json.dumps(self.scenario, indent=2, sort_keys=True) + "\n"
        )
        return out

    def contact_to_order_ratio(self) -> float:
        """Share of contacts followed by an order of the same customer within H days."""
        return float(self.truth["converted"].mean())


@dataclass(frozen=True)
class _Scenario:
    start: datetime
    weeks: int
    span_seconds: float
    staffing_change_seconds: float
    stockouts: tuple[tuple[float, float], ...]
    n_agents: int

    def as_dict(self, seed: int, n_contacts: int, exploration: float = 0.0) -> dict[str, object]:
        def at(seconds: float) -> str:
            return (self.start + timedelta(seconds=seconds)).isoformat()

        return {
            "seed": seed,
            "n_contacts": n_contacts,
            "start": self.start.isoformat(),
            "end": at(self.span_seconds),
            "weeks": self.weeks,
            "horizon_days": HORIZON_DAYS,
            "journey_gap_days": JOURNEY_GAP_DAYS,
            "staffing_change_at": at(self.staffing_change_seconds),
            "stockouts": [{"start": at(a), "end": at(b)} for a, b in self.stockouts],
            "n_agents": self.n_agents,
            "effects": asdict(EFFECTS),
        } | ({"exploration_share": exploration} if exploration > 0 else {})


class _World:
    """Global state shared by all customers: agents, season, staffing, stock-outs."""

    def __init__(
        self, scenario: _Scenario, rng: np.random.Generator, exploration: float = 0.0
    ) -> None:
        self.scenario = scenario
        # Randomised decisions draw from their own stream (a child of the seed), so a run without
        # exploration makes exactly the draws, and writes exactly the bytes, it always did.
        self.exploration = exploration
        self.explore_rng = np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])
        n = scenario.n_agents
        self.agent_skill = np.clip(rng.normal(0.0, EFFECTS.agent_skill_sd, n), -0.7, 0.7)
        # Better agents send more follow-ups and transfer less; loads differ (shifts, part-time).
        self.agent_follow_up_logit = 1.8 + 0.8 * self.agent_skill + rng.normal(0.0, 0.5, n)
        self.agent_load = rng.lognormal(0.0, 0.3, n)
        self.channel_mix = _vector(CHANNEL_MIX, CHANNELS)
        self.intent_mix = _vector(INTENT_MIX, INTENTS)
        self.intent_effect = _vector(EFFECTS.intent, INTENTS)
        self.bot_share = _vector(BOT_SHARE, INTENTS)
        self.bot_channel = _vector(BOT_CHANNEL_FACTOR, CHANNELS)
        self.sync = _mask(CHANNELS, SYNC_CHANNELS)
        self.written = _mask(CHANNELS, WRITTEN_CHANNELS)
        self.inquiry = _mask(INTENTS, INQUIRY_INTENTS)
        self.simple = _mask(INTENTS, SIMPLE_INTENTS)
        self.complex = _mask(INTENTS, COMPLEX_INTENTS)
        self.sync_wait_median = np.array([SYNC_WAIT_MEDIAN_SECONDS.get(c, 0.0) for c in CHANNELS])
        self.written_reply_median = np.array(
            [WRITTEN_REPLY_MEDIAN_HOURS.get(c, 0.0) * HOUR for c in CHANNELS]
        )
        self.handle_median = _vector(HANDLE_MEDIAN_SECONDS, CHANNELS)
        self.hour_weights = np.array(HOUR_WEIGHTS)

    def season(self, seconds: np.ndarray) -> np.ndarray:
        return np.sin(2.0 * np.pi * seconds / (364.0 * DAY))

    def in_stockout(self, seconds: np.ndarray) -> np.ndarray:
        out = np.zeros(len(seconds), dtype=bool)
        for begin, end in self.scenario.stockouts:
            out |= (seconds >= begin) & (seconds < end)
        return out

    def wait_factor(self, seconds: np.ndarray) -> np.ndarray:
        """Staffing drift and seasonal load both lengthen waits."""
        staffing = np.where(
            seconds >= self.scenario.staffing_change_seconds, EFFECTS.staffing_wait_factor, 1.0
        )
        return staffing * (1.0 + 0.15 * self.season(seconds))

    def at_hour(self, rng: np.random.Generator, earliest: np.ndarray) -> np.ndarray:
        """A time on the day of ``earliest`` (or the next) at a realistic hour, after ``earliest``."""
        day_start = np.floor(earliest / DAY) * DAY
        hour = _draw(rng, self.hour_weights, len(earliest))
        moment = day_start + hour * HOUR + np.floor(rng.random(len(earliest)) * HOUR)
        return np.where(moment <= earliest, moment + DAY, moment)


@dataclass
class _Customers:
    segment: np.ndarray
    region: np.ndarray
    propensity: np.ndarray
    price_sensitivity: np.ndarray
    preferred_channel: np.ndarray
    journey_gap_days: np.ndarray
    web_rate: np.ndarray  # background orders per second
    first_seen: np.ndarray  # seconds from start (negative: known before the window)

    @property
    def size(self) -> int:
        return len(self.segment)


class _WebOrders:
    """Background orders without a contact: a Poisson process per customer, sorted by customer."""

    def __init__(
        self, customer: np.ndarray, seconds: np.ndarray, span: float, n_customers: int
    ) -> None:
        self.stride = float(np.ceil(span + 2 * DAY))
        keys = customer.astype(np.float64) * self.stride + seconds
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.customer = customer[order]
        self.seconds = seconds[order]
        # Where each customer's orders begin in the sorted keys.
        self.first_index = np.concatenate(
            [[0], np.cumsum(np.bincount(customer, minlength=n_customers))]
        )

    def count_before(self, customer: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        base = customer.astype(np.float64) * self.stride
        return np.searchsorted(self.keys, base + seconds, side="left") - self.first_index[customer]

    def first_from(self, customer: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """The customer's first web order at or after ``seconds`` (inf when none)."""
        base = customer.astype(np.float64) * self.stride
        at = np.searchsorted(self.keys, base + seconds, side="left")
        found = at < len(self.keys)
        at = np.minimum(at, max(len(self.keys) - 1, 0))
        if len(self.keys) == 0:
            return np.full(len(customer), np.inf)
        same = found & (self.customer[at] == customer)
        return np.where(same, self.seconds[at], np.inf)


def _lag_cdf(seconds: np.ndarray) -> np.ndarray:
    """P(contact-driven order lag <= seconds): exponential truncated to the horizon."""
    mean, horizon = ORDER_LAG_MEAN_DAYS * DAY, HORIZON_DAYS * DAY
    x = np.clip(seconds, 0.0, horizon)
    return -np.expm1(-x / mean) / -np.expm1(-horizon / mean)


def _draw_lag(rng: np.random.Generator, size: int) -> np.ndarray:
    mean, horizon = ORDER_LAG_MEAN_DAYS * DAY, HORIZON_DAYS * DAY
    lag = -mean * np.log1p(rng.random(size) * np.expm1(-horizon / mean))
    return np.clip(np.round(lag), 60.0, horizon - 60.0)


def _chain_order_probability(times: np.ndarray, own: np.ndarray) -> np.ndarray:
    """P(an order from this or a later contact of the journey within H days), per chain cell.

    The journey's potential contacts (times; inf where none) each convert with their own
    probability; the first success ends the journey and orders after a lag. For contact p the
    window is [t_p, t_p + H]: sum over k >= p of P(first success at k) * P(lag fits the window).
    """
    horizon = HORIZON_DAYS * DAY
    positions = times.shape[1]
    result = np.zeros_like(own)
    for p in range(positions):
        rows = np.flatnonzero(np.isfinite(times[:, p]))  # most journeys are short
        if len(rows) == 0:
            break
        window_end = times[rows, p] + horizon
        survive = np.ones(len(rows))
        total = np.zeros(len(rows))
        # Times rise along a chain: once a contact falls outside the window, so do all later ones.
        live = np.arange(len(rows))
        for k in range(p, positions):
            at = times[rows[live], k]
            inside = at <= window_end[live]
            live, at = live[inside], at[inside]
            if len(live) == 0:
                break
            chance = own[rows[live], k]
            total[live] += survive[live] * chance * _lag_cdf(window_end[live] - at)
            survive[live] *= 1.0 - chance
        result[rows, p] = total
    return result


# Compact dtypes for the per-contact arrays kept until the tables are built (memory at 1M+).
_STORED_DTYPES = {
    "channel": np.int8,
    "intent": np.int8,
    "agent": np.int16,
    "transfers": np.int16,
    "journey_position": np.int8,
    "drivers": np.float32,
    "effect_follow_up": np.float32,
    "effect_callback": np.float32,
}


class _Batch:
    """Journeys of one batch of contacting customers, simulated round by round."""

    def __init__(self, world: _World, rng: np.random.Generator, n_customers: int) -> None:
        self.world = world
        self.rng = rng
        span = world.scenario.span_seconds
        self.span = span
        self.customers = self._draw_customers(n_customers)
        self.history = self._draw_history_orders()
        self.web = self._draw_web_orders()
        self.contact_orders = np.zeros(n_customers, dtype=np.int64)
        self.contact_parts: list[dict[str, np.ndarray]] = []
        self.order_parts: list[dict[str, np.ndarray]] = []

    # -- customers -------------------------------------------------------------------------
    def _draw_customers(self, n: int) -> _Customers:
        rng, world = self.rng, self.world
        segment = _draw(rng, _vector(SEGMENT_MIX, SEGMENTS), n)
        propensity = rng.normal(0.0, EFFECTS.hidden_propensity_sd, n)
        # Existing customers were seen up to a year before the window; the rest are new.
        existing = rng.random(n) < 0.7
        first_seen = np.where(existing, -rng.random(n) * 365.0 * DAY, np.nan)
        return _Customers(
            segment=segment,
            region=_draw(rng, np.array([0.22, 0.2, 0.2, 0.18, 0.2]), n),
            propensity=propensity,
            price_sensitivity=rng.beta(2.0, 2.0, n),
            preferred_channel=_draw(rng, world.channel_mix, n),
            journey_gap_days=45.0 * rng.lognormal(0.0, 0.5, n),
            web_rate=EFFECTS.web_orders_per_customer_half_year
            / (182.0 * DAY)
            * np.exp(0.5 * propensity),
            first_seen=first_seen,
        )

    def _draw_history_orders(self) -> dict[str, np.ndarray]:
        """Orders in the year before the window (existing customers only): history for features."""
        rng, c = self.rng, self.customers
        existing = ~np.isnan(c.first_seen)
        known_days = np.where(existing, -c.first_seen / DAY, 0.0)
        counts = rng.poisson(known_days * c.web_rate * DAY * 1.5)
        customer = np.repeat(np.arange(c.size), counts)
        seconds = np.round(c.first_seen[customer] * rng.random(len(customer)))
        return {"customer": customer, "seconds": seconds, "count": counts}

    def _draw_web_orders(self) -> _WebOrders:
        rng, c = self.rng, self.customers
        horizon_end = self.span + HORIZON_DAYS * DAY
        counts = rng.poisson(c.web_rate * horizon_end)
        customer = np.repeat(np.arange(c.size), counts)
        seconds = np.round(rng.random(len(customer)) * horizon_end)
        self.web_customer, self.web_seconds = customer, seconds
        return _WebOrders(customer, seconds, horizon_end, c.size)

    def first_journey_starts(self) -> np.ndarray:
        """Seasonal arrivals: inverse CDF of a density 1 + 0.25 * season over the window."""
        grid = np.linspace(0.0, self.span, 2049)
        density = 1.0 + 0.25 * self.world.season(grid)
        cumulative = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2.0)])
        cumulative /= cumulative[-1]
        earliest = np.interp(self.rng.random(self.customers.size), cumulative, grid)
        return self.world.at_hour(self.rng, earliest)

    # -- journeys --------------------------------------------------------------------------
    def run(self, progress: Callable[[str], None] | None = None) -> None:
        next_start = self.first_journey_starts()
        for round_number in range(1, 1000):
            active = np.flatnonzero(next_start < self.span)
            if len(active) == 0:
                break
            if progress is not None:
                progress(f"journey round {round_number}: {len(active):,} customers")
            next_start[active] = self._journeys(active, next_start[active])

    def _journeys(self, customer: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Simulate one journey per customer; return when each customer's next journey starts."""
        rng, world, c = self.rng, self.world, self.customers
        n, positions = len(customer), MAX_JOURNEY_CONTACTS
        times = np.full((n, positions), np.inf)
        own = np.zeros((n, positions))
        own_observable = np.zeros((n, positions))
        lag = np.zeros((n, positions))
        cells: list[dict[str, np.ndarray]] = []

        seconds = start.copy()
        prev_channel = np.full(n, -1)
        prev_intent = np.full(n, -1)
        prev_inquiry_followed = np.zeros(n, dtype=bool)
        alive = np.arange(n)
        for p in range(positions):
            if len(alive) == 0:
                break
            cell = self._contacts(
                customer[alive],
                seconds[alive],
                p,
                prev_channel=prev_channel[alive],
                prev_intent=prev_intent[alive],
                prev_inquiry_followed=prev_inquiry_followed[alive],
            )
            cell["journey"] = alive
            cells.append(cell)
            times[alive, p] = seconds[alive]
            own[alive, p] = _sigmoid(cell["logit"])
            own_observable[alive, p] = _sigmoid(cell["logit_observable"])
            lag[alive, p] = _draw_lag(rng, len(alive))

            prev_channel[alive] = cell["channel"]
            prev_intent[alive] = cell["intent"]
            prev_inquiry_followed[alive] = world.inquiry[cell["intent"]] & cell["follow_up"]
            # Unserved and unresolved customers come back more often, and sooner after abandoning;
            # a bad experience (the drivers' total) sends many to a competitor instead.
            come_back = np.where(cell["abandoned"], 0.5, np.where(cell["resolved"], 0.38, 0.55))
            come_back *= np.exp(EFFECTS.come_back_per_driver_logit * cell["drivers"].sum(axis=1))
            gap_days = np.minimum(
                rng.exponential(np.where(cell["abandoned"], 1.0, 2.0)), JOURNEY_GAP_DAYS - 2.0
            )
            following = world.at_hour(rng, seconds[alive] + gap_days * DAY)
            following = np.minimum(following, seconds[alive] + (JOURNEY_GAP_DAYS - 0.5) * DAY)
            keep = (rng.random(len(alive)) < come_back) & (following < self.span)
            seconds[alive] = following
            alive = alive[keep]

        # Resolve outcomes: the first contact that converts ends the journey, and so does a web
        # order that comes first.
        exists = np.isfinite(times)
        converts = exists & (rng.random((n, positions)) < own)
        has_conversion = converts.any(axis=1)
        first = np.argmax(converts, axis=1)
        rows = np.arange(n)
        contact_order_at = np.where(has_conversion, times[rows, first] + lag[rows, first], np.inf)
        web_at = self.web.first_from(customer[rows], start)
        last_in_chain = np.where(exists, times, -np.inf).max(axis=1)
        keep = exists & (times <= web_at[:, None])
        keep &= ~has_conversion[:, None] | (np.arange(positions)[None, :] <= first[:, None])
        contact_order_kept = has_conversion & (contact_order_at < web_at)
        journey_end_by_chain = np.where(has_conversion, contact_order_at, last_in_chain)
        web_ends = web_at < journey_end_by_chain
        last_kept = np.where(keep, times, -np.inf).max(axis=1)
        # The labels see an order as ending a journey only within H days of its last contact.
        success = contact_order_kept | (web_ends & (web_at <= last_kept + HORIZON_DAYS * DAY))
        end = np.where(contact_order_kept, contact_order_at, np.where(web_ends, web_at, last_kept))

        chain = _chain_order_probability(times, own)
        chain_observable = _chain_order_probability(times, own_observable)
        no_web = np.exp(-c.web_rate[customer] * HORIZON_DAYS * DAY)
        no_web_observable = np.exp(-c.web_rate.mean() * HORIZON_DAYS * DAY)
        p_convert = 1.0 - no_web[:, None] * (1.0 - chain)
        p_observable = 1.0 - no_web_observable * (1.0 - chain_observable)

        for p, cell in enumerate(cells):
            journey = cell.pop("journey")
            kept = keep[journey, p]
            part = {
                name: values[kept].astype(_STORED_DTYPES.get(name, values.dtype), copy=False)
                for name, values in cell.items()
                if name not in ("logit", "logit_observable")
            }
            kept_journey = journey[kept]
            part["p_convert"] = p_convert[kept_journey, p]
            part["p_convert_observable"] = p_observable[kept_journey, p]
            part["p_contact"] = own[kept_journey, p]
            self.contact_parts.append(part)

        ordering = np.flatnonzero(contact_order_kept)
        self.contact_orders[customer[ordering]] += 1
        self.order_parts.append(
            {"customer": customer[ordering], "seconds": contact_order_at[ordering]}
        )

        pause_days = rng.exponential(c.journey_gap_days[customer])
        after_success = end + (1.0 + pause_days) * DAY
        after_fade = last_kept + (JOURNEY_GAP_DAYS + pause_days) * DAY
        return world.at_hour(rng, np.where(success, after_success, np.maximum(after_fade, end)))

    def _contacts(
        self,
        customer: np.ndarray,
        seconds: np.ndarray,
        position: int,
        *,
        prev_channel: np.ndarray,
        prev_intent: np.ndarray,
        prev_inquiry_followed: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Attributes, effects and conversion log-odds of the contacts at one journey position."""
        rng, world, c, e = self.rng, self.world, self.customers, EFFECTS
        n = len(customer)
        first = position == 0
        stockout = world.in_stockout(seconds)

        # Arrival: direction, intent, channel.
        outbound = (rng.random(n) < np.where(prev_inquiry_followed, 0.15, 0.04)) & (not first)
        intent_weights = np.broadcast_to(world.intent_mix, (n, len(INTENTS))).copy()
        # Stock-outs bring a surge of availability questions.
        intent_weights[:, _INTENT["availability"]] *= np.where(stockout, 2.5, 1.0)
        fresh_intent = _draw_rows(rng, intent_weights)
        intent = (
            fresh_intent if first else np.where(rng.random(n) < 0.75, prev_intent, fresh_intent)
        )
        mix_channel = _draw(rng, world.channel_mix, n)
        if first:
            channel = np.where(rng.random(n) < 0.7, c.preferred_channel[customer], mix_channel)
        else:
            channel = np.where(rng.random(n) < 0.75, prev_channel, mix_channel)
        channel = np.where(outbound, _CHANNEL["phone"], channel)
        sync, written = world.sync[channel], world.written[channel]

        # Routing: bot or agent.
        bot = ~outbound & (rng.random(n) < world.bot_share[intent] * world.bot_channel[channel])
        agent = np.where(
            bot,
            -1,
            np.searchsorted(np.cumsum(world.agent_load), rng.random(n) * world.agent_load.sum()),
        )
        agent = np.minimum(agent, world.scenario.n_agents - 1)
        skill = np.where(bot, 0.0, world.agent_skill[np.maximum(agent, 0)])

        # Waits: queue wait on sync channels, first reply on written ones, drifting over time.
        factor = world.wait_factor(seconds)
        noise = rng.standard_normal(n)
        sync_wait = world.sync_wait_median[channel] * factor * np.exp(1.0 * noise)
        written_wait = world.written_reply_median[channel] * factor * np.exp(1.1 * noise)
        wait = np.where(sync, sync_wait, written_wait)
        wait = np.where(bot, 3.0 * np.exp(0.5 * noise), wait)
        wait = np.where(outbound, 0.0, wait)
        wait = np.round(np.minimum(wait, 30.0 * DAY - 1.0), 1)

        queued = sync & ~bot & ~outbound
        can_call_back = queued & (channel == _CHANNEL["phone"])
        callback = can_call_back & (wait > 120.0) & (rng.random(n) < 0.5)
        # Exploration: a share of the callback and follow-up decisions is taken by a fair coin
        # (any queued phone contact; any agent-served contact) and logged as randomised.
        explore, xr = world.exploration, world.explore_rng
        callback_randomised = np.zeros(n, dtype=bool)
        if explore > 0:
            callback_randomised = can_call_back & (xr.random(n) < explore)
            callback = np.where(callback_randomised, xr.random(n) < 0.5, callback)
        base_abandon_odds = np.exp(-4.0 + 1.3 * np.log(np.maximum(wait, 1.0) / 60.0))
        abandon_odds = base_abandon_odds * np.where(callback, e.callback_abandon_odds, 1.0)
        abandoned = queued & (rng.random(n) < abandon_odds / (1.0 + abandon_odds))
        served = ~abandoned

        # Service: transfers, resolution, follow-up.
        complexity = np.where(world.complex[intent], 0.8, 0.0)
        transfer_any = _sigmoid(-1.7 + complexity - 0.4 * skill + np.where(written, -0.7, 0.0))
        # The draws behind transfers and the follow-up are kept for every contact, so the truth
        # can replay an abandoned contact as if served (the callback offer's effect).
        transfers_if_served = np.where(
            ~bot & ~outbound & (rng.random(n) < transfer_any),
            np.minimum(rng.geometric(0.6, n), 6),
            0,
        )
        transfers = np.where(served, transfers_if_served, 0)
        bot_resolves = np.where(
            world.simple[intent], 0.88, np.where(world.complex[intent], 0.15, 0.55)
        )
        agent_resolves = _sigmoid(2.9 + 0.8 * skill)
        resolved = served & (rng.random(n) < np.where(bot, bot_resolves, agent_resolves))
        inquiry = world.inquiry[intent]
        follow_up_chance = np.where(
            bot,
            1.0,
            _sigmoid(
                world.agent_follow_up_logit[np.maximum(agent, 0)] - np.where(inquiry, 0.0, 0.9)
            ),
        )
        follow_up_chance = np.where(outbound, 0.6, follow_up_chance)
        # Bots always send a transcript and missed contacts a "sorry we missed you" message, so
        # a contact without a follow-up is one an agent served and did not follow up.
        follow_up_if_served = rng.random(n) < follow_up_chance
        follow_up_randomised = np.zeros(n, dtype=bool)
        if explore > 0:
            agent_decides = ~bot & (xr.random(n) < explore)
            follow_up_if_served = np.where(agent_decides, xr.random(n) < 0.5, follow_up_if_served)
            follow_up_randomised = agent_decides & served
        follow_up = ~served | follow_up_if_served
        handle = world.handle_median[channel] * np.exp(0.6 * rng.standard_normal(n))
        handle = np.where(
            bot, 90.0 * np.exp(0.4 * rng.standard_normal(n)), handle + 90.0 * transfers
        )
        handle = np.round(np.where(abandoned, 0.0, np.minimum(handle, DAY)), 1)

        # Drivers: each a log-odds effect <= 0.
        doubling = np.log2
        long_wait = np.where(
            queued,
            np.maximum(
                e.long_wait_per_doubling
                * np.maximum(doubling(np.maximum(wait, 1.0) / e.long_wait_free_seconds), 0.0),
                e.driver_floor,
            )
            + np.where(abandoned, e.abandoned, 0.0),
            0.0,
        )
        slow_response = np.where(
            written & ~bot,
            np.maximum(
                e.slow_response_per_doubling
                * np.maximum(
                    doubling(np.maximum(wait, 1.0) / (e.slow_response_free_hours * HOUR)), 0.0
                ),
                e.driver_floor,
            ),
            0.0,
        )
        switched = (not first) & ~outbound & (channel != prev_channel)
        repeat_explanation = np.where(switched, e.channel_switch, 0.0)
        high_effort = np.full(n, e.per_extra_journey_contact * position)
        transfer_effect = np.select(
            [transfers == 0, transfers == 1],
            [0.0, e.one_transfer],
            np.maximum(e.two_transfers + e.per_further_transfer * (transfers - 2), e.driver_floor),
        )
        no_follow_up = np.where(
            ~follow_up,
            np.where(inquiry, e.no_follow_up_on_inquiry, e.no_follow_up_other),
            0.0,
        )
        bot_failure = np.where(bot & ~resolved, e.bot_unresolved, 0.0)
        price_weight = np.select(
            [intent == _INTENT["pricing"], intent == _INTENT["product_inquiry"]],
            [1.0, e.price_on_product_inquiry],
            0.0,
        )
        sensitivity = c.price_sensitivity[customer]
        price = e.price_max * price_weight * sensitivity
        price_observable = e.price_max * price_weight * 0.5  # the population mean of Beta(2, 2)
        out_of_stock = np.where(stockout & (intent == _INTENT["availability"]), e.out_of_stock, 0.0)
        drivers = np.stack(
            [
                long_wait, slow_response, repeat_explanation, high_effort, transfer_effect,
                no_follow_up, bot_failure, price, out_of_stock,
            ],
            axis=1,
        )  # fmt: skip

        # Everything else that moves conversion.
        past_orders = (
            self.history["count"][customer]
            + self.web.count_before(customer, seconds)
            + self.contact_orders[customer]
        )
        hour = np.floor((seconds % DAY) / HOUR)
        night = (hour >= 22) | (hour < 6)
        context = (
            e.base_logit
            + e.season_amplitude * world.season(seconds)
            + _vector(e.segment, SEGMENTS)[c.segment[customer]]
            + world.intent_effect[intent]
            + np.select(
                [past_orders == 1, past_orders >= 2],
                [e.one_past_order, e.two_plus_past_orders],
                0.0,
            )
            + np.where(night, e.night, 0.0)
            + skill
            + np.where(outbound, e.outbound, 0.0)
        )
        driver_sum = drivers.sum(axis=1)
        logit = context + driver_sum + c.propensity[customer]
        logit_observable = context + driver_sum - price + price_observable

        # True effects of the two decisions on this contact's own conversion chance (truth only).
        # Follow-up: the no_follow_up driver on or off, for contacts an agent served.
        missed_follow_up = np.where(inquiry, e.no_follow_up_on_inquiry, e.no_follow_up_other)
        with_follow_up = logit - no_follow_up
        effect_follow_up = np.where(
            served & ~bot,
            _sigmoid(with_follow_up) - _sigmoid(with_follow_up + missed_follow_up),
            np.nan,
        )
        # Callback offer: it lowers the abandonment chance; the contact is then served (with its
        # own transfer and follow-up draws) instead of abandoned.
        fixed = logit - np.where(abandoned, e.abandoned, 0.0) - transfer_effect - no_follow_up
        transfer_if_served_effect = np.select(
            [transfers_if_served == 0, transfers_if_served == 1],
            [0.0, e.one_transfer],
            np.maximum(
                e.two_transfers + e.per_further_transfer * (transfers_if_served - 2),
                e.driver_floor,
            ),
        )
        p_served = _sigmoid(
            fixed + transfer_if_served_effect + np.where(follow_up_if_served, 0.0, missed_follow_up)
        )
        p_abandoned = _sigmoid(fixed + e.abandoned)
        offered_odds = base_abandon_odds * e.callback_abandon_odds
        abandon_drop = base_abandon_odds / (1.0 + base_abandon_odds) - offered_odds / (
            1.0 + offered_odds
        )
        effect_callback = np.where(can_call_back, abandon_drop * (p_served - p_abandoned), np.nan)

        return {
            "customer": customer,
            "journey_position": np.full(n, position + 1),
            "seconds": seconds,
            "channel": channel,
            "outbound": outbound,
            "intent": intent,
            "bot": bot,
            "agent": agent,
            "wait": wait,
            "handle": handle,
            "transfers": transfers,
            "abandoned": abandoned,
            "resolved": resolved,
            "callback": callback,
            "follow_up": follow_up,
            "logit": logit,
            "logit_observable": logit_observable,
            "agent_skill": np.where(bot, np.nan, skill),
            "drivers": drivers,
            "effect_follow_up": effect_follow_up,
            "effect_callback": effect_callback,
            "follow_up_randomised": follow_up_randomised,
            "callback_randomised": callback_randomised,
        }

    def orders(self) -> dict[str, np.ndarray]:
        contact_driven = {
            name: np.concatenate([part[name] for part in self.order_parts])
            for name in ("customer", "seconds")
        }
        return {
            "customer": np.concatenate(
                [contact_driven["customer"], self.web_customer, self.history["customer"]]
            ),
            "seconds": np.concatenate(
                [contact_driven["seconds"], self.web_seconds, self.history["seconds"]]
            ),
            "from_contact": np.concatenate(
                [
                    np.ones(len(contact_driven["customer"]), dtype=bool),
                    np.zeros(len(self.web_customer) + len(self.history["customer"]), dtype=bool),
                ]
            ),
        }


def _scenario(rng: np.random.Generator, start: datetime, weeks: int, n_contacts: int) -> _Scenario:
    span = weeks * 7 * DAY
    change_week = max(1, round(weeks * 16 / 26))
    stockouts = []
    for _ in range(max(1, round(weeks / 9))):
        length = rng.uniform(7.0, 21.0) * DAY
        begin = rng.uniform(min(7 * DAY, span / 4), max(span - length - 7 * DAY, span / 2))
        stockouts.append(
            (float(np.floor(begin / DAY) * DAY), float(np.floor((begin + length) / DAY) * DAY))
        )
    n_agents = int(np.clip(60 + n_contacts // 10_000, 60, 120))
    return _Scenario(
        start=start,
        weeks=weeks,
        span_seconds=span,
        staffing_change_seconds=change_week * 7 * DAY,
        stockouts=tuple(sorted(stockouts)),
        n_agents=n_agents,
    )


def simulate(
    n_contacts: int,
    seed: int,
    start: datetime | None = None,
    weeks: int = 26,
    *,
    exploration: float = 0.0,
    progress: Callable[[str], None] | None = None,
) -> SimulatedData:
    """Simulate exactly ``n_contacts`` contacts over ``weeks`` weeks from ``start`` (UTC).

    ``start`` defaults to :data:`DEFAULT_START` (never "now", so a seed always gives the same
    bytes). ``exploration`` (0-1) is the share of follow-up and callback decisions taken by a fair
    coin and logged in :attr:`SimulatedData.exploration`; 0 (the default) gives the same bytes as
    a simulator without exploration. ``progress`` receives a line per stage for long runs.
    """
    if isinstance(n_contacts, bool) or not isinstance(n_contacts, int) or n_contacts < 1:
        raise CTOError(f"n_contacts must be a whole number >= 1, got {n_contacts!r}")
    if isinstance(weeks, bool) or not isinstance(weeks, int) or weeks < 2:
        raise CTOError(f"weeks must be a whole number >= 2, got {weeks!r}")
    if isinstance(exploration, bool) or not 0.0 <= float(exploration) <= 1.0:
        raise CTOError(f"exploration must be a share between 0 and 1, got {exploration!r}")
    start = DEFAULT_START if start is None else start
    if start.tzinfo is None:
        raise CTOError("start must be timezone-aware (UTC), e.g. datetime(2026, 1, 5, tzinfo=UTC)")
    start = start.astimezone(UTC).replace(microsecond=0)

    rng = np.random.default_rng(seed)
    scenario = _scenario(rng, start, weeks, n_contacts)
    world = _World(scenario, rng, float(exploration))
    per_customer = _CONTACTS_PER_CUSTOMER_26W * (0.35 + 0.65 * weeks / 26)
    batches: list[_Batch] = []
    simulated = 0
    while simulated < n_contacts:
        missing = n_contacts - simulated
        size = int(missing / per_customer * (1.04 if not batches else 1.15)) + 50
        if progress is not None:
            progress(f"simulating {size:,} customers")
        batch = _Batch(world, rng, size)
        batch.run(progress)
        batches.append(batch)
        simulated += sum(len(part["customer"]) for part in batch.contact_parts)
        per_customer = max(simulated / sum(b.customers.size for b in batches), 0.5)
    if progress is not None:
        progress("assembling tables")
    return _assemble(batches, scenario, rng, n_contacts, seed, exploration=float(exploration))


def _assemble(
    batches: list[_Batch],
    scenario: _Scenario,
    rng: np.random.Generator,
    n_contacts: int,
    seed: int,
    *,
    exploration: float = 0.0,
) -> SimulatedData:
    offsets = np.cumsum([0] + [b.customers.size for b in batches])
    contact_parts, order_parts = [], []
    for batch, offset in zip(batches, offsets[:-1], strict=True):
        for part in batch.contact_parts:
            part["customer"] = part["customer"] + offset
            contact_parts.append(part)
        batch.contact_parts = []
        orders = batch.orders()
        orders["customer"] = orders["customer"] + offset
        order_parts.append(orders)
    # One field at a time, releasing the parts as they are joined: memory stays near one copy.
    contacts = {
        name: np.concatenate([part.pop(name) for part in contact_parts])
        for name in list(contact_parts[0])
    }
    orders = {name: np.concatenate([p[name] for p in order_parts]) for name in order_parts[0]}

    # Keep whole customers in order until n_contacts; the last one kept loses its latest contacts.
    # Then put the kept contacts in time order (ids increase with time), gathering each array once.
    customer, seconds = contacts["customer"], contacts["seconds"]
    kept = np.lexsort((seconds, customer))[:n_contacts]
    last_customer, last_contact = customer[kept[-1]], seconds[kept[-1]]
    kept = kept[np.lexsort((customer[kept], seconds[kept]))]
    for name in list(contacts):
        contacts[name] = contacts[name][kept]
    order_keep = (orders["customer"] < last_customer) | (
        (orders["customer"] == last_customer)
        & (orders["seconds"] <= last_contact + HORIZON_DAYS * DAY)
    )
    orders = {name: values[order_keep] for name, values in orders.items()}

    # Web-only shoppers: customers who order but never contact (about 15% of customers).
    contacting = int(last_customer) + 1
    segment = np.concatenate([b.customers.segment for b in batches])[:contacting]
    region = np.concatenate([b.customers.region for b in batches])[:contacting]
    first_seen = np.concatenate([b.customers.first_seen for b in batches])[:contacting]
    propensity = np.concatenate([b.customers.propensity for b in batches])[:contacting]
    sensitivity = np.concatenate([b.customers.price_sensitivity for b in batches])[:contacting]
    n_web_only = int(round(contacting * 0.15 / 0.85))
    horizon_end = scenario.span_seconds + HORIZON_DAYS * DAY
    web_only_rate = 1.2 / (182.0 * DAY) * rng.lognormal(0.0, 0.5, n_web_only)
    web_counts = rng.poisson(web_only_rate * horizon_end)
    web_only_customer = contacting + np.repeat(np.arange(n_web_only), web_counts)
    web_only_seconds = np.round(rng.random(len(web_only_customer)) * horizon_end)
    orders = {
        "customer": np.concatenate([orders["customer"], web_only_customer]),
        "seconds": np.concatenate([orders["seconds"], web_only_seconds]),
        "from_contact": np.concatenate(
            [orders["from_contact"], np.zeros(len(web_only_customer), dtype=bool)]
        ),
    }
    segment = np.concatenate([segment, _draw(rng, _vector(SEGMENT_MIX, SEGMENTS), n_web_only)])
    region = np.concatenate([region, _draw(rng, np.array([0.22, 0.2, 0.2, 0.18, 0.2]), n_web_only)])
    first_seen = np.concatenate(
        [
            first_seen,
            np.where(rng.random(n_web_only) < 0.7, -rng.random(n_web_only) * 365 * DAY, np.nan),
        ]
    )
    n_customers = contacting + n_web_only

    # New customers were first seen at their first contact or order.
    first_activity = np.full(n_customers, np.inf)
    np.minimum.at(first_activity, contacts["customer"], contacts["seconds"])
    np.minimum.at(first_activity, orders["customer"], orders["seconds"])
    first_seen = np.where(np.isnan(first_seen), first_activity, first_seen)
    active = np.isfinite(first_activity)

    # Contacts in time order get increasing ids; orders attributed to the contact that drove them.
    n = len(kept)
    order_time_order = np.lexsort((orders["customer"], orders["seconds"]))
    orders = {name: values[order_time_order] for name, values in orders.items()}
    driven_contact = _attributed_contact(contacts, orders)
    attributed = (driven_contact >= 0) & (rng.random(len(driven_contact)) < 0.7)

    start_us = int(scenario.start.timestamp()) * 1_000_000
    converted = _converted(contacts, orders)
    drivers = contacts["drivers"]
    strongest = np.argmin(drivers, axis=1)
    strength = drivers[np.arange(n), strongest].astype(np.float64)
    named = strength <= NAMED_DRIVER
    driver = np.where(named, strongest, _DRIVER["none"])
    strength = np.where(named, strength, 0.0)
    reason_index = np.array([DROPOFF_REASONS.index(DRIVER_REASON[d]) for d in DRIVERS])
    true_reason = reason_index[driver]
    recorded = ~converted & (rng.random(n) < EFFECTS.recorded_reason_share)
    wrong = recorded & (rng.random(n) < EFFECTS.wrong_reason_share)
    other_code = (true_reason + rng.integers(1, len(DROPOFF_REASONS), n)) % len(DROPOFF_REASONS)
    recorded_reason = np.where(wrong, other_code, true_reason)

    customer_ids = _ids("u-", np.arange(n_customers), 7)
    contact_ids = _ids("c-", np.arange(n), 8)
    contacts_frame = pl.DataFrame(
        {
            "contact_id": contact_ids,
            "customer_id": customer_ids.gather(contacts["customer"]),
            "started_at": _times(start_us, contacts["seconds"]),
            "channel": _enum(CONTACTS, "channel", contacts["channel"]),
            "direction": _enum(CONTACTS, "direction", contacts["outbound"].astype(np.int64)),
            "intent": _enum(CONTACTS, "intent", contacts["intent"]),
            "handled_by": _enum(CONTACTS, "handled_by", contacts["bot"].astype(np.int64)),
            "agent_id": _ids("a-", np.maximum(contacts["agent"], 0), 3)
            .scatter(np.flatnonzero(contacts["agent"] < 0), None)
            .scatter(np.flatnonzero(contacts["abandoned"]), None),
            "wait_seconds": contacts["wait"].astype(np.float64),
            "handle_seconds": contacts["handle"].astype(np.float64),
            "transfers": pl.Series(contacts["transfers"], dtype=pl.Int32),
            "abandoned": contacts["abandoned"],
            "resolved": contacts["resolved"],
            "callback_offered": contacts["callback"],
            "follow_up_sent": contacts["follow_up"],
            "dropoff_reason": _enum(CONTACTS, "dropoff_reason", recorded_reason).scatter(
                np.flatnonzero(~recorded), None
            ),
        },
        schema=CONTACTS.polars_schema,
    )
    amount_median = _vector(ORDER_MEDIAN_AMOUNT, SEGMENTS)[segment[orders["customer"]]]
    amount = np.round(amount_median * np.exp(0.8 * rng.standard_normal(len(orders["customer"]))), 2)
    orders_frame = pl.DataFrame(
        {
            "order_id": _ids("o-", np.arange(len(amount)), 8),
            "customer_id": customer_ids.gather(orders["customer"]),
            "ordered_at": _times(start_us, orders["seconds"]),
            "amount": amount,
            "contact_id": contact_ids.gather(np.maximum(driven_contact, 0)).scatter(
                np.flatnonzero(~attributed), None
            ),
        },
        schema=ORDERS.polars_schema,
    )
    customer_rows = np.flatnonzero(active)
    customers_frame = pl.DataFrame(
        {
            "customer_id": customer_ids.gather(customer_rows),
            "segment": _enum(CUSTOMERS, "segment", segment[customer_rows]),
            "region": pl.Series(REGIONS).gather(region[customer_rows]),
            "first_seen_at": _times(start_us, first_seen[customer_rows]),
        },
        schema=CUSTOMERS.polars_schema,
    )
    truth = pl.DataFrame(
        {
            "contact_id": contact_ids,
            "p_convert": contacts["p_convert"],
            "converted": converted,
            "true_dropoff_reason": _enum(CONTACTS, "dropoff_reason", true_reason).scatter(
                np.flatnonzero(converted), None
            ),
            "planted_driver": pl.Series(DRIVERS, dtype=Driver).gather(driver),
            "driver_strength": strength,
            "customer_id": customer_ids.gather(contacts["customer"]),
            "journey_position": pl.Series(contacts["journey_position"], dtype=pl.Int32),
            "p_contact": contacts["p_contact"],
            "p_convert_observable": contacts["p_convert_observable"],
            "hidden_propensity": propensity[contacts["customer"]],
            "price_sensitivity": sensitivity[contacts["customer"]],
            "agent_skill": pl.Series(contacts["agent_skill"]).fill_nan(None),
            **{
                f"effect_{name}": pl.Series(drivers[:, i], dtype=pl.Float32)
                for i, name in enumerate(DRIVERS[:-1])
            },
            "effect_of_follow_up": pl.Series(contacts["effect_follow_up"]).fill_nan(None),
            "effect_of_callback_offer": pl.Series(contacts["effect_callback"]).fill_nan(None),
        }
    )
    exploration_frame = None
    if exploration > 0:
        exploration_frame = pl.DataFrame(
            {
                "contact_id": contact_ids,
                "follow_up_randomised": contacts["follow_up_randomised"],
                "callback_randomised": contacts["callback_randomised"],
            }
        )
    return SimulatedData(
        contacts=contacts_frame,
        orders=orders_frame,
        customers=customers_frame,
        truth=truth,
        scenario=scenario.as_dict(seed, n_contacts, exploration),
        exploration=exploration_frame,
    )


def _attributed_contact(
    contacts: dict[str, np.ndarray], orders: dict[str, np.ndarray]
) -> np.ndarray:
    """For contact-driven orders, the index of the customer's latest contact before it (else -1)."""
    stride = float(
        np.ceil(max(contacts["seconds"].max(), orders["seconds"].max()) + 2 * DAY + 400 * DAY)
    )
    offset = 400 * DAY  # history orders have negative times
    contact_keys = contacts["customer"] * stride + contacts["seconds"] + offset
    order_keys = orders["customer"] * stride + orders["seconds"] + offset
    by_key = np.argsort(contact_keys, kind="stable")
    at = np.searchsorted(contact_keys[by_key], order_keys, side="right") - 1
    found = orders["from_contact"] & (at >= 0)
    index = by_key[np.maximum(at, 0)]
    found &= contacts["customer"][index] == orders["customer"]
    return np.where(found, index, -1)


def _converted(contacts: dict[str, np.ndarray], orders: dict[str, np.ndarray]) -> np.ndarray:
    """An order by the same customer within H days at or after the contact started."""
    offset = 400 * DAY
    stride = float(
        np.ceil(max(contacts["seconds"].max(), orders["seconds"].max()) + 2 * DAY + offset)
    )
    order_keys = np.sort(orders["customer"] * stride + orders["seconds"] + offset)
    contact_keys = contacts["customer"] * stride + contacts["seconds"] + offset
    at = np.searchsorted(order_keys, contact_keys, side="left")
    next_order = order_keys[np.minimum(at, len(order_keys) - 1)]
    return (at < len(order_keys)) & (next_order - contact_keys <= HORIZON_DAYS * DAY)


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pl.Series:
    return (
        pl.select(
            pl.format(
                f"{prefix}{{}}", pl.Series(numbers, dtype=pl.Int64).cast(pl.String).str.zfill(width)
            )
        )
        .to_series()
        .alias("")
    )


def _times(start_us: int, seconds: np.ndarray) -> pl.Series:
    finite = np.isfinite(seconds)
    micros = start_us + np.round(np.where(finite, seconds, 0.0)).astype(np.int64) * 1_000_000
    series = pl.Series(micros, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))
    return series.scatter(np.flatnonzero(~finite), None) if (~finite).any() else series


def _enum(table, column: str, index: np.ndarray) -> pl.Series:
    dtype = table.column(column).dtype
    return pl.Series(dtype.categories.to_list(), dtype=dtype).gather(index)
