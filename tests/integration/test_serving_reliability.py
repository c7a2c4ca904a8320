"""Reliability and security of the real server (`cto serve`, 2 workers) over HTTP.

What a client cannot break (wrong media types, oversized bodies), what the logs never hold
(request values), how auth reads the header, and what a kill -9 of the server process leaves
behind (nothing: no orphan worker, the port free, a restart that works). The module's last test
kills its server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from serving.process import REPO, copy_sqlite, free_port, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "reliability-token-1"
MAX_BODY = 64 * 1024
EMAIL_ID = "carol.reliability@example.com"
POST_ROUTES = ("/score", "/score_batch", "/events", "/model_info")
# The hot routes: mounted at /fast on the service's port, and at the root of the fast port.
HOT_ROUTES = ("/fast/score", "/fast/score_batch")
# Cases per operation and phase: enough to cover every field and rule, small enough for the suite
# (benchmarks/schemathesis.py runs the long campaign).
SCHEMATHESIS_EXAMPLES = 25


@pytest.fixture(scope="module")
def registry(trained, mlflow_settings, tmp_path_factory):
    """The trained registry, copied: this module moves aliases and adds versions."""
    root = tmp_path_factory.mktemp("reliability-registry")
    source = Path(mlflow_settings.tracking_uri.removeprefix("sqlite:///"))
    copy_sqlite(source, root / "mlflow.db")
    return f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture(scope="module")
def server_env(registry, tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    return root, {
        "CTO_TRACKING_URI": registry,
        "CTO_MODEL_POLL_SECONDS": "1",
        "CTO_EVENT_STORE_URL": f"sqlite:///{root / 'events.db'}",
        "CTO_API_TOKEN": TOKEN,
        "CTO_WORKERS": "2",
        "CTO_MAX_BODY_BYTES": str(MAX_BODY),
    }


@pytest.fixture(scope="module")
def server(server_env):
    root, env = server_env
    running = start_server(env | {"CTO_FAST_PORT": str(free_port())}, root / "server.log")
    yield running
    running.stop()


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def _post(server, path: str, **kwargs) -> httpx.Response:
    """POST to the service's port, or to the fast port for ``fast:/score``."""
    headers = _auth() | kwargs.pop("headers", {})
    base = server.base_url
    if path.startswith("fast:"):
        base, path = server.fast_url, path.removeprefix("fast:")
    return httpx.post(base + path, headers=headers, timeout=30, **kwargs)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_scheme_is_case_insensitive(server, scheme):
    answer = httpx.post(
        server.base_url + "/model_info",
        json={},
        headers={"Authorization": f"{scheme} {TOKEN}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    wrong = httpx.post(
        server.base_url + "/model_info",
        json={},
        headers={"Authorization": f"{scheme} {TOKEN}x"},
        timeout=30,
    )
    assert wrong.status_code == 401
    assert isinstance(wrong.json()["detail"], list)


@pytest.mark.parametrize("path", [*POST_ROUTES, *HOT_ROUTES, "fast:/score", "fast:/score_batch"])
def test_non_json_bodies_get_415_naming_the_type(server, path):
    multipart = _post(server, path, files={"file": ("a.json", b"{}", "application/json")})
    bare = _post(server, path, content=b"x", headers={"Content-Type": "multipart/form-data"})
    for answer in (multipart, bare):
        assert answer.status_code == 415, answer.text
        assert "multipart/form-data" in answer.json()["error"]
        assert answer.json()["detail"][0]["loc"] == ["header", "content-type"]


def test_bodies_over_the_limit_get_413_with_the_limit(server):
    big = b'{"contacts": [' + b" " * MAX_BODY + b"]}"
    declared = _post(server, "/events", content=big, headers={"Content-Type": "application/json"})

    def stream():
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    streamed = _post(
        server, "/events", content=stream(), headers={"Content-Type": "application/json"}
    )
    on_fast_port = _post(
        server, "fast:/score", content=big, headers={"Content-Type": "application/json"}
    )
    for answer in (declared, streamed, on_fast_port):
        assert answer.status_code == 413, answer.text
        assert f"{MAX_BODY:,}" in answer.json()["error"]
    # A body under the limit still goes through, streamed or not.
    small = b'{"customers": [{"customer_id": "u-limit-1", "segment": "consumer"}]}'
    assert _post(server, "/events", content=iter([small])).status_code == 200


def test_client_errors_are_one_line_warnings_without_request_values(server):
    bad_score = {
        "contact": {
            "contact_id": EMAIL_ID,
            "customer_id": EMAIL_ID,
            "started_at": "2026-03-02T09:15:00Z",
            "channel": "fax",
        },
        EMAIL_ID: "unknown field named like a person",
    }
    assert _post(server, "/score", json=bad_score).status_code == 400
    assert _post(server, "/score_batch", json={"items": [bad_score]}).status_code == 400
    events = _post(server, "/events", json={"contacts": [{"contact_id": EMAIL_ID}]})
    assert events.status_code in (200, 400), events.text
    assert _post(server, "/events", content=f'{{"{EMAIL_ID}"'.encode()).status_code == 400
    time.sleep(0.5)  # the workers' log lines reach the file
    log = server.log_path.read_text(errors="replace")
    assert EMAIL_ID not in log
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "client error 400 on /score [POST]" in line]
    assert lines and all("[WARNING]" in line for line in lines), log[-3000:]
    assert "contact.channel literal_error" in lines[0]


