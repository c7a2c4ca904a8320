"""The exploration share: randomised decisions, logged, and the true effect of each decision."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
import pytest

from features.errors import CTOError
from features.simulate import simulate

FILES = ("contacts", "orders", "customers", "truth", "exploration")


def test_exploration_is_reproducible_and_absent_by_default(tmp_path):
    first = simulate(n_contacts=3_000, seed=3, exploration=0.1).write(tmp_path / "a")
    again = simulate(n_contacts=3_000, seed=3, exploration=0.1).write(tmp_path / "b")
    for name in FILES:
        digest = [
            hashlib.sha256((d / f"{name}.parquet").read_bytes()).hexdigest() for d in (first, again)
        ]
        assert digest[0] == digest[1], name
    plain = simulate(n_contacts=3_000, seed=3)
    assert plain.exploration is None and "exploration_share" not in plain.scenario
    assert not (plain.write(tmp_path / "c") / "exploration.parquet").exists()
    # Exploration draws from its own stream: before the first randomised decision changes a
    # contact, the two runs are the same contacts.
    explored = pl.read_parquet(first / "contacts.parquet")
    assert explored["contact_id"].head(50).equals(plain.contacts["contact_id"].head(50))


@pytest.mark.parametrize("share", [-0.1, 1.5, True])
def test_exploration_share_must_be_a_share(share):
    with pytest.raises(CTOError, match="exploration"):
        simulate(n_contacts=100, seed=1, exploration=share)


@pytest.fixture(scope="module")
def joined(explore_data):
    return explore_data.contacts.join(explore_data.truth, on="contact_id").join(
        explore_data.exploration, on="contact_id"
    )


def test_randomised_decisions_are_a_fair_coin_independent_of_the_agent(joined):
    agent_served = joined.filter((pl.col("handled_by") == "agent") & ~pl.col("abandoned"))
    share = agent_served["follow_up_randomised"].mean()
    assert 0.08 < share < 0.12
    randomised = agent_served.filter(pl.col("follow_up_randomised"))
    logged = agent_served.filter(~pl.col("follow_up_randomised"))
    assert randomised["follow_up_sent"].mean() == pytest.approx(0.5, abs=0.04)

    # Logged follow-ups follow the agent's skill (the confounding); randomised ones do not.
    def skill_gap(frame):
        sent = frame.group_by("follow_up_sent").agg(pl.col("agent_skill").mean())
        values = dict(sent.iter_rows())
        return values[True] - values[False]

    assert skill_gap(logged) > 0.03
    assert abs(skill_gap(randomised)) < 0.03
    # Only agent decisions are randomised; callbacks only for queued inbound phone contacts.
    assert (
        joined.filter(pl.col("follow_up_randomised") & (pl.col("handled_by") == "bot")).height == 0
    )
    phone_queue = (
        (pl.col("channel") == "phone")
        & (pl.col("direction") == "inbound")
        & (pl.col("handled_by") == "agent")
    )
    assert joined.filter(pl.col("callback_randomised") & ~phone_queue).height == 0
    cb = joined.filter(pl.col("callback_randomised"))
    assert cb.height > 500 and cb["callback_offered"].mean() == pytest.approx(0.5, abs=0.05)
    # Randomised offers reach short waits too, which the logged policy never offers.
    assert cb.filter(pl.col("callback_offered") & (pl.col("wait_seconds") <= 120)).height > 50


def test_truth_holds_the_true_effect_of_each_decision(joined):
    served = (pl.col("handled_by") == "agent") & ~pl.col("abandoned")
    assert joined.filter(served)["effect_of_follow_up"].null_count() == 0
    assert (
        joined.filter(~served)["effect_of_follow_up"].null_count() == joined.filter(~served).height
    )
    effect = joined.filter(served)["effect_of_follow_up"].to_numpy()
    assert (effect > 0).all()
    # Inquiries lose more without a follow-up (-1.3 vs -0.5 log-odds): a larger effect.
    by_intent = (
        joined.filter(served)
        .group_by(
            pl.col("intent").is_in(["product_inquiry", "pricing", "availability"]).alias("inquiry")
        )
        .agg(pl.col("effect_of_follow_up").mean())
    )
    means = dict(by_intent.iter_rows())
    assert means[True] > 2 * means[False]
    # On randomised rows the own-conversion chances differ by the mean true effect.
    randomised = joined.filter(served & pl.col("follow_up_randomised"))
    sent = randomised.filter(pl.col("follow_up_sent"))["p_contact"].mean()
    not_sent = randomised.filter(~pl.col("follow_up_sent"))["p_contact"].mean()
    assert sent - not_sent == pytest.approx(randomised["effect_of_follow_up"].mean(), abs=0.02)
    # The callback offer: defined for queued inbound phone contacts, larger after long waits
    # (it works through abandonment, 2% at one minute and 13% at five).
    phone = joined.filter(pl.col("effect_of_callback_offer").is_not_null())
    assert (phone["channel"] == "phone").all() and (phone["handled_by"] == "agent").all()
    long_wait = phone.filter(pl.col("wait_seconds") > 300)["effect_of_callback_offer"].abs().mean()
    short_wait = phone.filter(pl.col("wait_seconds") < 60)["effect_of_callback_offer"].abs().mean()
    assert long_wait > 3 * short_wait
    assert np.isfinite(phone["effect_of_callback_offer"].to_numpy()).all()
