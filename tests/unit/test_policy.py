"""Policy simulator: the queue reproduces the simulator's waits under FIFO; common random numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.policy import SYNC, build_world, calibrate, outcome, run_queue, wait_summary
from training.queue import patience_from_uniform, with_callback


@pytest.fixture(scope="module")
def world():
    w = build_world(40_000, seed=7, weeks=2)
    calibrate(w, iterations=10)
    return w


def test_patience_reproduces_the_simulators_abandonment_law():
    patience = patience_from_uniform(np.random.default_rng(1).random(400_000))
    for wait in (30.0, 60.0, 120.0, 300.0, 600.0):
        law = 1 / (1 + np.exp(4.0 - 1.3 * np.log(wait / 60.0)))
        assert abs((patience < wait).mean() - law) < 0.004
    offered = with_callback(patience, np.ones(len(patience), bool))
    odds = np.exp(-4.0 + 1.3 * np.log(300.0 / 60.0)) * 0.35  # a callback offer: odds x 0.35
    assert abs((offered < 300.0).mean() - odds / (1 + odds)) < 0.004


def test_fifo_queue_matches_the_simulators_waits_and_abandonment_within_10_percent(world):
    fifo = run_queue(world)
    sim = wait_summary(world.sim_wait, world.sim_abandoned)
    got = wait_summary(fifo.wait, fifo.abandoned)
    for key in ("median_wait_s", "p90_wait_s", "abandonment_rate"):
        assert got[key] == pytest.approx(sim[key], rel=0.10), key
    for ch in (SYNC.index("phone"), SYNC.index("chat")):  # the two big pools, one by one
        m = world.channel == ch
        s = wait_summary(world.sim_wait[m], world.sim_abandoned[m])
        g = wait_summary(fifo.wait[m], fifo.abandoned[m])
        assert g["median_wait_s"] == pytest.approx(s["median_wait_s"], rel=0.10)
        assert g["p90_wait_s"] == pytest.approx(s["p90_wait_s"], rel=0.10)


def test_a_policy_equal_to_fifo_gives_the_same_orders(world):
    fifo = run_queue(world)
    same = run_queue(world, priority=world.arrival.copy())
    a = outcome(world, "fifo", fifo, world.follow_default)
    b = outcome(world, "same", same, world.follow_default)
    assert np.array_equal(a.converted, b.converted) and np.array_equal(fifo.wait, same.wait)
    # Another order changes waits, but the contacts and their coins stay: only the wait moves p.
    reverse = run_queue(world, priority=-world.arrival)
    assert not np.array_equal(reverse.wait, fifo.wait)
    c = outcome(world, "reverse", reverse, world.follow_default)
    unchanged = (reverse.wait == fifo.wait) & (reverse.abandoned == fifo.abandoned)
    assert np.array_equal(c.converted[unchanged], a.converted[unchanged])


def test_cto_policy_writes_the_comparison(tmp_path, capsys, monkeypatch):
    from cto.cli import main

    monkeypatch.setenv("CTO_NUM_THREADS", "1")
    out = tmp_path / "policy"
    assert main(["policy", "--contacts", "20000", "--seed", "3", "--out", str(out), "--quiet"]) == 0
    assert "priority_p_order" in capsys.readouterr().out
    result = json.loads((out / "policy.json").read_text())
    policies = result["policies"]
    assert policies["fifo"]["diff_vs_fifo"] == 0
    for name in ("priority_p_order", "priority_expected_value", "callback_by_model"):
        p = policies[name]
        assert p["diff_ci_low"] <= p["diff_vs_fifo"] <= p["diff_ci_high"]
        assert p["orders_ci_low"] <= p["orders"] <= p["orders_ci_high"]
        assert set(p["segments"]) >= {"consumer", "small_business"}
        # A bounded head start: no segment waits much longer than under FIFO.
        for seg, row in p["segments"].items():
            assert row["mean_wait_s"] < 1.5 * policies["fifo"]["segments"][seg]["mean_wait_s"] + 30
    targeting = result["follow_up_targeting"]
    assert (
        targeting["true_uplift"]["incremental_per_follow_up"]
        > targeting["random"]["incremental_per_follow_up"]
    )
    assert (
        targeting["p_order"]["incremental_per_follow_up"]
        > targeting["random"]["incremental_per_follow_up"]
    )
    assert (out / "policy.png").stat().st_size > 5_000
    # The driver report's section reads the file and says it is simulated.
    from features.errors import CTOError
    from reports.decision_value import decision_value_section

    page = decision_value_section(policy=out / "policy.json").render()
    assert "decision-value-policies" in page and "simulated" in page and "not measured" in page
    with pytest.raises(CTOError, match="not a policy.json"):
        decision_value_section(policy=_bad(tmp_path))


def _bad(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"hello": 1}))
    return path
