"""Follow-up and callback uplift over HTTP: the real server with the uplift models registered.

The `trained` registry (conversion, drop-off and contacts-to-order models) is copied, and the two
uplift models are trained into the copy from simulated data with a 10% exploration share. The
contacts scored are those the `trained` models learnt from (`sim_dir`): features use the
conversion model's rate tables, so the service and `cto score` on that data must agree. The
server runs with a follow-up cost of 0.05 orders, so the sample holds follow-ups that pay and
follow-ups passed over. The answer without the uplift models (nulls, rules alone) is checked in
test_serving_http.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest

from serving import rules
from serving.demo import contact_payload, history_payload
from serving.process import copy_sqlite, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "uplift-token-1c9e"
FOLLOW_UP_COST = 0.05
SAMPLE = 40
UPLIFT_MODELS = {"cto-follow-up-uplift", "cto-callback-uplift"}


@pytest.fixture(scope="module")
def uplift_store(trained, mlflow_settings, explore_dir, tmp_path_factory):
    import mlflow

    from training.pipeline import run_training

    root = tmp_path_factory.mktemp("uplift-registry")
    copy_sqlite(Path(mlflow_settings.tracking_uri.removeprefix("sqlite:///")), root / "mlflow.db")
    settings = mlflow_settings.model_copy(
        update={"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "num_threads": 1}
    )
    # Training points MLflow's process-wide URIs at the copy (and the registry must be the copy,
    # whatever an earlier in-process loader left); later tests expect them back as they were.
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    saved = registry_utils._registry_uri, tracking_utils._tracking_uri
    saved_env = {n: os.environ.get(n) for n in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        mlflow.set_registry_uri(settings.tracking_uri)
        result = run_training(
            explore_dir,
            settings,
            promote=True,
            progress=False,
            tasks=["follow-up-uplift", "callback-uplift"],
        )
    finally:
        registry_utils._registry_uri, tracking_utils._tracking_uri = saved
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert set(result.versions) == {"follow-up-uplift", "callback-uplift"}
    assert all(d.promoted for d in result.promoted.values())
    # The follow-up model beats random targeting; the callback one has nothing to find (its true
    # effect is tiny), so only the follow-up uplift weighs in the next action.
    informative = {t: c["details"]["informative"] for t, c in result.cards.items()}
    assert informative["follow-up-uplift"]
    return settings.model_copy(), informative


@pytest.fixture(scope="module")
def server(uplift_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("uplift-server")
    running = start_server(
        {
            "CTO_TRACKING_URI": uplift_store[0].tracking_uri,
            "CTO_EVENT_STORE_URL": f"sqlite:///{root / 'events.db'}",
            "CTO_API_TOKEN": TOKEN,
            "CTO_FOLLOW_UP_COST": str(FOLLOW_UP_COST),
        },
        root / "server.log",
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def tables(sim_dir):
    return {name: pl.read_parquet(sim_dir / f"{name}.parquet") for name in ("contacts", "orders")}


@pytest.fixture(scope="module")
def answers(server, tables):
    """After-contact answers for late contacts of distinct customers (all kinds of contacts)."""
    contacts = tables["contacts"].sort("started_at")
    late = contacts.filter(pl.col("started_at") >= contacts["started_at"].quantile(0.85))
    sample = late.unique("customer_id", keep="first", maintain_order=True).head(SAMPLE)
    out = []
    with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=60) as http:
        for row in sample.to_dicts():
            payload = {
                "contact": contact_payload(row, "after_contact"),
                "moment": "after_contact",
                "history": history_payload(
                    row["customer_id"], row["started_at"], tables["contacts"], tables["orders"]
                ),
            }
            response = http.post("/score", json=payload)
            assert response.status_code == 200, response.text
            out.append((row, payload, response.json()))
    return out


def test_after_contact_answer_carries_both_uplifts_where_the_decision_exists(answers):
    for row, _payload, answer in answers:
        assert UPLIFT_MODELS <= {m["name"] for m in answer["models"]}
        agent_served = row["handled_by"] == "agent" and not row["abandoned"]
        assert (answer["follow_up_uplift"] is not None) == agent_served, row["contact_id"]
        phone_queue = (
            row["channel"] == "phone"
            and row["direction"] == "inbound"
            and row["handled_by"] == "agent"
        )
        assert (answer["callback_uplift"] is not None) == phone_queue, row["contact_id"]
        for key in ("follow_up_uplift", "callback_uplift"):
            if answer[key] is not None:
                assert -1.0 <= answer[key] <= 1.0
    assert sum(a["follow_up_uplift"] is not None for *_, a in answers) >= 10
    assert sum(a["callback_uplift"] is not None for *_, a in answers) >= 3


def test_next_action_weighs_the_uplift_against_the_configured_cost(answers, uplift_store):
    informative = uplift_store[1]
    costs = rules.ActionCosts(follow_up_cost=FOLLOW_UP_COST)
    fired, passed = 0, 0
    for _row, payload, answer in answers:
        reasons = {r["reason"]: r["probability"] for r in answer["dropoff_reasons"] or []}
        uplift = {
            key: answer[f"{key}_uplift"]
            for key in ("follow_up", "callback")
            if informative[f"{key.replace('_', '-')}-uplift"]
        }
        expected = rules.next_action(
            payload["contact"], answer["conversion_probability"], reasons or None, uplift, costs
        )
        assert answer["next_action"] == {
            "action": expected.action,
            "rule": expected.rule,
            "reason": expected.reason,
        }
        fired += "expected gain" in expected.reason and expected.rule == "missing_follow_up"
        passed += "send_follow_up passed over" in expected.reason
    # The cost splits the sample: some follow-ups pay, others are passed over.
    assert fired >= 1 and passed >= 1


def test_arrival_answers_leave_the_uplifts_null(server, tables, answers):
    row, payload, _answer = answers[0]
    arrival = {
        "contact": contact_payload(row, "arrival"),
        "moment": "arrival",
        "history": payload["history"],
    }
    with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=60) as http:
        answer = http.post("/score", json=arrival).json()
    assert answer["follow_up_uplift"] is None and answer["callback_uplift"] is None
    assert not UPLIFT_MODELS & {m["name"] for m in answer["models"]}


def test_cto_score_after_contact_adds_the_same_uplift_columns(
    uplift_store, sim_dir, answers, tmp_path
):
    out = tmp_path / "scores.parquet"
    env = {
        "CTO_TRACKING_URI": uplift_store[0].tracking_uri,
        "CTO_FOLLOW_UP_COST": str(FOLLOW_UP_COST),
    }
    done = subprocess.run(
        [sys.executable, "-m", "cto.cli", "score", str(sim_dir), "--moment", "after_contact",
         "--out", str(out), "--quiet", "--allow-other-data"],
        capture_output=True, text=True, timeout=600, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith(("CTO_", "MLFLOW_"))} | env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    scored = pl.read_parquet(out)
    assert {"follow_up_uplift", "callback_uplift", "next_action"} <= set(scored.columns)
    by_id = {r["contact_id"]: r for r in scored.to_dicts()}
    gaps = []
    for row, _payload, answer in answers:
        batch = by_id[row["contact_id"]]
        for key in ("follow_up_uplift", "callback_uplift"):
            assert (batch[key] is None) == (answer[key] is None), (row["contact_id"], key)
            if answer[key] is not None:
                gaps.append(abs(batch[key] - answer[key]))
    # Same models, same features, but not the same rate tables: cto score reads each contact's
    # point-in-time rates, the service the latest ones (serving.models.online_rates): a few differ.
    assert np.median(gaps) < 1e-6
    assert max(gaps) < 0.05
    # The batch next action weighs the same cost: no follow-up where it does not pay, and one
    # wherever it pays and none was sent.
    follow_ups = scored.filter(pl.col("next_action") == "send_follow_up")
    assert follow_ups.height > 0
    assert follow_ups.filter(pl.col("follow_up_uplift") <= FOLLOW_UP_COST).height == 0
    contacts = pl.read_parquet(sim_dir / "contacts.parquet").select("contact_id", "follow_up_sent")
    paying = scored.join(contacts, on="contact_id").filter(
        (pl.col("follow_up_uplift") > FOLLOW_UP_COST) & ~pl.col("follow_up_sent")
    )
    assert paying.height > 0
    # Only the observed facts that come first (abandonment, a long wait, transfers) override.
    assert paying["next_action"].is_in(["send_follow_up", "callback", "senior_agent"]).all()
