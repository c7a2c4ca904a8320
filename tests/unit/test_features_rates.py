"""Point-in-time, smoothed conversion rates (features.rates) with hand-worked numbers.

Labeled contacts (H = 7 days, prior strength m = 2):
    L1  agent a1  pricing   Mar 1 00:00  converted      -> settled Mar 8 00:00
    L2  agent a1  pricing   Mar 2 00:00  not converted  -> settled Mar 9 00:00
    L3  agent a2  delivery  Mar 1 00:00  not converted  -> settled Mar 8 00:00
Global rate: unknown before Mar 8 (strictly after), 1/2 during Mar 8, 1/3 from Mar 9 on.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from features.rates import RateTables, compute_rates, join_rates
from features.schema import UTC_TIME, Channel, Handler, Intent


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


@pytest.fixture(scope="module")
def rates() -> RateTables:
    labeled = pl.DataFrame(
        {
            "contact_id": ["L1", "L2", "L3"],
            "started_at": [at(1), at(2), at(1)],
            "agent_id": ["a1", "a1", "a2"],
            "handled_by": ["agent"] * 3,
            "intent": ["pricing", "pricing", "delivery"],
            "channel": ["phone"] * 3,
            "converted": [True, False, False],
        }
    ).with_columns(
        pl.col("started_at").cast(UTC_TIME),
        pl.col("handled_by").cast(Handler),
        pl.col("intent").cast(Intent),
        pl.col("channel").cast(Channel),
    )
    return compute_rates(labeled, horizon_days=7, prior_strength=2.0)


def _score(rates, started_at, agent="a1", intent="pricing", handled_by="agent"):
    contact = pl.DataFrame(
        {
            "started_at": [started_at],
            "agent_id": [agent],
            "handled_by": [handled_by],
            "intent": [intent],
            "channel": ["phone"],
        }
    ).with_columns(pl.col("started_at").cast(UTC_TIME), pl.col("handled_by").cast(Handler))
    return join_rates(contact, rates).row(0, named=True)


def test_nothing_known_before_first_window_closes(rates):
    for moment in (at(3), at(7, 23), at(8)):  # at(8): settled at that very instant, not before
        row = _score(rates, moment)
        assert row["_rate_agent"] is None and row["_rate_intent"] is None
        assert row["_rate_agent_outcomes"] == 0


def test_only_settled_outcomes_count(rates):
    row = _score(rates, at(8, 12))  # L1 and L3 settled, L2 still open
    assert row["_rate_agent_outcomes"] == 1
    assert row["_rate_agent"] == pytest.approx((1 + 2 * 0.5) / (1 + 2))
    assert row["_rate_intent"] == pytest.approx((1 + 2 * 0.5) / (1 + 2))
    assert row["_rate_channel"] == pytest.approx((1 + 2 * 0.5) / (2 + 2))


def test_later_and_smoothed(rates):
    row = _score(rates, at(20))
    assert row["_rate_agent_outcomes"] == 2
    assert row["_rate_agent"] == pytest.approx((1 + 2 / 3) / (2 + 2))
    a2 = _score(rates, at(20), agent="a2", intent="delivery")
    assert a2["_rate_agent"] == pytest.approx((0 + 2 / 3) / (1 + 2))
    assert 0 < a2["_rate_agent"] < 1  # one unconverted contact does not make a 0% agent


def test_new_agent_and_bot_get_the_global_rate(rates):
    new = _score(rates, at(20), agent="a9", intent="returns")
    assert new["_rate_agent"] == pytest.approx(1 / 3) and new["_rate_agent_outcomes"] == 0
    assert new["_rate_intent"] == pytest.approx(1 / 3)
    bot = _score(rates, at(20), agent=None, handled_by="bot")
    assert bot["_rate_agent"] == pytest.approx(1 / 3)


def test_round_trip(rates, tmp_path):
    rates.write(tmp_path)
    again = RateTables.read(tmp_path)
    assert again.horizon_days == 7 and again.prior_strength == 2.0
    for name, table in rates.tables.items():
        assert again.tables[name].equals(table)
    assert _score(again, at(8, 12)) == _score(rates, at(8, 12))
    latest = rates.latest("agent")
    assert latest.filter(pl.col("key") == "a1")["outcomes"].item() == 2
