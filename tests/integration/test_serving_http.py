"""The real scoring server (`cto serve`) on 127.0.0.1, called over HTTP.

One server for the module, on a copy of the `trained` MLflow store (the hot-reload test promotes a
new version there without disturbing other tests), with an event store loaded by
`cto materialize` from the simulated tables, default settings (no history window override) and a
bearer token.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest

from serving.demo import contact_payload, history_payload
from serving.process import copy_sqlite, free_port, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "test-token-7f3a"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
SAMPLE = 24


@pytest.fixture(scope="module")
def store_copy(trained, mlflow_settings, tmp_path_factory):
    """The trained registry, copied: artifacts are shared read-only, aliases are ours to move."""
    root = tmp_path_factory.mktemp("serving-registry")
    source = Path(mlflow_settings.tracking_uri.removeprefix("sqlite:///"))
    copy_sqlite(source, root / "mlflow.db")
    return mlflow_settings.model_copy(update={"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"})


@pytest.fixture(scope="module")
def server_env(store_copy, sim_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-server")
    store_url = f"sqlite:///{root / 'events.db'}"
    loaded = subprocess.run(
        [
            sys.executable,
            "-m",
            "cto.cli",
            "materialize",
            str(sim_dir),
            "--event-store-url",
            store_url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "materialized" in loaded.stdout
    return root, {
        "CTO_TRACKING_URI": store_copy.tracking_uri,
        "CTO_EVENT_STORE_URL": store_url,
        "CTO_API_TOKEN": TOKEN,
        "CTO_MODEL_POLL_SECONDS": "1",
    }


@pytest.fixture(scope="module")
def server(server_env):
    root, env = server_env
    running = start_server(env | {"CTO_FAST_PORT": str(free_port())}, root / "server.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def tables(sim_dir):
    return {
        name: pl.read_parquet(sim_dir / f"{name}.parquet")
        for name in ("contacts", "orders", "customers")
    }


@pytest.fixture(scope="module")
def sample(tables):
    """Late contacts of distinct customers, each with at least two earlier contacts."""
    contacts = tables["contacts"].sort("started_at")
    nth = contacts.with_columns(pl.int_range(pl.len()).over("customer_id").alias("_earlier"))
    late = nth.filter(
        (pl.col("started_at") >= contacts["started_at"].quantile(0.9)) & (pl.col("_earlier") >= 2)
    )
    return (
        late.unique("customer_id", keep="first", maintain_order=True).head(SAMPLE).drop("_earlier")
    )


def _payload(row: dict, tables: dict, moment: str, with_history: bool = True, **extra) -> dict:
    payload = {"contact": contact_payload(row, moment), "moment": moment} | extra
    if with_history:
        history = history_payload(
            row["customer_id"], row["started_at"], tables["contacts"], tables["orders"]
        )
        customer = (
            tables["customers"].filter(pl.col("customer_id") == row["customer_id"]).to_dicts()
        )
        if customer:
            history["customer"] = {
                k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in customer[0].items()
            }
        payload["history"] = history
    return payload


def _offline(
    store_settings, task: str, tables: dict, moment: str, contact_ids: list[str]
) -> dict[str, tuple]:
    """The batch pipeline: build_features over all data, the registered booster and card."""
    import mlflow
    import mlflow.artifacts
    import mlflow.lightgbm

    from features.encoding import FeatureEncoding, encode
    from features.pipeline import build_features
    from serving.models import online_rates
    from training.scoring import calibration_from_card

    mlflow.set_tracking_uri(store_settings.tracking_uri)
    mlflow.set_registry_uri(store_settings.tracking_uri)
    uri = f"models:/{store_settings.model_prefix}-{task}@{store_settings.champion_alias}"
    local = Path(mlflow.artifacts.download_artifacts(uri))
    card = json.loads((local / "model_card.json").read_text())
    booster = mlflow.lightgbm.load_model(str(local))
    rates = online_rates(pl.read_parquet(local / "rates.parquet"))
    features = build_features(
        tables["contacts"], tables["orders"], tables["customers"], rates, moment
    )
    features = features.filter(pl.col("contact_id").is_in(contact_ids))
    raw = booster.predict(
        encode(features, FeatureEncoding.from_dict(card)), raw_score=True, num_threads=1
    )
    probability = calibration_from_card(card).apply(raw)
    return dict(
        zip(features["contact_id"].to_list(), zip(raw, probability, strict=True), strict=True)
    )


def test_probes_and_metrics_are_open_and_ready(server):
    for path in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(server.base_url + path, timeout=10).status_code == 200, path
    assert "bentoml" in httpx.get(server.base_url + "/metrics", timeout=10).text


def test_requests_need_the_bearer_token(server, sample, tables):
    payload = _payload(sample.row(0, named=True), tables, "arrival")
    missing = httpx.post(server.base_url + "/score", json=payload, timeout=30)
    wrong = httpx.post(
        server.base_url + "/score",
        json=payload,
        headers={"Authorization": "Bearer nope"},
        timeout=30,
    )
    right = httpx.post(
        server.base_url + "/score", json=payload, headers=server.headers(), timeout=30
    )
    assert missing.status_code == 401 and "missing" in missing.json()["error"]
    assert wrong.status_code == 401 and "invalid" in wrong.json()["error"]
    assert right.status_code == 200


@pytest.mark.parametrize("moment", ["arrival", "after_contact"])
def test_scores_equal_the_offline_batch_pipeline(client, store_copy, tables, sample, moment):
    task = {"arrival": "conversion-arrival", "after_contact": "conversion-after-contact"}[moment]
    expected = _offline(store_copy, task, tables, moment, sample["contact_id"].to_list())
    rows = sample.to_dicts()
    singles = {}
    for row in rows:
        response = client.post("/score", json=_payload(row, tables, moment, explain=False))
        assert response.status_code == 200, response.text
        singles[row["contact_id"]] = response.json()
    batch = client.post(
        "/score_batch",
        json={
            "moment": moment,
            "items": [
                {k: _payload(row, tables, moment)[k] for k in ("contact", "history")}
                for row in rows
            ],
        },
    )
    assert batch.status_code == 200, batch.text
    queue = batch.json()["items"]
    for contact_id, (raw, probability) in expected.items():
        single = singles[contact_id]
        assert single["raw_score"] == pytest.approx(raw, abs=1e-9)
        assert single["conversion_probability"] == pytest.approx(probability, abs=1e-9)
    by_id = {item["contact_id"]: item for item in queue}
    for contact_id, single in singles.items():
        assert by_id[contact_id]["raw_score"] == pytest.approx(single["raw_score"], abs=1e-9)
    ranks = [item["priority"]["rank_score"] for item in queue]
    assert ranks == sorted(ranks, reverse=True)
    assert [item["queue_position"] for item in queue] == list(range(1, len(rows) + 1))


def test_concurrent_scores_equal_sequential_ones(server, client, tables, sample):
    """Concurrent /score requests (other moments, explain on and off, the same customer twice)
    each get the answer they get alone."""
    from concurrent.futures import ThreadPoolExecutor

    rows = sample.head(12).to_dicts()
    payloads = [
        _payload(row, tables, moment, explain=explain, top_k=3)
        for row in rows
        for moment, explain in (("after_contact", True), ("arrival", False))
    ]
    payloads += payloads[:4]  # the same contacts again, in the same burst
    sequential = [client.post("/score", json=payload).json() for payload in payloads]

    def post(payload: dict) -> httpx.Response:
        with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=60) as http:
            return http.post("/score", json=payload)

    with ThreadPoolExecutor(max_workers=16) as pool:
        concurrent = list(pool.map(post, payloads))
    for payload, alone, response in zip(payloads, sequential, concurrent, strict=True):
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["contact_id"] == payload["contact"]["contact_id"]
        assert answer["moment"] == payload["moment"]
        assert answer["raw_score"] == pytest.approx(alone["raw_score"], abs=1e-9)
        assert answer["history_contacts"] == alone["history_contacts"]
        if payload["explain"]:
            assert [d["feature"] for d in answer["drivers"]] == [
                d["feature"] for d in alone["drivers"]
            ]
            assert len(answer["drivers"]) == 3
            assert answer["contributions_sum"] == pytest.approx(
                alone["contributions_sum"], abs=1e-6
            )
        else:
            assert answer["drivers"] is None


def test_explanations_add_up_and_read_plainly(client, tables, sample):
    for row in sample.head(8).to_dicts():
        answer = client.post("/score", json=_payload(row, tables, "after_contact", top_k=4)).json()
        assert answer["base_value"] + answer["contributions_sum"] == pytest.approx(
            answer["raw_score"], abs=1e-6
        )
        drivers = answer["drivers"]
        assert len(drivers) == 4
        magnitudes = [abs(d["contribution"]) for d in drivers]
        assert magnitudes == sorted(magnitudes, reverse=True)
        for driver in drivers:
            assert re.search(r": [+-]\d+\.\d\d$", driver["text"]), driver["text"]
    quiet = client.post(
        "/score", json=_payload(sample.row(0, named=True), tables, "arrival", explain=False)
    ).json()
    assert quiet["drivers"] is None and quiet["base_value"] is None


def test_after_contact_answer_is_complete(client, tables, sample):
    answer = client.post(
        "/score", json=_payload(sample.row(1, named=True), tables, "after_contact")
    ).json()
    reasons = answer["dropoff_reasons"]
    assert sum(r["probability"] for r in reasons) == pytest.approx(1.0, abs=1e-6)
    assert [r["probability"] for r in reasons] == sorted(
        (r["probability"] for r in reasons), reverse=True
    )
    assert answer["next_action"]["action"] and answer["next_action"]["rule"]
    assert answer["expected_contacts_to_order"] >= 1.0
    assert answer["priority"]["tier"] in {"P1", "P2", "P3", "P4"}
    names = {m["name"] for m in answer["models"]}
    assert names == {"cto-conversion-after-contact", "cto-dropoff-reason", "cto-contacts-to-order"}
    # No uplift models registered (the data logged no randomised decisions): null, rules alone.
    assert answer["follow_up_uplift"] is None and answer["callback_uplift"] is None
    assert "passed over" not in answer["next_action"]["reason"]
    assert all(m["alias"] == "champion" and m["version"] for m in answer["models"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"contact": {"contact_id": "c1",', None),  # malformed JSON
        ({"contact": {"channel": "fax"}}, "channel"),
        ({"contact": {"wait_seconds": -3}}, "wait_seconds"),
        ({"contact": {"intent": None}}, "intent"),
        ({"drop": "intent"}, "intent"),
        ({"moment": "later"}, "moment"),
        ({"top_k": -1}, "top_k"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_field(client, tables, sample, body, field):
    if isinstance(body, str):
        response = client.post("/score", content=body, headers={"Content-Type": "application/json"})
    else:
        payload = _payload(sample.row(0, named=True), tables, "after_contact")
        for key, value in body.items():
            if key == "contact":
                payload["contact"] |= value
            elif key == "drop":
                payload["contact"].pop(value)
            else:
                payload[key] = value
        response = client.post("/score", json=payload)
    assert 400 <= response.status_code < 500, response.text
    if field:
        assert field in response.text


@pytest.mark.parametrize("moment", ["arrival", "after_contact"])
def test_materialized_store_scores_equal_the_offline_batch_pipeline(
    client, store_copy, tables, sample, moment
):
    """No history in the request: the state `cto materialize` loaded, at default settings
    (lifetime features over the whole history, as in training)."""
    task = {"arrival": "conversion-arrival", "after_contact": "conversion-after-contact"}[moment]
    expected = _offline(store_copy, task, tables, moment, sample["contact_id"].to_list())
    for row in sample.to_dicts():
        response = client.post(
            "/score", json=_payload(row, tables, moment, with_history=False, explain=False)
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["history_source"] == "event_store"
        raw, probability = expected[row["contact_id"]]
        assert answer["raw_score"] == pytest.approx(raw, abs=1e-9)
        assert answer["conversion_probability"] == pytest.approx(probability, abs=1e-9)


def test_the_online_store_survives_a_restart(server_env, client, tables, sample):
    """A new server process on the same store answers from the stored state as the first did."""
    root, env = server_env
    rows = sample.head(6).to_dicts()
    payloads = [_payload(r, tables, "arrival", with_history=False, explain=False) for r in rows]
    before = [client.post("/score", json=p).json() for p in payloads]
    restarted = start_server(env, root / "server-restarted.log")
    try:
        with httpx.Client(
            base_url=restarted.base_url, headers=restarted.headers(), timeout=60
        ) as http:
            after = [http.post("/score", json=p).json() for p in payloads]
    finally:
        restarted.stop()
    for first, second in zip(before, after, strict=True):
        assert second["history_source"] == "event_store"
        assert second["history_contacts"] == first["history_contacts"] > 0
        assert second["raw_score"] == first["raw_score"]


@pytest.mark.parametrize("where", ["mounted", "fast port"])
def test_fast_routes_answer_what_the_api_routes_answer(server, client, tables, sample, where):
    """/fast/score and /fast/score_batch (the ASGI app in the service) and /score and /score_batch
    on the fast port (CTO_FAST_PORT): same contract, answers, errors and token as the API
    routes."""
    base, prefix = (server.base_url, "/fast") if where == "mounted" else (server.fast_url, "")
    fast_client = httpx.Client(base_url=base + prefix, headers=server.headers(), timeout=60)
    rows = sample.head(4).to_dicts()
    with fast_client:
        for row in rows:
            for moment in ("arrival", "after_contact"):
                for with_history in (True, False):
                    payload = _payload(row, tables, moment, with_history, top_k=3)
                    api = client.post("/score", json=payload)
                    fast = fast_client.post("/score", json=payload)
                    assert fast.status_code == api.status_code == 200, fast.text
                    assert fast.json() == api.json()
        batch = {
            "moment": "arrival",
            "items": [{"contact": contact_payload(r, "arrival")} for r in rows],
        }
        api, fast = (
            client.post("/score_batch", json=batch),
            fast_client.post("/score_batch", json=batch),
        )
        assert fast.status_code == 200 and fast.json() == api.json()
        bad = _payload(rows[0], tables, "after_contact")
        bad["contact"]["wait_seconds"] = -3
        answer = fast_client.post("/score", json=bad)
        assert answer.status_code == 400 and ["contact", "wait_seconds"] in [
            d["loc"] for d in answer.json()["detail"]
        ]
        # The same fields and rules as the API route names (its wording may differ).
        same = [(d["loc"], d["type"], d["msg"]) for d in answer.json()["detail"]]
        api_detail = client.post("/score", json=bad).json()["detail"]
        assert same == [(d["loc"], d["type"], d["msg"]) for d in api_detail]
        malformed = fast_client.post(
            "/score", content=b'{"contact": {', headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 400
    anonymous = httpx.post(base + prefix + "/score", json=bad, timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.json() == httpx.post(server.base_url + "/score", json=bad, timeout=30).json()


def test_the_fast_port_has_its_probes_and_its_own_openapi_document(server):
    ready = httpx.get(server.fast_url + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json() == httpx.get(server.base_url + "/readyz", timeout=10).json()
    assert httpx.get(server.fast_url + "/livez", timeout=10).status_code == 200
    # `cto serve`'s start-up line names both ports.
    started = server.log_path.read_text().splitlines()[0]
    assert started.startswith(f"serving on {server.base_url}, fast port"), started
    assert f"on {server.fast_url} " in started
    doc = httpx.get(server.fast_url + "/docs.json", headers=server.headers(), timeout=10).json()
    assert set(doc["paths"]) == {"/score", "/score_batch", "/livez", "/readyz"}
    main = httpx.get(server.base_url + "/docs.json", headers=server.headers(), timeout=30).json()
    for route in ("/score", "/score_batch"):
        # The same request and answers as the service's route, and the mounted copy's.
        ours, theirs = doc["paths"][route]["post"], main["paths"][route]["post"]
        assert ours["requestBody"] == theirs["requestBody"]
        assert ours["responses"] == theirs["responses"]
        assert main["paths"]["/fast" + route]["post"]["responses"] == theirs["responses"]
    assert doc["components"] == main["components"]
    # Routes the fast port does not serve are not there.
    assert (
        httpx.post(server.fast_url + "/events", json={}, headers=server.headers()).status_code
        == 404
    )


def test_events_round_trip_matches_history_in_the_request(client, tables, sample):
    rows = sample.tail(6).to_dicts()
    for row in rows:
        history = history_payload(
            row["customer_id"], row["started_at"], tables["contacts"], tables["orders"]
        )
        posted = client.post(
            "/events", json={"contacts": history["contacts"], "orders": history["orders"]}
        )
        assert posted.status_code == 200, posted.text
        assert posted.json()["rejected"] == []
        assert posted.json()["accepted"]["contacts"] == len(history["contacts"])
    for row in rows:
        # The store holds the customer's profile (materialized), so the request carries it too.
        with_history = _payload(row, tables, "after_contact", explain=False)
        from_request = client.post("/score", json=with_history).json()
        from_store = client.post(
            "/score", json=_payload(row, tables, "after_contact", False, explain=False)
        ).json()
        assert from_store["history_source"] == "event_store"
        assert from_request["history_source"] == "request"
        assert from_store["history_contacts"] == from_request["history_contacts"] > 0
        assert from_store["raw_score"] == pytest.approx(from_request["raw_score"], abs=1e-12)


def test_events_reject_rows_with_row_field_and_rule(client):
    good = {
        "contact_id": "c-ev-x1", "customer_id": "u-ev-x", "started_at": "2026-03-02T09:15:00Z",
        "channel": "phone", "direction": "inbound", "intent": "pricing", "handled_by": "agent",
        "agent_id": "a-1", "wait_seconds": 5, "handle_seconds": 10, "transfers": 0, "abandoned": False,
        "resolved": True, "callback_offered": False, "follow_up_sent": True,
    }  # fmt: skip
    bad = good | {"contact_id": "c-ev-x2", "wait_seconds": -1, "started_at": "not a time"}
    answer = client.post("/events", json={"contacts": [good, bad]}).json()
    assert answer["accepted"]["contacts"] == 1
    found = {(r["row"], r["field"], r["rule"]) for r in answer["rejected"]}
    assert {(2, "wait_seconds", "range"), (2, "started_at", "type")} <= found
    empty = client.post("/events", json={})
    assert empty.status_code == 400


def _doc_examples() -> dict[str, dict[str, object]]:
    text = DOCS.read_text()
    examples: dict[str, dict[str, object]] = {}
    for kind, endpoint, body in re.findall(
        r"<!-- (request|response): POST (\S+) -->\s*```json\n(.*?)```", text, re.S
    ):
        examples.setdefault(endpoint, {})[kind] = json.loads(body)
    return examples


def test_docs_examples_run_against_the_server(client):
    examples = _doc_examples()
    assert set(examples) >= {"/score", "/score_batch", "/events"}
    for endpoint, pair in examples.items():
        response = client.post(endpoint, json=pair["request"])
        assert response.status_code == 200, (endpoint, response.text)
        answer = response.json()
        assert set(pair["response"]) <= set(answer), endpoint
        if endpoint == "/events":
            assert answer["accepted"] == pair["response"]["accepted"]
            assert {(r["row"], r["field"], r["rule"]) for r in answer["rejected"]} == {
                (r["row"], r["field"], r["rule"]) for r in pair["response"]["rejected"]
            }
        if endpoint == "/score":
            documented = {d["feature"] for d in pair["response"]["drivers"]}
            assert len(answer["drivers"]) == len(documented)


def test_a_new_champion_is_served_without_restart(server, client, store_copy, tables, sample):
    """Runs last in the module: it moves the alias in the copied registry."""
    from mlflow.tracking import MlflowClient

    registry = MlflowClient(
        tracking_uri=store_copy.tracking_uri, registry_uri=store_copy.tracking_uri
    )
    name = f"{store_copy.model_prefix}-conversion-arrival"
    current = registry.get_model_version_by_alias(name, store_copy.champion_alias)
    payload = _payload(sample.row(0, named=True), tables, "arrival", explain=False)
    before = client.post("/score", json=payload).json()
    assert before["models"][0]["version"] == str(current.version)
    new = registry.create_model_version(name, current.source, run_id=current.run_id)
    registry.set_registered_model_alias(name, store_copy.champion_alias, new.version)
    deadline = time.monotonic() + 90
    seen = before
    while time.monotonic() < deadline and seen["models"][0]["version"] != str(new.version):
        time.sleep(0.5)
        response = client.post("/score", json=payload)
        assert response.status_code == 200  # no downtime while the new version loads
        seen = response.json()
    assert seen["models"][0]["version"] == str(new.version)
    assert seen["raw_score"] == pytest.approx(before["raw_score"], abs=1e-12)  # same booster copied
    assert server.process.poll() is None
    assert np.isfinite(seen["conversion_probability"])