def test_readyz_is_json_naming_the_models(server):
    answer = httpx.get(server.base_url + "/readyz", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["ready"] is True
    assert set(body["models"]) >= {"conversion-arrival", "conversion-after-contact"}


def test_openapi_document_tells_the_truth(server):
    doc = httpx.get(server.base_url + "/docs.json", headers=_auth(), timeout=30).json()
    assert doc["info"]["title"] == "CTO scoring API"
    assert doc["info"]["version"] not in ("None", "")
    assert "BentoML" not in doc["info"]["description"]
    schemas = doc["components"]["schemas"]
    assert schemas["ErrorResponse"]["properties"]["detail"]["type"] == "array"
    base_value = schemas["ScoreResponse"]["properties"]["base_value"]
    assert {"type": "null"} in base_value["anyOf"]
    assert "base_value" in schemas["ScoreResponse"]["required"]
    for route in (*POST_ROUTES, *HOT_ROUTES):
        responses = doc["paths"][route]["post"]["responses"]
        assert {"200", "400", "401", "413", "415"} <= set(responses), route
    assert set(doc["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}


def test_schemathesis_finds_no_failure_with_all_checks(server, tmp_path):
    """The served OpenAPI document against the server, every check, bounded examples per route."""
    report = tmp_path / "schemathesis.json"
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{server.base_url}/docs.json",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            "all",
            "--max-examples",
            str(SCHEMATHESIS_EXAMPLES),
            "--seed",
            "7",
            "--generation-database",
            "none",
            "--workers",
            "2",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "No issues found" in proc.stdout, proc.stdout[-3000:]


ARRIVAL = {
    "contact_id": "c-reload-1",
    "customer_id": "u-reload-1",
    "started_at": "2026-03-02T09:15:00Z",
    "channel": "phone",
    "direction": "inbound",
    "intent": "pricing",
}
TASK = "conversion-arrival"


def _new_version(registry: str, workdir: Path, change) -> str:
    """A new version of the arrival model: the champion's files, changed by ``change(dir)``."""
    import shutil

    import mlflow
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=registry, registry_uri=registry)
    name = f"cto-{TASK}"
    champion = client.get_model_version_by_alias(name, "champion")
    # models:/ URIs resolve through the process-wide registry URI: point it here meanwhile.
    before = mlflow.get_registry_uri()
    mlflow.set_registry_uri(registry)
    try:
        source = Path(
            mlflow.artifacts.download_artifacts(
                f"models:/{name}/{champion.version}",
                dst_path=str(workdir / "a"),
                tracking_uri=registry,
            )
        )
    finally:
        mlflow.set_registry_uri(before)
    target = workdir / "b"
    shutil.copytree(source, target)
    change(target)
    version = client.create_model_version(name, str(target), run_id=champion.run_id).version
    client.set_registered_model_alias(name, "champion", version)
    return str(version)


def _shift_first_tree(model_dir: Path) -> None:
    """+0.5 on every leaf of the first tree: every raw score moves by exactly 0.5."""
    import lightgbm as lgb

    booster = lgb.Booster(model_file=str(model_dir / "model.lgb"))
    for leaf in range(booster.dump_model()["tree_info"][0]["num_leaves"]):
        booster.set_leaf_output(0, leaf, booster.get_leaf_output(0, leaf) + 0.5)
    booster.save_model(str(model_dir / "model.lgb"))


def _score(base_url: str) -> tuple[int, str | None, float | None]:
    answer = httpx.post(
        base_url + "/score",
        json={"contact": ARRIVAL, "moment": "arrival", "explain": False},
        headers=_auth(),
        timeout=30,
    )
    if answer.status_code != 200:
        return answer.status_code, None, None
    body = answer.json()
    return 200, body["models"][0]["version"], body["raw_score"]


def test_a_different_champion_is_swapped_in_under_load_without_mixing(server, registry, tmp_path):
    """A new booster (every raw score +0.5) replaces the champion while 4 clients keep scoring:
    no failed request, and every answer's score is the one of the version it names."""
    from concurrent.futures import ThreadPoolExecutor

    status, old, old_raw = _score(server.base_url)
    assert status == 200
    new = _new_version(registry, tmp_path, _shift_first_tree)
    deadline = time.monotonic() + 120

    def client() -> list[tuple]:
        seen = []
        while time.monotonic() < deadline:
            seen.append(_score(server.base_url))
            if seen[-1][1] == new and len(seen) > 3:
                break
        return seen

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = [a for seen in pool.map(lambda _: client(), range(4)) for a in seen]
    assert {a[0] for a in answers} == {200}
    versions = {a[1] for a in answers}
    assert new in versions, versions
    for _, version, raw in answers:
        expected = old_raw if version == old else old_raw + 0.5
        assert raw == pytest.approx(expected, abs=1e-9), (version, raw)
    # The clients stop once one worker answers with the new version; the other may still be
    # on the old one. Later tests read "the serving version" from one answer: wait until every
    # worker serves the new one (8 /readyz answers in a row, from whichever worker).
    _readyz_until(server, lambda ready: ready["models"][TASK] == new, streak=8)


def test_a_champion_trained_on_other_data_is_refused_and_readyz_says_why(
    server, registry, tmp_path, isolated_mlflow_uris
):
    """A version whose card says it learnt from an importer's extra lead column: the service
    keeps the serving set, logs the reason once per worker, and /readyz names it."""
    import json

    from mlflow.tracking import MlflowClient

    status, serving, _ = _score(server.base_url)
    assert status == 200

    def other_data(model_dir: Path) -> None:
        card = json.loads((model_dir / "model_card.json").read_text())
        card["data"]["source_kind"] = "olist"
        card["data"]["schema"]["contacts"]["origin"] = "String"
        (model_dir / "model_card.json").write_text(json.dumps(card))

    refused = _new_version(registry, tmp_path, other_data)
    try:
        # Both workers have polled the registry once four answers in a row name the refusal.
        answers = _readyz_until(server, lambda ready: "not_loaded" in ready)
        assert _score(server.base_url)[:2] == (200, serving)
        for ready in answers:
            assert ready["models"][TASK] == serving
            assert f"v{refused}: trained on other data" in ready["not_loaded"]
            assert "contacts.origin not in the contract" in ready["not_loaded"]
        log = server.log_path.read_text(errors="replace")
        lines = [line for line in log.splitlines() if f"v{refused}: trained on other" in line]
        assert 1 <= len(lines) <= 2, lines
        # With CTO_ALLOW_OTHER_DATA the same version loads, and every answer it gives says so.
        from features.settings import get_settings
        from serving.models import champion_versions, load_bundle
        from serving.schemas import ScoreRequest
        from serving.scoring import FeatureWindows, score_one

        allowed = get_settings(tracking_uri=registry, allow_other_data=True)
        bundle = load_bundle(allowed, champion_versions(allowed))
        assert bundle.versions()[TASK] == refused
        assert "contacts.origin" in bundle.data_mismatches()[TASK]
        request = ScoreRequest(contact=ARRIVAL, moment="arrival", explain=False, history={})
        answer = score_one(bundle, request, None, FeatureWindows(14, 7)).model_dump()
        assert "contacts.origin not in the contract" in answer["models"][0]["data_mismatch"]
    finally:
        client = MlflowClient(tracking_uri=registry, registry_uri=registry)
        client.set_registered_model_alias(f"cto-{TASK}", "champion", serving)
    _readyz_until(server, lambda ready: "not_loaded" not in ready)  # the alias is back
    assert _score(server.base_url)[:2] == (200, serving)


def _readyz_until(server, condition, streak: int = 4, timeout: float = 90.0) -> list[dict]:
    """/readyz answers until ``streak`` in a row meet ``condition`` (either worker may answer)."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        ready = httpx.get(server.base_url + "/readyz", timeout=10).json()
        seen = [*seen, ready] if condition(ready) else []
        if len(seen) >= streak:
            return seen
        time.sleep(0.25)
    raise AssertionError(f"/readyz never met the condition {streak} times in a row: {ready}")


def test_a_broken_champion_keeps_the_serving_one_and_says_so_once(server, registry, tmp_path):
    status, serving, _ = _score(server.base_url)
    assert status == 200

    def truncate(model_dir: Path) -> None:
        model = model_dir / "model.lgb"
        model.write_text(model.read_text()[:2000])

    broken = _new_version(registry, tmp_path, truncate)
    time.sleep(6)  # several registry polls in each worker
    assert _score(server.base_url)[:2] == (200, serving)
    ready = httpx.get(server.base_url + "/readyz", timeout=10).json()
    assert ready["models"][TASK] == serving
    lines = [
        line
        for line in server.log_path.read_text(errors="replace").splitlines()
        if "models not loaded" in line and f"v{broken}" in line
    ]
    assert 1 <= len(lines) <= 2, lines  # once per worker, not once per poll
    assert all("[WARNING]" in line for line in lines)
    assert "Traceback" not in server.log_path.read_text(errors="replace")


def test_before_any_model_is_registered_readyz_and_routes_answer_503_with_the_reason(tmp_path):
    from mlflow.tracking import MlflowClient

    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(tracking_uri=empty, registry_uri=empty).search_registered_models()
    env = {"CTO_TRACKING_URI": empty, "CTO_EVENT_STORE_URL": f"sqlite:///{tmp_path / 'ev.db'}"}
    waiting = start_server(env, tmp_path / "server.log", wait_for="/livez")
    try:
        deadline = time.monotonic() + 60
        ready = httpx.get(waiting.base_url + "/readyz", timeout=10)
        while ready.json()["reason"].startswith("starting") and time.monotonic() < deadline:
            time.sleep(0.5)
            ready = httpx.get(waiting.base_url + "/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        assert "no model with alias 'champion'" in ready.json()["reason"]
        answer = httpx.post(
            waiting.base_url + "/score", json={"contact": ARRIVAL, "moment": "arrival"}, timeout=30
        )
        assert answer.status_code == 503
        assert answer.json()["error"].startswith("models not loaded")
    finally:
        waiting.stop()


def _serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`cto serve ARGS` run to its end (one that cannot start)."""
    return subprocess.run(
        [sys.executable, "-m", "cto.cli", "serve", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_second_server_on_the_same_port_fails_fast_and_plainly(server, registry):
    port = server.base_url.rsplit(":", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTO_")}
    env["CTO_TRACKING_URI"] = registry
    started = time.monotonic()
    proc = _serve(env, "--port", port)
    assert proc.returncode == 2
    assert f"port {port}" in proc.stderr and "in use" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 20
    # The fast port too: the workers share it, so another server must not join it.
    fast_port = server.fast_url.rsplit(":", 1)[1]
    proc = _serve(env, "--port", str(free_port()), "--fast-port", fast_port)
    assert proc.returncode == 2
    assert f"port {fast_port}" in proc.stderr and "--fast-port" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cto_serve_opens_the_fast_port_beside_its_own_by_default(registry):
    """Without --fast-port, `cto serve` serves the hot routes on --port + 1 too: a listener there
    stops it before anything loads, with a message that names the way out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTO_")}
    env["CTO_TRACKING_URI"] = registry
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        fast_port = taken.getsockname()[1]
        assert _port_is_free(fast_port - 1)
        proc = _serve(env, "--port", str(fast_port - 1))
    assert proc.returncode == 2
    assert f"port {fast_port}" in proc.stderr and "--fast-port 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_kill_9_of_the_server_leaves_no_worker_and_a_restart_works(server, server_env):
    """Runs last: kills the module's server."""
    port = int(server.base_url.rsplit(":", 1)[1])
    fast_port = int(server.fast_url.rsplit(":", 1)[1])
    workers = psutil.Process(server.process.pid).children(recursive=True)
    assert len(workers) >= 2
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    _gone, alive = psutil.wait_procs(workers, timeout=15)
    assert alive == [], f"orphaned workers: {[p.pid for p in alive]}"
    deadline = time.monotonic() + 10
    while not (_port_is_free(port) and _port_is_free(fast_port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _port_is_free(port)
    assert _port_is_free(fast_port)
    root, env = server_env
    # The alias still names the broken version (the test above): the restart serves the last
    # versions this service loaded instead of answering 503.
    again = start_server(env, Path(root) / "server-restart.log", port=port)
    try:
        ready = httpx.get(again.base_url + "/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert "serving the last versions this service loaded" in again.log_path.read_text()
    finally:
        again.stop()
