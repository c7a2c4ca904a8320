"""Unit behaviour of the simulator: arguments, the journey probability, the CLI."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pytest

from cto.cli import main
from features.errors import CTOError
from features.schema import DROPOFF_REASONS
from features.simulate import (
    DAY,
    DRIVER_REASON,
    DRIVER_SIGNALS,
    DRIVERS,
    EFFECTS,
    _chain_order_probability,
    _lag_cdf,
    simulate,
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_contacts": 0, "seed": 1}, "n_contacts"),
        ({"n_contacts": 10, "seed": 1, "weeks": 1}, "weeks"),
        ({"n_contacts": 10, "seed": 1, "start": datetime(2026, 1, 5)}, "timezone"),
    ],
)
def test_bad_arguments_raise_a_clear_error(kwargs, message):
    with pytest.raises(CTOError, match=message):
        simulate(**kwargs)


def test_every_driver_has_a_reason_and_signals():
    assert set(DRIVER_REASON) == set(DRIVERS) == set(DRIVER_SIGNALS)
    assert set(DRIVER_REASON.values()) <= set(DROPOFF_REASONS)


def test_effects_are_declared_with_the_documented_signs():
    for name in (
        "long_wait_per_doubling",
        "slow_response_per_doubling",
        "channel_switch",
        "per_extra_journey_contact",
        "one_transfer",
        "two_transfers",
        "no_follow_up_on_inquiry",
        "bot_unresolved",
        "price_max",
        "out_of_stock",
        "night",
    ):
        assert getattr(EFFECTS, name) < 0, name
    # Hidden-trait drivers stay weaker than "strong": a model cannot see them.
    assert EFFECTS.price_max > -1.0 and EFFECTS.out_of_stock > -1.0


def test_one_contact_journey_probability_is_its_own():
    times = np.array([[0.0, np.inf]])
    own = np.array([[0.2, 0.0]])
    assert _chain_order_probability(times, own)[0, 0] == pytest.approx(0.2)


def test_later_contacts_count_only_if_their_order_fits_the_window():
    # Contact 2 comes 2 days after contact 1; its order must come within the 5 days left.
    times = np.array([[0.0, 2 * DAY, 9 * DAY]])
    own = np.array([[0.1, 0.3, 0.5]])
    result = _chain_order_probability(times, own)[0]
    expected_first = 0.1 + 0.9 * 0.3 * _lag_cdf(np.array([5 * DAY]))[0]
    assert result[0] == pytest.approx(expected_first)
    # Contact 3 is 7 days after contact 2: its order can never fall in contact 2's window.
    assert result[1] == pytest.approx(0.3)
    assert result[2] == pytest.approx(0.5)


def test_chain_probability_matches_monte_carlo():
    rng = np.random.default_rng(0)
    times = np.array([[0.0, 1.5 * DAY, 4.0 * DAY]])
    own = np.array([[0.15, 0.25, 0.4]])
    draws = 200_000
    converts = rng.random((draws, 3)) < own
    first = np.argmax(converts, axis=1)
    mean, horizon = 1.0 * DAY, 7 * DAY
    lag = -mean * np.log1p(rng.random(draws) * np.expm1(-horizon / mean))
    ordered_at = np.where(converts.any(axis=1), times[0, first] + lag, np.inf)
    simulated = (ordered_at <= horizon).mean()
    assert _chain_order_probability(times, own)[0, 0] == pytest.approx(simulated, abs=0.004)


def test_cli_writes_tables_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "sim"
    code = main(
        ["simulate", "--contacts", "3000", "--seed", "5", "--weeks", "10", "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "3,000 rows" in printed and "contact-to-order ratio" in printed
    for name in ("contacts", "orders", "customers", "truth"):
        assert (out / f"{name}.parquet").exists()
    assert pl.read_parquet(out / "contacts.parquet").height == 3000


def test_cli_rejects_a_bad_start(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--start", "yesterday"])
    assert "not an ISO date" in capsys.readouterr().err
