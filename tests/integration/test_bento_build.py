"""`bentoml build` from the repository works, and the Bento it makes serves (docs/operations.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serving.process import REPO, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bentoml_build_packs_the_service_and_the_bento_serves(trained, mlflow_settings, tmp_path):
    home = tmp_path / "bentoml_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTO_", "BENTOML_"))}
    env |= {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    built = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "-o", "tag", str(REPO)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag.startswith("cto:"), built.stdout
    name, version = tag.split(":")
    src = home / "bentos" / name / version / "src"
    packed = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    assert {"serving/service.py", "features/schema.py", "features/settings.py"} <= packed
    assert not any(p.startswith(("tests/", "training/", "mlruns/", ".venv/")) for p in packed)
    assert "Operating the scoring service" in (src.parent / "README.md").read_text()

    port = free_port()
    serve_env = env | {
        "CTO_TRACKING_URI": mlflow_settings.tracking_uri,
        "CTO_EVENT_STORE_URL": f"sqlite:///{tmp_path / 'events.db'}",
    }
    log = (tmp_path / "bento.log").open("w")
    # From another directory: the Bento must not need the checkout.
    server = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", tag, "--port", str(port), "--host", "127.0.0.1"],
        cwd=tmp_path,
        env=serve_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        ready = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        text = Path(log.name).read_text(errors="replace")
        assert ready is not None and ready.status_code == 200, text[-3000:]
        info = httpx.post(f"http://127.0.0.1:{port}/model_info", json={}, timeout=30)
        assert info.status_code == 200, info.text
        assert {m["task"] for m in info.json()["models"]} >= {"conversion-arrival"}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
