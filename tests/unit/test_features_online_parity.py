"""Online features (customer state + each feature's online form) equal batch ``build_features``.

Property-based: hypothesis draws a customer's history (contacts, some only posted at arrival,
orders, a profile), the order the events reach the state (shuffled, contacts posted twice with a
changed outcome), and a contact to score at a random instant (ties with history, events after it,
events years before it: lifetime features at the default settings), at both moments. Every feature
of the registry must come out equal (floats to 1e-9) to the batch pipeline's row for the contact.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.online import CustomerState, online_values, state_from_history
from features.pipeline import build_features
from features.registry import FEATURE_SET
from features.schema import CONTACTS, CUSTOMERS, ORDERS

BASE = datetime(2026, 3, 1, tzinfo=UTC)  # inside the simulated rates' span
CUSTOMER = "u-prop"
CHANNELS = ("phone", "email", "chat", "sms")
INTENTS = ("pricing", "complaint", "delivery")
AGENTS = ("a-001", "a-002", None)
GAP_DAYS, HORIZON_DAYS = 14, 7  # the defaults (features.settings)


@functools.cache
def _rates():
    """As-of rate tables from a small simulated data set (they change over the drawn instants)."""
    from features.labels import label_contacts
    from features.rates import compute_rates
    from features.simulate import simulate

    data = simulate(n_contacts=3000, seed=5)
    labeled = label_contacts(data.contacts, data.orders, horizon_days=HORIZON_DAYS)
    return compute_rates(labeled, horizon_days=HORIZON_DAYS)


# Times: mostly on a coarse grid (ties between contacts, orders and outcomes happen), sometimes
# off it by microseconds (window starts are at millisecond resolution), spread over ~1.5 years.
offsets = st.one_of(
    st.integers(-400, 120).map(lambda d: timedelta(days=d)),
    st.tuples(st.integers(-100, 100), st.integers(0, 23)).map(
        lambda t: timedelta(days=t[0], hours=t[1])
    ),
    st.tuples(st.integers(-95, 5), st.integers(0, 86_399_999_999)).map(
        lambda t: timedelta(days=t[0], microseconds=t[1])
    ),
)
durations = st.one_of(
    st.sampled_from([0.0, 0.0005, 0.0015, 30.5, 3600.0, 86_400.0]),
    st.floats(0, 200_000, allow_nan=False).map(lambda x: round(x, 3)),
)


@st.composite
def outcomes(draw, arrival_only: bool = False) -> dict:
    if arrival_only:
        return dict.fromkeys(
            (
                "handled_by",
                "agent_id",
                "wait_seconds",
                "handle_seconds",
                "transfers",
                "abandoned",
                "resolved",
                "callback_offered",
                "follow_up_sent",
            )
        )
    bot = draw(st.booleans())
    return {
        "handled_by": "bot" if bot else "agent",
        "agent_id": None if bot else draw(st.sampled_from(AGENTS)),
        "wait_seconds": draw(durations),
        "handle_seconds": draw(durations),
        "transfers": draw(st.integers(0, 3)),
        "abandoned": draw(st.booleans()),
        "resolved": draw(st.booleans()),
        "callback_offered": draw(st.booleans()),
        "follow_up_sent": draw(st.booleans()),
    }


@st.composite
def contacts(draw, index: int, complete: bool = False) -> dict:
    return {
        "contact_id": f"c-{index:03d}",
        "customer_id": CUSTOMER,
        "started_at": BASE + draw(offsets),
        "channel": draw(st.sampled_from(CHANNELS)),
        "direction": draw(st.sampled_from(("inbound", "outbound"))),
        "intent": draw(st.sampled_from(INTENTS)),
        "dropoff_reason": None,
    } | draw(outcomes(arrival_only=not complete and draw(st.integers(0, 5)) == 0))


@st.composite
def histories(draw) -> dict:
    n_contacts = draw(st.integers(0, 9))
    history = [draw(contacts(i)) for i in range(n_contacts)]
    orders = [
        {
            "order_id": f"o-{i:03d}",
            "customer_id": CUSTOMER,
            "ordered_at": BASE + draw(offsets),
            "amount": draw(st.sampled_from([0.0, 0.005, 0.015, 19.99, 250.0, 1234.565])),
            "contact_id": None,
        }
        for i in range(draw(st.integers(0, 5)))
    ]
    edge = None
    if history and draw(st.booleans()):  # an order exactly at the horizon after a contact
        anchor = draw(st.sampled_from(history))["started_at"]
        shift = timedelta(days=HORIZON_DAYS) + draw(
            st.sampled_from([timedelta(0), -timedelta(microseconds=1)])
        )
        orders.append(
            {
                "order_id": "o-edge",
                "customer_id": CUSTOMER,
                "ordered_at": anchor + shift,
                "amount": 5.0,
                "contact_id": None,
            }
        )
        edge = anchor + shift
    customer = None
    if draw(st.booleans()):
        customer = {
            "customer_id": CUSTOMER,
            "segment": draw(st.sampled_from(("consumer", "enterprise", None))),
            "region": None,
            "first_seen_at": draw(st.none() | offsets.map(lambda o: BASE + o)),
        }
    scored = draw(contacts(999, complete=True))
    tie = draw(st.integers(0, 4)) if history else 0
    if tie == 4 and edge is not None:  # soon after that order: does it end the journey?
        scored["started_at"] = edge + timedelta(hours=draw(st.integers(1, 48)))
    elif tie == 1:  # the same instant as a history contact
        scored["started_at"] = draw(st.sampled_from(history))["started_at"]
    elif tie == 2:  # within the millisecond after a history contact's outcome became known
        known = draw(st.sampled_from(history))
        seconds = (known["wait_seconds"] or 0.0) + (known["handle_seconds"] or 0.0)
        scored["started_at"] = (
            known["started_at"]
            + timedelta(microseconds=int(seconds * 1e6))
            + timedelta(microseconds=draw(st.integers(1, 999)))
        )
    # Events reach the state in any order; some contacts first as an earlier version.
    events = [("contact", c) for c in history] + [("order", o) for o in orders]
    earlier = [
        ("contact", c | draw(outcomes(arrival_only=draw(st.booleans()))))
        for c in history
        if draw(st.integers(0, 3)) == 0
    ]
    order = draw(st.permutations(list(range(len(events)))))
    if draw(st.booleans()):  # the scored contact itself was posted at arrival: not its own history
        earlier.append(("contact", scored | draw(outcomes(arrival_only=True))))
    return {
        "contacts": history,
        "orders": orders,
        "customer": customer,
        "scored": scored,
        "deliveries": earlier + [events[i] for i in order],
        "split": draw(st.integers(0, len(events))),
    }


def _batch(case: dict, moment: str) -> dict:
    contacts = pl.DataFrame([*case["contacts"], case["scored"]], schema=CONTACTS.polars_schema)
    orders = pl.DataFrame(case["orders"], schema=ORDERS.polars_schema)
    customers = (
        pl.DataFrame([case["customer"]], schema=CUSTOMERS.polars_schema)
        if case["customer"]
        else None
    )
    frame = build_features(
        contacts,
        orders,
        customers,
        _rates(),
        moment,
        journey_gap_days=GAP_DAYS,
        horizon_days=HORIZON_DAYS,
    )
    return frame.filter(pl.col("contact_id") == case["scored"]["contact_id"]).row(0, named=True)


def _delivered_state(case: dict) -> CustomerState:
    """Events applied one delivery at a time, in the drawn order (and in two batches)."""
    state = CustomerState()
    for kind, row in case["deliveries"][: case["split"]]:
        (state.add_contacts if kind == "contact" else state.add_orders)([row])
    rest = case["deliveries"][case["split"] :]
    late = CustomerState.from_json(state.to_json())  # stored and read back between deliveries
    late.add_contacts([row for kind, row in rest if kind == "contact"])
    late.add_orders([row for kind, row in rest if kind == "order"])
    if case["customer"]:
        late.set_customer(case["customer"])
    return late


def _assert_equal(batch: dict, online: dict, moment: str) -> None:
    names = [f.name for f in FEATURE_SET.for_moment(moment)]
    assert list(online) == names
    for name in names:
        expected, got = batch[name], online[name]
        if isinstance(expected, float) and expected is not None:
            assert got == pytest.approx(expected, abs=1e-9, rel=1e-12), name
        else:
            assert got == expected, name


@pytest.mark.parametrize("moment", ["arrival", "after_contact"])
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=histories())
def test_online_features_equal_batch_features(case, moment):
    batch = _batch(case, moment)
    online = online_values(
        _delivered_state(case),
        case["scored"],
        moment,
        journey_gap_days=GAP_DAYS,
        horizon_days=HORIZON_DAYS,
        rates=_rates(),
    )
    _assert_equal(batch, online, moment)
    # A history sent with the request folds into a fresh state by the same code.
    fresh = state_from_history(case["contacts"], case["orders"], case["customer"])
    again = online_values(
        fresh,
        case["scored"],
        moment,
        journey_gap_days=GAP_DAYS,
        horizon_days=HORIZON_DAYS,
        rates=_rates(),
    )
    assert again == online


def test_every_feature_declares_its_online_form():
    missing = [f.name for f in FEATURE_SET.features if f.online is None]
    assert missing == []
